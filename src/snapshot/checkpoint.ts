/**
 * Runs a program under ptrace through its initialisation to the checkpoint:
 * the entry of read(RESUME_FD, ...) (docs/resume-protocol.md).
 *
 * Unlike the entry-point trace (trace.ts), the program runs its own code here:
 * rc files, imports, children. The tracer makes the run reproducible so two
 * runs can be compared word by word (postinit.ts):
 *  - ASLR off, one CPU, the same AT_RANDOM, rdtsc answered by a counter;
 *  - every clock read (syscall or vdso) answered from a deterministic clock
 *    that starts at `clock` and advances 1 µs per read;
 *  - getrandom answered from a named stream;
 *  - getpid, getppid, getpgrp/getpgid, getsid answered with sentinels, so the
 *    words that keep them can be found and patched at restore.
 * What a restore cannot recreate is refused on the way (checkInitSyscall) or
 * at the checkpoint (postinit.ts): exec, identity or working-directory
 * changes, timers, limits, alternate signal stacks, reading stdin, writing
 * stdout or stderr (a restore would not repeat the output).
 */
import * as fs from 'node:fs';
import type { ImageLimit } from '../image/format.js';
import * as path from 'node:path';
import * as L from '../sys/libc.js';
import { SnapshotRefusal } from './refusal.js';
import { NR } from './syscalls.js';
import { ABSENT, type RegFile } from './regs.js';
import { ARCH } from './tracer-arch.js';
import { guardedVdsoFunctions } from './vdso.js';
import { TracedChildren } from './children.js';
import { readCString, readMem, writeBytes } from './mem.js';
import { EffectJournal, type Effect, type PendingEffect } from './effects.js';
import { IdentityUse } from './access.js';
import { LookupTracer, announcement, type EnvLookup, type LookupFunction } from './lookups.js';
import {
  AT, accessMode, describeCode, followToExec, killTracee, noteLimitRead, readAuxv, recordResult, streamRandom, vdsoImage,
  type LoaderState, type PathEvent,
} from './trace.js';

export interface Identity {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
}

export interface CheckpointOptions {
  launcher: string;
  /** Resource limits the program starts with (SnapshotOptions.limits). */
  limits?: readonly ImageLimit[];
  exePath: string;
  argv: string[];
  envp: string[];
  resumeFd: number;
  identity: Identity;
  /** Start of the deterministic clocks (ns). */
  clock: { realtime: bigint; monotonic: bigint };
  randomStream: string;
  /** Overwrite AT_RANDOM with these 16 bytes at the exec stop (run B gets run A's). */
  atRandom?: Buffer;
  /** umask the child starts with (the differential tells an init that set it from one that kept it). */
  umask: number;
  /** A file holding the test context, opened read-only as the resume fd. */
  contextFile: string;
  /** An empty file that gets fds 1 and 2: whatever the init or its children print lands there. */
  outputFile: string;
  deadline: number;
  /** Trace these lookup functions until the checkpoint (lookups.ts): the variables the init reads. */
  lookups?: readonly LookupFunction[];
}

export interface KernelSigaction {
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

export interface StoppedAtCheckpoint {
  pid: number;
  mem: number;
  auxv: Map<bigint, bigint>;
  /** The registers as the program has them (regs.ts programRegsAtSyscallEntry), pc after the syscall instruction. */
  regs: RegFile;
  /** fs_base (x86_64), tpidr_el0 (aarch64). */
  threadPointer: bigint;
  /** The floating-point and vector state (regs.ts fpState): the XSAVE area (x86_64), NT_PRFPREG (aarch64). */
  xstate: Buffer;
  /** SVE vector length in bytes (0: none). */
  vectorLength: number;
  paths: PathEvent[];
  /** Directories the init listed (getdents64): their entries are a dependency. */
  listedDirs: string[];
  /** What the init and its children did outside their memory (effects.ts), in order. */
  effects: Effect[];
  /** Whether the init or a child created or removed `path` (its own files are no dependencies). */
  madeByInit: (path: string) => boolean;
  /** Identity syscalls the init or its children made (access.ts). */
  identityAsked: string[];
  loader: LoaderState;
  /** Dispositions set by rt_sigaction during the run, by signal. */
  sigactions: Map<number, KernelSigaction>;
  syscallCount: number;
  forks: number;
  /** AT_RANDOM's bytes (for run B). */
  random: Buffer;
  /** Lets the checkpoint read return the test context and runs on to close(resume fd). */
  resumeUntilClose: () => void;
  /** The init's children: the files they read; killAll() when done with the tracee. */
  children: TracedChildren;
  /** With o.lookups: what the program looked up or announced until the checkpoint, in order. */
  envLookups: EnvLookup[];
}

const O_ACCMODE = 3;
const O_CREAT = 0o100;
const AT_FDCWD = -100;
const SIGSEGV = 11;
const SIGCHLD = 17;
/** ioctl requests that only ask: TCGETS, TIOCGPGRP, TIOCGWINSZ, FIONREAD, TIOCGSID. */
const IOCTL_QUERIES = new Set([0x5401, 0x540f, 0x5413, 0x541b, 0x5429]);
/** prctl options that only read, and PR_SET_NAME (the restore sets the name from the image). */
const PRCTL_ALLOWED = new Set([2, 3, 7, 15, 16, 21, 23, 27, 39, 42]);
const PERSONALITY_QUERY = 0xffffffffn;

/**
 * The calls this module judges, by name: the machine's numbers (regs.ts).
 * aarch64 has no alarm, dup2, fork or vfork (only dup3 and clone): ABSENT
 * there, a number no stop reports.
 */
const S = NR;

const refuse = (code: 'unsupported-syscall' | 'children' | 'open-fds', why: string): never => {
  throw new SnapshotRefusal(code, why);
};

/** Clock ids that follow CLOCK_REALTIME (REALTIME, REALTIME_COARSE, TAI, REALTIME_ALARM); CPU clocks start at 0. */
const REALTIME_CLOCKS = new Set([0n, 5n, 8n, 11n]);
const MONOTONIC_CLOCKS = new Set([1n, 4n, 6n, 7n, 9n]);

class FakeClock {
  private reads = 0n;
  constructor(private readonly base: { realtime: bigint; monotonic: bigint }) {}
  /** ns for a clock id; every read moves all clocks 1 µs on. */
  now(clock: bigint): bigint {
    this.reads++;
    const step = this.reads * 1000n;
    if (REALTIME_CLOCKS.has(clock)) return this.base.realtime + step;
    if (MONOTONIC_CLOCKS.has(clock)) return this.base.monotonic + step;
    return step; // process and thread CPU clocks
  }
}

function writeWords(mem: number, addr: bigint, words: bigint[]): void {
  const b = Buffer.alloc(words.length * 8);
  words.forEach((w, i) => b.writeBigInt64LE(w, i * 8));
  if (fs.writeSync(mem, b, 0, b.length, Number(addr)) !== b.length) {
    throw new SnapshotRefusal('internal', `cannot write tracee memory at 0x${addr.toString(16)}`);
  }
}

/** Seconds and the sub-second part in units of `unit` ns. */
const split = (ns: bigint, unit: bigint): bigint[] => [ns / 1_000_000_000n, (ns % 1_000_000_000n) / unit];

interface PendingSyscall {
  nr: number;
  args: bigint[];
  path?: { path: string; open: boolean; write: boolean };
  dirFd?: string;
  /** clone/clone3 of a thread. */
  thread?: boolean;
  effect?: PendingEffect | undefined;
}

/** Runs to the checkpoint; the tracee is left stopped there (kill it with killTracee). */
export function runToCheckpoint(o: CheckpointOptions): StoppedAtCheckpoint {
  const argv = [o.launcher, '--internal-traceme', `--parent=${process.pid}`, '--no-aslr', '--one-cpu', '--fake-tsc', o.exePath, ...o.argv];
  const oldMask = process.umask(o.umask);
  let pid: number;
  try {
    pid = L.spawnDetachedStdio(o.launcher, argv, o.envp, { readOnlyFds: [{ fd: o.resumeFd, path: o.contextFile }], cwd: '/', outputPath: o.outputFile });
  } finally {
    process.umask(oldMask);
  }
  let mem: number | undefined;
  const effects = new EffectJournal();
  const identity = new IdentityUse();
  const children = new TracedChildren(effects, identity);
  try {
    return trace(pid, o, (m) => (mem = m), children, effects, identity);
  } catch (e) {
    killTracee(pid, mem);
    children.killAll();
    throw e;
  }
}

function waitStop(pid: number, deadline: number): L.WaitStatus {
  const st = L.waitpidUntil(pid, deadline);
  if (!st) throw new SnapshotRefusal('timeout', 'did not reach the checkpoint in time');
  if (st.exited) throw new SnapshotRefusal('exited-before-entry', `exited with ${st.exitCode} before the checkpoint`);
  if (st.signaled) throw new SnapshotRefusal('exited-before-entry', `killed by signal ${st.termSig} before the checkpoint`);
  return st;
}

function trace(pid: number, o: CheckpointOptions, setMem: (fd: number) => void, children: TracedChildren, effects: EffectJournal,
  identity: IdentityUse): StoppedAtCheckpoint {
  followToExec(pid, o.exePath, () => waitStop(pid, o.deadline), true, o.limits);
  // Children too, for the files they read (children.ts): the main tracee's stops come back from waitMain.
  L.ptrace(L.PTRACE_SETOPTIONS, pid, 0, L.PTRACE_O_TRACESYSGOOD | L.PTRACE_O_EXITKILL | L.PTRACE_O_TRACEEXEC |
    L.PTRACE_O_TRACEFORK | L.PTRACE_O_TRACEVFORK);
  const waitMain = (): L.WaitStatus => {
    for (;;) {
      const s = L.waitpidUntil(-1, o.deadline);
      if (!s) throw new SnapshotRefusal('timeout', 'did not reach the checkpoint in time');
      if (s.pid !== pid) {
        children.handle(s);
        continue;
      }
      if (s.exited) throw new SnapshotRefusal('exited-before-entry', `exited with ${s.exitCode} before the checkpoint`);
      if (s.signaled) throw new SnapshotRefusal('exited-before-entry', `killed by signal ${s.termSig} before the checkpoint`);
      return s;
    }
  };
  let st: L.WaitStatus;
  const mem = fs.openSync(`/proc/${pid}/mem`, 'r+');
  setMem(mem);
  const { map: auxv } = readAuxv(pid);
  if (auxv.get(AT.SECURE)) throw new SnapshotRefusal('privileged', 'AT_SECURE is set');
  const randomAt = auxv.get(AT.RANDOM);
  if (!randomAt) throw new SnapshotRefusal('internal', 'no AT_RANDOM');
  if (o.atRandom) fs.writeSync(mem, o.atRandom, 0, 16, Number(randomAt));
  const random = readMem(mem, randomAt, 16);
  const vdsoBase = auxv.get(AT.SYSINFO_EHDR);
  if (!vdsoBase) throw new SnapshotRefusal('internal', 'no AT_SYSINFO_EHDR');
  const bp = ARCH.breakpoint;
  const guards = new Map<bigint, { name: string; bytes: Buffer }>();
  const vdso = vdsoImage(pid, mem, vdsoBase);
  for (const fn of guardedVdsoFunctions(vdso, vdsoBase)) {
    const off = Number(fn.addr - vdsoBase);
    guards.set(fn.addr, { name: fn.name, bytes: Buffer.from(vdso.subarray(off, off + bp.length)) });
  }
  /*
   * The guards are the tracee's private copy of the vdso page: a child forked
   * with them would die on its first clock read (it is not traced). They are
   * taken out around fork and clone, and stay out once a thread exists (that
   * is refused at the checkpoint, with a better reason than a SIGTRAP).
   */
  const setGuards = (on: boolean): void => {
    for (const [addr, g] of guards) writeBytes(mem, addr, on ? bp : g.bytes);
  };
  setGuards(true);
  /*
   * rdtsc faults until the entry point (the loader's timing variables must be
   * equal in both runs), then works again: the setting survives fork and
   * exec, and the init's children are not traced, so they would die on the
   * first rdtsc of their own loader. Switched off by turning the first
   * syscall after the entry point into prctl(PR_SET_TSC, PR_TSC_ENABLE) and
   * issuing the original one after it.
   */
  const entry = auxv.get(AT.ENTRY);
  if (!entry) throw new SnapshotRefusal('internal', 'no AT_ENTRY');
  const entryBytes = readMem(mem, entry, bp.length);
  writeBytes(mem, entry, bp);
  // The program's own lookup functions now, a library's when it is mapped (before any of it runs).
  const lookups = o.lookups ? new LookupTracer(pid, mem, o.lookups) : undefined;
  lookups?.scan();
  const announced: EnvLookup[] = [];
  let tscAtNextSyscall = false;
  let threaded = false;
  let hijacked: RegFile | undefined;

  const clock = new FakeClock(o.clock);
  const ids = o.identity;
  const sentinels = new Set([ids.pid, ids.ppid, ids.pgid, ids.sid]);
  const sentinelText = [...sentinels].map(String);
  const paths: PathEvent[] = [];
  const listedDirs = new Set<string>();
  const loader: LoaderState = { limitsRead: [] };
  const sigactions = new Map<number, KernelSigaction>();
  let syscallCount = 0;
  let randomCalls = 0;
  let forks = 0;
  let pending: PendingSyscall | null = null;
  let inject = 0;
  /*
   * Children get fake ids too, the same in every run: a shell keeps the pid of
   * its last command substitution, which would otherwise differ between the
   * two runs. The fakes are above PID_MAX_LIMIT, so no live process ever has
   * one: a restored shell that signals a child of the init gets ESRCH, as a
   * cold one would once the child is gone.
   */
  /**
   * Which of the caller's stdin/stdout/stderr each descriptor is (0-2), for
   * the ones that are: a shell's temporary redirection moves them around and
   * back. At the checkpoint 0-2 must be themselves again.
   */
  const stdioOrigin = new Map<number, number>([[0, 0], [1, 1], [2, 2]]);
  const fakeOfChild = new Map<number, number>();
  const childOfFake = new Map<number, number>();
  const fakeChild = (real: number): number => {
    let f = fakeOfChild.get(real);
    if (f === undefined) {
      f = FAKE_CHILD_BASE + fakeOfChild.size;
      fakeOfChild.set(real, f);
      childOfFake.set(f, real);
    }
    return f;
  };
  const str = (a: bigint): string => readCString(mem, a);
  const fdPath = (fd: number): string => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '';
    }
  };
  /** A path argument, absolute; relative to the working directory is refused (a restore runs in the caller's). */
  const pathArg = (dirfd: bigint, p: bigint, nr: number): string => {
    const s = str(p);
    if (sentinelText.some((t) => s.includes(t))) refuse('unsupported-syscall', `the init used its own process id in a path (${s})`);
    if (s.startsWith('/') || s === '') return s;
    if (BigInt.asIntN(32, dirfd) === BigInt(AT_FDCWD)) {
      // Shells compare $PWD with "." at start-up; the adapter sets PWD after the restore.
      if (s === '.' && nr !== NR.open && nr !== NR.openat) return '';
      refuse('unsupported-syscall', `the init used a path relative to the working directory (${nameOf(nr)} "${s}"): a restore runs in the caller's`);
    }
    return path.join(fdPath(Number(dirfd)), s);
  };

  let phase: 'init' | 'resume' = 'init';
  /** The program reached its entry point: a limit read from here on is the program's (limits.ts), not the loader's. */
  let pastEntry = false;
  let stopped: StoppedAtCheckpoint | undefined;
  const advance = (): void => {
  for (;;) {
    L.ptrace(L.PTRACE_SYSCALL, pid, 0, inject);
    inject = 0;
    st = waitMain();
    if (st.stopSig === (L.SIGTRAP | 0x80)) {
      const info = L.getSyscallInfo(pid);
      if (info.op === L.SYSCALL_INFO_ENTRY && tscAtNextSyscall) {
        tscAtNextSyscall = false;
        hijacked = ARCH.getRegs(pid);
        ARCH.replaceSyscall(pid, hijacked, NR.prctl, [PR_SET_TSC, PR_TSC_ENABLE]);
        continue;
      }
      if (info.op === L.SYSCALL_INFO_EXIT && hijacked) {
        // EINVAL: a kernel that cannot trap the counter (arm64 before 6.12), so the trap was never on.
        if (info.rval !== 0n && info.rval !== -22n) throw new SnapshotRefusal('internal', `prctl(PR_SET_TSC) failed in the tracee (${info.rval})`);
        // Back to the syscall instruction with the original registers: it runs again, for real.
        ARCH.reenterSyscall(pid, hijacked);
        hijacked = undefined;
        continue;
      }
      if (info.op === L.SYSCALL_INFO_ENTRY) {
        const a = info.args;
        const arg = (i: number): bigint => a[i] ?? 0n;
        if (phase === 'init' && info.nr === NR.read && Number(arg(0)) === o.resumeFd) {
          const atStop = ARCH.getRegs(pid);
          const insn = ARCH.syscallInsn;
          if (!readMem(mem, ARCH.pc(atStop) - BigInt(insn.length), insn.length).equals(insn)) {
            throw new SnapshotRefusal('internal', 'the checkpoint read was not made by a syscall instruction');
          }
          const regs = ARCH.programRegsAtSyscallEntry(pid, mem, atStop, waitMain);
          const xstate = ARCH.fpState(pid);
          const vectorLength = ARCH.vectorLength(pid);
          for (const k of [0, 1, 2]) {
            if (stdioOrigin.get(k) !== k) refuse('unsupported-syscall', `the init left fd ${k} redirected: a restore uses the caller's`);
          }
          effects.active = false;
          // The int3s go before anything is captured (the code pages are the files' again).
          lookups?.removeAll();
          stopped = {
            pid, mem, auxv, regs, threadPointer: ARCH.threadPointer(pid, regs), xstate, vectorLength, paths: [...paths], listedDirs: [...listedDirs], effects: effects.effects(),
            madeByInit: (p) => effects.madeByInit(p),
            identityAsked: [...identity.asked], loader: { ...loader },
            sigactions: new Map(sigactions), syscallCount, forks, random, resumeUntilClose, children,
            envLookups: [...(lookups?.lookups ?? []), ...announced],
          };
          return;
        }
        if (phase === 'resume' && info.nr === NR.close && Number(arg(0)) === o.resumeFd) return;
        syscallCount++;
        for (let i = 0; i < 6; i++) {
          const v = Number(arg(i) & 0xffffffffn);
          if (sentinels.has(v) && IDENTITY_ARG_SYSCALLS.has(info.nr)) {
            refuse('unsupported-syscall', `the init used its own process id in ${nameOf(info.nr)}(): a restore has another`);
          }
        }
        const argIndex = PID_ARG.get(info.nr);
        if (argIndex !== undefined) {
          const v = Number(BigInt.asIntN(32, arg(argIndex)));
          const real = childOfFake.get(Math.abs(v));
          if (real !== undefined) {
            const regs = ARCH.getRegs(pid);
            ARCH.setSyscallArg(regs, argIndex, BigInt(v < 0 ? -real : real));
            ARCH.setRegs(pid, regs);
          }
        }
        // After the checkpoint (the test context's resume) only the fakes matter: that run is thrown away.
        pending = phase === 'resume' ? { nr: info.nr, args: a } : {
          nr: info.nr, args: a,
          ...checkInitSyscall(info.nr, a, pathArg, (p, n) => readMem(mem, p, n).toString('latin1'), (fd) => stdioOrigin.get(fd) ?? -1),
        };
        if (phase === 'init') {
          identity.note(info.nr, 'the init');
          pending.effect = effects.entry(info.nr, a, {
            tid: pid, who: 'the init', str, bytes: (p, n) => readMem(mem, p, n), ownProcess: (id) => childOfFake.has(id),
          });
        }
        if (info.nr === NR.getdents64) pending.dirFd = fdPath(Number(arg(0)));
        if (info.nr === S.clone || info.nr === S.clone3) pending.thread = isThreadClone(info.nr, a, mem);
        if (FORKS.has(info.nr) && !threaded) {
          setGuards(false);
          if (phase === 'init') lookups?.suspend();
          if (pending.thread) threaded = true;
        }
      } else if (info.op === L.SYSCALL_INFO_EXIT && pending) {
        const p = pending;
        pending = null;
        const arg = (i: number): bigint => p.args[i] ?? 0n;
        const rval = info.rval;
        recordResult(p.nr, p.args, rval, loader);
        noteLimitRead(mem, p.nr, p.args, rval, loader, pastEntry);
        if (p.effect) effects.exit(p.effect, rval);
        const answer = (v: bigint): void => {
          const regs = ARCH.getRegs(pid);
          ARCH.setResult(regs, v);
          ARCH.setRegs(pid, regs);
        };
        trackDescriptors(p.nr, p.args, rval, stdioOrigin);
        switch (p.nr) {
          case NR.getpid: answer(BigInt(ids.pid)); break;
          case NR.getppid: answer(BigInt(ids.ppid)); break;
          case NR.getpgrp: answer(BigInt(ids.pgid)); break;
          case S.getpgid: if (arg(0) === 0n && rval >= 0n) answer(BigInt(ids.pgid)); break;
          case S.getsid: if (arg(0) === 0n && rval >= 0n) answer(BigInt(ids.sid)); break;
          case NR.clock_gettime:
            if (rval === 0n && arg(1)) writeWords(mem, arg(1), split(clock.now(arg(0)), 1n));
            break;
          case NR.gettimeofday:
            if (rval === 0n && arg(0)) writeWords(mem, arg(0), split(clock.now(0n), 1000n));
            break;
          case NR.time: {
            const sec = clock.now(0n) / 1_000_000_000n;
            if (arg(0)) writeWords(mem, arg(0), [sec]);
            answer(sec);
            break;
          }
          case NR.getrandom:
            if (rval > 0n) {
              const n = Number(rval);
              const bytes = streamRandom(o.randomStream, randomCalls++, n);
              if (fs.writeSync(mem, bytes, 0, n, Number(arg(0))) !== n) throw new SnapshotRefusal('internal', 'cannot replace getrandom bytes');
            }
            break;
          case NR.rt_sigaction:
            if (rval === 0n && arg(1)) {
              const b = readMem(mem, arg(1), 32);
              sigactions.set(Number(arg(0)), {
                handler: b.readBigUInt64LE(0), flags: b.readBigUInt64LE(8), restorer: b.readBigUInt64LE(16), mask: b.readBigUInt64LE(24),
              });
            }
            break;
          case S.fork: case S.vfork: case S.clone: case S.clone3:
            if (!threaded) setGuards(true);
            if (!threaded && phase === 'init') lookups?.unsuspend();
            // A thread (refused at the checkpoint) keeps its real id: pthread knows it by that.
            if (rval > 0n && !p.thread) {
              forks++;
              answer(BigInt(fakeChild(Number(rval))));
            }
            break;
          case S.wait4:
            if (rval > 0n) answer(BigInt(fakeChild(Number(rval))));
            break;
          case S.waitid:
            if (rval === 0n && arg(2)) {
              const si = readMem(mem, arg(2), 24);
              const real = si.readInt32LE(16);
              if (real > 0) {
                const b = Buffer.alloc(4);
                b.writeInt32LE(fakeChild(real));
                fs.writeSync(mem, b, 0, 4, Number(arg(2) + 16n));
              }
            }
            break;
          case NR.getdents64:
            if (rval >= 0n && p.dirFd?.startsWith('/')) listedDirs.add(p.dirFd);
            break;
        }
        // A library (dlopen, an extension module) is mapped before any of it runs: its lookups get an int3 now.
        if (lookups && phase === 'init' && p.nr === NR.mmap && rval > 0n && ((p.args[2] ?? 0n) & 4n) !== 0n && !threaded) lookups.scan();
        const told = p.path && phase === 'init' ? announcement(p.path.path, o.resumeFd) : null;
        if (told && lookups) lookups.note(told);
        else if (told) announced.push(told);
        else if (p.path && !p.path.write && p.path.path !== '') {
          // readlink of something that is no symlink: it exists (EINVAL), like a successful stat.
          const result = (p.nr === NR.readlink || p.nr === NR.readlinkat) && rval === -22n ? 0 : Number(rval);
          const ev: PathEvent = { path: p.path.path, result, kind: p.path.open ? 'open' : 'probe', ...accessMode(p.nr, p.args) };
          if (p.path.open && rval >= 0n) {
            try {
              ev.opened = fs.statSync(`/proc/${pid}/fd/${rval}`, { bigint: true });
            } catch {
              /* closed already by another thread: not possible here (one thread), keep it unknown */
            }
          }
          paths.push(ev);
        }
      }
      continue;
    }
    if (st.event !== 0) {
      if (st.event === L.PTRACE_EVENT_FORK || st.event === L.PTRACE_EVENT_VFORK) continue; // the child is traced from here
      if (st.event === L.PTRACE_EVENT_EXEC) refuse('unsupported-syscall', 'the init replaced the program (exec)');
      throw new SnapshotRefusal('internal', `unexpected ptrace event ${st.event} during the init`);
    }
    if (st.stopSig === L.SIGTRAP) {
      if (phase === 'init' && lookups?.onTrap()) continue;
      const regs = ARCH.getRegs(pid);
      const at = ARCH.breakpointAddress(ARCH.pc(regs));
      if (at === entry && !tscAtNextSyscall && hijacked === undefined && readMem(mem, entry, bp.length).equals(bp)) {
        writeBytes(mem, entry, entryBytes);
        ARCH.setPc(regs, entry);
        ARCH.setRegs(pid, regs);
        tscAtNextSyscall = true;
        pastEntry = true;
        continue;
      }
      const guard = guards.get(at);
      if (guard === undefined) refuse('unsupported-syscall', `SIGTRAP at ${describeCode(pid, ARCH.pc(regs))} during the init`);
      emulateVdso((guard as { name: string }).name, regs, mem, clock);
      ARCH.setRegs(pid, regs);
      continue;
    }
    if (st.stopSig === SIGSEGV) {
      // A counter read under PR_TSC_SIGSEGV (rdtsc, mrs cntvct_el0): answered from the clock.
      const regs = ARCH.getRegs(pid);
      if (ARCH.answerCounterRead(mem, regs, () => clock.now(1n))) {
        ARCH.setRegs(pid, regs);
        continue;
      }
      refuse('unsupported-syscall', `SIGSEGV at ${describeCode(pid, ARCH.pc(regs))} during the init`);
    }
    // An ordinary signal (SIGCHLD from the init's children, mostly): deliver it.
    if (st.stopSig === SIGCHLD || st.stopSig !== L.SIGSTOP) inject = st.stopSig;
  }
  };
  /** From the checkpoint on, with the test context, to the close of the resume fd that ends the resume. */
  const resumeUntilClose = (): void => {
    phase = 'resume';
    try {
      advance();
    } catch (e) {
      if (e instanceof SnapshotRefusal && e.code === 'exited-before-entry') {
        throw new SnapshotRefusal('unsupported-syscall', `after the resume the program did not close the resume fd (${e.detail}): see docs/resume-protocol.md`);
      }
      throw e;
    }
  };
  advance();
  if (!stopped) throw new SnapshotRefusal('internal', 'the trace ended without a checkpoint');
  return stopped;
}

const CLONE_THREAD = 0x10000n;
const FORKS = new Set<number>([S.clone, S.fork, S.vfork, S.clone3]);

function isThreadClone(nr: number, args: bigint[], mem: number): boolean {
  if (nr === S.clone) return ((args[0] ?? 0n) & CLONE_THREAD) !== 0n;
  if (nr === S.clone3) return (readMem(mem, args[0] ?? 0n, 8).readBigUInt64LE(0) & CLONE_THREAD) !== 0n;
  return false;
}

const PR_SET_TSC = 26n;
const PR_TSC_ENABLE = 1n;
const F_DUPFD = 0n;
const F_DUPFD_CLOEXEC = 1030n;

/** Follows the caller's stdio descriptors through dup, dup2, dup3, fcntl(F_DUPFD) and close. */
function trackDescriptors(nr: number, args: bigint[], rval: bigint, origin: Map<number, number>): void {
  if (rval < 0n) return;
  const fd = (i: number): number => Number(BigInt.asIntN(32, args[i] ?? 0n));
  const copy = (from: number, to: number): void => {
    const o = origin.get(from);
    if (o === undefined) origin.delete(to);
    else origin.set(to, o);
  };
  switch (nr) {
    case S.dup: copy(fd(0), Number(rval)); break;
    case S.dup2: case S.dup3: if (fd(0) !== fd(1)) copy(fd(0), fd(1)); break;
    case NR.fcntl: if (args[1] === F_DUPFD || args[1] === F_DUPFD_CLOEXEC) copy(fd(0), Number(rval)); break;
    case NR.close: origin.delete(fd(0)); break;
    default:
      // Anything else that returns a new descriptor (open, socket, pipe's are in memory) is no stdio.
      if (NEW_FD_SYSCALLS.has(nr)) origin.delete(Number(rval));
  }
}

const NEW_FD_SYSCALLS = new Set<number>([NR.open, NR.openat, S.openat2, S.socket, S.accept, S.accept4,
  S.timerfd_create, S.eventfd2, S.epoll_create1, S.inotify_init1, S.memfd_create]);

/** The vdso function at a guard, done by the tracer: result, then return to the caller. */
function emulateVdso(name: string, regs: RegFile, mem: number, clock: FakeClock): void {
  const arg = (i: number): bigint => ARCH.callArg(regs, i);
  switch (name) {
    case 'clock_gettime':
      if (arg(1)) writeWords(mem, arg(1), split(clock.now(arg(0)), 1n));
      ARCH.setResult(regs, 0n);
      break;
    case 'gettimeofday':
      if (arg(0)) writeWords(mem, arg(0), split(clock.now(0n), 1000n));
      ARCH.setResult(regs, 0n);
      break;
    case 'time': {
      const sec = clock.now(0n) / 1_000_000_000n;
      if (arg(0)) writeWords(mem, arg(0), [sec]);
      ARCH.setResult(regs, sec);
      break;
    }
    default:
      throw new SnapshotRefusal('unsupported-syscall', `vdso ${name}() during the init`);
  }
  ARCH.returnNow(mem, regs);
}

/** Fake child ids start above PID_MAX_LIMIT (2^22), which no kernel hands out. */
const FAKE_CHILD_BASE = 4_194_305;
/** Which argument (0-2) of a syscall is a process id, to translate a fake child id back. */
const PID_ARG = new Map<number, number>([[S.kill, 0], [S.wait4, 0], [S.waitid, 1], [S.getpgid, 0], [S.getsid, 0],
  [S.pidfd_open, 0], [NR.prlimit64, 0], [S.rt_sigqueueinfo, 0]]);

/** Syscalls whose arguments name processes: a sentinel there means the init acted on its own (fake) id. */
const IDENTITY_ARG_SYSCALLS = new Set<number>([S.kill, S.tkill, S.tgkill, S.setpgid, S.getpgid, S.getsid, S.wait4, S.waitid,
  S.rt_sigqueueinfo, S.rt_tgsigqueueinfo, S.pidfd_open, NR.prlimit64, S.sched_setaffinity, NR.sched_getaffinity,
  S.ptrace]);

const NAMES = new Map<number, string>(Object.entries(NR).filter(([, v]) => v !== ABSENT).map(([k, v]) => [v, k]));
const nameOf = (nr: number): string => NAMES.get(nr) ?? `syscall ${nr}`;

/**
 * What the init may not do, and the path a syscall names. Allowed and
 * unlisted: the program's own business (files, memory, children, pipes);
 * the checkpoint's state checks catch what is still open or running.
 */
function checkInitSyscall(nr: number, a: bigint[], pathArg: (dirfd: bigint, p: bigint, nr: number) => string,
  bytesAt: (addr: bigint, n: number) => string, stdioOf: (fd: number) => number): Pick<PendingSyscall, 'path'> {
  const arg = (i: number): bigint => a[i] ?? 0n;
  const fd = Number(BigInt.asIntN(32, arg(0)));
  // The caller's stdin/stdout/stderr, wherever the init moved them (a shell redirects temporarily).
  const origin = stdioOf(fd);
  const stdio = origin >= 0;
  const no = (why: string): never => refuse('unsupported-syscall', `${why} (${nameOf(nr)}): a restore would not`);
  const opening = (flags: bigint): { open: boolean; write: boolean } => ({
    open: true, write: (flags & BigInt(O_ACCMODE)) !== 0n || (flags & BigInt(O_CREAT)) !== 0n,
  });
  switch (nr) {
    case NR.execve: case S.execveat: return no('the init replaced the program');
    case S.chdir: case S.fchdir: return no('the init changed the working directory');
    case S.chroot: case S.setsid: case S.setpgid: case S.setuid: case S.setgid: case S.setreuid: case S.setregid:
    case S.setresuid: case S.setresgid: case S.setgroups: case S.setfsuid: case S.setfsgid: case S.unshare: case S.setns:
      return no('the init changed the process identity');
    case S.setrlimit: return no('the init changed a resource limit');
    case NR.prlimit64: if (arg(2) !== 0n) no('the init changed a resource limit'); return {};
    case S.timer_create: case S.setitimer: case S.timerfd_create: return no('the init armed a timer');
    case S.alarm: if (arg(0) !== 0n) no('the init armed a timer'); return {};
    case S.personality: if (arg(0) !== PERSONALITY_QUERY) no('the init changed its personality'); return {};
    case S.seccomp: case S.ptrace: return no('the init used seccomp or ptrace');
    case NR.prctl: if (!PRCTL_ALLOWED.has(Number(arg(0)))) no(`the init called prctl(${arg(0)})`); return {};
    case NR.sigaltstack: if (arg(0) !== 0n) no('the init set an alternate signal stack'); return {};
    case NR.read: case NR.readv: case NR.pread64: case S.preadv: case S.preadv2:
      if (origin === 0) no('the init read its standard input');
      return {};
    case NR.write: case NR.pwrite64:
      if (stdio && process.env.CACHED_EXEC_DEBUG_INIT_OUTPUT) {
        // Debugging a refused init: show what it printed instead of refusing on the first line.
        process.stderr.write(bytesAt(arg(1), Math.min(Number(arg(2)), 4096)));
        return {};
      }
      if (stdio) no(`the init wrote to its ${origin === 2 ? 'stderr' : 'stdout'} ${JSON.stringify(bytesAt(arg(1), Math.min(Number(arg(2)), 200)))}`);
      return {};
    case NR.writev: case S.pwritev: case S.pwritev2:
      if (stdio) no(`the init wrote to fd ${fd}`);
      return {};
    case S.sendfile: if (stdio) no(`the init wrote to fd ${fd}`); return {};
    case NR.ioctl: if (stdio && !IOCTL_QUERIES.has(Number(arg(1) & 0xffffffffn))) no(`the init changed its terminal (ioctl 0x${arg(1).toString(16)} on fd ${fd})`); return {};
    case NR.fcntl: if (stdio && arg(1) === 4n /* F_SETFL: shared with the caller */) no(`the init changed the file flags of fd ${fd}`); return {};

    case NR.open: return { path: { path: pathArg(BigInt(AT_FDCWD), arg(0), nr), ...opening(arg(1)) } };
    case NR.openat: case S.openat2: {
      const flags = nr === NR.openat ? arg(2) : 0n;
      return { path: { path: pathArg(arg(0), arg(1), nr), ...opening(flags) } };
    }
    case NR.stat: case NR.lstat: case NR.access: case NR.readlink:
      return { path: { path: pathArg(BigInt(AT_FDCWD), arg(0), nr), open: false, write: false } };
    case NR.newfstatat: case NR.statx: case NR.faccessat: case NR.faccessat2: case NR.readlinkat:
      return { path: { path: pathArg(arg(0), arg(1), nr), open: false, write: false } };
    default:
      return {};
  }
}
