/**
 * The background warmer's lock: an flock(2) on <cache>/queue/.warmer.lock,
 * the lock the native launcher tests (LOCK_EX|LOCK_NB) before it starts a
 * warmer, so one warmer drains the queue however many misses happen at once.
 * The lock lives as long as the fd: if the warmer dies for any reason (even
 * SIGKILL) the kernel drops it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LOCK_EX, LOCK_NB, flock } from '../sys/libc.js';
import type { Store } from './store.js';

export interface WarmerLock {
  /** Always true: kept for callers written against a best-effort lock. */
  held: boolean;
  /** Releases the lock; resolves once it is free for others. */
  release(): Promise<void>;
}

export function warmerLockPath(store: Store): string {
  return path.join(store.sub('queue'), '.warmer.lock');
}

/** Takes the warmer lock without waiting; null when another warmer holds it. */
export async function takeWarmerLock(store: Store): Promise<WarmerLock | null> {
  store.ensure('queue');
  // Same open flags as the launcher: created if missing, never followed as a symlink.
  const fd = fs.openSync(warmerLockPath(store), fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  if (!flock(fd, LOCK_EX | LOCK_NB)) {
    fs.closeSync(fd);
    return null;
  }
  let open = true;
  return {
    held: true,
    release: () => {
      if (open) fs.closeSync(fd);
      open = false;
      return Promise.resolve();
    },
  };
}
