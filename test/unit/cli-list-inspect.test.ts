/**
 * --list shows what tells rows of one program apart (PATH, init,
 * environment), and --inspect finds an image by its file, its key (or a
 * unique prefix of it) or a program name, with real images taken by --warm.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-list-'));
const cache = path.join(work, 'cache');
const PATH_A = '/usr/local/bin:/usr/bin:/bin';
const PATH_B = `${path.join(work, 'empty')}:${PATH_A}`;
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function cx(args: string[], extra: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(launcher, args, {
    encoding: 'utf8', timeout: 120_000,
    env: { PATH: PATH_A, HOME: work, LC_ALL: 'C', CACHED_EXEC_DIR: cache, CACHED_EXEC_NO_WARM: '1', ...extra },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Entry { key: string; program: string; pathEnv: string; init: string | null; envHash: string | null; image: string }
const entries = (): Entry[] => (JSON.parse(cx(['--list', '--json']).stdout) as { images: Entry[] }).images;
let keyA = '';
let keyB = '';

beforeAll(() => {
  fs.mkdirSync(path.join(work, 'empty'));
  expect(cx(['--warm', 'sed']).status).toBe(0);
  expect(cx(['--warm', 'sed'], { PATH: PATH_B }).status).toBe(0);
  const es = entries();
  keyA = (es.find((e) => e.pathEnv === PATH_A) as Entry).key;
  keyB = (es.find((e) => e.pathEnv === PATH_B) as Entry).key;
}, 240_000);

describe('--list', () => {
  it('tells two images of one program apart by their PATH, with a legend', () => {
    const out = cx(['--list']).stdout;
    const lines = out.split('\n');
    const header = lines[0] as string;
    expect(header).toMatch(/^program\s+PATH\s+size/);
    const rows = lines.filter((l) => l.includes('/sed'));
    expect(rows).toHaveLength(2);
    const letters = rows.map((r) => r.split(/\s+/)[1]).sort();
    expect(letters).toEqual(['A', 'B']);
    const legend = Object.fromEntries(lines.filter((l) => l.startsWith('PATH ')).map((l) => [l.slice(5, 6), l.slice(8)]));
    expect(Object.values(legend).sort()).toEqual([PATH_A, PATH_B].sort());
    // The row for PATH_B carries its key.
    const rowB = rows.find((r) => r.endsWith(keyB)) as string;
    expect(legend[rowB.split(/\s+/)[1] as string]).toBe(PATH_B);
  });

  it('--json has the PATH, init and environment binding of each image', () => {
    for (const e of entries()) {
      expect(e.init).toBeNull();
      expect(e.envHash).toBeNull();
      expect([PATH_A, PATH_B]).toContain(e.pathEnv);
    }
  });
});

describe('--inspect', () => {
  const keyLine = (out: string): string => (/^key hash\s+(\S+)/m.exec(out) ?? /([0-9a-f]{16})\.img/.exec(out))?.[1] ?? '';

  it('takes the key --list shows, or a unique first part of it', () => {
    const full = cx(['--inspect', keyA]);
    expect(full.status).toBe(0);
    expect(full.stdout).toContain(`${keyA}.img`);
    // --json: the text form says how long ago the image was taken, which moves.
    const short = cx(['--inspect', keyA.slice(0, 6), '--json']);
    expect(short.stdout).toBe(cx(['--inspect', keyA, '--json']).stdout);
    expect((JSON.parse(short.stdout) as { keyHash: string }).keyHash).toBe(keyA);
  });

  it('takes a program name: the image its next run would use, for this PATH', () => {
    expect(keyLine(cx(['--inspect', 'sed']).stdout)).toBe(keyA);
    expect(keyLine(cx(['--inspect', 'sed'], { PATH: PATH_B }).stdout)).toBe(keyB);
  });

  it('takes a program by its path: an existing file that is not an image is a program', () => {
    const byPath = cx(['--inspect', '/usr/bin/sed']);
    expect(byPath.stderr).toBe('');
    expect(keyLine(byPath.stdout)).toBe(keyA);
  });

  it('still takes an image file', () => {
    const file = path.join(cache, 'images', `${keyA}.img`);
    expect(cx(['--inspect', file, '--json']).stdout).toBe(cx(['--inspect', keyA, '--json']).stdout);
  });

  it('an ambiguous prefix, a program without an image and an unknown word are one-line errors', () => {
    const twin = path.join(cache, 'images', `${keyA.slice(0, 4)}${'0'.repeat(12)}.img`);
    fs.copyFileSync(path.join(cache, 'images', `${keyA}.img`), twin);
    try {
      const amb = cx(['--inspect', keyA.slice(0, 4)]);
      expect(amb.status).toBe(2);
      expect(amb.stderr).toMatch(/is the start of 2 keys .*: give more digits\n$/);
    } finally {
      fs.rmSync(twin);
    }
    const none = cx(['--inspect', 'dash']);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/^cached-exec: dash: no image yet \(key [0-9a-f]{16}, .*\); take one with: cached-exec --warm dash\n$/);
    const unknown = cx(['--inspect', 'no-such-program-or-key']);
    expect(unknown.status).toBe(127);
    expect(unknown.stderr).toBe('cached-exec: no-such-program-or-key: no such image file, image key (see --list) or program\n');
  });
});
