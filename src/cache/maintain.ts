/**
 * Keeping the cache within its bounds and free of images no run can use:
 * LRU eviction (--max-size, after every write, --cleanup), invalidation of
 * stale images and leftovers (--cleanup) and --clear.
 *
 * "Last use" is the latest HIT the launcher recorded for the key in
 * stats/runs.log (folded by stats.ts), or the image's write time when it was
 * never used since: the hot path pays nothing extra for LRU bookkeeping.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { LRUCache } from 'lru-cache';
import { CxError } from '../common/errors.js';
import { checkImage } from './check.js';
import { readConfig, type CacheConfig } from './config.js';
import { keyFromStat, keyHash } from './key.js';
import { lockIsStale } from './lock.js';
import { appendEvent, foldStats, type Usage } from './stats.js';
import { readImageMeta, type ImageEntry, type Store } from './store.js';

export interface AgedImage extends ImageEntry {
  /** ms since the epoch: last restore, else when it was written. */
  lastUsed: number;
  uses: number;
}

export function withUsage(images: readonly ImageEntry[], usage: Readonly<Record<string, Usage>>): AgedImage[] {
  return images.map((im) => {
    const u = usage[im.hash];
    return { ...im, lastUsed: Math.max(u?.lastUse ?? 0, im.mtimeMs), uses: u?.uses ?? 0 };
  });
}

export interface EvictionPlan {
  keep: AgedImage[];
  evict: AgedImage[];
  bytesBefore: number;
  bytesAfter: number;
}

/**
 * Which images to evict so that at most `cfg.maxEntries` images of at most
 * `cfg.maxSize` bytes in total remain, least recently used first. Keys in
 * `protect` (an image just written) go in last, so they are the most recent.
 * An lru-cache instance replays the history: its evictions are the plan.
 */
export function planEviction(images: readonly AgedImage[], cfg: CacheConfig, protect: ReadonlySet<string> = new Set()): EvictionPlan {
  const bytesBefore = images.reduce((a, i) => a + i.size, 0);
  const order = [...images].sort((a, b) =>
    Number(protect.has(a.hash)) - Number(protect.has(b.hash)) || a.lastUsed - b.lastUsed || a.hash.localeCompare(b.hash));
  if (!cfg.maxSize && !cfg.maxEntries) return { keep: order, evict: [], bytesBefore, bytesAfter: bytesBefore };
  const evict: AgedImage[] = [];
  const dispose = (v: AgedImage, _k: string, reason: LRUCache.DisposeReason): void => {
    if (reason === 'evict') evict.push(v);
  };
  const options: LRUCache.Options<string, AgedImage, unknown> = cfg.maxSize
    ? { maxSize: cfg.maxSize, sizeCalculation: (v) => Math.max(1, v.size), dispose, ...(cfg.maxEntries ? { max: cfg.maxEntries } : {}) }
    : { max: cfg.maxEntries, dispose };
  const lru = new LRUCache<string, AgedImage>(options);
  for (const im of order) {
    if (cfg.maxSize && im.size > cfg.maxSize) {
      evict.push(im); // bigger than the whole bound: lru-cache would silently not store it
      continue;
    }
    lru.set(im.hash, im);
  }
  const keep = [...lru.values()].reverse(); // least recent first, like `order`
  return { keep, evict, bytesBefore, bytesAfter: keep.reduce((a, i) => a + i.size, 0) };
}

/** Evicts least recently used images until the cache is within its configured bounds. */
export function enforceBounds(store: Store, protect: ReadonlySet<string> = new Set(), cfg?: CacheConfig): EvictionPlan {
  const config = cfg ?? readConfig(store.dir);
  const images = store.listImages();
  if ((!config.maxEntries || images.length <= config.maxEntries) &&
      (!config.maxSize || images.reduce((a, i) => a + i.size, 0) <= config.maxSize)) {
    return { keep: withUsage(images, {}), evict: [], bytesBefore: 0, bytesAfter: 0 };
  }
  const usage = foldStats(store).usage;
  const plan = planEviction(withUsage(images, usage), config, protect);
  for (const im of plan.evict) {
    if (store.removeImage(im.hash)) appendEvent(store, { e: 'evicted', key: im.hash, bytes: im.size });
  }
  return plan;
}

// ---------------------------------------------------------------------------

export interface Invalidation {
  hash: string;
  path: string;
  size: number;
  /** Short stable reason: corrupt, program-gone, program-changed, kernel-changed, stale-file, negative-dep, owner, misplaced, unusable. */
  reason: string;
  detail: string;
  /** For --dry-run: false. */
  removed: boolean;
}

/** Why no run of this user can use the image any more, or null when some run still can. */
export function staleReason(store: Store, im: ImageEntry): { reason: string; detail: string } | null {
  let parsed;
  try {
    parsed = readImageMeta(im.path).parsed;
  } catch (e) {
    return { reason: 'corrupt', detail: e instanceof CxError ? e.shortMessage : String(e) };
  }
  if (parsed.problems.length) return { reason: 'corrupt', detail: parsed.problems.join('; ') };
  const key = parsed.model.key;
  if (keyHash(key) !== im.hash) return { reason: 'misplaced', detail: `file name does not match its key ${keyHash(key)}` };
  if (key.euid !== store.euid) return { reason: 'owner', detail: `keyed for uid ${key.euid}` };
  if (key.kernelRelease !== os.release()) return { reason: 'kernel-changed', detail: `taken on kernel ${key.kernelRelease}` };
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(key.exePath, { bigint: true });
  } catch {
    return { reason: 'program-gone', detail: `${key.exePath} no longer exists` };
  }
  // The key as a run with the image's own PATH would compute it now.
  const now = keyFromStat(key.exePath, st, { PATH: key.pathEnv }, key.euid, key.groupsHash ?? 0n);
  // A post-init image's key also names its init; a variant's, its selector (only a run can check the environment).
  if (key.initSpec) now.initSpec = key.initSpec;
  if (key.variant) now.variant = key.variant;
  now.cpuId = key.cpuId; // another CPU's image: its machine's to judge (the check below says FAIL_CPU)
  if (keyHash(now) !== im.hash) return { reason: 'program-changed', detail: `${key.exePath} changed since the snapshot` };
  // The page data too: the launcher trusts it, so a damaged image must go (a restore of it could crash).
  const v = checkImage(im.path, { key: now, owner: store.euid, maxAgeSec: 0, verifyData: true });
  switch (v.outcome) {
    case 'HIT':
    case 'MISS': // vanished meanwhile
      return null;
    case 'FAIL_STALE_FILE': return { reason: 'stale-file', detail: v.detail };
    case 'FAIL_NEGATIVE_DEP': return { reason: 'negative-dep', detail: v.detail };
    case 'FAIL_OWNER': return { reason: 'owner', detail: v.detail };
    case 'FAIL_IMAGE_IO': return null; // cannot tell: keep
    // Another machine sharing this cache (an NFS home) restores it; unused here, the LRU evicts it.
    case 'FAIL_CPU': return null;
    case 'FAIL_HEADER':
    case 'FAIL_CHECKSUM':
    case 'FAIL_TRUNCATED': return { reason: 'corrupt', detail: v.detail };
    default: return { reason: 'unusable', detail: `${v.outcome}: ${v.detail}` };
  }
}

export interface CleanupReport {
  invalidated: Invalidation[];
  evicted: AgedImage[];
  tempRemoved: string[];
  refusalsCleared: string[];
  locksRecovered: string[];
  bytesFreed: number;
  images: number;
  bytes: number;
}

const HOUR = 3600_000;

/**
 * --cleanup: remove temp files of killed writers, stale locks, refusals older
 * than a day (so those programs are tried again), images no run can use, then
 * evict to the bounds.
 */
export function cleanup(store: Store, opts: { now?: number; dryRun?: boolean } = {}): CleanupReport {
  const now = opts.now ?? Date.now();
  const dry = !!opts.dryRun;
  const report: CleanupReport = {
    invalidated: [], evicted: [], tempRemoved: [], refusalsCleared: [], locksRecovered: [], bytesFreed: 0, images: 0, bytes: 0,
  };
  const pidAlive = (pid: number | null): boolean => {
    if (pid === null) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  for (const t of store.listTemp()) {
    if (now - t.mtimeMs > HOUR || (!pidAlive(t.pid) && now - t.mtimeMs > 10_000)) {
      if (!dry) fs.rmSync(t.path, { force: true });
      report.tempRemoved.push(t.path);
      report.bytesFreed += t.size;
    }
  }
  let lockNames: string[] = [];
  try {
    lockNames = fs.readdirSync(store.sub('locks')).filter((n) => n.endsWith('.lock'));
  } catch { /* none */ }
  for (const n of lockNames) {
    const p = `${store.sub('locks')}/${n}`;
    if (lockIsStale(p)) {
      if (!dry) fs.rmSync(p, { force: true });
      report.locksRecovered.push(p);
    }
  }
  for (const r of store.listRefused()) {
    if (now - r.mtimeMs > 24 * HOUR) {
      if (!dry) store.clearRefused(r.hash);
      report.refusalsCleared.push(r.hash);
    }
  }
  // Queue entries are written under a temp name and linked into place: a killed writer leaves the temp.
  for (const t of store.listQueueTemp()) {
    if (now - t.mtimeMs > HOUR) {
      if (!dry) fs.rmSync(t.path, { force: true });
      report.tempRemoved.push(t.path);
      report.bytesFreed += t.size;
    }
  }
  // A re-take record outlives its rate limit by a day once no image of its key is left.
  for (const r of store.listRetake()) {
    const images = [r.hash, ...store.variants(r.hash)];
    if (now - r.mtimeMs > 24 * HOUR && !images.some((h) => fs.existsSync(store.imagePathForHash(h)))) {
      if (!dry) store.removeRetake(r.hash);
    }
  }
  for (const im of store.listImages()) {
    const why = staleReason(store, im);
    if (!why) continue;
    let removed = false;
    if (!dry) {
      try {
        removed = store.removeImage(im.hash);
      } catch { /* e.g. a foreign image in a dir we cannot write */ }
      if (removed) appendEvent(store, { e: 'invalidated', key: im.hash, reason: why.reason, bytes: im.size });
    }
    report.invalidated.push({ hash: im.hash, path: im.path, size: im.size, ...why, removed });
    if (removed || dry) report.bytesFreed += im.size;
  }
  if (!dry) {
    const plan = enforceBounds(store);
    report.evicted = plan.evict;
    report.bytesFreed += plan.evict.reduce((a, i) => a + i.size, 0);
  } else {
    const gone = new Set(report.invalidated.map((i) => i.hash));
    const plan = planEviction(withUsage(store.listImages().filter((i) => !gone.has(i.hash)), foldStats(store, { save: false }).usage),
      readConfig(store.dir));
    report.evicted = plan.evict;
  }
  const left = store.listImages();
  report.images = left.length;
  report.bytes = left.reduce((a, i) => a + i.size, 0);
  return report;
}

export interface ClearReport {
  images: number;
  bytes: number;
  queued: number;
  refusals: number;
}

/** --clear: every image, queued snapshot, refusal and temp file; statistics and config stay. */
export function clearCache(store: Store): ClearReport {
  const rep: ClearReport = { images: 0, bytes: 0, queued: 0, refusals: 0 };
  for (const im of store.listImages()) {
    if (store.removeImage(im.hash)) {
      rep.images++;
      rep.bytes += im.size;
      appendEvent(store, { e: 'cleared', key: im.hash, bytes: im.size });
    }
  }
  for (const t of store.listTemp()) fs.rmSync(t.path, { force: true });
  for (const q of store.listQueue()) {
    store.removeQueued(q.hash);
    rep.queued++;
  }
  for (const r of store.listRefused()) {
    store.clearRefused(r.hash);
    rep.refusals++;
  }
  for (const r of store.listRetake()) store.removeRetake(r.hash);
  return rep;
}
