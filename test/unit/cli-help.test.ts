/**
 * --help is complete: every command, and every environment variable a user
 * can set that the launcher, the CLI or the adapters read. The variables are
 * found in the sources, so a new one that is not documented fails here.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const help = spawnSync(path.join(root, 'bin', 'cached-exec'), ['--help'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

/** Not for users: the resume protocol's fd (docs/resume-protocol.md), test switches, C header guards. */
const INTERNAL = (name: string): boolean => name === 'CACHED_EXEC_RESUME_FD' || name.startsWith('CACHED_EXEC_TEST_') || name.endsWith('_H');

function variablesInSources(): string[] {
  const names = new Set<string>();
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else for (const m of fs.readFileSync(p, 'utf8').matchAll(/CACHED_EXEC_[A-Z_]+[A-Z]/g)) names.add(m[0]);
    }
  };
  walk(path.join(root, 'src'));
  walk(path.join(root, 'shell'));
  return [...names].filter((n) => !INTERNAL(n)).sort();
}

describe('--help', () => {
  it('exits 0', () => {
    expect(help.status).toBe(0);
  });

  it('names every user-settable variable the sources read, as does the README', () => {
    const vars = variablesInSources();
    expect(vars).toContain('CACHED_EXEC_SHIMS_DIR');
    expect(vars.filter((v) => !help.stdout.includes(`  ${v} `))).toEqual([]);
    expect(vars.filter((v) => !readme.includes(`\`${v}\``))).toEqual([]);
  });

  it('says --shell-init takes an optional SHELL that defaults to bash, and bash is what it prints for', () => {
    expect(help.stdout).toMatch(/--shell-init \[SHELL\]/);
    expect(help.stdout.replace(/\s+/g, ' ')).toContain('SHELL is bash (the default)');
    const plain = spawnSync(path.join(root, 'bin', 'cached-exec'), ['--shell-init'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent' } });
    const bash = spawnSync(path.join(root, 'bin', 'cached-exec'), ['--shell-init', 'bash'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent' } });
    expect(plain.status).toBe(0);
    expect(plain.stdout).toBe(bash.stdout);
  });

  it('shows the --after-init run form', () => {
    expect(help.stdout).toContain('cached-exec --after-init[=FILE] [--preload MOD,...] PROG [ARGS...]');
  });
});
