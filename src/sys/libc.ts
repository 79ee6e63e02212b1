/**
 * The only module that declares native functions (koffi). Everything here is
 * synchronous and runs on Node's main thread: ptrace requests must come from
 * the thread that is the tracer, and that is the thread that called
 * posix_spawn for a PTRACE_TRACEME child.
 *
 * Sizes of opaque libc types are allocated generously (the real ones are
 * smaller); their layout is never touched from JavaScript.
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

// Opaque storage for posix_spawn's types, larger than glibc's (80/336 bytes).
const FILE_ACTIONS_BYTES = 256;
const SPAWNATTR_BYTES = 1024;
const SIGSET_BYTES = 128;

const posix_spawn = libc.func(
  'int posix_spawn(_Out_ int *pid, const char *path, void *actions, void *attr, const char **argv, const char **envp)',
);
const fa_init = libc.func('int posix_spawn_file_actions_init(void *actions)');
const fa_destroy = libc.func('int posix_spawn_file_actions_destroy(void *actions)');
const fa_addopen = libc.func(
  'int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int oflag, unsigned int mode)',
);
const fa_addclose = libc.func('int posix_spawn_file_actions_addclosefrom_np(void *actions, int from)');
const fa_addchdir = libc.func('int posix_spawn_file_actions_addchdir_np(void *actions, const char *path)');
const attr_init = libc.func('int posix_spawnattr_init(void *attr)');
const attr_destroy = libc.func('int posix_spawnattr_destroy(void *attr)');
const attr_setflags = libc.func('int posix_spawnattr_setflags(void *attr, short flags)');
const attr_setsigdefault = libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)');
const attr_setsigmask = libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)');
const waitpid_ = libc.func('int waitpid(int pid, _Out_ int *status, int options)');
const kill_ = libc.func('int kill(int pid, int sig)');
const ptrace_ = libc.func('long ptrace(int request, ...)');
const getxattr_ = libc.func('long getxattr(const char *path, const char *name, void *value, size_t size)');
const setxattr_ = libc.func('int setxattr(const char *path, const char *name, const void *value, size_t size, int flags)');
const removexattr_ = libc.func('int removexattr(const char *path, const char *name)');
const flock_ = libc.func('int flock(int fd, int op)');
const sched_yield_ = libc.func('int sched_yield(void)');
const prlimit_ = libc.func('int prlimit(int pid, int resource, const void *newLimit, void *oldLimit)');
const Timespec = koffi.struct('cx_timespec', { tv_sec: 'int64_t', tv_nsec: 'int64_t' });
const clock_getres_ = libc.func('clock_getres', 'int', ['int', koffi.out(koffi.pointer(Timespec))]);

const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const O_RDWR = 2;
const O_WRONLY = 1;
const O_APPEND = 0o2000;

export const WALL = 0x40000000;
export const WNOHANG = 1;
export const SIGKILL = 9;
export const SIGSTOP = 19;
export const SIGTRAP = 5;

export const PTRACE_CONT = 7;
export const PTRACE_KILL = 8;
export const PTRACE_GETREGS = 12;
export const PTRACE_SETREGS = 13;
export const PTRACE_SYSCALL = 24;
export const PTRACE_SETOPTIONS = 0x4200;
export const PTRACE_O_TRACESYSGOOD = 0x01;
export const PTRACE_O_TRACEFORK = 0x02;
export const PTRACE_O_TRACEVFORK = 0x04;
export const PTRACE_O_TRACEEXEC = 0x10;
export const PTRACE_O_EXITKILL = 0x100000;
/** status >> 16 of the stop that PTRACE_O_TRACEEXEC reports after a successful execve. */
export const PTRACE_EVENT_EXEC = 4;
export const PTRACE_EVENT_FORK = 1;
export const PTRACE_EVENT_VFORK = 2;

export class SysError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call} failed: errno ${errno}`);
  }
}

/**
 * Spawns `path` with argv/envp, stdin/stdout/stderr on /dev/null, every other
 * fd closed, default signal dispositions and an empty signal mask.
 */
export interface SpawnExtras {
  /** Also open these files read-only at these descriptor numbers (after closing everything from 3). */
  readOnlyFds?: { fd: number; path: string }[];
  /** Working directory of the child. */
  cwd?: string;
  /** stdout and stderr appended to this file instead of /dev/null (to see what the child and its children print). */
  outputPath?: string;
}

export function spawnDetachedStdio(path: string, argv: string[], envp: string[], extras: SpawnExtras = {}): number {
  const actions = Buffer.alloc(FILE_ACTIONS_BYTES);
  const attr = Buffer.alloc(SPAWNATTR_BYTES);
  // Every bit set, not sigfillset(): that leaves out glibc's internal signals
  // (32, 33), which posix_spawn would then hand to the child as ignored.
  const all = Buffer.alloc(SIGSET_BYTES, 0xff);
  const none = Buffer.alloc(SIGSET_BYTES);
  fa_init(actions);
  attr_init(attr);
  try {
    // Node opens its own fds 0-2 O_CLOEXEC; give the child fresh ones.
    for (const fd of [0, 1, 2]) {
      if (fd > 0 && extras.outputPath !== undefined) fa_addopen(actions, fd, extras.outputPath, O_WRONLY | O_APPEND, 0);
      else fa_addopen(actions, fd, '/dev/null', O_RDWR, 0);
    }
    fa_addclose(actions, 3);
    for (const x of extras.readOnlyFds ?? []) fa_addopen(actions, x.fd, x.path, 0, 0);
    if (extras.cwd !== undefined) fa_addchdir(actions, extras.cwd);
    attr_setsigdefault(attr, all);
    attr_setsigmask(attr, none);
    attr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    const pid = [0];
    const rc = posix_spawn(pid, path, actions, attr, [...argv, null], [...envp, null]) as number;
    if (rc !== 0) throw new SysError('posix_spawn', rc);
    return pid[0] as number;
  } finally {
    fa_destroy(actions);
    attr_destroy(attr);
  }
}

export interface WaitStatus {
  pid: number;
  raw: number;
  exited: boolean;
  exitCode: number;
  signaled: boolean;
  termSig: number;
  stopped: boolean;
  stopSig: number;
  /** status >> 16: the PTRACE_EVENT_* of an event stop. */
  event: number;
}

function decodeStatus(pid: number, raw: number): WaitStatus {
  return {
    pid,
    raw,
    exited: (raw & 0x7f) === 0,
    exitCode: (raw >> 8) & 0xff,
    signaled: (raw & 0x7f) !== 0 && (raw & 0x7f) !== 0x7f,
    termSig: raw & 0x7f,
    stopped: (raw & 0xff) === 0x7f,
    stopSig: (raw >> 8) & 0xff,
    event: raw >>> 16,
  };
}

/** waitpid(2), retried on EINTR. With WNOHANG, null when nothing changed yet. */
export function waitpid(pid: number, options = WALL): WaitStatus | null {
  const st = [0];
  for (;;) {
    const r = waitpid_(pid, st, options) as number;
    if (r > 0) return decodeStatus(r, (st[0] as number) >>> 0);
    if (r === 0) return null;
    const e = koffi.errno();
    if (e !== 4 /* EINTR */) throw new SysError('waitpid', e);
  }
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/**
 * Waits for a state change of pid, but not past deadline (Date.now() ms):
 * null then. A tracee that spins or blocks forever must not hang the
 * snapshotter, and a blocking waitpid cannot time out, so this polls: a short
 * busy phase first (a ptrace stop normally follows within microseconds), then
 * millisecond sleeps.
 */
export function waitpidUntil(pid: number, deadline: number): WaitStatus | null {
  for (let spin = 0; spin < 2000; spin++) {
    const st = waitpid(pid, WALL | WNOHANG);
    if (st) return st;
    sched_yield_();
  }
  for (;;) {
    const st = waitpid(pid, WALL | WNOHANG);
    if (st) return st;
    if (Date.now() >= deadline) return null;
    Atomics.wait(sleepCell, 0, 0, 1);
  }
}

export function kill(pid: number, sig: number): void {
  kill_(pid, sig);
}

/** ptrace with integer addr/data (requests that take numbers). */
export function ptrace(req: number, pid: number, addr: bigint | number = 0, data: bigint | number = 0): number {
  koffi.errno(0);
  const r = ptrace_(req, 'int', pid, 'uint64_t', BigInt(addr), 'uint64_t', BigInt(data)) as number;
  if (r === -1) {
    const e = koffi.errno();
    if (e !== 0) throw new SysError(`ptrace(${req})`, e);
  }
  return r;
}

/** ptrace whose data is a buffer (GETREGS/SETREGS, GET_SYSCALL_INFO with addr = its size). */
export function ptraceBuffer(req: number, pid: number, buf: Buffer, addr: bigint | number = 0): number {
  koffi.errno(0);
  const r = ptrace_(req, 'int', pid, 'uint64_t', BigInt(addr), 'void *', buf) as number;
  if (r === -1) throw new SysError(`ptrace(${req})`, koffi.errno());
  return r;
}

export const RLIMIT_STACK = 3;
export const RLIM_INFINITY = 0xffffffffffffffffn;

export interface ResourceLimit {
  soft: bigint;
  hard: bigint;
}

/** prlimit(2) on another process: sets `next` when given; returns the limit before. */
export function prlimit(pid: number, resource: number, next?: ResourceLimit): ResourceLimit {
  const old = Buffer.alloc(16);
  let set: Buffer | null = null;
  if (next) {
    set = Buffer.alloc(16);
    set.writeBigUInt64LE(next.soft, 0);
    set.writeBigUInt64LE(next.hard, 8);
  }
  if (prlimit_(pid, resource, set, old) !== 0) throw new SysError('prlimit', koffi.errno());
  return { soft: old.readBigUInt64LE(0), hard: old.readBigUInt64LE(8) };
}

export const PTRACE_GETSIGINFO = 0x4202;

/** The signal that stopped a tracee: number, code, and the faulting address (SIGSEGV, SIGBUS). */
export function getSigInfo(pid: number): { signo: number; code: number; addr: bigint } {
  const buf = Buffer.alloc(128); // siginfo_t
  ptraceBuffer(PTRACE_GETSIGINFO, pid, buf);
  return { signo: buf.readInt32LE(0), code: buf.readInt32LE(8), addr: buf.readBigUInt64LE(16) };
}

export const PTRACE_GET_SYSCALL_INFO = 0x420e;
export const SYSCALL_INFO_ENTRY = 1;
export const SYSCALL_INFO_EXIT = 2;
/** struct ptrace_syscall_info (linux/ptrace.h): op, arch, ip, sp, then the entry/exit union. */
const SYSCALL_INFO_BYTES = 88;

export interface SyscallInfo {
  /** SYSCALL_INFO_ENTRY, SYSCALL_INFO_EXIT, or 0 when the stop is no syscall stop. */
  op: number;
  nr: number;
  args: bigint[];
  /** Exit stops: the result, negative errno on failure. */
  rval: bigint;
}

/**
 * What a syscall stop is, from the kernel (Linux 5.3+): entry or exit is told,
 * not guessed by toggling, so an exit stop without its entry (execve's, right
 * after the exec event) cannot shift every later entry/exit pair.
 */
export function getSyscallInfo(pid: number): SyscallInfo {
  const buf = Buffer.alloc(SYSCALL_INFO_BYTES);
  ptraceBuffer(PTRACE_GET_SYSCALL_INFO, pid, buf, SYSCALL_INFO_BYTES);
  const op = buf[0] as number;
  if (op === SYSCALL_INFO_ENTRY) {
    const args: bigint[] = [];
    for (let i = 0; i < 6; i++) args.push(buf.readBigUInt64LE(32 + i * 8));
    return { op, nr: Number(buf.readBigUInt64LE(24)), args, rval: 0n };
  }
  if (op === SYSCALL_INFO_EXIT) return { op, nr: -1, args: [], rval: buf.readBigInt64LE(24) };
  return { op, nr: -1, args: [], rval: 0n };
}

export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** flock(2); false when LOCK_NB was given and another holder has it. */
export function flock(fd: number, op: number): boolean {
  if ((flock_(fd, op) as number) === 0) return true;
  const e = koffi.errno();
  if (e === 11 /* EWOULDBLOCK */) return false;
  throw new SysError('flock', e);
}

const CLOCK_REALTIME_COARSE = 5;

/**
 * The tick of the clock file timestamps come from (the kernel stamps inodes
 * with the coarse realtime clock, ktime_get_coarse_real_ts64): a change
 * within one tick of another can leave a nanosecond timestamp unchanged.
 */
export function coarseClockResolutionNs(): bigint {
  const res: { tv_sec?: number | bigint; tv_nsec?: number | bigint } = {};
  if ((clock_getres_(CLOCK_REALTIME_COARSE, res) as number) !== 0) throw new SysError('clock_getres', koffi.errno());
  return BigInt(res.tv_sec ?? 0) * 1_000_000_000n + BigInt(res.tv_nsec ?? 0);
}

/** True when the file has a security.capability attribute (file capabilities). */
export function hasFileCapabilities(path: string): boolean {
  const r = getxattr_(path, 'security.capability', null, 0) as number;
  return r > 0;
}

const ENODATA = 61;

/** An extended attribute's value, or null when the file has none of that name. */
export function getXattr(path: string, name: string): Buffer | null {
  const buf = Buffer.alloc(256);
  const r = getxattr_(path, name, buf, buf.length) as number;
  if (r >= 0) return Buffer.from(buf.subarray(0, r));
  const e = koffi.errno();
  if (e === ENODATA) return null;
  throw new SysError(`getxattr(${name})`, e);
}

/** setxattr(2) with flags 0 (create or replace). */
export function setXattr(path: string, name: string, value: Buffer): void {
  if ((setxattr_(path, name, value, value.length, 0) as number) !== 0) throw new SysError(`setxattr(${name})`, koffi.errno());
}

/** removexattr(2); false when there was none. */
export function removeXattr(path: string, name: string): boolean {
  if ((removexattr_(path, name) as number) === 0) return true;
  const e = koffi.errno();
  if (e === ENODATA) return false;
  throw new SysError(`removexattr(${name})`, e);
}

/** x86_64 struct user_regs_struct (kernel ABI), 27 unsigned longs. */
export const REG_NAMES = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type RegName = (typeof REG_NAMES)[number];
export type Regs = Record<RegName, bigint>;
export const REGS_BYTES = REG_NAMES.length * 8;

export function getRegs(pid: number): Regs {
  const buf = Buffer.alloc(REGS_BYTES);
  ptraceBuffer(PTRACE_GETREGS, pid, buf);
  const out = {} as Regs;
  REG_NAMES.forEach((n, i) => {
    out[n] = buf.readBigUInt64LE(i * 8);
  });
  return out;
}

export const PTRACE_GETREGSET = 0x4204;
export const NT_X86_XSTATE = 0x202;
/** Larger than any XSAVE area (AVX-512 with AMX tiles is ~11 KiB); the kernel says how much it filled. */
const XSTATE_MAX = 16384;

/** The FPU/SSE/AVX... state in XSAVE standard format, as the kernel gives it to a tracer. */
export function getXstate(pid: number): Buffer {
  const buf = Buffer.alloc(XSTATE_MAX);
  const iov = Buffer.alloc(16);
  const addr = koffi.address(buf);
  iov.writeBigUInt64LE(BigInt(addr), 0);
  iov.writeBigUInt64LE(BigInt(XSTATE_MAX), 8);
  ptraceBuffer(PTRACE_GETREGSET, pid, iov, NT_X86_XSTATE);
  return Buffer.from(buf.subarray(0, Number(iov.readBigUInt64LE(8))));
}

export const PTRACE_SETREGSET = 0x4205;
/** Regset types (elf.h): the general registers, and aarch64's thread pointer and syscall number. */
export const NT_PRSTATUS = 1;
export const NT_ARM_TLS = 0x401;
export const NT_ARM_SYSTEM_CALL = 0x404;
/** aarch64: v0-v31, fpsr, fpcr (struct user_fpsimd_state, 528 bytes). */
export const NT_PRFPREG = 2;
/** aarch64: the SVE state; its header (struct user_sve_header) holds the vector length. */
export const NT_ARM_SVE = 0x405;
/** aarch64: the bits of a pointer that hold its PAC signature (struct user_pac_mask: data, insn). */
export const NT_ARM_PAC_MASK = 0x406;

/** PTRACE_GETREGSET: up to `size` bytes of one register set; the kernel says how many it filled. */
export function getRegset(pid: number, type: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(BigInt(koffi.address(buf)), 0);
  iov.writeBigUInt64LE(BigInt(size), 8);
  ptraceBuffer(PTRACE_GETREGSET, pid, iov, type);
  return Buffer.from(buf.subarray(0, Number(iov.readBigUInt64LE(8))));
}

/** PTRACE_SETREGSET of one register set (the whole buffer). */
export function setRegset(pid: number, type: number, buf: Buffer): void {
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(BigInt(koffi.address(buf)), 0);
  iov.writeBigUInt64LE(BigInt(buf.length), 8);
  ptraceBuffer(PTRACE_SETREGSET, pid, iov, type);
}

/** aarch64 struct user_pt_regs (kernel ABI, NT_PRSTATUS): x0-x30, sp, pc, pstate. */
export const AARCH64_REG_NAMES = [
  ...Array.from({ length: 31 }, (_, i) => `x${i}`), 'sp', 'pc', 'pstate',
] as readonly string[];
export type Aarch64Regs = Record<string, bigint>;
const AARCH64_REGS_BYTES = 34 * 8;

export function getRegsAarch64(pid: number): Aarch64Regs {
  const buf = getRegset(pid, NT_PRSTATUS, AARCH64_REGS_BYTES);
  if (buf.length !== AARCH64_REGS_BYTES) throw new SysError('ptrace(GETREGSET NT_PRSTATUS)', 0);
  const out: Aarch64Regs = {};
  AARCH64_REG_NAMES.forEach((n, i) => {
    out[n] = buf.readBigUInt64LE(i * 8);
  });
  return out;
}

export function setRegsAarch64(pid: number, regs: Aarch64Regs): void {
  const buf = Buffer.alloc(AARCH64_REGS_BYTES);
  AARCH64_REG_NAMES.forEach((n, i) => buf.writeBigUInt64LE(BigInt.asUintN(64, regs[n] ?? 0n), i * 8));
  setRegset(pid, NT_PRSTATUS, buf);
}

/** aarch64: tpidr_el0, the thread pointer (NT_ARM_TLS; its second word, tpidr2, exists only with SME). */
export function getArmThreadPointer(pid: number): bigint {
  return getRegset(pid, NT_ARM_TLS, 16).readBigUInt64LE(0);
}

/** aarch64: the syscall number a syscall-entry stop goes on with (writing x8 does not change it). */
export function setArmSyscallNumber(pid: number, nr: number): void {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(nr, 0);
  setRegset(pid, NT_ARM_SYSTEM_CALL, buf);
}

export function setRegs(pid: number, regs: Regs): void {
  const buf = Buffer.alloc(REGS_BYTES);
  REG_NAMES.forEach((n, i) => buf.writeBigUInt64LE(BigInt.asUintN(64, regs[n]), i * 8));
  ptraceBuffer(PTRACE_SETREGS, pid, buf);
}
