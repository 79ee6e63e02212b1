/**
 * The invalidation watcher (`cached-exec --watch`): a long-running daemon that
 * deletes images as soon as a file they depend on changes, instead of leaving
 * it to the next run's identity check (which runs cold and counts a stale
 * image) or to `--cleanup`.
 *
 * What is watched, one inotify watch per directory (fs.watch on the
 * directory: every entry created, written, renamed over or removed arrives
 * with its name, so a directory costs one watch whatever it holds):
 *  - the directory of every file an image depends on (mapped libraries, files
 *    the loader read, the program), and of the symlink target of each;
 *  - the directory meant to hold every path the loader probed and did not
 *    find, or the nearest one above it that exists (then the missing
 *    directories appearing on the way are seen, and watched in turn);
 *  - every PATH directory of every image (a program appearing earlier on PATH
 *    shadows the cached one);
 *  - the images directory (images added or replaced while it runs are read
 *    and checked at once, removed ones forgotten);
 *  - the package database (/var/lib/dpkg/status, /var/lib/dpkg/info): any
 *    change re-checks every image once dpkg has been quiet for a moment.
 *
 * Why not chokidar, which the design names: for a watched directory it puts
 * a watch on every file in it (4342 inotify watches for ten real images here,
 * as the first version of this watcher did), and even with every entry
 * filtered out it re-reads the directory and lstat()s each entry after every
 * burst of events, back to back while events keep coming: 6.8 s of CPU in
 * 11.5 s while a directory the size of /var/lib/dpkg/info (2767 entries) saw
 * 20 writes a second, as during an upgrade. fs.watch on the directory: 16
 * watches for those ten images, 51 ms of CPU for the same writes. We only
 * need the names of changed entries, which inotify gives directly. chokidar
 * watches what it is good at here: single files that are replaced by rename
 * (dpkg's status file), where it follows the new file.
 *
 * An event only nominates images. Each is then checked with the same rules as
 * `--cleanup` (staleReason: the restorer's own checks) and removed only when
 * no run could use it, so a spurious event never costs an image. Removals are
 * counted as `invalidated` events in <cache>/stats/events.log (docs/stats.md),
 * which `--show-stats` folds into its invalidation counters.
 *
 * Directories that vanish are dropped and replaced by the nearest existing
 * one above them; when a directory (re)appears and is watched again, its
 * images are checked once more, since whatever happened before the watch was
 * in place was not seen. A full check runs at start (the watcher may have
 * been down during an upgrade) and every `rescanMs` as a safety net against
 * lost events (inotify queue overflow).
 */
import { spawn } from 'node:child_process';
import { watch, type FSWatcher } from 'chokidar';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IMAGE_NAME_RE, keyFor, keyHash } from '../cache/key.js';
import { staleReason } from '../cache/maintain.js';
import { retakeEnvironment } from '../cache/envdeps.js';
import { appendEvent } from '../cache/stats.js';
import type { ImageEntry, Store } from '../cache/store.js';
import { CLI_MAIN } from '../common/package.js';
import { resolveProgram } from '../common/resolve.js';
import { DepIndex, canonical, canonicalDir, imageDeps, nearestExistingDir, type ImageDeps } from './deps.js';

export const PACKAGE_DB = ['/var/lib/dpkg/status', '/var/lib/dpkg/info'];

export interface WatchOptions {
  store: Store;
  /** Queue invalidated programs for a new snapshot and start the background warmer. */
  rewarm: boolean;
  log: (line: string) => void;
  /** Package database paths (files or directories; tests point these elsewhere). */
  packageDb?: string[];
  /** Batch window for file events, ms (default 200). */
  settleMs?: number;
  /** Quiet time of the package database before every image is re-checked, ms (default 1000). */
  dbSettleMs?: number;
  /** Quiet time after the last invalidation before re-warming, ms (default 3000): an upgrade is over by then. */
  rewarmDelayMs?: number;
  /** Full re-check period, ms (default one hour; 0: never). */
  rescanMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Starts the background warmer (default: a detached, niced `--drain-queue`). */
  startWarmer?: () => void;
}

export interface Why {
  reason: string;
  detail: string;
}

interface DbTarget {
  dir: string;
  /** Only this entry of `dir` matters; null: any entry. */
  name: string | null;
}

export class InvalidationWatcher {
  readonly idx = new DepIndex();
  /**
   * Watched directory -> its watch (null: it could not be watched), the
   * identity of the directory it watches, and whether the watch reported
   * that directory itself gone (then the watch is dead whatever is there now).
   */
  private readonly roots = new Map<string, { w: fs.FSWatcher | null; id: string; dead: boolean }>();
  /** Nominated image -> whether a new file on its PATH may shadow its program. */
  private pending = new Map<string, boolean>();
  private checkAll = false;
  private timer: NodeJS.Timeout | undefined;
  private dbTimer: NodeJS.Timeout | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private rewarmTimer: NodeJS.Timeout | undefined;
  private readonly rewarmQueue = new Map<string, { program: string; pathEnv: string; initSpec?: string; env?: string[] }>();
  private imagesDir = '';
  private db: DbTarget[] = [];
  private closed = false;
  private fileWatcher: FSWatcher | undefined;
  /** Images removed since start. */
  invalidated = 0;

  constructor(private readonly o: WatchOptions) {}

  /** Watched directories (for tests and the start-up line). */
  directories(): string[] {
    return [...this.roots.keys()];
  }

  /** Resolves once every watch is in place and the initial full check ran. */
  async start(): Promise<void> {
    const store = this.o.store;
    store.ensure('images');
    this.imagesDir = fs.realpathSync(store.sub('images'));
    this.db = (this.o.packageDb ?? PACKAGE_DB).flatMap((p): DbTarget[] => {
      try {
        const c = canonical(p);
        if (fs.statSync(c).isDirectory()) return [{ dir: canonicalDir(c), name: null }];
        return [{ dir: path.dirname(c), name: path.basename(c) }];
      } catch {
        // Not there (no dpkg): watch for the file only if its directory exists.
        const dir = canonicalDir(path.dirname(p));
        return fs.existsSync(dir) ? [{ dir, name: path.basename(p) }] : [];
      }
    });
    // Single files of the package database (dpkg's status, replaced by rename at the
    // end of every operation) go to chokidar, which follows a file across being
    // renamed over; directories get one fs.watch each (see the top of this file).
    const files = this.db.filter((d) => d.name).map((d) => path.join(d.dir, d.name as string));
    this.db = this.db.filter((d) => !d.name);
    if (files.length) {
      const fw = watch(files, { ignoreInitial: true, persistent: true, atomic: true });
      this.fileWatcher = fw;
      fw.on('all', () => this.dbChanged());
      fw.on('error', (e) => this.o.log(`watch error: ${(e as Error).message}`));
      await new Promise<void>((resolve) => fw.once('ready', () => resolve()));
    }
    for (const im of store.listImages()) this.indexImage(im.hash);
    this.retarget(true);
    // Images that went stale while nobody watched (the watcher was down during an upgrade).
    this.checkAll = true;
    this.flush();
    const every = this.o.rescanMs ?? 3_600_000;
    if (every > 0) {
      this.rescanTimer = setInterval(() => {
        for (const [r, x] of this.roots) if (!x.w) this.roots.delete(r); // retried (the inotify limit may have been raised)
        this.rescanImages();
        this.checkAll = true;
        this.flush();
      }, every);
    }
    this.o.log(`watching ${this.roots.size} directories for ${this.idx.size} image(s)`);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.fileWatcher?.close();
    for (const t of [this.timer, this.dbTimer, this.rewarmTimer]) if (t) clearTimeout(t);
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    for (const r of this.roots.values()) r.w?.close();
    this.roots.clear();
  }

  // -------------------------------------------------------------------------
  // Watches

  /**
   * Watches `dir`'s own entries: one inotify watch, one event per entry
   * created, written, renamed or removed, with the entry's name. A directory
   * that cannot be watched (permissions, the inotify limit) is logged and left
   * to the periodic full check.
   */
  private addRoot(dir: string): void {
    let w: fs.FSWatcher | null = null;
    const root: { w: fs.FSWatcher | null; id: string; dead: boolean } = { w: null, id: dirId(dir), dead: false };
    try {
      w = fs.watch(dir, { persistent: true }, (ev, name) => {
        const n = typeof name === 'string' && name ? name : null;
        // The directory itself removed or moved: inotify names it by its own basename
        // (a child of that name is rare; taking the watch for dead then costs a re-watch).
        if (ev === 'rename' && n === path.basename(dir)) root.dead = true;
        this.onRaw(dir, n);
      });
      w.on('error', (e) => this.o.log(`watch error on ${dir}: ${e.message}`));
    } catch (e) {
      this.o.log(`cannot watch ${dir}: ${(e as Error).message}`);
    }
    root.w = w;
    this.roots.set(dir, root);
  }

  /**
   * Brings the set of watched directories in line with the index: the
   * nearest existing directory for each directory that matters. Images of a
   * directory that is newly watched are checked once it is in place.
   */
  private retarget(initial = false): void {
    if (this.closed) return;
    const want = new Map<string, Set<string>>();
    const need = (dir: string, hashes: Iterable<string>): void => {
      const r = nearestExistingDir(dir);
      let s = want.get(r);
      if (!s) want.set(r, (s = new Set()));
      for (const h of hashes) s.add(h);
    };
    need(this.imagesDir, []);
    for (const d of this.db) need(d.dir, []);
    for (const [dir, hs] of this.idx.directories()) need(dir, hs);
    for (const [r, { w, id, dead }] of this.roots) {
      // Kept only while it is the same directory: one removed and made again needs a new watch.
      if (want.has(r) && !dead && dirId(r) === id) continue;
      this.roots.delete(r);
      w?.close();
    }
    const fresh = [...want.keys()].filter((r) => !this.roots.has(r));
    if (!fresh.length) return;
    for (const r of fresh) this.addRoot(r);
    if (initial || this.closed) return;
    // Whatever changed there before the watch was in place was not seen.
    for (const r of fresh) for (const h of want.get(r) ?? []) this.nominate(h, false);
    this.schedule();
  }

  // -------------------------------------------------------------------------
  // Events

  private onRaw(root: string, name: string | null): void {
    if (this.closed) return;
    if (root === this.imagesDir) {
      if (name) this.onImage(name);
      else this.rescanImages();
      this.schedule();
      return;
    }
    if (this.db.some((d) => d.dir === root && (!d.name || !name || d.name === name))) this.dbChanged();
    if (!name) {
      for (const h of this.idx.inDir(root)) this.nominate(h, false);
    } else {
      const { depends, shadowed } = this.idx.affected(path.join(root, name));
      for (const h of depends) this.nominate(h, false);
      for (const h of shadowed) this.nominate(h, true);
    }
    // Also when nothing was nominated: a directory may have appeared or vanished.
    this.schedule();
  }

  private onImage(name: string): void {
    const m = IMAGE_NAME_RE.exec(name);
    if (!m) return; // a writer's temp file
    const hash = m[1] as string;
    if (this.indexImage(hash)) {
      // Written by a snapshot that may have raced a change it did not see: check it now.
      this.nominate(hash, false);
    }
  }

  /** (Re)reads an image into the index; false when it is gone or unreadable. */
  private indexImage(hash: string): boolean {
    const d = imageDeps(this.o.store.imagePathForHash(hash), hash);
    if (!d) {
      this.idx.remove(hash);
      return false;
    }
    return this.idx.add(d);
  }

  /** The images directory as it is now (after an event without a name, or periodically). */
  private rescanImages(): void {
    const present = new Set(this.o.store.listImages().map((im) => im.hash));
    for (const h of [...this.idx.hashes()]) if (!present.has(h)) this.idx.remove(h);
    for (const h of present) if (!this.idx.get(h) && this.indexImage(h)) this.nominate(h, false);
  }

  private nominate(hash: string, shadow: boolean): void {
    this.pending.set(hash, shadow || (this.pending.get(hash) ?? false));
  }

  private dbChanged(): void {
    if (this.dbTimer) clearTimeout(this.dbTimer);
    this.dbTimer = setTimeout(() => {
      this.dbTimer = undefined;
      this.checkAll = true;
      this.flush();
    }, this.o.dbSettleMs ?? 1000);
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.o.settleMs ?? 200);
  }

  // -------------------------------------------------------------------------
  // Checks

  /** Checks the nominated images (all with checkAll); removes those no run could use. */
  flush(): void {
    if (this.closed) return;
    const nominated = this.pending;
    this.pending = new Map();
    if (this.checkAll) for (const h of this.idx.hashes()) if (!nominated.has(h)) nominated.set(h, false);
    this.checkAll = false;
    for (const [h, shadow] of nominated) {
      const deps = this.idx.get(h);
      if (!deps) continue;
      const im = imageEntry(this.o.store, h);
      if (!im) {
        this.idx.remove(h); // removed by someone else (--cleanup, eviction, --clear)
        continue;
      }
      let why: Why | null;
      try {
        why = staleReason(this.o.store, im) ?? (shadow ? shadowed(deps) : null);
      } catch (e) {
        this.o.log(`cannot check ${im.path}: ${(e as Error).message}`);
        continue;
      }
      if (why) this.invalidate(im, deps, why);
    }
    this.retarget();
  }

  private invalidate(im: ImageEntry, deps: ImageDeps, why: Why): void {
    try {
      if (!this.o.store.removeImage(im.hash)) return;
    } catch (e) {
      this.o.log(`cannot remove ${im.path}: ${(e as Error).message}`);
      return;
    }
    this.idx.remove(im.hash);
    this.invalidated++;
    appendEvent(this.o.store, { e: 'invalidated', key: im.hash, reason: why.reason, bytes: im.size });
    this.o.log(`invalidated ${deps.program} (${im.hash}): ${why.reason}: ${why.detail}`);
    if (!this.o.rewarm) return;
    // An image that depends on the environment is taken again with the values it
    // was taken with (kept in the image), not this daemon's: it then serves the same runs.
    const env = deps.retake ? retakeEnvironment(deps.retake, this.o.env ?? process.env) : undefined;
    this.rewarmQueue.set(im.hash, {
      program: deps.program, pathEnv: deps.pathEnv, ...(deps.initSpec ? { initSpec: deps.initSpec } : {}), ...(env ? { env } : {}),
    });
    if (this.rewarmTimer) clearTimeout(this.rewarmTimer);
    this.rewarmTimer = setTimeout(() => {
      this.rewarmTimer = undefined;
      this.requeue();
    }, this.o.rewarmDelayMs ?? 3000);
  }

  // -------------------------------------------------------------------------
  // Re-warming

  /** Queues the invalidated programs as a miss would (same entry format), then starts the warmer. */
  private requeue(): void {
    if (this.closed) return;
    const store = this.o.store;
    let queued = 0;
    try {
      store.ensure('queue');
    } catch {
      return;
    }
    for (const it of this.rewarmQueue.values()) {
      try {
        // The primary key of the program as it is now (it may be a new file after an upgrade).
        const hash = keyHash({ ...keyFor(it.program, { PATH: it.pathEnv }), ...(it.initSpec ? { initSpec: it.initSpec } : {}) });
        if (store.queue(hash, { exePath: it.program, pathEnv: it.pathEnv, ...(it.initSpec ? { initSpec: it.initSpec } : {}), ...(it.env ? { env: it.env } : {}) })) queued++;
      } catch { /* queued already, or the program is gone (removed package) */ }
    }
    this.rewarmQueue.clear();
    if (queued) {
      this.o.log(`queued ${queued} program(s) for a new snapshot`);
      this.startWarmer();
    }
  }

  private startWarmer(): void {
    const env = this.o.env ?? process.env;
    if (env.CACHED_EXEC_NO_WARM && env.CACHED_EXEC_NO_WARM !== '0') return;
    if (this.o.startWarmer) {
      this.o.startWarmer();
      return;
    }
    try {
      const child = spawn(process.execPath, [CLI_MAIN, '--drain-queue'], {
        detached: true,
        stdio: 'ignore',
        env: { ...env, CACHED_EXEC_DIR: this.o.store.dir },
      });
      child.on('error', (e) => this.o.log(`cannot start the warmer: ${e.message}`));
      if (child.pid) {
        try {
          os.setPriority(child.pid, 10); // as niced as the launcher's warmers
        } catch { /* already gone */ }
      }
      child.unref();
    } catch (e) {
      this.o.log(`cannot start the warmer: ${(e as Error).message}`);
    }
  }
}

/** Which directory is at `dir` now: inode and birth time (inode numbers are reused at once). */
function dirId(dir: string): string {
  try {
    const st = fs.statSync(dir, { bigint: true });
    return `${st.dev}:${st.ino}:${st.birthtimeNs}`;
  } catch {
    return 'gone';
  }
}

/** The store's entry for one image, or null when it is not there. */
function imageEntry(store: Store, hash: string): ImageEntry | null {
  const p = store.imagePathForHash(hash);
  try {
    const st = fs.lstatSync(p);
    if (!st.isFile()) return null;
    return { hash, path: p, size: st.size, mtimeMs: st.mtimeMs, uid: st.uid, mode: st.mode };
  } catch {
    return null;
  }
}

/**
 * The program a run with the image's PATH would find now is another file (a
 * new program earlier on PATH). Only asked when a file named like the program
 * appeared in one of its PATH directories, and only for a program that lives
 * in a PATH directory itself: one run by its path is never looked up.
 */
export function shadowed(deps: ImageDeps): Why | null {
  const dirs = deps.pathEnv.split(':').filter((d) => path.isAbsolute(d)).map((d) => canonicalDir(d));
  if (!dirs.includes(canonicalDir(path.dirname(deps.program)))) return null;
  try {
    const now = resolveProgram(path.basename(deps.program), { PATH: deps.pathEnv }).path;
    if (canonical(now) !== canonical(deps.program)) return { reason: 'shadowed', detail: `${now} now comes first on PATH` };
  } catch {
    /* not found at all: staleReason's identity check covers a removed program */
  }
  return null;
}
