/**
 * Running the real launcher as a real second user (`setpriv`), for the
 * trust-boundary suites: a copy of the package the user can run (its own
 * bin/cached-exec; dist/ and shell/ linked to the build), caches that user
 * owns, and files only root or one group may read.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT, SYSTEM_PATH, run, type Env, type RunOptions, type RunResult } from './cx.js';

export const NOBODY = 65534;
export const NOGROUP = 65534;

/** Whether this run can test as another user: root, with setpriv and a `nobody` account. */
export function canSwitchUser(): boolean {
  return process.geteuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;
}

/**
 * A package the other user can run from: `dir`/pkg with copies of the
 * launcher (0755, root's), dist/ and shell/ (copies, not links: the launcher
 * and the CLI both name the adapters by the package they run from, and a
 * post-init key includes that path), package.json and node_modules linked.
 * `dir` (a fresh tmpDir) is made searchable.
 */
export function userPackage(dir: string): { root: string; launcher: string } {
  const root = path.join(dir, 'pkg');
  fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
  const launcher = path.join(root, 'bin', 'cached-exec');
  fs.copyFileSync(path.join(ROOT, 'bin', 'cached-exec'), launcher);
  fs.chmodSync(launcher, 0o755);
  for (const n of ['dist', 'shell']) fs.cpSync(path.join(ROOT, n), path.join(root, n), { recursive: true });
  for (const n of ['package.json', 'node_modules']) {
    const link = path.join(root, n);
    if (!fs.existsSync(link)) fs.symlinkSync(path.join(ROOT, n), link);
  }
  fs.chmodSync(dir, 0o755); // a fresh tmpDir: 0700 until now
  fs.chmodSync(root, 0o755);
  fs.chmodSync(path.join(root, 'bin'), 0o755);
  return { root, launcher };
}

/** A directory owned by `uid` with `mode` (a cache that user owns, or a home). */
export function ownedDir(p: string, uid: number, gid: number, mode = 0o700): string {
  fs.mkdirSync(p, { recursive: true });
  fs.chownSync(p, uid, gid);
  fs.chmodSync(p, mode);
  return p;
}

/** A file with exact owner and mode (the umask does not apply). */
export function ownedFile(p: string, body: string, uid: number, gid: number, mode: number): string {
  fs.writeFileSync(p, body);
  fs.chownSync(p, uid, gid);
  fs.chmodSync(p, mode);
  return p;
}

export interface AsUser {
  uid?: number;
  gid?: number;
  /** Supplementary groups; none when absent (--clear-groups). */
  groups?: number[];
}

/** The setpriv words that become `who` (uid, gid, groups); nothing is inherited from root. */
export function setprivArgs(who: AsUser = {}): string[] {
  const groups = who.groups?.length ? [`--groups=${who.groups.join(',')}`] : ['--clear-groups'];
  return [`--reuid=${who.uid ?? NOBODY}`, `--regid=${who.gid ?? NOGROUP}`, ...groups, '--inh-caps=-all', '--'];
}

/** Runs `file args` as another user (default nobody:nogroup, no groups). */
export function runAs(who: AsUser, file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  return run('setpriv', [...setprivArgs(who), file, ...args], opts);
}

/** The environment of a run as `nobody`: its own cache and home, the system PATH, no warmer. */
export function userEnv(cacheDir: string, home: string, extra: Env = {}): Env {
  return {
    PATH: SYSTEM_PATH,
    HOME: home,
    LC_ALL: 'C',
    SHLVL: '1',
    CACHED_EXEC_DIR: cacheDir,
    CACHED_EXEC_NO_WARM: '1',
    ...extra,
  };
}
