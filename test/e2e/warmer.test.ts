/**
 * The miss path with background warming on, as a fresh user meets it: 50
 * concurrent first runs of one program all print the right thing at once
 * (cold), start exactly one snapshot between them, and later runs restore.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAUNCHER, baseEnv, removeDir, tmpCacheDir, waitFor } from '../helpers/cx.js';

const cache = tmpCacheDir();
afterAll(() => removeDir(cache));

function runSed(env: Record<string, string>, i: number): Promise<{ out: string; status: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(LAUNCHER, ['sed', `s/x/${i}/`], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.on('close', (status) => resolve({ out, status }));
    child.stdin.end('value x\n');
  });
}

describe('50 concurrent first runs with the background warmer', () => {
  const env: Record<string, string> = baseEnv(cache);
  delete env.CACHED_EXEC_NO_WARM; // the point of this suite: misses start the warmer

  it('all print correct output, and exactly one snapshot is taken', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => runSed(env, i)));
    results.forEach((r, i) => {
      expect(r.status).toBe(0);
      expect(r.out).toBe(`value ${i}\n`);
    });
    const images = (): string[] => (fs.existsSync(path.join(cache, 'images')) ? fs.readdirSync(path.join(cache, 'images')) : []);
    const queueEmpty = (): boolean => {
      const q = path.join(cache, 'queue');
      return !fs.existsSync(q) || fs.readdirSync(q).every((f) => f.startsWith('.'));
    };
    expect(await waitFor(() => images().some((f) => f.endsWith('.img')) && queueEmpty(), 120_000)).toBe(true);
    // A late miss may have started another warmer: wait until none holds the lock, then count.
    expect(await waitFor(() => spawnSync('flock', ['-n', path.join(cache, 'queue', '.warmer.lock'), 'true']).status === 0, 60_000)).toBe(true);
    expect(images().filter((f) => f.endsWith('.img'))).toHaveLength(1);
    const stats = JSON.parse(spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' }).stdout);
    expect(stats.snapshots.taken).toBe(1);
    // Which runs miss depends on scheduling: the first certainly does (no warmer starts before a
    // miss), and a run that starts after the snapshot landed restores. Every run is counted once.
    expect(stats.runs).toBe(50);
    expect(stats.misses).toBeGreaterThanOrEqual(1);
    expect(stats.misses + stats.hits + stats.fallbacks).toBe(50);
  }, 240_000);

  it('the next run restores', async () => {
    const r = spawnSync(LAUNCHER, ['sed', '-n', '/\\.img/p', '/proc/self/maps'], { env, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(cache);
    expect((await runSed(env, 7)).out).toBe('value 7\n');
  });
});
