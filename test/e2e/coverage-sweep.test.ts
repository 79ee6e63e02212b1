/**
 * `npm run coverage-sweep` (scripts/coverage-sweep.mjs) on a handful of programs:
 * the report's numbers come from real warms, real cold and restored runs and
 * real dry restores, and its safety net holds (a denylisted program is never
 * run, not even by a cold fallback).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, removeDir, tmpDir } from '../helpers/cx.js';

interface Report {
  warm: { attempted: number; warmed: number; refusals: Record<string, { count: number }> };
  restore: {
    restored: number; warmed: number;
    run: { warmed: number; restored: number };
    dry: { warmed: number; restored: number };
    notRestored: Record<string, unknown>;
  };
  compare: { runs: number; same: number; mismatches: unknown[] };
  candidates: { denylisted: string[]; skipped: Record<string, { names: string[] }> };
  spotChecks: { name: string; execs: string[]; restored: boolean; agrees: boolean }[];
  programs: { name: string; outcome: string; runs: unknown[] }[];
}

const out = tmpDir('cx-sweep-test-');
afterAll(() => removeDir(out));

describe('coverage sweep', () => {
  // ls and sed are run (--version, --help); rm and touch are denylisted (restored dry, never
  // run); which is a script, su setuid: both are counted as not swept.
  const only = ['ls', 'sed', 'rm', 'touch', 'which', 'su'];
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'coverage-sweep.mjs'),
    '--only', only.join(','), '--path', '/usr/bin:/bin', '--out', out, '--spot-checks', '2'],
  { encoding: 'utf8', timeout: 300_000 });
  const report = JSON.parse(fs.readFileSync(path.join(out, 'coverage-sweep.json'), 'utf8')) as Report;

  it('exits 0 and writes the JSON and the markdown summary', () => {
    expect(r.status, r.stderr).toBe(0);
    const md = fs.readFileSync(path.join(out, 'coverage-sweep.md'), 'utf8');
    expect(md).toContain('**0 mismatches**');
    expect(md).toMatch(/\*\*Restores\*\* from another directory with an unrelated variable: 4 of 4 warmed/);
  });

  it('sweeps the dynamically linked ELF programs and says why it skipped the others', () => {
    expect(report.warm.attempted).toBe(4);
    expect(report.warm.warmed).toBe(4);
    expect(report.candidates.denylisted.sort()).toEqual(['rm', 'touch']);
    expect(report.candidates.skipped['not ELF (scripts)']?.names).toEqual(['which']);
    expect(report.candidates.skipped['setuid/setgid']?.names).toEqual(['su']);
  });

  it('runs ls and sed cold and restored, identical; restores rm and touch dry', () => {
    expect(report.restore.run).toEqual({ warmed: 2, restored: 2, share: 100 });
    expect(report.restore.dry).toEqual({ warmed: 2, restored: 2, share: 100 });
    expect(report.compare.runs).toBe(4); // two programs, --version and --help
    expect(report.compare.same).toBe(4);
    expect(report.compare.mismatches).toEqual([]);
    expect(report.restore.notRestored).toEqual({});
  });

  it('proves the restores from outside: strace sees only the launcher exec\'d', () => {
    expect(report.spotChecks.length).toBeGreaterThanOrEqual(1);
    for (const s of report.spotChecks) {
      expect(s, JSON.stringify(s)).toMatchObject({ restored: true, agrees: true });
      expect(s.execs.at(-1)).toMatch(/\/pkg\/bin\/cached-exec$/);
    }
  });
});
