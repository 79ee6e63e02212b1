/**
 * Runs a program under ptrace from exec to its ELF entry point and records
 * what the dynamic loader asked the kernel for on the way.
 *
 * The child is the native launcher in its helper mode
 * (`--internal-traceme [--parent=PID] [--no-aslr] [--one-cpu] [--fake-tsc] PATH ARGV...`:
 * PTRACE_TRACEME, SIGSTOP, execve), spawned with posix_spawn from Node's main
 * thread, which thereby is its tracer. PTRACE_O_TRACEEXEC reports the exec as
 * an event stop; there the breakpoint at AT_ENTRY (and the vdso guards,
 * vdso.ts) are planted, and PTRACE_SYSCALL stops at every syscall entry and
 * exit until the entry breakpoint fires. Every syscall passes the policy in
 * syscalls.ts. Registers, breakpoints and the counter are the machine's
 * (regs.ts: int3 on x86_64, brk #0 on aarch64).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as L from '../sys/libc.js';
import { SnapshotRefusal } from './refusal.js';
import type { ImageLimit } from '../image/format.js';
import { ARCH_SET_FS, NR, RSEQ_FLAG_UNREGISTER, checkSyscall, syscallName, type PathUse } from './syscalls.js';
import { guardedVdsoFunctions } from './vdso.js';
import { EnvironmentTrap } from './envtrap.js';
import { LIBC_LOOKUPS, LookupTracer, type EnvLookup } from './lookups.js';
import { readCString, readMem, writeBytes } from './mem.js';
import { ACCESS_MODE_ARG, IdentityUse } from './access.js';
import { answerVdsoClock, type ClockBase, type ClockRead } from './vdso-clock.js';
import { ABSENT, type RegFile } from './regs.js';
import { ARCH } from './tracer-arch.js';

export { readCString, readMem };

export const AT = {
  NULL: 0n, PHDR: 3n, PHNUM: 5n, PAGESZ: 6n, BASE: 7n, ENTRY: 9n, PLATFORM: 15n, RANDOM: 25n,
  BASE_PLATFORM: 24n, EXECFN: 31n, SYSINFO_EHDR: 33n, SECURE: 23n,
} as const;

export interface PathEvent {
  path: string;
  /** syscall result: >= 0 success, else -errno */
  result: number;
  kind: 'open' | 'probe';
  /** access(2) family: the mode asked for (R_OK 4, W_OK 2, X_OK 1); absent or 0 = existence only. */
  accessMode?: number;
  /** Successful opens: the file the descriptor refers to, stat'ed while the tracee held it open. */
  opened?: fs.BigIntStats;
}

export interface LoaderState {
  tidAddress?: bigint;
  robust?: { head: bigint; len: bigint };
  rseq?: { area: bigint; len: number; sig: number };
  fsBase?: bigint;
  brk?: bigint;
  /**
   * Resource limits read (prlimit64 without a new limit): glibc sizes its
   * default thread stack from RLIMIT_STACK. The image keeps what it computed;
   * no image field lets a restore compare yet, so they are reported.
   */
  limitsRead: { resource: number; cur: bigint; max: bigint; afterEntry: boolean }[];
}

export interface StoppedAtEntry {
  pid: number;
  mem: number; // fd of /proc/PID/mem
  auxv: Map<bigint, bigint>;
  auxvBytes: Buffer;
  regs: RegFile;
  /** The thread pointer at the entry stop (x86_64 fs_base, aarch64 tpidr_el0). */
  threadPointer: bigint;
  paths: PathEvent[];
  loader: LoaderState;
  /** Syscalls made between exec and the entry point. */
  syscallCount: number;
  syscallsByNr: Map<number, number>;
  /** Identity syscalls made before the entry point (access.ts): the image is IDENTITY_BOUND. */
  identityAsked: string[];
  /** Differential runs: where each trapped counter read (rdtsc, mrs cntvct_el0) was executed. */
  rdtscAt: bigint[];
  /** Differential runs: what each getrandom call returned, in order. */
  randomOutputs: Buffer[];
  /** Differential runs: the environment trap's mapping, to leave out of every comparison. */
  envTrap?: { start: bigint; end: bigint };
  /** With traceLookups: every getenv/secure_getenv call before the entry point, in order. */
  envLookups?: EnvLookup[];
  /** With a clock: every vdso clock read the tracer answered, in order (vdso-clock.ts). */
  clockReads: ClockRead[];
}

export interface TraceOptions {
  launcher: string;
  /** Resource limits the program starts with (SnapshotOptions.limits). */
  limits?: readonly ImageLimit[];
  exePath: string;
  argv: string[];
  envp: string[];
  noAslr: boolean;
  /** Overwrite AT_RANDOM's 16 bytes at the exec stop (differential runs). */
  atRandom?: Buffer;
  /**
   * Differential runs: rdtsc traps and reads a deterministic counter, so the
   * loader's timing variables are equal in both runs, and getrandom returns
   * bytes of a stream named by randomStream (recorded in randomOutputs): run B
   * gets other bytes than A, so state derived from them shows as a difference
   * while verbatim copies (malloc's tcache key) can be recognised.
   */
  deterministic?: boolean;
  randomStream?: string;
  /** Differential runs: make any read of the environment after the loader's own fault (envtrap.ts). */
  trapEnvironment?: boolean;
  /**
   * The loader is the C library (libc-loader.ts): it has read its own
   * variables once it has set the tid address, so the trap is armed at the
   * first syscall after that, if no path syscall came first.
   */
  loaderIsLibc?: boolean;
  /**
   * Trace getenv/secure_getenv (lookups.ts): each call names its variable and
   * runs with the trap lifted, so only reads that bypass them fault.
   */
  traceLookups?: boolean;
  /**
   * Answer vdso clock reads from this clock (vdso-clock.ts) instead of
   * refusing them; what a constructor kept of them is then found by the
   * differential runs, which get clocks far apart.
   */
  clock?: ClockBase;
  deadline: number;
}

export function readAuxv(pid: number): { map: Map<bigint, bigint>; bytes: Buffer } {
  const bytes = fs.readFileSync(`/proc/${pid}/auxv`);
  const map = new Map<bigint, bigint>();
  for (let i = 0; i + 16 <= bytes.length; i += 16) {
    const t = bytes.readBigUInt64LE(i);
    if (t === 0n) return { map, bytes: bytes.subarray(0, i + 16) };
    map.set(t, bytes.readBigUInt64LE(i + 8));
  }
  return { map, bytes };
}

/** Kills and reaps a tracee; never throws. */
export function killTracee(pid: number, memFd?: number): void {
  try {
    if (memFd !== undefined) fs.closeSync(memFd);
  } catch {
    /* already closed */
  }
  try {
    L.kill(pid, L.SIGKILL);
    for (;;) {
      const st = L.waitpid(pid);
      if (!st || st.exited || st.signaled) break;
    }
  } catch {
    /* already reaped */
  }
}

const SIGSEGV = 11;
const PROT_EXEC = 4n;
/** The n bytes of getrandom call number `call` in a named deterministic stream. */
export function streamRandom(stream: string, call: number, n: number): Buffer {
  const parts: Buffer[] = [];
  for (let block = 0; parts.length * 32 < n; block++) {
    parts.push(createHash('sha256').update(`${stream}/${call}/${block}`).digest());
  }
  return Buffer.concat(parts).subarray(0, n);
}

function waitStop(pid: number, deadline: number): L.WaitStatus {
  const st = L.waitpidUntil(pid, deadline);
  if (!st) throw new SnapshotRefusal('timeout', 'did not reach the entry point in time');
  if (st.exited) throw new SnapshotRefusal('exited-before-entry', `exited with ${st.exitCode} before its entry point`);
  if (st.signaled) throw new SnapshotRefusal('exited-before-entry', `killed by signal ${st.termSig} before its entry point`);
  return st;
}

export function writeByte(mem: number, addr: bigint, byte: number): void {
  writeBytes(mem, addr, Buffer.from([byte]));
}

export { writeBytes };

/** The [vdso] mapping's bytes: its ELF image, whose symbols name the functions to guard. */
export function vdsoImage(pid: number, mem: number, base: bigint): Buffer {
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) .*\[vdso\]$/.exec(line);
    if (m && BigInt(`0x${m[1]}`) === base) return readMem(mem, base, Number(BigInt(`0x${m[2]}`) - base));
  }
  throw new SnapshotRefusal('internal', 'AT_SYSINFO_EHDR is not the [vdso] mapping');
}

/**
 * Where a post-init image's mappings go, counted down from the top of the
 * address space. An ASLR-off process maps its libraries just below the
 * kernel's minimum gap under the stack (128 MiB), which is inside the 16 GiB
 * (x86_64) where a restoring process's own random stack lies, so about one
 * numpy restore in 150 found the launcher's stack in the image's way and ran
 * cold. The kernel places the mmap area max(RLIMIT_STACK, 128 MiB) below the
 * stack: with the limit raised to this for the exec alone, the image's
 * mappings sit below every random stack and below the random mmap base where
 * the restoring process's vdso lies (1 TiB of vm.mmap_rnd_bits=28 under the
 * stack's 16 GiB). The image's own stack stays at the top.
 */
const FAR_MMAP_GAP = 2n << 40n;

/**
 * Raises the helper's RLIMIT_STACK before its exec so the kernel puts its
 * mmap area FAR_MMAP_GAP below the stack; undo() puts the limit back at the
 * exec event, before the program's first instruction (glibc reads the limit
 * for its thread stacks, and the image keeps what it computed). An unlimited
 * stack (the legacy bottom-up layout, already far from the top) and a hard
 * limit below the gap leave the limit as it was: the image is then placed as
 * before, which costs restores, never correctness.
 */
function farMmapArea(pid: number): { undo(): void } {
  const none = { undo(): void {} };
  let before: L.ResourceLimit;
  try {
    before = L.prlimit(pid, L.RLIMIT_STACK);
  } catch {
    return none;
  }
  if (before.soft === L.RLIM_INFINITY || before.soft >= FAR_MMAP_GAP || before.hard < FAR_MMAP_GAP) return none;
  try {
    L.prlimit(pid, L.RLIMIT_STACK, { soft: FAR_MMAP_GAP, hard: before.hard });
  } catch {
    return none;
  }
  return {
    undo(): void {
      try {
        L.prlimit(pid, L.RLIMIT_STACK, before);
      } catch (e) {
        throw new SnapshotRefusal('internal', `cannot put RLIMIT_STACK back after the exec: ${(e as Error).message}`);
      }
    },
  };
}

/**
 * The run that queued the image had these limits: the program starts with
 * them, so the limits it reads (and the image records) are that run's. One
 * that cannot be set (above the hard limit for a user) stays the warmer's;
 * the image then records that, and the run it was taken for stays cold.
 */
function startWithLimits(pid: number, limits: readonly ImageLimit[]): void {
  for (const l of limits) {
    try {
      L.prlimit(pid, l.resource, { soft: l.soft, hard: l.hard });
    } catch { /* see above */ }
  }
}

/**
 * From the helper's SIGSTOP (--internal-traceme) to the exec event of the
 * program, with the tracer's options set; the exec must have run exePath.
 * farMmap: the program's mmap area goes FAR_MMAP_GAP below its stack (post-init).
 */
export function followToExec(pid: number, exePath: string, wait: () => L.WaitStatus, farMmap = false,
  limits: readonly ImageLimit[] = []): void {
  let st = wait();
  if (st.stopSig !== L.SIGSTOP) throw new SnapshotRefusal('internal', `helper stopped with signal ${st.stopSig}, not SIGSTOP`);
  L.ptrace(L.PTRACE_SETOPTIONS, pid, 0, L.PTRACE_O_TRACESYSGOOD | L.PTRACE_O_EXITKILL | L.PTRACE_O_TRACEEXEC);
  startWithLimits(pid, limits);
  const limit = farMmap ? farMmapArea(pid) : { undo(): void {} };
  L.ptrace(L.PTRACE_CONT, pid, 0, 0);
  st = wait();
  if (st.stopSig !== L.SIGTRAP || st.event !== L.PTRACE_EVENT_EXEC) {
    throw new SnapshotRefusal('internal', `expected the exec event, got status 0x${st.raw.toString(16)}`);
  }
  limit.undo();
  const exe = fs.statSync(`/proc/${pid}/exe`, { bigint: true });
  const want = fs.statSync(exePath, { bigint: true });
  if (exe.dev !== want.dev || exe.ino !== want.ino) {
    throw new SnapshotRefusal('internal', `the traced process runs another file than ${exePath}`);
  }
}

/** Runs to the entry point. Throws SnapshotRefusal when it cannot be captured; never leaves the tracee alive then. */
export function runToEntry(o: TraceOptions): StoppedAtEntry {
  const argv = [o.launcher, '--internal-traceme', `--parent=${process.pid}`, ...(o.noAslr ? ['--no-aslr', '--one-cpu'] : []),
    ...(o.deterministic ? ['--fake-tsc'] : []), o.exePath, ...o.argv];
  let tsc = 1_000_000_000_000n;
  const pid = L.spawnDetachedStdio(o.launcher, argv, o.envp);
  let mem: number | undefined;
  try {
    followToExec(pid, o.exePath, () => waitStop(pid, o.deadline), false, o.limits);
    let st: L.WaitStatus;
    mem = fs.openSync(`/proc/${pid}/mem`, 'r+');
    const { map: auxv, bytes: auxvBytes } = readAuxv(pid);
    const entry = auxv.get(AT.ENTRY);
    if (!entry) throw new SnapshotRefusal('internal', 'no AT_ENTRY');
    if (auxv.get(AT.SECURE)) throw new SnapshotRefusal('privileged', 'AT_SECURE is set');
    if (o.atRandom) {
      const r = auxv.get(AT.RANDOM);
      if (!r || o.atRandom.length !== 16) throw new SnapshotRefusal('internal', 'no AT_RANDOM to make equal');
      fs.writeSync(mem, o.atRandom, 0, 16, Number(r));
    }
    const vdsoBase = auxv.get(AT.SYSINFO_EHDR);
    if (!vdsoBase) throw new SnapshotRefusal('internal', 'no AT_SYSINFO_EHDR');
    const envTrap = o.trapEnvironment ? EnvironmentTrap.atExec(mem, ARCH.sp(ARCH.getRegs(pid)), o.envp) : undefined;

    const bp = ARCH.breakpoint;
    const entryBytes = readMem(mem, entry, bp.length);
    const guards = new Map<bigint, { name: string; bytes: Buffer }>();
    const vdso = vdsoImage(pid, mem, vdsoBase);
    for (const fn of guardedVdsoFunctions(vdso, vdsoBase)) {
      const at = Number(fn.addr - vdsoBase);
      if (at < 0 || at + bp.length > vdso.length) throw new SnapshotRefusal('internal', `vdso symbol ${fn.name} outside the vdso`);
      guards.set(fn.addr, { name: fn.name, bytes: Buffer.from(vdso.subarray(at, at + bp.length)) });
      writeBytes(mem, fn.addr, bp);
    }
    writeBytes(mem, entry, bp);
    const memFd = mem;
    const lookups = o.traceLookups
      ? new LookupTracer(pid, mem, LIBC_LOOKUPS, { enter: () => envTrap?.disarm(memFd), leave: () => envTrap?.rearm(memFd) })
      : undefined;
    lookups?.scan(); // the program and the loader: a program may define getenv itself

    const paths: PathEvent[] = [];
    const loader: LoaderState = { limitsRead: [] };
    const rdtscAt: bigint[] = [];
    const randomOutputs: Buffer[] = [];
    const clockReads: ClockRead[] = [];
    const identity = new IdentityUse();
    let syscallCount = 0;
    const syscallsByNr = new Map<number, number>();
    let pending: { nr: number; args: bigint[]; path: PathUse | null } | null = null;
    let threadSetUp = false;
    for (;;) {
      L.ptrace(L.PTRACE_SYSCALL, pid, 0, 0);
      st = waitStop(pid, o.deadline);
      if (st.stopSig === (L.SIGTRAP | 0x80)) {
        const info = L.getSyscallInfo(pid);
        if (info.op === L.SYSCALL_INFO_ENTRY) {
          if (envTrap && !envTrap.armed && (PATH_SYSCALLS.has(info.nr) || threadSetUp)) {
            envTrap.arm(pid, mem, o.deadline); // this syscall is entered again next
            continue;
          }
          syscallCount++;
          syscallsByNr.set(info.nr, (syscallsByNr.get(info.nr) ?? 0) + 1);
          pending = { nr: info.nr, args: info.args, path: checkSyscall(info.nr, info.args, (a) => readCString(mem as number, a), pid) };
          identity.note(info.nr, 'a library constructor or the loader');
        } else if (info.op === L.SYSCALL_INFO_EXIT && pending) {
          recordResult(pending.nr, pending.args, info.rval, loader);
          if (o.loaderIsLibc && pending.nr === NR.set_tid_address) threadSetUp = true;
          noteLimitRead(mem, pending.nr, pending.args, info.rval, loader);
          if (pending.path) {
            const ev: PathEvent = { ...pending.path, result: Number(info.rval), ...accessMode(pending.nr, pending.args) };
            if (ev.kind === 'open' && info.rval >= 0n) ev.opened = fs.statSync(`/proc/${pid}/fd/${info.rval}`, { bigint: true });
            paths.push(ev);
          }
          // A library's code is mapped before any of it runs: its getenv gets an int3 now.
          if (lookups && pending.nr === NR.mmap && info.rval > 0n && ((pending.args[2] ?? 0n) & PROT_EXEC) !== 0n) lookups.scan();
          if (pending.nr === NR.getrandom && info.rval > 0n && o.deterministic) {
            const n = Number(info.rval);
            const bytes = streamRandom(o.randomStream ?? 'cx', randomOutputs.length, n);
            if (fs.writeSync(mem, bytes, 0, n, Number(pending.args[0] ?? 0n)) !== n) {
              throw new SnapshotRefusal('internal', 'cannot replace the bytes getrandom returned');
            }
            randomOutputs.push(bytes);
          }
          pending = null;
        }
        continue;
      }
      if (st.event !== 0) throw new SnapshotRefusal('unsupported-syscall', `unexpected ptrace event ${st.event} before the entry point`);
      if (st.stopSig === L.SIGTRAP) {
        if (lookups?.onTrap()) continue;
        const regs = ARCH.getRegs(pid);
        const at = ARCH.breakpointAddress(ARCH.pc(regs));
        const guard = guards.get(at);
        if (guard !== undefined && o.clock) {
          answerVdsoClock(guard.name, regs, mem, o.clock, clockReads);
          ARCH.setRegs(pid, regs);
          continue;
        }
        if (guard !== undefined) {
          throw new SnapshotRefusal('unsupported-syscall', `vdso ${guard.name}() before the entry point: a restore would keep the snapshot's time`);
        }
        if (at !== entry) throw new SnapshotRefusal('unsupported-syscall', `SIGTRAP at 0x${ARCH.pc(regs).toString(16)} before the entry point`);
        if (envTrap && !envTrap.armed) {
          throw new SnapshotRefusal('internal', o.loaderIsLibc
            ? 'the loader made no syscall after set_tid_address: the environment trap was never set'
            : 'the loader made no path syscall: the environment trap was never set');
        }
        lookups?.removeAll();
        writeBytes(mem, entry, entryBytes);
        for (const [addr, g] of guards) writeBytes(mem, addr, g.bytes);
        ARCH.setPc(regs, entry);
        ARCH.setRegs(pid, regs);
        const stopped = ARCH.getRegs(pid);
        if (ARCH.pc(stopped) !== entry || !readMem(mem, entry, bp.length).equals(entryBytes)) {
          throw new SnapshotRefusal('internal', 'could not put the program back at its entry point');
        }
        return { pid, mem, auxv, auxvBytes, regs: stopped, threadPointer: ARCH.threadPointer(pid, stopped), paths, loader,
          syscallCount, syscallsByNr, rdtscAt, randomOutputs,
          identityAsked: identity.asked, clockReads,
          ...(envTrap?.range ? { envTrap: envTrap.range } : {}), ...(lookups ? { envLookups: lookups.lookups } : {}) };
      }
      if (st.stopSig === SIGSEGV && o.deterministic) {
        // A counter read under PR_TSC_SIGSEGV (rdtsc, mrs cntvct_el0): answer with the counter.
        const regs = ARCH.getRegs(pid);
        const pc = ARCH.pc(regs);
        if (ARCH.answerCounterRead(mem, regs, () => (tsc += 1000n))) {
          rdtscAt.push(pc);
          ARCH.setRegs(pid, regs);
          continue;
        }
      }
      if (st.stopSig === SIGSEGV && envTrap) {
        const variable = envTrap.variableAt(L.getSigInfo(pid).addr);
        if (variable !== undefined) {
          const regs = ARCH.getRegs(pid);
          const caller = likelyCaller(pid, mem, ARCH.pc(regs), ARCH.sp(regs));
          throw new SnapshotRefusal('reads-environment', `${describeCode(pid, ARCH.pc(regs))}${caller ? `, called from ${caller},` : ''} read environment variables before the entry point (the first it touched: ${variable})`);
        }
      }
      throw new SnapshotRefusal('unsupported-syscall', `signal ${st.stopSig} at ${describeCode(pid, ARCH.pc(ARCH.getRegs(pid)))} before the entry point`);
    }
  } catch (e) {
    killTracee(pid, mem);
    throw e;
  }
}

/** The mode an access(2)-family call asked for, when it asked for more than existence. */
export function accessMode(nr: number, args: readonly bigint[]): { accessMode?: number } {
  const i = ACCESS_MODE_ARG.get(nr);
  const mode = i === undefined ? 0 : Number((args[i] ?? 0n) & 7n);
  return mode ? { accessMode: mode } : {};
}

/** The syscalls that name a path: the loader makes its first one after reading its own variables. */
const PATH_SYSCALLS = new Set<number>([NR.open, NR.openat, NR.access, NR.faccessat, NR.faccessat2, NR.stat, NR.lstat,
  NR.newfstatat, NR.statx, NR.readlink, NR.readlinkat, NR.statfs].filter((nr) => nr !== ABSENT));

interface CodeMapping { start: bigint; end: bigint; offset: bigint; path: string; exec: boolean }

function codeMappings(pid: number): CodeMapping[] {
  const out: CodeMapping[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (m) {
      out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), offset: BigInt(`0x${m[4]}`), path: m[5] ?? '', exec: (m[3] ?? '')[2] === 'x' });
    }
  }
  return out;
}

/** "file+offset" for a code address, from the tracee's maps. */
export function describeCode(pid: number, rip: bigint): string {
  const m = codeMappings(pid).find((x) => rip >= x.start && rip < x.end);
  return m ? `${m.path || 'anonymous'}+0x${(rip - m.start + m.offset).toString(16)}` : `0x${rip.toString(16)}`;
}

/**
 * For a refusal's detail only: the first word on the stack that points into
 * executable code of another file than the faulting code's (getenv's caller,
 * usually). A heuristic; nothing depends on it being right.
 */
function likelyCaller(pid: number, mem: number, rip: bigint, rsp: bigint): string | undefined {
  const maps = codeMappings(pid);
  const here = maps.find((x) => rip >= x.start && rip < x.end);
  let words: Buffer;
  try {
    words = readMem(mem, rsp, 512);
  } catch {
    return undefined;
  }
  for (let off = 0; off < words.length; off += 8) {
    const v = words.readBigUInt64LE(off);
    const m = maps.find((x) => x.exec && v >= x.start && v < x.end);
    if (m && m.path.startsWith('/') && m.path !== here?.path) return `${m.path}+0x${(v - m.start + m.offset).toString(16)}`;
  }
  return undefined;
}

/** What a finished syscall did to the per-thread state the restorer must redo. */
export function recordResult(nr: number, args: bigint[], rval: bigint, loader: LoaderState): void {
  const a = (i: number): bigint => args[i] ?? 0n;
  switch (nr) {
    case NR.set_tid_address:
      loader.tidAddress = a(0);
      break;
    case NR.set_robust_list:
      if (rval === 0n) loader.robust = { head: a(0), len: a(1) };
      break;
    case NR.rseq:
      if (rval !== 0n) break;
      if ((a(2) & BigInt(RSEQ_FLAG_UNREGISTER)) !== 0n) delete loader.rseq;
      else loader.rseq = { area: a(0), len: Number(a(1) & 0xffffffffn), sig: Number(a(3) & 0xffffffffn) };
      break;
    case NR.arch_prctl:
      if (a(0) === BigInt(ARCH_SET_FS) && rval === 0n) loader.fsBase = a(1);
      break;
    case NR.brk:
      loader.brk = BigInt.asUintN(64, rval);
      break;
  }
}

/** A resource limit read (prlimit64 of this process with an old-value buffer): LoaderState.limitsRead. */
export function noteLimitRead(mem: number, nr: number, args: bigint[], rval: bigint, loader: LoaderState, afterEntry = false): void {
  if (nr !== NR.prlimit64 || rval !== 0n || !args[3] || (args[0] ?? 0n) !== 0n) return;
  const old = readMem(mem, args[3], 16);
  loader.limitsRead.push({ resource: Number(args[1] ?? 0n), cur: old.readBigUInt64LE(0), max: old.readBigUInt64LE(8), afterEntry });
}

export { syscallName };
