/**
 * Lock files for the TypeScript side of the cache (stats folding, one
 * snapshot per key). A lock is a file created with O_EXCL holding
 * "pid time-ms\n". It is stale, and taken over, when its pid no longer exists
 * or it is older than `staleMs` (a snapshotter killed with SIGKILL leaves the
 * file behind; the next taker recovers it). Take-over is itself race-free: the
 * stale file is renamed to a unique name first, so of two processes that both
 * saw it stale only one wins the rename, and neither deletes a fresh lock.
 *
 * The native launcher does not use these: it only creates queue entries with
 * O_EXCL and tests the warmer's flock (see ARCHITECTURE.md).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CxError, ioError } from '../common/errors.js';

export interface LockOptions {
  /** Give up after this long (default 10 s). 0: try once. */
  timeoutMs?: number;
  /** A lock older than this is stale even if its pid exists (pid reuse). Default 10 min. */
  staleMs?: number;
}

export interface Lock {
  readonly file: string;
  release(): void;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The lock's content when it is stale (or unreadable garbage), else null. */
function staleContent(file: string, staleMs: number, now = Date.now()): string | null {
  let text: string;
  let mtimeMs: number;
  try {
    text = fs.readFileSync(file, 'utf8');
    mtimeMs = fs.statSync(file).mtimeMs;
  } catch {
    return null; // gone already: not ours to judge
  }
  const [pidText, timeText] = text.trim().split(/\s+/);
  const pid = Number(pidText);
  const time = Number(timeText);
  const started = Number.isFinite(time) && time > 0 ? time : mtimeMs;
  if (now - started > staleMs) return text;
  // A half-written lock (empty file) gets a short grace period before it counts as dead.
  if (!pidText) return now - mtimeMs > 2000 ? text : null;
  return pidAlive(pid) ? null : text;
}

/** Whether the lock file at `file` is stale: its pid is gone or it is older than `staleMs`. */
export function lockIsStale(file: string, staleMs = 10 * 60_000, now = Date.now()): boolean {
  return staleContent(file, staleMs, now) !== null;
}

/**
 * Removes a stale lock without ever removing a fresh one: rename it aside,
 * then check that what was renamed is the stale content; if another process
 * had meanwhile recovered it and taken a fresh lock, put that one back.
 */
function recoverStale(file: string, stale: string): void {
  const grave = path.join(path.dirname(file), `.${path.basename(file)}.stale.${process.pid}.${Date.now()}`);
  try {
    fs.renameSync(file, grave);
  } catch {
    return; // someone else recovered it first
  }
  let moved = '';
  try {
    moved = fs.readFileSync(grave, 'utf8');
  } catch { /* vanished: treat as stale */ }
  if (moved !== stale && moved !== '') {
    try {
      fs.linkSync(grave, file); // EEXIST: a third process took it; its holder keeps going
    } catch { /* nothing better to do */ }
  }
  fs.rmSync(grave, { force: true });
}

/** Takes the lock or returns null when it is held (after `timeoutMs`). */
export function tryLock(file: string, opts: LockOptions = {}): Lock | null {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const staleMs = opts.staleMs ?? 10 * 60_000;
  const deadline = Date.now() + timeoutMs;
  let recoveries = 0;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    try {
      const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      try {
        fs.writeSync(fd, `${process.pid} ${Date.now()}\n`);
      } finally {
        fs.closeSync(fd);
      }
      let released = false;
      return {
        file,
        release(): void {
          if (released) return;
          released = true;
          fs.rmSync(file, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError('cannot create lock', file, e);
    }
    const stale = staleContent(file, staleMs);
    if (stale !== null && recoveries++ < 5) {
      recoverStale(file, stale);
      continue;
    }
    if (Date.now() >= deadline) return null;
    sleepSync(delay);
  }
}

/** Runs `fn` under the lock; throws CxError('locked') when it cannot be taken. */
export function withLock<T>(file: string, fn: () => T, opts: LockOptions = {}): T {
  const lock = tryLock(file, opts);
  if (!lock) throw new CxError('locked', `lock ${file} is held by another process`, { path: file });
  try {
    return fn();
  } finally {
    lock.release();
  }
}
