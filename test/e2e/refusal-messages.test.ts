/**
 * Refusals name their cause in words a user can act on, with real snapshots:
 * a --preload module that does not exist shows python's ModuleNotFoundError,
 * an --after-init file that does not exist is said to be missing before
 * anything is snapshotted, an rc file that fails shows its error, and a
 * version manager's shell-script shim (pyenv's python3) is named as such with
 * the command that finds the real interpreter.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAUNCHER, SYSTEM_PATH, removeDir, tmpCacheDir, tmpDir } from '../helpers/cx.js';

let work = '';
let cache = '';
beforeAll(() => {
  work = tmpDir('cx-refusals-');
  cache = tmpCacheDir();
});
afterAll(() => {
  removeDir(work);
  removeDir(cache);
});

function cx(args: string[], extra: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LAUNCHER, args, {
    encoding: 'utf8', timeout: 180_000,
    env: { PATH: SYSTEM_PATH, HOME: work, LC_ALL: 'C', CACHED_EXEC_DIR: cache, CACHED_EXEC_NO_WARM: '1', ...extra },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const images = (): string[] => fs.readdirSync(path.join(cache, 'images')).filter((n) => n.endsWith('.img'));
const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p)) as string;

describe('--warm --after-init refusals', () => {
  it('a --preload module that does not exist: python\'s own ModuleNotFoundError', () => {
    const r = cx(['--warm', '--after-init', '--preload', 'json,cx_no_such_module', python]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^cached-exec: ${python}: snapshot refused \\(init-failed\\): the init fails \\(exit 1\\): ` +
      'ModuleNotFoundError: No module named \'cx_no_such_module\''));
    // --explain shows the same cause and says what to do.
    const e = cx(['--explain', '--after-init', '--preload', 'json,cx_no_such_module', python]);
    expect(e.stdout).toMatch(/refused\s+init-failed: .*ModuleNotFoundError/);
    expect(e.stdout).toMatch(/hint\s+remove the cause named under 'refused', then 'cached-exec --warm --after-init --preload=json,cx_no_such_module /);
    // The statistics count the refusal under the same reason.
    const stats = JSON.parse(cx(['--show-stats', '--json']).stdout) as { snapshots: { refusals: Record<string, number> } };
    expect(stats.snapshots.refusals['init-failed']).toBe(1);
  });

  it('an --after-init file that does not exist: said before any snapshot', () => {
    const before = fs.existsSync(path.join(cache, 'images')) ? images() : [];
    const missing = path.join(work, 'no-such-rc');
    const r = cx(['--warm', `--after-init=${missing}`, 'bash']);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`cached-exec: --after-init=${missing}: the init file ${missing} does not exist; nothing was snapshotted\n`);
    expect(fs.existsSync(path.join(cache, 'images')) ? images() : []).toEqual(before);
    // --explain refuses the same way (it would otherwise predict an image that cannot exist).
    const e = cx(['--explain', `--after-init=${missing}`, 'bash']);
    expect(e.status).toBe(1);
    expect(e.stderr).toContain('does not exist');
    // A directory is not an init file either.
    expect(cx(['--warm', `--after-init=${work}`, 'bash']).stderr).toBe(`cached-exec: --after-init=${work}: ${work} is not a regular file; nothing was snapshotted\n`);
  });

  it('an rc file that fails: its own error message', () => {
    const rc = path.join(work, 'broken-rc');
    fs.writeFileSync(rc, 'cx_no_such_command_here\n');
    const r = cx(['--warm', `--after-init=${rc}`, 'bash']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/snapshot refused \(init-output\): the init writes to stderr: .*cx_no_such_command_here: command not found/);
  });
});

describe('a version manager\'s shell-script shim', () => {
  let shims = '';
  beforeAll(() => {
    // pyenv's shim, as `pyenv rehash` writes it (PYENV_ROOT points nowhere: it is never run here).
    shims = path.join(work, 'pyenv', 'shims');
    fs.mkdirSync(shims, { recursive: true });
    fs.writeFileSync(path.join(shims, 'python3'), [
      '#!/usr/bin/env bash', 'set -e', '[ -n "$PYENV_DEBUG" ] && set -x', '', 'program="${0##*/}"', '',
      `export PYENV_ROOT="${path.join(work, 'pyenv')}"`, `exec "${path.join(work, 'pyenv', 'libexec', 'pyenv')}" exec "$program" "$@"`, '',
    ].join('\n'), { mode: 0o755 });
    fs.writeFileSync(path.join(shims, 'mytool'), '#!/bin/sh\nexec /usr/bin/true "$@"\n', { mode: 0o755 });
  });

  it('--warm --after-init names it and the real interpreter, instead of not-elf alone', () => {
    const r = cx(['--warm', '--after-init', 'python3'], { PATH: `${shims}:${SYSTEM_PATH}` });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`cached-exec: python3: snapshot refused (not-elf): python3 is ${shims}/python3, pyenv's shell-script shim ` +
      '(#!/usr/bin/env bash), not the program itself: a snapshot would take env, not what the script starts. Use the real program: ' +
      'cached-exec --warm --after-init "$(pyenv which python3)", and run it by that path (cached-exec --after-init "$(pyenv which python3)" ARGS)\n');
    expect(r.stderr).not.toContain('--cleanup');
    const e = cx(['--explain', '--after-init', 'python3'], { PATH: `${shims}:${SYSTEM_PATH}` });
    expect(e.stdout).toMatch(/hint\s+it cannot be snapshotted \(not-elf, see 'refused'\): its runs stay cold/);
  });

  it('plain --warm warms the interpreter the launcher restores, and says the real program stays cold', () => {
    const r = cx(['--warm', 'python3'], { PATH: `${shims}:${SYSTEM_PATH}` });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`${shims}/python3 is a #! script: warmed its interpreter /usr/bin/env`);
    expect(r.stdout).toContain('pyenv\'s shell-script shim');
    expect(r.stdout).toContain('"$(pyenv which python3)"');
    const e = cx(['--explain', 'python3'], { PATH: `${shims}:${SYSTEM_PATH}` });
    expect(e.stdout).toMatch(/note\s+python3 is .*pyenv's shell-script shim .*"\$\(pyenv which python3\)"/);
  });

  it('a script of no known manager: "a shell script", and to use the program it starts', () => {
    const r = cx(['--warm', '--after-init', 'mytool'], { PATH: `${shims}:${SYSTEM_PATH}` });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`mytool is ${shims}/mytool, a shell script (#!/bin/sh), not the program itself`);
    expect(r.stderr).toContain('Warm the program it starts instead, by its path (cached-exec --warm --after-init /path/to/it), and run it by that path\n');
  });
});
