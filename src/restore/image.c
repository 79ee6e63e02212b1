/*
 * Step 1 of a restore: read the image's metadata with one pread (or a mapping
 * for big programs) and check everything about it that costs no syscall:
 * header, owner, checksum, sections, key, age.
 */
#include "restore.h"

/* A string from the STRINGS section, or 0 when the offset is out of bounds. */
const char *image_str(const struct image *im, uint32_t off)
{
	if (off >= im->strings_len)
		return 0;
	for (uint64_t i = off; i < im->strings_len; i++)
		if (!im->strings[i])
			return im->strings + off;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Step 1: read and check the image.                                        */

enum cx_outcome read_meta(struct image *im, int dirfd, const char *file, uint64_t *buf)
{
	im->fd = cx_open_below(dirfd, file, O_RDONLY, 0);
	if (im->fd == -ENOENT || im->fd == -ENOTDIR)
		return CX_MISS;
	if (im->fd == -EINVAL || im->fd == -ELOOP)
		return CX_FAIL_OWNER; /* a FIFO, a device or a symlink where an image should be: not ours to trust */
	if (im->fd < 0)
		return CX_FAIL_IMAGE_IO;
	if (sys_fstat(im->fd, &im->st) < 0)
		return CX_FAIL_IMAGE_IO;
	/*
	 * Read one page first: small programs' metadata fits, and every stack page
	 * this touches is a page fault on the hot path.
	 */
	long n = sys_pread(im->fd, buf, CX_PAGE, 0);
	if (n < (long)sizeof(struct cx_header))
		return n < 0 ? CX_FAIL_IMAGE_IO : CX_FAIL_TRUNCATED;
	im->meta = (unsigned char *)buf;
	im->h = (struct cx_header *)buf;
	im->meta_size = im->h->meta_size;
	if (im->h->magic != CX_MAGIC)
		return CX_FAIL_HEADER;
	if (im->meta_size < sizeof(struct cx_header) || im->meta_size > im->h->file_size ||
	    im->h->file_size != (uint64_t)im->st.st_size)
		return CX_FAIL_TRUNCATED;
	if (im->meta_size > (uint64_t)n && im->meta_size <= META_BUF) {
		long m = sys_pread(im->fd, (unsigned char *)buf + n, im->meta_size - (uint64_t)n, n);
		if (m != (long)(im->meta_size - (uint64_t)n))
			return CX_FAIL_TRUNCATED;
	} else if (im->meta_size > (uint64_t)n) {
		/* Big programs (hundreds of regions): map the metadata instead. */
		long m = sys_mmap(0, im->meta_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, im->fd, 0);
		if (m < 0 && m > -4096)
			return CX_FAIL_IMAGE_IO;
		im->meta = (unsigned char *)m;
		im->h = (struct cx_header *)m;
	}
	return CX_HIT;
}

enum cx_outcome check_owner(const struct image *im, uint32_t euid)
{
	/* Only the user's own images, never one another user could have written. */
	if (im->st.st_uid != euid || (im->st.st_mode & 022) || (im->st.st_mode & S_IFMT) != S_IFREG)
		return CX_FAIL_OWNER;
	return CX_HIT;
}

enum cx_outcome check_header(struct image *im, uint64_t page_size, uint32_t cpu_id)
{
	struct cx_header *h = im->h;
	/*
	 * The machine first: arch and page_size sit in the header's fixed prefix
	 * in every format version, and an image of another machine (a system
	 * layer built elsewhere, a home shared between machines) is not damaged,
	 * only not ours: its own outcome says so.
	 */
	if (h->arch != CX_ARCH_SELF)
		return CX_FAIL_ARCH;
	if (h->page_size != page_size)
		return CX_FAIL_PAGE_SIZE;
	if (h->format_version != CX_FORMAT_VERSION || h->abi_hash != CX_ABI_HASH ||
	    h->header_size < sizeof(struct cx_header) || h->data_offset % CX_PAGE || (im->meta_size & 7))
		return CX_FAIL_HEADER;
	uint64_t sum = h->checksum;
	h->checksum = 0; /* our private copy: the checksum covers the field as zero */
	uint64_t got = cx_hash64(im->meta, im->meta_size, CX_FNV_OFFSET);
	h->checksum = sum;
	if (got != sum)
		return CX_FAIL_CHECKSUM;
	/*
	 * Another CPU of the same architecture: not damaged, not ours either
	 * (cx_arch_cpu_id). The key holds the CPU id too, so only a file that
	 * does not hold its name's key gets here.
	 */
	return h->cpu_id == cpu_id ? CX_HIT : CX_FAIL_CPU;
}

enum cx_outcome find_sections(struct image *im)
{
	const struct cx_header *h = im->h;
	uint64_t table = h->header_size;
	if (table + (uint64_t)h->section_count * sizeof(struct cx_section) > im->meta_size)
		return CX_FAIL_HEADER;
	for (uint32_t i = 0; i < h->section_count; i++) {
		const struct cx_section *s = (const struct cx_section *)(im->meta + table + i * sizeof(struct cx_section));
		if (s->offset > im->meta_size || s->length > im->meta_size - s->offset || (s->offset & 7))
			return CX_FAIL_HEADER;
		if (s->count && ((uint64_t)s->count * s->entsize > s->length))
			return CX_FAIL_HEADER;
		const unsigned char *body = im->meta + s->offset;
		switch (s->type) {
		case CX_SECTION_KEY:
			if (s->count != 1 || s->entsize < sizeof(struct cx_key))
				return CX_FAIL_HEADER;
			im->key = (const struct cx_key *)body;
			break;
		case CX_SECTION_STRINGS:
			im->strings = (const char *)body;
			im->strings_len = s->length;
			break;
		case CX_SECTION_FILES:
			if (s->count && s->entsize < sizeof(struct cx_file))
				return CX_FAIL_HEADER;
			im->files = body, im->nfiles = s->count, im->file_es = s->entsize;
			break;
		case CX_SECTION_REGIONS:
			if (s->count && s->entsize < sizeof(struct cx_region))
				return CX_FAIL_HEADER;
			im->regions = body, im->nregions = s->count, im->region_es = s->entsize;
			break;
		case CX_SECTION_SLOTS:
			if (s->count && s->entsize < sizeof(struct cx_slot))
				return CX_FAIL_HEADER;
			im->slots = body, im->nslots = s->count, im->slot_es = s->entsize;
			break;
		case CX_SECTION_STATE:
			if (s->count != 1 || s->entsize < sizeof(struct cx_state))
				return CX_FAIL_HEADER;
			im->state = (const struct cx_state *)body;
			break;
		case CX_SECTION_VDSO:
			if (s->count && s->entsize < sizeof(struct cx_vdso_part))
				return CX_FAIL_HEADER;
			im->vdso = body, im->nvdso = s->count, im->vdso_es = s->entsize;
			break;
		case CX_SECTION_RESUME:
			if (s->count != 1 || s->entsize < sizeof(struct cx_resume))
				return CX_FAIL_HEADER;
			im->resume = (const struct cx_resume *)body;
			break;
		case CX_SECTION_SIGACTIONS:
			if (s->count && s->entsize < sizeof(struct cx_sigaction))
				return CX_FAIL_HEADER;
			im->sigs = body, im->nsigs = s->count, im->sig_es = s->entsize;
			break;
		case CX_SECTION_XSTATE:
			im->xstate = body, im->xstate_len = s->length;
			break;
		case CX_SECTION_ENV_DEPS:
			if (s->count > MAX_ENV_DEPS || (s->count && s->entsize < sizeof(struct cx_env_dep)))
				return CX_FAIL_HEADER;
			im->envdeps = body, im->nenvdeps = s->count, im->envdep_es = s->entsize;
			break;
		case CX_SECTION_LIMITS:
			if (s->count > CX_RLIMIT_COUNT || (s->count && s->entsize < sizeof(struct cx_limit)))
				return CX_FAIL_HEADER;
			im->limits = body, im->nlimits = s->count, im->limit_es = s->entsize;
			break;
		default:
			if (s->flags & CX_SECFLAG_REQUIRED)
				return CX_FAIL_HEADER; /* from a newer writer: do not guess */
		}
	}
	if (!im->key || !im->strings || !im->state || !im->regions || im->nfiles > MAX_FILES)
		return CX_FAIL_HEADER;
	/* A post-init image comes with its signal dispositions and FPU state, or is not one. */
	if (im->resume && (!im->sigs || !im->xstate))
		return CX_FAIL_HEADER;
	return CX_HIT;
}

enum cx_outcome check_key(const struct image *im, const struct launch *L)
{
	const struct cx_key *k = im->key;
	const char *exe = image_str(im, k->exe_path), *path = image_str(im, k->path_env),
		   *rel = image_str(im, k->kernel_release), *spec = image_str(im, k->init_spec);
	if (!exe || !path || !rel || !spec)
		return CX_FAIL_HEADER;
	if (!spec[0] != !im->resume)
		return CX_FAIL_HEADER;
	/*
	 * A post-link image never serves an --after-init run, nor a post-init
	 * image a plain one: the init spec is part of the key.
	 */
	if (!cx_streq(spec, L->after_init ? L->init_spec : ""))
		return CX_FAIL_KEY;
	if (k->euid != L->key_euid || k->exe_dev != L->st.st_dev || k->exe_ino != L->st.st_ino ||
	    k->exe_size != (uint64_t)L->st.st_size || (uint64_t)k->exe_mtime_sec != L->st.st_mtime_sec ||
	    k->exe_mtime_nsec != L->st.st_mtime_nsec || (uint64_t)k->exe_ctime_sec != L->st.st_ctime_sec ||
	    k->exe_ctime_nsec != L->st.st_ctime_nsec || !cx_streq(exe, L->path) || !cx_streq(path, L->path_env) ||
	    !cx_streq(rel, L->uts.release) || k->groups_hash != L->key_groups)
		return CX_FAIL_KEY;
	/* The environment the image depends on: env.c, the next part of this step. */
	return CX_HIT;
}

/*
 * Restored processes share the snapshot's address-space layout and pointer
 * guard. Images past CACHED_EXEC_MAX_AGE seconds (default 7 days, 0 = never)
 * are still used for this run but queued to be re-taken, so the layout changes.
 */
void check_age(const struct image *im, struct launch *L)
{
	uint64_t max_age = 7ull * 24 * 3600;
	const char *v = cx_getenv(L->envp, "CACHED_EXEC_MAX_AGE");
	if (v && *v) {
		max_age = 0;
		for (; *v >= '0' && *v <= '9'; v++)
			max_age = max_age * 10 + (uint64_t)(*v - '0');
	}
	/* System-layer images are root's to re-take (--warm --system), not this user's. */
	if (max_age && L->key_euid == L->euid && cx_now_ns(L) > im->h->created_ns + max_age * 1000000000ull)
		L->rotate = 1;
}



/* The region holding [addr, addr + len), or 0. Regions are sorted by address. */
const struct cx_region *region_at(const struct image *im, uint64_t addr, uint64_t len)
{
	uint32_t lo = 0, hi = im->nregions;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct cx_region *r = REGION_AT(im, mid);
		if (addr < r->addr)
			hi = mid;
		else if (addr - r->addr >= r->len)
			lo = mid + 1;
		else
			return len <= r->len - (addr - r->addr) ? r : 0;
	}
	return 0;
}
