/**
 * The README's set-up and usage examples, run as written, in order, on a
 * fresh copy of this checkout (its tracked and new files, no node_modules,
 * no build) by a new user: an empty HOME with what /etc/skel gives one,
 * ~/.local/bin on PATH as Debian's ~/.profile puts it there once it exists,
 * nothing of cached-exec's in the environment. Every ```sh block is one step;
 * a block whose preceding line is `<!-- doc-test: skip: REASON -->` is left
 * out by that rule, with its reason (a daemon, the test suite itself,
 * hyperfine). Two things differ from a person's shell, both stated here:
 * background warming is off (CACHED_EXEC_NO_WARM=1: no snapshot may outlive
 * the test; the examples warm explicitly where it matters) and npm uses the
 * machine's package cache.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, SYSTEM_PATH, removeDir, tmpDir } from '../helpers/cx.js';

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
  /** The reason given by a skip marker, or null for a block that runs. */
  skip: string | null;
}

const SKIP = /^<!-- doc-test: skip: (.+?) -->$/;

/** The ```sh blocks of a Markdown text, in order, with their skip markers. */
export function shellBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue;
    const end = lines.indexOf('```', i + 1);
    if (end < 0) throw new Error(`README.md:${i + 1}: unterminated code block`);
    let prev = i - 1;
    while (prev >= 0 && (lines[prev] as string).trim() === '') prev--;
    const marker = prev >= 0 ? SKIP.exec(lines[prev] as string) : null;
    blocks.push({ line: i + 1, code: lines.slice(i + 1, end).join('\n'), skip: marker ? (marker[1] as string) : null });
    i = end;
  }
  return blocks;
}

const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const blocks = shellBlocks(readme);
const runnable = blocks.filter((b) => b.skip === null);

describe('the README\'s code blocks', () => {
  it('are found, and every skip marker names its reason', () => {
    expect(blocks.length).toBeGreaterThan(5);
    expect(runnable.length).toBeGreaterThan(4);
    // A marker that does not parse would silently run (or a misspelt one be ignored): none may exist.
    const markers = readme.split('\n').filter((l) => l.includes('doc-test'));
    expect(markers.filter((l) => !SKIP.test(l))).toEqual([]);
    expect(markers).toHaveLength(blocks.length - runnable.length);
  });

  it('set-up comes first and the examples use the installed name', () => {
    expect(runnable[0]?.code).toMatch(/^npm install\b/);
    for (const b of runnable.slice(1)) expect(b.code, `README.md:${b.line}`).not.toContain('./bin/cached-exec');
  });
});

describe('the README\'s set-up and usage examples, run as written on a fresh copy', () => {
  let work = '';
  let res: { status: number | null; stdout: string; stderr: string } = { status: null, stdout: '', stderr: '' };
  /** stdout of each runnable block, by index. */
  const out: string[] = [];

  beforeAll(() => {
    work = tmpDir('cx-readme-');
    const repo = path.join(work, 'cached-exec');
    const home = path.join(work, 'home');
    fs.mkdirSync(repo);
    fs.cpSync('/etc/skel', home, { recursive: true });
    // The checkout as a fresh clone of it would be, with what is not committed yet.
    const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
      .split('\0').filter((f) => f && fs.existsSync(path.join(ROOT, f)));
    for (const f of files) fs.cpSync(path.join(ROOT, f), path.join(repo, f), { recursive: false, verbatimSymlinks: true });
    const npmCache = execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim();
    const script = ['set -e', ...runnable.map((b, i) => [
      `echo "@@block ${i}@@"; echo "@@block ${i} (README.md:${b.line})@@" >&2`,
      `trap 'echo "README.md:${b.line}: failed: $BASH_COMMAND" >&2' ERR`,
      b.code,
    ].join('\n')), 'echo "@@end@@"'].join('\n');
    const r = spawnSync('bash', ['-c', script], {
      cwd: repo, encoding: 'utf8', timeout: 900_000, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024,
      env: {
        HOME: home, USER: os.userInfo().username, LOGNAME: os.userInfo().username, SHELL: '/bin/bash', TERM: 'dumb',
        PATH: `${path.join(home, '.local', 'bin')}:${SYSTEM_PATH}`,
        CACHED_EXEC_NO_WARM: '1', npm_config_cache: npmCache, npm_config_audit: 'false', npm_config_fund: 'false',
      },
    });
    res = { status: r.status, stdout: r.stdout, stderr: r.stderr };
    const parts = r.stdout.split(/^@@block \d+@@\n/m).slice(1);
    out.push(...parts);
  }, 900_000);

  afterAll(() => removeDir(work));

  const blockOut = (pattern: RegExp): string => {
    const i = runnable.findIndex((b) => pattern.test(b.code));
    expect(i, `a README block matching ${pattern}`).toBeGreaterThanOrEqual(0);
    return out[i] ?? '';
  };

  it('every block runs to the end with exit status 0', () => {
    expect(res.status, res.stderr.slice(-4000)).toBe(0);
    expect(res.stdout).toMatch(/@@end@@\n$/);
    expect(out).toHaveLength(runnable.length);
  });

  it('set-up: the installed cached-exec runs the example script', () => {
    const setup = blockOut(/^npm install/);
    expect(setup).toContain('/.local/bin/cached-exec -> ');
    expect(setup).toContain('Hello, world!\ncalled as: hello.sh, with 0 argument(s)\n');
  });

  it('prefix form: cold, warmed, explained as a restore, restored, with the same output', () => {
    const o = blockOut(/cached-exec --explain bash/);
    const hello = 'Hello, a!\ncalled as: hello.sh, with 2 argument(s)\n  argv[1] = [a]\n  argv[2] = [b]\nsum of squares 1..10 = 385\nfib(30) = 832040\n';
    expect(o.split(hello)).toHaveLength(3); // printed twice, identically
    expect(o).toMatch(/next run\s+restores from the image/);
  });

  it('shims: sed runs through the shim directory', () => {
    const o = blockOut(/--shims-install sed/);
    expect(o).toContain('/home/.local/share/cached-exec/shims/sed\n');
    expect(o).toMatch(/sed \(GNU sed\)/);
  });

  it('post-init: bash after the rc file and python3 after its imports give the program\'s output', () => {
    const o = blockOut(/--after-init --preload json,decimal python3/);
    expect(o).toContain('{"args": ["1", "2.5"], "sum": "3.5"}\n');
    expect(o.split('Hello, a!').length).toBe(2);
  });

  it('measuring: the statistics show every run restored', () => {
    const o = blockOut(/--zero-stats/);
    expect(o).toMatch(/^Runs\s+10$/m);
    expect(o).toMatch(/^\s+Hits \(restored\)\s+10\b/m);
  });
});
