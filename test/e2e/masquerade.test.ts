/**
 * Masquerade form: a symlink named like a program, pointing at bin/cached-exec,
 * early on PATH. The real program runs (restored when warmed) with the
 * caller's argv[0] untouched; the shim never finds itself (shim dir twice on
 * PATH, two shim dirs); a shim for a missing program fails like a shell.
 * Also: `cached-exec ./script` with a #! line restores the interpreter.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAUNCHER, SYSTEM_PATH, baseEnv, describeWarm, installedPrograms, mapsShowImage, observable, removeDir, resolveOnPath,
  run, runCold, runRestored, tmpCacheDir, tmpDir, warm, type Env, type WarmResult,
} from '../helpers/cx.js';

const hasBash = installedPrograms(['bash']).length > 0;
const hasDash = installedPrograms(['dash']).length > 0;
const cacheDir = tmpCacheDir();
const work = tmpDir('cx-shim-');
const shimA = path.join(work, 'shims a');
const shimB = path.join(work, 'shims-b');
for (const d of [shimA, shimB]) {
  fs.mkdirSync(d);
  for (const n of ['bash', 'dash', 'cx-no-such-program']) fs.symlinkSync(LAUNCHER, path.join(d, n));
}
// A chain: a symlink to a symlink to the launcher.
fs.symlinkSync(path.join(shimA, 'bash'), path.join(shimB, 'chained-bash-link'));

const shimEnv = baseEnv(cacheDir, { PATH: `${shimA}:${SYSTEM_PATH}` });
const realBash = resolveOnPath('bash') ?? '/bin/bash';
const SCRIPT = 'printf "[%s]\\n" "$0" "$@"; cat /proc/$$/maps; true';

let bashShimWarm: WarmResult | undefined;
let dashShimWarm: WarmResult | undefined;

beforeAll(async () => {
  if (hasBash) bashShimWarm = await warm('bash', shimEnv);
  if (hasDash) dashShimWarm = await warm('dash', shimEnv);
}, 180_000);

afterAll(() => {
  removeDir(cacheDir);
  removeDir(work);
});

/** Splits a run of SCRIPT into its argv lines and whether the maps show `image`. */
function parse(stdout: Buffer, image: string | null | undefined): { argv: string; mapped: boolean } {
  const text = stdout.toString();
  const argv = text.split('\n').filter((l) => l.startsWith('[')).join('\n');
  return { argv, mapped: image ? mapsShowImage(text, image) : false };
}

if (hasBash) {
  describe('bash shim', () => {
    it('--warm through a PATH that has the shim first warms the real bash', () => {
      expect(bashShimWarm?.exists, describeWarm(bashShimWarm)).toBe(true);
    });

    it('runs the real bash restored, with the caller\'s argv[0]', async () => {
      const args = ['-c', SCRIPT, 'my-zero', 'a b', 'c\nd'];
      const viaShim = await run(path.join(shimA, 'bash'), args, { env: shimEnv, argv0: 'custom-argv0' });
      const direct = await run(realBash, args, { env: shimEnv, argv0: 'custom-argv0' });
      expect(viaShim.status, viaShim.stderr.toString()).toBe(0);
      expect(parse(viaShim.stdout, null).argv).toBe(parse(direct.stdout, null).argv);
      expect(parse(viaShim.stdout, null).argv).toContain('[my-zero]');
      expect(viaShim.stderr.toString()).toBe(direct.stderr.toString());
      expect(parse(viaShim.stdout, bashShimWarm?.image).mapped, `shim run did not restore; ${describeWarm(bashShimWarm)}`).toBe(true);
    });

    it('$0 of a -c command without a name is the caller\'s argv[0] (exec -a style)', async () => {
      const args = ['-c', 'echo "$0"; true'];
      const viaShim = await run(path.join(shimA, 'bash'), args, { env: shimEnv, argv0: 'renamed-shell' });
      expect(viaShim.stdout.toString()).toBe('renamed-shell\n');
    });

    it('found through PATH by another program (env bash ...): restored', async () => {
      const r = await run('/usr/bin/env', ['bash', '-c', SCRIPT, 'via-env'], { env: shimEnv });
      expect(r.status, r.stderr.toString()).toBe(0);
      expect(parse(r.stdout, null).argv).toBe('[via-env]');
      expect(parse(r.stdout, bashShimWarm?.image).mapped, describeWarm(bashShimWarm)).toBe(true);
    });

    it('a login shell argv[0] (-bash) reaches bash untouched', async () => {
      const args = ['-c', 'shopt -q login_shell && echo login || echo not-login; echo "$0"'];
      const viaShim = await run(path.join(shimA, 'bash'), args, { env: shimEnv, argv0: '-bash' });
      const direct = await run(realBash, args, { env: shimEnv, argv0: '-bash' });
      expect(observable(viaShim)).toEqual(observable(direct));
      expect(viaShim.stdout.toString()).toContain('login\n-bash\n');
    });

    it('cold (CACHED_EXEC_DISABLE=1) through the shim is the real bash too', async () => {
      const args = ['-c', 'printf "[%s]\\n" "$0" "$@"', 'z', 'y'];
      const viaShim = await run(path.join(shimA, 'bash'), args, { env: { ...shimEnv, CACHED_EXEC_DISABLE: '1' } });
      const direct = await run(realBash, args, { env: shimEnv });
      expect(observable(viaShim)).toEqual(observable(direct));
    });

    it('shim directory twice on PATH: no loop, real bash runs', async () => {
      const e: Env = { ...shimEnv, PATH: `${shimA}:${shimA}:${SYSTEM_PATH}` };
      const r = await run(path.join(shimA, 'bash'), ['-c', 'echo "ok $0"', 'twice'], { env: e, timeoutMs: 10_000 });
      expect(r.timedOut).toBe(false);
      expect(observable(r)).toEqual({ stdout: 'ok twice\n', stderr: '', status: 0, signal: null });
    });

    it('two shim directories on PATH: no loop, real bash runs', async () => {
      const e: Env = { ...shimEnv, PATH: `${shimB}:${shimA}:${SYSTEM_PATH}` };
      const r = await run('/usr/bin/env', ['bash', '-c', 'echo "ok $0"', 'two-dirs'], { env: e, timeoutMs: 10_000 });
      expect(r.timedOut).toBe(false);
      expect(observable(r)).toEqual({ stdout: 'ok two-dirs\n', stderr: '', status: 0, signal: null });
    });

    it('prefix form with the shim dir on PATH skips the shim', async () => {
      const r = await runRestored('bash', ['-c', 'echo "prefix $0"', 'p'], { env: shimEnv, timeoutMs: 10_000 });
      expect(observable(r)).toEqual({ stdout: 'prefix p\n', stderr: '', status: 0, signal: null });
    });

    it('a name that resolves only to shims gives 127 and a shell-like message', async () => {
      const r = await run(path.join(shimA, 'cx-no-such-program'), ['x'], { env: shimEnv, timeoutMs: 10_000 });
      expect(r.timedOut).toBe(false);
      expect(r.status).toBe(127);
      expect(r.stdout.toString()).toBe('');
      expect(r.stderr.toString()).toMatch(/cx-no-such-program: command not found\n$/);
      const both = await run(path.join(shimA, 'cx-no-such-program'), [], {
        env: { ...shimEnv, PATH: `${shimA}:${shimB}:${shimA}` },
        timeoutMs: 10_000,
      });
      expect(both.status).toBe(127);
    });

    it('no image yet (fresh cache): the shim runs the program cold, correctly', async () => {
      const fresh = tmpCacheDir();
      try {
        const e = baseEnv(fresh, { PATH: shimEnv.PATH as string });
        const args = ['-c', 'printf "[%s]\\n" "$0" "$@"; exit 9', 'n', 'm m'];
        const viaShim = await run(path.join(shimA, 'bash'), args, { env: e });
        const direct = await run(realBash, args, { env: e });
        expect(observable(viaShim)).toEqual(observable(direct));
        expect(viaShim.status).toBe(9);
      } finally {
        removeDir(fresh);
      }
    });
  });

  describe('scripts with a #! line', () => {
    const script = path.join(work, 'script with space.sh');
    fs.writeFileSync(script, `#!${realBash}\n${SCRIPT}\n`, { mode: 0o755 });
    const env = baseEnv(cacheDir);
    let interp: WarmResult | undefined;
    beforeAll(async () => {
      interp = await warm(realBash, env);
    }, 120_000);

    it('cached-exec ./script runs the interpreter with the argv the kernel builds, restored', async () => {
      const cold = await runCold(script, ['a b', 'c'], { env });
      const restored = await runRestored(script, ['a b', 'c'], { env });
      expect(restored.status, restored.stderr.toString()).toBe(0);
      expect(parse(restored.stdout, null).argv).toBe(parse(cold.stdout, null).argv);
      expect(parse(cold.stdout, null).argv).toBe(`[${script}]\n[a b]\n[c]`);
      expect(parse(restored.stdout, interp?.image).mapped, `script's interpreter not restored; ${describeWarm(interp)}`).toBe(true);
    });
  });
}

if (hasDash) {
  describe('dash shim', () => {
    it('runs the real dash restored; argv[0] untouched', async () => {
      const args = ['-c', SCRIPT, 'dash-zero', 'q r'];
      const viaShim = await run(path.join(shimA, 'dash'), args, { env: shimEnv, argv0: 'sh' });
      expect(viaShim.status, viaShim.stderr.toString()).toBe(0);
      expect(parse(viaShim.stdout, null).argv).toBe('[dash-zero]\n[q r]');
      expect(parse(viaShim.stdout, dashShimWarm?.image).mapped, describeWarm(dashShimWarm)).toBe(true);
    });

    it('error messages name what the caller called it', async () => {
      const args = ['-c', 'nosuchcmd-xyz'];
      const viaShim = await run(path.join(shimA, 'dash'), args, { env: shimEnv, argv0: 'my-sh' });
      const direct = await run(resolveOnPath('dash') as string, args, { env: shimEnv, argv0: 'my-sh' });
      expect(observable(viaShim)).toEqual(observable(direct));
      expect(viaShim.stderr.toString()).toContain('my-sh');
    });
  });
}

if (hasBash) describe('symlink chains', () => {
  it('a symlink to a shim symlink is named by its own basename', async () => {
    const r = await run(path.join(shimB, 'chained-bash-link'), [], { env: shimEnv, timeoutMs: 10_000 });
    expect(r.status).toBe(127);
    expect(r.stderr.toString()).toMatch(/chained-bash-link: command not found/);
  });
});
