/**
 * The bench harness on a machine without a C compiler (benchmarks/harness/runner.ts
 * buildNative): it uses the runner and exit floor that build/bench/prebuilt.json
 * names (the arm64 guest gets them cross-built) only when each is an ELF program for
 * this machine built from today's source; otherwise that helper is absent and the
 * notes say why (the Node fallback without a runner). Real helpers, built here with
 * cc into a temp build dir; the runner then times a real command.
 */
import { Buffer } from 'node:buffer';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildNative, runInterleaved } from '../../benchmarks/harness/runner.js';

const ROOT = path.resolve(__dirname, '..', '..');
const sha = (f: string): string => createHash('sha256').update(fs.readFileSync(path.join(ROOT, f))).digest('hex');
let tmp: string;
let dir: string;
const savedCC = process.env.CC;

function prebuilt(entries: Record<string, { source: string; sha256: string }>): void {
  const list = Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, { ...v, cc: 'test cc', flags: [] }]));
  fs.writeFileSync(path.join(dir, 'prebuilt.json'), JSON.stringify(list));
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-prebuilt-'));
  dir = path.join(tmp, 'bench');
  fs.mkdirSync(dir);
  execFileSync('cc', ['-O2', '-Wall', '-o', path.join(dir, 'runner'), path.join(ROOT, 'benchmarks', 'runner.c')]);
  execFileSync('cc', ['-O2', '-nostdlib', '-static', '-o', path.join(dir, 'exit-floor'), path.join(ROOT, 'benchmarks', 'exit.c')]);
  process.env.CC = path.join(tmp, 'no-such-cc');
});
afterEach(() => fs.rmSync(path.join(dir, 'prebuilt.json'), { force: true }));
afterAll(() => {
  if (savedCC === undefined) delete process.env.CC;
  else process.env.CC = savedCC;
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('bench harness without a C compiler', () => {
  it('uses prebuilt helpers built from today\'s sources for this machine, and they time real runs', () => {
    prebuilt({ runner: { source: 'benchmarks/runner.c', sha256: sha('benchmarks/runner.c') },
      'exit-floor': { source: 'benchmarks/exit.c', sha256: sha('benchmarks/exit.c') } });
    const n = buildNative(ROOT, dir);
    expect(n.runner).toBe(path.join(dir, 'runner'));
    expect(n.floor).toBe(path.join(dir, 'exit-floor'));
    expect(n.cc).toMatch(/none here; helpers prebuilt by test cc/);
    expect(n.notes.join('\n')).toMatch(/runner and exit-floor prebuilt/);
    const samples = runInterleaved(n, [
      { id: 'f/floor', group: 'f', kind: 'floor', label: 'floor', path: n.floor as string, argv: ['exit-floor'], env: {} },
      { id: 'f/false', group: 'f', kind: 'cold', label: 'false', path: '/bin/false', argv: ['false'], env: {} },
    ], 3, 1, 1, tmp);
    expect(samples.get('f/floor')?.map((s) => s.status)).toEqual([0, 0, 0]);
    expect(samples.get('f/false')?.map((s) => s.status)).toEqual([1, 1, 1]);
  });

  it('ignores a helper built from another source, or one that is not for this machine', () => {
    prebuilt({ runner: { source: 'benchmarks/runner.c', sha256: '0'.repeat(64) },
      'exit-floor': { source: 'benchmarks/exit.c', sha256: sha('benchmarks/exit.c') } });
    let n = buildNative(ROOT, dir);
    expect(n.runner).toBeNull();
    expect(n.floor).toBe(path.join(dir, 'exit-floor'));
    expect(n.notes.join('\n')).toMatch(/prebuilt runner ignored: built from another version of benchmarks\/runner.c/);
    expect(n.notes.join('\n')).toMatch(/Node fallback/);

    const floor = Buffer.from(fs.readFileSync(path.join(dir, 'exit-floor')));
    const foreign = Buffer.from(floor);
    foreign.writeUInt16LE(foreign.readUInt16LE(18) === 62 ? 183 : 62, 18);
    fs.writeFileSync(path.join(dir, 'exit-floor'), foreign);
    try {
      n = buildNative(ROOT, dir);
      expect(n.floor).toBeNull();
      expect(n.notes.join('\n')).toMatch(/prebuilt exit-floor ignored: not an ELF program for/);
    } finally {
      fs.writeFileSync(path.join(dir, 'exit-floor'), floor);
    }
  });

  it('without prebuilt.json: the Node fallback and no floor, as before', () => {
    const n = buildNative(ROOT, dir);
    expect(n).toMatchObject({ runner: null, floor: null, cc: null });
    expect(n.notes.join('\n')).toMatch(/Node fallback/);
  });
});
