/**
 * The background warmer's lock: an flock(2) on <cache>/queue/.warmer.lock,
 * the lock the native launcher tests (LOCK_EX|LOCK_NB) before it starts a
 * warmer, so one warmer drains the queue however many misses happen at once.
 *
 * Node has no flock(2). Until src/sys (the only module allowed to declare
 * koffi functions) offers one, the lock is held by a tiny child:
 * util-linux's flock(1) takes it and then runs `cat` on a pipe from us. The
 * lock lives exactly as long as that pipe: when this process exits for any
 * reason (even SIGKILL) the pipe closes, cat and flock exit and the kernel
 * drops the lock. Without flock(1) the warmer runs unlocked: correctness is
 * kept by the per-key snapshot locks; only the one-warmer economy is lost.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Store } from './store.js';

export interface WarmerLock {
  /** False when running without a lock (no flock(1) on this system). */
  held: boolean;
  /** Releases the lock; resolves once it is free for others. */
  release(): Promise<void>;
}

const BUSY = 75;

export function warmerLockPath(store: Store): string {
  return path.join(store.sub('queue'), '.warmer.lock');
}

/** Takes the warmer lock without waiting; null when another warmer holds it. */
export async function takeWarmerLock(store: Store, flockBin = '/usr/bin/flock'): Promise<WarmerLock | null> {
  store.ensure('queue');
  const file = warmerLockPath(store);
  // Same open flags as the launcher: the file is created if missing, never followed as a symlink.
  fs.closeSync(fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600));
  const unlocked: WarmerLock = { held: false, release: () => Promise.resolve() };
  if (!fs.existsSync(flockBin)) return unlocked;
  const child = spawn(flockBin, ['-n', '-E', String(BUSY), file, '/bin/sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'ignore'],
    detached: false,
  });
  const result = await new Promise<'locked' | 'busy' | 'failed'>((resolve) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('locked')) resolve('locked');
    });
    child.on('error', () => resolve('failed'));
    child.on('exit', (code) => resolve(code === BUSY ? 'busy' : 'failed'));
  });
  if (result === 'busy') return null;
  if (result === 'failed') {
    child.kill('SIGKILL');
    return unlocked;
  }
  child.stdout.destroy();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Do not keep the event loop alive for the helper: if we exit, the pipe closes and it ends.
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  return {
    held: true,
    release: async () => {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}
