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
	unsigned char buf[56 + 3 * CX_PATH_MAX + CX_SPEC_MAX + 8];
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
	if (L->after_init) {
		/* A post-init image: what ran before the checkpoint, and the environment it saw. */
		size_t len = cx_strlen(L->init_spec) + 1;
		if (n + len + 8 > sizeof buf)
			return -1;
		__builtin_memcpy(buf + n, L->init_spec, len);
		n += len;
		put64(buf + n, L->resume_env_hash);
		n += 8;
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

/* Prints "hash image-path" for the resolved program in L. */
static __attribute__((noreturn)) void print_key_resolved(struct launch *L)
{
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
	cx_cold_exec(L);
}

static __attribute__((noreturn)) void run(struct launch *L)
{
	int rc = resolve(L);
	if (rc)
		sys_exit_group(rc);
	run_resolved(L);
}

/* ------------------------------------------------------------------------ */
/* --after-init: post-init images (docs/resume-protocol.md). The adapter,    */
/* its command and the key's init spec are src/resume/spec.ts's, byte for   */
/* byte: the warmer builds the same key from the queue entry.               */

enum adapter_kind { ADAPTER_GENERIC, ADAPTER_BASH, ADAPTER_PYTHON };

/* spec.ts adapterKind(): by the basename the user typed; bash, python, python3, python3.N. */
static enum adapter_kind adapter_kind(const char *name)
{
	const char *b = cx_basename(name);
	if (cx_streq(b, "bash"))
		return ADAPTER_BASH;
	if (!cx_startswith(b, "python"))
		return ADAPTER_GENERIC;
	b += 6;
	if (!*b)
		return ADAPTER_PYTHON;
	if (*b++ != '3')
		return ADAPTER_GENERIC;
	if (!*b)
		return ADAPTER_PYTHON;
	if (*b++ != '.' || !*b)
		return ADAPTER_GENERIC;
	for (; *b; b++)
		if (*b < '0' || *b > '9')
			return ADAPTER_GENERIC;
	return ADAPTER_PYTHON;
}

static int name_is(const char *e, size_t n, const char *name)
{
	size_t i = 0;
	for (; i < n; i++)
		if (e[i] != name[i])
			return 0;
	return name[i] == 0;
}

/* spec.ts isPerRunVariable(): values the adapter applies on every run, so not part of the key. */
static int per_run_variable(const char *e, size_t n, const char *vary)
{
	if (name_is(e, n, "_") || name_is(e, n, "PWD") || name_is(e, n, "OLDPWD") || name_is(e, n, "SHLVL"))
		return 1;
	if (n >= 12 && cx_startswith(e, "CACHED_EXEC_"))
		return 1;
	/* CACHED_EXEC_VARY_ENV: more names, comma-separated. */
	for (const char *v = vary; v && *v;) {
		const char *end = v;
		while (*end && *end != ',')
			end++;
		if ((size_t)(end - v) == n) {
			size_t i = 0;
			while (i < n && v[i] == e[i])
				i++;
			if (i == n)
				return 1;
		}
		v = *end ? end + 1 : end;
	}
	return 0;
}

/*
 * spec.ts resumeEnvHash(): the order-free sum of cx_hash64("NAME=value")
 * over the environment without per-run variables, never 0. The init may have
 * read any of them (bash imports them all): another value is another image.
 */
static uint64_t resume_env_hash(char **envp)
{
	const char *vary = cx_getenv(envp, "CACHED_EXEC_VARY_ENV");
	uint64_t sum = 0;
	for (; *envp; envp++) {
		const char *e = *envp;
		size_t n = 0;
		while (e[n] && e[n] != '=')
			n++;
		if (!e[n] || per_run_variable(e, n, vary))
			continue;
		sum += cx_hash64(e, cx_strlen(e), CX_FNV_OFFSET);
	}
	return sum ? sum : 1;
}

/* <pkg>/shell/NAME, <pkg> being /proc/self/exe minus /bin/cached-exec (spec.ts shellDir()). */
static int shell_file(char *out, size_t cap, const char *name)
{
	char self[CX_PATH_MAX];
	long n = sys_readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	for (int k = 0; k < 2; k++) {
		char *slash = 0;
		for (char *p = self; *p; p++)
			if (*p == '/')
				slash = p;
		if (!slash)
			return -1;
		*slash = 0;
	}
	struct cx_buf b = { out, 0, cap, 0 };
	cx_buf_str(&b, self);
	cx_buf_str(&b, "/shell/");
	cx_buf_str(&b, name);
	return b.overflow ? -1 : 0;
}

/*
 * What node's path.resolve(p) gives (the CLI makes FILE absolute with it, and
 * the key must be the same): joined to the cwd when relative, then ".", ".."
 * and repeated slashes resolved lexically. No symlink is followed.
 */
static int absolute_path(const char *p, char *out, size_t cap)
{
	char cwd[CX_PATH_MAX];
	size_t len = 0;
	if (p[0] != '/') {
		long r = sys_getcwd(cwd, sizeof cwd);
		if (r < 0 || cwd[0] != '/')
			return -1;
	}
	for (int part = p[0] == '/'; part < 2; part++) {
		const char *s = part ? p : cwd;
		for (;;) {
			while (*s == '/')
				s++;
			const char *e = s;
			while (*e && *e != '/')
				e++;
			size_t n = (size_t)(e - s);
			if (!n)
				break;
			if (n == 2 && s[0] == '.' && s[1] == '.') {
				while (len && out[len - 1] != '/')
					len--;
				if (len)
					len--;
			} else if (!(n == 1 && s[0] == '.')) {
				if (len + n + 2 > cap)
					return -1;
				out[len++] = '/';
				for (size_t i = 0; i < n; i++)
					out[len++] = s[i];
			}
			s = e;
		}
	}
	if (!len)
		out[len++] = '/';
	out[len] = 0;
	return 0;
}

struct after_init_req {
	int seen;
	const char *file; /* --after-init=FILE: made absolute; empty means none (as in the CLI) */
	const char *preload; /* --preload LIST */
};

static int is_after_init_option(const char *a)
{
	return cx_streq(a, "--after-init") || cx_startswith(a, "--after-init=") || cx_streq(a, "--preload") ||
	       cx_startswith(a, "--preload=");
}

/* Options before PROG, in any order, "--" ending them. Index of PROG, or -1 for a usage error. */
static int parse_after_init(const struct launch *L, int i, struct after_init_req *q)
{
	for (; i < L->argc; i++) {
		const char *a = L->argv[i];
		if (cx_streq(a, "--after-init")) {
			q->seen = 1;
		} else if (cx_startswith(a, "--after-init=")) {
			q->seen = 1;
			q->file = a + 13;
		} else if (cx_streq(a, "--preload")) {
			if (++i >= L->argc)
				return -1;
			q->preload = L->argv[i];
		} else if (cx_startswith(a, "--preload=")) {
			q->preload = a + 10;
		} else if (cx_streq(a, "--")) {
			i++;
			break;
		} else if (a[0] == '-') {
			return -1;
		} else {
			break;
		}
	}
	return q->seen && i < L->argc ? i : -1;
}

/* A copy of a literal word on the stack (the trampoline's cold exec cannot read .rodata). */
static char *stack_word(struct cx_buf *t, const char *w)
{
	char *p = t->p + t->len;
	cx_buf_str(t, w);
	t->len++;
	return p;
}

/*
 * spec.ts adapterWords() and afterInitArgv(): argv2 becomes
 * [argv0, words..., "--", user argv...] for an adapter (the user's argv for a
 * program that speaks the protocol itself), and L->init_spec the key's
 * "after-init\x1fword...". 0, or -1 after a one-line error: the request
 * cannot be served and the plain program runs cold.
 */
static int after_init_command(struct launch *L, const struct after_init_req *q, char **argv2, int need_adapter)
{
	enum adapter_kind kind = adapter_kind(L->name);
	int has_file = q->file && q->file[0], has_preload = q->preload && q->preload[0];
	if (kind == ADAPTER_GENERIC && (has_file || has_preload)) {
		cx_error("--after-init=FILE and --preload need bash or python", 0);
		return -1;
	}
	if (q->preload && kind != ADAPTER_PYTHON) {
		cx_error("--preload needs python", 0);
		return -1;
	}
	char *words[CX_MAX_WORDS];
	int nw = 0;
	struct cx_buf t = { L->word_text, 0, sizeof L->word_text, 0 };
	if (kind != ADAPTER_GENERIC) {
		const char *file = kind == ADAPTER_BASH ? "cached-exec-resume.bash" : "cached_exec_resume.py";
		struct kstat st;
		if (shell_file(L->adapter, sizeof L->adapter, file)) {
			cx_error("--after-init", "cannot find its own path");
			return -1;
		}
		if (need_adapter && (sys_stat(L->adapter, &st) < 0 || (st.st_mode & S_IFMT) != S_IFREG)) {
			cx_error(L->adapter, "missing: running the program without --after-init");
			return -1;
		}
		if (has_file && absolute_path(q->file, L->init_file, sizeof L->init_file)) {
			cx_error(q->file, "cannot make the path absolute");
			return -1;
		}
		if (kind == ADAPTER_BASH) {
			/* Sourced from -c: run as a script, bash would keep it open on fd 255 (spec.ts). */
			words[nw++] = stack_word(&t, "-c");
			words[nw++] = stack_word(&t, ". \"$0\"");
			words[nw++] = L->adapter;
		} else {
			words[nw++] = L->adapter;
			if (has_preload) {
				words[nw++] = stack_word(&t, "--preload");
				words[nw++] = (char *)q->preload;
			}
		}
		if (has_file) {
			words[nw++] = stack_word(&t, "--init");
			words[nw++] = L->init_file;
		}
	}
	struct cx_buf spec = { L->init_spec, 0, sizeof L->init_spec, 0 };
	cx_buf_str(&spec, "after-init");
	for (int i = 0; i < nw; i++) {
		cx_buf_str(&spec, "\x1f");
		cx_buf_str(&spec, words[i]);
	}
	if (spec.overflow)
		L->no_restore = 1; /* no key for it: cold, without a cache */
	L->after_init = 1;
	L->resume_env_hash = resume_env_hash(L->envp);
	if (!nw)
		return 0; /* the program speaks the protocol itself: its own argv */
	int n = 0;
	argv2[n++] = L->user_argv[0];
	for (int i = 0; i < nw; i++)
		argv2[n++] = words[i];
	argv2[n++] = stack_word(&t, "--");
	for (int i = 0; i < L->user_argc; i++)
		argv2[n++] = L->user_argv[i];
	argv2[n] = 0;
	L->prog_argv = argv2;
	L->prog_argc = n;
	return 0;
}

/*
 * cached-exec [--internal-key | --internal-restore-dry] --after-init[=FILE]
 * [--preload LIST] PROG ARGS...: restore PROG from a post-init image, or run
 * the adapter's command cold (which runs the same init directly).
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
	char *argv2[L->argc + CX_MAX_WORDS + 2];
	if (after_init_command(L, &q, argv2, !key_only) < 0) {
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
		if (cx_streq(a, "--internal-tsc-probe")) {
			/*
			 * Does PR_TSC_SIGSEGV work here? Some hypervisors ignore CR4.TSD:
			 * rdtsc then runs on and the snapshotter cannot answer it.
			 * Killed by SIGSEGV: it works; exit 0: it does not.
			 */
			uint32_t lo, hi;
			sys_prctl(26 /* PR_SET_TSC */, 2 /* PR_TSC_SIGSEGV */, 0, 0, 0);
			__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
			(void)lo, (void)hi;
			sys_exit_group(0);
		}
		if (cx_streq(a, "--internal-inspect"))
			sys_exit_group(L.argc > 2 ? cx_inspect(L.argv[2]) : 2);
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
