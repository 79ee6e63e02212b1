/**
 * What the tracer needs of the machine it runs on, by role: one module per
 * architecture (regs-x86_64.ts, regs-aarch64.ts) implements it, and the rest
 * of the snapshotter speaks only of roles (pc, sp, an argument, the return
 * value, the thread pointer, a breakpoint) and of syscalls by name. A third
 * architecture is a third module and a line in tracer-arch.ts's hostArch().
 */
/** A stopped thread's general registers, by the kernel's names for them (rip, x0...). */
export type RegFile = Record<string, bigint>;

/**
 * The syscalls the snapshotter's policies name. A machine that lacks one
 * (aarch64 has no open, stat, access, arch_prctl...) has ABSENT there, a
 * number no syscall stop ever reports.
 */
export const SYSCALL_NAMES = [
  'read', 'write', 'open', 'close', 'stat', 'fstat', 'lstat', 'poll', 'lseek', 'mmap', 'mprotect', 'munmap', 'brk',
  'rt_sigaction', 'rt_sigprocmask', 'ioctl', 'pread64', 'pwrite64', 'readv', 'writev', 'access', 'sched_yield', 'mremap',
  'madvise', 'getpid', 'execve', 'uname', 'fcntl', 'getcwd', 'readlink', 'gettimeofday', 'getrlimit', 'sysinfo', 'getuid',
  'getgid', 'geteuid', 'getegid', 'getppid', 'getpgrp', 'getgroups', 'getresuid', 'getresgid', 'capget', 'sigaltstack',
  'statfs', 'fstatfs', 'prctl', 'arch_prctl', 'gettid', 'time', 'futex', 'sched_getaffinity', 'getdents64',
  'set_tid_address', 'clock_gettime', 'clock_getres', 'exit_group', 'openat', 'newfstatat', 'readlinkat', 'faccessat',
  'set_robust_list', 'prlimit64', 'getcpu', 'getrandom', 'membarrier', 'statx', 'rseq', 'faccessat2',
  // The post-init tracer's policy (checkpoint.ts) and its journal of side effects (effects.ts):
  'alarm', 'setitimer', 'kill', 'fchdir', 'chdir', 'umask', 'ptrace', 'setuid', 'setgid',
  'setpgid', 'setsid', 'setreuid', 'setregid', 'setgroups', 'setresuid', 'setresgid', 'getpgid',
  'setfsuid', 'setfsgid', 'getsid', 'personality', 'setrlimit', 'chroot', 'tkill', 'timer_create',
  'tgkill', 'waitid', 'unshare', 'timerfd_create', 'dup', 'dup2', 'dup3', 'execveat', 'seccomp',
  'setns', 'openat2', 'pwritev', 'pwritev2', 'sendfile', 'preadv', 'preadv2', 'clone3', 'wait4',
  'rt_sigqueueinfo', 'rt_tgsigqueueinfo', 'pidfd_open', 'pidfd_send_signal', 'clone', 'fork', 'vfork',
  'socket', 'accept', 'accept4', 'eventfd2', 'epoll_create1', 'inotify_init1', 'memfd_create',
  'sched_setaffinity', 'creat', 'truncate', 'ftruncate', 'fallocate', 'rename', 'renameat',
  'renameat2', 'unlink', 'unlinkat', 'rmdir', 'link', 'linkat', 'symlink', 'symlinkat', 'mkdir',
  'mkdirat', 'mknod', 'mknodat', 'chmod', 'fchmod', 'fchmodat', 'fchmodat2', 'chown', 'fchown',
  'lchown', 'fchownat', 'utime', 'utimes', 'futimesat', 'utimensat', 'setxattr', 'lsetxattr',
  'fsetxattr', 'removexattr', 'lremovexattr', 'fremovexattr', 'connect', 'sendto', 'sendmsg',
  'sendmmsg', 'bind', 'listen', 'mount', 'umount2', 'swapon', 'swapoff', 'reboot', 'sethostname',
  'setdomainname', 'settimeofday', 'clock_settime', 'adjtimex', 'clock_adjtime', 'init_module',
  'finit_module', 'delete_module', 'acct', 'quotactl', 'pivot_root', 'syslog', 'process_vm_writev',
  'mq_open', 'mq_unlink', 'shmget', 'semget', 'msgget', 'shmctl', 'semctl', 'msgctl',
  'io_uring_setup', 'bpf', 'move_mount', 'fsmount', 'mount_setattr'
] as const;
export type SyscallName = (typeof SYSCALL_NAMES)[number];
export type SyscallTable = Readonly<Record<SyscallName, number>>;
/** The number of a syscall the machine does not have. */
export const ABSENT = -1;

export interface TracerArch {
  /** uname -m */
  readonly name: string;
  /** ELF e_machine */
  readonly machine: number;
  readonly syscalls: SyscallTable;
  getRegs(pid: number): RegFile;
  setRegs(pid: number, regs: RegFile): void;
  pc(r: RegFile): bigint;
  setPc(r: RegFile, v: bigint): void;
  sp(r: RegFile): bigint;
  /** Integer argument i (0-based) of a C function at its first instruction. */
  callArg(r: RegFile, i: number): bigint;
  /** A function's integer result, once it returned. */
  result(r: RegFile): bigint;
  setResult(r: RegFile, v: bigint): void;
  /** At a function's first instruction: the address it returns to. */
  returnAddress(mem: number, r: RegFile): bigint;
  /** At a function's first instruction: what sp is once it returned. */
  spAfterReturn(spAtEntry: bigint): bigint;
  /** At a function's first instruction: makes it return at once (its result already set). */
  returnNow(mem: number, r: RegFile): void;
  /** At the program's entry point: the register that carries the loader's finalizer (rtld_fini). */
  rtldFini(r: RegFile): bigint;
  /** The thread pointer of a stopped thread (x86_64: fs_base, in r; aarch64: tpidr_el0, its own regset). */
  threadPointer(pid: number, r: RegFile): bigint;
  /**
   * Where the C libraries keep the stack protector guard: in the thread
   * block (x86_64: fs:0x28) or in a global variable (aarch64:
   * __stack_chk_guard, in the loader's data). slots.ts looks for it there.
   */
  readonly stackGuard: 'thread-block' | 'global';
  /** The breakpoint instruction's bytes. */
  readonly breakpoint: Buffer;
  /** Where the breakpoint that stopped the thread is, from pc at its SIGTRAP. */
  breakpointAddress(pcAtTrap: bigint): bigint;
  /** The syscall instruction, which ends right before pc at a syscall stop. */
  readonly syscallInsn: Buffer;
  /** At a syscall-entry stop (saved: its registers): makes the kernel run syscall nr with args instead. */
  replaceSyscall(pid: number, saved: RegFile, nr: number, args: readonly bigint[]): void;
  /** At the replaced call's exit stop: the saved registers back, pc on the syscall instruction, so it is entered again. */
  reenterSyscall(pid: number, saved: RegFile): void;
  /**
   * A SIGSEGV of a counter read trapped by PR_SET_TSC (rdtsc, rdtscp;
   * mrs cntvct_el0): answers it with next() and steps past it, returning
   * true; false when the faulting instruction is no counter read.
   */
  answerCounterRead(mem: number, r: RegFile, next: () => bigint): boolean;

  // Post-init checkpoints (checkpoint.ts, postinit.ts).
  /** At a syscall-entry stop: sets argument i of the call the kernel is about to make. */
  setSyscallArg(r: RegFile, i: number, v: bigint): void;
  /** Bytes below sp that belong to the running function (x86_64's red zone); below them the stack is dead. */
  readonly redZone: bigint;
  /** The registers two runs must agree on at the checkpoint (the rest is the syscall's own scratch). */
  readonly checkpointRegs: readonly string[];
  /**
   * At the syscall-entry stop of the checkpoint read (regs: what the stop
   * shows): the registers exactly as the program has them, pc after the
   * syscall instruction as at the stop. wait() returns the next stop of this
   * thread. The thread is left where a PTRACE_SYSCALL enters that read again.
   */
  programRegsAtSyscallEntry(pid: number, mem: number, regs: RegFile, wait: () => { stopSig: number }): RegFile;
  /** The stopped thread's floating-point and vector state (x86_64: the XSAVE area; aarch64: NT_PRFPREG). */
  fpState(pid: number): Buffer;
  /**
   * At a syscall stop: the SVE vector length in bytes (0: no SVE), refusing
   * live SVE state beyond what fpState holds.
   */
  vectorLength(pid: number): number;
  /** The bits of a code pointer that hold a pointer-authentication signature (0: no PAC). */
  pacMask(pid: number): bigint;
}
