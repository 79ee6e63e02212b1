/**
 * What each image depends on, as paths a directory watcher can observe.
 *
 * Everything is watched through directories, never through a file's own
 * inode: packages replace a file by renaming a new one into place (the old
 * inode, still mapped by running programs, never reports a change), and a
 * path that does not exist yet has no inode at all. One inotify watch per
 * directory reports every entry of it that is created, written, replaced or
 * removed, so the cost is one watch per directory, not one per file.
 *
 * Paths are canonical (symlinked directories resolved, the last component
 * kept): the loader opens /lib/x86_64-linux-gnu/libc.so.6 where /lib is a
 * symlink to usr/lib, and the event arrives for the directory it really is.
 * A file that is itself a symlink (libfoo.so.1 -> libfoo.so.1.2.3) is indexed
 * under its name and under its target, since an upgrade may replace either.
 *
 * Negative dependencies (paths the loader probed and did not find) are
 * indexed with every directory above them, so a directory appearing on the
 * way to a probed path (a new glibc-hwcaps/x86-64-v3) nominates the image as
 * well as the file appearing in it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readImageMeta, type Store } from '../cache/store.js';
import { FileKind } from '../image/schema.js';
import type { retakeEnvironment } from '../cache/envdeps.js';

export interface ImageDeps {
  hash: string;
  /** The program as the key names it (absolute, or relative to the caller's cwd). */
  program: string;
  pathEnv: string;
  /** Files whose change (or removal) makes the image stale. */
  files: string[];
  /** Paths whose appearance makes the image stale. */
  absent: string[];
  /** A post-init image: what ran before its checkpoint (a re-take needs it). */
  initSpec?: string;
  /** What a re-take needs of the environment it was taken in (envdeps.ts retakeEnvironment), when it depends on it. */
  retake?: Parameters<typeof retakeEnvironment>[0];
}

export function imageDeps(imagePath: string, hash: string): ImageDeps | null {
  try {
    const m = readImageMeta(imagePath).parsed.model;
    const files = new Set<string>([m.key.exePath]);
    const absent: string[] = [];
    for (const f of m.files) {
      if (f.kind === FileKind.ABSENT) absent.push(f.path);
      else files.add(f.path);
    }
    return {
      hash, program: m.key.exePath, pathEnv: m.key.pathEnv, files: [...files], absent,
      ...(m.key.initSpec ? { initSpec: m.key.initSpec } : {}),
      ...(m.snapshotEnv ? { retake: { key: { ...(m.key.envHash ? { envHash: m.key.envHash } : {}) }, envDeps: m.envDeps ?? [], snapshotEnv: m.snapshotEnv } } : {}),
    };
  } catch {
    return null; // damaged: --cleanup's business, nothing to watch
  }
}

/**
 * `p` with every directory component resolved through symlinks as far as the
 * directories exist; the last component and any missing part are kept as
 * given. Only absolute paths are meaningful here.
 */
export function canonical(p: string): string {
  const abs = path.resolve(p);
  const parent = path.dirname(abs);
  if (parent === abs) return abs;
  const rest: string[] = [path.basename(abs)];
  for (let dir = parent; ; dir = path.dirname(dir)) {
    try {
      return path.join(fs.realpathSync(dir), ...rest);
    } catch {
      if (path.dirname(dir) === dir) return abs;
      rest.unshift(path.basename(dir));
    }
  }
}

/** A directory with every component resolved as far as it exists (symlinks to directories included). */
export function canonicalDir(dir: string): string {
  try {
    return fs.realpathSync(dir);
  } catch {
    return canonical(dir);
  }
}

/** The deepest directory at or above `dir` that exists now (at worst "/"), symlinks resolved. */
export function nearestExistingDir(dir: string): string {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if (fs.statSync(d).isDirectory()) return fs.realpathSync(d);
    } catch { /* missing: go up */ }
    if (path.dirname(d) === d) return d;
  }
}

type Multi = Map<string, Set<string>>;

function put(m: Multi, k: string, h: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(h);
}

interface Entry {
  deps: ImageDeps;
  /** Every key this image was put under, per map, so removal is exact. */
  keys: { byPath: string[]; byDir: string[]; byPathDir: string[] };
}

/** Index from watched paths to the images that depend on them. */
export class DepIndex {
  /** Canonical file, probed path, or directory above a probed path -> images. */
  private readonly byPath: Multi = new Map();
  /** Directory holding a dependency (or meant to hold a probed path) -> images. */
  private readonly byDir: Multi = new Map();
  /** PATH directory -> images whose key has it on PATH. */
  private readonly byPathDir: Multi = new Map();
  /** Program basename -> images, for a program shadowed by a new file earlier on PATH. */
  private readonly byName: Multi = new Map();
  private readonly entries = new Map<string, Entry>();

  get size(): number {
    return this.entries.size;
  }

  hashes(): IterableIterator<string> {
    return this.entries.keys();
  }

  get(hash: string): ImageDeps | undefined {
    return this.entries.get(hash)?.deps;
  }

  /**
   * Indexes an image (replacing what was indexed under its hash). An image of
   * a program named by a relative path is not indexed: its files are relative
   * to a caller's cwd the watcher cannot know.
   */
  add(d: ImageDeps): boolean {
    this.remove(d.hash);
    if (!path.isAbsolute(d.program)) return false;
    const keys: Entry['keys'] = { byPath: [], byDir: [], byPathDir: [] };
    const at = (m: Multi, list: string[], k: string): void => {
      put(m, k, d.hash);
      list.push(k);
    };
    for (const f of d.files) {
      if (!path.isAbsolute(f)) continue;
      const name = canonical(f);
      at(this.byPath, keys.byPath, name);
      at(this.byDir, keys.byDir, path.dirname(name));
      let target: string | null = null;
      try {
        target = fs.realpathSync(f);
      } catch { /* gone already: the check after the next event will say so */ }
      if (target && target !== name) {
        at(this.byPath, keys.byPath, target);
        at(this.byDir, keys.byDir, path.dirname(target));
      }
    }
    for (const a of d.absent) {
      if (!path.isAbsolute(a)) continue;
      const name = canonical(a);
      at(this.byDir, keys.byDir, path.dirname(name));
      for (let p = name; path.dirname(p) !== p; p = path.dirname(p)) at(this.byPath, keys.byPath, p);
    }
    for (const e of d.pathEnv.split(':')) {
      if (!path.isAbsolute(e)) continue; // "" and "." are the caller's cwd
      const dir = canonicalDir(e);
      at(this.byPathDir, keys.byPathDir, dir);
      at(this.byDir, keys.byDir, dir);
    }
    put(this.byName, path.basename(d.program), d.hash);
    this.entries.set(d.hash, { deps: d, keys });
    return true;
  }

  remove(hash: string): void {
    const e = this.entries.get(hash);
    if (!e) return;
    this.entries.delete(hash);
    const drop = (m: Multi, k: string): void => {
      const s = m.get(k);
      if (!s) return;
      s.delete(hash);
      if (!s.size) m.delete(k);
    };
    for (const k of e.keys.byPath) drop(this.byPath, k);
    for (const k of e.keys.byDir) drop(this.byDir, k);
    for (const k of e.keys.byPathDir) drop(this.byPathDir, k);
    drop(this.byName, path.basename(e.deps.program));
  }

  /** Directories whose entries matter, each with the images that depend on them. */
  directories(): ReadonlyMap<string, ReadonlySet<string>> {
    return this.byDir;
  }

  /** Images with a dependency directly in `dir` (an event without a file name, a watch newly in place). */
  inDir(dir: string): ReadonlySet<string> {
    return this.byDir.get(dir) ?? new Set();
  }

  /**
   * Images a change of the (canonical) path `p` may make stale: `depends`
   * through a file or probed path, `shadowed` through a file named like
   * their program appearing in one of their PATH directories.
   */
  affected(p: string): { depends: ReadonlySet<string>; shadowed: ReadonlySet<string> } {
    const depends = this.byPath.get(p) ?? new Set<string>();
    const shadowed = new Set<string>();
    const inPath = this.byPathDir.get(path.dirname(p));
    if (inPath) for (const h of this.byName.get(path.basename(p)) ?? []) if (inPath.has(h)) shadowed.add(h);
    return { depends, shadowed };
  }
}

export function loadIndex(store: Store): DepIndex {
  const idx = new DepIndex();
  for (const im of store.listImages()) {
    const d = imageDeps(im.path, im.hash);
    if (d) idx.add(d);
  }
  return idx;
}
