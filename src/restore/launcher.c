/*
 * cached-exec launcher: the hot path.
 *
 * Decides which program runs, resolves it through PATH exactly like execvp,
 * computes the cache key, and either restores the program's image inside this
 * very process (restore.c) or execs it cold. It never returns to a caller and it
 * never makes a run fail that would have succeeded without it: every doubt ends
 * in cx_cold_exec().
 */
#include "launcher.h"
#include "image_format.h"

/* The compiler may emit calls to these for struct copies even when freestanding. */
void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;
	while (n--)
		*dp++ = *sp++;
	return d;
}
void *memset(void *d, int c, size_t n)
{
	unsigned char *dp = d;
	while (n--)
		*dp++ = (unsigned char)c;
	return d;
}
int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	/* Leave CX_STACK_GAP untouched below the kernel's frame: stack.c may grow it. */
	"	sub $16384, %rsp\n"
	"	and $-16, %rsp\n"
	"	call cx_main\n"
	"	hlt\n");

/* ------------------------------------------------------------------------ */
/* Cold exec: the one way out that always works.                             */

static const char *errno_text(long e)
{
	switch (e) {
	case -ENOENT: return "No such file or directory";
	case -EACCES: return "Permission denied";
	case -ENOTDIR: return "Not a directory";
	case -ENOEXEC: return "Exec format error";
	default: return "cannot execute";
	}
}

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
	cx_error(L->name, errno_text(r));
	sys_exit_group(r == -ENOENT ? 127 : 126);
}

/* ------------------------------------------------------------------------ */
/* Program resolution, like execvp(3).                                       */

static void load_self(struct launch *L)
{
	struct kstat st;
	if (L->self_known)
		return;
	L->self_known = 1;
	/*
	 * The path we were exec'd by (a shim symlink or the launcher) names our own
	 * inode and is a plain path walk; /proc/self/exe costs several times more.
	 */
	const char *execfn = L->execfn_not_self ? 0 : (const char *)cx_auxv_get(L->auxv, AT_EXECFN);
	if ((execfn && sys_stat(execfn, &st) == 0) || sys_stat("/proc/self/exe", &st) == 0) {
		L->self_dev = st.st_dev;
		L->self_ino = st.st_ino;
	}
}

static int is_self(struct launch *L, const struct kstat *st)
{
	load_self(L);
	return st->st_dev == L->self_dev && st->st_ino == L->self_ino;
}

/* 0 when found (L->path, L->st filled), else the exit status to use. */
static int resolve(struct launch *L)
{
	const char *name = L->name;
	struct cx_buf b = { L->path, 0, sizeof L->path, 0 };
	if (!name[0]) {
		cx_error("", "No such file or directory");
		return 127;
	}
	for (const char *p = name; *p; p++) {
		if (*p != '/')
			continue;
		cx_buf_str(&b, name);
		long r = sys_stat(L->path, &L->st);
		if (r < 0) {
			cx_error(name, errno_text(r));
			return r == -ENOENT || r == -ENOTDIR ? 127 : 126;
		}
		return 0; /* execve itself reports non-executables (126) */
	}
	const char *path = cx_getenv(L->envp, "PATH");
	if (!path)
		path = "/bin:/usr/bin"; /* glibc's execvp default */
	int saw_eacces = 0;
	const char *p = path;
	for (;;) {
		const char *end = p;
		while (*end && *end != ':')
			end++;
		b.len = 0;
		b.overflow = 0;
		if (end == p)
			cx_buf_str(&b, ".");
		else
			cx_buf_put(&b, p, (size_t)(end - p));
		cx_buf_str(&b, "/");
		cx_buf_str(&b, name);
		if (!b.overflow) {
			struct kstat st;
			if (sys_stat(L->path, &st) == 0 && !is_self(L, &st)) {
				if ((st.st_mode & S_IFMT) == S_IFREG && sys_faccessat(L->path, 1 /* X_OK */) == 0) {
					L->st = st;
					return 0;
				}
				saw_eacces = 1;
			}
		}
		if (!*end)
			break;
		p = end + 1;
	}
	L->path[0] = 0;
	if (saw_eacces) {
		cx_error(name, "Permission denied");
		return 126;
	}
	cx_error(name, "command not found");
	return 127;
}

/* ------------------------------------------------------------------------ */
/* Bypass rules and key.                                                    */

static enum cx_outcome bypass_reason(struct launch *L)
{
	if (is_true_env_value(cx_getenv(L->envp, "CACHED_EXEC_DISABLE")))
		return CX_BYPASS_DISABLED;
	for (char **e = L->envp; *e; e++) {
		const char *v = *e;
		if (cx_startswith(v, "LD_") || cx_startswith(v, "GLIBC_TUNABLES=") || cx_startswith(v, "MALLOC_"))
			return CX_BYPASS_LOADER_ENV;
	}
	if (cx_auxv_get(L->auxv, AT_SECURE) || (L->st.st_mode & (S_ISUID | S_ISGID)))
		return CX_BYPASS_SECURE;
	return CX_HIT;
}

static int cache_dir(struct launch *L)
{
	struct cx_buf b = { L->cache_dir, 0, sizeof L->cache_dir, 0 };
	const char *d = cx_getenv(L->envp, "CACHED_EXEC_DIR");
	if (d && d[0]) {
		cx_buf_str(&b, d);
	} else if ((d = cx_getenv(L->envp, "XDG_CACHE_HOME")) && d[0]) {
		cx_buf_str(&b, d);
		cx_buf_str(&b, "/cached-exec");
	} else if ((d = cx_getenv(L->envp, "HOME")) && d[0]) {
		cx_buf_str(&b, d);
		cx_buf_str(&b, "/.cache/cached-exec");
	} else {
		return -1;
	}
	return b.overflow ? -1 : 0;
}

static void put32(unsigned char *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }

/* Same bytes as src/cache/key.ts keyBytes(), for the owner `euid`, under `dir`. */
static int compute_key(struct launch *L, const char *dir, uint32_t euid)
{
	unsigned char buf[56 + 3 * CX_PATH_MAX];
	size_t n = 56;
	if (!L->uts.release[0] && sys_uname(&L->uts) < 0)
		return -1;
	L->path_env = cx_getenv(L->envp, "PATH");
	if (!L->path_env)
		L->path_env = "";
	L->key_euid = euid;
	put32(buf + 0, CX_FORMAT_VERSION);
	put32(buf + 4, euid);
	put64(buf + 8, L->st.st_dev);
	put64(buf + 16, L->st.st_ino);
	put64(buf + 24, (uint64_t)L->st.st_size);
	put64(buf + 32, L->st.st_mtime_sec);
	put64(buf + 40, L->st.st_ctime_sec);
	put32(buf + 48, (uint32_t)L->st.st_mtime_nsec);
	put32(buf + 52, (uint32_t)L->st.st_ctime_nsec);
	const char *strs[3] = { L->path, L->path_env, L->uts.release };
	for (int i = 0; i < 3; i++) {
		size_t len = cx_strlen(strs[i]) + 1;
		if (n + len > sizeof buf)
			return -1;
		__builtin_memcpy(buf + n, strs[i], len);
		n += len;
	}
	L->key_hash = cx_hash64(buf, n, CX_FNV_OFFSET);
	struct cx_buf b = { L->image, 0, sizeof L->image, 0 };
	cx_buf_str(&b, dir);
	cx_buf_str(&b, "/images/");
	cx_buf_hex16(&b, L->key_hash);
	cx_buf_str(&b, ".img");
	return b.overflow ? -1 : 0;
}

/*
 * The user's cache first, then the read-only system layer (filled by root at
 * firmware build or first boot, keyed for uid 0, trusted only when root owns
 * the image). On a miss in both, L describes the user's key for the queue.
 */
static enum cx_outcome restore_layers(struct launch *L)
{
	enum cx_outcome o = CX_BYPASS_NO_CACHE_DIR;
	/* At boot there may be no HOME, hence no user cache: the system layer still serves. */
	if (L->cache_dir[0]) {
		if (compute_key(L, L->cache_dir, L->euid))
			return CX_BYPASS_NO_CACHE_DIR;
		o = cx_restore(L); /* returns only when it did not restore */
		if (o != CX_MISS)
			return o;
	}
	const char *sys_dir = cx_getenv(L->envp, "CACHED_EXEC_SYSTEM_DIR");
	if (!sys_dir || !sys_dir[0])
		return o;
	if (compute_key(L, sys_dir, 0) == 0) {
		enum cx_outcome s = cx_restore(L);
		if (s != CX_MISS)
			return s;
	}
	if (!L->cache_dir[0])
		return CX_BYPASS_NO_CACHE_DIR;
	compute_key(L, L->cache_dir, L->euid);
	return CX_MISS;
}

/* ------------------------------------------------------------------------ */
/* Helper modes.                                                            */

int cx_cli_script(char *out, size_t cap)
{
	char self[CX_PATH_MAX];
	long n = sys_readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	/* <pkg>/bin/cached-exec -> <pkg>/dist/cli/main.js */
	char *slash = 0;
	for (char *p = self; *p; p++)
		if (*p == '/')
			slash = p;
	if (slash)
		*slash = 0;
	struct cx_buf b = { out, 0, cap, 0 };
	cx_buf_str(&b, self);
	cx_buf_str(&b, "/../dist/cli/main.js");
	return b.overflow ? -1 : 0;
}

/* node dist/cli/main.js ARGS...: admin commands live in TypeScript. */
static __attribute__((noreturn)) void exec_cli(struct launch *L, int first_arg)
{
	char script[CX_PATH_MAX + 32];
	if (cx_cli_script(script, sizeof script)) {
		cx_error("cannot find its own path", 0);
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
	if (sys_ptrace(PTRACE_TRACEME, 0, 0, 0) < 0) {
		cx_error("--internal-traceme", "ptrace(TRACEME) failed");
		sys_exit_group(2);
	}
	sys_kill((int)sys_getpid(), SIGSTOP);
	long r = sys_execve(L->argv[i], L->argv + i + 1, L->envp);
	cx_error(L->argv[i], errno_text(r));
	sys_exit_group(127);
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
	L->euid = (uint32_t)sys_geteuid();
	if (cache_dir(L) || compute_key(L, L->cache_dir, L->euid))
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

/* ------------------------------------------------------------------------ */

/* The program's argv is ours minus the first `drop` words; rebuild the stack for it. */
static void program_args(struct launch *L, int drop)
{
	L->prog_argc = L->argc;
	L->prog_argv = L->argv;
	L->prog_sp = L->sp;
	if (cx_reshape_stack(L, drop, 0, 0, 0) < 0) {
		/* An enormous argv/env: run cold (the old arrays are untouched). */
		L->prog_argc = L->argc - drop;
		L->prog_argv = L->argv + drop;
		L->no_restore = 1;
	}
}

/*
 * A #! script: do what the kernel would (binfmt_script) so the interpreter can
 * be restored: argv becomes interpreter [arg] script-path args... Returns 0 when
 * L now describes the interpreter run. The line must fit the kernel's 256-byte
 * buffer and end in a newline; anything unusual is left to the kernel (cold).
 */
static int shebang(struct launch *L, char *script, size_t cap)
{
	char line[256];
	int fd = (int)sys_openat(AT_FDCWD, L->path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	long n = sys_read(fd, line, sizeof line - 1);
	sys_close(fd);
	if (n < 3 || line[0] != '#' || line[1] != '!')
		return -1;
	line[n] = 0;
	char *p = line + 2, *nl = 0;
	for (char *q = line; q < line + n; q++)
		if (*q == '\n') {
			nl = q;
			break;
		}
	if (!nl)
		return -1;
	*nl = 0;
	while (*p == ' ' || *p == '\t')
		p++;
	char *interp = p;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	char *arg = 0;
	if (*p) {
		*p++ = 0;
		while (*p == ' ' || *p == '\t')
			p++;
		char *e = nl;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = 0;
		if (*p)
			arg = p;
	}
	if (!interp[0] || interp[0] != '/')
		return -1;
	struct kstat st;
	if (sys_stat(interp, &st) < 0 || (st.st_mode & S_IFMT) != S_IFREG || is_self(L, &st))
		return -1;
	struct cx_buf b = { script, 0, cap, 0 };
	cx_buf_str(&b, L->path);
	if (b.overflow)
		return -1;
	char *ins[3];
	int k = 0;
	ins[k++] = interp;
	if (arg)
		ins[k++] = arg;
	ins[k++] = script;
	/* The kernel drops the script's argv[0] and puts the path it was given. */
	if (cx_reshape_stack(L, 1, ins, k, 1) < 0)
		return -1;
	struct cx_buf pb = { L->path, 0, sizeof L->path, 0 };
	cx_buf_str(&pb, interp);
	L->st = st;
	return 0;
}

static __attribute__((noreturn)) void run(struct launch *L)
{
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
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
	if (o == CX_MISS) {
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
	cx_cold_exec(L);
}

__attribute__((noreturn, used)) void cx_main(uint64_t *sp)
{
	struct launch L;
	/* Zero the small fields only: the path buffers are big and every page costs a fault. */
	__builtin_memset(&L, 0, offsetof(struct launch, path));
	L.path[0] = L.cache_dir[0] = L.image[0] = 0;
	L.sp = sp;
	L.argc = (int)sp[0];
	L.argv = (char **)(sp + 1);
	L.envp = L.argv + L.argc + 1;
	char **e = L.envp;
	while (*e)
		e++;
	L.auxv = (uint64_t *)(e + 1);

	const char *execfn = (const char *)cx_auxv_get(L.auxv, AT_EXECFN);
	const char *invoked = execfn ? cx_basename(execfn) : (L.argc ? cx_basename(L.argv[0]) : "cached-exec");

	/*
	 * The launcher as a script's #! interpreter: the kernel ran the script
	 * (AT_EXECFN names it) and argv[0] is the interpreter path from the #!
	 * line. That is the prefix form, not a shim named like the script.
	 */
	if (!cx_startswith(invoked, "cached-exec") && L.argc > 1 && cx_startswith(cx_basename(L.argv[0]), "cached-exec")) {
		struct kstat fn, self;
		if (sys_stat(execfn, &fn) == 0 && sys_stat("/proc/self/exe", &self) == 0 &&
		    (fn.st_dev != self.st_dev || fn.st_ino != self.st_ino)) {
			invoked = "cached-exec";
			L.execfn_not_self = 1;
		}
	}
	if (!cx_startswith(invoked, "cached-exec")) {
		/* Masquerade: a symlink named like the program. argv stays the caller's. */
		L.name = invoked;
		L.prog_argc = L.argc;
		L.prog_argv = L.argv;
		L.prog_sp = sp;
		run(&L);
	}
	if (L.argc < 2)
		exec_cli(&L, 1);
	const char *a = L.argv[1];
	if (a[0] == '-') {
		if (cx_streq(a, "--internal-traceme"))
			traceme(&L, 2);
		if (cx_streq(a, "--internal-inspect"))
			sys_exit_group(L.argc > 2 ? cx_inspect(L.argv[2]) : 2);
		if (cx_streq(a, "--internal-key"))
			print_key(&L, 2);
		if (cx_streq(a, "--internal-restore-dry") && L.argc > 2) {
			/* Benchmarks: do the whole restore but stop before the jump. */
			struct timespec_k ts;
			sys_clock_gettime(1 /* CLOCK_MONOTONIC */, &ts);
			L.dry_t0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
			L.dry_run = 1;
			L.name = L.argv[2];
			program_args(&L, 2);
			run(&L);
		}
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
