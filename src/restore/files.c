/*
 * Step 2: every file the image depends on is still the file it was. The fds
 * opened for mapped files are the fds mapped later, so the identity check and
 * the mapping cannot race apart.
 */
#include "restore.h"

static int same_identity(const struct cx_file *f, const struct kstat *st)
{
	return f->dev == st->st_dev && f->ino == st->st_ino && f->size == (uint64_t)st->st_size &&
	       (uint64_t)f->mtime_sec == st->st_mtime_sec && f->mtime_nsec == st->st_mtime_nsec &&
	       (uint64_t)f->ctime_sec == st->st_ctime_sec && f->ctime_nsec == st->st_ctime_nsec;
}

/* The fd a FILE region maps, or -1. */
int fd_of(const struct file_fds *fds, uint32_t file)
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

enum cx_outcome check_files(const struct image *im, struct file_fds *fds, int *exe_fd)
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
		case CX_FILE_ACCESS:
			/* A directory on the way to a dependency: who may pass it must not have changed. */
			if (sys_stat(p, &st) < 0 || st.st_mode != f->mode || st.st_uid != f->uid || st.st_gid != f->gid)
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
void close_files(struct file_fds *fds, int keep, int extra)
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
