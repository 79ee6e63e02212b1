/*
 * Post-init images (docs/resume-protocol.md): before anything is mapped, this
 * process must be one the image can become (signals, registers, CPU), and the
 * caller's context must be waiting on the resume fd. Only checks here, and the
 * resume fd, which a failure closes again.
 */
#include "restore.h"

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
	/* Optional trailing fields (readers ignore what they do not know): empty when not sent. */
	char amend[32 + 2 * sizeof(struct cx_stat_record)];
	char stats[CX_PATH_MAX + 32];
	char pages[CX_PATH_MAX + 160]; /* cached-exec-pages= (pages.c) */
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
	if (f->amend[0] && f->stats[0]) {
		ctx_str(c, f->amend);
		ctx_str(c, f->stats);
	}
	if (f->pages[0])
		ctx_str(c, f->pages);
	if (c->fd >= 0)
		ctx_flush(c);
}

/*
 * What an adapter needs to say that it ran the program cold after all (the
 * launcher counted a HIT and is gone by then): the statistics record to
 * append, as hex, outcome FAIL_ADAPTER, and the log's path. Only for a cache
 * directory that passed cachedir.c's checks; the adapter opens the log
 * without following links, as the launcher does, and never creates it.
 */
static void fill_amend(struct ctx_fields *f, const struct launch *L)
{
	f->amend[0] = f->stats[0] = 0;
	if (cx_user_cache((struct launch *)L, 0) < 0)
		return;
	struct cx_stat_record r = {
		.magic = CX_STAT_MAGIC,
		.outcome = CX_OUTCOME_FAIL_ADAPTER,
		.key_hash = L->key_hash,
		.time_ns = cx_now_ns((struct launch *)L),
		.pid = L->tid ? L->tid : (uint32_t)sys_getpid(),
		.reserved = 0,
	};
	const unsigned char *p = (const unsigned char *)&r;
	struct cx_buf b = { f->amend, 0, sizeof f->amend, 0 };
	cx_buf_str(&b, "cached-exec-amend=");
	for (unsigned i = 0; i < sizeof r; i++) {
		char hex[3] = { "0123456789abcdef"[p[i] >> 4], "0123456789abcdef"[p[i] & 15], 0 };
		cx_buf_str(&b, hex);
	}
	struct cx_buf s = { f->stats, 0, sizeof f->stats, 0 };
	cx_buf_str(&s, "cached-exec-stats=");
	cx_buf_str(&s, L->cache_dir);
	cx_buf_str(&s, "/stats/runs.log");
	if (b.overflow || s.overflow)
		f->amend[0] = f->stats[0] = 0;
}

/* argc, envc, the physical cwd and a fresh seed: what is not already in memory. */
static enum cx_outcome ctx_fill(struct ctx_fields *f, const struct image *im, const struct launch *L)
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
	fill_amend(f, L);
	pages_field(im, L, f->pages, sizeof f->pages);
	return CX_HIT;
}

/*
 * Puts the context on the claimed resume fd (close-on-exec until the
 * trampoline clears it, so every failure path leaves it to no program): a
 * memfd, or where there is none (old kernel, seccomp) a pipe that holds the
 * whole context with its write end closed, so the reader sees end of file.
 */
static enum cx_outcome deliver_context(const struct image *im, const struct launch *L, int resume_fd)
{
	struct ctx_fields f;
	struct ctx_out c;
	enum cx_outcome o = ctx_fill(&f, im, L);
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

/* Post-init, before the files are even opened: CPU, signals, registers, and the resume fd with the context on it. */
enum cx_outcome prepare_resume(struct image *im, struct launch *L, int *resume_fd)
{
	enum cx_outcome o;
	if ((o = cx_arch_check_resume_cpu(im)) != CX_HIT || (o = check_signals(im)) != CX_HIT || (o = check_resume_regs(im)) != CX_HIT)
		return o;
	if ((o = claim_resume_fd(im, (int)im->resume->resume_fd)) != CX_HIT)
		return o;
	*resume_fd = (int)im->resume->resume_fd;
	return deliver_context(im, L, *resume_fd);
}
