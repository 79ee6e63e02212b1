/**
 * The caller's RLIMIT_STACK (issue 11, items 6 and 7):
 *  - small limits (64 and 128 KiB) must not crash the launcher: prefix form
 *    (image, miss, CACHED_EXEC_DISABLE), shims and --after-init all run;
 *  - a restored post-init program's stack grows as the caller's limit
 *    allows, exactly like a cold one's: with `ulimit -s unlimited` a bash
 *    recursing 12,000 deep finishes, and with `ulimit -s 2048` a recursion
 *    that needs more crashes (SIGSEGV) where the cold run crashes;
 *  - an image serves the stack limit it was taken with (glibc sized its
 *    thread stacks from it): under another one the run is cold (FAIL_LIMITS).
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
function limited(limit: number | string, file: string, args: string[], e: Env): Promise<RunResult> {
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

/** Takes the post-init bash image with this stack limit: glibc sizes thread stacks from it, so an image serves its own limit only. */
function warmUnder(limit: number | 'unlimited' | 'default'): void {
  const warmArgs = [LAUNCHER, '--warm', '--after-init', 'bash'];
  const [file, ...args] = limit === 'default' ? warmArgs : ['prlimit', `--stack=${limit}`, '--', ...warmArgs];
  const w = spawnSync(file as string, args, { env, encoding: 'utf8', timeout: 200_000 });
  if (w.status !== 0) throw new Error(`--warm --after-init bash under ${limit}: ${w.stdout}${w.stderr}`);
}

/** The launcher's outcome counts since the last call. */
function outcomesSinceLast(): Record<string, number> {
  const s = spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' });
  spawnSync(LAUNCHER, ['--zero-stats'], { env });
  const all = (JSON.parse(s.stdout) as { outcomes: Record<string, number> }).outcomes;
  return Object.fromEntries(Object.entries(all).filter(([, n]) => n));
}

describe.runIf(enabled)('a restored post-init program\'s stack obeys RLIMIT_STACK', () => {
  it('ulimit -s unlimited: 12,000 levels deep finish, as cold', async () => {
    warmUnder('unlimited');
    const args = ['--after-init', 'bash', ...recursion(12_000)];
    const reference = await limited('unlimited', LAUNCHER, args, cold(env));
    expect(reference.stdout.toString()).toBe('bottom\ndone\n');
    hitsSinceLast();
    const r = await limited('unlimited', LAUNCHER, args, env);
    expect(observable(r)).toEqual(observable(reference));
    expect(hitsSinceLast()).toBe(1); // it was a restore
  }, 500_000);

  it('ulimit -s 2048: a recursion that needs more crashes with SIGSEGV, as cold', async () => {
    warmUnder(2048 * 1024);
    const args = ['--after-init', 'bash', ...recursion(4000)];
    expect((await limited(8192 * 1024, LAUNCHER, args, cold(env))).stdout.toString()).toBe('bottom\ndone\n'); // fits 8 MiB
    const reference = await limited(2048 * 1024, LAUNCHER, args, cold(env));
    expect(reference.signal).toBe('SIGSEGV');
    hitsSinceLast();
    const r = await limited(2048 * 1024, LAUNCHER, args, env);
    expect(observable(r)).toEqual(observable(reference));
    expect(hitsSinceLast()).toBe(1);
  }, 300_000);

  it('an image taken under another stack limit is not restored (FAIL_LIMITS): the run is cold and the same', async () => {
    warmUnder('default');
    const args = ['--after-init', 'bash', '-c', 'ulimit -s; echo "$1"', 'x', 'arg'];
    for (const limit of ['unlimited', '16777216:unlimited'] as const) {
      const reference = await limited(limit, LAUNCHER, args, cold(env));
      outcomesSinceLast();
      const r = await limited(limit, LAUNCHER, args, env);
      expect(observable(r)).toEqual(observable(reference));
      expect(outcomesSinceLast()).toEqual({ FAIL_LIMITS: 1 });
    }
    const r = await run(LAUNCHER, args, { env });
    expect(r.stdout.toString()).toBe(`${(spawnSync('bash', ['-c', 'ulimit -s'], { encoding: 'utf8' }).stdout ?? '').trim()}\narg\n`);
    expect(outcomesSinceLast()).toEqual({ HIT: 1 });
  }, 300_000);

  it('the default limit restores the image (so the cases above test restores)', async () => {
    warmUnder('default');
    const r = await run(LAUNCHER, ['--after-init', 'bash', '-c', 'grep -c -F "$1" /proc/$$/maps', 'x', cacheDir], { env });
    expect(r.stdout.toString()).toMatch(/^[1-9]\d*\n$/);
  });
});

const python3 = installedPrograms(['python3']).length === 1;
/** Prints RLIMIT_STACK's soft value and the default thread stack size glibc computed from it. */
const THREAD_STACK = [
  'import ctypes, resource',
  'libc = ctypes.CDLL(None)',
  'attr = ctypes.create_string_buffer(256)',
  'size = ctypes.c_size_t()',
  'assert libc.pthread_getattr_default_np(attr) == 0 and libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0',
  'print(resource.getrlimit(resource.RLIMIT_STACK)[0], size.value)',
].join('\n');

describe.runIf(enabled && python3)('glibc sized the default thread stack from RLIMIT_STACK before the image was taken', () => {
  it('a post-link python3 image under another limit runs cold, and its threads get the stack size of a cold run', async () => {
    await warm('python3', env);
    const args = ['python3', '-c', THREAD_STACK];
    outcomesSinceLast();
    const same = await run(LAUNCHER, args, { env });
    expect(outcomesSinceLast()).toEqual({ HIT: 1 });
    expect(observable(same)).toEqual(observable(await run(LAUNCHER, args, { env: cold(env) })));
    const limit = '16777216:unlimited';
    const reference = await limited(limit, LAUNCHER, args, cold(env));
    expect(reference.stdout.toString()).toBe('16777216 16777216\n');
    outcomesSinceLast();
    const r = await limited(limit, LAUNCHER, args, env);
    expect(observable(r)).toEqual(observable(reference));
    expect(outcomesSinceLast()).toEqual({ FAIL_LIMITS: 1 });
  }, 120_000);

  it('that cold run queues a re-take under its own limit: the warmer takes the image with it, and such runs then restore', async () => {
    await warm('python3', env);
    const warmEnv: Env = { ...env, CACHED_EXEC_RETAKE_SECONDS: '0' };
    delete warmEnv.CACHED_EXEC_NO_WARM;
    const args = ['python3', '-c', THREAD_STACK];
    const limit = '33554432:unlimited';
    const reference = await limited(limit, LAUNCHER, args, cold(env));
    expect(reference.stdout.toString()).toBe('33554432 33554432\n');
    outcomesSinceLast();
    expect(observable(await limited(limit, LAUNCHER, args, warmEnv))).toEqual(observable(reference));
    expect(outcomesSinceLast()).toEqual({ FAIL_LIMITS: 1 });
    // The warmer runs in the background (started by that run): poll until a run under the limit restores.
    let last: Record<string, number> = {};
    const restores = async (): Promise<boolean> => {
      const r = await limited(limit, LAUNCHER, args, env);
      expect(observable(r)).toEqual(observable(reference));
      last = outcomesSinceLast();
      return last.HIT === 1;
    };
    const deadline = Date.now() + 90_000;
    let ok = false;
    while (!ok && Date.now() < deadline) {
      ok = await restores();
      if (!ok) await new Promise((res) => setTimeout(res, 500));
    }
    expect(ok, `never restored under ${limit}: ${JSON.stringify(last)}`).toBe(true);
    const inspect = spawnSync(LAUNCHER, ['--inspect', 'python3'], { env, encoding: 'utf8' });
    expect(inspect.stdout).toMatch(/limits +RLIMIT_STACK 33554432\/unlimited/);
  }, 150_000);
});

describe.runIf(enabled)('programs that cannot start a thread are restored under any stack limit', () => {
  it('dash (no pthread_create, dlopen or dlsym in it or its libraries): restored under another limit, its image records none', async () => {
    expect(dashWarm?.exists, describeWarm(dashWarm)).toBe(true);
    const inspect = spawnSync(LAUNCHER, ['--inspect', 'dash'], { env, encoding: 'utf8' });
    expect(inspect.stdout).toMatch(/limits +none read/);
    const args = ['dash', '-c', 'echo "dash $1"; exit 4', 'zero', 'one'];
    for (const limit of ['unlimited', '67108864:unlimited']) {
      const reference = await limited(limit, LAUNCHER, args, cold(env));
      outcomesSinceLast();
      const r = await limited(limit, LAUNCHER, args, env);
      expect(observable(r)).toEqual(observable(reference));
      expect(outcomesSinceLast()).toEqual({ HIT: 1 });
    }
  });
});
