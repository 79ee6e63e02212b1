/*
 * --after-init: post-init images (docs/resume-protocol.md). The adapter, its
 * command and the key's init spec are src/resume/spec.ts's, byte for byte:
 * the warmer builds the same key from the queue entry.
 */
#include "launcher.h"

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
 * over the environment without per-run variables, never 0: for a post-init
 * image bound to the whole environment (its init ran other programs, which
 * may have read any variable), env.c compares it.
 */
uint64_t resume_env_hash(char **envp)
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

int is_after_init_option(const char *a)
{
	return cx_streq(a, "--after-init") || cx_startswith(a, "--after-init=") || cx_streq(a, "--preload") ||
	       cx_startswith(a, "--preload=");
}

/* Options before PROG, in any order, "--" ending them. Index of PROG, or -1 for a usage error. */
int parse_after_init(const struct launch *L, int i, struct after_init_req *q)
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

/*
 * What env(1) runs for a bare NAME: the first executable regular file NAME in
 * a PATH directory (execvp's search, empty entries the cwd). 0 with its path
 * in `out`; -1 when none, or when a shim of ours comes first (env would run
 * the shim, which decides for itself): the script then runs as it would have.
 */
static int env_lookup(struct launch *L, const char *name, char *out, size_t cap, struct kstat *st)
{
	const char *p = cx_getenv(L->envp, "PATH");
	if (!p)
		p = "/bin:/usr/bin";
	for (const char *c = name; *c; c++)
		if (*c == '/')
			return -1;
	for (;;) {
		const char *end = p;
		while (*end && *end != ':')
			end++;
		struct cx_buf b = { out, 0, cap, 0 };
		cx_buf_path_entry(&b, p, end, name);
		if (!b.overflow && sys_stat(out, st) == 0 && (st->st_mode & S_IFMT) == S_IFREG) {
			if (is_self(L, st))
				return -1;
			long r = sys_faccessat2(AT_FDCWD, out, 1 /* X_OK */, AT_EACCESS);
			if (r == -ENOSYS)
				r = sys_faccessat(out, 1);
			if (r == 0)
				return out[0] == '/' ? 0 : -1; /* a relative hit: python's own path would depend on the cwd */
		}
		if (!*end)
			return -1;
		p = end + 1;
	}
}

/*
 * --after-init of a #! script whose line names python (python, python3,
 * python3.N) with no argument, or "/usr/bin/env python3": the python adapter
 * runs it, with the argv python would get (the interpreter's path, or env's
 * bare name, then the script path as exec'd, args...) as the user's argv; L
 * describes the python from here on.
 * `uargv` has room for user_argc + 2 entries. 1 when rewritten, 0 otherwise
 * (the script then runs as it would have).
 */
int after_init_python_script(struct launch *L, char **uargv)
{
	char *interp, *arg;
	struct kstat st;
	char found[CX_PATH_MAX];
	if (adapter_kind(L->name) != ADAPTER_GENERIC || shebang_line(L, L->script_line, &interp, &arg, &st))
		return 0;
	const char *exe = interp, *argv0 = interp;
	if (arg && cx_streq(cx_basename(interp), "env")) {
		/* "#!/usr/bin/env python3": env runs the first python3 on PATH with argv[0] "python3". */
		if (adapter_kind(arg) != ADAPTER_PYTHON || env_lookup(L, arg, found, sizeof found, &st))
			return 0;
		exe = found;
		argv0 = arg;
	} else if (arg || adapter_kind(interp) != ADAPTER_PYTHON) {
		return 0;
	}
	struct cx_buf b = { L->script_path, 0, sizeof L->script_path, 0 };
	cx_buf_str(&b, L->path);
	if (b.overflow || cx_strlen(exe) >= sizeof L->path)
		return 0;
	struct cx_buf pb = { L->path, 0, sizeof L->path, 0 };
	cx_buf_str(&pb, exe);
	int n = 0;
	uargv[n++] = (char *)argv0;
	uargv[n++] = L->script_path;
	for (int i = 1; i < L->user_argc; i++)
		uargv[n++] = L->user_argv[i];
	uargv[n] = 0;
	L->user_argv = uargv;
	L->user_argc = n;
	L->prog_argv = uargv;
	L->prog_argc = n;
	L->name = argv0;
	L->st = st;
	return 1;
}

/*
 * Learned preloads (the python adapter's --learn): what a run imports is
 * learned per script or -m module, so the script or module is part of the
 * key. Only the plain forms "python SCRIPT ..." and "python -m MOD ...":
 * "script:" and the script's path made absolute as python's
 * os.path.abspath does, or "module:NAME". 0 with none.
 */
static int learn_target(struct launch *L)
{
	struct cx_buf t = { L->learn_target, 0, sizeof L->learn_target, 0 };
	if (L->user_argc < 2)
		return 0;
	const char *a = L->user_argv[1];
	if (cx_streq(a, "-m") && L->user_argc > 2 && L->user_argv[2][0] && L->user_argv[2][0] != '-') {
		cx_buf_str(&t, "module:");
		cx_buf_str(&t, L->user_argv[2]);
	} else if (a[0] && a[0] != '-') {
		char abs[CX_PATH_MAX];
		if (absolute_path(a, abs, sizeof abs))
			return 0;
		cx_buf_str(&t, "script:");
		cx_buf_str(&t, abs);
	} else {
		return 0;
	}
	for (const char *c = L->learn_target; *c; c++)
		if (*c == '\x1f' || *c == '\n')
			return 0; /* not a word of an init spec (spec.ts), nor a line of the learned file */
	return !t.overflow;
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
int after_init_command(struct launch *L, const struct after_init_req *q, char **argv2, int need_adapter)
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
			} else if (!has_file && learn_target(L)) {
				words[nw++] = stack_word(&t, "--learn");
				words[nw++] = L->learn_target;
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
	L->pages_learnable = kind == ADAPTER_PYTHON;
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
