/*
 * Which file runs: PATH lookup exactly like execvp(3), never landing on the
 * launcher itself (a shim directory twice on PATH cannot loop), and the
 * kernel's binfmt_script for #! scripts, so their interpreter can be restored.
 */
#include "launcher.h"

const char *cx_errno_text(long e)
{
	switch (e) {
	case -ENOENT: return "No such file or directory";
	case -EACCES: return "Permission denied";
	case -ENOTDIR: return "Not a directory";
	case -ENOEXEC: return "Exec format error";
	default: return "cannot execute";
	}
}


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

int is_self(struct launch *L, const struct kstat *st)
{
	load_self(L);
	return st->st_dev == L->self_dev && st->st_ino == L->self_ino;
}

/*
 * What kind of shim `shim` is, from the one link it is: a symlink through
 * <pkg>/bin/cached-exec-selfpath marks a program that finds its installation
 * through argv[0]; one through <pkg>/bin/cached-exec-afterinit runs its
 * program as `cached-exec --after-init PROG` would (--shims-install sets both
 * up); anything else is a plain shim. Read once per run: a shim run asks
 * twice (run(), then argv0_names_launcher()).
 */
int shim_kind(struct launch *L, const char *shim)
{
	if (L->kinded_shim == shim)
		return L->shim_kind;
	char target[CX_PATH_MAX];
	long n = sys_readlink(shim, target, sizeof target - 1);
	int kind = CX_SHIM_PLAIN;
	if (n > 0) {
		target[n] = 0;
		const char *b = cx_basename(target);
		if (cx_streq(b, "cached-exec-selfpath"))
			kind = CX_SHIM_SELFPATH;
		else if (cx_streq(b, "cached-exec-afterinit"))
			kind = CX_SHIM_AFTERINIT;
	}
	L->kinded_shim = shim;
	L->shim_kind = kind;
	return kind;
}

/*
 * What the program sees as argv[0]: the caller's, untouched, unless it
 * leads to the launcher instead of the program. A program that locates
 * itself through argv[0] (gcc searches PATH for it and resolves symlinks
 * to find its libexec directory) would find the launcher's installation:
 *  - argv[0] is a path to the launcher (a #! line naming a shim, a caller
 *    exec'ing a shim by its path): it becomes the program's path;
 *  - argv[0] is a bare name whose first PATH entry is a shim marked
 *    self-locating (shim_kind): the same. Unmarked shims keep bare
 *    names as typed: "ls: cannot access" must not become "/usr/bin/ls: ...".
 * `shim`: the shim this run came through (masquerade), or the first PATH
 * entry that was a shim (prefix form), or 0.
 */
int argv0_names_launcher(struct launch *L, const char *argv0, const char *shim)
{
	struct kstat st;
	for (const char *p = argv0; *p; p++)
		if (*p == '/')
			return sys_stat(argv0, &st) == 0 && is_self(L, &st);
	return shim && shim[0] && cx_streq(cx_basename(shim), argv0) && shim_kind(L, shim) != CX_SHIM_PLAIN;
}

/* 0 when found (L->path, L->st filled), else the exit status to use. */
int resolve(struct launch *L)
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
			cx_error(name, cx_errno_text(r));
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
		cx_buf_path_entry(&b, p, end, name);
		if (!b.overflow) {
			struct kstat st;
			if (sys_stat(L->path, &st) < 0) {
				/* not here: on to the next entry */
			} else if (is_self(L, &st)) {
				/* A shim comes first on PATH: the program's own PATH search for its name finds it. */
				if (!L->first_shim[0]) {
					struct cx_buf sb = { L->first_shim, 0, sizeof L->first_shim, 0 };
					cx_buf_str(&sb, L->path);
				}
			} else {
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

/*
 * Whether execve would let this process run `path` (its effective ids, as
 * the kernel checks; faccessat2's AT_EACCESS, else faccessat's real ids).
 * A script without the x bit must fail with 126 like a shell says, not run.
 */
static int may_exec(const char *path)
{
	long r = sys_faccessat2(AT_FDCWD, path, 1 /* X_OK */, AT_EACCESS);
	if (r == -ENOSYS)
		r = sys_faccessat(path, 1 /* X_OK */);
	return r == 0;
}

/*
 * The #! line of L->path as the kernel reads it: 0 with `interp` (absolute,
 * an executable regular file that is not the launcher), `arg` (or 0) and the
 * interpreter's stat, when execve would run it: the script executable for the
 * euid, a regular file, not on a noexec mount. The line must fit the kernel's
 * 256-byte buffer and end in a newline; anything unusual is left to the
 * kernel (cold). `line` holds the strings.
 */
int shebang_line(struct launch *L, char line[256], char **interp_out, char **arg_out, struct kstat *ist)
{
	/* What execve demands first: may run it (x bit for the euid), not on a noexec mount. */
	if (!may_exec(L->path))
		return -1;
	int fd = (int)sys_openat(AT_FDCWD, L->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct kstat st;
	struct statfs_k fs;
	long n = -1;
	if (sys_fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && sys_fstatfs(fd, &fs) == 0 && !(fs.f_flags & ST_NOEXEC))
		n = sys_read(fd, line, 255);
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
	if (sys_stat(interp, ist) < 0 || (ist->st_mode & S_IFMT) != S_IFREG || is_self(L, ist) || !may_exec(interp))
		return -1;
	*interp_out = interp;
	*arg_out = arg;
	return 0;
}

/*
 * A #! script: do what the kernel would (binfmt_script) so the interpreter can
 * be restored: argv becomes interpreter [arg] script-path args... Returns 0 when
 * L now describes the interpreter run.
 */
int shebang(struct launch *L, char *script, size_t cap)
{
	char line[256];
	char *interp, *arg;
	struct kstat st;
	if (shebang_line(L, line, &interp, &arg, &st))
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
