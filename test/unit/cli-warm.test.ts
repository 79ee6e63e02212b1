/**
 * --warm's engine (warmOne) and the background warmer (drain) with a stand-in
 * snapshotter that honours the contract in src/snapshot/api.ts: where images
 * land, what a refusal leaves behind, the identity check, the bounds after a
 * write, the queue and the warmer lock. The real snapshotter is exercised by
 * the end-to-end suites.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkImage } from '../../src/cache/check.js';
import { writeConfig } from '../../src/cache/config.js';
import { keyFromStat, keyHash } from '../../src/cache/key.js';
import { foldStats, summarize } from '../../src/cache/stats.js';
import { Store } from '../../src/cache/store.js';
import { warmerLockPath } from '../../src/cache/warmer-lock.js';
import { drain } from '../../src/cli/commands/drain-queue.js';
import { MAX_VARIANTS, servingImage, warmOne } from '../../src/cli/commands/warm.js';
import { dependency, variantSelector } from '../../src/cache/envdeps.js';
import { cleanup, staleReason } from '../../src/cache/maintain.js';
import type { ImageEntry } from '../../src/cache/store.js';
import { CxError } from '../../src/common/errors.js';
import type { TakeSnapshot } from '../../src/cli/snapshotter.js';
import { PAGE_SIZE, parseImage, type ImageModel } from '../../src/image/format.js';
import { FileFlag, FileKind, Prot, Src, VdsoKind } from '../../src/image/schema.js';
import type { SnapshotOptions, SnapshotOutcome } from '../../src/snapshot/api.js';

const temps: string[] = [];
function tmpStore(): Store {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-warm-'));
  temps.push(d);
  return new Store(path.join(d, 'cache'));
}
afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

const env = { PATH: '/usr/bin:/bin', HOME: os.homedir() };

/** A snapshotter stand-in: a small valid image of the program it is asked for. */
function fakeImage(opts: SnapshotOptions, pages = 1): ImageModel {
  const st = fs.statSync(opts.exePath, { bigint: true });
  const key = keyFromStat(opts.exePath, st, opts.env);
  return {
    createdNs: BigInt(Date.now()) * 1_000_000n,
    key,
    files: [{
      path: opts.exePath, kind: FileKind.MAPPED, dev: st.dev, ino: st.ino, size: st.size,
      mtimeSec: key.exeMtimeSec, mtimeNsec: key.exeMtimeNsec, ctimeSec: key.exeCtimeSec, ctimeNsec: key.exeCtimeNsec,
      mode: Number(st.mode), flags: FileFlag.EXE,
    }],
    regions: [
      { addr: 0x10000000n, len: 0x1000n, prot: Prot.READ, source: Src.FILE, file: 0, offset: 0n, flags: 0 },
      { addr: 0x10001000n, len: BigInt(pages * PAGE_SIZE), prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: 0, data: Buffer.alloc(pages * PAGE_SIZE, 3) },
    ],
    slots: [],
    state: {
      entry: 0x10000040n, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0,
      rseqSig: 0, startCode: 0n, endCode: 0n, startData: 0n, endData: 0n, startBrk: 0n, brk: 0n, vdsoBase: 0x7fff10000000n,
      atPhdr: 0n, atPhnum: 0n, atEntry: 0n, atBase: 0n, flags: 0, comm: path.basename(opts.exePath),
    },
    vdso: [{ offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO }],
  };
}

function recorder(answer: (o: SnapshotOptions) => SnapshotOutcome): { calls: SnapshotOptions[]; snapshotter: () => Promise<TakeSnapshot> } {
  const calls: SnapshotOptions[] = [];
  const take: TakeSnapshot = (o) => {
    calls.push(o);
    return answer(o);
  };
  return { calls, snapshotter: () => Promise.resolve(take) };
}

const ok = (o: SnapshotOptions, pages = 1): SnapshotOutcome => ({ ok: true, image: fakeImage(o, pages), ms: 5, notes: [] });

describe('warmOne', () => {
  it('snapshots the resolved program and writes the image the launcher looks for', async () => {
    const store = tmpStore();
    const { calls, snapshotter } = recorder((o) => ok(o));
    const r = await warmOne('true', { snapshotter, store, env });
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ exePath: '/usr/bin/true', argv: ['true'] });
    expect(path.isAbsolute(calls[0]?.launcher ?? '')).toBe(true);
    const launcherKey = spawnSync(calls[0]?.launcher as string, ['--internal-key', 'true'], { env: { ...env, CACHED_EXEC_DIR: store.dir }, encoding: 'utf8' });
    expect(launcherKey.stdout.trim()).toBe(`${r.key} ${r.image}`);
    expect(r).toMatchObject({ ok: true, resolved: '/usr/bin/true', size: fs.statSync(r.image as string).size });
    const st = fs.statSync('/usr/bin/true', { bigint: true });
    expect(checkImage(r.image as string, { key: keyFromStat('/usr/bin/true', st, env), owner: store.euid }).outcome).toBe('HIT');
    expect(summarize(foldStats(store).counters).snapshots.taken).toBe(1);
  });

  it('a refusal is reported, remembered for the launcher, and counted by reason', async () => {
    const store = tmpStore();
    const { snapshotter } = recorder(() => ({ ok: false, reason: 'threads', detail: '2 threads at the entry point', ms: 3 }));
    const r = await warmOne('true', { snapshotter, store, env });
    expect(r).toMatchObject({ ok: false, reason: 'threads', detail: '2 threads at the entry point' });
    expect(store.listImages()).toEqual([]);
    expect(store.refused(r.key as string)).toMatchObject({ reason: 'threads' });
    expect(summarize(foldStats(store).counters).snapshots).toEqual({ taken: 0, refused: 1, refusals: { threads: 1 } });
    // A later success forgets the refusal.
    await warmOne('true', { snapshotter: recorder((o) => ok(o)).snapshotter, store, env });
    expect(store.refused(r.key as string)).toBeNull();
  });

  it('refuses to store an image of a file that changed during the snapshot', async () => {
    const store = tmpStore();
    const { snapshotter } = recorder((o) => {
      const res = ok(o);
      if (res.ok) res.image.key.exeIno += 1n;
      return res;
    });
    await expect(warmOne('true', { snapshotter, store, env })).rejects.toThrow(/changed while it was being snapshotted/);
    expect(store.listImages()).toEqual([]);
  });

  it('warms the interpreter of a #! script, under the key the launcher uses for it', async () => {
    const store = tmpStore();
    const script = path.join(path.dirname(store.dir), 'hello.sh');
    fs.writeFileSync(script, '#!/bin/sh\necho hi\n', { mode: 0o755 });
    const { calls, snapshotter } = recorder((o) => ok(o));
    const r = await warmOne(script, { snapshotter, store, env });
    expect(calls[0]?.argv).toEqual(['/bin/sh']);
    expect(r.resolved).toBe('/bin/sh');
    expect(r.notes?.[0]).toMatch(/#! script/);
    expect(r.key).toBe(keyHash(keyFromStat('/bin/sh', fs.statSync('/bin/sh', { bigint: true }), env)));
  });

  it('a program that is not found is a CxError with status 127 and no snapshot', async () => {
    const store = tmpStore();
    const { calls, snapshotter } = recorder((o) => ok(o));
    const e = await warmOne('cx-no-such-program', { snapshotter, store, env }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CxError);
    expect((e as CxError).exitCode).toBe(127);
    expect(calls).toHaveLength(0);
  });

  it('keeps the cache within its bounds after each write, evicting least recently used first', async () => {
    const store = tmpStore();
    store.ensure();
    writeConfig(store.dir, { maxSize: 0, maxEntries: 2 });
    const { snapshotter } = recorder((o) => ok(o));
    const keys: string[] = [];
    for (const p of ['true', 'false', 'cat']) {
      keys.push((await warmOne(p, { snapshotter, store, env })).key as string);
      await new Promise((r) => setTimeout(r, 20)); // distinct write times
    }
    expect(store.listImages().map((i) => i.hash).sort()).toEqual([keys[1], keys[2]].sort());
    expect(summarize(foldStats(store).counters).evictions).toBe(1);
  });
});

describe('background warmer', () => {
  it('drains the queue the launcher filled, holding the warmer lock, and drops stale entries', async () => {
    const store = tmpStore();
    store.ensure('queue');
    const trueKey = keyHash(keyFromStat('/usr/bin/true', fs.statSync('/usr/bin/true', { bigint: true }), env));
    const catKey = keyHash(keyFromStat('/usr/bin/cat', fs.statSync('/usr/bin/cat', { bigint: true }), env));
    fs.writeFileSync(path.join(store.sub('queue'), trueKey), `/usr/bin/true\n${env.PATH}\n`);
    fs.writeFileSync(path.join(store.sub('queue'), catKey), `/usr/bin/cat\n${env.PATH}\n`);
    fs.writeFileSync(path.join(store.sub('queue'), '0123456789abcdef'), `/usr/bin/true\n/changed/path\n`);
    const lockHeld: boolean[] = [];
    const { calls, snapshotter } = recorder((o) => {
      lockHeld.push(spawnSync('flock', ['-n', warmerLockPath(store), 'true']).status !== 0);
      return ok(o);
    });
    const results = await drain(store, env, snapshotter);
    expect(calls.map((c) => c.exePath).sort()).toEqual(['/usr/bin/cat', '/usr/bin/true']);
    expect(lockHeld).toEqual([true, true]);
    expect(results.find((r) => r.queued === '0123456789abcdef')).toMatchObject({ ok: false, reason: 'changed' });
    expect(store.listQueue()).toEqual([]);
    expect(store.listImages().map((i) => i.hash).sort()).toEqual([catKey, trueKey].sort());
    // Released afterwards: the launcher may start the next warmer.
    expect(spawnSync('flock', ['-n', warmerLockPath(store), 'true']).status).toBe(0);
  });

  it('leaves the queue alone while another warmer holds the lock', async () => {
    const store = tmpStore();
    store.ensure('queue');
    const key = keyHash(keyFromStat('/usr/bin/true', fs.statSync('/usr/bin/true', { bigint: true }), env));
    fs.writeFileSync(path.join(store.sub('queue'), key), `/usr/bin/true\n${env.PATH}\n`);
    fs.closeSync(fs.openSync(warmerLockPath(store), 'a'));
    expect(spawnSync('flock', ['-n', warmerLockPath(store), 'true']).status).toBe(0); // sanity: flock(1) works here
    const { calls, snapshotter } = recorder((o) => ok(o));
    // Hold the lock from another process for the duration of the drain.
    const child = spawn('flock', ['-n', warmerLockPath(store), 'sleep', '5'], { stdio: 'ignore', detached: true });
    await new Promise((r) => setTimeout(r, 200));
    const results = await drain(store, env, snapshotter);
    process.kill(-(child.pid as number), 'SIGKILL'); // flock and its sleep
    expect(results).toEqual([]);
    expect(calls).toHaveLength(0);
    expect(store.listQueue()).toHaveLength(1);
  });

  it('a re-take (rotate) replaces a valid image; a plain entry keeps one another process just wrote', async () => {
    const store = tmpStore();
    const first = await warmOne('true', { snapshotter: recorder((o) => ok(o)).snapshotter, store, env });
    store.ensure('queue');
    fs.writeFileSync(path.join(store.sub('queue'), first.key as string), `/usr/bin/true\n${env.PATH}\n`);
    let r = recorder((o) => ok(o, 2));
    expect((await drain(store, env, r.snapshotter))[0]).toMatchObject({ ok: true, skipped: true });
    expect(r.calls).toHaveLength(0);
    fs.writeFileSync(path.join(store.sub('queue'), first.key as string), `/usr/bin/true\n${env.PATH}\nrotate\n`);
    r = recorder((o) => ok(o, 2));
    expect((await drain(store, env, r.snapshotter))[0]).toMatchObject({ ok: true });
    expect(r.calls).toHaveLength(1);
    expect(fs.statSync(first.image as string).size).toBe((first.size as number) + PAGE_SIZE);
  });
});

describe('system layer (--warm --system)', () => {
  it.runIf(process.geteuid?.() === 0)('writes root-owned images every user can read, keyed for uid 0, whatever the umask', async () => {
    const dir = path.join(path.dirname(tmpStore().dir), 'system');
    const store = new Store(dir, 0, { shared: true });
    const old = process.umask(0o077);
    try {
      const r = await warmOne('true', { snapshotter: recorder((o) => ok(o)).snapshotter, store, env });
      expect(fs.statSync(r.image as string).mode & 0o777).toBe(0o644);
      expect(fs.statSync(dir).mode & 0o777).toBe(0o755);
      expect(fs.statSync(store.sub('images')).mode & 0o777).toBe(0o755);
      expect(r.key).toBe(keyHash(keyFromStat('/usr/bin/true', fs.statSync('/usr/bin/true', { bigint: true }), env, 0, 0n)));
    } finally {
      process.umask(old);
    }
  });

  it('needs CACHED_EXEC_SYSTEM_DIR and does not apply to every command', () => {
    const main = path.resolve(import.meta.dirname, '../../dist/cli/main.js');
    const r = spawnSync(process.execPath, [main, '--warm', '--system', 'true'], { env, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/CACHED_EXEC_SYSTEM_DIR/);
    expect(spawnSync(process.execPath, [main, '--show-stats', '--system'], { env }).status).toBe(2);
  });
});

describe('images for other environments (variants)', () => {
  /** A snapshot whose constructors looked up CX_MODE: the image depends on it, and keeps its value for a re-take. */
  const keyedOnMode = (o: SnapshotOptions): SnapshotOutcome => {
    const res = ok(o);
    if (res.ok) {
      res.image.envDeps = [dependency('CX_MODE', o.env)];
      res.image.snapshotEnv = o.env.CX_MODE === undefined ? [] : [`CX_MODE=${o.env.CX_MODE}`];
    }
    return res;
  };
  const withMode = (mode: string): Record<string, string> => ({ ...env, CX_MODE: mode });
  const trueKey = (): ReturnType<typeof keyFromStat> => keyFromStat('/usr/bin/true', fs.statSync('/usr/bin/true', { bigint: true }), env);

  it('the first image of a key is its primary; one for another value of a variable it depends on is a variant beside it', async () => {
    const store = tmpStore();
    const { snapshotter } = recorder(keyedOnMode);
    const a = await warmOne('true', { snapshotter, store, env: withMode('a') });
    expect(a).toMatchObject({ ok: true, key: keyHash(trueKey()) });
    expect(a.variant).toBeUndefined();
    const b = await warmOne('true', { snapshotter, store, env: withMode('b') });
    expect(b.ok).toBe(true);
    expect(b.variant).toBe(true);
    const selector = variantSelector({}, [dependency('CX_MODE', withMode('a'))], withMode('b'));
    expect(b.key).toBe(keyHash({ ...trueKey(), variant: selector }));
    expect(parseImage(fs.readFileSync(b.image as string)).model.key.variant).toBe(selector);
    // Each environment is served by its own image; a third by none yet.
    expect(servingImage(store, trueKey(), withMode('a'))).toBe(a.image);
    expect(servingImage(store, trueKey(), withMode('b'))).toBe(b.image);
    expect(servingImage(store, trueKey(), withMode('c'))).toBeNull();
    expect(store.variants(a.key as string)).toEqual([b.key]);
    // --cleanup keeps both (a variant's file name is its key, selector included).
    expect(staleReason(store, { ...store.listImages().find((i) => i.hash === b.key) } as ImageEntry)).toBeNull();
  });

  it('keeps at most MAX_VARIANTS variants per key, dropping the least recently used', async () => {
    const store = tmpStore();
    const { snapshotter } = recorder(keyedOnMode);
    await warmOne('true', { snapshotter, store, env: withMode('primary') });
    const keys: string[] = [];
    for (let i = 0; i < MAX_VARIANTS + 3; i++) {
      const r = await warmOne('true', { snapshotter, store, env: withMode(`v${i}`) });
      expect(r.variant).toBe(true);
      keys.push(r.key as string);
    }
    const primary = keyHash(trueKey());
    const left = store.variants(primary);
    expect(left).toHaveLength(MAX_VARIANTS);
    expect(left).toEqual(keys.slice(-MAX_VARIANTS));
    const onDisk = store.listImages().map((i) => i.hash);
    expect(onDisk).toHaveLength(MAX_VARIANTS + 1);
    for (const gone of keys.slice(0, 3)) expect(onDisk).not.toContain(gone);
  });

  it('the warmer snapshots in the environment a queue entry carries, and places the image for it', async () => {
    const store = tmpStore();
    const r = recorder(keyedOnMode);
    await warmOne('true', { snapshotter: r.snapshotter, store, env: withMode('a') });
    const primary = keyHash(trueKey());
    expect(store.queue(primary, { exePath: '/usr/bin/true', pathEnv: env.PATH, retake: true, env: Object.entries(withMode('x\ny')).map(([k, v]) => `${k}=${v}`) })).toBe(true);
    expect(store.queue(primary, { exePath: '/usr/bin/true', pathEnv: env.PATH })).toBe(false); // the first request stands
    const before = Date.now();
    const res = await drain(store, withMode('warmer-own'), r.snapshotter);
    expect(res[0]).toMatchObject({ ok: true, variant: true });
    expect(r.calls.at(-1)?.env.CX_MODE).toBe('x\ny');
    expect(servingImage(store, trueKey(), withMode('x\ny'))).toBe(res[0]?.image);
    // A re-take moves the key's record: the launcher's rate limit reads its mtime.
    expect(fs.statSync(path.join(store.sub('retake'), primary)).mtimeMs).toBeGreaterThanOrEqual(before - 1000);
    // The same environment again is served already: nothing is taken.
    store.queue(primary, { exePath: '/usr/bin/true', pathEnv: env.PATH, env: [`CX_MODE=x\ny`, `PATH=${env.PATH}`] });
    const again = await drain(store, env, r.snapshotter);
    expect(again[0]).toMatchObject({ ok: true, skipped: true });
  });
});

describe('--cleanup and what re-takes leave behind', () => {
  it('removes a killed queue writer\'s temp file after an hour, and the re-take record of a key with no image left after a day', () => {
    const store = tmpStore();
    store.ensure('queue', 'retake');
    const temp = path.join(store.sub('queue'), '.0123456789abcdef.00000000000004d2.tmp');
    fs.writeFileSync(temp, 'half an entry');
    store.setVariants('0123456789abcdef', ['fedcba9876543210'], true);
    const now = Date.now();
    const soon = cleanup(store, { now: now + 60_000 });
    expect(soon.tempRemoved).not.toContain(temp);
    expect(store.listRetake().map((r) => r.hash)).toEqual(['0123456789abcdef']);
    const later = cleanup(store, { now: now + 25 * 3600_000 });
    expect(later.tempRemoved).toContain(temp);
    expect(fs.existsSync(temp)).toBe(false);
    expect(store.listRetake()).toEqual([]);
  });
});
