/**
 * Does a program find its own installation through argv[0]?
 *
 * Through a shim, a program started by a bare name gets that name as argv[0].
 * Most programs only print it; some (gcc finds cc1 and its libexec directory,
 * python its prefix) search PATH for it, resolve the symlinks and look around
 * the file they land on: through a shim that is the launcher's directory. The
 * launcher gives those programs their real path as argv[0] instead; a shim
 * says so by pointing at bin/cached-exec-selfpath (see cli/commands/shims.ts).
 * Rewriting argv[0] for every program would change what the others print
 * (`ls: cannot access` would become `/usr/bin/ls: ...`), so it is decided per
 * program, from the program itself, with no names in the code:
 *
 * the program runs under ptrace, started as a shim would start it — argv[0]
 * its bare name, no other argument, stdin/stdout/stderr on /dev/null, an empty
 * working directory — with PATH = <tmp>/bin:<the user's PATH>, where
 * <tmp>/bin/NAME is a symlink to a decoy <tmp>/decoy/bin/cached-exec that is
 * never run. It may run past its entry point while every syscall is on a
 * strict allow-list of calls without effects outside the process; it is
 * killed at the first other one, at exit, or when it used 2 s of CPU (20 s of
 * wall time, for a program blocked in a read). It is
 * self-locating when it named a path under <tmp>/decoy/ other than the decoy
 * and the directories above it (gcc looks at <decoy>/bin/../lib/gcc/...).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as L from '../sys/libc.js';
import { readCString } from './mem.js';
import { killTracee } from './trace.js';
import { ARCH } from './tracer-arch.js';
import { ARCH_X86_64 } from '../image/schema.js';

export interface SelfLocateResult {
  selfLocating: boolean;
  /** The first path under the decoy's tree the program named, and the call that named it. */
  evidence: { syscall: string; path: string } | null;
  /** Why the run ended: `evidence`, `exit N`, `signal N`, `syscall NAME` (outside the allow-list), `deadline`, `N syscalls`. */
  stop: string;
  /** Syscalls the program made (the loader's included). */
  syscalls: number;
  ms: number;
}

export interface SelfLocateOptions {
  /** The native launcher: its --internal-traceme mode starts the program. */
  launcher: string;
  /** The real program. */
  exePath: string;
  /** The bare name a shim would be called by (argv[0]). */
  name: string;
  /** The user's environment; PATH gets the decoy directory in front. */
  env: NodeJS.ProcessEnv;
  /** The program's own CPU time it may use (default 2 s). */
  cpuMs?: number;
  /** Wall-clock time for the whole probe (default 20 s: a loaded machine is slow, a blocked program is not busy). */
  timeoutMs?: number;
}

const DEFAULT_CPU_MS = 2000;
const DEFAULT_TIMEOUT_MS = 20_000;
/** How often the CPU deadline is looked at while waiting, and in syscalls while running. */
const POLL_MS = 200;
const POLL_SYSCALLS = 64;
/** A program that only makes syscalls uses little CPU of its own under ptrace: it is stopped by count. */
const MAX_SYSCALLS = 20_000;

/** utime + stime of a process in ms (/proc/PID/stat fields 14 and 15), 0 when unknown. */
function cpuTimeMs(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}
/** USER_HZ: 100 on every Linux architecture that exposes it to /proc. */
const CLOCK_TICKS = 100;
const DECOY_NAME = 'cached-exec';

/** x86_64 syscall numbers (kernel ABI) the policy names. */
const NR = {
  read: 0, write: 1, open: 2, close: 3, stat: 4, fstat: 5, lstat: 6, poll: 7, lseek: 8, mmap: 9, mprotect: 10,
  munmap: 11, brk: 12, rt_sigaction: 13, rt_sigprocmask: 14, rt_sigreturn: 15, ioctl: 16, pread64: 17, readv: 19,
  writev: 20, access: 21, pipe: 22, select: 23, sched_yield: 24, mremap: 25, mincore: 27, madvise: 28, dup: 32,
  dup2: 33, nanosleep: 35, getpid: 39, exit: 60, uname: 63, fcntl: 72, getdents: 78, getcwd: 79, chdir: 80,
  fchdir: 81, readlink: 89, umask: 95, gettimeofday: 96, getrlimit: 97, getrusage: 98, sysinfo: 99, times: 100,
  getuid: 102, getgid: 104, geteuid: 107, getegid: 108, getppid: 110, getpgrp: 111, getgroups: 115,
  getresuid: 118, getresgid: 120, getpgid: 121, getsid: 124, capget: 125, sigaltstack: 131, statfs: 137,
  fstatfs: 138, prctl: 157, arch_prctl: 158, setrlimit: 160, gettid: 186, getxattr: 191, lgetxattr: 192, time: 201, futex: 202,
  sched_getaffinity: 204, getdents64: 217, set_tid_address: 218, fadvise64: 221, clock_gettime: 228,
  clock_getres: 229, clock_nanosleep: 230, exit_group: 231, openat: 257, newfstatat: 262, readlinkat: 267,
  faccessat: 269, pselect6: 270, ppoll: 271, set_robust_list: 273, dup3: 292, pipe2: 293, preadv: 295,
  prlimit64: 302, getcpu: 309, getrandom: 318, membarrier: 324, statx: 332, rseq: 334, close_range: 436,
  openat2: 437, faccessat2: 439,
} as const;
/** Calls off the allow-list, named in the probe's stop reason. */
const OTHER_NAMES: Record<string, number> = {
  socket: 41, connect: 42, clone: 56, fork: 57, vfork: 58, execve: 59, wait4: 61, kill: 62, rename: 82, mkdir: 83,
  rmdir: 84, creat: 85, link: 86, unlink: 87, symlink: 88, chmod: 90, chown: 92, setsid: 112, mknod: 133,
  mount: 165, epoll_create: 213, tgkill: 234, mkdirat: 258, unlinkat: 263, renameat: 264, linkat: 265,
  symlinkat: 266, fchmodat: 268, epoll_create1: 291, renameat2: 316, execveat: 322, clone3: 435,
};
const NAMES = new Map<number, string>([...Object.entries(NR), ...Object.entries(OTHER_NAMES)].map(([k, v]) => [v, k]));
const nameOf = (nr: number): string => NAMES.get(nr) ?? `#${nr}`;

/**
 * Calls whose effects stay inside the process (its memory, descriptors,
 * signal state, working directory) or only read. Exits end the run normally.
 */
const ALWAYS = new Set<number>([
  NR.read, NR.close, NR.fstat, NR.poll, NR.lseek, NR.mmap, NR.mprotect, NR.munmap, NR.brk, NR.rt_sigaction,
  NR.rt_sigprocmask, NR.rt_sigreturn, NR.pread64, NR.readv, NR.pipe, NR.select, NR.sched_yield, NR.mremap,
  NR.mincore, NR.madvise, NR.dup, NR.dup2, NR.nanosleep, NR.getpid, NR.exit, NR.uname, NR.getdents, NR.getcwd,
  NR.fchdir, NR.umask, NR.gettimeofday, NR.getrlimit, NR.getrusage, NR.sysinfo, NR.times, NR.getuid, NR.getgid,
  NR.geteuid, NR.getegid, NR.getppid, NR.getpgrp, NR.getgroups, NR.getresuid, NR.getresgid, NR.getpgid, NR.getsid,
  NR.capget, NR.sigaltstack, NR.fstatfs, NR.prctl, NR.arch_prctl, NR.gettid, NR.time, NR.futex,
  NR.sched_getaffinity, NR.getdents64, NR.set_tid_address, NR.fadvise64, NR.clock_gettime, NR.clock_getres,
  NR.clock_nanosleep, NR.exit_group, NR.pselect6, NR.ppoll, NR.set_robust_list, NR.dup3, NR.pipe2, NR.preadv,
  NR.getcpu, NR.getrandom, NR.membarrier, NR.rseq, NR.close_range, NR.setrlimit,
]);

/** Calls that name a path: which argument, and whether args[0] is the directory it is relative to. */
const PATH_ARG = new Map<number, { index: number; at: boolean }>([
  [NR.open, { index: 0, at: false }], [NR.openat, { index: 1, at: true }], [NR.openat2, { index: 1, at: true }],
  [NR.stat, { index: 0, at: false }], [NR.lstat, { index: 0, at: false }], [NR.access, { index: 0, at: false }],
  [NR.readlink, { index: 0, at: false }], [NR.statfs, { index: 0, at: false }], [NR.chdir, { index: 0, at: false }],
  [NR.getxattr, { index: 0, at: false }], [NR.lgetxattr, { index: 0, at: false }],
  [NR.newfstatat, { index: 1, at: true }], [NR.readlinkat, { index: 1, at: true }],
  [NR.faccessat, { index: 1, at: true }], [NR.faccessat2, { index: 1, at: true }], [NR.statx, { index: 1, at: true }],
]);

const AT_FDCWD = -100;
const O_ACCMODE = 3;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;
/** fcntl commands that only read or change descriptor flags: F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC. */
const FCNTL_LOCAL = new Set([0, 1, 2, 3, 4, 1030]);
/** ioctl queries a program makes of its stdio: TCGETS, TIOCGWINSZ, TIOCGPGRP, FIONREAD. */
const IOCTL_QUERIES = new Set([0x5401, 0x5413, 0x540f, 0x541b]);

const TERMINALS = new Set(['/dev/tty', '/dev/null']);

const int = (v: bigint | undefined): number => Number(BigInt.asIntN(32, v ?? 0n));

/** The temporary tree: <tmp>/bin/NAME -> <tmp>/decoy/bin/cached-exec, and an empty working directory. */
interface DecoyTree {
  root: string;
  bin: string;
  decoyDir: string;
  decoy: string;
  cwd: string;
}

function makeDecoyTree(name: string): DecoyTree {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'cx-selflocate-')));
  const t: DecoyTree = {
    root, bin: path.join(root, 'bin'), decoyDir: path.join(root, 'decoy'),
    decoy: path.join(root, 'decoy', 'bin', DECOY_NAME), cwd: path.join(root, 'cwd'),
  };
  fs.mkdirSync(t.bin);
  fs.mkdirSync(path.dirname(t.decoy), { recursive: true });
  fs.mkdirSync(t.cwd);
  // Executable, as a program's PATH search demands, and empty: it is never run (execve stops the probe).
  fs.writeFileSync(t.decoy, '', { mode: 0o755 });
  fs.symlinkSync(t.decoy, path.join(t.bin, name));
  return t;
}

/** A path under the decoy's tree that says the program looked around the file its argv[0] led to. */
function isEvidence(t: DecoyTree, p: string): boolean {
  if (!p.startsWith(`${t.decoyDir}/`)) return false;
  // The decoy and the directories above it are what realpath() walks: not yet a look around.
  return p !== t.decoy && p !== path.dirname(t.decoy);
}

function tracePath(pid: number, mem: number, nr: number, args: readonly bigint[], spec: { index: number; at: boolean }): string {
  const raw = readCString(mem, args[spec.index] ?? 0n);
  // Lexically, as the kernel walks it: <decoy>/bin/../lib is <tmp>/decoy/lib (bin is a real directory).
  if (raw.startsWith('/')) return path.resolve(raw);
  let base: string;
  try {
    const dirfd = spec.at ? int(args[0]) : AT_FDCWD;
    base = fs.readlinkSync(dirfd === AT_FDCWD ? `/proc/${pid}/cwd` : `/proc/${pid}/fd/${dirfd}`);
  } catch {
    return '';
  }
  return path.resolve(base, raw);
}

/** null when the call is allowed, else why it is not. */
function disallowed(pid: number, nr: number, args: readonly bigint[], opened: string): string | null {
  if (ALWAYS.has(nr)) return null;
  const a = (i: number): bigint => args[i] ?? 0n;
  switch (nr) {
    case NR.open: case NR.openat: {
      const flags = int(a(nr === NR.open ? 1 : 2));
      if ((flags & O_ACCMODE) === 0 && !(flags & (O_CREAT | O_TRUNC))) return null;
      // Shells open their terminal read-write (ENXIO here: no controlling terminal); writes are still checked.
      if (TERMINALS.has(opened) && !(flags & (O_CREAT | O_TRUNC))) return null;
      return `opens ${opened || 'a file'} for writing`;
    }
    case NR.openat2:
      return 'openat2 (flags in a struct)';
    case NR.write: case NR.writev: {
      // Output to stdout/stderr goes to /dev/null here: no effect anywhere.
      const fd = int(a(0));
      try {
        return (fd === 1 || fd === 2) && fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/null' ? null : `writes to fd ${fd}`;
      } catch {
        return `writes to fd ${fd}`;
      }
    }
    case NR.fcntl:
      return FCNTL_LOCAL.has(int(a(1))) ? null : `fcntl command ${int(a(1))}`;
    case NR.ioctl:
      return IOCTL_QUERIES.has(int(a(1)) >>> 0) ? null : `ioctl 0x${(int(a(1)) >>> 0).toString(16)}`;
    case NR.prlimit64:
      // Its own limits (gcc raises its stack limit) are its own state; another process's are not.
      return a(2) === 0n || a(0) === 0n || int(a(0)) === pid ? null : 'sets another process\'s resource limit';
  }
  return PATH_ARG.has(nr) ? null : 'outside the allow-list';
}

/**
 * Runs the probe; never leaves the tracee or the temporary tree behind.
 * Throws when the program could not be started under ptrace at all.
 */
export function probeSelfLocating(o: SelfLocateOptions): SelfLocateResult {
  const t0 = Date.now();
  // The allow-list is by x86_64 number: on another machine those numbers are other calls
  // (aarch64's unlinkat is x86_64's nanosleep). Not probed there: argv[0] stays as typed.
  if (ARCH.machine !== ARCH_X86_64) {
    return { selfLocating: false, evidence: null, stop: `not probed on ${ARCH.name} (the probe's allow-list is x86_64's)`, syscalls: 0, ms: 0 };
  }
  // Two limits: the program's own CPU time (what a spinning program uses up, whatever the
  // machine's load) and wall time (what a program blocked in a read uses up).
  const deadline = t0 + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const cpuLimit = o.cpuMs ?? DEFAULT_CPU_MS;
  const t = makeDecoyTree(o.name);
  const envp: string[] = [];
  for (const [k, v] of Object.entries(o.env)) {
    if (v === undefined || k === 'PATH' || /^(LD_|GLIBC_TUNABLES$|MALLOC_)/.test(k)) continue;
    envp.push(`${k}=${v}`);
  }
  envp.push(`PATH=${t.bin}${o.env.PATH !== undefined ? `:${o.env.PATH}` : ':/bin:/usr/bin'}`);
  let pid = -1;
  let mem: number | undefined;
  let syscalls = 0;
  const done = (stop: string, evidence: SelfLocateResult['evidence'] = null): SelfLocateResult =>
    ({ selfLocating: evidence !== null, evidence, stop, syscalls, ms: Date.now() - t0 });
  try {
    pid = L.spawnDetachedStdio(o.launcher, [o.launcher, '--internal-traceme', `--parent=${process.pid}`, o.exePath, o.name], envp, { cwd: t.cwd });
    const overTime = (): boolean => Date.now() >= deadline || cpuTimeMs(pid) >= cpuLimit;
    const wait = (): L.WaitStatus | null => {
      for (;;) {
        const st = L.waitpidUntil(pid, Math.min(deadline, Date.now() + POLL_MS));
        if (st || overTime()) return st;
      }
    };
    // Until the exec event nothing of the program ran: an end there means no probe, not a "no".
    const notStarted = (st: L.WaitStatus | null): Error => new Error(`could not start ${o.exePath} under ptrace (${
      !st ? 'no stop in time' : st.exited ? `the helper exited with ${st.exitCode}` : `status 0x${st.raw.toString(16)}`})`);
    let st = wait();
    if (!st || !st.stopped || st.stopSig !== L.SIGSTOP) throw notStarted(st);
    L.ptrace(L.PTRACE_SETOPTIONS, pid, 0, L.PTRACE_O_TRACESYSGOOD | L.PTRACE_O_EXITKILL | L.PTRACE_O_TRACEEXEC);
    L.ptrace(L.PTRACE_CONT, pid, 0, 0);
    st = wait();
    // The helper reports a failed execve itself and exits 127.
    if (!st || st.event !== L.PTRACE_EVENT_EXEC) throw notStarted(st);
    mem = fs.openSync(`/proc/${pid}/mem`, 'r');
    for (;;) {
      // A stop follows every syscall at once: the limits are checked here too, not only while waiting.
      if (Date.now() >= deadline || (syscalls % POLL_SYSCALLS === 0 && cpuTimeMs(pid) >= cpuLimit)) return done('deadline');
      if (syscalls >= MAX_SYSCALLS) return done(`${MAX_SYSCALLS} syscalls`);
      L.ptrace(L.PTRACE_SYSCALL, pid, 0, 0);
      st = wait();
      if (!st) return done('deadline');
      if (st.exited) return done(`exit ${st.exitCode}`);
      if (st.signaled) return done(`signal ${st.termSig}`);
      if (st.stopSig !== (L.SIGTRAP | 0x80)) return done(`signal ${st.stopSig}`);
      const info = L.getSyscallInfo(pid);
      if (info.op !== L.SYSCALL_INFO_ENTRY) continue;
      syscalls++;
      const spec = PATH_ARG.get(info.nr);
      const p = spec ? tracePath(pid, mem, info.nr, info.args, spec) : '';
      if (isEvidence(t, p)) return done('evidence', { syscall: nameOf(info.nr), path: p });
      const why = disallowed(pid, info.nr, info.args, p);
      if (why) return done(`syscall ${nameOf(info.nr)} (${why})`);
    }
  } finally {
    if (pid > 0) killTracee(pid, mem);
    fs.rmSync(t.root, { recursive: true, force: true });
  }
}
