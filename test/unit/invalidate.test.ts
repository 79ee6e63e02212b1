/**
 * The dependency index and the invalidation watcher, in-process, on real
 * files and real directory events: small valid images (written with the
 * image format's own serializer) that depend on files in temp directories.
 * The launcher and the snapshotter are not involved (test/e2e/invalidate*
 * covers them end to end).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { keyFor, keyHash } from '../../src/cache/key.js';
import { Store } from '../../src/cache/store.js';
import { PAGE_SIZE, serializeImage, type ImageFile, type ImageModel } from '../../src/image/format.js';
import { FileFlag, FileKind, Prot, Src, VdsoKind } from '../../src/image/schema.js';
import { DepIndex, canonical, imageDeps, nearestExistingDir } from '../../src/invalidate/deps.js';
import { InvalidationWatcher, type WatchOptions } from '../../src/invalidate/watcher.js';

const temps: string[] = [];
function tmp(): string {
  const d = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'cx-inv-')));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

function fileRec(p: string, kind: number, flags = 0): ImageFile {
  if (kind === FileKind.ABSENT) {
    return { path: p, kind, dev: 0n, ino: 0n, size: 0n, mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0, mode: 0, flags };
  }
  const st = fs.statSync(p, { bigint: true });
  return {
    path: p, kind, dev: st.dev, ino: st.ino, size: st.size,
    mtimeSec: st.mtimeNs / 1_000_000_000n, mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
    ctimeSec: st.ctimeNs / 1_000_000_000n, ctimeNsec: Number(st.ctimeNs % 1_000_000_000n),
    mode: Number(st.mode), flags,
  };
}

/** A valid image of `program` (keyed with `pathEnv`) that depends on `deps`. */
function writeImage(store: Store, program: string, pathEnv: string, deps: { path: string; kind: number }[], envHash?: bigint,
  extra: Partial<Pick<ImageModel, 'snapshotEnv' | 'envDeps'>> & { initSpec?: string } = {}): string {
  const key = { ...keyFor(program, { PATH: pathEnv }), ...(envHash ? { envHash } : {}), ...(extra.initSpec ? { initSpec: extra.initSpec } : {}) };
  const model: ImageModel = {
    ...(extra.snapshotEnv ? { snapshotEnv: extra.snapshotEnv } : {}),
    ...(extra.envDeps ? { envDeps: extra.envDeps } : {}),
    createdNs: BigInt(Date.now()) * 1_000_000n,
    key,
    files: [fileRec(program, FileKind.MAPPED, FileFlag.EXE), ...deps.map((d) => fileRec(d.path, d.kind))],
    regions: [
      { addr: 0x10000000n, len: 0x1000n, prot: Prot.READ, source: Src.FILE, file: 0, offset: 0n, flags: 0 },
      { addr: 0x10001000n, len: BigInt(PAGE_SIZE), prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: 0, data: Buffer.alloc(PAGE_SIZE, 1) },
    ],
    slots: [],
    state: {
      entry: 0x10000040n, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0,
      rseqSig: 0, startCode: 0n, endCode: 0n, startData: 0n, endData: 0n, startBrk: 0n, brk: 0n, vdsoBase: 0x7fff10000000n,
      atPhdr: 0n, atPhnum: 0n, atEntry: 0n, atBase: 0n, flags: 0, comm: path.basename(program),
    },
    vdso: [{ offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO }],
  };
  store.writeImage(key, serializeImage(model));
  return keyHash(key);
}

/** Replaces a file the way a package manager does: a new inode renamed over it. */
function replace(p: string, content: string): void {
  const t = `${path.dirname(p)}/.new-${path.basename(p)}`;
  fs.writeFileSync(t, content, { mode: 0o755 });
  fs.renameSync(t, p);
}

const exists = (store: Store, hash: string): boolean => fs.existsSync(store.imagePathForHash(hash));
const events = (store: Store): { e: string; key?: string; reason?: string }[] => {
  const p = path.join(store.sub('stats'), 'events.log');
  return fs.existsSync(p) ? fs.readFileSync(p, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
};

async function until(pred: () => boolean, ms = 4000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return pred();
}

/** A program, a library dir, an empty "first" rpath dir, a PATH dir; a store. */
function world(): { root: string; store: Store; prog: string; lib: string; bin: string; db: string } {
  const root = tmp();
  for (const d of ['bin', 'lib', 'first', 'db']) fs.mkdirSync(path.join(root, d));
  const prog = path.join(root, 'bin', 'prog');
  fs.writeFileSync(prog, 'program v1', { mode: 0o755 });
  const lib = path.join(root, 'lib', 'libval.so');
  fs.writeFileSync(lib, 'library v1');
  fs.writeFileSync(path.join(root, 'db', 'status'), 'Package: x\n');
  return { root, store: new Store(path.join(root, 'cache')), prog, lib, bin: path.join(root, 'bin'), db: path.join(root, 'db', 'status') };
}

const running: InvalidationWatcher[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((w) => w.close()));
});

async function startWatcher(store: Store, extra: Partial<WatchOptions> = {}): Promise<{ w: InvalidationWatcher; log: string[] }> {
  const log: string[] = [];
  const w = new InvalidationWatcher({
    store, rewarm: false, log: (l) => log.push(l), packageDb: [], settleMs: 30, dbSettleMs: 50, rescanMs: 0, env: {}, ...extra,
  });
  running.push(w);
  await w.start();
  return { w, log };
}

describe('dependency index', () => {
  it('indexes files under canonical names and symlink targets, probed paths with the directories above them', () => {
    const { root, store, prog, lib } = world();
    fs.symlinkSync(path.join(root, 'lib'), path.join(root, 'liblink')); // like /lib -> usr/lib
    fs.symlinkSync('libval.so', path.join(root, 'lib', 'libval.so.1')); // like libfoo.so.1 -> libfoo.so.1.2.3
    const probed = path.join(root, 'first', 'hwcaps', 'v3', 'libval.so.1');
    const h = writeImage(store, prog, `${root}/bin:relative`, [
      { path: path.join(root, 'liblink', 'libval.so.1'), kind: FileKind.MAPPED },
      { path: probed, kind: FileKind.ABSENT },
    ]);
    const d = imageDeps(store.imagePathForHash(h), h);
    expect(d).not.toBeNull();
    const idx = new DepIndex();
    expect(idx.add(d!)).toBe(true);
    // Through the symlinked directory, under its name and under its target.
    expect([...idx.affected(path.join(root, 'lib', 'libval.so.1')).depends]).toEqual([h]);
    expect([...idx.affected(lib).depends]).toEqual([h]);
    expect(idx.affected(path.join(root, 'lib', 'other.so')).depends.size).toBe(0);
    // The probed path, and each missing directory on the way to it.
    for (const p of [probed, path.join(root, 'first', 'hwcaps', 'v3'), path.join(root, 'first', 'hwcaps')]) {
      expect([...idx.affected(p).depends]).toEqual([h]);
    }
    const dirs = [...idx.directories().keys()];
    expect(dirs).toEqual(expect.arrayContaining([path.join(root, 'bin'), path.join(root, 'lib'), path.join(root, 'first', 'hwcaps', 'v3')]));
    expect(dirs).not.toContain(path.join(root, 'liblink'));
    expect(nearestExistingDir(path.join(root, 'first', 'hwcaps', 'v3'))).toBe(path.join(root, 'first'));
    // A file named like the program in a PATH directory may shadow it; elsewhere it may not.
    expect([...idx.affected(path.join(root, 'bin', 'prog')).shadowed]).toEqual([h]);
    expect(idx.affected(path.join(root, 'lib', 'prog')).shadowed.size).toBe(0);
    idx.remove(h);
    expect(idx.size).toBe(0);
    expect(idx.directories().size).toBe(0);
    expect(idx.affected(lib).depends.size).toBe(0);
  });

  it('canonical() resolves directories that exist and keeps the rest as given', () => {
    const root = tmp();
    fs.mkdirSync(path.join(root, 'real'));
    fs.symlinkSync(path.join(root, 'real'), path.join(root, 'link'));
    expect(canonical(path.join(root, 'link', 'missing', 'f'))).toBe(path.join(root, 'real', 'missing', 'f'));
    expect(canonical(path.join(root, 'link'))).toBe(path.join(root, 'link')); // the last component is a name
  });

  it('does not index a program named by a relative path (its files are relative to a cwd it cannot know)', () => {
    const idx = new DepIndex();
    expect(idx.add({ hash: '0123456789abcdef', program: './prog', pathEnv: '/bin', files: ['./prog'], absent: [] })).toBe(false);
    expect(idx.size).toBe(0);
  });
});

describe('invalidation watcher', () => {
  it('costs one watch per directory, not per file', async () => {
    const { root, store, prog, lib } = world();
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(root, 'lib', `other${i}.so`), '');
    writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    const { w } = await startWatcher(store);
    expect(w.directories().sort()).toEqual([path.join(root, 'bin'), path.join(root, 'lib'), fs.realpathSync(store.sub('images'))].sort());
  });

  it('removes an image when a library is replaced (rename) or rewritten in place, and counts it', async () => {
    const { store, prog, lib, root } = world();
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    const { w, log } = await startWatcher(store);
    expect(exists(store, h)).toBe(true);
    replace(lib, 'library v2');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(log.join('\n')).toMatch(/invalidated .*prog.*stale-file/);
    expect(events(store)).toContainEqual(expect.objectContaining({ e: 'invalidated', key: h, reason: 'stale-file' }));
    expect(w.invalidated).toBe(1);

    const h2 = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.READ }]);
    expect(h2).toBe(h);
    await new Promise((r) => setTimeout(r, 150)); // the watcher reads the new image
    fs.appendFileSync(lib, ' patched'); // same inode, new size and mtime
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(w.invalidated).toBe(2);
  });

  it('keeps an image when an event in its directory changes nothing it depends on', async () => {
    const { store, prog, lib, root } = world();
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    const { w } = await startWatcher(store);
    fs.writeFileSync(path.join(root, 'lib', 'unrelated.so'), 'x');
    fs.writeFileSync(path.join(root, 'bin', 'other-program'), 'x');
    await new Promise((r) => setTimeout(r, 200));
    expect(exists(store, h)).toBe(true);
    expect(w.invalidated).toBe(0);
  });

  it('sees a library appear on a probed path, also below directories that did not exist', async () => {
    const { store, prog, lib, root } = world();
    const near = path.join(root, 'first', 'libval.so');
    const deep = path.join(root, 'first', 'hwcaps', 'v3', 'libval.so');
    const h = writeImage(store, prog, `${root}/bin`, [
      { path: deep, kind: FileKind.ABSENT }, { path: near, kind: FileKind.ABSENT }, { path: lib, kind: FileKind.MAPPED },
    ]);
    const { w, log } = await startWatcher(store);
    // The directories first, then (after the watcher has seen them) the file: two separate steps.
    fs.mkdirSync(path.join(root, 'first', 'hwcaps', 'v3'), { recursive: true });
    await new Promise((r) => setTimeout(r, 300));
    expect(exists(store, h)).toBe(true); // a directory alone changes nothing
    expect(w.directories()).toContain(path.join(root, 'first', 'hwcaps', 'v3'));
    fs.writeFileSync(deep, 'library v9');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(log.join('\n')).toMatch(/negative-dep/);

    // The nearer probed path, created in one go with nothing else.
    const h2 = writeImage(store, prog, `${root}/bin`, [{ path: near, kind: FileKind.ABSENT }]);
    await new Promise((r) => setTimeout(r, 150));
    fs.writeFileSync(near, 'library v8');
    expect(await until(() => !exists(store, h2)), log.join('\n')).toBe(true);
  });

  it('picks up images written while it runs, and forgets removed ones', async () => {
    const { store, prog, lib, root } = world();
    const { w, log } = await startWatcher(store);
    expect(w.idx.size).toBe(0);
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    expect(await until(() => w.idx.size === 1 && w.directories().includes(path.join(root, 'lib')))).toBe(true);
    replace(lib, 'library v2');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    const h2 = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    expect(await until(() => w.idx.size === 1)).toBe(true);
    fs.rmSync(store.imagePathForHash(h2));
    expect(await until(() => w.idx.size === 0 && !w.directories().includes(path.join(root, 'lib')))).toBe(true);
  });

  it('checks a newly written image at once (a snapshot may have raced a change it did not see)', async () => {
    const { store, prog, lib, root } = world();
    const { log } = await startWatcher(store);
    // An image whose library changed between the snapshot and the write.
    const key = keyFor(prog, { PATH: `${root}/bin` });
    const stale = path.join(root, 'stale.img');
    const s2 = new Store(path.join(root, 'other-cache'));
    const h = writeImage(s2, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    fs.copyFileSync(s2.imagePathForHash(h), stale);
    replace(lib, 'library v2');
    fs.renameSync(stale, store.imagePath(key));
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
  });

  it('removes images that went stale while it was not running, at start', async () => {
    const { store, prog, lib, root } = world();
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    replace(lib, 'library v2');
    const { w } = await startWatcher(store);
    expect(exists(store, h)).toBe(false);
    expect(w.invalidated).toBe(1);
  });

  it('survives a directory that vanishes, and sees the files of the one that comes back', async () => {
    const { store, prog, lib, root } = world();
    const h = writeImage(store, prog, `${root}/bin`, [
      { path: lib, kind: FileKind.MAPPED }, { path: path.join(root, 'first', 'libval.so'), kind: FileKind.ABSENT },
    ]);
    const { w, log } = await startWatcher(store);
    fs.rmSync(path.join(root, 'first'), { recursive: true });
    expect(await until(() => w.directories().includes(root) && !w.directories().includes(path.join(root, 'first')))).toBe(true);
    expect(exists(store, h)).toBe(true); // a probed path that is still missing: the image stays
    fs.mkdirSync(path.join(root, 'first'));
    fs.writeFileSync(path.join(root, 'first', 'libval.so'), 'library v3'); // right away, racing the new watch
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(log.join('\n')).toMatch(/negative-dep/);
  });

  it('watches a directory removed and made again under the same name (a new inode), not the dead one', async () => {
    const { store, prog, lib, root } = world();
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    // Another image keeps the directory watched all along (it is on its PATH).
    const other = writeImage(store, prog, `${root}/lib:${root}/bin`, []);
    const { log, w } = await startWatcher(store);
    fs.rmSync(path.join(root, 'lib'), { recursive: true });
    fs.mkdirSync(path.join(root, 'lib'));
    fs.writeFileSync(lib, 'library v1'); // same content, another file
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    // The new directory is watched: a later change in it is seen too.
    const h2 = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    expect(h2).toBe(h);
    await new Promise((r) => setTimeout(r, 150));
    replace(lib, 'library v2');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(exists(store, other)).toBe(true);
    expect(w.directories()).toContain(path.join(root, 'lib'));
  });

  it('re-checks every image when the package database changes', async () => {
    const { store, prog, lib, root, db } = world();
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    const { w } = await startWatcher(store, { packageDb: [db] });
    // Make the library's change invisible to the watcher: stop watching its directory.
    const roots = (w as unknown as { roots: Map<string, { w: fs.FSWatcher | null }> }).roots;
    roots.get(path.join(root, 'lib'))?.w?.close();
    replace(lib, 'library v2');
    await new Promise((r) => setTimeout(r, 200));
    expect(exists(store, h)).toBe(true);
    replace(db, 'Package: x\nVersion: 2\n');
    expect(await until(() => !exists(store, h))).toBe(true);
  });

  it('removes an image whose program a new file earlier on PATH shadows, not one run by its path', async () => {
    const { store, prog, lib, root } = world();
    const early = path.join(root, 'early');
    fs.mkdirSync(early);
    const onPath = writeImage(store, prog, `${early}:${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    const byPath = writeImage(store, prog, early, [{ path: lib, kind: FileKind.MAPPED }]); // prog's dir is not on PATH
    const { log } = await startWatcher(store);
    fs.writeFileSync(path.join(early, 'prog'), '#!/bin/sh\n', { mode: 0o755 });
    expect(await until(() => !exists(store, onPath)), log.join('\n')).toBe(true);
    expect(log.join('\n')).toMatch(/shadowed/);
    await new Promise((r) => setTimeout(r, 150));
    expect(exists(store, byPath)).toBe(true);
  });

  it('with --rewarm, queues the programs it removed once changes settle, and starts one warmer', async () => {
    const { store, prog, lib, root } = world();
    writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }]);
    let started = 0;
    const { log } = await startWatcher(store, { rewarm: true, rewarmDelayMs: 200, startWarmer: () => { started++; } });
    replace(lib, 'library v2');
    await new Promise((r) => setTimeout(r, 100));
    replace(prog, 'program v2'); // the upgrade goes on: the program itself changes too
    expect(await until(() => started === 1), log.join('\n')).toBe(true);
    const q = store.listQueue();
    expect(q).toHaveLength(1);
    expect(q[0]).toMatchObject({ hash: keyHash(keyFor(prog, { PATH: `${root}/bin` })), exePath: prog, pathEnv: `${root}/bin` });
    await new Promise((r) => setTimeout(r, 300));
    expect(started).toBe(1);
  });

  it('with --rewarm, re-takes an image bound to the environment in the environment it was taken in (not this daemon\'s)', async () => {
    const { store, prog, lib, root } = world();
    const userEnv = [`PATH=${root}/bin`, 'LANG=xx_YY.UTF-8', 'P11_KIT_STRICT=1'];
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }], 0x1234n, { snapshotEnv: userEnv });
    let started = 0;
    const { log } = await startWatcher(store, { rewarm: true, rewarmDelayMs: 50, startWarmer: () => { started++; } });
    replace(lib, 'library v2');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(await until(() => started === 1), log.join('\n')).toBe(true);
    const q = store.listQueue();
    expect(q).toHaveLength(1);
    expect(q[0]).toMatchObject({ hash: keyHash(keyFor(prog, { PATH: `${root}/bin` })), exePath: prog, env: userEnv });
  });

  it('with --rewarm, re-takes a post-init image with its init spec', async () => {
    const { store, prog, lib, root } = world();
    const initSpec = 'after-init\x1f/some/adapter';
    const h = writeImage(store, prog, `${root}/bin`, [{ path: lib, kind: FileKind.MAPPED }], 0x99n, { initSpec, snapshotEnv: [`PATH=${root}/bin`] });
    let started = 0;
    const { log } = await startWatcher(store, { rewarm: true, rewarmDelayMs: 50, startWarmer: () => { started++; } });
    replace(lib, 'library v2');
    expect(await until(() => !exists(store, h)), log.join('\n')).toBe(true);
    expect(await until(() => started === 1), log.join('\n')).toBe(true);
    expect(store.listQueue()[0]).toMatchObject({ hash: keyHash({ ...keyFor(prog, { PATH: `${root}/bin` }), initSpec }), initSpec });
  });
});
