/**
 * x86_64 for the tracer (regs.ts): PTRACE_GETREGS' user_regs_struct, the
 * SysV calling convention (arguments rdi, rsi, rdx..., result rax, return
 * address on the stack), fs_base as the thread pointer, int3 (pc one past it
 * at the SIGTRAP), `syscall` (0f 05) with the number rewritten in orig_rax,
 * rdtsc/rdtscp for the counter, and the x86_64 syscall numbers.
 */
import * as L from '../sys/libc.js';
import { ARCH_X86_64 } from '../image/schema.js';
import { readMem } from './mem.js';
import { type RegFile, type SyscallTable, type TracerArch } from './regs.js';

/** x86_64 syscall numbers (kernel ABI). */
const SYSCALLS: SyscallTable = {
  read: 0, write: 1, open: 2, close: 3, stat: 4, fstat: 5, lstat: 6, poll: 7, lseek: 8, mmap: 9, mprotect: 10,
  munmap: 11, brk: 12, rt_sigaction: 13, rt_sigprocmask: 14, ioctl: 16, pread64: 17, pwrite64: 18, readv: 19,
  writev: 20, access: 21, sched_yield: 24, mremap: 25, madvise: 28, getpid: 39, execve: 59, uname: 63, fcntl: 72,
  getcwd: 79, readlink: 89, gettimeofday: 96, getrlimit: 97, sysinfo: 99, getuid: 102, getgid: 104, geteuid: 107,
  getegid: 108, getppid: 110, getpgrp: 111, getgroups: 115, getresuid: 118, getresgid: 120, capget: 125, sigaltstack: 131, statfs: 137, fstatfs: 138,
  prctl: 157, arch_prctl: 158, gettid: 186, time: 201, futex: 202, sched_getaffinity: 204, getdents64: 217,
  set_tid_address: 218, clock_gettime: 228, clock_getres: 229, exit_group: 231, openat: 257, newfstatat: 262,
  readlinkat: 267, faccessat: 269, set_robust_list: 273, prlimit64: 302, getcpu: 309, getrandom: 318,
  membarrier: 324, statx: 332, rseq: 334, faccessat2: 439,
  alarm: 37, setitimer: 38, kill: 62, fchdir: 81, chdir: 80, umask: 95, ptrace: 101, setuid: 105, setgid: 106,
  setpgid: 109, setsid: 112, setreuid: 113, setregid: 114, setgroups: 116, setresuid: 117, setresgid: 119,
  getpgid: 121, setfsuid: 122, setfsgid: 123, getsid: 124, personality: 135, setrlimit: 160, chroot: 161, tkill: 200,
  timer_create: 222, tgkill: 234, waitid: 247, unshare: 272, timerfd_create: 283, dup: 32, dup2: 33, dup3: 292,
  execveat: 322, seccomp: 317, setns: 308, openat2: 437, pwritev: 296, pwritev2: 328, sendfile: 40, preadv: 295,
  preadv2: 327, clone3: 435, wait4: 61, rt_sigqueueinfo: 129, rt_tgsigqueueinfo: 297, pidfd_open: 434,
  pidfd_send_signal: 424, clone: 56, fork: 57, vfork: 58, socket: 41, accept: 43, accept4: 288, eventfd2: 290,
  epoll_create1: 291, inotify_init1: 294, memfd_create: 319, sched_setaffinity: 203, creat: 85, truncate: 76,
  ftruncate: 77, fallocate: 285, rename: 82, renameat: 264, renameat2: 316, unlink: 87, unlinkat: 263, rmdir: 84,
  link: 86, linkat: 265, symlink: 88, symlinkat: 266, mkdir: 83, mkdirat: 258, mknod: 133, mknodat: 259, chmod: 90,
  fchmod: 91, fchmodat: 268, fchmodat2: 452, chown: 92, fchown: 93, lchown: 94, fchownat: 260, utime: 132,
  utimes: 235, futimesat: 261, utimensat: 280, setxattr: 188, lsetxattr: 189, fsetxattr: 190, removexattr: 197,
  lremovexattr: 198, fremovexattr: 199, connect: 42, sendto: 44, sendmsg: 46, sendmmsg: 307, bind: 49, listen: 50,
  mount: 165, umount2: 166, swapon: 167, swapoff: 168, reboot: 169, sethostname: 170, setdomainname: 171,
  settimeofday: 164, clock_settime: 227, adjtimex: 159, clock_adjtime: 305, init_module: 175, finit_module: 313,
  delete_module: 176, acct: 163, quotactl: 179, pivot_root: 155, syslog: 103, process_vm_writev: 311, mq_open: 240,
  mq_unlink: 241, shmget: 29, semget: 64, msgget: 68, shmctl: 31, semctl: 66, msgctl: 71, io_uring_setup: 425,
  bpf: 321, move_mount: 429, fsmount: 432, mount_setattr: 442,
};

const CALL_ARGS = ['rdi', 'rsi', 'rdx', 'rcx', 'r8', 'r9'] as const;
const SYSCALL_ARGS = ['rdi', 'rsi', 'rdx', 'r10', 'r8', 'r9'] as const;
const get = (r: RegFile, n: string): bigint => r[n] ?? 0n;

export const X86_64: TracerArch = {
  name: 'x86_64',
  machine: ARCH_X86_64,
  syscalls: SYSCALLS,
  getRegs: (pid) => L.getRegs(pid),
  setRegs: (pid, r) => L.setRegs(pid, r as L.Regs),
  pc: (r) => get(r, 'rip'),
  setPc: (r, v) => {
    r.rip = v;
  },
  sp: (r) => get(r, 'rsp'),
  callArg: (r, i) => get(r, CALL_ARGS[i] as string),
  result: (r) => get(r, 'rax'),
  setResult: (r, v) => {
    r.rax = v;
  },
  returnAddress: (mem, r) => readMem(mem, get(r, 'rsp'), 8).readBigUInt64LE(0),
  // `ret` pops the return address.
  spAfterReturn: (sp) => sp + 8n,
  returnNow: (mem, r) => {
    r.rip = readMem(mem, get(r, 'rsp'), 8).readBigUInt64LE(0);
    r.rsp = get(r, 'rsp') + 8n;
  },
  rtldFini: (r) => get(r, 'rdx'),
  threadPointer: (_pid, r) => get(r, 'fs_base'),
  stackGuard: 'thread-block',
  breakpoint: Buffer.from([0xcc]),
  // int3 traps after executing: rip is one past it.
  breakpointAddress: (pc) => pc - 1n,
  syscallInsn: Buffer.from([0x0f, 0x05]),
  replaceSyscall: (pid, saved, nr, args) => {
    const regs: RegFile = { ...saved, orig_rax: BigInt(nr) };
    SYSCALL_ARGS.forEach((n, i) => {
      regs[n] = BigInt.asUintN(64, args[i] ?? 0n);
    });
    L.setRegs(pid, regs as L.Regs);
  },
  // rax holds the result at the exit stop; the syscall instruction takes the number from rax.
  reenterSyscall: (pid, saved) => L.setRegs(pid, { ...saved, rax: get(saved, 'orig_rax'), rip: get(saved, 'rip') - 2n } as L.Regs),
  answerCounterRead: (mem, r, next) => {
    // rdtsc (0f 31) or rdtscp (0f 01 f9) under PR_TSC_SIGSEGV.
    const insn = readMem(mem, get(r, 'rip'), 3);
    const rdtscp = insn[0] === 0x0f && insn[1] === 0x01 && insn[2] === 0xf9;
    if (!rdtscp && !(insn[0] === 0x0f && insn[1] === 0x31)) return false;
    const tsc = next();
    r.rax = tsc & 0xffffffffn;
    r.rdx = tsc >> 32n;
    if (rdtscp) r.rcx = 0n;
    r.rip = get(r, 'rip') + (rdtscp ? 3n : 2n);
    return true;
  },
  setSyscallArg: (r, i, v) => {
    r[SYSCALL_ARGS[i] as string] = BigInt.asUintN(64, v);
  },
  redZone: 128n,
  // rax holds -ENOSYS at a syscall-entry stop; the number is orig_rax.
  checkpointRegs: ['r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rcx', 'rdx', 'rsi', 'rdi',
    'orig_rax', 'rip', 'eflags', 'rsp', 'gs_base'],
  // The stop shows every register as the program has it.
  programRegsAtSyscallEntry: (_pid, _mem, regs) => regs,
  fpState: (pid) => L.getXstate(pid),
  vectorLength: () => 0,
  pacMask: () => 0n,
};
