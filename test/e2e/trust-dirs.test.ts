/**
 * The launcher trusts no cache directory it did not check (issue 11, item 2):
 *  - root's launcher with another user's HOME kept (sudo -E) and that user's
 *    `stats`/`queue` made symlinks into root's files writes nothing there;
 *  - a 0777 CACHED_EXEC_DIR gets no record from another user (nor from its
 *    owner: others could have planted anything in it);
 *  - FIFOs planted at images/<key>.img or stats/runs.log never hang a run,
 *    nor --explain, --show-stats or --cleanup;
 *  - the CLI refuses the directories the launcher refuses (a symlink, a
 *    relative path) instead of writing where no run will look.
 * Each run's output is compared with a cold run; waits are bounded.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAUNCHER, baseEnv, installedPrograms, launcherKey, observable, removeDir, run, runCold, tmpDir, type Env, type RunResult } from '../helpers/cx.js';
import { NOBODY, NOGROUP, canSwitchUser, ownedDir, ownedFile, runAs, userEnv, userPackage } from '../helpers/users.js';

const hasDash = installedPrograms(['dash']).length > 0;
const asOthers = canSwitchUser();
const work = tmpDir('cx-trust-dirs-');
const PROBE = ['-c', 'echo "ran $0 $*"; exit 7', 'zero', 'one two'];

/** Every file below `dir` with its size and mtime: what "nothing was written" compares. */
function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      const st = fs.lstatSync(p);
      out[path.relative(dir, p)] = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

const launch = (args: string[], e: Env, timeoutMs = 15_000): Promise<RunResult> => run(LAUNCHER, args, { env: e, timeoutMs });

beforeAll(() => {
  fs.chmodSync(work, 0o755);
});
afterAll(() => removeDir(work));

describe.runIf(hasDash && asOthers)('another user\'s directories', () => {
  let pkg: { launcher: string };
  beforeAll(() => {
    pkg = userPackage(path.join(work, 'u'));
  });

  it('root\'s launcher with a user\'s HOME kept never writes through that user\'s symlinked stats/ and queue/', async () => {
    const rootStats = ownedDir(path.join(work, 'root-stats'), 0, 0, 0o755);
    const rootQueue = ownedDir(path.join(work, 'root-queue'), 0, 0, 0o755);
    ownedFile(path.join(rootStats, 'runs.log'), 'root\'s precious file\n', 0, 0, 0o644);
    const home = ownedDir(path.join(work, 'victim-home'), NOBODY, NOGROUP, 0o755);
    ownedDir(path.join(home, '.cache'), NOBODY, NOGROUP, 0o755);
    const cache = ownedDir(path.join(home, '.cache', 'cached-exec'), NOBODY, NOGROUP, 0o700);
    fs.symlinkSync(rootStats, path.join(cache, 'stats'));
    fs.symlinkSync(rootQueue, path.join(cache, 'queue'));
    fs.lchownSync(path.join(cache, 'stats'), NOBODY, NOGROUP);
    fs.lchownSync(path.join(cache, 'queue'), NOBODY, NOGROUP);
    const before = { stats: snapshotTree(rootStats), queue: snapshotTree(rootQueue), cache: snapshotTree(cache) };

    // sudo -E: root, with the user's HOME (no CACHED_EXEC_DIR); misses would queue and start a warmer.
    const e: Env = { PATH: baseEnv('/x').PATH as string, HOME: home, LC_ALL: 'C' };
    for (let i = 0; i < 3; i++) {
      const r = await launch(['dash', ...PROBE], e);
      expect(observable(r)).toEqual(observable(await runCold('dash', PROBE, { env: e })));
    }
    await new Promise((r) => setTimeout(r, 300)); // a warmer, had one started, would be writing by now
    expect(snapshotTree(rootStats)).toEqual(before.stats);
    expect(fs.readFileSync(path.join(rootStats, 'runs.log'), 'utf8')).toBe('root\'s precious file\n');
    expect(snapshotTree(rootQueue)).toEqual(before.queue);
    expect(snapshotTree(cache)).toEqual(before.cache);
    // The CLI refuses it as well, instead of writing there.
    const cli = await launch(['--warm', 'dash'], e, 60_000);
    expect(cli.status).not.toBe(0);
    expect(cli.stderr.toString()).toMatch(/owned by uid 65534, not by you/);
    expect(snapshotTree(rootStats)).toEqual(before.stats);
  });

  it('a 0777 CACHED_EXEC_DIR gets no record from another user, nor from its owner', async () => {
    const open = ownedDir(path.join(work, 'world-writable'), 0, 0, 0o777);
    const stats = ownedDir(path.join(open, 'stats'), 0, 0, 0o777);
    ownedFile(path.join(stats, 'runs.log'), '', 0, 0, 0o666);
    const before = snapshotTree(open);
    const e = userEnv(open, '/nonexistent');
    const r = await runAs({}, pkg.launcher, ['dash', ...PROBE], { env: e });
    const c = await runAs({}, pkg.launcher, ['dash', ...PROBE], { env: { ...e, CACHED_EXEC_DISABLE: '1' } });
    expect(observable(r)).toEqual(observable(c));
    expect((await launch(['dash', ...PROBE], e)).status).toBe(7);
    expect(snapshotTree(open)).toEqual(before);
    expect(fs.statSync(path.join(stats, 'runs.log')).size).toBe(0);
  });
});

describe.runIf(hasDash)('special files planted in the cache never hang a run', () => {
  let cache: string;
  let e: Env;
  beforeAll(() => {
    cache = ownedDir(path.join(work, 'fifo-cache'), 0, 0, 0o700);
    e = baseEnv(cache);
    ownedDir(path.join(cache, 'images'), 0, 0, 0o700);
    ownedDir(path.join(cache, 'stats'), 0, 0, 0o700);
  });

  it('a FIFO at images/<key>.img: the run is cold at once; --explain, --list and --cleanup return', async () => {
    const key = launcherKey('dash', e);
    expect(key).not.toBeNull();
    fs.rmSync(key?.image as string, { force: true });
    fs.mkdirSync(path.dirname(key?.image as string), { recursive: true });
    mkfifo(key?.image as string);
    const r = await launch(['dash', ...PROBE], e);
    expect(r.timedOut).toBe(false);
    expect(observable(r)).toEqual(observable(await runCold('dash', PROBE, { env: e })));
    const explain = await launch(['--explain', 'dash'], e);
    expect(explain.timedOut).toBe(false);
    expect(explain.stdout.toString()).toMatch(/FAIL_IMAGE_IO: the image is not a regular file/);
    for (const cmd of ['--list', '--cleanup', '--show-stats']) {
      const c = await launch([cmd], e);
      expect(c.timedOut, cmd).toBe(false);
      expect(c.status, `${cmd}: ${c.stderr.toString()}`).toBe(0);
    }
    fs.rmSync(key?.image as string);
  });

  it('a FIFO at stats/runs.log: runs are cold or restored as usual, --show-stats returns', async () => {
    const log = path.join(cache, 'stats', 'runs.log');
    fs.rmSync(log, { force: true });
    mkfifo(log);
    for (let i = 0; i < 3; i++) {
      const r = await launch(['dash', ...PROBE], e);
      expect(r.timedOut).toBe(false);
      expect(r.status).toBe(7);
      expect(r.stdout.toString()).toBe('ran zero one two\n');
    }
    const s = await launch(['--show-stats'], e);
    expect(s.timedOut).toBe(false);
    expect(s.status, s.stderr.toString()).toBe(0);
    expect(fs.lstatSync(log).isFIFO()).toBe(true);
    fs.rmSync(log);
  });
});

describe('the CLI refuses the directories the launcher refuses', () => {
  it('a symlinked cache directory', async () => {
    const real = ownedDir(path.join(work, 'real-cache'), process.geteuid?.() ?? 0, process.getegid?.() ?? 0, 0o700);
    const link = path.join(work, 'linked-cache');
    fs.symlinkSync(real, link);
    const r = await launch(['--zero-stats'], baseEnv(link));
    expect(r.status).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/is a symbolic link: the launcher does not follow/);
    expect(fs.readdirSync(real)).toEqual([]);
    const explain = await launch(['--explain', 'true'], baseEnv(link));
    expect(explain.status).not.toBe(0);
    expect(explain.stderr.toString()).toMatch(/is a symbolic link/);
    // The launcher: a cold run that writes nothing there.
    const r2 = await launch(['true'], { ...baseEnv(link), CACHED_EXEC_NO_WARM: '0' });
    expect(r2.status).toBe(0);
    expect(fs.readdirSync(real)).toEqual([]);
  });

  it('a relative cache directory', async () => {
    const r = await run(LAUNCHER, ['--zero-stats'], { env: baseEnv('relative/cache'), cwd: work });
    expect(r.status).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/is a relative path/);
    expect(fs.existsSync(path.join(work, 'relative'))).toBe(false);
  });
});

function mkfifo(p: string): void {
  if (spawnSync('mkfifo', ['-m', '600', p]).status !== 0) throw new Error(`mkfifo ${p} failed`);
}
