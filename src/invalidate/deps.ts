/**
 * What each image depends on, as paths a file watcher can observe.
 *
 * Positive dependencies (files the loader mapped or read, the program) are
 * watched through their directory, not their inode: packages replace files by
 * renaming a new one into place, which a watch on the old inode would miss.
 * Negative dependencies (paths the loader probed and found missing) are
 * watched through their parent directory for the path appearing.
 */
import * as path from 'node:path';
import { readImageMeta, type Store } from '../cache/store.js';
import { FileKind } from '../image/schema.js';

export interface ImageDeps {
  hash: string;
  program: string;
  pathEnv: string;
  /** Files whose change (or removal) makes the image stale. */
  files: string[];
  /** Paths whose appearance makes the image stale. */
  absent: string[];
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
    return { hash, program: m.key.exePath, pathEnv: m.key.pathEnv, files: [...files], absent };
  } catch {
    return null; // damaged: --cleanup's business, nothing to watch
  }
}

/** Index from watched path to the images that depend on it. */
export class DepIndex {
  readonly byFile = new Map<string, Set<string>>();
  readonly byAbsent = new Map<string, Set<string>>();
  /** Program basename -> images, for programs shadowed by a new file earlier on PATH. */
  readonly byName = new Map<string, Set<string>>();
  readonly images = new Map<string, ImageDeps>();

  add(d: ImageDeps): void {
    this.remove(d.hash);
    this.images.set(d.hash, d);
    const put = (m: Map<string, Set<string>>, k: string): void => {
      let s = m.get(k);
      if (!s) m.set(k, (s = new Set()));
      s.add(d.hash);
    };
    for (const f of d.files) put(this.byFile, path.resolve(f));
    for (const a of d.absent) put(this.byAbsent, path.resolve(a));
    put(this.byName, path.basename(d.program));
  }

  remove(hash: string): void {
    if (!this.images.delete(hash)) return;
    for (const m of [this.byFile, this.byAbsent, this.byName]) {
      for (const [k, s] of m) {
        s.delete(hash);
        if (!s.size) m.delete(k);
      }
    }
  }

  /** Directories to watch: parents of every dependency, and every PATH entry of every image. */
  directories(): Set<string> {
    const dirs = new Set<string>();
    for (const f of this.byFile.keys()) dirs.add(path.dirname(f));
    for (const a of this.byAbsent.keys()) dirs.add(nearestParent(a));
    for (const d of this.images.values()) for (const p of d.pathEnv.split(':')) if (p) dirs.add(path.resolve(p));
    return dirs;
  }

  /** Images a change at `p` may affect. */
  affected(p: string): Set<string> {
    const out = new Set<string>();
    const abs = path.resolve(p);
    for (const h of this.byFile.get(abs) ?? []) out.add(h);
    for (const h of this.byAbsent.get(abs) ?? []) out.add(h);
    // A probed path below a directory that appeared (e.g. a new glibc-hwcaps dir).
    for (const [a, hs] of this.byAbsent) if (a.startsWith(`${abs}/`)) for (const h of hs) out.add(h);
    for (const h of this.byName.get(path.basename(abs)) ?? []) out.add(h);
    return out;
  }
}

/** The parent directory of a probed path (the path itself does not exist; its parent may not either). */
function nearestParent(p: string): string {
  return path.dirname(p);
}

export function loadIndex(store: Store): DepIndex {
  const idx = new DepIndex();
  for (const im of store.listImages()) {
    const d = imageDeps(im.path, im.hash);
    if (d) idx.add(d);
  }
  return idx;
}
