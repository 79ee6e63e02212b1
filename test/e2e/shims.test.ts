/**
 * Shims as a user installs them (--shims-install, --shell-init) and a shell
 * script corpus run with and without them: same output and status, and every
 * external command of the shimmed run really restored (counted by the
 * launcher's own statistics records, not by anything the tool says).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, SYSTEM_PATH, baseEnv, removeDir, tmpCacheDir, tmpDir, type Env } from '../helpers/cx.js';

const PROGS = ['sed', 'grep', 'cut', 'tr', 'sort', 'uniq', 'wc', 'head', 'cat', 'basename', 'env', 'seq'];

const CORPUS = String.raw`
set -u
echo "pipeline: $(printf 'b\na\nc\na\n' | sort | uniq -c | tr -s ' ' | sed 's/^ //' | tr '\n' ';')"
echo "subshell: $( (echo one; echo two) | wc -l | tr -d ' ')"
x=$(echo "a:b:c" | cut -d: -f2); echo "substitution: $x"
echo "grep status: $(echo abc | grep -q zzz; echo $?)"
echo "command -v: $(command -v sed | sed 's|.*/||')"
type cut | sed 's|/.*/||'
hash sort 2>/dev/null; echo "hash: $?"
seq 1 5 | head -n 3 | tr '\n' ' '; echo
env X_TEST=1 sh -c 'echo "env child: $X_TEST"'
basename /a/b/c.txt .txt
echo "argv: $0 $#"
(exit 7); echo "status: $?"
sh -c 'exec cat /dev/null'; echo "exec: $?"
cat <<'HERE' | grep -c line
line one
line two
HERE
echo done
`;

let cache: string;
let shims: string;
let work: string;
let env: Env;

function cx(args: string[], e: Env = env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LAUNCHER, args, { env: e, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function hits(): number {
  const log = path.join(cache, 'stats', 'runs.log');
  if (!fs.existsSync(log)) return 0;
  return decodeRunRecords(fs.readFileSync(log)).records.filter((r) => r.outcome === 'HIT').length;
}

beforeAll(() => {
  cache = tmpCacheDir();
  work = tmpDir('cx-shims-');
  shims = path.join(work, 'shims');
  env = baseEnv(cache, { CACHED_EXEC_SHIMS_DIR: shims, HOME: work });
});

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('shim management', () => {
  it('--shims-install makes symlinks to the launcher, idempotently', () => {
    const r = cx(['--shims-install', ...PROGS]);
    expect(r.status, r.stderr).toBe(0);
    for (const p of PROGS) {
      expect(fs.readlinkSync(path.join(shims, p))).toBe(LAUNCHER);
    }
    expect(cx(['--shims-install', ...PROGS]).status).toBe(0);
  });

  it('refuses names with a slash and the launcher\'s own name', () => {
    expect(cx(['--shims-install', 'a/b']).status).toBe(2);
    expect(cx(['--shims-install', 'cached-exec']).status).toBe(2);
  });

  it('--shims-list names the real programs, not the shims', () => {
    const r = cx(['--shims-list', '--json']);
    const j = JSON.parse(r.stdout) as { shims: { name: string; program: string }[] };
    const sed = j.shims.find((s) => s.name === 'sed');
    expect(sed?.program).toMatch(/^\/(usr\/)?bin\/sed$/);
  });

  it('--shell-init evaluated twice puts the shim directory on PATH once, first', () => {
    const script = `eval "$("${LAUNCHER}" --shell-init bash)"; eval "$("${LAUNCHER}" --shell-init bash)"; echo "$PATH"`;
    const out = execFileSync('bash', ['-c', script], { env, encoding: 'utf8' }).trim().split(':');
    expect(out[0]).toBe(shims);
    expect(out.filter((p) => p === shims).length).toBe(1);
    const sourced = execFileSync('sh', ['-c', `. "${path.resolve('shell/cached-exec.sh')}"; . "${path.resolve('shell/cached-exec.sh')}"; echo "$PATH"`],
      { env, encoding: 'utf8' }).trim().split(':');
    expect(sourced[0]).toBe(shims);
    expect(sourced.filter((p) => p === shims).length).toBe(1);
  });
});

describe('a shell script corpus with and without shims', () => {
  const shimEnv = (): Env => ({ ...env, PATH: `${shims}:${SYSTEM_PATH}` });

  it('warms through the PATH the script runs with', () => {
    const r = cx(['--warm', ...PROGS, 'sh', 'bash'], shimEnv());
    expect(r.status, r.stderr).toBe(0);
  });

  for (const shell of ['sh', 'bash']) {
    it(`${shell}: identical output and status; every external command restored`, () => {
      const plain = spawnSync(shell, ['-c', CORPUS, 'corpus', 'x', 'y'], { env, encoding: 'utf8' });
      const before = hits();
      const shimmed = spawnSync(shell, ['-c', CORPUS, 'corpus', 'x', 'y'], { env: shimEnv(), encoding: 'utf8' });
      const restored = hits() - before;
      expect(shimmed.stdout).toBe(plain.stdout);
      expect(shimmed.stderr).toBe(plain.stderr);
      expect(shimmed.status).toBe(plain.status);
      expect(plain.stdout).toContain('done');
      // Every exec of a shimmed program, as a cold run of the same shell shows them.
      const expected = countExternal(shell);
      expect(expected).toBeGreaterThan(15);
      expect(restored).toBe(expected);
    });
  }

  /** Runs of shimmed programs in CORPUS, counted by tracing a cold run's execs. */
  function countExternal(shell: string): number {
    const trace = path.join(work, `trace-${Date.now()}`);
    spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', trace, shell, '-c', CORPUS, 'corpus', 'x', 'y'], { env });
    // Concurrent pipeline members split a call into "unfinished" and "resumed" lines:
    // count calls by their first line, naming the program's resolved file.
    const real = new Set(PROGS.map((p) => execFileSync('sh', ['-c', `command -v ${p}`], { env, encoding: 'utf8' }).trim()));
    const calls = fs.readFileSync(trace, 'utf8').split('\n').map((l) => /execve\("([^"]+)"/.exec(l)?.[1]);
    return calls.filter((c) => c !== undefined && real.has(c)).length;
  }
});

describe('scripts through a shim', () => {
  it('a #! script named like a shim restores its interpreter with the kernel\'s argv', () => {
    const bin = path.join(work, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    const script = path.join(bin, 'greet');
    fs.writeFileSync(script, '#!/bin/bash\necho "greet: $0 [$*]"; grep -c "\\.img" /proc/$$/maps\n', { mode: 0o755 });
    const e = { ...env, PATH: `${shims}:${bin}:${SYSTEM_PATH}` };
    // Warming the script warms its interpreter as the #! line names it (/bin/bash), the key the launcher uses.
    expect(cx(['--warm', 'greet'], e).status).toBe(0);
    expect(cx(['--shims-install', 'greet'], e).status).toBe(0);
    const cold = spawnSync('greet', ['a b', 'c'], { env: { ...e, CACHED_EXEC_DISABLE: '1' }, encoding: 'utf8' });
    const hot = spawnSync('greet', ['a b', 'c'], { env: e, encoding: 'utf8' });
    const [coldLine, coldMaps] = cold.stdout.trim().split('\n');
    const [hotLine, hotMaps] = hot.stdout.trim().split('\n');
    expect(hotLine).toBe(coldLine);
    expect(coldLine).toBe(`greet: ${script} [a b c]`);
    expect(Number(coldMaps)).toBe(0);
    expect(Number(hotMaps)).toBeGreaterThan(0); // bash's image is mapped: really restored
  });
});
