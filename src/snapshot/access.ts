/**
 * Who else could have taken this image.
 *
 * An image holds what its snapshot read and what the program learnt about
 * who ran it. Another user may be served the same image (the system layer
 * serves every user) only when neither depends on identity:
 *  - the traced program (before the entry point, or during the init and in
 *    its children) asked for its identity: getuid, geteuid, getgid, getegid,
 *    getgroups, getresuid, getresgid, capget; or asked access() for more than
 *    existence on a file whose "other" bits do not grant it;
 *  - it read a file "others" cannot read (no o+r), reached a path through a
 *    directory others cannot search (no o+x), or listed a directory others
 *    cannot list (no o+r).
 * Either makes the image IDENTITY_BOUND: the launcher serves it to key.euid
 * only, and a system-layer image is written 0600.
 *
 * The directories on the way to every dependency also become ACCESS entries
 * (mode, uid and gid compared at restore): a later `chmod 700` of a parent
 * takes away what a cold run could read, and the image must notice.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageFile } from '../image/format.js';
import { FileKind } from '../image/schema.js';
import { isPseudoPath } from './files.js';
import type { PathEvent } from './trace.js';
import { NR } from './syscalls.js';
import { ABSENT } from './regs.js';

/** Syscalls that tell a process who it is (the machine's numbers). */
export const IDENTITY_SYSCALLS: ReadonlyMap<number, string> = new Map(
  (['getuid', 'getgid', 'geteuid', 'getegid', 'getgroups', 'getresuid', 'getresgid', 'capget'] as const).map((n) => [NR[n], n]),
);
/** access(2) family: which argument holds the mode (F_OK = 0 asks only for existence); aarch64 has no access(2). */
export const ACCESS_MODE_ARG: ReadonlyMap<number, number> = new Map(
  ([['access', 1], ['faccessat', 2], ['faccessat2', 2]] as const).filter(([n]) => NR[n] !== ABSENT).map(([n, i]) => [NR[n], i]),
);

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IROTH = 0o4;
const S_IWOTH = 0o2;
const S_IXOTH = 0o1;

/** What made an image depend on its taker, or nothing. */
export class IdentityUse {
  /** Identity syscalls seen, with who made them. */
  readonly asked: string[] = [];

  /** Notes an identity query at a syscall's entry (from the program or a child of its init). */
  note(nr: number, who: string): void {
    const name = IDENTITY_SYSCALLS.get(nr);
    if (name && this.asked.length < 8 && !this.asked.some((a) => a.startsWith(`${name} `))) this.asked.push(`${name} (${who})`);
  }
}

interface Dir {
  mode: number;
  uid: number;
  gid: number;
  st: fs.BigIntStats;
}

/**
 * Answers "could others do what the snapshot did" for paths, caching one stat
 * per directory, and collects the directories passed on the way.
 */
export class AccessWalk {
  private readonly dirs = new Map<string, Dir | null>();

  private dir(d: string): Dir | null {
    let v = this.dirs.get(d);
    if (v === undefined) {
      try {
        const st = fs.statSync(d, { bigint: true });
        v = (Number(st.mode) & S_IFMT) === S_IFDIR ? { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), st } : null;
      } catch {
        v = null;
      }
      this.dirs.set(d, v);
    }
    return v;
  }

  /** Every existing directory a lookup of `p` passes: its lexical parents and, through symlinks, their real ones. */
  private ancestors(p: string): string[] {
    const out: string[] = [];
    const parts = path.normalize(p).split('/').filter(Boolean);
    for (let i = 0; i < parts.length; i++) {
      const d = `/${parts.slice(0, i).join('/')}`;
      if (!this.dir(d)) break; // missing from here on: the ABSENT entry or the file's own check covers it
      out.push(d);
      let real = d;
      try {
        real = fs.realpathSync(d);
      } catch { /* raced away */ }
      if (real !== d) for (const r of this.ancestors(`${real}/x`)) if (!out.includes(r)) out.push(r);
    }
    return out;
  }

  /** The first directory on the way to `p` that others cannot search, or null; adds every directory passed to `passed`. */
  unsearchable(p: string, passed?: Set<string>): string | null {
    let bad: string | null = null;
    for (const d of this.ancestors(p)) {
      passed?.add(d);
      if (bad === null && !((this.dir(d)?.mode ?? 0) & S_IXOTH)) bad = d;
    }
    return bad;
  }

  stat(d: string): Dir | null {
    return this.dir(d);
  }
}

const modeBits = (m: number): string => (m & 0o7777).toString(8).padStart(4, '0');

/**
 * Why others could not have done what the snapshot did with these paths, or
 * null. `events` are the opens and probes that succeeded or failed with
 * ENOENT/ENOTDIR (the program's and its children's); `mapped` the files the
 * image maps; `listed` the directories it listed.
 */
export function othersCannot(walk: AccessWalk, events: readonly PathEvent[], mapped: readonly string[], listed: readonly string[]): string | null {
  const reasons: string[] = [];
  const note = (r: string): void => {
    if (reasons.length < 3 && !reasons.includes(r)) reasons.push(r);
  };
  const readable = (p: string, need: number, what: string): void => {
    const dir = walk.unsearchable(p);
    if (dir) return note(`${what} ${p} is behind ${dir}, which others cannot search`);
    if (!need) return;
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return; // gone meanwhile: files.ts refuses a dependency that changed
    }
    if ((st.mode & need) !== need) note(`${what} ${p} (mode ${modeBits(st.mode)}) is not ${need === S_IROTH ? 'readable' : 'accessible'} by others`);
  };
  for (const m of mapped) readable(m, S_IROTH, 'mapped');
  for (const d of listed) readable(d, S_IROTH, 'listed directory');
  for (const e of events) {
    if (isPseudoPath(e.path) || !e.path.startsWith('/')) continue;
    if (e.result < 0) {
      // A miss is a miss for others too only when they can search the way there.
      const dir = walk.unsearchable(e.path);
      if (dir) note(`probed ${e.path} behind ${dir}, which others cannot search`);
      continue;
    }
    const isFile = e.opened ? (Number(e.opened.mode) & S_IFMT) === S_IFREG : true;
    if (e.kind === 'open' && isFile) readable(e.path, S_IROTH, 'read');
    else if (e.accessMode) {
      const need = (e.accessMode & 4 ? S_IROTH : 0) | (e.accessMode & 2 ? S_IWOTH : 0) | (e.accessMode & 1 ? S_IXOTH : 0);
      readable(e.path, need, `access(${e.accessMode}) of`);
    } else readable(e.path, 0, 'probed');
  }
  return reasons.length ? reasons.join('; ') : null;
}

/**
 * ACCESS entries for the directories passed on the way to the image's files
 * (each once; not the ones that already are entries, whose identity check
 * covers their mode too).
 */
export function accessEntries(walk: AccessWalk, files: readonly ImageFile[]): ImageFile[] {
  const passed = new Set<string>();
  for (const f of files) if (f.kind !== FileKind.ACCESS) walk.unsearchable(f.path, passed);
  const have = new Set(files.map((f) => f.path));
  const out: ImageFile[] = [];
  for (const d of passed) {
    const s = walk.stat(d);
    if (!s || have.has(d)) continue;
    out.push({
      path: d, kind: FileKind.ACCESS, flags: 0, dev: s.st.dev, ino: s.st.ino, size: 0n, mode: s.mode, uid: s.uid, gid: s.gid,
      mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0,
    });
  }
  return out;
}

/**
 * The snapshotters' one call: adds the ACCESS entries to `files` and says why
 * the image depends on who took it (null: anyone could have taken it).
 */
export function identityAndAccess(files: ImageFile[], events: readonly PathEvent[], listed: readonly string[],
  asked: readonly string[]): string | null {
  const walk = new AccessWalk();
  const mapped = files.filter((f) => f.kind === FileKind.MAPPED).map((f) => f.path);
  const why = asked.length ? `asked who runs it: ${asked.join(', ')}` : othersCannot(walk, events, mapped, listed);
  files.push(...accessEntries(walk, files));
  return why;
}
