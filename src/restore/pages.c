/*
 * Learned pages (post-init images of the python adapter): which of the
 * image's writable pages a restored run writes, so that the restore copies
 * those in one call per range (MADV_POPULATE_WRITE) and leaves the rest shared
 * with the page cache, where a read costs no copy and the exit frees nothing.
 * The adapter's fast exit (os._exit after flushing) writes far fewer pages
 * than the image holds: a quarter for flask, an eighth for numpy's -c pass.
 *
 * images/<key>.pages, next to the image, written by the adapter at exit
 * (temp + rename) and read here; docs/resume-protocol.md has the format.
 *   - none yet, or one learned on another image (re-taken): this restore
 *     puts a FULL file in its place (claim_pages), populates nothing and
 *     asks the adapter to record (cached-exec-pages=);
 *   - FULL (a run took python's full exit, whose teardown writes nearly every
 *     page), or anything that is not a well-formed file of the user's own for
 *     this image (a symlink, a FIFO, another owner, bad sizes or ranges):
 *     every writable page, as without the file;
 *   - ranges: those only, and while fewer than CX_PAGES_RUNS runs made them,
 *     the adapter records again: what it finds copied at exit is the ranges
 *     plus what this run wrote besides (other commands of the same tool).
 * Only in the user's own cache: a system-layer image is root's, and other
 * users must not steer each other's restores.
 */
#include "restore.h"

#define CX_PAGES_MAGIC 0x3153454741505843ull /* "CXPAGES1" */
#define CX_PAGES_FULL 1u
#define CX_PAGES_RUNS 4u /* restores whose writes the set unions before it stays fixed */

_Static_assert(sizeof(struct cx_pages_header) == 64, "cx_pages_header");

/* "images/<key>.img" -> "images/<key>.pages"; 0 when the name is not that shape. */
static int pages_name(const char *image_rel, char *out, size_t size)
{
	size_t n = cx_strlen(image_rel);
	if (n < 4 || !cx_streq(image_rel + n - 4, ".img") || n + 3 > size)
		return 0;
	__builtin_memcpy(out, image_rel, n - 4);
	__builtin_memcpy(out + n - 4, ".pages", 7);
	return 1;
}

/* Every page of [addr, addr+len) lies in regions the restore maps writable from the image's data. */
static int range_writable(const struct image *im, uint64_t addr, uint64_t len)
{
	uint64_t end = addr + len;
	while (addr < end) {
		const struct cx_region *r = region_at(im, addr, 1);
		if (!r || r->source != CX_SRC_DATA || (r->flags & CX_REGION_STACK) || !(map_prot(r) & PROT_WRITE))
			return 0;
		addr = r->addr + r->len;
	}
	return 1;
}

static int ranges_valid(const struct image *im, const struct cx_pages_range *g, uint32_t n)
{
	uint64_t prev_end = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t a = g[i].addr, l = g[i].len;
		if ((a | l) % CX_PAGE || !l || a < prev_end || a + l < a || !range_writable(im, a, l))
			return 0;
		prev_end = a + l;
	}
	return 1;
}

/* Whether the file was learned on this very image file (not a re-taken one under the same name). */
static int same_image(const struct cx_pages_header *h, const struct kstat *st)
{
	return h->dev == st->st_dev && h->ino == st->st_ino && h->size == (uint64_t)st->st_size &&
	       h->mtime_sec == st->st_mtime_sec && h->mtime_nsec == st->st_mtime_nsec;
}

static void ask_to_record(struct image *im, uint32_t runs)
{
	im->pages_record = 1;
	im->pages_runs = runs;
}

/*
 * A learning run (no file for this image yet) populates nothing. Before it,
 * a file saying FULL takes the place (temp + link, or over a stale file), so
 * that a run that never reaches the adapter's exit (exec, a signal, a cold
 * run after all) leaves every later restore as it was before learning: full
 * populate, never a second run without it. The adapter replaces it at exit.
 * 0 when this run is to learn.
 */
static int claim_learning(struct image *im, const struct launch *L, int stale)
{
	char tmp[64];
	struct cx_buf t = { tmp, 0, sizeof tmp, 0 };
	struct cx_pages_header h = { CX_PAGES_MAGIC, im->st.st_dev, im->st.st_ino, (uint64_t)im->st.st_size,
				     im->st.st_mtime_sec, im->st.st_mtime_nsec, CX_PAGES_FULL, 0, 0, 0 };
	/* images/.<key>.pages.<pid>.0.tmp: --cleanup's pattern for a killed writer's temp file */
	cx_buf_put(&t, im->pages_rel, 7);
	cx_buf_str(&t, ".");
	cx_buf_str(&t, im->pages_rel + 7);
	cx_buf_str(&t, ".");
	cx_buf_u64(&t, (uint64_t)sys_getpid(), 10);
	cx_buf_str(&t, ".0.tmp");
	if (t.overflow || t.len >= sizeof tmp)
		return -1;
	tmp[t.len] = 0;
	int fd = cx_open_below(L->layer_fd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return -1;
	long w = sys_write(fd, &h, sizeof h);
	sys_close(fd);
	if (stale)
		sys_unlinkat(L->layer_fd, im->pages_rel);
	long linked = w == (long)sizeof h ? sys_linkat(L->layer_fd, tmp, L->layer_fd, im->pages_rel) : -1;
	sys_unlinkat(L->layer_fd, tmp);
	/* EEXIST: another restore is learning at the same time; both results are good. */
	return linked == 0 || linked == -EEXIST ? 0 : -1;
}

static void learn(struct image *im, int stale)
{
	im->pop = CX_POP_NONE;
	im->pages_claim = stale ? 2 : 1;
	ask_to_record(im, 0);
}

/*
 * A learning run claims the file just before the address space changes: after
 * the checks that send a run cold (a caller ignoring SIGINT, a changed file),
 * whose FULL would otherwise stay for good. Where the claim fails, this run
 * populates every page as before (what it then records is every page too).
 */
void claim_pages(struct image *im, const struct launch *L)
{
	if (im->pages_claim && claim_learning(im, L, im->pages_claim == 2) != 0)
		im->pop = CX_POP_ALL;
}

/*
 * Before the context is written (it carries the request to record) and
 * before anything is mapped. Leaves im->pop at CX_POP_ALL on every doubt.
 */
void load_pages(struct image *im, const struct launch *L, struct cx_pages_file *buf)
{
	struct kstat st;
	im->pop = CX_POP_ALL;
	im->pages_record = im->pages_claim = 0;
	if (!im->resume || !L->pages_learnable || L->system_layer || L->layer_fd < 0 || L->layer_fd != L->cache_fd ||
	    !pages_name(L->image_rel, im->pages_rel, sizeof im->pages_rel))
		return;
	int fd = cx_open_below(L->layer_fd, im->pages_rel, O_RDONLY, 0);
	if (fd == -ENOENT) {
		learn(im, 0);
		return;
	}
	if (fd < 0)
		return;
	long n = -1, want = -2;
	if (sys_fstat(fd, &st) == 0 && st.st_uid == L->euid && !(st.st_mode & 022) &&
	    st.st_size >= (int64_t)sizeof buf->h && st.st_size <= (int64_t)sizeof *buf &&
	    (st.st_size - (int64_t)sizeof buf->h) % (int64_t)sizeof(struct cx_pages_range) == 0)
		n = sys_pread(fd, buf, (size_t)(want = st.st_size), 0);
	sys_close(fd);
	if (n != want || buf->h.magic != CX_PAGES_MAGIC ||
	    buf->h.nranges != (uint64_t)(n - (long)sizeof buf->h) / sizeof(struct cx_pages_range))
		return;
	if (!same_image(&buf->h, &im->st)) {
		learn(im, 1); /* learned on the image this one replaced: learn again */
		return;
	}
	if ((buf->h.flags & CX_PAGES_FULL) || !ranges_valid(im, buf->r, buf->h.nranges))
		return;
	im->pop = CX_POP_RANGES;
	im->ranges = buf->r;
	im->nranges = buf->h.nranges;
	if (buf->h.runs < CX_PAGES_RUNS)
		ask_to_record(im, buf->h.runs);
}

/*
 * "cached-exec-pages=RUNS:DEV:INO:SIZE:MTIME_SEC:MTIME_NSEC:DATA_OFFSET:PATH"
 * for the context: the runs so far, the image's identity to bind the file to,
 * where its regions' bytes start (the launcher's own mapping of the metadata,
 * at offset 0, is no region), and where to write it. Empty when nothing is to
 * be recorded.
 */
void pages_field(const struct image *im, const struct launch *L, char *out, size_t size)
{
	struct cx_buf b = { out, 0, size, 0 };
	out[0] = 0;
	if (!im->pages_record || cx_user_cache((struct launch *)L, 0) < 0)
		return;
	const uint64_t v[] = { im->pages_runs, im->st.st_dev, im->st.st_ino, (uint64_t)im->st.st_size,
			       im->st.st_mtime_sec, im->st.st_mtime_nsec, im->h->data_offset };
	cx_buf_str(&b, "cached-exec-pages=");
	for (unsigned i = 0; i < sizeof v / sizeof v[0]; i++) {
		cx_buf_u64(&b, v[i], 10);
		cx_buf_str(&b, ":");
	}
	cx_buf_str(&b, L->cache_dir);
	cx_buf_str(&b, "/");
	cx_buf_str(&b, im->pages_rel);
	if (b.overflow)
		out[0] = 0;
}

/*
 * After every region is mapped and has its protection (the kernel refuses to
 * populate a read-only mapping for writing): the learned ranges, one call
 * each. Advice only: a failure leaves the pages to fault in, same contents.
 */
#ifndef CX_POP_GAP
#define CX_POP_GAP 4
#endif
void populate_learned(const struct image *im)
{
	if (im->pop != CX_POP_RANGES || !im->nranges)
		return;
	const struct cx_pages_range *g = im->ranges;
	uint64_t a = g[0].addr, e = a + g[0].len;
	for (uint32_t i = 1; i <= im->nranges; i++) {
		if (i < im->nranges && g[i].addr - e <= CX_POP_GAP * CX_PAGE && range_writable(im, e, g[i].addr - e)) {
			e = g[i].addr + g[i].len;
			continue;
		}
		sys_madvise(a, e - a, MADV_POPULATE_WRITE);
		if (i < im->nranges)
			a = g[i].addr, e = a + g[i].len;
	}
}
