/**
 * Environment dependencies: the TypeScript reference (src/cache/envdeps.ts)
 * and the launcher's key step (src/restore/env.c) must agree on every form
 * (a value, only whether set, a prefix, the whole environment) and on the
 * selector that names a variant image. A real image of `true` gets
 * hand-written dependencies; the launcher's verdicts (its statistics
 * records) are compared with checkImage's.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkImage } from '../../src/cache/check.js';
import { dependency, observed, unmetDependencies, valueHash, variantSelector } from '../../src/cache/envdeps.js';
import { envHash, keyHash } from '../../src/cache/key.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { parseImage, serializeImage, type ImageModel } from '../../src/image/format.js';
import { EnvDepFlag, Src, hash64 } from '../../src/image/schema.js';
import { LAUNCHER, baseEnv, removeDir, tmpCacheDir, type Env } from '../helpers/cx.js';

describe('the reference', () => {
  it('hashes a value, its absence and the empty value apart', () => {
    expect(valueHash(undefined)).toBe(0n);
    expect(valueHash('')).toBe(hash64(Buffer.alloc(0)));
    expect(valueHash('x')).not.toBe(valueHash('y'));
    expect(valueHash('')).not.toBe(0n);
  });

  it('observes each form as the launcher does', () => {
    const env = { A: '1', AB: '2', B: '', C: 'x=y' };
    expect(observed(dependency('A', {}), env)).toBe(valueHash('1'));
    expect(observed({ name: 'B', flags: EnvDepFlag.ANY_VALUE, valueHash: 0n }, env)).toBe(1n);
    expect(observed({ name: 'Z', flags: EnvDepFlag.ANY_VALUE, valueHash: 0n }, env)).toBe(0n);
    const sum = (hash64(Buffer.from('A=1')) + hash64(Buffer.from('AB=2'))) & 0xffffffffffffffffn;
    expect(observed({ name: 'A', flags: EnvDepFlag.PREFIX, valueHash: 0n }, env)).toBe(sum);
    expect(observed({ name: 'Q', flags: EnvDepFlag.PREFIX, valueHash: 0n }, env)).toBe(0n);
    expect(dependency('C', env)).toEqual({ name: 'C', flags: EnvDepFlag.PRESENT, valueHash: valueHash('x=y') });
    expect(dependency('D', env)).toEqual({ name: 'D', flags: 0, valueHash: 0n });
  });

  it('a variable nobody depends on never makes a difference', () => {
    const deps = [dependency('A', { A: '1' }), dependency('NOT_SET', {})];
    expect(unmetDependencies(deps, { A: '1', PWD: '/elsewhere', NEW: 'x' })).toEqual([]);
    expect(unmetDependencies(deps, { A: '2' }).map((d) => d.name)).toEqual(['A']);
    expect(unmetDependencies(deps, { A: '1', NOT_SET: '' }).map((d) => d.name)).toEqual(['NOT_SET']);
    // The selector follows only what the dependencies see.
    expect(variantSelector({}, deps, { A: '2', X: '1' })).toBe(variantSelector({}, deps, { A: '2', X: '2' }));
    expect(variantSelector({}, deps, { A: '2' })).not.toBe(variantSelector({}, deps, { A: '3' }));
  });
});

describe('the launcher agrees', () => {
  const cache = tmpCacheDir();
  const env: Env = baseEnv(cache, { CX_ONE: 'one', LC_TEST_A: 'a' });
  let image = '';
  let model: ImageModel;
  const deps = [
    dependency('CX_ONE', env),
    dependency('CX_UNSET', env),
    { ...dependency('CX_SET', { CX_SET: 'anything' }, 'presence') },
    dependency('LC_TEST_', env, 'prefix'),
  ];
  beforeAll(() => {
    const w = spawnSync(LAUNCHER, ['--warm', '/bin/true'], { env, encoding: 'utf8' });
    expect(w.status, w.stderr).toBe(0);
    image = /(\/\S+\.img)/.exec(w.stdout)?.[1] ?? '';
    const buf = fs.readFileSync(image);
    model = parseImage(buf).model;
    // parseImage leaves the page data in the file: carry it over for the rewrite.
    for (const r of model.regions) if (r.source === Src.DATA) r.data = buf.subarray(Number(r.offset), Number(r.offset + r.len));
    model.envDeps = deps;
    fs.writeFileSync(image, serializeImage(model), { mode: 0o600 });
  });
  afterAll(() => removeDir(cache));

  const outcome = (e: Env): { outcome: string; key: string } => {
    const log = path.join(cache, 'stats', 'runs.log');
    const before = fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.length : 0;
    const r = spawnSync(LAUNCHER, ['/bin/true'], { env: e });
    expect(r.status).toBe(0);
    const rec = decodeRunRecords(fs.readFileSync(log)).records.slice(before);
    expect(rec).toHaveLength(1);
    return { outcome: String(rec[0]?.outcome), key: String(rec[0]?.key) };
  };
  const tsVerdict = (e: Env): string => checkImage(image, { key: model.key, owner: process.geteuid?.() ?? 0, env: e }).outcome;

  const cases: [string, Env, string][] = [
    ['the same environment', {}, 'HIT'],
    ['another directory and an unrelated variable', { PWD: '/tmp', SOMETHING: 'else', HYPERFINE_RANDOMIZED_ENVIRONMENT_OFFSET: 'xxxx' }, 'HIT'],
    ['the value changed', { CX_ONE: 'two' }, 'FAIL_ENV'],
    ['the value empty', { CX_ONE: '' }, 'FAIL_ENV'],
    ['a variable it found unset now set', { CX_UNSET: '1' }, 'FAIL_ENV'],
    ['a variable whose presence only counts, with another value', { CX_SET: 'other' }, 'HIT'],
    ['another variable with the prefix', { LC_TEST_B: 'b' }, 'FAIL_ENV'],
    ['a prefixed variable changed', { LC_TEST_A: 'A' }, 'FAIL_ENV'],
  ];
  beforeAll(() => { env.CX_SET = 'anything'; });

  for (const [what, extra, want] of cases) {
    it(`${what}: ${want} from the launcher and from checkImage`, () => {
      const e = { ...env, ...extra };
      expect(tsVerdict(e), what).toBe(want);
      expect(outcome(e).outcome, what).toBe(want);
    });
  }

  it('a variable unset in the caller that the image has set is a difference', () => {
    const e = { ...env };
    delete e.CX_SET;
    expect(tsVerdict(e)).toBe('FAIL_ENV');
    expect(outcome(e).outcome).toBe('FAIL_ENV');
  });

  it('the launcher finds the variant image the TypeScript selector names', () => {
    const other = { ...env, CX_ONE: 'two', LC_TEST_B: 'b' };
    const selector = variantSelector(model.key, deps, other);
    const variant: ImageModel = { ...model, key: { ...model.key, variant: selector }, envDeps: deps.map((d) => ({ ...d, valueHash: observed(d, other) })) };
    const file = path.join(cache, 'images', `${keyHash(variant.key)}.img`);
    fs.writeFileSync(file, serializeImage(variant), { mode: 0o600 });
    const r = outcome(other);
    expect(r).toEqual({ outcome: 'HIT', key: keyHash(variant.key) });
    // And the primary still serves its own environment.
    expect(outcome(env)).toEqual({ outcome: 'HIT', key: keyHash(model.key) });
  });

  it('an image bound to the whole environment compares the sum of every variable but _', () => {
    const bound: ImageModel = { ...model, key: { ...model.key, envHash: envHash(env) } };
    delete bound.envDeps;
    fs.writeFileSync(image, serializeImage(bound), { mode: 0o600 });
    expect(outcome({ ...env, _: '/usr/bin/x' }).outcome).toBe('HIT');
    expect(outcome({ ...env, NEW: '1' }).outcome).toBe('FAIL_ENV');
  });
});
