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
};
