/**
 * Runs a program under ptrace from exec to its ELF entry point and records
 * what the dynamic loader asked the kernel for on the way.
 *
 * The child is the native launcher in its helper mode
 * (`--internal-traceme [--no-aslr] PATH ARGV...`: PTRACE_TRACEME, SIGSTOP,
 * execve). Without PTRACE_O_TRACEEXEC the kernel stops it with a plain SIGTRAP
 * right after a successful exec; from there PTRACE_SYSCALL stops at every
 * syscall entry and exit until the int3 planted at AT_ENTRY fires.
 */
import * as fs from 'node:fs';
import * as L from '../sys/libc.js';
import { SnapshotRefusal } from './refusal.js';

export const AT = {
  NULL: 0n, PHDR: 3n, PHNUM: 5n, PAGESZ: 6n, BASE: 7n, ENTRY: 9n, PLATFORM: 15n, RANDOM: 25n,
  BASE_PLATFORM: 24n, EXECFN: 31n, SYSINFO_EHDR: 33n, SECURE: 23n,
} as const;

/** x86_64 syscall numbers (kernel ABI) the loader may make before the entry point. */
const NR = {
  read: 0, write: 1, open: 2, close: 3, stat: 4, fstat: 5, lstat: 6, poll: 7, lseek: 8, mmap: 9, mprotect: 10,
  munmap: 11, brk: 12, rt_sigaction: 13, rt_sigprocmask: 14, ioctl: 16, pread64: 17, readv: 19, access: 21,
  sched_yield: 24, mremap: 25, madvise: 28, getpid: 39, uname: 63, fcntl: 72, getcwd: 79, readlink: 89,
  gettimeofday: 96, getrlimit: 97, sysinfo: 99, getuid: 102, getgid: 104, geteuid: 107, getegid: 108,
  getppid: 110, getpgrp: 111, getgroups: 115, sigaltstack: 131, statfs: 137, fstatfs: 138, arch_prctl: 158,
  gettid: 186, time: 201, futex: 202, sched_getaffinity: 204, getdents64: 217, set_tid_address: 218,
  clock_gettime: 228, clock_getres: 229, exit_group: 231, openat: 257, newfstatat: 262, readlinkat: 267,
  faccessat: 269, set_robust_list: 273, getrandom: 318, statx: 332, rseq: 334, faccessat2: 439, prlimit64: 302,
  getcpu: 309, membarrier: 324, prctl: 157,
} as const;

/** prctl options that only read: PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_GET_KEEPCAPS, PR_GET_NAME,
 * PR_CAPBSET_READ, PR_GET_SECUREBITS, PR_GET_NO_NEW_PRIVS, PR_GET_THP_DISABLE. */
const PRCTL_QUERIES = new Set([2, 3, 7, 16, 23, 27, 39, 42]);

/** Syscalls that leave no kernel state a restore would have to recreate. */
const HARMLESS = new Set<number>([
  NR.read, NR.write, NR.close, NR.fstat, NR.lseek, NR.mmap, NR.mprotect, NR.munmap, NR.pread64, NR.readv,
  NR.sched_yield, NR.mremap, NR.madvise, NR.getpid, NR.uname, NR.getcwd, NR.gettimeofday, NR.getrlimit,
  NR.sysinfo, NR.getuid, NR.getgid, NR.geteuid, NR.getegid, NR.getppid, NR.getpgrp, NR.getgroups, NR.statfs,
  NR.fstatfs, NR.gettid, NR.time, NR.futex, NR.sched_getaffinity, NR.getdents64, NR.clock_gettime,
  NR.clock_getres, NR.getrandom, NR.getcpu, NR.poll, NR.ioctl, NR.fcntl,
]);

export interface PathEvent {
  path: string;
  /** syscall result: >= 0 success, else -errno */
  result: number;
  kind: 'open' | 'probe';
}

export interface LoaderState {
  tidAddress?: bigint;
  robust?: { head: bigint; len: bigint };
  rseq?: { area: bigint; len: number; sig: number };
  fsBase?: bigint;
  brk?: bigint;
}

export interface StoppedAtEntry {
  pid: number;
  mem: number; // fd of /proc/PID/mem
  auxv: Map<bigint, bigint>;
  auxvBytes: Buffer;
  regs: L.Regs;
  paths: PathEvent[];
  loader: LoaderState;
}

export interface TraceOptions {
  launcher: string;
  exePath: string;
  argv: string[];
  envp: string[];
  noAslr: boolean;
  /** Overwrite AT_RANDOM's 16 bytes at the exec stop (differential runs). */
  atRandom?: Buffer;
  /**
   * Differential runs: rdtsc traps and reads a deterministic counter, and
   * getrandom returns fixed bytes, so timing variables and random keys taken
   * during start-up (malloc's tcache key) are equal in both runs.
   */
  deterministic?: boolean;
  deadline: number;
}

function readAuxv(pid: number): { map: Map<bigint, bigint>; bytes: Buffer } {
  const bytes = fs.readFileSync(`/proc/${pid}/auxv`);
  const map = new Map<bigint, bigint>();
  for (let i = 0; i + 16 <= bytes.length; i += 16) {
    const t = bytes.readBigUInt64LE(i);
    if (t === 0n) return { map, bytes: bytes.subarray(0, i + 16) };
    map.set(t, bytes.readBigUInt64LE(i + 8));
  }
  return { map, bytes };
}

export function readMem(memFd: number, addr: bigint, len: number): Buffer {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const n = fs.readSync(memFd, buf, off, len - off, Number(addr) + off);
    if (n <= 0) throw new Error(`short read of tracee memory at 0x${(addr + BigInt(off)).toString(16)}`);
    off += n;
  }
  return buf;
}

export function readCString(memFd: number, addr: bigint, max = 4096): string {
  const chunk = Buffer.alloc(256);
  const parts: Buffer[] = [];
  let total = 0;
  while (total < max) {
    let n: number;
    try {
      n = fs.readSync(memFd, chunk, 0, chunk.length, Number(addr) + total);
    } catch {
      break;
    }
    if (n <= 0) break;
    const z = chunk.subarray(0, n).indexOf(0);
    if (z >= 0) {
      parts.push(Buffer.from(chunk.subarray(0, z)));
      break;
    }
    parts.push(Buffer.from(chunk.subarray(0, n)));
    total += n;
  }
  return Buffer.concat(parts).toString('utf8');
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
      if (st.exited || st.signaled) break;
    }
  } catch {
    /* already reaped */
  }
}

const s64 = (v: bigint): number => Number(BigInt.asIntN(64, v));
const SIGSEGV = 11;

/** Runs to the entry point. Throws SnapshotRefusal when it cannot be captured. */
export function runToEntry(o: TraceOptions): StoppedAtEntry {
  const argv = [o.launcher, '--internal-traceme', ...(o.noAslr ? ['--no-aslr', '--one-cpu'] : []), ...(o.deterministic ? ['--fake-tsc'] : []),
    o.exePath, ...o.argv];
  let tsc = 1_000_000_000_000n;
  const pid = L.spawnDetachedStdio(o.launcher, argv, o.envp);
  let mem: number | undefined;
  try {
    let st = L.waitpid(pid);
    if (!st.stopped || st.stopSig !== L.SIGSTOP) {
      throw new SnapshotRefusal('exited-before-entry', `helper did not stop (status 0x${st.raw.toString(16)})`);
    }
    L.ptrace(L.PTRACE_SETOPTIONS, pid, 0, L.PTRACE_O_TRACESYSGOOD | L.PTRACE_O_EXITKILL);
    L.ptrace(L.PTRACE_CONT, pid, 0, 0);
    st = L.waitpid(pid);
    if (!st.stopped || st.stopSig !== L.SIGTRAP) {
      throw new SnapshotRefusal('exited-before-entry', st.exited ? `exec failed (exit ${st.exitCode})` : 'no exec stop');
    }
    mem = fs.openSync(`/proc/${pid}/mem`, 'r+');
    const { map: auxv, bytes: auxvBytes } = readAuxv(pid);
    const entry = auxv.get(AT.ENTRY);
    if (!entry) throw new SnapshotRefusal('internal', 'no AT_ENTRY');
    if (auxv.get(AT.SECURE)) throw new SnapshotRefusal('privileged', 'AT_SECURE is set');
    if (o.atRandom) {
      const r = auxv.get(AT.RANDOM);
      if (!r) throw new SnapshotRefusal('internal', 'no AT_RANDOM');
      fs.writeSync(mem, o.atRandom, 0, 16, Number(r));
    }
    const orig = readMem(mem, entry, 1);
    fs.writeSync(mem, Buffer.from([0xcc]), 0, 1, Number(entry));

    const paths: PathEvent[] = [];
    const loader: LoaderState = {};
    let inSyscall = false;
    let nr = -1;
    let args: bigint[] = [];
    let path: string | null = null;
    let pathKind: PathEvent['kind'] = 'open';
    for (;;) {
      if (Date.now() > o.deadline) throw new SnapshotRefusal('timeout', 'did not reach the entry point in time');
      L.ptrace(L.PTRACE_SYSCALL, pid, 0, 0);
      st = L.waitpid(pid);
      if (st.exited || st.signaled) {
        throw new SnapshotRefusal('exited-before-entry',
          st.exited ? `exited with ${st.exitCode} before its entry point` : `killed by signal ${st.termSig} before its entry point`);
      }
      const regs = L.getRegs(pid);
      if (st.stopSig === (L.SIGTRAP | 0x80)) {
        if (!inSyscall) {
          inSyscall = true;
          nr = s64(regs.orig_rax);
          args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
          path = null;
          const a = args as [bigint, bigint, bigint, bigint];
          if (nr === NR.openat) { path = readCString(mem, a[1]); pathKind = 'open'; }
          else if (nr === NR.open) { path = readCString(mem, a[0]); pathKind = 'open'; }
          else if (nr === NR.access || nr === NR.stat || nr === NR.lstat || nr === NR.readlink) { path = readCString(mem, a[0]); pathKind = 'probe'; }
          else if (nr === NR.faccessat || nr === NR.faccessat2 || nr === NR.readlinkat || nr === NR.statx) { path = readCString(mem, a[1]); pathKind = 'probe'; }
          else if (nr === NR.newfstatat) {
            const p = readCString(mem, a[1]);
            if (p !== '') { path = p; pathKind = 'probe'; }
          }
          checkSyscall(nr, args);
        } else {
          inSyscall = false;
          const ret = s64(regs.rax);
          const a = args as [bigint, bigint, bigint, bigint, bigint, bigint];
          if (path !== null) paths.push({ path, result: ret, kind: pathKind });
          if (nr === NR.set_tid_address) loader.tidAddress = a[0];
          else if (nr === NR.set_robust_list && ret === 0) loader.robust = { head: a[0], len: a[1] };
          else if (nr === NR.rseq && ret === 0) loader.rseq = { area: a[0], len: Number(a[1]), sig: Number(a[3] & 0xffffffffn) };
          else if (nr === NR.arch_prctl && a[0] === 0x1002n && ret === 0) loader.fsBase = a[1];
          else if (nr === NR.brk) loader.brk = BigInt.asUintN(64, regs.rax);
          else if (nr === NR.getrandom && ret > 0 && o.deterministic) {
            const fixed = Buffer.alloc(ret);
            for (let k = 0; k < ret; k++) fixed[k] = (0x5a + k * 7) & 0xff;
            fs.writeSync(mem, fixed, 0, ret, Number(a[0]));
          }
        }
        continue;
      }
      if (st.stopSig === L.SIGTRAP && regs.rip === entry + 1n) {
        fs.writeSync(mem, orig, 0, 1, Number(entry));
        regs.rip = entry;
        L.setRegs(pid, regs);
        return { pid, mem, auxv, auxvBytes, regs, paths, loader };
      }
      if (st.stopSig === SIGSEGV && o.deterministic) {
        // rdtsc (0f 31) or rdtscp (0f 01 f9) under PR_TSC_SIGSEGV: answer it.
        const insn = readMem(mem, regs.rip, 3);
        const rdtscp = insn[0] === 0x0f && insn[1] === 0x01 && insn[2] === 0xf9;
        if (rdtscp || (insn[0] === 0x0f && insn[1] === 0x31)) {
          tsc += 1000n;
          regs.rax = tsc & 0xffffffffn;
          regs.rdx = tsc >> 32n;
          if (rdtscp) regs.rcx = 0n;
          regs.rip += rdtscp ? 3n : 2n;
          L.setRegs(pid, regs);
          inSyscall = false;
          continue;
        }
      }
      throw new SnapshotRefusal('unsupported-syscall', `unexpected signal ${st.stopSig} before the entry point`);
    }
  } catch (e) {
    killTracee(pid, mem);
    throw e;
  }
}

function checkSyscall(nr: number, args: bigint[]): void {
  if (HARMLESS.has(nr)) return;
  const a0 = args[0] ?? 0n;
  switch (nr) {
    case NR.open: case NR.openat: case NR.access: case NR.faccessat: case NR.faccessat2: case NR.stat:
    case NR.lstat: case NR.newfstatat: case NR.statx: case NR.readlink: case NR.readlinkat:
    case NR.brk: case NR.set_tid_address: case NR.set_robust_list: case NR.rseq: case NR.exit_group:
    case NR.membarrier:
      return;
    case NR.arch_prctl:
      if (a0 === 0x1002n /* ARCH_SET_FS */ || a0 === 0x1003n /* GET_FS */ || a0 === 0x3001n /* CET_STATUS */) return;
      break;
    case NR.prctl:
      // Queries only (libcap's constructor probes the kernel's capability count with PR_CAPBSET_READ).
      if (PRCTL_QUERIES.has(Number(a0))) return;
      // PR_CAP_AMBIENT / PR_CAP_AMBIENT_IS_SET: libcap probing for ambient capability support.
      if (a0 === 47n && (args[1] ?? 0n) === 1n) return;
      break;
    case NR.prlimit64:
      if ((args[2] ?? 0n) === 0n) return; // reading limits only
      break;
    case NR.rt_sigprocmask:
      if ((args[1] ?? 0n) === 0n) return; // querying the mask only
      break;
    case NR.rt_sigaction:
      if ((args[1] ?? 0n) === 0n) return; // querying a disposition only
      break;
    case NR.sigaltstack:
      if (a0 === 0n) return;
      break;
  }
  throw new SnapshotRefusal('unsupported-syscall', `syscall ${nr} before the entry point creates state a restore would not recreate`);
}
