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
const attr_init = libc.func('int posix_spawnattr_init(void *attr)');
const attr_destroy = libc.func('int posix_spawnattr_destroy(void *attr)');
const attr_setflags = libc.func('int posix_spawnattr_setflags(void *attr, short flags)');
const attr_setsigdefault = libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)');
const attr_setsigmask = libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)');
const sigfillset = libc.func('int sigfillset(void *set)');
const sigemptyset = libc.func('int sigemptyset(void *set)');
const waitpid_ = libc.func('int waitpid(int pid, _Out_ int *status, int options)');
const kill_ = libc.func('int kill(int pid, int sig)');
const ptrace_ = libc.func('long ptrace(int request, ...)');
const getxattr_ = libc.func('long getxattr(const char *path, const char *name, void *value, size_t size)');
const flock_ = libc.func('int flock(int fd, int op)');

const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const O_RDWR = 2;

export const WALL = 0x40000000;
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
export const PTRACE_O_EXITKILL = 0x100000;

export class SysError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call} failed: errno ${errno}`);
  }
}

/**
 * Spawns `path` with argv/envp, stdin/stdout/stderr on /dev/null, every other
 * fd closed, default signal dispositions and an empty signal mask.
 */
export function spawnDetachedStdio(path: string, argv: string[], envp: string[]): number {
  const actions = Buffer.alloc(FILE_ACTIONS_BYTES);
  const attr = Buffer.alloc(SPAWNATTR_BYTES);
  const all = Buffer.alloc(SIGSET_BYTES);
  const none = Buffer.alloc(SIGSET_BYTES);
  fa_init(actions);
  attr_init(attr);
  try {
    // Node opens its own fds 0-2 O_CLOEXEC; give the child fresh ones.
    for (const fd of [0, 1, 2]) fa_addopen(actions, fd, '/dev/null', O_RDWR, 0);
    fa_addclose(actions, 3);
    sigfillset(all);
    sigemptyset(none);
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

export function waitpid(pid: number, options = WALL): WaitStatus {
  const st = [0];
  let r: number;
  for (;;) {
    r = waitpid_(pid, st, options) as number;
    if (r >= 0) break;
    const e = koffi.errno();
    if (e !== 4 /* EINTR */) throw new SysError('waitpid', e);
  }
  const raw = (st[0] as number) >>> 0;
  return {
    pid: r,
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

export function kill(pid: number, sig: number): void {
  kill_(pid, sig);
}

/** ptrace with integer addr/data (requests that take numbers). */
export function ptrace(req: number, pid: number, addr: bigint | number = 0, data: bigint | number = 0): number {
  const r = ptrace_(req, 'int', pid, 'uint64_t', BigInt(addr), 'uint64_t', BigInt(data)) as number;
  if (r === -1) {
    const e = koffi.errno();
    if (e !== 0) throw new SysError(`ptrace(${req})`, e);
  }
  return r;
}

/** ptrace whose data is a buffer (GETREGS/SETREGS). */
export function ptraceBuffer(req: number, pid: number, buf: Buffer): void {
  koffi.errno(0);
  const r = ptrace_(req, 'int', pid, 'uint64_t', 0n, 'void *', buf) as number;
  if (r === -1) throw new SysError(`ptrace(${req})`, koffi.errno());
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

/** True when the file has a security.capability attribute (file capabilities). */
export function hasFileCapabilities(path: string): boolean {
  const r = getxattr_(path, 'security.capability', null, 0) as number;
  return r > 0;
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

export function setRegs(pid: number, regs: Regs): void {
  const buf = Buffer.alloc(REGS_BYTES);
  REG_NAMES.forEach((n, i) => buf.writeBigUInt64LE(BigInt.asUintN(64, regs[n]), i * 8));
  ptraceBuffer(PTRACE_SETREGS, pid, buf);
}
