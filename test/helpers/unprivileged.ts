/**
 * Running the real launcher as an unprivileged user, as a user who installed
 * cached-exec would: `setpriv --reuid=nobody --regid=nogroup --clear-groups`,
 * with a copy of the package that user can run and a cache that user owns.
 *
 * The copy is its own package (the launcher finds dist/ and shell/ relative to
 * its own path, and the CLI finds the launcher relative to dist/): bin/ and
 * dist/ are copied (so a file capability on the copy's launcher touches no
 * other test), node_modules and shell are symlinks to the worktree's.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, tmpDir, type Env, type RunResult } from './cx.js';

export const NOBODY = { uid: 65534, gid: 65534 };
const SETPRIV = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];

export interface PackageCopy {
  root: string;
  launcher: string;
}

/** A root-owned, world-readable copy of the package in a fresh directory. */
export function copyPackage(): PackageCopy {
  const root = tmpDir('cx-pkg-');
  fs.chmodSync(root, 0o755);
  fs.mkdirSync(path.join(root, 'bin'), { mode: 0o755 });
  const launcher = path.join(root, 'bin', 'cached-exec');
  fs.copyFileSync(path.join(ROOT, 'bin', 'cached-exec'), launcher);
  fs.chmodSync(launcher, 0o755);
  fs.symlinkSync('cached-exec', path.join(root, 'bin', 'cached-exec-selfpath'));
  fs.cpSync(path.join(ROOT, 'dist'), path.join(root, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
  for (const d of ['node_modules', 'shell']) fs.symlinkSync(path.join(ROOT, d), path.join(root, d));
  return { root, launcher };
}

/** A fresh directory owned by nobody (mode 0700): a cache, a home, a work directory. */
export function nobodyDir(prefix = 'cx-nobody-'): string {
  const d = tmpDir(prefix);
  fs.chownSync(d, NOBODY.uid, NOBODY.gid);
  fs.chmodSync(d, 0o700);
  return d;
}

/** Makes `dir` (and what is in it) nobody's. */
export function giveToNobody(dir: string): void {
  spawnSync('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, dir]);
}

export type Who = 'root' | 'nobody';

/** The command line that runs `file args` as `who`. */
export function asWho(who: Who, file: string, args: readonly string[]): [string, string[]] {
  return who === 'root' ? [file, [...args]] : ['setpriv', [...SETPRIV, file, ...args]];
}

/** spawnSync as `who`, utf8. */
export function runAs(who: Who, file: string, args: readonly string[], opts: { env: Env; cwd?: string; input?: string; timeoutMs?: number }):
  { status: number | null; stdout: string; stderr: string; signal: NodeJS.Signals | null } {
  const [f, a] = asWho(who, file, args);
  const r = spawnSync(f, a, { env: opts.env, cwd: opts.cwd, input: opts.input ?? '', encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** Spawns as `who` and resolves with the output; `onSpawn` sees the child (its pid is the program's). */
export function spawnAs(who: Who, file: string, args: readonly string[], opts: { env: Env; cwd?: string }):
  Promise<RunResult> {
  const [f, a] = asWho(who, file, args);
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(f, a, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({
      stdout: Buffer.concat(out), stderr: Buffer.concat(err), status, signal, pid: child.pid ?? -1,
      ms: Number(process.hrtime.bigint() - t0) / 1e6, timedOut: false,
    }));
  });
}
