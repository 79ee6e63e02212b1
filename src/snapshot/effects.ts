/**
 * Side effects of a post-init snapshot's init outside its own memory.
 *
 * A restore repeats none of what the init did to the world: an rc file that
 * appends to a log appends on every cold run and never on a restore. So an
 * init (or any child of it) that leaves a lasting mark is refused, naming the
 * syscall and the file, socket or process:
 *  - files: opened for writing, created, truncated, renamed, unlinked,
 *    linked, made (mkdir, mknod), chmod/chown, times or attributes set;
 *  - sockets: connecting, binding, listening, sending to an address (except
 *    the name-service sockets glibc asks user and host lookups on);
 *  - other processes: signals to anything but the init's own children;
 *  - the system: mounts, clocks, host name, modules, System V IPC objects,
 *    io_uring (whose operations no tracer sees).
 * Judged at each syscall's exit: a call that failed changed nothing. What
 * the init created and removed again before the checkpoint (a temporary file,
 * a heredoc, mktemp -d; rm -rf) left no mark and is no effect. Writes through
 * a descriptor are no effect by themselves (pipes, the caller's stdio, which
 * the output check covers): opening the file for writing was.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NR } from './syscalls.js';
import { ABSENT } from './regs.js';

export interface Effect {
  /** One line: who, which syscall, what it touched. */
  detail: string;
}

/** What the tracer can read of the calling task at a syscall's entry. */
export interface TaskView {
  tid: number;
  /** "the init" or "a child of the init (pid N, PROGRAM)". */
  who: string;
  str: (addr: bigint) => string;
  bytes: (addr: bigint, n: number) => Buffer;
  /** The init's own children (and theirs): signalling them is the init's business. */
  ownProcess: (pid: number) => boolean;
}

/** A syscall seen at its entry, judged at its exit. */
export interface PendingEffect {
  nr: number;
  tid: number;
  who: string;
  /** The file an open or creation names, absolute. */
  target?: string;
  /** rename/link: the second path. */
  target2?: string;
  /** Whether target (target2 for rename and link) existed at the call's entry. */
  existed?: boolean;
  /** fd-based calls: what the descriptor refers to. */
  fdTarget?: string;
  /** A lasting effect if the call succeeds, described; undefined = decided at exit (open). */
  detail?: string;
}

/**
 * The calls this module judges, by name: the machine's numbers (regs.ts;
 * aarch64 lacks creat, rename, unlink, mkdir... and has only their *at forms:
 * ABSENT, a number no stop reports).
 */
const E = NR;

const NAMES = new Map<number, string>(Object.entries(NR).filter(([, v]) => v !== ABSENT).map(([k, v]) => [v, k]));
const nameOf = (nr: number): string => NAMES.get(nr) ?? `syscall ${nr}`;

const AT_FDCWD = -100;
const AT_REMOVEDIR = 0x200;
const O_ACCMODE = 3n;
const O_CREAT = 0o100n;
const O_TRUNC = 0o1000n;
const O_TMPFILE = 0o20000000n;
const IPC_CREAT = 0o1000n;
const IPC_RMID = 0n;
const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
/** syslog(2) actions that change the kernel log or console: READ_CLEAR, CLEAR, CONSOLE_OFF/ON/LEVEL. */
const SYSLOG_CHANGES = new Set([4n, 5n, 6n, 7n, 8n]);
/** Devices that swallow or produce bytes without a mark anywhere. */
const NEUTRAL_DEVICES = new Set(['/dev/null', '/dev/zero', '/dev/full', '/dev/tty']);
/**
 * Sockets glibc's name service asks (getpwnam, getaddrinfo through nscd or
 * systemd-userdbd): an rc file's `id -un` or `ls -l` queries them; nothing
 * is changed by asking.
 */
const IN6_LOOPBACK = Buffer.from('00000000000000000000000000000001', 'hex');
const NAME_SERVICE_SOCKETS = [/^\/(var\/)?run\/nscd\/socket$/, /^\/run\/systemd\/userdb\//];

/** Calls that change the system itself when they succeed. */
const SYSTEM_CALLS = new Set<number>([E.mount, E.umount2, E.swapon, E.swapoff, E.reboot, E.sethostname, E.setdomainname,
  E.settimeofday, E.clock_settime, E.clock_adjtime, E.init_module, E.finit_module, E.delete_module, E.acct, E.quotactl,
  E.pivot_root, E.bpf, E.move_mount, E.fsmount, E.mount_setattr]);

const int = (v: bigint | undefined): number => Number(BigInt.asIntN(32, v ?? 0n));

function readlinkOr(p: string): string {
  try {
    return fs.readlinkSync(p);
  } catch {
    return '';
  }
}

function exists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Not a file anyone else sees: a pipe, socket, anonymous inode, memfd, or a file already unlinked. */
const internalTarget = (t: string): boolean => !t.startsWith('/') || t.startsWith('/memfd:') || t.endsWith(' (deleted)');

export class EffectJournal {
  private readonly lasting: Effect[] = [];
  /** Files and directories the init created, by path: gone again by the checkpoint, they left no mark. */
  private readonly created = new Map<string, Effect>();
  /** Every path the init created or removed, even when nothing of it is left: its own files, not dependencies. */
  readonly made = new Set<string>();
  /** Off from the checkpoint on: the test context's resume is thrown away. */
  active = true;

  /** Whether `p` is (or is below) something the init made or removed. */
  madeByInit(p: string): boolean {
    for (let q = p; q.length > 1; q = path.dirname(q)) if (this.made.has(q)) return true;
    return false;
  }

  /** Effects that outlast the init, in the order they happened. */
  effects(): Effect[] {
    return [...this.lasting, ...this.created.values()];
  }

  /** At a syscall's entry: what to judge at its exit, or undefined for calls with no effect outside memory. */
  entry(nr: number, args: readonly bigint[], t: TaskView): PendingEffect | undefined {
    if (!this.active) return undefined;
    const a = (i: number): bigint => args[i] ?? 0n;
    const call = nameOf(nr);
    const p = (dirfd: bigint, addr: bigint): string => this.resolve(t.tid, dirfd, t.str(addr));
    const cwd = BigInt(AT_FDCWD);
    const base = { nr, tid: t.tid, who: t.who };
    const onPath = (target: string, what: string): PendingEffect => ({ ...base, target, existed: exists(target), detail: `${call} ${target}: ${what}` });
    const onFd = (fd: bigint, what: string): PendingEffect | undefined => {
      const fdTarget = readlinkOr(`/proc/${t.tid}/fd/${int(fd)}`);
      return internalTarget(fdTarget) ? undefined : { ...base, fdTarget, target: fdTarget, existed: true, detail: `${call} ${fdTarget}: ${what}` };
    };
    switch (nr) {
      case NR.open: return this.opening(base, p(cwd, a(0)), a(1));
      case NR.openat: return this.opening(base, p(a(0), a(1)), a(2));
      case E.openat2: return this.opening(base, p(a(0), a(1)), t.bytes(a(2), 8).readBigUInt64LE(0));
      case E.creat: return this.opening(base, p(cwd, a(0)), 0o1101n /* O_CREAT|O_WRONLY|O_TRUNC */);
      case E.truncate: return onPath(p(cwd, a(0)), 'truncated');
      case E.ftruncate: case E.fallocate: return onFd(a(0), 'resized');
      case E.rename: return this.renaming(base, call, p(cwd, a(0)), p(cwd, a(1)));
      case E.renameat: case E.renameat2: return this.renaming(base, call, p(a(0), a(1)), p(a(2), a(3)));
      case E.unlink: case E.rmdir: return onPath(p(cwd, a(0)), 'removed');
      case E.unlinkat: return onPath(p(a(0), a(1)), (int(a(2)) & AT_REMOVEDIR) ? 'removed (a directory)' : 'removed');
      case E.link: return this.linking(base, call, p(cwd, a(0)), p(cwd, a(1)));
      case E.linkat: return this.linking(base, call, p(a(0), a(1)), p(a(2), a(3)));
      case E.symlink: return this.linking(base, call, t.str(a(0)), p(cwd, a(1)));
      case E.symlinkat: return this.linking(base, call, t.str(a(0)), p(a(1), a(2)));
      case E.mkdir: case E.mknod: return onPath(p(cwd, a(0)), 'created');
      case E.mkdirat: case E.mknodat: return onPath(p(a(0), a(1)), 'created');
      case E.chmod: case E.chown: case E.lchown: return onPath(p(cwd, a(0)), 'owner or mode changed');
      case E.fchmodat: case E.fchmodat2: case E.fchownat: return onPath(p(a(0), a(1)), 'owner or mode changed');
      case E.fchmod: case E.fchown: return onFd(a(0), 'owner or mode changed');
      case E.utime: case E.utimes: return onPath(p(cwd, a(0)), 'times set');
      case E.futimesat: return onPath(p(a(0), a(1)), 'times set');
      case E.utimensat: return a(1) === 0n ? onFd(a(0), 'times set') : onPath(p(a(0), a(1)), 'times set');
      case E.setxattr: case E.lsetxattr: case E.removexattr: case E.lremovexattr: return onPath(p(cwd, a(0)), 'extended attribute changed');
      case E.fsetxattr: case E.fremovexattr: return onFd(a(0), 'extended attribute changed');
      case E.connect: case E.bind: return this.socketCall(base, call, t, a(1), int(a(2)));
      case E.sendto: return a(4) === 0n ? undefined : this.socketCall(base, call, t, a(4), int(a(5)));
      case E.sendmsg: {
        const hdr = t.bytes(a(1), 12);
        const name = hdr.readBigUInt64LE(0);
        return name === 0n ? undefined : this.socketCall(base, call, t, name, hdr.readInt32LE(8));
      }
      case E.sendmmsg: return { ...base, detail: `${call}: sent messages on a socket` };
      case E.listen: return { ...base, detail: `${call}: listens on a socket` };
      case E.kill: case E.rt_sigqueueinfo: return this.signalling(base, call, t, int(a(0)), a(1));
      case E.tgkill: return this.signalling(base, call, t, int(a(0)), a(2));
      case E.tkill: return this.signalling(base, call, t, int(a(0)), a(1));
      case E.rt_tgsigqueueinfo: return this.signalling(base, call, t, int(a(0)), a(2));
      case E.pidfd_send_signal: return a(1) === 0n ? undefined : { ...base, detail: `${call}: signal ${a(1)} to another process` };
      case E.process_vm_writev: case E.ptrace: return { ...base, detail: `${call}: changes another process` };
      case E.syslog: return SYSLOG_CHANGES.has(a(0)) ? { ...base, detail: `${call}(${a(0)}): changes the kernel log or console` } : undefined;
      case E.adjtimex: return (t.bytes(a(0), 4).readUInt32LE(0) !== 0) ? { ...base, detail: `${call}: sets the clock` } : undefined;
      case E.mq_open: return (a(1) & O_CREAT) ? { ...base, detail: `${call} ${t.str(a(0))}: creates a message queue` } : undefined;
      case E.mq_unlink: return { ...base, detail: `${call} ${t.str(a(0))}: removes a message queue` };
      case E.shmget: case E.semget: case E.msgget:
        return (a(nr === E.shmget ? 2 : nr === E.semget ? 2 : 1) & IPC_CREAT) ? { ...base, detail: `${call}: creates a System V IPC object` } : undefined;
      case E.shmctl: case E.semctl: case E.msgctl:
        return a(nr === E.semctl ? 2 : 1) === IPC_RMID ? { ...base, detail: `${call}: removes a System V IPC object` } : undefined;
      case E.io_uring_setup: return { ...base, detail: `${call}: io_uring operations cannot be seen by the tracer` };
    }
    if (SYSTEM_CALLS.has(nr)) return { ...base, detail: `${call}: changes the system` };
    return undefined;
  }

  /** At the syscall's exit: records what it did. */
  exit(p: PendingEffect, rval: bigint): void {
    if (!this.active || rval < 0n) return; // a failed call changed nothing
    const what = p.detail ?? this.openedDetail(p, rval);
    if (!what) return; // an open of a pipe, a device sink or an unnamed file
    const detail = `${p.who}: ${what}`;
    const target = p.target;
    if (target && !p.fdTarget) this.made.add(target);
    if (p.target2) this.made.add(p.target2);
    switch (p.nr) {
      case NR.open: case NR.openat: case E.openat2: case E.creat:
      case E.mkdir: case E.mkdirat: case E.mknod: case E.mknodat:
        if (target && !p.existed) {
          this.created.set(target, { detail: detail.replace(/: [^:]*$/, ': created') });
          return;
        }
        if (target && this.created.has(target)) return; // changing what the init itself created
        break;
      case E.unlink: case E.unlinkat: case E.rmdir:
        if (target && this.created.delete(target)) {
          for (const k of [...this.created.keys()]) if (k.startsWith(`${target}/`)) this.created.delete(k);
          return; // created and removed again: no mark left
        }
        break;
      case E.rename: case E.renameat: case E.renameat2: {
        const made = target ? this.created.get(target) : undefined;
        if (target && made && p.target2 && !p.existed) {
          this.created.delete(target);
          this.created.set(p.target2, { detail: `${p.who}: ${nameOf(p.nr)} ${target} to ${p.target2}: created` });
          return;
        }
        break;
      }
      default:
        if (target && this.created.has(target)) return;
    }
    this.lasting.push({ detail });
  }

  private opening(base: Pick<PendingEffect, 'nr' | 'tid' | 'who'>, target: string, flags: bigint): PendingEffect | undefined {
    const writes = (flags & O_ACCMODE) !== 0n || (flags & (O_CREAT | O_TRUNC)) !== 0n;
    if (!writes || !target) return undefined;
    // O_TMPFILE makes an unnamed file: nothing anyone sees unless linked (linkat is judged on its own).
    if ((flags & O_TMPFILE) === O_TMPFILE) return undefined;
    return { ...base, target, existed: exists(target) };
  }

  /** An open for writing: a mark only on a file or directory others see, or a device that is not a sink. */
  private openedDetail(p: PendingEffect, fd: bigint): string {
    const at = readlinkOr(`/proc/${p.tid}/fd/${fd}`) || (p.target ?? '');
    if (NEUTRAL_DEVICES.has(at) || internalTarget(at)) return '';
    return `${nameOf(p.nr)} ${at}: opened for writing`;
  }

  private renaming(base: Pick<PendingEffect, 'nr' | 'tid' | 'who'>, call: string, from: string, to: string): PendingEffect {
    return { ...base, target: from, target2: to, existed: exists(to), detail: `${call} ${from} to ${to}: renamed` };
  }

  private linking(base: Pick<PendingEffect, 'nr' | 'tid' | 'who'>, call: string, from: string, to: string): PendingEffect {
    return { ...base, target: to, existed: exists(to), detail: `${call} ${to} (to ${from}): created` };
  }

  private socketCall(base: Pick<PendingEffect, 'nr' | 'tid' | 'who'>, call: string, t: TaskView, addr: bigint, len: number): PendingEffect | undefined {
    if (addr === 0n || len < 2) return undefined;
    const sa = t.bytes(addr, Math.min(Math.max(len, 2), 110));
    const family = sa.readUInt16LE(0);
    let where: string;
    if (family === AF_UNIX) {
      const raw = sa.subarray(2);
      const z = raw.indexOf(0);
      where = raw[0] === 0 ? `@${raw.subarray(1).toString('latin1').replace(/\0+$/, '')}` : raw.subarray(0, z < 0 ? raw.length : z).toString('utf8');
      if (!where || NAME_SERVICE_SOCKETS.some((re) => re.test(where))) return undefined;
    } else if (family === AF_INET && sa.length >= 8) {
      if (call === 'bind' && sa.readUInt16BE(2) === 0 && sa[4] === 127) return undefined; // see below
      where = `${[...sa.subarray(4, 8)].join('.')}:${sa.readUInt16BE(2)}`;
    } else if (family === AF_INET6 && sa.length >= 24) {
      // A bind to port 0 of the loopback address: a probe of what the machine supports
      // (urllib3's HAS_IPV6, imported by requests, botocore, pip). The port is the
      // kernel's pick and nobody can reach it; the socket is gone by the checkpoint
      // (only fds 0-2 may be open there), so nothing of it outlasts the init.
      if (call === 'bind' && sa.readUInt16BE(2) === 0 && sa.subarray(8, 24).equals(IN6_LOOPBACK)) return undefined;
      where = `[${sa.subarray(8, 24).toString('hex').replace(/(.{4})(?!$)/g, '$1:')}]:${sa.readUInt16BE(2)}`;
    } else if (family === 16 /* AF_NETLINK: requests to the kernel */ || family === 0 /* AF_UNSPEC: a disconnect */) {
      return undefined;
    } else {
      where = `address family ${family}`;
    }
    return { ...base, detail: `${call} ${where}: a socket outside the process` };
  }

  private signalling(base: Pick<PendingEffect, 'nr' | 'tid' | 'who'>, call: string, t: TaskView, pid: number, sig: bigint): PendingEffect | undefined {
    if (sig === 0n) return undefined; // a probe: does it exist?
    if (pid > 0 && t.ownProcess(pid)) return undefined;
    const whom = pid > 0 ? `process ${pid}` : pid === 0 ? 'its process group' : pid === -1 ? 'every process it may signal' : `process group ${-pid}`;
    return { ...base, detail: `${call}: signal ${sig} to ${whom}` };
  }

  private resolve(tid: number, dirfd: bigint, p: string): string {
    if (p.startsWith('/')) return path.normalize(p);
    const baseDir = int(dirfd) === AT_FDCWD ? readlinkOr(`/proc/${tid}/cwd`) : readlinkOr(`/proc/${tid}/fd/${int(dirfd)}`);
    return baseDir.startsWith('/') ? path.join(baseDir, p) : p;
  }
}
