/**
 * The cache under hostile conditions: a full disk, a read-only cache, a
 * snapshotter killed at any moment. Runs stay correct; nothing half-written is
 * ever used; nothing stays locked.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseImage } from '../../src/image/format.js';
import { LAUNCHER, baseEnv, removeDir, tmpDir, type Env } from '../helpers/cx.js';

const isRoot = process.geteuid?.() === 0;
const mounts: string[] = [];

function mountTmpfs(dir: string, size: string): void {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount tmpfs: ${r.stderr}`);
  mounts.push(dir);
}

const PROBE = ['-c', 'echo "$0:$#:$*"; exit 5', 'zero', 'a', 'b c'];

function runBash(env: Env): { out: string; status: number | null; err: string } {
  const r = spawnSync(LAUNCHER, ['bash', ...PROBE], { env, encoding: 'utf8' });
  return { out: r.stdout, status: r.status, err: r.stderr };
}

const cold = (env: Env): ReturnType<typeof runBash> => runBash({ ...env, CACHED_EXEC_DISABLE: '1' });

afterAll(() => {
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
});

describe.runIf(isRoot)('a full disk', () => {
  let dir: string;
  let env: Env;
  beforeAll(() => {
    dir = tmpDir('cx-full-');
    mountTmpfs(dir, '64k'); // room for the directories and the statistics, not for an image
    env = baseEnv(dir);
  });

  it('--warm fails with a clear message and leaves no partial file', () => {
    const r = spawnSync(LAUNCHER, ['--warm', 'bash'], { env, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/cached-exec: .*(ENOSPC|no space|space)/i);
    const leftovers = fs.existsSync(path.join(dir, 'images')) ? fs.readdirSync(path.join(dir, 'images')) : [];
    expect(leftovers).toEqual([]);
  });

  it('runs are correct cold runs, counted as misses', () => {
    const a = runBash(env);
    expect(a).toEqual(cold(env));
    expect(a.status).toBe(5);
    const s = JSON.parse(spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' }).stdout);
    expect(s.misses).toBeGreaterThan(0);
  });
});

describe.runIf(isRoot)('a read-only cache directory', () => {
  let dir: string;
  let env: Env;
  beforeAll(() => {
    dir = tmpDir('cx-ro-');
    mountTmpfs(dir, '16m');
    env = baseEnv(dir);
    expect(spawnSync(LAUNCHER, ['--warm', 'bash'], { env }).status).toBe(0);
    expect(spawnSync('mount', ['-o', 'remount,ro', dir]).status).toBe(0);
  });

  it('still restores from the images it holds, with correct results', () => {
    const r = spawnSync(LAUNCHER, ['bash', '-c', 'grep -c "\\.img" /proc/$$/maps; true'], { env, encoding: 'utf8' });
    expect(Number(r.stdout.trim())).toBeGreaterThan(0);
    expect(runBash(env)).toEqual(cold(env));
  });

  it('a program without an image runs cold, correctly, and queues nothing', () => {
    const r = spawnSync(LAUNCHER, ['dash', '-c', 'echo dash-ok; exit 3'], { env: { ...env, CACHED_EXEC_NO_WARM: '' }, encoding: 'utf8' });
    expect(r.stdout).toBe('dash-ok\n');
    expect(r.status).toBe(3);
  });

  it('--warm reports the read-only directory instead of crashing', () => {
    const r = spawnSync(LAUNCHER, ['--warm', 'dash'], { env, encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr.split('\n').filter(Boolean).length).toBeLessThanOrEqual(2);
    expect(r.stderr).toMatch(/^cached-exec: /);
  });
});

describe('a snapshotter killed at any moment', () => {
  let dir: string;
  let env: Env;
  beforeAll(() => {
    dir = tmpDir('cx-kill-');
    env = baseEnv(dir);
  });
  afterAll(() => removeDir(dir));

  it('leaves no image that is not whole, and the next --warm succeeds', async () => {
    const prog = fs.existsSync('/usr/bin/cmake') ? 'cmake' : 'perl'; // a snapshot that takes a while
    for (const delay of [5, 30, 60, 100, 150, 220]) {
      const child = spawn(LAUNCHER, ['--warm', prog], { env, stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('close', r));
      const imagesDir = path.join(dir, 'images');
      for (const f of fs.existsSync(imagesDir) ? fs.readdirSync(imagesDir) : []) {
        if (!f.endsWith('.img')) continue; // a killed writer's temp file: never looked up, --cleanup removes it
        expect(parseImage(fs.readFileSync(path.join(imagesDir, f))).problems).toEqual([]);
      }
      // No traced child survives its tracer (PTRACE_O_EXITKILL).
      const strays = spawnSync('pgrep', ['-f', `internal-traceme.*${prog}`], { encoding: 'utf8' }).stdout.trim();
      expect(strays).toBe('');
    }
    const r = spawnSync(LAUNCHER, ['--warm', prog], { env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});
