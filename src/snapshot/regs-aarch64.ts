/**
 * aarch64 for the tracer (regs.ts): NT_PRSTATUS (x0-x30, sp, pc, pstate:
 * there is no PTRACE_GETREGS), AAPCS64 (arguments and result in x0...,
 * return address in x30), tpidr_el0 as the thread pointer (NT_ARM_TLS: the
 * loaders set it with msr, no syscall to trace), `brk #0` (4 bytes; pc stays
 * at it at the SIGTRAP), `svc #0` with the number rewritten through
 * NT_ARM_SYSTEM_CALL (writing x8 at the stop changes nothing), mrs of
 * cntvct_el0 for the counter, and the generic syscall table (no open, stat,
 * access, readlink, poll, time, getpgrp or arch_prctl: only their *at forms).
 */
import * as L from '../sys/libc.js';
import { ARCH_AARCH64 } from '../image/schema.js';
import { readMem } from './mem.js';
import { ABSENT, type RegFile, type SyscallTable, type TracerArch } from './regs.js';

/** aarch64 syscall numbers (asm-generic/unistd.h). */
const SYSCALLS: SyscallTable = {
  read: 63, write: 64, open: ABSENT, close: 57, stat: ABSENT, fstat: 80, lstat: ABSENT, poll: ABSENT, lseek: 62, mmap: 222,
  mprotect: 226, munmap: 215, brk: 214, rt_sigaction: 134, rt_sigprocmask: 135, ioctl: 29, pread64: 67, pwrite64: 68,
  readv: 65, writev: 66, access: ABSENT, sched_yield: 124, mremap: 216, madvise: 233, getpid: 172, execve: 221, uname: 160,
  fcntl: 25, getcwd: 17, readlink: ABSENT, gettimeofday: 169, getrlimit: 163, sysinfo: 179, getuid: 174, getgid: 176,
  geteuid: 175, getegid: 177, getppid: 173, getpgrp: ABSENT, getgroups: 158, getresuid: 148, getresgid: 150, capget: 90,
  sigaltstack: 132, statfs: 43, fstatfs: 44, prctl: 167, arch_prctl: ABSENT, gettid: 178, time: ABSENT, futex: 98,
  sched_getaffinity: 123, getdents64: 61, set_tid_address: 96, clock_gettime: 113, clock_getres: 114, exit_group: 94,
  openat: 56, newfstatat: 79, readlinkat: 78, faccessat: 48, set_robust_list: 99, prlimit64: 261, getcpu: 168,
  getrandom: 278, membarrier: 283, statx: 291, rseq: 293, faccessat2: 439,
};

/** brk #0, little-endian. */
const BRK0 = Buffer.from([0x00, 0x00, 0x20, 0xd4]);
/** svc #0 */
const SVC0 = Buffer.from([0x01, 0x00, 0x00, 0xd4]);
/** mrs Xt, cntvct_el0 / cntvctss_el0 (Rt in bits 0-4): the reads PR_TSC_SIGSEGV traps (Linux 6.12+). */
const MRS_CNTVCT = 0xd53be040;
const MRS_CNTVCTSS = 0xd53be0c0;

const get = (r: RegFile, n: string): bigint => r[n] ?? 0n;

export const AARCH64: TracerArch = {
  name: 'aarch64',
  machine: ARCH_AARCH64,
  syscalls: SYSCALLS,
  getRegs: (pid) => L.getRegsAarch64(pid),
  setRegs: (pid, r) => L.setRegsAarch64(pid, r),
  pc: (r) => get(r, 'pc'),
  setPc: (r, v) => {
    r.pc = v;
  },
  sp: (r) => get(r, 'sp'),
  callArg: (r, i) => get(r, `x${i}`),
  result: (r) => get(r, 'x0'),
  setResult: (r, v) => {
    r.x0 = v;
  },
  returnAddress: (_mem, r) => get(r, 'x30'),
  // `ret` branches to x30 and leaves sp alone.
  spAfterReturn: (sp) => sp,
  returnNow: (_mem, r) => {
    r.pc = get(r, 'x30');
  },
  // glibc's _dl_start_user puts _dl_fini in x0 (the kernel passes 0 to a static program).
  rtldFini: (r) => get(r, 'x0'),
  threadPointer: (pid) => L.getArmThreadPointer(pid),
  stackGuard: 'global',
  breakpoint: BRK0,
  // brk traps before executing: pc is at it.
  breakpointAddress: (pc) => pc,
  syscallInsn: SVC0,
  replaceSyscall: (pid, saved, nr, args) => {
    const regs: RegFile = { ...saved };
    for (let i = 0; i < 6; i++) regs[`x${i}`] = BigInt.asUintN(64, args[i] ?? 0n);
    L.setRegsAarch64(pid, regs);
    L.setArmSyscallNumber(pid, nr);
  },
  // x8 still holds the original number (only the kernel's copy was rewritten); svc is 4 bytes before pc.
  reenterSyscall: (pid, saved) => L.setRegsAarch64(pid, { ...saved, pc: get(saved, 'pc') - 4n }),
  answerCounterRead: (mem, r, next) => {
    const insn = readMem(mem, get(r, 'pc'), 4).readUInt32LE(0);
    const op = (insn & ~0x1f) >>> 0;
    if (op !== MRS_CNTVCT && op !== MRS_CNTVCTSS) return false;
    const rt = insn & 0x1f;
    const value = next();
    if (rt !== 31) r[`x${rt}`] = value; // 31 is xzr here: the read is discarded
    r.pc = get(r, 'pc') + 4n;
    return true;
  },
};
