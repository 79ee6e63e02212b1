/**
 * The invalidation watcher (`cached-exec --watch`): a long-running daemon that
 * deletes images as soon as a file they depend on changes, instead of waiting
 * for the next run's identity check to fall back cold.
 *
 * Watched (chokidar, one level deep): the directories of every file an image
 * depends on, the parents of every path the loader probed and did not find,
 * every PATH directory of every image (a new program earlier on PATH shadows
 * the cached one), the images directory (images added while it runs), and the
 * package database. An event only nominates images: each is then checked with
 * the same rules as --cleanup (staleReason) and removed only when no run could
 * use it, so a spurious event never costs an image. Checks are batched a short
 * moment so a package upgrade touching hundreds of files is one pass.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { keyFor, keyHash } from '../cache/key.js';
import { staleReason } from '../cache/maintain.js';
import { appendEvent } from '../cache/stats.js';
import type { Store } from '../cache/store.js';
import { resolveProgram } from '../cli/resolve.js';
import { PACKAGE_ROOT } from '../cli/paths.js';
import { DepIndex, imageDeps, loadIndex } from './deps.js';

export const PACKAGE_DB = ['/var/lib/dpkg/status', '/var/lib/dpkg/info'];

export interface WatchOptions {
  store: Store;
  /** Queue invalidated programs for a new snapshot and start the warmer. */
  rewarm: boolean;
  log: (line: string) => void;
  /** Package database paths (tests point these elsewhere). */
  packageDb?: string[];
  /** Batch window in ms. */
  settleMs?: number;
  env?: NodeJS.ProcessEnv;
}

export class InvalidationWatcher {
  private readonly idx: DepIndex;
  private watcher: FSWatcher | undefined;
  private readonly watched = new Set<string>();
  private pending = new Set<string>();
  private checkAll = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly imagesDir: string;
  private readonly db: string[];
  invalidated = 0;

  constructor(private readonly o: WatchOptions) {
    this.idx = loadIndex(o.store);
    this.imagesDir = path.resolve(o.store.sub('images'));
    this.db = (o.packageDb ?? PACKAGE_DB).map((p) => path.resolve(p));
  }

  /** Resolves once the initial watches are in place. */
  async start(): Promise<void> {
    this.o.store.ensure('images');
    const targets = [this.imagesDir, ...this.db, ...this.idx.directories()];
    this.watcher = watch([], { ignoreInitial: true, depth: 0, followSymlinks: false, persistent: true });
    this.watcher.on('all', (_ev, p) => this.onEvent(p));
    this.watcher.on('error', (e) => this.o.log(`watch error: ${(e as Error).message}`));
    const ready = new Promise<void>((resolve) => this.watcher?.once('ready', () => resolve()));
    this.addTargets(targets);
    await ready;
    this.o.log(`watching ${this.watched.size} paths for ${this.idx.images.size} image(s)`);
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.watcher?.close();
  }

  private addTargets(paths: Iterable<string>): void {
    const fresh = [...paths].filter((p) => !this.watched.has(p));
    for (const p of fresh) this.watched.add(p);
    // A path that does not exist yet is fine: chokidar watches for it to appear.
    if (fresh.length) this.watcher?.add(fresh);
  }

  private onEvent(p: string): void {
    const abs = path.resolve(p);
    if (abs.startsWith(`${this.imagesDir}/`)) {
      this.onImage(abs);
      return;
    }
    if (this.db.some((d) => abs === d || abs.startsWith(`${d}/`))) this.checkAll = true;
    for (const h of this.idx.affected(abs)) this.pending.add(h);
    this.schedule();
  }

  /** Images added while running get watched; removed ones forgotten. */
  private onImage(abs: string): void {
    const m = /\/([0-9a-f]{16})\.img$/.exec(abs);
    if (!m) return;
    const hash = m[1] as string;
    if (!fs.existsSync(abs)) {
      this.idx.remove(hash);
      return;
    }
    const d = imageDeps(abs, hash);
    if (!d) return;
    this.idx.add(d);
    this.addTargets(this.idx.directories());
  }

  private schedule(): void {
    if (this.timer || (!this.pending.size && !this.checkAll)) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.o.settleMs ?? 200);
  }

  /** Checks the nominated images; removes those no run could use. */
  flush(): void {
    const hashes = this.checkAll ? new Set(this.idx.images.keys()) : this.pending;
    this.pending = new Set();
    this.checkAll = false;
    const byHash = new Map(this.o.store.listImages().map((im) => [im.hash, im]));
    const requeue: { program: string; pathEnv: string }[] = [];
    for (const h of hashes) {
      const im = byHash.get(h);
      const deps = this.idx.images.get(h);
      if (!im || !deps) continue;
      const why = staleReason(this.o.store, im) ?? shadowed(deps.program, deps.pathEnv);
      if (!why) continue;
      try {
        if (!this.o.store.removeImage(h)) continue;
      } catch {
        continue;
      }
      this.invalidated++;
      appendEvent(this.o.store, { e: 'invalidated', key: h, reason: why.reason, bytes: im.size });
      this.o.log(`invalidated ${deps.program} (${h}): ${why.reason}: ${why.detail}`);
      this.idx.remove(h);
      requeue.push({ program: deps.program, pathEnv: deps.pathEnv });
    }
    if (this.o.rewarm && requeue.length) this.rewarm(requeue);
  }

  /** Queues programs as a miss would, then starts the background warmer. */
  private rewarm(items: { program: string; pathEnv: string }[]): void {
    const store = this.o.store;
    store.ensure('queue');
    for (const it of items) {
      try {
        const hash = keyHash(keyFor(it.program, { PATH: it.pathEnv }));
        const fd = fs.openSync(path.join(store.sub('queue'), hash), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        fs.writeSync(fd, `${it.program}\n${it.pathEnv}\n`);
        fs.closeSync(fd);
      } catch { /* queued already, or the program is gone */ }
    }
    const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js'), '--drain-queue'], {
      detached: true,
      stdio: 'ignore',
      env: { ...(this.o.env ?? process.env), CACHED_EXEC_DIR: store.dir },
    });
    child.unref();
  }
}

/** The program a run with this PATH would find is no longer the cached one. */
function shadowed(program: string, pathEnv: string): { reason: string; detail: string } | null {
  try {
    const now = resolveProgram(path.basename(program), { PATH: pathEnv }).path;
    if (path.resolve(now) !== path.resolve(program)) return { reason: 'shadowed', detail: `${now} now comes first on PATH` };
  } catch {
    /* not found at all: the identity check of staleReason covers a removed program */
  }
  return null;
}
