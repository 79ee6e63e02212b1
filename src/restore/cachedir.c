/*
 * The directories the launcher reads images from and writes records to.
 *
 * The TypeScript side's checks do not protect the hot path, so the launcher
 * checks each directory itself, on the very fd it then uses for everything
 * below it (no path is walked twice, so nothing can be swapped in between):
 *  - the user's cache: an absolute path, a directory (not a symlink), owned
 *    by the euid, not writable by group or others. Anything else means a
 *    cold run and no write at all: root's launcher with a user's HOME kept
 *    (sudo -E) must not follow that user's symlinks or fill their files;
 *  - the system layer: the same, owned by root;
 *  - every file below: opened relative to that fd with O_NOFOLLOW (no last
 *    symlink) and O_NONBLOCK (a FIFO planted there cannot hang the run),
 *    then used only when fstat says it is a regular file.
 * A missing user cache is created (0700) only under a parent that is the
 * user's or root's and not writable by others (or sticky, like /tmp).
 */
#include "launcher.h"

static int trusted_dir_stat(const struct kstat *st, uint32_t owner)
{
	return (st->st_mode & S_IFMT) == S_IFDIR && st->st_uid == owner && !(st->st_mode & 022);
}

/* An fd (O_PATH) on `path` when it is a directory `owner` may trust; -ENOENT when missing; else another -errno. */
int cx_open_trusted_dir(const char *path, uint32_t owner)
{
	struct kstat st;
	if (path[0] != '/')
		return -EPERM; /* relative to what? the cwd changes between runs */
	int fd = (int)sys_openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
	if (fd < 0)
		return fd == -ENOENT ? -ENOENT : -EPERM;
	if (sys_fstat(fd, &st) < 0 || !trusted_dir_stat(&st, owner)) {
		sys_close(fd);
		return -EPERM;
	}
	return fd;
}

/* Creates the missing user cache under a parent no one else can swap it in, then opens it as above. */
static int create_cache_dir(const char *path, uint32_t euid)
{
	char parent[CX_PATH_MAX];
	struct cx_buf b = { parent, 0, sizeof parent, 0 };
	const char *base = cx_basename(path);
	if (base == path || !base[0])
		return -EPERM;
	cx_buf_put(&b, path, (size_t)(base - path));
	if (b.overflow)
		return -EPERM;
	struct kstat st;
	int pfd = (int)sys_openat(AT_FDCWD, parent, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
	if (pfd < 0)
		return -ENOENT;
	int ok = sys_fstat(pfd, &st) == 0 && (st.st_uid == euid || st.st_uid == 0) &&
		 (!(st.st_mode & 022) || (st.st_mode & S_ISVTX));
	int fd = -EPERM;
	if (ok) {
		sys_mkdirat(pfd, base, 0700); /* EEXIST: another launcher was first; the checks below decide */
		fd = (int)sys_openat(pfd, base, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		if (fd >= 0 && (sys_fstat(fd, &st) < 0 || !trusted_dir_stat(&st, euid))) {
			sys_close(fd);
			fd = -EPERM;
		} else if (fd < 0) {
			fd = -ENOENT;
		}
	}
	sys_close(pfd);
	return fd;
}

/*
 * The user's cache as an fd, opened once: >= 0; -ENOENT when it does not
 * exist (and `create` was not asked or failed); -EPERM when it must not be
 * used. cache_dir() must have filled L->cache_dir (empty: none).
 */
int cx_user_cache(struct launch *L, int create)
{
	if (!L->cache_dir[0])
		return -ENOENT;
	if (L->cache_fd == CX_FD_UNKNOWN || (L->cache_fd == -ENOENT && create)) {
		L->cache_fd = cx_open_trusted_dir(L->cache_dir, L->euid);
		if (L->cache_fd == -ENOENT && create)
			L->cache_fd = create_cache_dir(L->cache_dir, L->euid);
	}
	return L->cache_fd;
}

/* The system layer as an fd (root's, not writable by others), or -errno. */
int cx_system_layer(struct launch *L)
{
	if (L->sys_fd == CX_FD_UNKNOWN) {
		const char *d = cx_getenv(L->envp, "CACHED_EXEC_SYSTEM_DIR");
		L->sys_fd = d && d[0] ? cx_open_trusted_dir(d, 0) : -ENOENT;
	}
	return L->sys_fd;
}

/*
 * A regular file below a trusted directory: O_NOFOLLOW, O_NONBLOCK (dropped
 * again for writers, so an O_APPEND write is never short), close-on-exec.
 * -ELOOP for a symlink, -EINVAL for anything but a regular file.
 */
int cx_open_below(int dirfd, const char *rel, int flags, int mode)
{
	struct kstat st;
	int fd = (int)sys_openat(dirfd, rel, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
	if (fd < 0)
		return fd;
	if (sys_fstat(fd, &st) < 0 || (st.st_mode & S_IFMT) != S_IFREG) {
		sys_close(fd);
		return -EINVAL;
	}
	if (flags & (O_WRONLY | O_RDWR))
		sys_fcntl(fd, F_SETFL, flags & O_APPEND);
	return fd;
}

/* Closes the directory fds: nothing of the launcher's may reach the program. */
void cx_close_dirs(struct launch *L)
{
	if (L->cache_fd >= 0)
		sys_close(L->cache_fd);
	if (L->sys_fd >= 0)
		sys_close(L->sys_fd);
	L->cache_fd = L->sys_fd = CX_FD_UNKNOWN;
}
