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
import { readMem, writeBytes } from './mem.js';
import { SnapshotRefusal } from './refusal.js';
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
  alarm: ABSENT, setitimer: 103, kill: 129, fchdir: 50, chdir: 49, umask: 166, ptrace: 117, setuid: 146, setgid: 144,
  setpgid: 154, setsid: 157, setreuid: 145, setregid: 143, setgroups: 159, setresuid: 147, setresgid: 149,
  getpgid: 155, setfsuid: 151, setfsgid: 152, getsid: 156, personality: 92, setrlimit: 164, chroot: 51, tkill: 130,
  timer_create: 107, tgkill: 131, waitid: 95, unshare: 97, timerfd_create: 85, dup: 23, dup2: ABSENT, dup3: 24,
  execveat: 281, seccomp: 277, setns: 268, openat2: 437, pwritev: 70, pwritev2: 287, sendfile: 71, preadv: 69,
  preadv2: 286, clone3: 435, wait4: 260, rt_sigqueueinfo: 138, rt_tgsigqueueinfo: 240, pidfd_open: 434,
  pidfd_send_signal: 424, clone: 220, fork: ABSENT, vfork: ABSENT, socket: 198, accept: 202, accept4: 242,
  eventfd2: 19, epoll_create1: 20, inotify_init1: 26, memfd_create: 279, sched_setaffinity: 122, creat: ABSENT,
  truncate: 45, ftruncate: 46, fallocate: 47, rename: ABSENT, renameat: 38, renameat2: 276, unlink: ABSENT,
  unlinkat: 35, rmdir: ABSENT, link: ABSENT, linkat: 37, symlink: ABSENT, symlinkat: 36, mkdir: ABSENT, mkdirat: 34,
  mknod: ABSENT, mknodat: 33, chmod: ABSENT, fchmod: 52, fchmodat: 53, fchmodat2: 452, chown: ABSENT, fchown: 55,
  lchown: ABSENT, fchownat: 54, utime: ABSENT, utimes: ABSENT, futimesat: ABSENT, utimensat: 88, setxattr: 5,
  lsetxattr: 6, fsetxattr: 7, removexattr: 14, lremovexattr: 15, fremovexattr: 16, connect: 203, sendto: 206,
  sendmsg: 211, sendmmsg: 269, bind: 200, listen: 201, mount: 40, umount2: 39, swapon: 224, swapoff: 225,
  reboot: 142, sethostname: 161, setdomainname: 162, settimeofday: 170, clock_settime: 112, adjtimex: 171,
  clock_adjtime: 266, init_module: 105, finit_module: 273, delete_module: 106, acct: 89, quotactl: 60,
  pivot_root: 41, syslog: 116, process_vm_writev: 271, mq_open: 180, mq_unlink: 181, shmget: 194, semget: 190,
  msgget: 186, shmctl: 195, semctl: 191, msgctl: 187, io_uring_setup: 425, bpf: 280, move_mount: 429, fsmount: 432,
  mount_setattr: 442,
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
  setSyscallArg: (r, i, v) => {
    r[`x${i}`] = BigInt.asUintN(64, v);
  },
  // AAPCS64 has no red zone: below sp nothing is live (a signal frame may be written there any time).
  redZone: 0n,
  checkpointRegs: [...L.AARCH64_REG_NAMES],
  programRegsAtSyscallEntry,
  fpState: (pid) => {
    const b = L.getRegset(pid, L.NT_PRFPREG, FPSIMD_BYTES);
    if (b.length !== FPSIMD_BYTES) throw new SnapshotRefusal('internal', `NT_PRFPREG gave ${b.length} bytes, not ${FPSIMD_BYTES}`);
    return b;
  },
  vectorLength,
  pacMask: (pid) => {
    try {
      // struct user_pac_mask { data_mask, insn_mask }: return addresses are code pointers.
      return L.getRegset(pid, L.NT_ARM_PAC_MASK, 16).readBigUInt64LE(8);
    } catch {
      return 0n; // EINVAL: no PAC on this CPU
    }
  },
};

/** user_sve_header.flags: the registers are SVE's, not only the FPSIMD view. */
const SVE_PT_REGS_SVE = 1;
/** The largest NT_ARM_SVE regset (vector length 2048 bits: 16 + 32 * 256 + 17 * 32 + 16, rounded up). */
const SVE_MAX_BYTES = 16 * 1024;

/**
 * The thread's SVE vector length. At a syscall the AAPCS64 syscall ABI keeps
 * only the FPSIMD view of the vector state: the kernel zeroes the Z
 * registers' bits beyond 128, the P registers and FFR on entry (6.1 drops the
 * SVE state altogether, TIF_SVE off; 6.12 keeps it in SVE form, flushed).
 * So at the checkpoint read NT_PRFPREG is the whole state, and a restore
 * that loads only it (the FPSIMD signal frame) gives the same registers: the
 * next SVE instruction finds the rest zero, as after any syscall. State in
 * SVE form is checked to be that: anything beyond the FPSIMD view not zero
 * would be state a restore cannot carry, refused. The length itself is per
 * thread and set only by prctl(PR_SVE_SET_VL), which the init may not call
 * (checkpoint.ts PRCTL_ALLOWED): the launcher compares it with its own.
 */
function vectorLength(pid: number): number {
  let r: Buffer;
  try {
    r = L.getRegset(pid, L.NT_ARM_SVE, SVE_MAX_BYTES);
  } catch {
    return 0; // EINVAL: no SVE on this CPU
  }
  // struct user_sve_header: size, max_size (u32), vl, max_vl, flags (u16), then the registers at 16.
  if (r.length < 16) throw new SnapshotRefusal('internal', `NT_ARM_SVE gave ${r.length} bytes`);
  const vl = r.readUInt16LE(8);
  if (!(r.readUInt16LE(12) & SVE_PT_REGS_SVE)) return vl;
  const vlBytes = vl; // vl is in bytes; a Z register is vl bytes, a P register and FFR vl / 8
  const zEnd = 16 + 32 * vlBytes;
  const pEnd = zEnd + 17 * (vlBytes / 8); // P0-P15, then FFR
  if (vl % 16 || r.length < pEnd) throw new SnapshotRefusal('internal', `NT_ARM_SVE gave ${r.length} bytes for vector length ${vl}`);
  const beyond = (): string | undefined => {
    for (let n = 0; n < 32; n++) {
      const z = 16 + n * vlBytes;
      for (let b = z + 16; b < z + vlBytes; b++) if (r[b]) return `z${n}`;
    }
    for (let b = zEnd; b < pEnd; b++) if (r[b]) return b < pEnd - vlBytes / 8 ? `p${Math.floor((b - zEnd) / (vlBytes / 8))}` : 'ffr';
    return undefined;
  };
  const live = beyond();
  if (live) {
    throw new SnapshotRefusal('unsupported-syscall', `live SVE state beyond the FPSIMD registers at the checkpoint read (${live}): a restore carries only those`);
  }
  return vl;
}

/** struct user_fpsimd_state: v0-v31 (16 bytes each), fpsr, fpcr, 8 bytes of padding. */
export const FPSIMD_BYTES = 528;

/**
 * The registers the program has at the svc of a syscall-entry stop. arm64's
 * ptrace shows x7 as 0 (entry) or 1 (exit) at syscall stops and puts the real
 * x7 back on the way out, ignoring what the tracer writes there: the stop
 * cannot tell the program's x7, which the compiler may keep live across an
 * svc (glibc's syscall wrappers are inline asm that clobbers x0 only). So:
 * the call is cancelled (syscall number -1: the kernel skips it, x0 becomes
 * -ENOSYS), at its exit stop x0 and pc go back to the svc, a brk #0 is
 * planted over the svc and the thread trapped there, where a signal stop
 * shows every register as it is; then the svc is put back. The thread is left
 * at that brk stop, pc on the svc: PTRACE_SYSCALL enters the read again.
 */
function programRegsAtSyscallEntry(pid: number, mem: number, regs: RegFile, wait: () => { stopSig: number }): RegFile {
  const svc = get(regs, 'pc') - 4n;
  if (!readMem(mem, svc, 4).equals(SVC0)) throw new SnapshotRefusal('internal', 'the checkpoint read was not made by an svc #0');
  const fail = (why: string): never => {
    throw new SnapshotRefusal('internal', `could not read the registers at the checkpoint: ${why}`);
  };
  L.setArmSyscallNumber(pid, -1);
  L.ptrace(L.PTRACE_SYSCALL, pid, 0, 0);
  if (wait().stopSig !== (L.SIGTRAP | 0x80) || L.getSyscallInfo(pid).op !== L.SYSCALL_INFO_EXIT) fail('no exit stop of the cancelled read');
  L.setRegsAarch64(pid, { ...L.getRegsAarch64(pid), x0: get(regs, 'x0'), pc: svc });
  writeBytes(mem, svc, BRK0);
  try {
    L.ptrace(L.PTRACE_CONT, pid, 0, 0);
    if (wait().stopSig !== L.SIGTRAP) fail('the breakpoint on the svc did not stop the thread');
  } finally {
    writeBytes(mem, svc, SVC0);
  }
  const real = L.getRegsAarch64(pid);
  if (get(real, 'pc') !== svc) fail(`stopped at 0x${get(real, 'pc').toString(16)}, not at the svc`);
  for (const [n, v] of Object.entries(regs)) {
    if (n !== 'x7' && n !== 'pc' && real[n] !== v) fail(`${n} changed (0x${v.toString(16)} at the stop, 0x${(real[n] ?? 0n).toString(16)} at the svc)`);
  }
  // As a syscall stop reports it: pc after the svc.
  return { ...real, pc: svc + 4n };
}
