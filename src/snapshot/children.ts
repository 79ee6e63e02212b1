/**
 * The init's children, traced only to learn which files they read.
 *
 * An rc file that runs `eval "$(pyenv init -)"` depends on everything pyenv
 * reads: its scripts, its version file, the programs it execs. The tracer
 * follows every child and grandchild (PTRACE_O_TRACEFORK/VFORK), notes the
 * paths they open, probe or exec, and lets them run otherwise untouched: no
 * policy, no fake answers (they are not part of the image). Files a child
 * created are its output, not a dependency. What they do outside their
 * memory goes to the run's effect journal (effects.ts) and their identity
 * queries to its IdentityUse (access.ts), as the init's own do.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as L from '../sys/libc.js';
import { readCString } from './mem.js';
import { NR } from './syscalls.js';
import { accessMode, type PathEvent } from './trace.js';
import type { EffectJournal, PendingEffect } from './effects.js';
import type { IdentityUse } from './access.js';

const AT_FDCWD = -100;
/** An exec needs the program's x bit: for others too (access.ts), like access(X_OK). */
const withExec = (p: Child['pending']): Child['pending'] => (p ? { ...p, accessMode: 1 } : p);
const O_ACCMODE = 3n;
const O_CREAT = 0o100n;
const EXECVE = 59;
const EXECVEAT = 322;
const OPENAT2 = 437;

interface Child {
  mem?: number;
  pending?: { path: string; open: boolean; write: boolean; nr: number; accessMode?: number };
  effect?: PendingEffect | undefined;
  /** "a child of the init (pid N, PROGRAM)", once asked for (reset at exec). */
  who?: string;
  attached: boolean;
}

export class TracedChildren {
  private readonly children = new Map<number, Child>();
  readonly paths: PathEvent[] = [];
  private readonly created = new Set<string>();

  constructor(private readonly effects?: EffectJournal, private readonly identity?: IdentityUse) {}

  /** Handles one stop of a child (not the main tracee) and lets it go on. */
  handle(st: L.WaitStatus): void {
    const tid = st.pid;
    if (st.exited || st.signaled) {
      this.forget(tid);
      return;
    }
    let c = this.children.get(tid);
    if (!c) {
      c = { attached: false };
      this.children.set(tid, c);
    }
    let signal = 0;
    if (st.stopSig === (L.SIGTRAP | 0x80)) {
      const info = L.getSyscallInfo(tid);
      if (info.op === L.SYSCALL_INFO_ENTRY) {
        c.pending = this.pathOf(tid, c, info.nr, info.args);
        const who = (c.who ??= `a child of the init (pid ${tid}, ${this.exeOf(tid)})`);
        this.identity?.note(info.nr, who);
        c.effect = this.effects?.entry(info.nr, info.args, {
          tid, who, str: (a) => this.str(tid, c as Child, a), bytes: (a, n) => this.bytes(tid, c as Child, a, n),
          ownProcess: (id) => this.children.has(id),
        });
      } else if (info.op === L.SYSCALL_INFO_EXIT) {
        if (c.pending) this.record(tid, c.pending, info.rval);
        if (c.effect) this.effects?.exit(c.effect, info.rval);
        delete c.pending;
        delete c.effect;
      }
    } else if (st.event !== 0) {
      // fork, vfork, exec of the child: nothing to note (an exec's path was noted at its entry).
      // After an exec, /proc/PID/mem opened before it reads the old, gone address space.
      if (st.event === L.PTRACE_EVENT_EXEC) {
        this.closeMem(c);
        delete c.who;
      }
    } else if (st.stopSig === L.SIGSTOP && !c.attached) {
      // The stop a new tracee starts with.
    } else {
      signal = st.stopSig;
    }
    c.attached = true;
    try {
      L.ptrace(L.PTRACE_SYSCALL, tid, 0, signal);
    } catch {
      this.forget(tid); // killed meanwhile
    }
  }

  /** Files the children read that are still what they read; the ones they wrote are left out. */
  dependencies(): PathEvent[] {
    return this.paths.filter((e) => {
      if (this.created.has(e.path)) return false;
      if (!e.opened) return true;
      try {
        const now = fs.statSync(e.path, { bigint: true });
        return now.ino === e.opened.ino && now.dev === e.opened.dev && now.mtimeNs === e.opened.mtimeNs;
      } catch {
        return false; // a temporary file, gone again
      }
    });
  }

  /** Kills every child still traced (a refused or finished snapshot leaves none behind). */
  killAll(): void {
    for (const tid of [...this.children.keys()]) {
      try {
        L.kill(tid, L.SIGKILL);
      } catch {
        /* gone */
      }
      this.forget(tid);
    }
  }

  private closeMem(c: Child): void {
    if (c.mem === undefined) return;
    try {
      fs.closeSync(c.mem);
    } catch {
      /* closed */
    }
    delete c.mem;
  }

  private forget(tid: number): void {
    const c = this.children.get(tid);
    if (c) this.closeMem(c);
    this.children.delete(tid);
  }

  private str(tid: number, c: Child, addr: bigint): string {
    c.mem ??= fs.openSync(`/proc/${tid}/mem`, 'r');
    return readCString(c.mem, addr);
  }

  private bytes(tid: number, c: Child, addr: bigint, n: number): Buffer {
    c.mem ??= fs.openSync(`/proc/${tid}/mem`, 'r');
    const b = Buffer.alloc(n);
    try {
      fs.readSync(c.mem, b, 0, n, Number(addr));
    } catch { /* unreadable: zeros */ }
    return b;
  }

  private exeOf(tid: number): string {
    try {
      return fs.readlinkSync(`/proc/${tid}/exe`);
    } catch {
      return '?';
    }
  }

  private resolve(tid: number, dirfd: bigint, p: string): string {
    if (p.startsWith('/')) return p;
    const base = BigInt.asIntN(32, dirfd) === BigInt(AT_FDCWD) ? `/proc/${tid}/cwd` : `/proc/${tid}/fd/${dirfd}`;
    try {
      return path.join(fs.readlinkSync(base), p);
    } catch {
      return '';
    }
  }

  private pathOf(tid: number, c: Child, nr: number, a: bigint[]): Child['pending'] {
    const arg = (i: number): bigint => a[i] ?? 0n;
    const at = (dirfd: bigint, p: bigint, open: boolean, flags = 0n): Child['pending'] => {
      let s: string;
      try {
        s = this.str(tid, c, p);
      } catch {
        return undefined;
      }
      if (!s) return undefined;
      return { path: this.resolve(tid, dirfd, s), open, write: (flags & O_ACCMODE) !== 0n || (flags & O_CREAT) !== 0n, nr, ...accessMode(nr, a) };
    };
    const cwd = BigInt(AT_FDCWD);
    switch (nr) {
      case NR.open: return at(cwd, arg(0), true, arg(1));
      case NR.openat: return at(arg(0), arg(1), true, arg(2));
      case OPENAT2: return at(arg(0), arg(1), true);
      case EXECVE: return withExec(at(cwd, arg(0), false));
      case EXECVEAT: return withExec(at(arg(0), arg(1), false));
      case NR.stat: case NR.lstat: case NR.access: case NR.readlink:
        return at(cwd, arg(0), false);
      case NR.newfstatat: case NR.statx: case NR.faccessat: case NR.faccessat2: case NR.readlinkat:
        return at(arg(0), arg(1), false);
      default:
        return undefined;
    }
  }

  private record(tid: number, p: NonNullable<Child['pending']>, rval: bigint): void {
    if (!p.path) return;
    if (p.write) {
      this.created.add(p.path);
      return;
    }
    // readlink of something that is no symlink (EINVAL): it exists, like a successful stat.
    const result = (p.nr === NR.readlink || p.nr === NR.readlinkat) && rval === -22n ? 0 : Number(rval);
    // Other failures (EACCES, ELOOP...) say nothing a file entry can check: not a dependency.
    if (result < 0 && result !== -2 && result !== -20) return;
    const ev: PathEvent = { path: p.path, result, kind: p.open ? 'open' : 'probe', ...(p.accessMode ? { accessMode: p.accessMode } : {}) };
    if (p.open && rval >= 0n) {
      try {
        ev.opened = fs.statSync(`/proc/${tid}/fd/${rval}`, { bigint: true });
      } catch {
        return;
      }
    }
    this.paths.push(ev);
  }
}
