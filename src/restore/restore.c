/*
 * The restorer: maps an image into this process and jumps to the program's
 * entry point as if the kernel had just exec'd it and ld.so had just finished;
 * or, for a post-init image, back into the read(resume_fd, ...) the program
 * was stopped at, with the caller's context waiting on that fd.
 *
 * One step per function, in the order ARCHITECTURE.md explains. Each step
 * returns CX_HIT to continue or the reason to give up; giving up at any point is
 * safe because the caller then execs the program cold, which throws away
 * everything mapped here. The only step that cannot be undone by exec is the
 * last one (the trampoline unmaps the launcher), and it carries its own cold
 * exec for that reason.
 */
#include "launcher.h"
#include "image_format.h"

#define META_BUF (64 * 1024)
/* File entries: READ and ABSENT ones cost a stat and no fd (python with numpy reads ~2000). */
#define MAX_FILES 16384
/* MAPPED files are held open until their regions are mapped. */
#define MAX_MAPPED 1024
/* The XSAVE area of a post-init image (AVX-512 needs 2.7 KiB, AMX 11 KiB). */
#define MAX_XSTATE (64 * 1024)
#define XFEATURE_TILEDATA (1ull << 18)

extern char __ehdr_start[];
extern char _end[];

struct image {
	int fd;
	struct kstat st;
	unsigned char *meta;
	uint64_t meta_size;
	struct cx_header *h;
	const struct cx_key *key;
	const char *strings;
	uint64_t strings_len;
	const unsigned char *files, *regions, *slots, *vdso;
	uint32_t nfiles, nregions, nslots, nvdso;
	uint32_t file_es, region_es, slot_es, vdso_es;
	const struct cx_state *state;
	/* Post-init images only. */
	const struct cx_resume *resume;
	const unsigned char *sigs, *xstate;
	uint32_t nsigs, sig_es;
	uint64_t xstate_len;
};

/* The fds of MAPPED files, the only files held open, by ascending file index. */
struct file_fds {
	uint32_t n;
	uint32_t file[MAX_MAPPED];
	int fd[MAX_MAPPED];
};

#define FILE_AT(im, i) ((const struct cx_file *)((im)->files + (uint64_t)(i) * (im)->file_es))
#define REGION_AT(im, i) ((const struct cx_region *)((im)->regions + (uint64_t)(i) * (im)->region_es))
#define SLOT_AT(im, i) ((const struct cx_slot *)((im)->slots + (uint64_t)(i) * (im)->slot_es))
#define VDSO_AT(im, i) ((const struct cx_vdso_part *)((im)->vdso + (uint64_t)(i) * (im)->vdso_es))
#define SIG_AT(im, i) ((const struct cx_sigaction *)((im)->sigs + (uint64_t)(i) * (im)->sig_es))

/* A string from the STRINGS section, or 0 when the offset is out of bounds. */
static const char *image_str(const struct image *im, uint32_t off)
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

static enum cx_outcome read_meta(struct image *im, const char *file, uint64_t *buf)
{
	im->fd = (int)sys_openat(AT_FDCWD, file, O_RDONLY | O_CLOEXEC, 0);
	if (im->fd == -ENOENT || im->fd == -ENOTDIR)
		return CX_MISS;
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

static enum cx_outcome check_owner(const struct image *im, uint32_t euid)
{
	/* Only the user's own images, never one another user could have written. */
	if (im->st.st_uid != euid || (im->st.st_mode & 022) || (im->st.st_mode & S_IFMT) != S_IFREG)
		return CX_FAIL_OWNER;
	return CX_HIT;
}

static enum cx_outcome check_header(struct image *im, const uint64_t *auxv)
{
	struct cx_header *h = im->h;
	if (h->format_version != CX_FORMAT_VERSION || h->abi_hash != CX_ABI_HASH || h->arch != CX_ARCH_X86_64 ||
	    h->header_size < sizeof(struct cx_header) || h->page_size != cx_auxv_get(auxv, AT_PAGESZ) ||
	    h->data_offset % CX_PAGE || (im->meta_size & 7))
		return CX_FAIL_HEADER;
	uint64_t sum = h->checksum;
	h->checksum = 0; /* our private copy: the checksum covers the field as zero */
	uint64_t got = cx_hash64(im->meta, im->meta_size, CX_FNV_OFFSET);
	h->checksum = sum;
	return got == sum ? CX_HIT : CX_FAIL_CHECKSUM;
}

static enum cx_outcome find_sections(struct image *im)
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

static enum cx_outcome check_key(const struct image *im, const struct launch *L)
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
	    !cx_streq(rel, L->uts.release))
		return CX_FAIL_KEY;
	/* A post-init image: the init saw the whole environment but the per-run variables (launcher.c). */
	if (spec[0])
		return k->env_hash == L->resume_env_hash ? CX_HIT : CX_FAIL_KEY;
	/*
	 * Library constructors read the environment at snapshot time (p11-kit,
	 * OpenSSL): the image is only right for that same environment. Summed,
	 * so the order of the variables does not matter; "_" is the command's own path.
	 */
	if (k->env_hash) {
		uint64_t sum = 0;
		for (char **e = L->envp; *e; e++)
			if (!((*e)[0] == '_' && (*e)[1] == '='))
				sum += cx_hash64(*e, cx_strlen(*e), CX_FNV_OFFSET);
		if ((sum ? sum : 1) != k->env_hash)
			return CX_FAIL_KEY;
	}
	return CX_HIT;
}

/*
 * Restored processes share the snapshot's address-space layout and pointer
 * guard. Images past CACHED_EXEC_MAX_AGE seconds (default 7 days, 0 = never)
 * are still used for this run but queued to be re-taken, so the layout changes.
 */
static void check_age(const struct image *im, struct launch *L)
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

/* ------------------------------------------------------------------------ */
/* Step 1b, post-init images: this process must be one the image can become. */
/* Only checks here, and the resume fd, which a failure closes again.       */

/* The region holding [addr, addr + len), or 0. Regions are sorted by address. */
static const struct cx_region *region_at(const struct image *im, uint64_t addr, uint64_t len)
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

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/*
 * The trampoline loads the saved FPU/SSE/AVX state with xrstor, past the
 * point of no return, so everything xrstor would fault on is ruled out here:
 * another XCR0 (a CPU or kernel with other features), a non-standard XSAVE
 * header, reserved MXCSR bits, components outside XCR0, and AMX tile data
 * (usable only after a permission request this process never made).
 */
static enum cx_outcome check_cpu(const struct image *im)
{
	const struct cx_resume *r = im->resume;
	const unsigned char *x = im->xstate;
	uint32_t c[4], lo, hi, mxcsr;
	uint64_t bv;
	cpuid(1, 0, c);
	if (!(c[2] & (1u << 27))) /* OSXSAVE: without it xgetbv and xrstor fault */
		return CX_FAIL_RESUME;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if (((uint64_t)hi << 32 | lo) != r->xfeatures)
		return CX_FAIL_RESUME;
	cpuid(0xd, 0, c); /* ebx: the XSAVE area size for the features XCR0 enables */
	if (r->xstate_size < 576 || r->xstate_size != im->xstate_len || r->xstate_size < c[1] ||
	    r->xstate_size > MAX_XSTATE)
		return CX_FAIL_RESUME;
	__builtin_memcpy(&mxcsr, x + 24, 4);
	__builtin_memcpy(&bv, x + 512, 8);
	if ((mxcsr >> 16) || (bv & ~r->xfeatures) || (bv & XFEATURE_TILEDATA))
		return CX_FAIL_RESUME;
	for (int i = 520; i < 576; i++) /* standard format: XCOMP_BV and the reserved header bytes are zero */
		if (x[i])
			return CX_FAIL_RESUME;
	return CX_HIT;
}

static int settable_signal(uint32_t sig) { return sig >= 1 && sig <= CX_NSIG && sig != SIGKILL && sig != SIGSTOP; }

/*
 * A cold program inherits the caller's ignored signals and blocked mask; the
 * image was made with exactly ignored_at_start ignored and nothing blocked.
 * A caller that differs (`trap '' INT`, nohup) gets the cold program, which
 * sees what it would have seen. Caught signals cannot exist here: exec reset
 * them, and the launcher catches none.
 */
/*
 * 32 and 33 are the C library's own (glibc's SIGCANCEL and SIGSETXID, musl's
 * too): sigaction() refuses them to programs, which therefore cannot tell
 * how they were inherited, and glibc's posix_spawn hands them to every child
 * as ignored. Comparing them would make every such caller run cold.
 */
static int libc_internal_signal(uint32_t sig) { return sig == 32 || sig == 33; }

static enum cx_outcome check_signals(const struct image *im)
{
	uint64_t ignored = 0, blocked = 0;
	for (uint32_t sig = 1; sig <= CX_NSIG; sig++) {
		struct ksigaction old;
		if (!settable_signal(sig) || libc_internal_signal(sig))
			continue;
		if (sys_rt_sigaction((int)sig, 0, &old) < 0)
			return CX_FAIL_RESUME;
		if (old.handler == SIG_IGN)
			ignored |= 1ull << (sig - 1);
	}
	if (ignored != (im->resume->ignored_at_start & ~(3ull << 31)))
		return CX_FAIL_RESUME;
	if (sys_rt_sigprocmask(SIG_BLOCK, 0, &blocked) < 0 || (blocked & ~(3ull << 31)))
		return CX_FAIL_RESUME;
	/* The trampoline installs the image's dispositions where nothing can fail: only a bad number could. */
	if (im->nsigs > CX_NSIG)
		return CX_FAIL_RESUME;
	for (uint32_t i = 0; i < im->nsigs; i++)
		if (!settable_signal(SIG_AT(im, i)->signo))
			return CX_FAIL_RESUME;
	return CX_HIT;
}

/*
 * The thread is to issue read(resume_fd, buf, n) again, from the 2-byte
 * syscall instruction before rip, on a stack the image maps: the image must
 * say exactly that, or this launcher would jump somewhere it cannot check.
 */
static enum cx_outcome check_resume_regs(const struct image *im)
{
	const struct cx_resume *r = im->resume;
	const struct cx_region *a, *b;
	if (r->orig_rax != __NR_read || r->rdi != r->resume_fd || r->resume_fd < 3 || r->resume_fd > 0x7fffffff ||
	    r->rip < 2)
		return CX_FAIL_RESUME;
	a = region_at(im, r->rip - 2, 1);
	b = region_at(im, r->rip - 1, 1);
	if (!a || !b || !(a->prot & CX_PROT_READ) || !(b->prot & CX_PROT_READ) || !region_at(im, r->rsp, 8))
		return CX_FAIL_RESUME;
	if (r->stack_reserve % CX_PAGE || r->stack_reserve > (1ull << 32))
		return CX_FAIL_HEADER;
	return CX_HIT;
}

/*
 * Takes the resume fd before anything else is opened, so that nothing the
 * launcher opens later (python with numpy maps a hundred files) lands on it.
 * It must not be open already: that would be the caller's, which a cold
 * program would inherit. The image fd is the placeholder, close-on-exec.
 */
static enum cx_outcome claim_resume_fd(struct image *im, int fd)
{
	long r = sys_fcntl(fd, F_GETFD, 0);
	if (r >= 0 && fd == im->fd) {
		/* Every fd below was the caller's: the image fd itself got the number. Move it. */
		long moved = sys_fcntl(im->fd, F_DUPFD_CLOEXEC, fd + 1);
		if (moved < 0)
			return CX_FAIL_RESUME;
		sys_close(im->fd);
		im->fd = (int)moved;
		r = -EBADF;
	}
	if (r != -EBADF)
		return CX_FAIL_RESUME;
	/* Fails beyond RLIMIT_NOFILE: a cold program could not have it either. */
	return sys_dup3(im->fd, fd, O_CLOEXEC) == fd ? CX_HIT : CX_FAIL_RESUME;
}

/* The context (docs/resume-protocol.md): NUL-terminated strings, written with few writev calls. */
struct ctx_fields {
	char argc[24], envc[24], seed[33];
	char cwd[CX_PATH_MAX];
};

struct ctx_out {
	int fd; /* -1: only count */
	int failed;
	uint64_t total;
	int n;
	struct iovec_k iov[64];
};

static void ctx_flush(struct ctx_out *c)
{
	int i = 0;
	while (i < c->n && !c->failed) {
		long w = sys_writev(c->fd, c->iov + i, c->n - i);
		if (w <= 0) {
			c->failed = 1; /* a full pipe (O_NONBLOCK) or a full disk: the context cannot be delivered */
			break;
		}
		while (i < c->n && (uint64_t)w >= c->iov[i].len)
			w -= (long)c->iov[i++].len;
		if (i < c->n) {
			c->iov[i].base = (const char *)c->iov[i].base + w;
			c->iov[i].len -= (size_t)w;
		}
	}
	c->n = 0;
}

/* A string with its NUL. The kernel laid argv and env out back to back: adjacent pieces merge into one iovec. */
static void ctx_str(struct ctx_out *c, const char *s)
{
	size_t n = cx_strlen(s) + 1;
	c->total += n;
	if (c->fd < 0)
		return;
	struct iovec_k *last = c->n ? &c->iov[c->n - 1] : 0;
	if (last && (const char *)last->base + last->len == s) {
		last->len += n;
		return;
	}
	if (c->n == (int)(sizeof c->iov / sizeof c->iov[0]))
		ctx_flush(c);
	c->iov[c->n].base = s;
	c->iov[c->n++].len = n;
}

static void ctx_emit(struct ctx_out *c, const struct ctx_fields *f, const struct launch *L)
{
	ctx_str(c, "cached-exec-resume 1");
	ctx_str(c, f->argc);
	for (int i = 0; i < L->user_argc; i++)
		ctx_str(c, L->user_argv[i]);
	ctx_str(c, f->envc);
	for (char **e = L->envp; *e; e++)
		ctx_str(c, *e);
	ctx_str(c, f->cwd);
	ctx_str(c, f->seed);
	if (c->fd >= 0)
		ctx_flush(c);
}

/* argc, envc, the physical cwd and a fresh seed: what is not already in memory. */
static enum cx_outcome ctx_fill(struct ctx_fields *f, const struct launch *L)
{
	unsigned char rnd[16];
	struct cx_buf b = { f->argc, 0, sizeof f->argc, 0 };
	int envc = 0;
	cx_buf_u64(&b, (uint64_t)L->user_argc, 10);
	while (L->envp[envc])
		envc++;
	b = (struct cx_buf){ f->envc, 0, sizeof f->envc, 0 };
	cx_buf_u64(&b, (uint64_t)envc, 10);
	/* A deleted or unreachable cwd: the cold program copes with it in its own way. */
	if (sys_getcwd(f->cwd, sizeof f->cwd) < 0 || f->cwd[0] != '/')
		return CX_FAIL_RESUME;
	if (sys_getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (long)sizeof rnd) {
		/* Early boot or seccomp: the kernel's AT_RANDOM bytes, fresh for this exec, serve as well. */
		const unsigned char *at = (const unsigned char *)cx_auxv_get(L->auxv, AT_RANDOM);
		if (!at)
			return CX_FAIL_RESUME;
		__builtin_memcpy(rnd, at, sizeof rnd);
	}
	for (int i = 0; i < 16; i++) {
		f->seed[2 * i] = "0123456789abcdef"[rnd[i] >> 4];
		f->seed[2 * i + 1] = "0123456789abcdef"[rnd[i] & 15];
	}
	f->seed[32] = 0;
	return CX_HIT;
}

/*
 * Puts the context on the claimed resume fd (close-on-exec until the
 * trampoline clears it, so every failure path leaves it to no program): a
 * memfd, or where there is none (old kernel, seccomp) a pipe that holds the
 * whole context with its write end closed, so the reader sees end of file.
 */
static enum cx_outcome deliver_context(const struct launch *L, int resume_fd)
{
	struct ctx_fields f;
	struct ctx_out c;
	enum cx_outcome o = ctx_fill(&f, L);
	if (o != CX_HIT)
		return o;
	c.fd = -1, c.failed = 0, c.total = 0, c.n = 0;
	ctx_emit(&c, &f, L);
	uint64_t total = c.total;
	int fd = (int)sys_memfd_create("cached-exec-resume", MFD_CLOEXEC), rd = fd;
	if (fd < 0) {
		int p[2];
		if (sys_pipe2(p, O_CLOEXEC) < 0)
			return CX_FAIL_RESUME;
		if (total > 65536)
			sys_fcntl(p[1], F_SETPIPE_SZ, (long)total);
		/* Nobody reads until the program runs: a context the pipe cannot hold must fail, not block. */
		sys_fcntl(p[1], F_SETFL, O_NONBLOCK);
		fd = p[1], rd = p[0];
	}
	c.fd = fd, c.failed = 0, c.total = 0, c.n = 0;
	ctx_emit(&c, &f, L);
	if (rd == fd && !c.failed && sys_lseek(fd, 0, SEEK_SET) != 0)
		c.failed = 1;
	if (rd != fd)
		sys_close(fd); /* the pipe's write end */
	if (!c.failed && sys_dup3(rd, resume_fd, O_CLOEXEC) != resume_fd)
		c.failed = 1;
	sys_close(rd);
	return c.failed || c.total != total ? CX_FAIL_RESUME : CX_HIT;
}

/* ------------------------------------------------------------------------ */
/* Step 2: every file the image depends on is still the file it was.        */

static int same_identity(const struct cx_file *f, const struct kstat *st)
{
	return f->dev == st->st_dev && f->ino == st->st_ino && f->size == (uint64_t)st->st_size &&
	       (uint64_t)f->mtime_sec == st->st_mtime_sec && f->mtime_nsec == st->st_mtime_nsec &&
	       (uint64_t)f->ctime_sec == st->st_ctime_sec && f->ctime_nsec == st->st_ctime_nsec;
}

/* The fd a FILE region maps, or -1. */
static int fd_of(const struct file_fds *fds, uint32_t file)
{
	uint32_t lo = 0, hi = fds->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (fds->file[mid] == file)
			return fds->fd[mid];
		if (fds->file[mid] < file)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static enum cx_outcome check_files(const struct image *im, struct file_fds *fds, int *exe_fd)
{
	for (uint32_t i = 0; i < im->nfiles; i++) {
		const struct cx_file *f = FILE_AT(im, i);
		const char *p = image_str(im, f->path);
		struct kstat st;
		if (!p)
			return CX_FAIL_HEADER;
		switch (f->kind) {
		case CX_FILE_MAPPED: {
			if (fds->n == MAX_MAPPED)
				return CX_FAIL_HEADER;
			/* The fd checked here is the fd mapped later: no window for a swap. */
			int fd = (int)sys_openat(AT_FDCWD, p, O_RDONLY | O_CLOEXEC, 0);
			if (fd < 0)
				return CX_FAIL_STALE_FILE;
			fds->file[fds->n] = i;
			fds->fd[fds->n++] = fd;
			if (sys_fstat(fd, &st) < 0 || !same_identity(f, &st))
				return CX_FAIL_STALE_FILE;
			if (f->flags & CX_FILEFLAG_EXE)
				*exe_fd = fd;
			break;
		}
		case CX_FILE_READ:
			if (sys_stat(p, &st) < 0 || !same_identity(f, &st))
				return CX_FAIL_STALE_FILE;
			break;
		case CX_FILE_ABSENT: {
			long r = sys_stat(p, &st);
			if (r != -ENOENT && r != -ENOTDIR)
				return CX_FAIL_NEGATIVE_DEP;
			break;
		}
		default:
			return CX_FAIL_HEADER;
		}
	}
	return CX_HIT;
}

/*
 * Closes the fds opened for the files (and `extra`, the image), except `keep`.
 * They were allocated lowest-free, so they mostly form one run of consecutive
 * numbers: one close_range per run instead of one close per library (cmake
 * has 50). A run never spans an fd that is not ours (the caller's inherited
 * fds stay open for the program).
 */
static void close_files(struct file_fds *fds, int keep, int extra)
{
	int mine[MAX_MAPPED + 1], n = 0;
	for (uint32_t i = 0; i < fds->n; i++) {
		if (fds->fd[i] >= 0 && fds->fd[i] != keep)
			mine[n++] = fds->fd[i];
		fds->fd[i] = fds->fd[i] == keep ? keep : -1;
	}
	if (extra >= 0 && extra != keep)
		mine[n++] = extra;
	for (int i = 1; i < n; i++) /* insertion sort: n is small and nearly sorted */
		for (int j = i; j > 0 && mine[j - 1] > mine[j]; j--) {
			int t = mine[j];
			mine[j] = mine[j - 1];
			mine[j - 1] = t;
		}
	for (int i = 0; i < n;) {
		int j = i;
		while (j + 1 < n && mine[j + 1] == mine[j] + 1)
			j++;
		if (j == i || sys_close_range((unsigned)mine[i], (unsigned)mine[j]) < 0)
			for (int k = i; k <= j; k++)
				sys_close(mine[k]);
		i = j + 1;
	}
}

/* ------------------------------------------------------------------------ */
/* Step 3: move this process's vdso/vvar block to where the image expects it. */

static int mmap_failed(long r) { return r < 0 && r > -4096; }

static enum cx_outcome move_vdso(const struct image *im, const uint64_t *auxv)
{
	uint64_t cur = cx_auxv_get(auxv, AT_SYSINFO_EHDR), old = im->state->vdso_base;
	if (!cur || !old || !im->nvdso)
		return CX_FAIL_VDSO;
	if (cur == old)
		return CX_HIT;
	int64_t lo = 0, hi = 0;
	for (uint32_t i = 0; i < im->nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(im, i);
		if (i == 0 || v->offset < lo)
			lo = v->offset;
		if (i == 0 || v->offset + (int64_t)v->size > hi)
			hi = v->offset + (int64_t)v->size;
	}
	/*
	 * MREMAP_FIXED silently unmaps whatever lies at the target. Reserve the whole
	 * target first with MAP_FIXED_NOREPLACE so a collision fails instead.
	 */
	uint64_t target = old + (uint64_t)lo, len = (uint64_t)(hi - lo);
	long r = sys_mmap(target, len, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (mmap_failed(r) || (uint64_t)r != target) {
		if (!mmap_failed(r))
			sys_munmap((uint64_t)r, len);
		return CX_FAIL_COLLISION;
	}
	for (uint32_t i = 0; i < im->nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(im, i);
		uint64_t to = old + (uint64_t)v->offset;
		r = sys_mremap(cur + (uint64_t)v->offset, v->size, v->size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if ((uint64_t)r != to)
			return CX_FAIL_VDSO;
	}
	return CX_HIT;
}

/* ------------------------------------------------------------------------ */
/* Step 4: map every region at its address, refusing to replace anything.   */

/* Protection a region is mapped with: writable while its slots are patched. */
static int map_prot(const struct cx_region *r)
{
	int prot = (int)(r->prot & 7);
	return (r->flags & CX_REGION_PATCHED) ? prot | PROT_WRITE : prot;
}

/* Where a region's bytes come from: fd and offset (-1 for anonymous zero memory). */
static enum cx_outcome region_source(const struct image *im, const struct file_fds *fds, const struct cx_region *r,
				     int *fd, uint64_t *off)
{
	if ((r->addr | r->len) % CX_PAGE || !r->len)
		return CX_FAIL_HEADER;
	switch (r->source) {
	case CX_SRC_FILE:
		if (r->file >= im->nfiles || (*fd = fd_of(fds, r->file)) < 0)
			return CX_FAIL_HEADER;
		*off = r->offset;
		return CX_HIT;
	case CX_SRC_DATA:
		if (r->offset < im->h->data_offset || r->offset > im->h->file_size ||
		    r->len > im->h->file_size - r->offset)
			return CX_FAIL_TRUNCATED;
		*fd = im->fd, *off = r->offset;
		return CX_HIT;
	case CX_SRC_ZERO:
		*fd = -1, *off = 0;
		return CX_HIT;
	default:
		return CX_FAIL_HEADER;
	}
}

/*
 * Regions that continue one another in memory and in their source (a
 * library's r--, r-x and r-- segments; relro and data in the image) are mapped
 * by one mmap with the first one's protection, and the others get theirs by
 * mprotect: a library costs two calls instead of three, and never holds a page
 * writable and executable at once. The syscall count is the restore cost of
 * programs with many libraries.
 */
static enum cx_outcome map_regions(const struct image *im, const struct file_fds *fds)
{
	uint32_t i = 0;
	while (i < im->nregions) {
		const struct cx_region *first = REGION_AT(im, i);
		int fd, nfd;
		uint64_t off, noff, len = first->len;
		enum cx_outcome o = region_source(im, fds, first, &fd, &off);
		if (o != CX_HIT)
			return o;
		uint32_t j = i + 1;
		for (; j < im->nregions; j++) {
			const struct cx_region *n = REGION_AT(im, j);
			if ((o = region_source(im, fds, n, &nfd, &noff)) != CX_HIT)
				return o;
			if (n->addr != first->addr + len || n->source != first->source || nfd != fd ||
			    (fd >= 0 && noff != off + len))
				break;
			len += n->len;
		}
		int flags = MAP_PRIVATE | MAP_FIXED_NOREPLACE | (fd < 0 ? MAP_ANONYMOUS : 0);
		long m = sys_mmap(first->addr, len, map_prot(first), flags, fd, off);
		if (m == -EEXIST)
			return CX_FAIL_COLLISION;
		if (mmap_failed(m))
			return CX_FAIL_MAP;
		if ((uint64_t)m != first->addr) {
			/* Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and place it elsewhere. */
			sys_munmap((uint64_t)m, len);
			return CX_FAIL_COLLISION;
		}
		for (uint32_t k = i + 1; k < j; k++) {
			const struct cx_region *r = REGION_AT(im, k);
			if (map_prot(r) != map_prot(first) && sys_mprotect(r->addr, r->len, map_prot(r)) < 0)
				return CX_FAIL_MAP;
		}
		i = j;
	}
	return CX_HIT;
}

/*
 * Post-init: the stack was captured as a plain mapping, which does not grow.
 * Room below it, as the kernel's stack would have had (MAP_NORESERVE: only
 * what the program touches costs memory).
 */
static enum cx_outcome map_stack_reserve(const struct image *im)
{
	uint64_t reserve = im->resume->stack_reserve;
	for (uint32_t i = 0; reserve && i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		if (!(r->flags & CX_REGION_STACK))
			continue;
		if (reserve > r->addr)
			return CX_FAIL_HEADER;
		uint64_t at = r->addr - reserve;
		long m = sys_mmap(at, reserve, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
		if (m == -EEXIST)
			return CX_FAIL_COLLISION;
		if (mmap_failed(m))
			return CX_FAIL_MAP;
		if ((uint64_t)m != at) {
			sys_munmap((uint64_t)m, reserve);
			return CX_FAIL_COLLISION;
		}
	}
	return CX_HIT;
}

/* Post-init: what the trampoline jumps to is the syscall instruction (0f 05) the thread stopped after. */
static enum cx_outcome check_syscall_insn(const struct image *im)
{
	const volatile unsigned char *p = (const unsigned char *)(im->resume->rip - 2);
	return p[0] == 0x0f && p[1] == 0x05 ? CX_HIT : CX_FAIL_RESUME;
}

/* ------------------------------------------------------------------------ */
/* Step 5: patch slots with this process's own argv, envp, auxv, tid, guard; */
/* in a post-init image, its thread id and its process ids.                 */

static enum cx_outcome slot_value(const struct launch *L, const struct cx_slot *s, uint64_t *out)
{
	uint64_t a = s->arg;
	const char *str;
	switch (s->kind) {
	case CX_SLOT_ARGC_ADDR:
		*out = (uint64_t)L->prog_sp;
		return CX_HIT;
	case CX_SLOT_ARGV:
		if (a > (uint64_t)L->prog_argc)
			return CX_FAIL_SLOT;
		*out = (uint64_t)&L->prog_argv[a];
		return CX_HIT;
	case CX_SLOT_ENVP:
		*out = (uint64_t)L->envp;
		return CX_HIT;
	case CX_SLOT_AUXV:
		*out = (uint64_t)L->auxv + a;
		return CX_HIT;
	case CX_SLOT_ARGV_STR:
	case CX_SLOT_ARGV_BASENAME:
		if (a >= (uint64_t)L->prog_argc)
			return CX_FAIL_SLOT;
		str = L->prog_argv[a];
		*out = (uint64_t)(s->kind == CX_SLOT_ARGV_STR ? str : cx_basename(str));
		return CX_HIT;
	case CX_SLOT_PLATFORM:
	case CX_SLOT_BASE_PLATFORM:
	case CX_SLOT_EXECFN:
		str = (const char *)cx_auxv_get(L->auxv, s->kind == CX_SLOT_PLATFORM	   ? AT_PLATFORM
							 : s->kind == CX_SLOT_BASE_PLATFORM ? AT_BASE_PLATFORM
											     : AT_EXECFN);
		if (!str || a > cx_strlen(str))
			return CX_FAIL_SLOT;
		*out = (uint64_t)str + a;
		return CX_HIT;
	case CX_SLOT_RANDOM: {
		uint64_t r = cx_auxv_get(L->auxv, AT_RANDOM);
		if (!r || a >= 16)
			return CX_FAIL_SLOT;
		*out = r + a;
		return CX_HIT;
	}
	case CX_SLOT_ARGC:
		*out = (uint64_t)L->prog_argc;
		return CX_HIT;
	case CX_SLOT_TID:
		if (!L->tid)
			((struct launch *)L)->tid = (uint32_t)sys_gettid();
		*out = L->tid;
		return CX_HIT;
	case CX_SLOT_CANARY: {
		/* A fresh guard for this process: no frame is live at the entry point. */
		uint64_t r = cx_auxv_get(L->auxv, AT_RANDOM), v;
		if (!r || a >= 64)
			return CX_FAIL_SLOT;
		__builtin_memcpy(&v, (const void *)r, 8);
		*out = v & ~((1ull << a) - 1);
		return CX_HIT;
	}
	default:
		return CX_FAIL_SLOT;
	}
}

/* This process's id of a CX_IDENT_* kind, asked once. */
static uint32_t ident(struct launch *L, uint64_t kind)
{
	if (!L->ids_known) {
		L->ids[CX_IDENT_PID] = (uint32_t)sys_getpid();
		L->ids[CX_IDENT_PPID] = (uint32_t)sys_getppid();
		L->ids[CX_IDENT_PGID] = (uint32_t)sys_getpgid(0);
		L->ids[CX_IDENT_SID] = (uint32_t)sys_getsid(0);
		L->ids_known = 1;
	}
	return L->ids[kind];
}

/* The bytes a slot writes at its address. */
struct slot_bytes {
	unsigned char b[24];
	uint32_t len;
};

/*
 * A post-init image only holds ids: its argv, environment and auxv are the
 * snapshot's own, and the resume context carries the caller's. An id written
 * as text must fit the field the sentinel had (its digits and a NUL).
 */
static enum cx_outcome post_init_slot(struct launch *L, const struct cx_slot *s, struct slot_bytes *out)
{
	uint64_t kind = s->arg & 0xff;
	uint64_t v;
	switch (s->kind) {
	case CX_SLOT_TID:
		if (slot_value(L, s, &v) != CX_HIT)
			return CX_FAIL_SLOT;
		break;
	case CX_SLOT_PROCESS_ID:
		if (kind > CX_IDENT_SID)
			return CX_FAIL_SLOT;
		v = ident(L, kind);
		break;
	case CX_SLOT_PROCESS_ID_TEXT: {
		struct cx_buf b = { (char *)out->b, 0, sizeof out->b, 0 };
		if (kind > CX_IDENT_SID)
			return CX_FAIL_SLOT;
		cx_buf_u64(&b, ident(L, kind), 10);
		out->len = (uint32_t)b.len + 1;
		return out->len <= (s->arg >> 8) ? CX_HIT : CX_FAIL_SLOT;
	}
	default:
		return CX_FAIL_SLOT;
	}
	if (s->width != 4)
		return CX_FAIL_HEADER;
	uint32_t w = (uint32_t)v;
	__builtin_memcpy(out->b, &w, 4);
	out->len = 4;
	return CX_HIT;
}

static enum cx_outcome slot_bytes(const struct image *im, struct launch *L, const struct cx_slot *s,
				  struct slot_bytes *out)
{
	uint64_t v;
	if (im->resume)
		return post_init_slot(L, s, out);
	enum cx_outcome o = slot_value(L, s, &v);
	if (o != CX_HIT)
		return o;
	if (s->width != 8 && s->width != 4)
		return CX_FAIL_HEADER;
	__builtin_memcpy(out->b, &v, s->width); /* little-endian: the low bytes */
	out->len = s->width;
	return CX_HIT;
}

/*
 * Before anything is mapped: every slot has a value for this run, and lies
 * in a region mapped writable (a bad image must not fault the launcher).
 */
static enum cx_outcome check_slots(const struct image *im, struct launch *L)
{
	for (uint32_t i = 0; i < im->nslots; i++) {
		const struct cx_slot *s = SLOT_AT(im, i);
		struct slot_bytes b;
		enum cx_outcome o = slot_bytes(im, L, s, &b);
		if (o != CX_HIT)
			return o;
		const struct cx_region *r = region_at(im, s->addr, b.len);
		if (!r || !(map_prot(r) & PROT_WRITE))
			return CX_FAIL_HEADER;
	}
	return CX_HIT;
}

static enum cx_outcome patch_slots(const struct image *im, struct launch *L)
{
	for (uint32_t i = 0; i < im->nslots; i++) {
		const struct cx_slot *s = SLOT_AT(im, i);
		struct slot_bytes b;
		enum cx_outcome o = slot_bytes(im, L, s, &b);
		if (o != CX_HIT)
			return o;
		__builtin_memcpy((void *)s->addr, b.b, b.len);
	}
	/* The program's argc goes in the stack word right before its argv (a post-init program has its own stack). */
	if (!im->resume)
		*L->prog_sp = (uint64_t)L->prog_argc;
	return CX_HIT;
}

/* Step 6: relro and other read-only data go back to their protection. */
static enum cx_outcome protect_regions(const struct image *im)
{
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		if ((r->flags & CX_REGION_PATCHED) && !(r->prot & CX_PROT_WRITE))
			if (sys_mprotect(r->addr, r->len, (int)(r->prot & 7)) < 0)
				return CX_FAIL_MAP;
	}
	return CX_HIT;
}

/* Step 7: the auxv describes the program, not the launcher. */
static void patch_auxv(const struct image *im, uint64_t *auxv)
{
	const struct cx_state *s = im->state;
	for (; auxv[0] != AT_NULL; auxv += 2) {
		switch (auxv[0]) {
		case AT_PHDR: auxv[1] = s->at_phdr; break;
		case AT_PHNUM: auxv[1] = s->at_phnum; break;
		case AT_ENTRY: auxv[1] = s->at_entry; break;
		case AT_BASE: auxv[1] = s->at_base; break;
		case AT_SYSINFO_EHDR: auxv[1] = s->vdso_base; break;
		}
	}
}

/* Step 8: per-thread kernel state the loader had set up, and the task name. */
static enum cx_outcome set_kernel_state(const struct image *im)
{
	const struct cx_state *s = im->state;
	const char *comm = image_str(im, s->comm);
	if (comm && comm[0])
		sys_prctl(PR_SET_NAME, (long)comm, 0, 0, 0);
	/* From here on %fs is the program's thread pointer; the launcher never uses TLS. */
	if ((s->flags & CX_STATE_HAVE_FS_BASE) && sys_arch_prctl(ARCH_SET_FS, s->fs_base) < 0)
		return CX_FAIL_KERNEL_STATE;
	if (s->flags & CX_STATE_HAVE_TID_ADDRESS)
		sys_set_tid_address(s->tid_address);
	if ((s->flags & CX_STATE_HAVE_ROBUST_LIST) && sys_set_robust_list(s->robust_head, s->robust_len) < 0)
		return CX_FAIL_KERNEL_STATE;
	if ((s->flags & CX_STATE_HAVE_RSEQ) && sys_rseq(s->rseq_area, s->rseq_len, 0, s->rseq_sig) < 0)
		return CX_FAIL_KERNEL_STATE;
	return CX_HIT;
}

/* ------------------------------------------------------------------------ */
/* Step 9: the trampoline. Runs from an anonymous page after the launcher's  */
/* own image is gone, so it may use nothing but registers and its params.   */

/* One disposition to install: the signal, then the kernel's struct sigaction. */
struct tramp_sig {
	uint64_t signo;
	struct ksigaction act;
};

struct tramp_params {
	uint64_t unmap_addr;
	uint64_t unmap_len;
	struct prctl_mm_map mm;
	int64_t exe_fd;
	uint64_t entry;
	uint64_t rtld_fini;
	uint64_t sp;
	uint64_t cold_path;
	uint64_t cold_argv;
	uint64_t cold_envp;
	/* Post-init images: resume at the checkpoint's syscall instead of the entry point. */
	uint64_t resume;
	int64_t resume_fd;
	int64_t umask; /* -1: the caller's stays */
	uint64_t all_signals;
	uint64_t sigmask;
	uint64_t nsigs;
	uint64_t xstate; /* 64-byte aligned copy of the XSAVE area, further down this block */
	uint64_t rfbm; /* xrstor's requested-feature bitmap (edx:eax) */
	uint64_t rflags;
	/* In this order: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi rsp. */
	uint64_t regs[16];
	struct tramp_sig sigs[CX_NSIG];
	char path[CX_PATH_MAX];
};
/* The assembly below addresses these fields by offset. */
_Static_assert(offsetof(struct tramp_params, mm) == 16, "tramp mm");
_Static_assert(offsetof(struct tramp_params, mm) + offsetof(struct prctl_mm_map, exe_fd) == 116, "tramp exe_fd");
_Static_assert(offsetof(struct tramp_params, exe_fd) == 120, "tramp fd");
_Static_assert(offsetof(struct tramp_params, entry) == 128, "tramp entry");
_Static_assert(offsetof(struct tramp_params, rtld_fini) == 136, "tramp rtld_fini");
_Static_assert(offsetof(struct tramp_params, sp) == 144, "tramp sp");
_Static_assert(offsetof(struct tramp_params, cold_path) == 152, "tramp cold path");
_Static_assert(offsetof(struct tramp_params, cold_argv) == 160, "tramp cold argv");
_Static_assert(offsetof(struct tramp_params, cold_envp) == 168, "tramp cold envp");
_Static_assert(offsetof(struct tramp_params, resume) == 176, "tramp resume");
_Static_assert(offsetof(struct tramp_params, resume_fd) == 184, "tramp resume fd");
_Static_assert(offsetof(struct tramp_params, umask) == 192, "tramp umask");
_Static_assert(offsetof(struct tramp_params, all_signals) == 200, "tramp all signals");
_Static_assert(offsetof(struct tramp_params, sigmask) == 208, "tramp sigmask");
_Static_assert(offsetof(struct tramp_params, nsigs) == 216, "tramp nsigs");
_Static_assert(offsetof(struct tramp_params, xstate) == 224, "tramp xstate");
_Static_assert(offsetof(struct tramp_params, rfbm) == 232, "tramp rfbm");
_Static_assert(offsetof(struct tramp_params, rflags) == 240, "tramp rflags");
_Static_assert(offsetof(struct tramp_params, regs) == 248, "tramp regs");
_Static_assert(offsetof(struct tramp_params, sigs) == 376, "tramp sigs");
_Static_assert(sizeof(struct tramp_sig) == 40 && offsetof(struct tramp_sig, act) == 8, "tramp sig entry");
enum { R_R15, R_R14, R_R13, R_R12, R_RBP, R_RBX, R_R11, R_R10, R_R9, R_R8, R_RAX, R_RCX, R_RDX, R_RSI, R_RDI, R_RSP };
_Static_assert(R_RSP == 15 && R_R12 == 3, "regs order the assembly loads");

extern const char cx_tramp_begin[], cx_tramp_end[], cx_tramp_target[];
__asm__(".text\n"
	".balign 16\n"
	".globl cx_tramp_begin\n"
	".globl cx_tramp_end\n"
	".globl cx_tramp_target\n"
	"cx_tramp_begin:\n"
	"	mov %rdi, %r12\n"
	/* munmap(launcher): the kernel refuses a new exe_fd while the old exe is mapped. */
	"	mov $11, %eax\n"
	"	mov 0(%r12), %rdi\n"
	"	mov 8(%r12), %rsi\n"
	"	syscall\n"
	/* prctl(PR_SET_MM, PR_SET_MM_MAP, &mm, sizeof mm, 0) */
	"1:	mov $157, %eax\n"
	"	mov $35, %edi\n"
	"	mov $14, %esi\n"
	"	lea 16(%r12), %rdx\n"
	"	mov $104, %r10d\n"
	"	xor %r8d, %r8d\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jz 2f\n"
	/* Without CAP_CHECKPOINT_RESTORE exe_fd is refused: keep the launcher as exe. */
	"	cmpl $-1, 116(%r12)\n"
	"	je 9f\n"
	"	movl $-1, 116(%r12)\n"
	"	jmp 1b\n"
	"2:	mov 120(%r12), %rdi\n"
	"	test %rdi, %rdi\n"
	"	js 3f\n"
	"	mov $3, %eax\n"
	"	syscall\n"
	"3:	cmpq $0, 176(%r12)\n"
	"	jne 5f\n"
	"	mov 128(%r12), %rcx\n"
	"	mov 136(%r12), %rdx\n"
	"	mov 144(%r12), %rsp\n"
	"	xor %eax, %eax\n"
	"	xor %ebx, %ebx\n"
	"	xor %esi, %esi\n"
	"	xor %edi, %edi\n"
	"	xor %ebp, %ebp\n"
	"	xor %r8d, %r8d\n"
	"	xor %r9d, %r9d\n"
	"	xor %r10d, %r10d\n"
	"	xor %r11d, %r11d\n"
	"	xor %r13d, %r13d\n"
	"	xor %r14d, %r14d\n"
	"	xor %r15d, %r15d\n"
	"	xor %r12d, %r12d\n"
	"	jmp *%rcx\n"
	/*
	 * Post-init. Nothing below can fail, so only now does state that
	 * survives an exec change: the resume fd loses close-on-exec, the
	 * program's dispositions, umask and mask go in (all signals blocked
	 * meanwhile, so no handler of the program runs on this stack half-way).
	 */
	"5:	mov $72, %eax\n" /* fcntl(resume_fd, F_SETFD, 0) */
	"	mov 184(%r12), %rdi\n"
	"	mov $2, %esi\n"
	"	xor %edx, %edx\n"
	"	syscall\n"
	"	mov $14, %eax\n" /* rt_sigprocmask(SIG_SETMASK, &all_signals, 0, 8) */
	"	mov $2, %edi\n"
	"	lea 200(%r12), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	lea 376(%r12), %rbx\n"
	"	mov 216(%r12), %r13\n"
	"6:	test %r13, %r13\n"
	"	jz 7f\n"
	"	mov $13, %eax\n" /* rt_sigaction(signo, &act, 0, 8) */
	"	mov 0(%rbx), %rdi\n"
	"	lea 8(%rbx), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	add $40, %rbx\n"
	"	dec %r13\n"
	"	jmp 6b\n"
	"7:	mov 192(%r12), %rdi\n"
	"	test %rdi, %rdi\n"
	"	js 8f\n"
	"	mov $95, %eax\n" /* umask */
	"	syscall\n"
	"8:	mov $14, %eax\n" /* rt_sigprocmask(SIG_SETMASK, &sigmask, 0, 8) */
	"	mov $2, %edi\n"
	"	lea 208(%r12), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	/* FPU, SSE, AVX... as saved; from here on no instruction may touch them. */
	"	mov 224(%r12), %rbx\n"
	"	mov 232(%r12), %eax\n"
	"	mov 236(%r12), %edx\n"
	"	xrstor64 (%rbx)\n"
	/* Flags through the launcher's stack, the last use of it; mov leaves them alone. */
	"	pushq 240(%r12)\n"
	"	popfq\n"
	"	mov 248(%r12), %r15\n"
	"	mov 256(%r12), %r14\n"
	"	mov 264(%r12), %r13\n"
	"	mov 280(%r12), %rbp\n"
	"	mov 288(%r12), %rbx\n"
	"	mov 296(%r12), %r11\n"
	"	mov 304(%r12), %r10\n"
	"	mov 312(%r12), %r9\n"
	"	mov 320(%r12), %r8\n"
	"	mov 328(%r12), %rax\n"
	"	mov 336(%r12), %rcx\n"
	"	mov 344(%r12), %rdx\n"
	"	mov 352(%r12), %rsi\n"
	"	mov 360(%r12), %rdi\n"
	"	mov 368(%r12), %rsp\n"
	"	mov 272(%r12), %r12\n" /* the base register last */
	/* To the syscall instruction: read(resume_fd, buf, n) again, with the snapshot's registers. */
	"	jmp *cx_tramp_target(%rip)\n"
	"	.balign 8\n"
	"cx_tramp_target:\n"
	"	.quad 0\n"
	/* The launcher is gone, so the cold exec must happen here. */
	"9:	mov $59, %eax\n"
	"	mov 152(%r12), %rdi\n"
	"	mov 160(%r12), %rsi\n"
	"	mov 168(%r12), %rdx\n"
	"	syscall\n"
	"	mov $231, %eax\n"
	"	mov $127, %edi\n"
	"	syscall\n"
	"	hlt\n"
	"cx_tramp_end:\n");

static uint64_t strings_end(char **v, int n, uint64_t dflt)
{
	if (n <= 0)
		return dflt;
	return (uint64_t)v[n - 1] + cx_strlen(v[n - 1]) + 1;
}

/*
 * Post-init: the registers, FPU state, dispositions and mask of the stopped
 * thread, and what /proc/PID/cmdline shows: the caller's argv of the program
 * (bash s.sh a), not the adapter's command.
 */
static void resume_params(const struct image *im, const struct launch *L, struct tramp_params *p, unsigned char *code)
{
	const struct cx_resume *r = im->resume;
	p->resume = 1;
	p->resume_fd = r->resume_fd;
	p->umask = (r->flags & CX_RESUMEFLAG_SET_UMASK) ? (int64_t)(r->umask & 0777) : -1;
	p->all_signals = ~0ull;
	p->sigmask = r->sigmask;
	p->nsigs = im->nsigs;
	for (uint32_t i = 0; i < im->nsigs; i++) {
		const struct cx_sigaction *s = SIG_AT(im, i);
		p->sigs[i].signo = s->signo;
		p->sigs[i].act = (struct ksigaction){ s->handler, s->flags, s->restorer, s->mask };
	}
	unsigned char *x = (unsigned char *)(((uint64_t)(p + 1) + 63) & ~63ull);
	__builtin_memcpy(x, im->xstate, r->xstate_size);
	p->xstate = (uint64_t)x;
	p->rfbm = r->xfeatures & ~XFEATURE_TILEDATA; /* never in use (check_cpu): it stays in its init state */
	p->rflags = r->eflags & ~0x100ull; /* no trap flag */
	const uint64_t regs[16] = { r->r15, r->r14, r->r13, r->r12, r->rbp, r->rbx, r->r11, r->r10,
				    r->r9, r->r8, r->orig_rax, r->rcx, r->rdx, r->rsi, r->rdi, r->rsp };
	for (int i = 0; i < 16; i++)
		p->regs[i] = regs[i];
	uint64_t target = r->rip - 2;
	__builtin_memcpy(code + (cx_tramp_target - cx_tramp_begin), &target, 8);
	p->mm.start_stack = r->rsp;
	p->mm.arg_start = L->user_argc ? (uint64_t)L->user_argv[0] : p->mm.env_start;
	p->mm.arg_end = strings_end(L->user_argv, L->user_argc, p->mm.arg_start);
}

static void print_dry_run(const struct image *im, const struct launch *L)
{
	/* Benchmarks: how long everything up to the jump took, and its size. */
	struct timespec_k ts;
	char line[200];
	struct cx_buf o = { line, 0, sizeof line, 0 };
	sys_clock_gettime(1 /* CLOCK_MONOTONIC */, &ts);
	cx_buf_str(&o, "restore_ns=");
	cx_buf_u64(&o, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - L->dry_t0, 10);
	cx_buf_str(&o, " regions=");
	cx_buf_u64(&o, im->nregions, 10);
	cx_buf_str(&o, " files=");
	cx_buf_u64(&o, im->nfiles, 10);
	cx_buf_str(&o, " slots=");
	cx_buf_u64(&o, im->nslots, 10);
	if (im->resume) {
		cx_buf_str(&o, " post_init=1 sigactions=");
		cx_buf_u64(&o, im->nsigs, 10);
		cx_buf_str(&o, " xstate=");
		cx_buf_u64(&o, im->resume->xstate_size, 10);
	}
	cx_buf_str(&o, "\n");
	cx_write_all(2, line, o.len);
}

static enum cx_outcome jump(const struct image *im, struct launch *L, int exe_fd)
{
	const uint64_t xstate_room = im->resume ? im->resume->xstate_size + 64 : 0;
	const uint64_t params_len = (sizeof(struct tramp_params) + xstate_room + CX_PAGE - 1) & ~(CX_PAGE - 1);
	const uint64_t code_len = (uint64_t)(cx_tramp_end - cx_tramp_begin);
	long m = sys_mmap(0, params_len + CX_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mmap_failed(m) || code_len > CX_PAGE)
		return CX_FAIL_MAP;
	struct tramp_params *p = (struct tramp_params *)m;
	unsigned char *code = (unsigned char *)m + params_len;
	for (uint64_t i = 0; i < code_len; i++)
		code[i] = (unsigned char)cx_tramp_begin[i];

	const struct cx_state *s = im->state;
	int envc = 0;
	while (L->envp[envc])
		envc++;
	uint64_t *auxv_end = L->auxv;
	while (auxv_end[0] != AT_NULL)
		auxv_end += 2;
	auxv_end += 2;

	p->unmap_addr = (uint64_t)__ehdr_start & ~(CX_PAGE - 1);
	p->unmap_len = (((uint64_t)_end + CX_PAGE - 1) & ~(CX_PAGE - 1)) - p->unmap_addr;
	p->mm.start_code = s->start_code;
	p->mm.end_code = s->end_code;
	p->mm.start_data = s->start_data;
	p->mm.end_data = s->end_data;
	p->mm.start_brk = s->start_brk;
	p->mm.brk = s->brk;
	p->mm.start_stack = (uint64_t)L->prog_sp;
	/* /proc/PID/cmdline and ps show the program's own argv, not the launcher's. */
	p->mm.arg_start = L->prog_argc ? (uint64_t)L->prog_argv[0] : (uint64_t)L->envp;
	p->mm.arg_end = strings_end(L->prog_argv, L->prog_argc, p->mm.arg_start);
	p->mm.env_start = envc ? (uint64_t)L->envp[0] : p->mm.arg_end;
	p->mm.env_end = strings_end(L->envp, envc, p->mm.env_start);
	p->mm.auxv = L->auxv;
	p->mm.auxv_size = (uint32_t)((uint64_t)auxv_end - (uint64_t)L->auxv);
	p->mm.exe_fd = exe_fd >= 0 ? (uint32_t)exe_fd : (uint32_t)-1;
	p->exe_fd = exe_fd;
	p->entry = s->entry;
	p->rtld_fini = s->rtld_fini;
	p->sp = (uint64_t)L->prog_sp;
	struct cx_buf b = { p->path, 0, sizeof p->path, 0 };
	cx_buf_str(&b, L->path);
	p->cold_path = (uint64_t)p->path;
	p->cold_argv = (uint64_t)L->prog_argv;
	p->cold_envp = (uint64_t)L->envp;
	if (im->resume)
		resume_params(im, L, p, code);
	if (sys_mprotect((uint64_t)code, CX_PAGE, PROT_READ | PROT_EXEC) < 0)
		return CX_FAIL_MAP;
	if (L->dry_run) {
		print_dry_run(im, L);
		sys_exit_group(0);
	}
	cx_record(L, CX_HIT);
	if (L->rotate)
		cx_queue_miss(L, 1);
	__asm__ volatile("jmp *%1" : : "D"(p), "r"(code) : "memory");
	__builtin_unreachable();
}

/* ------------------------------------------------------------------------ */

/* Post-init, before the files are even opened: CPU, signals, registers, and the resume fd with the context on it. */
static enum cx_outcome prepare_resume(struct image *im, struct launch *L, int *resume_fd)
{
	enum cx_outcome o;
	if ((o = check_cpu(im)) != CX_HIT || (o = check_signals(im)) != CX_HIT || (o = check_resume_regs(im)) != CX_HIT)
		return o;
	if ((o = claim_resume_fd(im, (int)im->resume->resume_fd)) != CX_HIT)
		return o;
	*resume_fd = (int)im->resume->resume_fd;
	return deliver_context(L, *resume_fd);
}

enum cx_outcome cx_restore(struct launch *L)
{
	uint64_t buf[META_BUF / 8];
	struct file_fds fds;
	int exe_fd = -1, files_open = 0, resume_fd = -1;
	struct image im;
	enum cx_outcome o;
	__builtin_memset(&im, 0, sizeof im);
	im.fd = -1;
	fds.n = 0;

	if ((o = read_meta(&im, L->image, buf)) != CX_HIT)
		goto out;
	if ((o = check_owner(&im, L->key_euid)) != CX_HIT)
		goto out;
	if ((o = check_header(&im, L->auxv)) != CX_HIT)
		goto out;
	if ((o = find_sections(&im)) != CX_HIT)
		goto out;
	if ((o = check_key(&im, L)) != CX_HIT)
		goto out;
	check_age(&im, L);
	if ((o = check_slots(&im, L)) != CX_HIT)
		goto out;
	if (im.resume && (o = prepare_resume(&im, L, &resume_fd)) != CX_HIT)
		goto out;
	files_open = 1;
	if ((o = check_files(&im, &fds, &exe_fd)) != CX_HIT)
		goto out;
	/* Past this point the address space changes: only a cold exec can follow a failure. */
	if ((o = move_vdso(&im, L->auxv)) != CX_HIT)
		goto out;
	if ((o = map_regions(&im, &fds)) != CX_HIT)
		goto out;
	if (im.resume && (o = map_stack_reserve(&im)) != CX_HIT)
		goto out;
	close_files(&fds, exe_fd, im.fd);
	im.fd = -1;
	if (im.resume && (o = check_syscall_insn(&im)) != CX_HIT)
		goto out;
	if ((o = patch_slots(&im, L)) != CX_HIT)
		goto out;
	if ((o = protect_regions(&im)) != CX_HIT)
		goto out;
	patch_auxv(&im, L->auxv);
	if ((o = set_kernel_state(&im)) != CX_HIT)
		goto out;
	o = jump(&im, L, exe_fd);
out:
	/* Nothing may leak into the cold-exec'd program: close every fd opened here. */
	if (files_open) {
		close_files(&fds, -1, im.fd);
	} else if (im.fd >= 0) {
		sys_close(im.fd);
	}
	if (resume_fd >= 0)
		sys_close(resume_fd);
	return o;
}

/* ------------------------------------------------------------------------ */
/* --internal-inspect IMAGE: the C reader's view, one "name=value" per line, */
/* compared field by field against the TypeScript reader in the tests.       */

struct out {
	char buf[8192];
	struct cx_buf b;
};

static void out_flush(struct out *o)
{
	cx_write_all(1, o->buf, o->b.len);
	o->b.len = 0;
}

static void out_kv(struct out *o, const char *prefix, int idx, const char *name, uint64_t v, const char *s)
{
	if (o->b.len > sizeof o->buf - 512)
		out_flush(o);
	cx_buf_str(&o->b, prefix);
	if (idx >= 0) {
		cx_buf_str(&o->b, "[");
		cx_buf_u64(&o->b, (uint64_t)idx, 10);
		cx_buf_str(&o->b, "]");
	}
	cx_buf_str(&o->b, ".");
	cx_buf_str(&o->b, name);
	cx_buf_str(&o->b, "=");
	if (s)
		cx_buf_str(&o->b, s);
	else
		cx_buf_u64(&o->b, v, 10);
	cx_buf_str(&o->b, "\n");
}

static void inspect_resume(struct out *o, const struct image *im)
{
	const struct cx_resume *r = im->resume;
	static const char *const names[] = { "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10",
					     "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax",
					     "rip", "eflags", "rsp", "gs_base", "xfeatures", "sigmask",
					     "ignored_at_start", "stack_reserve" };
	_Static_assert(offsetof(struct cx_resume, stack_reserve) == 23 * 8, "cx_resume: 24 u64 fields first");
	const uint64_t *words = (const uint64_t *)r;
	for (int i = 0; i < 24; i++)
		out_kv(o, "resume", -1, names[i], words[i], 0);
	out_kv(o, "resume", -1, "xstate_size", r->xstate_size, 0);
	out_kv(o, "resume", -1, "resume_fd", r->resume_fd, 0);
	out_kv(o, "resume", -1, "umask", r->umask, 0);
	out_kv(o, "resume", -1, "flags", r->flags, 0);
	out_kv(o, "resume", -1, "sigactions", im->nsigs, 0);
	out_kv(o, "xstate", -1, "length", im->xstate_len, 0);
	out_kv(o, "xstate", -1, "hash", cx_hash64(im->xstate, im->xstate_len, CX_FNV_OFFSET), 0);
	for (uint32_t i = 0; i < im->nsigs; i++) {
		const struct cx_sigaction *a = SIG_AT(im, i);
		out_kv(o, "sigaction", (int)i, "signo", a->signo, 0);
		out_kv(o, "sigaction", (int)i, "handler", a->handler, 0);
		out_kv(o, "sigaction", (int)i, "flags", a->flags, 0);
		out_kv(o, "sigaction", (int)i, "restorer", a->restorer, 0);
		out_kv(o, "sigaction", (int)i, "mask", a->mask, 0);
	}
}

int cx_inspect(const char *file)
{
	uint64_t buf[META_BUF / 8];
	struct image im;
	struct out o;
	__builtin_memset(&im, 0, sizeof im);
	o.b = (struct cx_buf){ o.buf, 0, sizeof o.buf, 0 };
	uint64_t auxv[4] = { AT_PAGESZ, CX_PAGE, AT_NULL, 0 };
	enum cx_outcome r = read_meta(&im, file, buf);
	if (r == CX_HIT)
		r = check_header(&im, auxv);
	if (r == CX_HIT)
		r = find_sections(&im);
	out_kv(&o, "check", -1, "outcome", (uint64_t)r, 0);
	if (r != CX_HIT) {
		out_flush(&o);
		return 1;
	}
	const struct cx_header *h = im.h;
	out_kv(&o, "header", -1, "format_version", h->format_version, 0);
	out_kv(&o, "header", -1, "abi_hash", h->abi_hash, 0);
	out_kv(&o, "header", -1, "section_count", h->section_count, 0);
	out_kv(&o, "header", -1, "meta_size", h->meta_size, 0);
	out_kv(&o, "header", -1, "data_offset", h->data_offset, 0);
	out_kv(&o, "header", -1, "file_size", h->file_size, 0);
	out_kv(&o, "header", -1, "checksum", h->checksum, 0);
	out_kv(&o, "header", -1, "created_ns", h->created_ns, 0);
	const struct cx_key *k = im.key;
	out_kv(&o, "key", -1, "euid", k->euid, 0);
	out_kv(&o, "key", -1, "exe_path", 0, image_str(&im, k->exe_path));
	out_kv(&o, "key", -1, "exe_dev", k->exe_dev, 0);
	out_kv(&o, "key", -1, "exe_ino", k->exe_ino, 0);
	out_kv(&o, "key", -1, "exe_size", k->exe_size, 0);
	out_kv(&o, "key", -1, "exe_mtime_sec", (uint64_t)k->exe_mtime_sec, 0);
	out_kv(&o, "key", -1, "exe_mtime_nsec", k->exe_mtime_nsec, 0);
	out_kv(&o, "key", -1, "exe_ctime_sec", (uint64_t)k->exe_ctime_sec, 0);
	out_kv(&o, "key", -1, "exe_ctime_nsec", k->exe_ctime_nsec, 0);
	out_kv(&o, "key", -1, "path_env", 0, image_str(&im, k->path_env));
	out_kv(&o, "key", -1, "kernel_release", 0, image_str(&im, k->kernel_release));
	out_kv(&o, "key", -1, "env_hash", k->env_hash, 0);
	out_kv(&o, "key", -1, "init_spec", 0, image_str(&im, k->init_spec));
	for (uint32_t i = 0; i < im.nfiles; i++) {
		const struct cx_file *f = FILE_AT(&im, i);
		out_kv(&o, "file", (int)i, "path", 0, image_str(&im, f->path));
		out_kv(&o, "file", (int)i, "kind", f->kind, 0);
		out_kv(&o, "file", (int)i, "dev", f->dev, 0);
		out_kv(&o, "file", (int)i, "ino", f->ino, 0);
		out_kv(&o, "file", (int)i, "size", f->size, 0);
		out_kv(&o, "file", (int)i, "mtime_sec", (uint64_t)f->mtime_sec, 0);
		out_kv(&o, "file", (int)i, "mtime_nsec", f->mtime_nsec, 0);
		out_kv(&o, "file", (int)i, "ctime_sec", (uint64_t)f->ctime_sec, 0);
		out_kv(&o, "file", (int)i, "ctime_nsec", f->ctime_nsec, 0);
		out_kv(&o, "file", (int)i, "mode", f->mode, 0);
		out_kv(&o, "file", (int)i, "flags", f->flags, 0);
	}
	for (uint32_t i = 0; i < im.nregions; i++) {
		const struct cx_region *g = REGION_AT(&im, i);
		out_kv(&o, "region", (int)i, "addr", g->addr, 0);
		out_kv(&o, "region", (int)i, "len", g->len, 0);
		out_kv(&o, "region", (int)i, "offset", g->offset, 0);
		out_kv(&o, "region", (int)i, "prot", g->prot, 0);
		out_kv(&o, "region", (int)i, "source", g->source, 0);
		out_kv(&o, "region", (int)i, "file", g->file, 0);
		out_kv(&o, "region", (int)i, "flags", g->flags, 0);
	}
	for (uint32_t i = 0; i < im.nslots; i++) {
		const struct cx_slot *s = SLOT_AT(&im, i);
		out_kv(&o, "slot", (int)i, "addr", s->addr, 0);
		out_kv(&o, "slot", (int)i, "arg", s->arg, 0);
		out_kv(&o, "slot", (int)i, "kind", s->kind, 0);
		out_kv(&o, "slot", (int)i, "width", s->width, 0);
	}
	const struct cx_state *s = im.state;
	out_kv(&o, "state", -1, "entry", s->entry, 0);
	out_kv(&o, "state", -1, "rtld_fini", s->rtld_fini, 0);
	out_kv(&o, "state", -1, "fs_base", s->fs_base, 0);
	out_kv(&o, "state", -1, "tid_address", s->tid_address, 0);
	out_kv(&o, "state", -1, "robust_head", s->robust_head, 0);
	out_kv(&o, "state", -1, "robust_len", s->robust_len, 0);
	out_kv(&o, "state", -1, "rseq_area", s->rseq_area, 0);
	out_kv(&o, "state", -1, "rseq_len", s->rseq_len, 0);
	out_kv(&o, "state", -1, "rseq_sig", s->rseq_sig, 0);
	out_kv(&o, "state", -1, "start_code", s->start_code, 0);
	out_kv(&o, "state", -1, "end_code", s->end_code, 0);
	out_kv(&o, "state", -1, "start_data", s->start_data, 0);
	out_kv(&o, "state", -1, "end_data", s->end_data, 0);
	out_kv(&o, "state", -1, "start_brk", s->start_brk, 0);
	out_kv(&o, "state", -1, "brk", s->brk, 0);
	out_kv(&o, "state", -1, "vdso_base", s->vdso_base, 0);
	out_kv(&o, "state", -1, "at_phdr", s->at_phdr, 0);
	out_kv(&o, "state", -1, "at_phnum", s->at_phnum, 0);
	out_kv(&o, "state", -1, "at_entry", s->at_entry, 0);
	out_kv(&o, "state", -1, "at_base", s->at_base, 0);
	out_kv(&o, "state", -1, "flags", s->flags, 0);
	out_kv(&o, "state", -1, "comm", 0, image_str(&im, s->comm));
	for (uint32_t i = 0; i < im.nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(&im, i);
		out_kv(&o, "vdso", (int)i, "offset", (uint64_t)v->offset, 0);
		out_kv(&o, "vdso", (int)i, "size", v->size, 0);
		out_kv(&o, "vdso", (int)i, "kind", v->kind, 0);
	}
	if (im.resume)
		inspect_resume(&o, &im);
	out_flush(&o);
	return 0;
}
