/*
 * Steps 8 and 9: the per-thread kernel state the loader had set up, then the
 * trampoline (arch/<arch>/trampoline.c) that unmaps the launcher, points the
 * process's mm fields at the program and jumps to it. Past the trampoline's
 * unmap nothing can return here, so it carries its own cold exec.
 */
#include "tramp.h"
#include "restore.h"

/* Step 8: per-thread kernel state the loader had set up, and the task name. */
enum cx_outcome set_kernel_state(const struct image *im)
{
	const struct cx_state *s = im->state;
	const char *comm = image_str(im, s->comm);
	if (comm && comm[0])
		sys_prctl(PR_SET_NAME, (long)comm, 0, 0, 0);
	/* From here on the thread pointer is the program's; the launcher never uses TLS. */
	if ((s->flags & CX_STATE_HAVE_FS_BASE) && cx_arch_set_thread_pointer(s->fs_base) < 0)
		return CX_FAIL_KERNEL_STATE;
	if (s->flags & CX_STATE_HAVE_TID_ADDRESS)
		sys_set_tid_address(s->tid_address);
	if ((s->flags & CX_STATE_HAVE_ROBUST_LIST) && sys_set_robust_list(s->robust_head, s->robust_len) < 0)
		return CX_FAIL_KERNEL_STATE;
	if ((s->flags & CX_STATE_HAVE_RSEQ) && sys_rseq(s->rseq_area, s->rseq_len, 0, s->rseq_sig) < 0)
		return CX_FAIL_KERNEL_STATE;
	return CX_HIT;
}

static char *copy_string(char *to, const char *s)
{
	size_t n = cx_strlen(s) + 1;
	__builtin_memcpy(to, s, n);
	return to + n;
}

/* Bytes of argv and environment strings a post-init restore copies (resume_params). */
static uint64_t resume_strings_size(const struct launch *L)
{
	uint64_t n = 0;
	for (int i = 0; i < L->user_argc; i++)
		n += cx_strlen(L->user_argv[i]) + 1;
	for (char **e = L->envp; *e; e++)
		n += cx_strlen(*e) + 1;
	return n;
}

/*
 * Post-init: the kernel's stack of this process, to unmap once the program
 * has its own. It starts at most 128 KiB (the kernel's initial expansion)
 * below the lowest word the kernel or stack.c wrote and ends at the page of
 * AT_EXECFN's string. Nothing else can lie in that span but something of
 * the image's, mapped there MAP_FIXED: the span stops above it.
 */
static void kernel_stack_span(const struct image *im, const struct launch *L, uint64_t *addr, uint64_t *len)
{
	/* Not from L->auxv: by now its AT_EXECFN points at the trampoline's block (patch_auxv). */
	uint64_t top = L->kstack_top;
	/* --after-init rebuilds no frame (prog_sp unset): then the kernel's own is the lowest word. */
	uint64_t low = (uint64_t)(L->prog_sp && L->prog_sp < L->sp ? L->prog_sp : L->sp);
	*addr = *len = 0;
	if (!top)
		return;
	uint64_t lo = (low & ~(CX_PAGE - 1)) - (128ull << 10) - CX_PAGE;
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		uint64_t end = r->addr + r->len;
		if (r->addr < top && end > lo)
			lo = end; /* an image region is below the stack's pages in this span (it cannot overlap them) */
	}
	if (lo < top) {
		*addr = lo;
		*len = top - lo;
	}
}

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
static void resume_params(const struct image *im, const struct launch *L, struct tramp_params *p, unsigned char *code,
			  char *strings)
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
	cx_arch_resume_params(im, p, code);
	p->mm.start_stack = cx_arch_resume_sp(im);
	/* /proc/PID/cmdline and environ: copies here, so the kernel's stack can go (kernel_stack_span). */
	char *at = strings;
	p->mm.arg_start = (uint64_t)at;
	for (int i = 0; i < L->user_argc; i++)
		at = copy_string(at, L->user_argv[i]);
	p->mm.arg_end = p->mm.env_start = (uint64_t)at;
	for (char **e = L->envp; *e; e++)
		at = copy_string(at, *e);
	p->mm.env_end = (uint64_t)at;
	kernel_stack_span(im, L, &p->kstack_addr, &p->kstack_len);
}

static void print_dry_run(const struct image *im, const struct launch *L, const struct tramp_params *p)
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
		cx_buf_str(&o, " kstack=");
		cx_buf_u64(&o, p->kstack_len, 10); /* the kernel's stack the trampoline would unmap */
	}
	cx_buf_str(&o, "\n");
	cx_write_all(2, line, o.len);
}

/*
 * Whether PR_SET_MM_MAP may set exe_fd (/proc/self/exe): CAP_CHECKPOINT_RESTORE
 * or CAP_SYS_ADMIN effective (root), or CAP_CHECKPOINT_RESTORE permitted
 * (the launcher's file capability), which the trampoline raises for the
 * prctl alone. Asked once.
 */
int exe_settable(struct launch *L)
{
	if (!L->caps_known) {
		struct cap_header_k h = { CX_CAP_VERSION_3, 0 };
		struct cap_data_k d[2];
		__builtin_memset(d, 0, sizeof d);
		L->caps_known = 1;
		if (sys_capget(&h, d) == 0) {
			uint32_t crr = 1u << (CAP_CHECKPOINT_RESTORE - 32), admin = 1u << CAP_SYS_ADMIN;
			if ((d[1].effective & crr) || (d[0].effective & admin))
				L->caps = CX_CAPS_EFFECTIVE;
			else if (d[1].permitted & crr)
				L->caps = CX_CAPS_RAISE;
		}
	}
	return L->caps != CX_CAPS_NONE;
}

/*
 * The trampoline's block: parameters, its scratch stack, (post-init) copies
 * of the caller's argv and environment strings, and a page for its code.
 * Allocated once every region is mapped, so the kernel places it where the
 * image wants nothing. Its path field is also the program's AT_EXECFN (the
 * launcher's was the shim's or cached-exec's path; a cold run of the program
 * gets the path it was exec'd by, which is L->path): the block stays mapped
 * for the program's lifetime, like the kernel's stack strings do.
 */
enum cx_outcome tramp_alloc(const struct image *im, struct launch *L, struct tramp_block *t)
{
	const uint64_t xstate_room = im->resume ? cx_arch_resume_room(im) : 0;
	/* 512 bytes at the end are the trampoline's own stack. */
	t->params_len = (sizeof(struct tramp_params) + xstate_room + 512 + CX_PAGE - 1) & ~(CX_PAGE - 1);
	t->strings_len = im->resume ? (resume_strings_size(L) + CX_PAGE - 1) & ~(CX_PAGE - 1) : 0;
	const uint64_t code_len = (uint64_t)(cx_tramp_end - cx_tramp_begin);
	long m = sys_mmap(0, t->params_len + t->strings_len + CX_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mmap_failed(m) || code_len > CX_PAGE)
		return CX_FAIL_MAP;
	t->base = (uint64_t)m;
	struct tramp_params *p = (struct tramp_params *)m;
	struct cx_buf b = { p->path, 0, sizeof p->path, 0 };
	cx_buf_str(&b, L->path);
	L->execfn = p->path;
	return CX_HIT;
}

enum cx_outcome jump(const struct image *im, struct launch *L, int exe_fd, const struct tramp_block *t)
{
	const uint64_t params_len = t->params_len, strings_len = t->strings_len;
	const uint64_t code_len = (uint64_t)(cx_tramp_end - cx_tramp_begin);
	const uint64_t m = t->base;
	struct tramp_params *p = (struct tramp_params *)m;
	char *strings = (char *)m + params_len;
	unsigned char *code = (unsigned char *)m + params_len + strings_len;
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
	/* Without the capability the prctl would refuse exe_fd: do not ask (one failed syscall less). */
	p->mm.exe_fd = exe_fd >= 0 && exe_settable(L) ? (uint32_t)exe_fd : (uint32_t)-1;
	p->exe_fd = exe_fd;
	p->exe_required = (s->flags & CX_STATE_READS_EXE) != 0;
	p->scratch_sp = (uint64_t)m + params_len - 64;
	if (L->own_stack) {
		p->lstack_addr = CX_LAUNCHER_STACK;
		p->lstack_len = CX_LAUNCHER_STACK_SIZE;
	}
	if (p->mm.exe_fd != (uint32_t)-1 && L->caps == CX_CAPS_RAISE) {
		uint32_t crr = 1u << (CAP_CHECKPOINT_RESTORE - 32);
		p->caps_raise = 1;
		p->cap_hdr = (struct cap_header_k){ CX_CAP_VERSION_3, 0 };
		p->cap_raised[1].effective = p->cap_raised[1].permitted = crr;
	}
	p->entry = s->entry;
	p->rtld_fini = s->rtld_fini;
	p->sp = (uint64_t)L->prog_sp;
	p->cold_path = (uint64_t)p->path; /* filled by tramp_alloc */
	p->cold_argv = (uint64_t)L->prog_argv;
	p->cold_envp = (uint64_t)L->envp;
	if (im->resume)
		resume_params(im, L, p, code, strings);
	if (sys_mprotect((uint64_t)code, CX_PAGE, PROT_READ | PROT_EXEC) < 0)
		return CX_FAIL_MAP;
	if (L->dry_run) {
		print_dry_run(im, L, p);
		sys_exit_group(0);
	}
	cx_record(L, CX_HIT);
	if (L->rotate)
		cx_queue_miss(L, CX_QUEUE_ROTATE);
	cx_close_dirs(L);
	cx_tramp_enter(p, code, code_len);
}
