/**
 * --shell-init and shell/cached-exec.sh, evaluated by the real shells of this
 * machine: the shim directory ends up first on PATH exactly once however often
 * the code runs, whatever characters the directory holds, under `set -u`, and
 * with PATH unset; the shell forgets what it hashed; the sourced file and the
 * CLI agree on the directory.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FALLBACK_PATH, SHELLS, shQuote, shellInitSnippet } from '../../src/cli/commands/shell-init.js';
import { shimsDir } from '../../src/cli/commands/shims.js';
import { main } from '../../src/cli/main.js';
import type { Out } from '../../src/cli/output.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SOURCED = path.join(ROOT, 'shell', 'cached-exec.sh');
const BASE_PATH = '/usr/local/bin:/usr/bin:/bin';

const temps: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-shell-init-'));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

/** Runs the CLI in this process; returns status and what it printed. */
async function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out: Out = { line: (t = '') => (stdout += `${t}\n`), err: (t) => (stderr += `${t}\n`) };
  const status = await main(args, env, out);
  return { status, stdout, stderr };
}

/** Shells on this machine, as [label, argv prefix]. */
function shells(): [string, string[]][] {
  const found: [string, string[]][] = [];
  for (const s of ['sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh']) {
    if (spawnSync(s, ['-c', 'true']).status === 0) found.push([s, [s]]);
  }
  if (spawnSync('busybox', ['sh', '-c', 'true']).status === 0) found.push(['busybox sh', ['busybox', 'sh']]);
  return found;
}
const SHELLS_HERE = shells();

function sh(argv: string[], script: string, env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const [file, ...pre] = argv as [string, ...string[]];
  const r = spawnSync(file, [...pre, '-c', script], { env, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const entries = (p: string): string[] => p.trim().split(':');

describe('--shell-init output', () => {
  it('prints one snippet per known shell; zsh rehashes, the others hash -r', async () => {
    const env = { HOME: '/home/u', PATH: BASE_PATH };
    for (const s of SHELLS) {
      const r = await cli(['--shell-init', s], env);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${shellInitSnippet(s, '/home/u/.local/share/cached-exec/shims')}\n`);
      expect(r.stdout).toContain(s === 'zsh' ? '\nrehash' : '\nhash -r');
    }
    expect((await cli(['--shell-init'], env)).stdout).toBe(`${shellInitSnippet('bash', '/home/u/.local/share/cached-exec/shims')}\n`);
  });

  it('names the directory the --shims-* commands use', async () => {
    const env = { HOME: '/home/u', PATH: BASE_PATH };
    const dirOf = async (args: string[], e: NodeJS.ProcessEnv): Promise<string> =>
      /^__cx_shims='(.*)'$/m.exec((await cli(args, e)).stdout)?.[1] ?? '';
    expect(await dirOf(['--shell-init', 'bash'], env)).toBe(shimsDir(env));
    expect(await dirOf(['--shell-init', 'bash'], { ...env, XDG_DATA_HOME: '/x/data' })).toBe('/x/data/cached-exec/shims');
    expect(await dirOf(['--shell-init', 'bash'], { ...env, CACHED_EXEC_SHIMS_DIR: '/opt/s' })).toBe('/opt/s');
    expect(await dirOf(['--shell-init', 'bash', '/opt/other'], env)).toBe('/opt/other');
    expect(await dirOf(['--shell-init', '--dir', '/opt/d', 'zsh'], env)).toBe('/opt/d');
    expect(await dirOf(['--shell-init', 'sh', './rel'], env)).toBe(path.resolve('rel'));
    expect(await dirOf(['--shell-init', 'sh', '--system'], { ...env, CACHED_EXEC_SYSTEM_DIR: '/srv/sys' })).toBe('/srv/sys/shims');
    expect(await dirOf(['--shell-init', 'sh', '--system'], env)).toBe('/var/lib/cached-exec/system/shims');
  });

  it('refuses unknown shells, two shells, --dir without a path, --system with a directory', async () => {
    const env = { HOME: '/home/u', PATH: BASE_PATH };
    for (const args of [['--shell-init', 'fish'], ['--shell-init', 'bash', 'zsh'], ['--shell-init', 'bash', '--dir'],
      ['--shell-init', 'bash', '--dir', 'nodir'], ['--shell-init', 'bash', '--system', '/a/b'], ['--shell-init', '/a', '/b']]) {
      const r = await cli(args, env);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^cached-exec: /);
    }
  });
});

describe.each(SHELLS_HERE)('evaluated by %s', (label, argv) => {
  const snippetShell = label.includes('zsh') ? 'zsh' : label === 'bash' ? 'bash' : 'sh';
  const base = { HOME: '/nonexistent', LC_ALL: 'C' };

  it('twice: the directory is first on PATH, once; the rest of PATH unchanged', () => {
    const dir = '/tmp/cx shims/it\'s "$HOME" *?[x]';
    const q = shQuote(shellInitSnippet(snippetShell, dir));
    const r = sh(argv, `eval ${q}; eval ${q}; printf '%s\\n' "$PATH"`, { ...base, PATH: BASE_PATH });
    expect(r.status, r.stderr).toBe(0);
    expect(entries(r.stdout)).toEqual([dir, ...BASE_PATH.split(':')]);
  });

  it('leaves PATH alone when the directory is on it already (also later on)', () => {
    const dir = '/opt/shims';
    const q = shQuote(shellInitSnippet(snippetShell, dir));
    for (const p of [`${dir}:${BASE_PATH}`, `/usr/bin:${dir}:/bin`, `/bin:${dir}`]) {
      const r = sh(argv, `eval ${q}; printf '%s\\n' "$PATH"`, { ...base, PATH: p });
      expect(r.stdout.trim()).toBe(p);
    }
  });

  it('with PATH unset under set -u: the shims, then the usual system directories', () => {
    const q = shQuote(shellInitSnippet(snippetShell, '/opt/shims'));
    const r = sh(argv, `set -u; unset PATH; eval ${q}; eval ${q}; printf '%s\\n' "$PATH"`, { ...base, PATH: BASE_PATH });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`/opt/shims:${FALLBACK_PATH}`);
  });

  it('a program found (and hashed) before now resolves to the shim', () => {
    // Not a name busybox has an applet for: Debian's busybox sh runs its applets without a PATH search.
    const real = tmp();
    const dir = tmp();
    fs.writeFileSync(path.join(real, 'cx-test-prog'), '#!/bin/sh\necho real\n', { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'cx-test-prog'), '#!/bin/sh\necho shimmed\n', { mode: 0o755 });
    const q = shQuote(shellInitSnippet(snippetShell, dir));
    const r = sh(argv, `cx-test-prog; eval ${q}; cx-test-prog; echo "\${__cx_shims-clean}"`, { ...base, PATH: `${real}:${BASE_PATH}` });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('real\nshimmed\nclean\n');
  });

  it('shell/cached-exec.sh sourced twice does the same, with the CLI\'s directory', () => {
    const home = tmp();
    const env = { ...base, HOME: home, PATH: BASE_PATH };
    const r = sh(argv, `. '${SOURCED}'; . '${SOURCED}'; printf '%s\\n' "$PATH"`, env);
    expect(r.status, r.stderr).toBe(0);
    expect(entries(r.stdout)).toEqual([shimsDir(env), ...BASE_PATH.split(':')]);
    const x = sh(argv, `. '${SOURCED}'; printf '%s\\n' "$PATH"`, { ...env, XDG_DATA_HOME: '/x/d' });
    expect(entries(x.stdout)[0]).toBe(shimsDir({ ...env, XDG_DATA_HOME: '/x/d' }));
    const c = sh(argv, `set -u; . '${SOURCED}'; printf '%s\\n' "$PATH"`, { ...env, CACHED_EXEC_SHIMS_DIR: '/c d' });
    expect(c.status, c.stderr).toBe(0);
    expect(entries(c.stdout)[0]).toBe('/c d');
  });
});
