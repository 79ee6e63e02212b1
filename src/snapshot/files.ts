/**
 * The files an image depends on, with the identity a restore checks:
 *  - MAPPED: every file a region maps. The path recorded is the one the
 *    loader (or, for the loader itself, the kernel through PT_INTERP) opened
 *    when that names the same file, so the restorer's one open+fstat proves
 *    both that the path still leads there and that the file is unchanged;
 *  - READ: files the loader read but did not map (ld.so.cache), with the
 *    identity of the file the tracee actually had open;
 *  - ABSENT: paths it probed that did not exist (library search misses), which
 *    must still be missing, or a restore would skip a library a cold start loads.
 * Pseudo file systems (/proc, /sys, /dev) describe the running system, not
 * files: they are never dependencies.
 */
import * as fs from 'node:fs';
import type { ImageFile } from '../image/format.js';
import { FileFlag, FileKind } from '../image/schema.js';
import { isFileBacked, sameFileAsMapping, type Mapping } from './capture.js';
import { SnapshotRefusal } from './refusal.js';
import type { PathEvent } from './trace.js';

const ENOENT = -2;
const ENOTDIR = -20;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

export interface FileTable {
  files: ImageFile[];
  /** Index into files for each mapped path as /proc/PID/maps names it. */
  byMappedPath: Map<string, number>;
}

type Identity = Omit<ImageFile, 'path' | 'kind' | 'flags'>;

export const isPseudoPath = (p: string): boolean => /^\/(proc|sys|dev)(\/|$)/.test(p);

function identityOf(st: fs.BigIntStats): Identity {
  return {
    dev: st.dev, ino: st.ino, size: st.size, mode: Number(st.mode),
    mtimeSec: st.mtimeNs / 1_000_000_000n, mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
    ctimeSec: st.ctimeNs / 1_000_000_000n, ctimeNsec: Number(st.ctimeNs % 1_000_000_000n),
  };
}

const idKey = (st: { dev: bigint; ino: bigint }): string => `${st.dev}:${st.ino}`;
const sameIdentity = (a: Identity, b: Identity): boolean =>
  a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeSec === b.mtimeSec && a.mtimeNsec === b.mtimeNsec &&
  a.ctimeSec === b.ctimeSec && a.ctimeNsec === b.ctimeNsec;

function statOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.statSync(p, { bigint: true });
  } catch {
    return null;
  }
}

const changed = (p: string): never => {
  throw new SnapshotRefusal('too-new', `${p} changed while the program was being snapshotted`);
};

export function buildFiles(paths: PathEvent[], maps: Mapping[], exePath: string, interpreter: string): FileTable {
  const table: FileTable = { files: [], byMappedPath: new Map() };
  const exe = fs.statSync(exePath, { bigint: true });

  // Paths that led to a file during the run, by file: the kernel's PT_INTERP first, then the loader's opens.
  const openedAs = new Map<string, string>();
  const interp = statOrNull(interpreter);
  if (interp) openedAs.set(idKey(interp), interpreter);
  for (const e of paths) {
    if (!e.opened || isPseudoPath(e.path)) continue;
    const now = statOrNull(e.path);
    if (!now || !sameIdentity(identityOf(now), identityOf(e.opened))) changed(e.path);
    if (!openedAs.has(idKey(e.opened))) openedAs.set(idKey(e.opened), e.path);
  }

  const recorded = new Set<string>();
  for (const m of maps) {
    if (!isFileBacked(m) || table.byMappedPath.has(m.path)) continue;
    const st = statOrNull(m.path);
    if (!st || !sameFileAsMapping(m, st)) changed(m.path);
    const s = st as fs.BigIntStats;
    const isExe = s.dev === exe.dev && s.ino === exe.ino;
    const p = isExe ? exePath : (openedAs.get(idKey(s)) ?? m.path);
    if (p !== m.path && !sameIdentity(identityOf(fs.statSync(p, { bigint: true })), identityOf(s))) changed(p);
    table.byMappedPath.set(m.path, table.files.length);
    table.files.push({ path: p, kind: FileKind.MAPPED, flags: isExe ? FileFlag.EXE : 0, ...identityOf(s) });
    recorded.add(p);
  }

  const mapped = new Set(table.files.map((f) => idKey(f)));
  const succeeded = new Set(paths.filter((e) => e.result >= 0).map((e) => e.path));
  for (const e of paths) {
    if (recorded.has(e.path) || isPseudoPath(e.path)) continue;
    if (e.result >= 0) {
      const st = e.opened ?? statOrNull(e.path);
      if (!st) changed(e.path); // it was there a moment ago
      const id = identityOf(st as fs.BigIntStats);
      if (mapped.has(idKey(id))) continue; // checked through its mapping
      if ((id.mode & S_IFMT) !== S_IFREG) continue; // directories: the paths probed inside them are the dependencies
      recorded.add(e.path);
      table.files.push({ path: e.path, kind: FileKind.READ, flags: 0, ...id });
    } else if (e.result === ENOENT || e.result === ENOTDIR) {
      if (succeeded.has(e.path)) continue;
      recorded.add(e.path);
      table.files.push({
        path: e.path, kind: FileKind.ABSENT, flags: 0, dev: 0n, ino: 0n, size: 0n, mode: 0,
        mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0,
      });
    } else {
      // EACCES, ELOOP...: the loader went on as if missing, but "must still be missing" would not describe it.
      throw new SnapshotRefusal('internal', `${e.path} failed with errno ${-e.result}, which no file entry can express`);
    }
  }
  return table;
}
