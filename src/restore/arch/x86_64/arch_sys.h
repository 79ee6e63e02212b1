/*
 * x86_64: syscall numbers, the syscall instruction (rax = number, args in
 * rdi rsi rdx r10 r8 r9; rcx and r11 clobbered), and the kernel ABI structs
 * whose layout is per machine. Included by sys.h only.
 */
#ifndef CACHED_EXEC_ARCH_SYS_H
#define CACHED_EXEC_ARCH_SYS_H

#define CX_ARCH_NAME "x86_64"
/* The header's arch (ELF e_machine) of images this launcher restores. */
#define CX_ARCH_SELF 62u /* EM_X86_64 */

#define __NR_read 0
#define __NR_write 1
#define __NR_open 2
#define __NR_close 3
#define __NR_fstat 5
#define __NR_mmap 9
#define __NR_mprotect 10
#define __NR_munmap 11
#define __NR_madvise 28
#define __NR_pread64 17
#define __NR_access 21
#define __NR_mremap 25
#define __NR_getpid 39
#define __NR_kill 62
#define __NR_execve 59
#define __NR_exit 60
#define __NR_uname 63
#define __NR_readlink 89
#define __NR_readlinkat 267
#define __NR_mkdirat 258
#define __NR_clone 56
#define __NR_geteuid 107
#define __NR_getegid 108
#define __NR_getgroups 115
#define __NR_prlimit64 302
#define __NR_capget 125
#define __NR_faccessat2 439
#define __NR_fstatfs 138
#define __NR_capset 126
#define __NR_ptrace 101
#define __NR_personality 135
#define __NR_prctl 157
#define __NR_arch_prctl 158
#define __NR_gettid 186
#define __NR_set_tid_address 218
#define __NR_exit_group 231
#define __NR_openat 257
#define __NR_newfstatat 262
#define __NR_faccessat 269
#define __NR_set_robust_list 273
#define __NR_utimensat 280
#define __NR_unlinkat 263
#define __NR_linkat 265
#define __NR_rseq 334
#define __NR_dup2 33
#define __NR_fork 57
#define __NR_wait4 61
#define __NR_flock 73
#define __NR_mkdir 83
#define __NR_setsid 112
#define __NR_setpriority 141
#define __NR_clock_gettime 228
#define __NR_close_range 436
#define __NR_sched_setaffinity 203
#define __NR_sched_getaffinity 204
/* Post-init images: signal state, the resume fd and its context. */
#define __NR_lseek 8
#define __NR_rt_sigaction 13
#define __NR_rt_sigprocmask 14
#define __NR_writev 20
#define __NR_fcntl 72
#define __NR_getcwd 79
#define __NR_umask 95
#define __NR_getppid 110
#define __NR_getpgid 121
#define __NR_getsid 124
#define __NR_dup3 292
#define __NR_pipe2 293
#define __NR_getrandom 318
#define __NR_memfd_create 319
#define ARCH_SET_FS 0x1002

/* struct stat as the x86_64 kernel writes it (kernel ABI, not libc). */
struct kstat {
	uint64_t st_dev;
	uint64_t st_ino;
	uint64_t st_nlink;
	uint32_t st_mode;
	uint32_t st_uid;
	uint32_t st_gid;
	uint32_t __pad0;
	uint64_t st_rdev;
	int64_t st_size;
	int64_t st_blksize;
	int64_t st_blocks;
	uint64_t st_atime_sec;
	uint64_t st_atime_nsec;
	uint64_t st_mtime_sec;
	uint64_t st_mtime_nsec;
	uint64_t st_ctime_sec;
	uint64_t st_ctime_nsec;
	int64_t __unused[3];
};
_Static_assert(sizeof(struct kstat) == 144, "kernel struct stat on x86_64");

/* The kernel's struct sigaction on x86_64 (rt_sigaction with an 8-byte mask). */
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
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call1(long n, long a)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call2(long n, long a, long b)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call4(long n, long a, long b, long c, long d)
{
	long r;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call5(long n, long a, long b, long c, long d, long e)
{
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return r;
}
SYS_INLINE long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return r;
}

SYS_INLINE long sys_arch_prctl(int code, uint64_t addr) { return sys_call2(__NR_arch_prctl, code, (long)addr); }

#endif
