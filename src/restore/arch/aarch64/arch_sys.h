/*
 * aarch64: syscall numbers (the generic table: no open, stat, dup2, fork),
 * the syscall instruction (svc #0: number in x8, arguments x0-x5, result in
 * x0; nothing else clobbered), and the kernel ABI structs whose layout is
 * per machine. Included by sys.h only.
 */
#ifndef CACHED_EXEC_ARCH_SYS_H
#define CACHED_EXEC_ARCH_SYS_H

#define CX_ARCH_NAME "aarch64"
/* The header's arch (ELF e_machine) of images this launcher restores. */
#define CX_ARCH_SELF 183u /* EM_AARCH64 */

#define __NR_getcwd 17
#define __NR_dup3 24
#define __NR_fcntl 25
#define __NR_flock 32
#define __NR_mkdirat 34
#define __NR_unlinkat 35
#define __NR_linkat 37
#define __NR_fstatfs 44
#define __NR_faccessat 48
#define __NR_openat 56
#define __NR_close 57
#define __NR_pipe2 59
#define __NR_lseek 62
#define __NR_read 63
#define __NR_write 64
#define __NR_writev 66
#define __NR_pread64 67
#define __NR_readlinkat 78
#define __NR_newfstatat 79
#define __NR_fstat 80
#define __NR_utimensat 88
#define __NR_capget 90
#define __NR_capset 91
#define __NR_personality 92
#define __NR_exit 93
#define __NR_exit_group 94
#define __NR_set_tid_address 96
#define __NR_set_robust_list 99
#define __NR_clock_gettime 113
#define __NR_ptrace 117
#define __NR_sched_setaffinity 122
#define __NR_sched_getaffinity 123
#define __NR_kill 129
#define __NR_rt_sigaction 134
#define __NR_rt_sigprocmask 135
#define __NR_setpriority 140
#define __NR_getpgid 155
#define __NR_getsid 156
#define __NR_setsid 157
#define __NR_getgroups 158
#define __NR_uname 160
#define __NR_umask 166
#define __NR_prctl 167
#define __NR_getpid 172
#define __NR_getppid 173
#define __NR_geteuid 175
#define __NR_getegid 177
#define __NR_gettid 178
#define __NR_munmap 215
#define __NR_mremap 216
#define __NR_clone 220
#define __NR_execve 221
#define __NR_mmap 222
#define __NR_mprotect 226
#define __NR_madvise 233
#define __NR_wait4 260
#define __NR_prlimit64 261
#define __NR_getrandom 278
#define __NR_memfd_create 279
#define __NR_rseq 293
#define __NR_close_range 436
#define __NR_faccessat2 439

/* struct stat as the arm64 kernel writes it (asm-generic/stat.h: kernel ABI, not libc). */
struct kstat {
	uint64_t st_dev;
	uint64_t st_ino;
	uint32_t st_mode;
	uint32_t st_nlink;
	uint32_t st_uid;
	uint32_t st_gid;
	uint64_t st_rdev;
	uint64_t __pad1;
	int64_t st_size;
	int32_t st_blksize;
	int32_t __pad2;
	int64_t st_blocks;
	uint64_t st_atime_sec;
	uint64_t st_atime_nsec;
	uint64_t st_mtime_sec;
	uint64_t st_mtime_nsec;
	uint64_t st_ctime_sec;
	uint64_t st_ctime_nsec;
	uint32_t __unused4;
	uint32_t __unused5;
};
_Static_assert(sizeof(struct kstat) == 128, "kernel struct stat on arm64");

/* The kernel's struct sigaction on arm64 (it has SA_RESTORER: same layout as x86_64's). */
struct ksigaction {
	uint64_t handler;
	uint64_t flags;
	uint64_t restorer;
	uint64_t mask;
};
_Static_assert(sizeof(struct ksigaction) == 32, "kernel sigaction layout");

#define SYS_INLINE static inline __attribute__((always_inline))

SYS_INLINE long sys_call0(long n)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0");
	__asm__ volatile("svc #0" : "=r"(x0) : "r"(x8) : "memory");
	return x0;
}
SYS_INLINE long sys_call1(long n, long a)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8) : "memory");
	return x0;
}
SYS_INLINE long sys_call2(long n, long a, long b)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1) : "memory");
	return x0;
}
SYS_INLINE long sys_call3(long n, long a, long b, long c)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
SYS_INLINE long sys_call4(long n, long a, long b, long c, long d)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
	return x0;
}
SYS_INLINE long sys_call5(long n, long a, long b, long c, long d, long e)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory");
	return x0;
}
SYS_INLINE long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
	return x0;
}

#endif
