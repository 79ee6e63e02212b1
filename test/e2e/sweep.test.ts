/**
 * A sweep over many installed programs (coreutils, util-linux, findutils,
 * diffutils, procps, iproute2, ...): each is warmed, then run cold and
 * restored with --version and --help; output and status must be identical,
 * and the launcher's own records must show the restored run as a HIT. Wide
 * rather than deep: it catches a program whose start-up state the snapshot
 * gets wrong, the worst bug this tool can have. The same through a shim
 * (execve of the shim, argv[0] the bare name, the shim directory first on
 * PATH) against the program exec'd directly.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isMarked } from '../../src/cli/commands/shims-marker.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, SYSTEM_PATH, baseEnv, removeDir, tmpCacheDir } from '../helpers/cx.js';

const CANDIDATES = [
  'basename', 'chmod', 'chown', 'comm', 'cp', 'csplit', 'date', 'df', 'dircolors', 'dirname', 'du', 'echo', 'expand',
  'expr', 'factor', 'fmt', 'fold', 'groups', 'id', 'install', 'join', 'link', 'ln', 'logname', 'ls', 'mkdir', 'mkfifo',
  'mknod', 'mktemp', 'mv', 'nice', 'nl', 'nproc', 'numfmt', 'od', 'paste', 'pathchk', 'pinky', 'pr', 'printenv',
  'printf', 'ptx', 'pwd', 'readlink', 'realpath', 'rm', 'rmdir', 'seq', 'stat', 'stty', 'sync', 'tac', 'test', 'touch',
  'true', 'false', 'truncate', 'tsort', 'tty', 'uname', 'unexpand', 'unlink', 'users', 'who', 'whoami', 'find', 'xargs',
  'diff', 'cmp', 'sdiff', 'ps', 'free', 'uptime', 'pgrep', 'ip', 'ss', 'lsblk', 'findmnt', 'getopt', 'rev', 'column',
  'hexdump', 'look', 'tar', 'cpio', 'file', 'make', 'patch', 'git', 'openssl', 'curl', 'wget', 'jq', 'zip', 'unzip',
  'bzip2', 'xz', 'gzip', 'sqlite3', 'psql', 'cmake', 'ninja', 'gpg',
];

const cache = tmpCacheDir();
const env = baseEnv(cache);
const shims = path.join(cache, 'shims');
const shimEnv = { ...env, PATH: `${shims}:${env.PATH}` };
afterAll(() => removeDir(cache));

function resolve(p: string): string | null {
  for (const d of SYSTEM_PATH.split(':')) {
    const f = path.join(d, p);
    try {
      const h = Buffer.alloc(4);
      const fd = fs.openSync(f, 'r');
      fs.readSync(fd, h, 0, 4, 0);
      fs.closeSync(fd);
      return h.toString('latin1') === '\x7fELF' ? f : null;
    } catch { /* next */ }
  }
  return null;
}

const programs = CANDIDATES.filter((p) => resolve(p) !== null);

function hitsSoFar(): number {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.filter((r) => r.outcome === 'HIT').length : 0;
}

describe(`sweep over ${programs.length} installed programs`, () => {
  it('finds enough programs to mean something', () => {
    expect(programs.length).toBeGreaterThan(40);
  });

  it('warms them (refusals are allowed, but reported, and rare)', () => {
    const r = spawnSync(LAUNCHER, ['--warm', ...programs], { env, encoding: 'utf8', timeout: 120_000 });
    const refused = r.stderr.split('\n').filter((l) => l.includes('refused'));
    expect(refused.length, refused.join('\n')).toBeLessThan(programs.length / 10);
  });

  it('runs each restored exactly like cold with --version and --help', () => {
    const images = new Set(fs.readdirSync(path.join(cache, 'images')));
    let restored = 0;
    const mismatches: string[] = [];
    for (const p of programs) {
      const key = spawnSync(LAUNCHER, ['--internal-key', p], { env, encoding: 'utf8' }).stdout.split(' ')[0];
      if (!images.has(`${key}.img`)) continue; // refused
      for (const arg of ['--version', '--help']) {
        const opts = { env, encoding: 'utf8' as const, timeout: 10_000, input: '' };
        const cold = spawnSync(LAUNCHER, [p, arg], { ...opts, env: { ...env, CACHED_EXEC_DISABLE: '1' } });
        const before = hitsSoFar();
        const hot = spawnSync(LAUNCHER, [p, arg], opts);
        if (hitsSoFar() !== before + 1) mismatches.push(`${p} ${arg}: not restored`);
        if (hot.stdout !== cold.stdout || hot.stderr !== cold.stderr || hot.status !== cold.status || hot.signal !== cold.signal) {
          mismatches.push(`${p} ${arg}: cold ${cold.status}/${cold.signal} restored ${hot.status}/${hot.signal}`);
        }
        restored++;
      }
    }
    expect(mismatches).toEqual([]);
    expect(restored).toBeGreaterThan(programs.length);
  });

  it('through shims: each restored exactly like the plain program with --version and --help', () => {
    const inst = spawnSync(LAUNCHER, ['--shims-install', shims, ...programs], { env, encoding: 'utf8', timeout: 300_000 });
    expect(inst.status, inst.stderr).toBe(0);
    spawnSync(LAUNCHER, ['--warm', ...programs], { env: shimEnv, encoding: 'utf8', timeout: 300_000 });
    const images = new Set(fs.readdirSync(path.join(cache, 'images')));
    let restored = 0;
    const mismatches: string[] = [];
    for (const p of programs) {
      const key = spawnSync(LAUNCHER, ['--internal-key', p], { env: shimEnv, encoding: 'utf8' }).stdout.split(' ')[0];
      if (!images.has(`${key}.img`)) continue; // refused
      for (const arg of ['--version', '--help']) {
        // The program exec'd directly, same environment, with the argv[0] the launcher passes (README, "Masquerade").
        const real = resolve(p) as string;
        const opts = { encoding: 'utf8' as const, timeout: 10_000, input: '', env: shimEnv };
        const plain = spawnSync(real, [arg], { ...opts, argv0: isMarked(path.join(shims, p)) ? real : p });
        const before = hitsSoFar();
        const hot = spawnSync(path.join(shims, p), [arg], { ...opts, argv0: p });
        if (hitsSoFar() !== before + 1) mismatches.push(`${p} ${arg}: not restored through the shim`);
        if (hot.stdout !== plain.stdout || hot.stderr !== plain.stderr || hot.status !== plain.status || hot.signal !== plain.signal) {
          mismatches.push(`${p} ${arg}: plain ${plain.status}/${plain.signal} through the shim ${hot.status}/${hot.signal}` +
            `${hot.stdout === plain.stdout ? '' : `\n  stdout plain: ${plain.stdout.slice(0, 200)}\n  stdout shim:  ${hot.stdout.slice(0, 200)}`}` +
            `${hot.stderr === plain.stderr ? '' : `\n  stderr plain: ${plain.stderr.slice(0, 200)}\n  stderr shim:  ${hot.stderr.slice(0, 200)}`}`);
        }
        restored++;
      }
    }
    expect(mismatches).toEqual([]);
    expect(restored).toBeGreaterThan(programs.length);
  }, 300_000);
});
