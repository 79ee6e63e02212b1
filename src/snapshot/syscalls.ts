/**
 * What the loader and library constructors may ask the kernel before the
 * entry point, and what each call tells us.
 *
 * The rule: an image is a valid start of the program only if nothing before
 * the entry point depended on, or changed, something a restoring process
 * would see differently. So the policy is an allow-list of syscalls, by
 * name (the machine's numbers: NR below), with argument checks, and everything else refuses:
 *  - kernel state a restore does not recreate: threads, children, signal
 *    handlers and masks, timers, sockets, personality, limits, memory flags;
 *  - side effects a restore would not repeat: writes, files opened for
 *    writing, ioctls;
 *  - answers that describe the snapshot run and not the caller, which the
 *    differential run cannot see because both of its runs share them: the
 *    caller's stdio (fds 0-2 are /dev/null here), the working directory
 *    (relative paths), the parent, host name, the clock.
 * Identity queries (uid, gids, groups, capabilities) are allowed: the user
 * and the groups are in the key, and the tracer marks such an image
 * IDENTITY_BOUND so the system layer serves it to its taker only.
 * The loader's per-thread setup (set_tid_address, set_robust_list, rseq,
 * arch_prctl(ARCH_SET_FS)) and brk are allowed and recorded: the restorer
 * redoes exactly those.
 */
import { SnapshotRefusal } from './refusal.js';
import { ABSENT } from './regs.js';
import { ARCH } from './tracer-arch.js';

/**
 * The machine's syscall numbers, by name (regs-x86_64.ts, regs-aarch64.ts):
 * a call the machine lacks (aarch64's open, stat, access, arch_prctl) has a
 * number no stop reports, so its rules below never apply there.
 */
export const NR = ARCH.syscalls;

const NAMES = new Map<number, string>(Object.entries(NR).filter(([, v]) => v !== ABSENT).map(([k, v]) => [v, k]));
export const syscallName = (nr: number): string => NAMES.get(nr) ?? `#${nr}`;

const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const O_ACCMODE = 3;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;
const MAP_ANONYMOUS = 0x20;
const ARCH_SET_FS = 0x1002;
/** ARCH_GET_FS, ARCH_GET_GS, ARCH_GET_CPUID, ARCH_CET_STATUS (old CET probe): queries. */
const ARCH_PRCTL_QUERIES = new Set([0x1003, 0x1004, 0x1011, 0x3001]);
/** prctl options that only read: PR_GET_PDEATHSIG, PR_GET_DUMPABLE, PR_GET_KEEPCAPS, PR_GET_NAME,
 * PR_CAPBSET_READ, PR_GET_SECUREBITS, PR_GET_NO_NEW_PRIVS, PR_GET_THP_DISABLE. */
const PRCTL_QUERIES = new Set([2, 3, 7, 16, 23, 27, 39, 42]);
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_IS_SET = 1;
/** madvise advice that is only a hint or drops pages the capture then sees as they are:
 * NORMAL, RANDOM, SEQUENTIAL, WILLNEED, DONTNEED, FREE, HUGEPAGE, NOHUGEPAGE, COLD, PAGEOUT,
 * POPULATE_READ, POPULATE_WRITE. DONTFORK, WIPEONFORK, DONTDUMP, MERGEABLE... change behaviour
 * and a restore, which maps fresh memory, would lose them. */
const MADV_HARMLESS = new Set([0, 1, 2, 3, 4, 8, 14, 15, 20, 21, 22, 23]);
const MEMBARRIER_CMD_QUERY = 0;
const RSEQ_FLAG_UNREGISTER = 1;

/** Calls whose only effect is memory or a query the differential run or the key covers. */
const HARMLESS = new Set<number>([
  NR.mprotect, NR.munmap, NR.mremap, NR.brk, NR.sched_yield, NR.getpid, NR.gettid,
  // Identity queries: allowed, and the tracer marks the image IDENTITY_BOUND (access.ts).
  NR.getuid, NR.geteuid, NR.getgid, NR.getegid, NR.getgroups, NR.getresuid, NR.getresgid, NR.capget,
  NR.getrlimit, NR.futex, NR.sched_getaffinity, NR.getcpu, NR.clock_getres, NR.getrandom, NR.exit_group,
  NR.set_tid_address, NR.set_robust_list,
]);

/** Calls whose first argument is a file descriptor. */
const FD_FIRST = new Set<number>([
  NR.read, NR.pread64, NR.readv, NR.close, NR.fstat, NR.lseek, NR.fcntl, NR.fstatfs, NR.getdents64,
]);

/** Path arguments: which one, and whether it is relative to a dirfd in args[0]. */
const PATH_ARG = new Map<number, { index: number; at: boolean; kind: 'open' | 'probe' }>([
  [NR.open, { index: 0, at: false, kind: 'open' }],
  [NR.openat, { index: 1, at: true, kind: 'open' }],
  [NR.stat, { index: 0, at: false, kind: 'probe' }],
  [NR.lstat, { index: 0, at: false, kind: 'probe' }],
  [NR.access, { index: 0, at: false, kind: 'probe' }],
  [NR.readlink, { index: 0, at: false, kind: 'probe' }],
  [NR.statfs, { index: 0, at: false, kind: 'probe' }],
  [NR.newfstatat, { index: 1, at: true, kind: 'probe' }],
  [NR.readlinkat, { index: 1, at: true, kind: 'probe' }],
  [NR.faccessat, { index: 1, at: true, kind: 'probe' }],
  [NR.faccessat2, { index: 1, at: true, kind: 'probe' }],
  [NR.statx, { index: 1, at: true, kind: 'probe' }],
]);

export interface PathUse {
  path: string;
  kind: 'open' | 'probe';
}

const int = (v: bigint | undefined): number => Number(BigInt.asIntN(32, v ?? 0n));

function refuse(nr: number, why: string): never {
  throw new SnapshotRefusal('unsupported-syscall', `${syscallName(nr)} before the entry point: ${why}`);
}

function ownFd(nr: number, fd: number): void {
  // Every fd above 2 was opened by the program itself (the spawn closes the rest).
  if (fd <= 2) refuse(nr, `fd ${fd} is the caller's stdio at a restore, /dev/null here`);
}

/**
 * Checks one syscall at its entry stop; throws a refusal when the image could
 * not stand for a cold start. Returns the path it names, if any (read from the
 * tracee with readString), for the dependency lists.
 */
export function checkSyscall(nr: number, args: readonly bigint[], readString: (addr: bigint) => string, selfPid: number): PathUse | null {
  const a = (i: number): bigint => args[i] ?? 0n;
  if (HARMLESS.has(nr)) return null;
  if (FD_FIRST.has(nr)) {
    ownFd(nr, int(a(0)));
    return null;
  }
  const pathArg = PATH_ARG.get(nr);
  if (pathArg) {
    const p = readString(a(pathArg.index));
    if (nr === NR.open || nr === NR.openat) {
      const flags = int(a(pathArg.index + 1));
      if ((flags & O_ACCMODE) !== 0 || flags & (O_CREAT | O_TRUNC)) refuse(nr, `${p} opened for writing`);
      // Its own /proc files describe the snapshot process (maps, status, cmdline...), not the restored one.
      if (new RegExp(`^/proc/(self|thread-self|${selfPid})(/|$)`).test(p)) refuse(nr, `reads ${p}`);
    }
    if (p === '' && pathArg.at && (nr === NR.newfstatat || nr === NR.statx) && int(a(nr === NR.statx ? 2 : 3)) & AT_EMPTY_PATH) {
      ownFd(nr, int(a(0))); // fstat of a descriptor
      return null;
    }
    if (!p.startsWith('/')) {
      const base = pathArg.at && int(a(0)) !== AT_FDCWD ? `fd ${int(a(0))}` : 'the working directory';
      refuse(nr, `"${p}" is relative to ${base}, which a restore does not share`);
    }
    return { path: p, kind: pathArg.kind };
  }
  switch (nr) {
    case NR.mmap:
      if ((int(a(3)) & MAP_ANONYMOUS) === 0) ownFd(nr, int(a(4)));
      return null;
    case NR.madvise:
      if (MADV_HARMLESS.has(int(a(2)))) return null;
      return refuse(nr, `advice ${int(a(2))} marks the mapping in a way a restore would lose`);
    case NR.arch_prctl:
      if (int(a(0)) === ARCH_SET_FS || ARCH_PRCTL_QUERIES.has(int(a(0)))) return null;
      return refuse(nr, `code 0x${int(a(0)).toString(16)}`);
    case NR.prctl:
      // Queries only (libcap's constructor probes the capability count with PR_CAPBSET_READ).
      if (PRCTL_QUERIES.has(int(a(0)))) return null;
      if (int(a(0)) === PR_CAP_AMBIENT && a(1) === BigInt(PR_CAP_AMBIENT_IS_SET)) return null;
      return refuse(nr, `option ${int(a(0))} changes process state`);
    case NR.prlimit64:
      // glibc reads RLIMIT_STACK for its default thread stack size: a read is allowed.
      if (a(2) === 0n && a(0) === 0n) return null;
      return refuse(nr, 'sets a resource limit');
    case NR.rt_sigprocmask:
      if (a(1) === 0n) return null; // querying the mask only
      return refuse(nr, 'changes the signal mask');
    case NR.rt_sigaction:
      if (a(1) === 0n) return null; // querying a disposition only
      return refuse(nr, `installs a disposition for signal ${int(a(0))}`);
    case NR.sigaltstack:
      if (a(0) === 0n) return null;
      return refuse(nr, 'installs an alternate signal stack');
    case NR.membarrier:
      if (int(a(0)) === MEMBARRIER_CMD_QUERY) return null;
      return refuse(nr, `command ${int(a(0))} registers the process`);
    case NR.rseq:
      return null; // recorded by the tracer (registration or unregistration)
    case NR.clock_gettime: case NR.gettimeofday: case NR.time:
      return refuse(nr, 'reads the clock: a restore would keep the snapshot\'s time');
    case NR.getcwd:
      return refuse(nr, 'the working directory is the caller\'s at a restore');
    case NR.getppid: case NR.getpgrp:
      return refuse(nr, 'the parent and process group are the caller\'s at a restore');
    case NR.uname: case NR.sysinfo:
      return refuse(nr, 'host facts (name, memory, uptime) are not part of the image key');
    case NR.write: case NR.writev: case NR.pwrite64:
      return refuse(nr, `output to fd ${int(a(0))} would not be repeated by a restore`);
    case NR.ioctl:
      return refuse(nr, `request 0x${int(a(1)).toString(16)} on fd ${int(a(0))}`);
  }
  return refuse(nr, 'creates or reads state a restore would not recreate');
}

export { RSEQ_FLAG_UNREGISTER, ARCH_SET_FS };
