/*
 * cached-exec launcher: the hot path.
 *
 * Decides which program runs (prefix form, shim, #! interpreter, helper
 * modes), resolves it through PATH exactly like execvp (resolve.c), computes
 * the cache key (key.c), and either restores the program's image inside this
 * very process (restore.c) or execs it cold. It never returns to a caller and
 * it never makes a run fail that would have succeeded without it: every doubt
 * ends in cx_cold_exec().
 */
#include "launcher.h"

/* ------------------------------------------------------------------------ */
/* Cold exec: the one way out that always works.                             */

__attribute__((noreturn)) void cx_cold_exec(struct launch *L)
{
	long r = sys_execve(L->path, L->prog_argv, L->envp);
	if (r == -ENOEXEC) {
		/* execvp runs a file without a #! line with /bin/sh: do the same. */
		char *argv[L->prog_argc + 2];
		argv[0] = (char *)"/bin/sh";
		argv[1] = L->path;
		for (int i = 1; i < L->prog_argc; i++)
			argv[i + 1] = L->prog_argv[i];
		argv[L->prog_argc + 1] = 0;
		r = sys_execve("/bin/sh", argv, L->envp);
	}
	cx_error(L->name, cx_errno_text(r));
	sys_exit_group(r == -ENOENT ? 127 : 126);
}

/* node dist/cli/main.js ARGS...: admin commands live in TypeScript. */
static __attribute__((noreturn)) void exec_cli(struct launch *L, int first_arg)
{
	char script[CX_PATH_MAX + 32];
	if (cx_cli_script(script, sizeof script)) {
		cx_error("cannot find its own path", 0);
		sys_exit_group(127);
	}
	/* A launcher copied out of its package still runs programs, but its admin
	 * commands live beside it: say so in one line, not with node's stack trace. */
	struct kstat st;
	if (sys_stat(script, &st) < 0) {
		cx_error(script, "missing: admin commands need the launcher inside its package (bin/cached-exec; link to it rather than copy it)");
		sys_exit_group(127);
	}
	int nargs = L->argc - first_arg;
	char *argv[nargs + 3];
	argv[0] = (char *)"node";
	argv[1] = script;
	for (int i = 0; i < nargs; i++)
		argv[i + 2] = L->argv[first_arg + i];
	argv[nargs + 2] = 0;
	sys_execve(CX_NODE_PATH, argv, L->envp);
	/* Fall back to node on PATH. */
	L->name = "node";
	L->prog_argv = argv;
	L->prog_argc = nargs + 2;
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
	cx_cold_exec(L);
}

/*
 * --internal-traceme [--no-aslr] [--fake-tsc] PATH ARGV0 ARGS...: the snapshotter's child.
 * Stops itself so the tracer can set ptrace options, then execs the program.
 */
static __attribute__((noreturn)) void traceme(struct launch *L, int i)
{
	long tracer = 0; /* --parent=PID: the tracer that spawned us, as it knows itself */
	if (i < L->argc && __builtin_memcmp(L->argv[i], "--parent=", 9) == 0) {
		for (const char *v = L->argv[i] + 9; *v >= '0' && *v <= '9' && tracer < 100000000; v++)
			tracer = tracer * 10 + (*v - '0');
		i++;
	}
	if (i < L->argc && cx_streq(L->argv[i], "--no-aslr")) {
		sys_personality(ADDR_NO_RANDOMIZE);
		i++;
	}
	if (i < L->argc && cx_streq(L->argv[i], "--one-cpu")) {
		/*
		 * The loader stores cpuid results, which include the APIC id of the CPU
		 * it ran on: both differential runs must run on the same CPU.
		 */
		uint64_t mask[16] = { 0 };
		if (sys_sched_getaffinity(0, sizeof mask, mask) > 0) {
			for (int w = 0; w < 16; w++)
				if (mask[w]) {
					uint64_t one[16] = { 0 };
					one[w] = mask[w] & -mask[w];
					sys_sched_setaffinity(0, sizeof one, one);
					break;
				}
		}
		i++;
	}
	if (i < L->argc && cx_streq(L->argv[i], "--fake-tsc")) {
		/*
		 * rdtsc faults (SIGSEGV) and the tracer answers with a deterministic
		 * counter, so the loader's timing variables are equal in both runs of
		 * the differential snapshot. The setting survives execve.
		 */
		sys_prctl(26 /* PR_SET_TSC */, 2 /* PR_TSC_SIGSEGV */, 0, 0, 0);
		i++;
	}
	if (L->argc - i < 2) {
		cx_error("--internal-traceme", "usage: PATH ARGV0 [ARGS...]");
		sys_exit_group(2);
	}
	/*
	 * With the launcher's file capability (--install-capability) this process
	 * holds a permitted capability its tracer lacks, and is undumpable: the
	 * kernel would refuse the trace. The program exec'd next gets none of it
	 * anyway; root's capabilities come back with the exec.
	 */
	if (cx_auxv_get(L->auxv, AT_UID) != 0) {
		struct cap_header_k h = { CX_CAP_VERSION_3, 0 };
		struct cap_data_k none[2];
		__builtin_memset(none, 0, sizeof none);
		sys_capset(&h, none);
		sys_prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	}
	/*
	 * Until the tracer sees the SIGSTOP below and sets PTRACE_O_EXITKILL, a
	 * tracer killed now (a warmer SIGKILLed) would leave this process stopped
	 * forever: die with the parent instead (kept across the exec, like
	 * EXITKILL). A parent already gone shows as another ppid than the
	 * tracer's pid it passed (--parent): read from getppid() alone, a
	 * tracer killed before this first look would leave its reaper as the
	 * parent, this process would trace itself to the reaper and stay stopped.
	 */
	long parent = tracer ? tracer : sys_getppid();
	sys_prctl(1 /* PR_SET_PDEATHSIG */, 9 /* SIGKILL */, 0, 0, 0);
	if (sys_getppid() != parent)
		sys_exit_group(127);
	if (sys_ptrace(PTRACE_TRACEME, 0, 0, 0) < 0) {
		cx_error("--internal-traceme", "ptrace(TRACEME) failed");
		sys_exit_group(2);
	}
	sys_kill((int)sys_getpid(), SIGSTOP);
	long r = sys_execve(L->argv[i], L->argv + i + 1, L->envp);
	cx_error(L->argv[i], cx_errno_text(r));
	sys_exit_group(127);
}

/* Prints "hash image-path" for the resolved program in L. */
static __attribute__((noreturn)) void print_key_resolved(struct launch *L)
{
	L->euid = (uint32_t)sys_geteuid();
	if (cache_dir(L) || compute_key(L, L->cache_dir, L->euid, 0))
		sys_exit_group(1);
	char line[CX_PATH_MAX + 64];
	struct cx_buf o = { line, 0, sizeof line, 0 };
	cx_buf_hex16(&o, L->key_hash);
	cx_buf_str(&o, " ");
	cx_buf_str(&o, L->image);
	cx_buf_str(&o, "\n");
	cx_write_all(1, line, o.len);
	sys_exit_group(0);
}

/* --internal-cpu-id: this machine's cx_arch_cpu_id, 8 hex digits, for the image writer (src/image/machine.ts). */
static __attribute__((noreturn)) void print_cpu_id(struct launch *L)
{
	char out[16];
	struct cx_buf b = { out, 0, sizeof out, 0 };
	uint32_t id = cx_launch_cpu_id(L);
	for (int s = 28; s >= 0; s -= 4)
		cx_buf_put(&b, &"0123456789abcdef"[(id >> s) & 15], 1);
	cx_buf_str(&b, "\n");
	sys_write(1, out, b.len);
	sys_exit_group(0);
}

/* --internal-key PROG: prints "hash image-path" as the launcher computes them. */
static __attribute__((noreturn)) void print_key(struct launch *L, int i)
{
	if (i >= L->argc)
		sys_exit_group(2);
	L->name = L->argv[i];
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
	print_key_resolved(L);
}


/* The program's argv is ours minus the first `drop` words; rebuild the stack for it. */
static void program_args(struct launch *L, int drop)
{
	L->prog_argc = L->argc;
	L->prog_argv = L->argv;
	L->prog_sp = L->sp;
	if (!L->own_stack || cx_reshape_stack(L, drop, 0, 0, 0) < 0) {
		/* An enormous argv/env: run cold (the old arrays are untouched). */
		L->prog_argc = L->argc - drop;
		L->prog_argv = L->argv + drop;
		L->no_restore = 1;
	}
}

static __attribute__((noreturn)) void run_resolved(struct launch *L)
{
	if (L->execfn_not_self) {
		/* "#!/path/cached-exec" with no program: running the script again would loop. */
		struct kstat fn;
		const char *execfn = (const char *)cx_auxv_get(L->auxv, AT_EXECFN);
		if (execfn && sys_stat(execfn, &fn) == 0 && fn.st_dev == L->st.st_dev && fn.st_ino == L->st.st_ino) {
			cx_error(L->name, "cached-exec as a #! interpreter needs a program name after it");
			sys_exit_group(127);
		}
	}
	if (cache_dir(L))
		L->cache_dir[0] = 0; /* nowhere to count: only the system layer can serve */
	L->euid = (uint32_t)sys_geteuid();
	enum cx_outcome o = L->no_restore ? CX_BYPASS_NO_CACHE_DIR : bypass_reason(L);
	if (o == CX_HIT)
		o = restore_layers(L);
	if (o == CX_MISS && !L->after_init) {
		/* Scripts have no image of their own: their interpreter does. */
		char script[CX_PATH_MAX];
		if (shebang(L, script, sizeof script) == 0) {
			o = bypass_reason(L);
			if (o == CX_HIT)
				o = restore_layers(L);
			/* A cold exec of the interpreter with this argv is what the kernel does too. */
		}
	}
	cx_record(L, o);
	if (o == CX_MISS)
		cx_queue_miss(L, 0);
	/* An image of the user's that serves another environment, or went stale: take it again for this run. */
	else if (L->env_dependent && !L->system_layer &&
		 (o == CX_FAIL_ENV || o == CX_FAIL_STALE_FILE || o == CX_FAIL_NEGATIVE_DEP))
		cx_queue_miss(L, CX_QUEUE_RETAKE);
	/* Taken under other resource limits: again, under this run's (the entry carries them). */
	else if (o == CX_FAIL_LIMITS && !L->system_layer)
		cx_queue_miss(L, CX_QUEUE_RETAKE);
	cx_cold_exec(L);
}

/*
 * argv[0] becomes the program's path where it would lead to the launcher
 * (resolve.c argv0_names_launcher). A restored program keeps pointers to its
 * argv strings, so the new one goes onto the kernel's stack (stack.c); when
 * that cannot be done the run is cold, which needs only the pointer.
 */
static void fix_argv0(struct launch *L, const char *shim)
{
	if (!L->prog_argc || !argv0_names_launcher(L, L->prog_argv[0], shim))
		return;
	char *path[1] = { L->path };
	if (L->no_restore || cx_reshape_stack(L, 1, path, 1, 1) < 0) {
		L->prog_argv[0] = L->path;
		L->no_restore = 1;
	}
}

static __attribute__((noreturn)) void after_init_resolved(struct launch *L, const struct after_init_req *q, int key_only,
							  const char *shim);

static __attribute__((noreturn)) void run(struct launch *L)
{
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
	if (L->shim && shim_kind(L, L->shim) == CX_SHIM_AFTERINIT) {
		/* --shims-install --after-init: as `cached-exec --after-init PROG ARGS` (no frame of ours to rebuild). */
		struct after_init_req q = { 1, 0, 0 };
		L->user_argv = L->prog_argv;
		L->user_argc = L->prog_argc;
		L->prog_sp = 0;
		after_init_resolved(L, &q, 0, L->shim);
	}
	fix_argv0(L, L->shim ? L->shim : L->first_shim);
	run_resolved(L);
}

/*
 * The resolved program of a post-init run (L->user_argv: the user's argv):
 * restore it from a post-init image, or run the adapter's command cold (which
 * runs the same init directly). A #! script run by python becomes its
 * interpreter's run (after_init_python_script).
 */
static __attribute__((noreturn)) void after_init_resolved(struct launch *L, const struct after_init_req *q, int key_only,
							  const char *shim)
{
	/* The user's argv[0] is what the adapter applies: the same rule as fix_argv0 (the context copies the strings). */
	if (L->user_argc && argv0_names_launcher(L, L->user_argv[0], shim))
		L->user_argv[0] = L->path;
	char *uargv[L->user_argc + 3];
	after_init_python_script(L, uargv);
	char *argv2[L->user_argc + CX_MAX_WORDS + 2];
	if (after_init_command(L, q, argv2, !key_only) < 0) {
		if (key_only)
			sys_exit_group(2);
		cx_cold_exec(L); /* the plain program, as without cached-exec */
	}
	if (key_only) {
		if (L->no_restore)
			sys_exit_group(1); /* the init spec does not fit: no key */
		print_key_resolved(L);
	}
	run_resolved(L);
}

/*
 * cached-exec [--internal-key | --internal-restore-dry] --after-init[=FILE]
 * [--preload LIST] PROG ARGS...
 */
static __attribute__((noreturn)) void after_init(struct launch *L, int first, int key_only)
{
	struct after_init_req q = { 0, 0, 0 };
	int prog = parse_after_init(L, first, &q);
	if (prog < 0) {
		if (key_only)
			sys_exit_group(2);
		exec_cli(L, 1); /* the CLI explains the usage */
	}
	L->name = L->argv[prog];
	L->user_argv = L->argv + prog;
	L->user_argc = L->argc - prog;
	L->prog_argv = L->user_argv;
	L->prog_argc = L->user_argc;
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
	after_init_resolved(L, &q, key_only, L->first_shim);
}

/*
 * Whether the kernel ran the launcher as a #! interpreter: argv[0] (the #!
 * line's path) is the launcher and AT_EXECFN (the script) is not. argv[1] (or
 * argv[2] after the line's argument) is the script's path then, the same
 * string as AT_EXECFN: a cheap test first, so ordinary shim runs pay no stat
 * of /proc/self/exe.
 */
static int script_run(struct launch *L, const char *execfn)
{
	struct kstat interp, fn, self;
	/* argv[1] is the script, or the #! line's argument with the script in argv[2]. */
	int named = cx_streq(L->argv[1], execfn) || (L->argc > 2 && cx_streq(L->argv[2], execfn));
	if (!named && !cx_startswith(cx_basename(L->argv[0]), "cached-exec"))
		return 0;
	if (sys_stat("/proc/self/exe", &self) < 0 || sys_stat(execfn, &fn) < 0)
		return 0;
	if (fn.st_dev == self.st_dev && fn.st_ino == self.st_ino)
		return 0;
	if (!cx_startswith(cx_basename(L->argv[0]), "cached-exec") &&
	    (sys_stat(L->argv[0], &interp) < 0 || interp.st_dev != self.st_dev || interp.st_ino != self.st_ino))
		return 0;
	L->self_known = 1;
	L->self_dev = self.st_dev;
	L->self_ino = self.st_ino;
	return 1;
}

uint64_t cx_page_size = 4096;

__attribute__((noreturn, used)) void cx_main(uint64_t *sp, int own_stack)
{
	struct launch L;
	/* Zero the small fields only: the path buffers are big and every page costs a fault. */
	__builtin_memset(&L, 0, offsetof(struct launch, path));
	L.path[0] = L.cache_dir[0] = L.image[0] = L.first_shim[0] = 0;
	L.own_stack = own_stack;
	L.cache_fd = L.sys_fd = CX_FD_UNKNOWN;
	/* On the kernel's stack the program's frame cannot be rebuilt under the launcher's own: cold only. */
	L.no_restore = !own_stack;
	L.sp = sp;
	L.argc = (int)sp[0];
	L.argv = (char **)(sp + 1);
	L.envp = L.argv + L.argc + 1;
	char **e = L.envp;
	while (*e)
		e++;
	L.auxv = (uint64_t *)(e + 1);
	uint64_t pagesz = cx_auxv_get(L.auxv, AT_PAGESZ);
	/* Before any use of CX_PAGE; a kernel that gives none (or nonsense) keeps 4096 and images of 4096 alone. */
	if (pagesz >= 4096 && !(pagesz & (pagesz - 1)))
		cx_page_size = pagesz;
	L.kstack_top = cx_kernel_stack_top(L.auxv);

	const char *execfn = (const char *)cx_auxv_get(L.auxv, AT_EXECFN);
	const char *invoked = execfn ? cx_basename(execfn) : (L.argc ? cx_basename(L.argv[0]) : "cached-exec");

	/*
	 * The launcher as a script's #! interpreter: the kernel ran the script
	 * (AT_EXECFN names it, and argv[1] is its path) and argv[0] is the
	 * interpreter path from the #! line. "#!/path/cached-exec PROG" is the
	 * prefix form; "#!/path/shims/NAME" is the shim NAME, not a shim named
	 * like the script.
	 */
	const char *shim = execfn;
	if (!cx_startswith(invoked, "cached-exec") && L.argc > 1 && execfn && script_run(&L, execfn)) {
		L.execfn_not_self = 1;
		if (cx_startswith(cx_basename(L.argv[0]), "cached-exec")) {
			invoked = "cached-exec";
		} else {
			invoked = cx_basename(L.argv[0]);
			shim = L.argv[0];
		}
	}
	if (!cx_startswith(invoked, "cached-exec")) {
		/* Masquerade: a symlink named like the program. argv stays the caller's (but see fix_argv0). */
		L.name = invoked;
		L.prog_argc = L.argc;
		L.prog_argv = L.argv;
		L.prog_sp = sp;
		L.shim = shim;
		run(&L);
	}
	if (L.argc < 2)
		exec_cli(&L, 1);
	const char *a = L.argv[1];
	if (a[0] == '-') {
		if (cx_streq(a, "--internal-traceme"))
			traceme(&L, 2);
		if (cx_streq(a, "--internal-tsc-probe"))
			cx_arch_counter_trap_probe();
		if (cx_streq(a, "--internal-cpu-id"))
			print_cpu_id(&L);
		if (cx_streq(a, "--internal-inspect"))
			sys_exit_group(L.argc > 2 ? cx_inspect(L.argv[2], cx_launch_cpu_id(&L)) : 2);
		if (cx_streq(a, "--internal-key")) {
			if (L.argc > 2 && is_after_init_option(L.argv[2]))
				after_init(&L, 2, 1);
			print_key(&L, 2);
		}
		if (cx_streq(a, "--internal-restore-dry") && L.argc > 2) {
			/* Benchmarks: do the whole restore but stop before the jump. */
			struct timespec_k ts;
			sys_clock_gettime(1 /* CLOCK_MONOTONIC */, &ts);
			L.dry_t0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
			L.dry_run = 1;
			if (is_after_init_option(L.argv[2]))
				after_init(&L, 2, 0);
			L.name = L.argv[2];
			program_args(&L, 2);
			run(&L);
		}
		if (is_after_init_option(a))
			after_init(&L, 1, 0);
		if (cx_streq(a, "--") && L.argc > 2) {
			/* cached-exec -- PROG ARGS: for programs whose name starts with '-'. */
			L.name = L.argv[2];
			program_args(&L, 2);
			run(&L);
		}
		exec_cli(&L, 1);
	}
	/* Prefix form: cached-exec PROG ARGS. */
	L.name = a;
	program_args(&L, 1);
	run(&L);
}
