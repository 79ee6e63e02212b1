/**
 * A cache directory the launcher cannot use (a file, under a file, relative,
 * another user's) is a clear one-line error and exit status 1 for every admin
 * command that reads or writes the cache, never an empty cache or a cache
 * quietly made in the current directory.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const mainJs = path.join(root, 'dist', 'cli', 'main.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-cachedir-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const COMMANDS = [['--list'], ['-s'], ['--zero-stats'], ['--clear'], ['--cleanup'], ['--explain', 'sed'], ['--warm', 'sed'], ['--max-size', '1G']];

function run(args: string[], env: Record<string, string>, cwd = work): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [mainJs, ...args], {
    cwd, encoding: 'utf8', timeout: 60_000,
    env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: work, CACHED_EXEC_NO_WARM: '1', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('an unusable CACHED_EXEC_DIR', () => {
  const file = path.join(work, 'a-file');
  fs.writeFileSync(file, 'not a cache\n');

  it.each(COMMANDS)('a file: %s fails with one line naming it', (...args) => {
    const r = run(args, { CACHED_EXEC_DIR: file });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`cached-exec: CACHED_EXEC_DIR=${file} is not a directory: set CACHED_EXEC_DIR to a directory (or to a path that does not exist yet)\n`);
    expect(fs.readFileSync(file, 'utf8')).toBe('not a cache\n');
  });

  it.each(COMMANDS)('under a file: %s fails', (...args) => {
    const r = run(args, { CACHED_EXEC_DIR: path.join(file, 'cache') });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot be a directory: a part of its path is a file\n$/);
  });

  it.each(COMMANDS)('relative: %s fails and creates nothing in the current directory', (...args) => {
    const cwd = fs.mkdtempSync(path.join(work, 'cwd-'));
    const r = run(args, { CACHED_EXEC_DIR: 'rel-cache' }, cwd);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cached-exec: CACHED_EXEC_DIR=rel-cache is a relative path: set an absolute one/);
    expect(fs.readdirSync(cwd)).toEqual([]);
  });

  it('a relative XDG_CACHE_HOME or HOME is named as the cause', () => {
    const x = run(['--list'], { XDG_CACHE_HOME: 'xdg' });
    expect(x.status).toBe(1);
    expect(x.stderr).toContain('the cache directory xdg/cached-exec (from XDG_CACHE_HOME=xdg) is a relative path');
    const h = run(['-s'], { HOME: 'home' });
    expect(h.status).toBe(1);
    expect(h.stderr).toContain('(from HOME=home) is a relative path');
  });

  it('another user\'s directory is refused, --json gives the flat error', () => {
    const theirs = path.join(work, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.chownSync(theirs, 65534, 65534);
    const r = run(['--list', '--json'], { CACHED_EXEC_DIR: theirs });
    expect(r.status).toBe(1);
    const err = (JSON.parse(r.stdout) as { error: Record<string, string> }).error;
    expect(err).toMatchObject({ code: 'cache-dir', reason: 'owner', path: theirs });
    expect(fs.readdirSync(theirs)).toEqual([]);
  });

  it('a symlink, or a directory others may write, is refused as the launcher refuses it', () => {
    const real = path.join(work, 'real-cache');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(work, 'link-cache');
    fs.symlinkSync(real, link);
    const l = run(['--list'], { CACHED_EXEC_DIR: link });
    expect(l.status).toBe(1);
    expect(l.stderr).toBe(`cached-exec: CACHED_EXEC_DIR=${link} is a symbolic link: the launcher does not follow one there ` +
      `(every run would be cold): use the directory it points to (${real})\n`);
    const open = path.join(work, 'open-cache');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const o = run(['--warm', 'sed'], { CACHED_EXEC_DIR: open });
    expect(o.status).toBe(1);
    expect(o.stderr).toBe(`cached-exec: CACHED_EXEC_DIR=${open} is writable by group or others (mode 777): the launcher does not use it; ` +
      `make it private: chmod 700 ${open}\n`);
    expect(fs.readdirSync(open)).toEqual([]);
  });

  it('a directory that does not exist yet is an empty cache, not an error', () => {
    const fresh = path.join(work, 'fresh', 'cache');
    const r = run(['--list'], { CACHED_EXEC_DIR: fresh });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`no images in ${fresh}\n`);
  });
});
