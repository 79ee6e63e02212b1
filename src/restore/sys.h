/*
 * Raw Linux syscalls for the freestanding launcher, portable part: only the
 * *at forms exist on every architecture (arm64 has no open, stat, dup2, fork).
 *
 * Every wrapper returns the kernel's value unchanged: >= 0 on success, -errno on
 * failure (as CRIU's restorer does). There is no errno and no libc: the launcher
 * runs before any library exists in the process, and parts of it run after the
 * launcher's own image has been unmapped.
 */
#ifndef CACHED_EXEC_SYS_H
#define CACHED_EXEC_SYS_H

#include <stdint.h>
#include <stddef.h>

/* Syscall numbers, the syscall instruction, and the kernel structs whose layout differs per machine. */
#include "arch_sys.h"

#define LOCK_EX 2
#define LOCK_NB 4
#define PRIO_PROCESS 0
#define CLOCK_REALTIME 0
#define O_EXCL 0200
#define O_TRUNC 01000
#define O_DIRECTORY 0200000
#define O_NONBLOCK 04000

#define F_GETFD 1
#define F_SETFD 2
#define F_SETFL 4
#define F_DUPFD_CLOEXEC 1030
#define F_SETPIPE_SZ 1031
#define SEEK_SET 0
#define MFD_CLOEXEC 1
#define GRND_NONBLOCK 1

#define SIG_BLOCK 0
#define SIG_SETMASK 2
#define SIG_DFL 0
#define SIG_IGN 1
#define SIGKILL 9
#define CX_NSIG 64

#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_CREAT 0100
#define O_APPEND 02000
#define O_CLOEXEC 02000000
#define O_NOFOLLOW 0400000
#define O_PATH 010000000

#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_SHARED 0x01
#define MAP_PRIVATE 0x02
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MAP_NORESERVE 0x4000
#define MAP_GROWSDOWN 0x0100
#define MAP_FIXED_NOREPLACE 0x100000
#define MADV_POPULATE_WRITE 23
#define MREMAP_MAYMOVE 1
#define MREMAP_FIXED 2

#define PR_SET_NAME 15
#define PR_SET_MM 35
#define PR_SET_MM_MAP 14
#define PTRACE_TRACEME 0
#define SIGSTOP 19
#define ADDR_NO_RANDOMIZE 0x0040000

#define ENOENT 2
#define ENOEXEC 8
#define EACCES 13
#define EEXIST 17
#define ENOTDIR 20
#define EPERM 1
#define EBADF 9
#define EINVAL 22
#define ELOOP 40

#define S_IFMT 0170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define S_ISUID 04000
#define S_ISGID 02000
#define S_ISVTX 01000

#define AT_NULL 0
#define AT_PHDR 3
#define AT_PHNUM 5
#define AT_PAGESZ 6
#define AT_BASE 7
#define AT_ENTRY 9
#define AT_UID 11
#define AT_EUID 12
#define AT_GID 13
#define AT_EGID 14
#define AT_PLATFORM 15
#define AT_HWCAP 16
#define AT_SECURE 23
#define AT_BASE_PLATFORM 24
#define AT_RANDOM 25
#define AT_HWCAP2 26
#define AT_EXECFN 31
#define AT_SYSINFO_EHDR 33

struct utsname_k {
	char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

/* include/uapi/linux/prctl.h: struct prctl_mm_map */
struct prctl_mm_map {
	uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
	uint64_t arg_start, arg_end, env_start, env_end;
	uint64_t *auxv;
	uint32_t auxv_size;
	uint32_t exe_fd;
};
_Static_assert(sizeof(struct prctl_mm_map) == 104, "prctl_mm_map layout");

/* capget/capset, _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set. */
struct cap_header_k {
	uint32_t version;
	int32_t pid;
};
struct cap_data_k {
	uint32_t effective, permitted, inheritable;
};
#define CX_CAP_VERSION_3 0x20080522
#define CAP_SYS_ADMIN 21
#define CAP_CHECKPOINT_RESTORE 40
#define PR_SET_DUMPABLE 4

/* fstatfs: the 64-bit struct statfs (same on every 64-bit architecture). */
struct statfs_k {
	int64_t f_type, f_bsize;
	uint64_t f_blocks, f_bfree, f_bavail, f_files, f_ffree;
	int32_t f_fsid[2];
	int64_t f_namelen, f_frsize, f_flags;
	int64_t f_spare[4];
};
_Static_assert(sizeof(struct statfs_k) == 120, "struct statfs");
#define ST_NOEXEC 8
#define AT_EACCESS 0x200
#define ENOSYS 38

struct rlimit_k {
	uint64_t cur, max;
};
#define RLIMIT_STACK 3
#define RLIM_INFINITY (~0ull)

struct iovec_k {
	const void *base;
	size_t len;
};

struct timespec_k {
	int64_t tv_sec;
	int64_t tv_nsec;
};

SYS_INLINE long sys_read(int fd, void *buf, size_t n) { return sys_call3(__NR_read, fd, (long)buf, (long)n); }
SYS_INLINE long sys_write(int fd, const void *buf, size_t n) { return sys_call3(__NR_write, fd, (long)buf, (long)n); }
SYS_INLINE long sys_openat(int dirfd, const char *p, int flags, int mode)
{
	return sys_call4(__NR_openat, dirfd, (long)p, flags, mode);
}
SYS_INLINE long sys_close(int fd) { return sys_call1(__NR_close, fd); }
SYS_INLINE long sys_fstat(int fd, struct kstat *st) { return sys_call2(__NR_fstat, fd, (long)st); }
SYS_INLINE long sys_stat(const char *p, struct kstat *st)
{
	return sys_call4(__NR_newfstatat, AT_FDCWD, (long)p, (long)st, 0);
}
SYS_INLINE long sys_pread(int fd, void *buf, size_t n, long off)
{
	return sys_call4(__NR_pread64, fd, (long)buf, (long)n, off);
}
SYS_INLINE long sys_mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd, uint64_t off)
{
	return sys_call6(__NR_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
}
SYS_INLINE long sys_munmap(uint64_t addr, uint64_t len) { return sys_call2(__NR_munmap, (long)addr, (long)len); }
SYS_INLINE long sys_mprotect(uint64_t addr, uint64_t len, int prot)
{
	return sys_call3(__NR_mprotect, (long)addr, (long)len, prot);
}
SYS_INLINE long sys_madvise(uint64_t addr, uint64_t len, int advice)
{
	return sys_call3(__NR_madvise, (long)addr, (long)len, advice);
}
SYS_INLINE long sys_mremap(uint64_t old, uint64_t oldlen, uint64_t newlen, int flags, uint64_t newaddr)
{
	return sys_call5(__NR_mremap, (long)old, (long)oldlen, (long)newlen, flags, (long)newaddr);
}
SYS_INLINE long sys_faccessat(const char *p, int mode) { return sys_call3(__NR_faccessat, AT_FDCWD, (long)p, mode); }
SYS_INLINE long sys_faccessat2(int dirfd, const char *p, int mode, int flags)
{
	return sys_call4(__NR_faccessat2, dirfd, (long)p, mode, flags);
}
SYS_INLINE long sys_fstatfs(int fd, struct statfs_k *st) { return sys_call2(__NR_fstatfs, fd, (long)st); }
SYS_INLINE long sys_linkat(int fromfd, const char *from, int tofd, const char *to)
{
	return sys_call5(__NR_linkat, fromfd, (long)from, tofd, (long)to, 0);
}
SYS_INLINE long sys_unlinkat(int dirfd, const char *p) { return sys_call3(__NR_unlinkat, dirfd, (long)p, 0); }
SYS_INLINE long sys_execve(const char *p, char *const *argv, char *const *envp)
{
	return sys_call3(__NR_execve, (long)p, (long)argv, (long)envp);
}
SYS_INLINE __attribute__((noreturn)) void sys_exit_group(int code)
{
	for (;;)
		sys_call1(__NR_exit_group, code);
}
SYS_INLINE long sys_getpid(void) { return sys_call0(__NR_getpid); }
SYS_INLINE long sys_gettid(void) { return sys_call0(__NR_gettid); }
SYS_INLINE long sys_geteuid(void) { return sys_call0(__NR_geteuid); }
SYS_INLINE long sys_getegid(void) { return sys_call0(__NR_getegid); }
SYS_INLINE long sys_prlimit(int pid, int res, const struct rlimit_k *set, struct rlimit_k *old)
{
	return sys_call4(__NR_prlimit64, pid, res, (long)set, (long)old);
}
SYS_INLINE long sys_capget(struct cap_header_k *h, struct cap_data_k *d) { return sys_call2(__NR_capget, (long)h, (long)d); }
SYS_INLINE long sys_capset(struct cap_header_k *h, const struct cap_data_k *d) { return sys_call2(__NR_capset, (long)h, (long)d); }
SYS_INLINE long sys_getgroups(int n, uint32_t *list) { return sys_call2(__NR_getgroups, n, (long)list); }
SYS_INLINE long sys_kill(int pid, int sig) { return sys_call2(__NR_kill, pid, sig); }
SYS_INLINE long sys_uname(struct utsname_k *u) { return sys_call1(__NR_uname, (long)u); }
SYS_INLINE long sys_readlink(const char *p, char *buf, size_t n)
{
	return sys_call4(__NR_readlinkat, AT_FDCWD, (long)p, (long)buf, (long)n);
}
SYS_INLINE long sys_ptrace(long req, long pid, long addr, long data)
{
	return sys_call4(__NR_ptrace, req, pid, addr, data);
}
SYS_INLINE long sys_personality(unsigned long p) { return sys_call1(__NR_personality, (long)p); }
SYS_INLINE long sys_prctl(int op, long a, long b, long c, long d) { return sys_call5(__NR_prctl, op, a, b, c, d); }
SYS_INLINE long sys_set_tid_address(uint64_t p) { return sys_call1(__NR_set_tid_address, (long)p); }
SYS_INLINE long sys_set_robust_list(uint64_t head, uint64_t len)
{
	return sys_call2(__NR_set_robust_list, (long)head, (long)len);
}
SYS_INLINE long sys_rseq(uint64_t area, uint32_t len, int flags, uint32_t sig)
{
	return sys_call4(__NR_rseq, (long)area, (long)len, flags, (long)sig);
}
SYS_INLINE long sys_utimensat(int dirfd, const char *p, const struct timespec_k *ts, int flags)
{
	return sys_call4(__NR_utimensat, dirfd, (long)p, (long)ts, flags);
}

/* dup2 without dup2: dup3 refuses a == b, which dup2 answers with b itself (or EBADF). */
SYS_INLINE long sys_dup2(int a, int b)
{
	if (a != b)
		return sys_call3(__NR_dup3, a, b, 0);
	long r = sys_call3(__NR_fcntl, a, 1 /* F_GETFD */, 0);
	return r < 0 ? r : b;
}
/* fork without fork: clone with only the exit signal, as glibc's fork does. */
SYS_INLINE long sys_fork(void) { return sys_call5(__NR_clone, 17 /* SIGCHLD */, 0, 0, 0, 0); }
SYS_INLINE long sys_wait4(int pid, int *status, int opts) { return sys_call4(__NR_wait4, pid, (long)status, opts, 0); }
SYS_INLINE long sys_flock(int fd, int op) { return sys_call2(__NR_flock, fd, op); }
SYS_INLINE long sys_mkdirat(int dirfd, const char *p, int mode) { return sys_call3(__NR_mkdirat, dirfd, (long)p, mode); }
SYS_INLINE long sys_fstatat(int dirfd, const char *p, struct kstat *st, int flags)
{
	return sys_call4(__NR_newfstatat, dirfd, (long)p, (long)st, flags);
}
SYS_INLINE long sys_setsid(void) { return sys_call0(__NR_setsid); }
SYS_INLINE long sys_setpriority(int which, int who, int prio) { return sys_call3(__NR_setpriority, which, who, prio); }
SYS_INLINE long sys_clock_gettime(int clk, struct timespec_k *ts) { return sys_call2(__NR_clock_gettime, clk, (long)ts); }
SYS_INLINE long sys_sched_setaffinity(int pid, size_t len, const void *mask)
{
	return sys_call3(__NR_sched_setaffinity, pid, (long)len, (long)mask);
}
SYS_INLINE long sys_sched_getaffinity(int pid, size_t len, void *mask)
{
	return sys_call3(__NR_sched_getaffinity, pid, (long)len, (long)mask);
}
SYS_INLINE long sys_close_range(unsigned first, unsigned last) { return sys_call3(__NR_close_range, first, last, 0); }

SYS_INLINE long sys_lseek(int fd, long off, int whence) { return sys_call3(__NR_lseek, fd, off, whence); }
SYS_INLINE long sys_rt_sigaction(int sig, const struct ksigaction *act, struct ksigaction *old)
{
	return sys_call4(__NR_rt_sigaction, sig, (long)act, (long)old, 8);
}
SYS_INLINE long sys_rt_sigprocmask(int how, const uint64_t *set, uint64_t *old)
{
	return sys_call4(__NR_rt_sigprocmask, how, (long)set, (long)old, 8);
}
SYS_INLINE long sys_writev(int fd, const struct iovec_k *iov, int n) { return sys_call3(__NR_writev, fd, (long)iov, n); }
SYS_INLINE long sys_fcntl(int fd, int cmd, long arg) { return sys_call3(__NR_fcntl, fd, cmd, arg); }
SYS_INLINE long sys_getcwd(char *buf, size_t n) { return sys_call2(__NR_getcwd, (long)buf, (long)n); }
SYS_INLINE long sys_getppid(void) { return sys_call0(__NR_getppid); }
SYS_INLINE long sys_getpgid(int pid) { return sys_call1(__NR_getpgid, pid); }
SYS_INLINE long sys_getsid(int pid) { return sys_call1(__NR_getsid, pid); }
SYS_INLINE long sys_dup3(int a, int b, int flags) { return sys_call3(__NR_dup3, a, b, flags); }
SYS_INLINE long sys_pipe2(int fds[2], int flags) { return sys_call2(__NR_pipe2, (long)fds, flags); }
SYS_INLINE long sys_getrandom(void *buf, size_t n, unsigned flags) { return sys_call3(__NR_getrandom, (long)buf, (long)n, flags); }
SYS_INLINE long sys_memfd_create(const char *name, unsigned flags) { return sys_call2(__NR_memfd_create, (long)name, flags); }

#endif
