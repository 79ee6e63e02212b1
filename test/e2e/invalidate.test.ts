/**
 * Invalidation on real files: a private program linked against a private
 * library (built here with cc, found through an rpath that lists two
 * directories, the library in the second). With the watcher running, a
 * rebuilt library or a library appearing on the path the loader probed first
 * removes the image at once, and the next run prints the new behaviour.
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
let watchLog = '';

const lib = (dir: string, value: number): void => buildValueLib(work, dir, value);

const runProg = (): { out: string; maps: boolean } => {
  const r = spawnSync(LAUNCHER, [path.join(work, 'prog')], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return { out: r.stdout.split('\n')[0] ?? '', maps: r.stdout.includes('.img') };
};

const images = (): string[] => fs.readdirSync(path.join(cache, 'images')).filter((f) => f.endsWith('.img'));
const warm = (): void => {
  const r = spawnSync(LAUNCHER, ['--warm', path.join(work, 'prog')], { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
};

describe.runIf(haveCc())('invalidation of a private program and library', () => {
  beforeAll(() => {
    work = tmpDir('cx-inval-');
    cache = tmpCacheDir();
    env = baseEnv(cache);
    fs.mkdirSync(path.join(work, 'first'));
    fs.mkdirSync(path.join(work, 'second'));
    lib(path.join(work, 'second'), 1);
    buildValueProgram(work, path.join(work, 'second'), [path.join(work, 'first'), path.join(work, 'second')]);
  });

  afterAll(() => {
    watcher?.kill('SIGTERM');
    removeDir(work);
    removeDir(cache);
  });

  it('without the watcher, the restore-time check sees a rebuilt library', () => {
    warm();
    expect(runProg()).toEqual({ out: 'value 1', maps: true });
    lib(path.join(work, 'second'), 2);
    expect(runProg()).toEqual({ out: 'value 2', maps: false }); // cold: the image's library changed
  });

  it('without the watcher, the restore-time check sees a library appear on a path the loader probed', () => {
    warm();
    expect(runProg()).toEqual({ out: 'value 2', maps: true });
    lib(path.join(work, 'first'), 5); // the rpath's first directory, probed and missing at snapshot time
    expect(runProg()).toEqual({ out: 'value 5', maps: false });
    fs.rmSync(path.join(work, 'first', 'libval.so'));
    expect(runProg()).toEqual({ out: 'value 2', maps: true }); // the image holds again: the path is missing again
  });

  it('starts the watcher', async () => {
    warm(); // re-taken against the current library
    expect(runProg()).toEqual({ out: 'value 2', maps: true });
    watcher = spawn(LAUNCHER, ['--watch'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    watcher.stdout?.on('data', (c: Buffer) => { watchLog += c.toString(); });
    watcher.stderr?.on('data', (c: Buffer) => { watchLog += c.toString(); });
    expect(await waitFor(() => watchLog.includes('watching'), 10_000), watchLog).toBe(true);
  });

  it('with the watcher, a rebuilt library deletes the image at once', async () => {
    expect(images().length).toBe(1);
    lib(path.join(work, 'second'), 3);
    expect(await waitFor(() => images().length === 0 && /stale-file/.test(watchLog), 5000), watchLog).toBe(true);
    expect(watchLog).toMatch(/invalidated .*prog.*stale-file/);
    expect(runProg()).toEqual({ out: 'value 3', maps: false });
  });

  it('picks up an image added while it runs; a library on a probed path deletes it', async () => {
    warm();
    expect(runProg()).toEqual({ out: 'value 3', maps: true });
    await new Promise((r) => setTimeout(r, 500)); // the watcher reads the new image
    lib(path.join(work, 'first'), 4); // the rpath's first directory: probed and missing at snapshot time
    expect(await waitFor(() => images().length === 0 && /negative-dep/.test(watchLog), 5000), watchLog).toBe(true);
    expect(runProg()).toEqual({ out: 'value 4', maps: false });
  });

  it('survives files that vanish, and counts its invalidations in the statistics', async () => {
    fs.rmSync(path.join(work, 'first'), { recursive: true });
    await new Promise((r) => setTimeout(r, 300));
    expect(watcher?.exitCode).toBe(null);
    const s = JSON.parse(spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' }).stdout);
    expect(s.invalidations.total).toBeGreaterThanOrEqual(2);
  });
});
