/**
 * The background warmer killed with SIGKILL in the middle of a snapshot (the
 * machine shuts down, the OOM killer, a user's kill -9): it leaves no image
 * that is not whole, its per-key lock and the warmer lock do not keep anyone
 * out, and the next warmer completes the work the dead one had queued.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFor, keyHash } from '../../src/cache/key.js';
import { Store } from '../../src/cache/store.js';
import { drain } from '../../src/cli/commands/drain-queue.js';
import { loadSnapshotter, type TakeSnapshot } from '../../src/cli/snapshotter.js';
import { parseImage } from '../../src/image/format.js';
import { LAUNCHER, baseEnv, cc, haveCc, removeDir, tmpCacheDir, tmpDir, waitFor, type Env } from '../helpers/cx.js';

// A private program whose snapshot takes long enough (about a second) to be
// killed in the middle of it: its library's constructor spins without a
// system call for a few hundred ms, and the snapshotter runs it three times.
let work: string;
let PROG: string;
const ARGS = ['a', 'b c'];
const OUTPUT = 'value 42 argc 3\n';

let cache: string;
let env: Env;
let hash: string;

const sub = (name: string): string => path.join(cache, name);
const list = (name: string): string[] => (fs.existsSync(sub(name)) ? fs.readdirSync(sub(name)) : []);
const imageFile = (): string => path.join(sub('images'), `${hash}.img`);

function queueEntry(): void {
  fs.mkdirSync(sub('queue'), { recursive: true, mode: 0o700 });
  const p = path.join(sub('queue'), hash);
  if (!fs.existsSync(p)) fs.writeFileSync(p, `${PROG}\n${env.PATH}\n`, { mode: 0o600 });
}

function startWarmer(): ChildProcess {
  // The launcher execs node in place: the pid is the warmer's.
  return spawn(LAUNCHER, ['--drain-queue'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
}

const exited = (c: ChildProcess): Promise<number | null> =>
  new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(c.exitCode) : c.once('close', (code) => r(code))));

function wholeImagesOnly(): void {
  for (const f of list('images')) {
    if (!f.endsWith('.img')) continue; // a killed writer's temp file: never looked up, --cleanup removes it
    expect(parseImage(fs.readFileSync(path.join(sub('images'), f))).problems, f).toEqual([]);
  }
}

function stats(): { hits: number; misses: number; snapshots: { taken: number } } {
  return JSON.parse(spawnSync(LAUNCHER, ['--show-stats', '--json'], { env, encoding: 'utf8' }).stdout);
}

beforeAll(() => {
  work = tmpDir('cx-spin-');
  fs.writeFileSync(path.join(work, 'spin.c'),
    '__attribute__((constructor)) static void spin(void) { for (volatile unsigned long i = 0; i < 1500000000UL; i++) ; }\n' +
    'int value(void) { return 42; }\n');
  fs.writeFileSync(path.join(work, 'main.c'),
    '#include <stdio.h>\nint value(void);\nint main(int argc, char **argv) { printf("value %d argc %d\\n", value(), argc); return 0; }\n');
  cc(['-shared', '-fPIC', '-O1', '-o', path.join(work, 'libspin.so'), path.join(work, 'spin.c')]);
  PROG = path.join(work, 'prog');
  cc(['-o', PROG, path.join(work, 'main.c'), `-L${work}`, '-lspin', `-Wl,-rpath,${work}`]);
  cache = tmpCacheDir();
  env = baseEnv(cache);
  hash = keyHash(keyFor(PROG, { PATH: env.PATH }));
  expect(spawnSync(PROG, ARGS, { encoding: 'utf8' }).stdout).toBe(OUTPUT);
});
afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe.runIf(haveCc())('a warmer killed in the middle of a snapshot', () => {
  it('leaves no half image; its locks keep no one out; the next warmer completes the queue', async () => {
    const lockFile = path.join(sub('locks'), `snapshot-${hash}.lock`);
    let midSnapshot = 0;
    for (const delay of [0, 150, 400, 800]) {
      if (fs.existsSync(imageFile())) fs.rmSync(imageFile());
      queueEntry();
      const w = startWarmer();
      // Kill it only once it is really snapshotting this key (it holds the key's lock).
      expect(await waitFor(() => fs.existsSync(lockFile) || w.exitCode !== null, 20_000)).toBe(true);
      await new Promise((r) => setTimeout(r, delay));
      expect(w.exitCode, 'the warmer ended before it was killed').toBe(null);
      w.kill('SIGKILL');
      await exited(w);
      if (!fs.existsSync(imageFile())) midSnapshot++;
      wholeImagesOnly();
      // No traced child outlives its tracer (PTRACE_O_EXITKILL). The kill lands at the tracer's exit, but
      // the child must still be scheduled to die: with both cores busy that took longer than 2 s once.
      await waitFor(() => spawnSync('pgrep', ['-f', `internal-traceme.*${PROG}`]).status !== 0, 30_000);
      expect(spawnSync('pgrep', ['-f', `internal-traceme.*${PROG}`], { encoding: 'utf8' }).stdout.trim()).toBe('');
    }

    expect(midSnapshot, 'no kill landed before the image was written').toBeGreaterThanOrEqual(2);
    expect(fs.existsSync(lockFile), 'the killed warmer held the key lock').toBe(true);

    // What the dead warmer leaves: maybe its key lock (a dead pid), maybe temp files, the queue entry.
    if (fs.existsSync(imageFile())) fs.rmSync(imageFile());
    queueEntry();
    const t0 = Date.now();
    const next = startWarmer();
    let err = '';
    next.stderr?.on('data', (c: Buffer) => { err += c.toString(); });
    expect(await exited(next), err).toBe(0);
    // The dead warmer's key lock was recovered at once (its pid is gone), not after its 10-minute age limit.
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(fs.existsSync(imageFile())).toBe(true);
    wholeImagesOnly();
    expect(list('queue').filter((f) => !f.startsWith('.'))).toEqual([]);
    expect(list('locks').filter((f) => f.startsWith('snapshot-'))).toEqual([]);
    expect(stats().snapshots.taken).toBeGreaterThanOrEqual(1);

    // And the program restores from what it wrote, with the right output.
    const before = stats().hits;
    const r = spawnSync(LAUNCHER, [PROG, ...ARGS], { env, encoding: 'utf8' });
    expect({ out: r.stdout, status: r.status }).toEqual({ out: OUTPUT, status: 0 });
    expect(stats().hits).toBe(before + 1);
  }, 180_000);

  it('the warmer lock dies with its holder: a warmer started next is not kept out', async () => {
    if (fs.existsSync(imageFile())) fs.rmSync(imageFile());
    queueEntry();
    const w = startWarmer();
    expect(await waitFor(() => list('locks').some((f) => f.startsWith('snapshot-')) || w.exitCode !== null, 20_000)).toBe(true);
    expect(w.exitCode).toBe(null);
    // While it lives, a second warmer leaves at once (exit 0) and does nothing.
    const second = startWarmer();
    expect(await exited(second)).toBe(0);
    w.kill('SIGKILL');
    await exited(w);
    // flock(1) -n succeeds only if no one holds the lock the launcher tests.
    const probe = spawnSync('flock', ['-n', path.join(sub('queue'), '.warmer.lock'), 'true']);
    if (probe.error === undefined) expect(probe.status).toBe(0);
  }, 60_000);
});

describe.runIf(haveCc())('a miss after a killed warmer', () => {
  it('gets the program warmed (the dead warmer\'s queue entry does not stop a new warmer)', async () => {
    if (fs.existsSync(imageFile())) fs.rmSync(imageFile());
    queueEntry(); // left behind by a warmer that died before it got to it
    const warmEnv: Env = { ...env };
    delete warmEnv.CACHED_EXEC_NO_WARM;
    const r = spawnSync(LAUNCHER, [PROG, ...ARGS], { env: warmEnv, encoding: 'utf8' });
    expect({ out: r.stdout, status: r.status }).toEqual({ out: OUTPUT, status: 0 });
    expect(await waitFor(() => fs.existsSync(imageFile()), 30_000),
      'the launcher saw the queue entry and started no warmer: it stays queued until some other program misses').toBe(true);
  }, 60_000);
});

describe('a key queued again while the warmer runs', () => {
  it('is taken again by the same warmer, not left in the queue for a warmer that will not come', async () => {
    const dir = tmpCacheDir();
    try {
      const store = new Store(dir);
      const pathEnv = baseEnv(dir).PATH;
      const [a, b] = ['/bin/sed', '/bin/dash'].map((p) => ({ p, hash: keyHash(keyFor(p, { PATH: pathEnv })) })) as [{ p: string; hash: string }, { p: string; hash: string }];
      store.ensure('queue');
      const entry = (q: { p: string; hash: string }): void => fs.writeFileSync(path.join(store.sub('queue'), q.hash), `${q.p}\n${pathEnv}\n`);
      entry(a);
      await new Promise((r) => setTimeout(r, 20)); // oldest first: a, then b
      entry(b);
      const real = await loadSnapshotter();
      let requeued = false;
      // While b is taken, a's image is evicted and a miss of it queues it again (the launcher saw the warmer lock held).
      const take: TakeSnapshot = (o) => {
        if (o.exePath === b.p && !requeued) {
          requeued = true;
          fs.rmSync(store.imagePathForHash(a.hash));
          entry(a);
        }
        return real(o);
      };
      const results = await drain(store, { PATH: pathEnv, HOME: dir }, () => Promise.resolve(take));
      expect(results.map((r) => [r.queued, r.ok])).toEqual([[a.hash, true], [b.hash, true], [a.hash, true]]);
      expect(store.listQueue()).toEqual([]);
      expect(fs.existsSync(store.imagePathForHash(a.hash))).toBe(true);
    } finally {
      removeDir(dir);
    }
  }, 60_000);
});

describe('a traced helper whose tracer is gone before it looks', () => {
  // The window between the tracer's posix_spawn and the helper's first look at its parent: a tracer
  // killed there leaves the helper to a reaper, and tracing itself to that reaper it would stop forever.
  // The tracer passes its own pid (--parent): any other parent and the helper exits 127 untraced.
  it('exits 127 instead of stopping under another parent', () => {
    const r = spawnSync(LAUNCHER, ['--internal-traceme', '--parent=1', '/bin/true', 'true'], { encoding: 'utf8', timeout: 30_000 });
    expect([r.status, r.signal]).toEqual([127, null]);
  });
});
