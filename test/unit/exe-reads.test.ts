/**
 * CX_STATE_READS_EXE: images of programs whose code names /proc/self/exe
 * (src/snapshot/exe-reads.ts), taken by the real snapshotter on real
 * programs, and the file scan on files built to probe its edges.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StateFlag } from '../../src/image/schema.js';
import { CHUNK, fileNamesExe } from '../../src/snapshot/exe-reads.js';
import { takeSnapshot } from '../../src/snapshot/snapshot.js';
import { LAUNCHER, SYSTEM_PATH, removeDir, resolveOnPath, tmpDir } from '../helpers/cx.js';

const env = { PATH: SYSTEM_PATH, HOME: os.homedir(), LC_ALL: 'C' };
const work = tmpDir('cx-exe-reads-');
afterAll(() => removeDir(work));

function flags(name: string): { readsExe: boolean; notes: string[] } {
  const exe = resolveOnPath(name);
  if (!exe) throw new Error(`${name} is not installed`);
  const r = takeSnapshot({ exePath: exe, argv: [exe], env, launcher: LAUNCHER });
  if (!r.ok) throw new Error(`${name} refused: ${r.reason}: ${r.detail}`);
  return { readsExe: (r.image.state.flags & StateFlag.READS_EXE) !== 0, notes: r.notes };
}

describe('images of real programs', () => {
  // perl ($^X), node (libuv's uv_exepath), cmake (its resource directory) read /proc/self/exe.
  for (const name of ['perl', 'node', 'cmake']) {
    it(`${name}: READS_EXE, and the snapshot says which file names it`, () => {
      const f = flags(name);
      expect(f.readsExe).toBe(true);
      expect(f.notes.join('\n')).toMatch(/names \/proc\/(self|%\S*)\/exe: restored only where/);
    });
  }
  for (const name of ['bash', 'dash', 'sed']) {
    it(`${name}: no READS_EXE (the loader's own $ORIGIN use does not count)`, () => {
      expect(flags(name).readsExe).toBe(false);
    });
  }
});

describe('the file scan', () => {
  const file = (name: string, ...parts: (string | Buffer)[]): string => {
    const p = path.join(work, name);
    fs.writeFileSync(p, Buffer.concat(parts.map((x) => (typeof x === 'string' ? Buffer.from(x) : x))));
    return p;
  };
  const filler = (n: number): Buffer => Buffer.alloc(n, 0x41);

  it('finds the string, and pid formats, anywhere', () => {
    expect(fileNamesExe(file('plain', filler(100), '/proc/self/exe\0'))).toBe('/proc/self/exe');
    expect(fileNamesExe(file('fmt-d', '\0/proc/%d/exe\0'))).toBe('/proc/%d/exe');
    expect(fileNamesExe(file('fmt-ld', '\0/proc/%ld/exe\0'))).toBe('/proc/%ld/exe');
    expect(fileNamesExe(file('fmt-u', 'x/proc/%u/exey'))).toBe('/proc/%u/exe');
  });

  it('finds a match split across two reads', () => {
    for (const cut of [1, 7, 13]) {
      expect(fileNamesExe(file(`split-${cut}`, filler(CHUNK - cut), '/proc/self/exe', filler(10)))).toBe('/proc/self/exe');
      expect(fileNamesExe(file(`split-fmt-${cut}`, filler(CHUNK - cut), '/proc/%d/exe', filler(10)))).toBe('/proc/%d/exe');
    }
  });

  it('other /proc files and near misses are not a match', () => {
    expect(fileNamesExe(file('none', '/proc/self/maps\0/proc/%d/status\0/proc/self/ex\0/proc/%s/exe\0/proc/selfexe'))).toBeNull();
    expect(fileNamesExe(file('empty'))).toBeNull();
  });

  it('caches by identity: a rewritten file is scanned again', () => {
    const p = file('changes', 'nothing here');
    expect(fileNamesExe(p)).toBeNull();
    fs.writeFileSync(p, 'now /proc/self/exe is here');
    expect(fileNamesExe(p)).toBe('/proc/self/exe');
  });
});
