/**
 * `--watch --rewarm` end to end on a private program and library: a rebuilt
 * library deletes the image at once, the watcher queues the program again and
 * starts the background warmer, and the next run restores from an image of
 * the new library, printing the new behaviour.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAUNCHER, baseEnv, buildValueLib, buildValueProgram, haveCc, removeDir, tmpCacheDir, tmpDir, waitFor, type Env,
} from '../helpers/cx.js';

let work: string;
let cache: string;
let env: Env;
let watcher: ChildProcess | undefined;
let log = '';

function lib(value: number): void {
  buildValueLib(work, path.join(work, 'lib'), value);
}

/** First line of output, and whether the process was restored (its maps show the image). */
function run(): { out: string; restored: boolean } {
  const r = spawnSync(LAUNCHER, [path.join(work, 'prog')], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { out: r.stdout.split('\n')[0] ?? '', restored: r.stdout.includes(`${cache}/images/`) };
}

const images = (): string[] => (fs.existsSync(path.join(cache, 'images'))
  ? fs.readdirSync(path.join(cache, 'images')).filter((f) => f.endsWith('.img')) : []);

describe.runIf(haveCc())('--watch --rewarm', () => {
  beforeAll(() => {
    work = tmpDir('cx-rewarm-');
    cache = tmpCacheDir();
    env = baseEnv(cache);
    fs.mkdirSync(path.join(work, 'lib'));
    lib(1);
    buildValueProgram(work, path.join(work, 'lib'), [path.join(work, 'lib')]);
  });

  afterAll(() => {
    watcher?.kill('SIGTERM');
    removeDir(work);
    removeDir(cache);
  });

  it('a rebuilt library: the image goes at once, a new one comes from the warmer, the next run restores the new behaviour', async () => {
    expect(spawnSync(LAUNCHER, ['--warm', path.join(work, 'prog')], { env, encoding: 'utf8' }).status).toBe(0);
    expect(run()).toEqual({ out: 'value 1', restored: true });
    const [first] = images();

    const watchEnv: Env = { ...env };
    delete watchEnv.CACHED_EXEC_NO_WARM; // re-warming is the point here
    watcher = spawn(LAUNCHER, ['--watch', '--rewarm'], { env: watchEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    watcher.stdout?.on('data', (c: Buffer) => { log += c.toString(); });
    watcher.stderr?.on('data', (c: Buffer) => { log += c.toString(); });
    expect(await waitFor(() => log.includes('watching'), 10_000), log).toBe(true);

    const mtimeBefore = fs.statSync(path.join(cache, 'images', first as string)).mtimeMs;
    lib(2);
    expect(await waitFor(() => images().length === 0, 5000), log).toBe(true);
    // A run in between is a correct cold run.
    expect(run()).toEqual({ out: 'value 2', restored: false });
    // The watcher waits for the changes to settle, then the warmer takes the program again.
    expect(await waitFor(() => images().length === 1, 30_000), log).toBe(true);
    expect(log).toMatch(/invalidated .*prog.*stale-file/);
    expect(log).toMatch(/queued 1 program/);
    expect(fs.statSync(path.join(cache, 'images', images()[0] as string)).mtimeMs).toBeGreaterThan(mtimeBefore);
    expect(run()).toEqual({ out: 'value 2', restored: true });

    const s = JSON.parse(spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' }).stdout);
    expect(s.invalidations.reasons['stale-file']).toBeGreaterThanOrEqual(1);
    expect(s.snapshots.taken).toBe(2);
    expect(watcher.exitCode).toBe(null);
  }, 60_000);
});
