/**
 * --install [DIR] puts cached-exec on PATH as a symlink to this launcher
 * (default ~/.local/bin), idempotently, replacing only stale links of ours
 * and never a file that is not one; --uninstall removes only such a link.
 * The installed name works as the README uses it: admin commands and runs.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-install-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function home(): string {
  return fs.mkdtempSync(path.join(work, 'home-'));
}

function run(cmd: string, args: string[], env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, env: { PATH: '/usr/bin:/bin', LC_ALL: 'C', CACHED_EXEC_NO_WARM: '1', ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('--install', () => {
  it('links ~/.local/bin/cached-exec to the launcher, says when that is not on PATH, and is idempotent', () => {
    const h = home();
    const link = path.join(h, '.local', 'bin', 'cached-exec');
    const first = run(launcher, ['--install'], { HOME: h });
    expect(first.status).toBe(0);
    expect(fs.readlinkSync(link)).toBe(launcher);
    expect(first.stdout).toBe(`${link} -> ${launcher}\n${path.dirname(link)} is not on your PATH: add this line to your shell's rc file ` +
      `(e.g. ~/.bashrc), then start a new shell:\n  export PATH="${path.dirname(link)}:$PATH"\n`);
    const again = run(launcher, ['--install'], { HOME: h, PATH: `${path.dirname(link)}:/usr/bin:/bin` });
    expect(again.status).toBe(0);
    expect(again.stdout).toBe(`${link} -> ${launcher} (already installed)\n`);
    expect(fs.readlinkSync(link)).toBe(launcher);
  });

  it('the installed name runs admin commands and programs, from any directory', () => {
    const h = home();
    const bin = path.join(h, '.local', 'bin');
    expect(run(launcher, ['--install'], { HOME: h }).status).toBe(0);
    const env = { HOME: h, PATH: `${bin}:/usr/bin:/bin`, CACHED_EXEC_DIR: path.join(h, 'cache') };
    const r = spawnSync('bash', ['-c', 'cd / && command -v cached-exec && cached-exec --version && cached-exec bash -c "echo ran \\$0 \\$#" a b'],
      { encoding: 'utf8', env: { ...env, LC_ALL: 'C', CACHED_EXEC_NO_WARM: '1' } });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^${path.join(bin, 'cached-exec')}\\ncached-exec \\S+ .*\\nran a 1\\n$`));
  });

  it('takes another DIR, replaces a stale link of ours, and never a file that is not one', () => {
    const dir = path.join(work, 'other-bin');
    fs.mkdirSync(dir);
    const link = path.join(dir, 'cached-exec');
    fs.symlinkSync('/nonexistent/old-checkout/bin/cached-exec', link);
    const r = run(launcher, ['--install', dir], { HOME: home(), PATH: `${dir}:/usr/bin:/bin` });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${link} -> ${launcher} (replaced a stale link)\n`);
    expect(fs.readlinkSync(link)).toBe(launcher);

    const foreignDir = path.join(work, 'foreign-bin');
    fs.mkdirSync(foreignDir);
    const file = path.join(foreignDir, 'cached-exec');
    fs.writeFileSync(file, '#!/bin/sh\necho mine\n', { mode: 0o755 });
    const f = run(launcher, ['--install', foreignDir], { HOME: home() });
    expect(f.status).toBe(1);
    expect(f.stderr).toBe(`cached-exec: ${file} exists and is not a link to a cached-exec launcher: not replacing it ` +
      '(remove it yourself, or give another DIR)\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('#!/bin/sh\necho mine\n');
    fs.rmSync(file);
    fs.symlinkSync('/usr/bin/true', file);
    expect(run(launcher, ['--install', foreignDir], { HOME: home() }).status).toBe(1);
    expect(fs.readlinkSync(file)).toBe('/usr/bin/true');
    expect(run(launcher, ['--uninstall', foreignDir], { HOME: home() }).status).toBe(1);
    expect(fs.readlinkSync(file)).toBe('/usr/bin/true');
  });

  it('--uninstall removes the link, and is idempotent', () => {
    const h = home();
    const link = path.join(h, '.local', 'bin', 'cached-exec');
    expect(run(launcher, ['--install'], { HOME: h }).status).toBe(0);
    const u = run(launcher, ['--uninstall'], { HOME: h });
    expect(u.status).toBe(0);
    expect(u.stdout).toBe(`removed ${link}\n`);
    expect(fs.existsSync(link)).toBe(false);
    expect(run(launcher, ['--uninstall'], { HOME: h }).stdout).toBe(`${link} was not there\n`);
  });
});
