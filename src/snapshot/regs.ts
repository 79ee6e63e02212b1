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
}
