/**
 * The caller's RLIMIT_STACK (issue 11, items 6 and 7):
 *  - small limits (64 and 128 KiB) must not crash the launcher: prefix form
 *    (image, miss, CACHED_EXEC_DISABLE), shims and --after-init all run;
 *  - a restored post-init program's stack grows as the caller's limit
 *    allows, exactly like a cold one's: with `ulimit -s unlimited` a bash
 *    recursing 12,000 deep finishes, and with `ulimit -s 2048` a recursion
 *    that needs more crashes (SIGSEGV) where the cold run crashes.
 * Limits are set with prlimit(1) on the launcher's own process, as a shell's
 * ulimit would; every run is compared with a cold run under the same limit.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAUNCHER, SYSTEM_PATH, baseEnv, describeWarm, installedPrograms, observable, removeDir, run, tmpCacheDir, tmpDir, warm,
  type Env, type RunResult, type WarmResult,
} from '../helpers/cx.js';

const enabled = installedPrograms(['bash', 'dash']).length === 2 && spawnSync('prlimit', ['--version']).status === 0;
const cacheDir = tmpCacheDir();
const work = tmpDir('cx-stack-');
const env = baseEnv(cacheDir);
let dashWarm: WarmResult | undefined;
let shims: string;

/** `prlimit --stack=LIMIT -- FILE ARGS` (bytes, or 'unlimited'). */
function limited(limit: number | 'unlimited', file: string, args: string[], e: Env): Promise<RunResult> {
  return run('prlimit', [`--stack=${limit}`, '--', file, ...args], { env: e, timeoutMs: 200_000 });
}
const cold = (e: Env): Env => ({ ...e, CACHED_EXEC_DISABLE: '1' });

/** Restores the launcher recorded since the last call (its own statistics: proof from outside the program). */
function hitsSinceLast(): number {
  const s = spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' });
  const hits = (JSON.parse(s.stdout) as { outcomes: Record<string, number> }).outcomes.HIT ?? 0;
  spawnSync(LAUNCHER, ['--zero-stats'], { env });
  return hits;
}

beforeAll(async () => {
  if (!enabled) return;
  dashWarm = await warm('dash', env);
  const w = spawnSync(LAUNCHER, ['--warm', '--after-init', 'bash'], { env, encoding: 'utf8', timeout: 120_000 });
  if (w.status !== 0) throw new Error(`--warm --after-init bash: ${w.stdout}${w.stderr}`);
  shims = path.join(work, 'shims');
  fs.mkdirSync(shims);
  for (const p of ['dash', 'sed']) fs.symlinkSync(LAUNCHER, path.join(shims, p));
}, 180_000);
afterAll(() => {
  removeDir(cacheDir);
  removeDir(work);
});

describe.runIf(enabled)('small stack limits', () => {
  for (const kib of [64, 128]) {
    const bytes = kib * 1024;
    it(`${kib} KiB: the prefix form restores, misses and bypasses without crashing`, async () => {
      expect(dashWarm?.exists, describeWarm(dashWarm)).toBe(true);
      const args = ['dash', '-c', 'echo "ok $0 $1"; exit 3', 'zero', 'one'];
      const reference = await limited(bytes, LAUNCHER, args, cold(env));
      expect(reference.status).toBe(3);
      for (const e of [env, cold(env), { ...env, CACHED_EXEC_DIR: path.join(work, `empty-${kib}`) }]) {
        const r = await limited(bytes, LAUNCHER, args, e);
        expect(observable(r), JSON.stringify(e.CACHED_EXEC_DIR)).toEqual(observable(reference));
      }
    });

    it(`${kib} KiB: shims run their program`, async () => {
      const e = { ...env, PATH: `${shims}:${SYSTEM_PATH}` };
      const r = await limited(bytes, path.join(shims, 'dash'), ['-c', 'echo a | sed s/a/shimmed/'], e);
      expect(r.signal).toBeNull();
      expect(r.stdout.toString()).toBe('shimmed\n');
      expect(r.status).toBe(0);
    });

    it(`${kib} KiB: --after-init runs`, async () => {
      const args = ['--after-init', 'bash', '-c', 'echo "post-init $1"', 'x', 'arg'];
      const r = await limited(bytes, LAUNCHER, args, env);
      expect(observable(r)).toEqual(observable(await limited(bytes, LAUNCHER, args, cold(env))));
      expect(r.stdout.toString()).toBe('post-init arg\n');
    });
  }
});

/** A bash function recursing `depth` deep: each level costs bash about 1 KiB of C stack (and time: 12,000 take seconds). */
const recursion = (depth: number): string[] =>
  ['-c', `f() { if (($1 > 0)); then f $(($1 - 1)); else echo bottom; fi; }; f ${depth}; echo done`];

describe.runIf(enabled)('a restored post-init program\'s stack obeys RLIMIT_STACK', () => {
  it('ulimit -s unlimited: 12,000 levels deep finish, as cold', async () => {
    const args = ['--after-init', 'bash', ...recursion(12_000)];
    const reference = await limited('unlimited', LAUNCHER, args, cold(env));
    expect(reference.stdout.toString()).toBe('bottom\ndone\n');
    hitsSinceLast();
    const r = await limited('unlimited', LAUNCHER, args, env);
    expect(observable(r)).toEqual(observable(reference));
    expect(hitsSinceLast()).toBe(1); // it was a restore
  }, 500_000);

  it('ulimit -s 2048: a recursion that needs more crashes with SIGSEGV, as cold', async () => {
    const args = ['--after-init', 'bash', ...recursion(4000)];
    expect((await limited(8192 * 1024, LAUNCHER, args, cold(env))).stdout.toString()).toBe('bottom\ndone\n'); // fits 8 MiB
    const reference = await limited(2048 * 1024, LAUNCHER, args, cold(env));
    expect(reference.signal).toBe('SIGSEGV');
    hitsSinceLast();
    const r = await limited(2048 * 1024, LAUNCHER, args, env);
    expect(observable(r)).toEqual(observable(reference));
    expect(hitsSinceLast()).toBe(1);
  }, 300_000);

  it('the default limit restores the image (so the cases above test restores)', async () => {
    const r = await run(LAUNCHER, ['--after-init', 'bash', '-c', 'grep -c -F "$1" /proc/$$/maps', 'x', cacheDir], { env });
    expect(r.stdout.toString()).toMatch(/^[1-9]\d*\n$/);
  });
});
