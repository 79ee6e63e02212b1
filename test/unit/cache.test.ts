/**
 * The cache modules in-process: store, locks, sizes, LRU planning, statistics
 * folding, and the TypeScript mirror of the restorer's checks — the last two
 * checked against the real native launcher (its key, its image checks, its
 * resolution), not only against themselves.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkImage, maxAgeFromEnv, outcomeCode, outcomeName } from '../../src/cache/check.js';
import { DEFAULT_CONFIG, parseCount, parseSize, readConfig, writeConfig } from '../../src/cache/config.js';
import { keyFromStat, keyHash, launcherCacheDir } from '../../src/cache/key.js';
import { lockIsStale, tryLock, withLock } from '../../src/cache/lock.js';
import { planEviction, type AgedImage } from '../../src/cache/maintain.js';
import { RECORD_SIZE, appendEvent, decodeRunRecords, foldStats, summarize, zeroStats } from '../../src/cache/stats.js';
import { Store, readImageMeta } from '../../src/cache/store.js';
import { CxError } from '../../src/common/errors.js';
import { resolveProgram } from '../../src/common/resolve.js';
import { encodeStruct, decodeStruct } from '../../src/image/codec.js';
import { PAGE_SIZE, serializeImage, type ImageKey, type ImageModel } from '../../src/image/format.js';
import {
  FileKind, HEADER, Outcome, Prot, STAT_RECORD, Src, StateFlag, VdsoKind, hash64, layout,
} from '../../src/image/schema.js';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const isRoot = process.geteuid?.() === 0;
const euid = process.geteuid?.() ?? 0;
const temps: string[] = [];

function tmp(prefix = 'cx-cache-unit-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(d);
  return d;
}

afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

/** A structurally valid image for `key` whose only file dependency is `deps`. */
function imageFor(key: ImageKey, files: ImageModel['files'] = [], createdNs = BigInt(Date.now()) * 1_000_000n): ImageModel {
  return {
    createdNs,
    key,
    files,
    regions: [
      { addr: 0x10000000n, len: 0x1000n, prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: 0, data: Buffer.alloc(PAGE_SIZE, 1) },
      { addr: 0x10001000n, len: 0x1000n, prot: Prot.READ, source: Src.ZERO, file: 0, offset: 0n, flags: 0 },
    ],
    slots: [],
    state: {
      entry: 0x10000000n, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0,
      rseqSig: 0, startCode: 0n, endCode: 0n, startData: 0n, endData: 0n, startBrk: 0n, brk: 0n, vdsoBase: 0x7fff00000000n,
      atPhdr: 0n, atPhnum: 0n, atEntry: 0n, atBase: 0n, flags: StateFlag.HAVE_FS_BASE, comm: 'x',
    },
    vdso: [{ offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO }],
  };
}

function fileDep(p: string, kind: number): ImageModel['files'][number] {
  const st = fs.statSync(p, { bigint: true });
  return {
    path: p, kind, dev: st.dev, ino: st.ino, size: st.size, mtimeSec: st.mtimeNs / 1_000_000_000n,
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n), ctimeSec: st.ctimeNs / 1_000_000_000n,
    ctimeNsec: Number(st.ctimeNs % 1_000_000_000n), mode: Number(st.mode), flags: 0,
  };
}

function rehash(buf: Buffer): void {
  const h = decodeStruct(HEADER, buf, 0);
  const off = layout(HEADER).fields.find((f) => f.name === 'checksum')?.offset as number;
  buf.writeBigUInt64LE(0n, off);
  buf.writeBigUInt64LE(hash64(buf.subarray(0, Number(h.meta_size))), off);
}

function launcherKey(prog: string, env: Record<string, string>): { status: number | null; hash?: string; image?: string } {
  const r = spawnSync(launcher, ['--internal-key', prog], { env, encoding: 'utf8' });
  const m = /^([0-9a-f]{16}) (.+)$/m.exec(r.stdout);
  return m ? { status: r.status, hash: m[1], image: m[2] } : { status: r.status };
}

// ---------------------------------------------------------------------------

describe('store', () => {
  it('creates the cache directory 0700 with its subdirectories', () => {
    const dir = path.join(tmp(), 'a', 'b', 'cache');
    const s = new Store(dir);
    expect(s.state()).toEqual({ dir, exists: false, problem: null });
    s.ensure('images', 'stats');
    for (const d of [dir, s.sub('images'), s.sub('stats')]) expect(fs.statSync(d).mode & 0o777).toBe(0o700);
    expect(s.state().problem).toBeNull();
  });

  it('tightens a loose directory of ours and refuses one that is not ours', () => {
    const dir = path.join(tmp(), 'loose');
    fs.mkdirSync(dir, { mode: 0o777 });
    fs.chmodSync(dir, 0o777);
    const s = new Store(dir);
    expect(s.state().problem).toMatch(/writable by group or others/);
    s.ensure();
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    const other = new Store(dir, euid + 1);
    expect(() => other.ensure()).toThrow(CxError);
    try {
      other.ensure();
    } catch (e) {
      expect((e as CxError).code).toBe('cache-dir');
      expect((e as CxError).path).toBe(dir);
    }
    const file = path.join(tmp(), 'file');
    fs.writeFileSync(file, '');
    expect(() => new Store(file).ensure()).toThrow(/not a directory/);
  });

  it('writes images atomically, 0600, under their key hash, and lists them', () => {
    const s = new Store(path.join(tmp(), 'c'));
    const key = keyFromStat('/bin/sh', fs.statSync('/bin/sh', { bigint: true }), { PATH: '/usr/bin' });
    const data = serializeImage(imageFor(key));
    const w = s.writeImage(key, data);
    expect(w.path).toBe(path.join(s.dir, 'images', `${keyHash(key)}.img`));
    expect(fs.statSync(w.path).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(w.path).equals(data)).toBe(true);
    expect(fs.readdirSync(s.sub('images'))).toEqual([`${keyHash(key)}.img`]); // no temp file left
    fs.writeFileSync(path.join(s.sub('images'), 'not-an-image.txt'), 'x');
    const list = s.listImages();
    expect(list.map((i) => i.hash)).toEqual([keyHash(key)]);
    expect(list[0]?.size).toBe(data.length);
    expect(readImageMeta(w.path).parsed.model.key).toEqual(key);
    expect(s.removeImage(keyHash(key))).toBe(true);
    expect(s.removeImage(keyHash(key))).toBe(false);
  });

  it('reads queue entries in the launcher\'s format and remembers refusals', () => {
    const s = new Store(path.join(tmp(), 'q'));
    s.ensure('queue');
    fs.writeFileSync(path.join(s.sub('queue'), '0123456789abcdef'), '/usr/bin/sed\n/usr/bin:/bin\n');
    fs.writeFileSync(path.join(s.sub('queue'), 'fedcba9876543210'), '/usr/bin/awk\n\nrotate\n');
    fs.writeFileSync(path.join(s.sub('queue'), '.warmer.lock'), '');
    const q = s.listQueue();
    expect(q.map((e) => [e.hash, e.exePath, e.pathEnv, e.rotate]).sort()).toEqual([
      ['0123456789abcdef', '/usr/bin/sed', '/usr/bin:/bin', false],
      ['fedcba9876543210', '/usr/bin/awk', '', true],
    ]);
    s.markRefused('0123456789abcdef', 'threads', 'two threads\nat entry');
    expect(s.refused('0123456789abcdef')).toMatchObject({ reason: 'threads', detail: 'two threads at entry' });
    expect(s.listRefused()).toHaveLength(1);
    s.clearRefused('0123456789abcdef');
    expect(s.refused('0123456789abcdef')).toBeNull();
  });

  it('readImageMeta rejects garbage with a bad-image error', () => {
    const f = path.join(tmp(), 'garbage.img');
    fs.writeFileSync(f, Buffer.alloc(200, 7));
    expect(() => readImageMeta(f)).toThrow(/magic/);
    fs.writeFileSync(f, 'short');
    expect(() => readImageMeta(f)).toThrow(/too short/);
  });
});

describe('locks', () => {
  it('excludes a second holder and is released', () => {
    const f = path.join(tmp(), 'x.lock');
    const a = tryLock(f, { timeoutMs: 0 });
    expect(a).not.toBeNull();
    expect(tryLock(f, { timeoutMs: 0 })).toBeNull();
    expect(() => withLock(f, () => 1, { timeoutMs: 0 })).toThrow(/held/);
    a?.release();
    expect(withLock(f, () => 42, { timeoutMs: 0 })).toBe(42);
    expect(fs.existsSync(f)).toBe(false);
  });

  it('recovers the lock of a process that died (SIGKILLed snapshotter)', () => {
    const f = path.join(tmp(), 'dead.lock');
    // A pid that surely is not running: a child that has exited.
    const dead = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
    fs.writeFileSync(f, `${dead.stdout.trim()} ${Date.now()}\n`);
    expect(lockIsStale(f)).toBe(true);
    const l = tryLock(f, { timeoutMs: 0 });
    expect(l).not.toBeNull();
    expect(fs.readFileSync(f, 'utf8')).toMatch(new RegExp(`^${process.pid} `));
    l?.release();
  });

  it('treats a very old lock as stale even when its pid exists (pid reuse)', () => {
    const f = path.join(tmp(), 'old.lock');
    fs.writeFileSync(f, `${process.pid} ${Date.now() - 3_600_000}\n`);
    expect(lockIsStale(f, 60_000)).toBe(true);
    expect(lockIsStale(f, 7_200_000)).toBe(false);
  });
});

describe('config and sizes', () => {
  it('parses ccache-style sizes', () => {
    expect(parseSize('0')).toBe(0);
    expect(parseSize('2')).toBe(2e9);
    expect(parseSize('500M')).toBe(500e6);
    expect(parseSize('500MB')).toBe(500e6);
    expect(parseSize('1.5GiB')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('64Ki')).toBe(65536);
    expect(parseSize('10k')).toBe(10_000);
    expect(parseSize('4096B')).toBe(4096);
    for (const bad of ['', 'lots', '-1G', '1X', '1 G G']) expect(() => parseSize(bad), bad).toThrow(CxError);
    expect(parseCount('12')).toBe(12);
    expect(() => parseCount('1.5')).toThrow(/count/);
  });

  it('reads defaults, then what was written', () => {
    const d = tmp();
    expect(readConfig(d)).toEqual(DEFAULT_CONFIG);
    writeConfig(d, { maxSize: 123, maxEntries: 4 });
    expect(readConfig(d)).toEqual({ maxSize: 123, maxEntries: 4 });
    fs.writeFileSync(path.join(d, 'config.json'), '{"maxSize": "big"}');
    expect(readConfig(d)).toEqual(DEFAULT_CONFIG);
  });
});

describe('LRU plan', () => {
  const img = (hash: string, size: number, lastUsed: number): AgedImage =>
    ({ hash, path: `/x/${hash}.img`, size, mtimeMs: 0, uid: 0, mode: 0o100600, lastUsed, uses: 0 });

  it('evicts least recently used first until the size bound holds', () => {
    const images = [img('a', 100, 5), img('b', 100, 1), img('c', 100, 3), img('d', 100, 4)];
    const plan = planEviction(images, { maxSize: 250, maxEntries: 0 });
    expect(plan.evict.map((i) => i.hash)).toEqual(['b', 'c']);
    expect(plan.keep.map((i) => i.hash).sort()).toEqual(['a', 'd']);
    expect(plan.bytesAfter).toBe(200);
  });

  it('honours the entry bound, protects a fresh image, drops one bigger than the bound', () => {
    const images = [img('a', 10, 5), img('b', 10, 1), img('c', 10, 3), img('huge', 1000, 9)];
    expect(planEviction(images, { maxSize: 0, maxEntries: 2 }).evict.map((i) => i.hash)).toEqual(['b', 'c']);
    expect(planEviction(images, { maxSize: 0, maxEntries: 2 }, new Set(['b'])).evict.map((i) => i.hash)).toEqual(['c', 'a']);
    expect(planEviction(images, { maxSize: 100, maxEntries: 0 }).evict.map((i) => i.hash)).toEqual(['huge']);
    expect(planEviction(images, { maxSize: 0, maxEntries: 0 }).evict).toEqual([]);
  });
});

describe('statistics', () => {
  const rec = (outcome: number, key: bigint, timeMs: number, pid = 1): Buffer =>
    encodeStruct(STAT_RECORD, { magic: 0x31545343, outcome, key_hash: key, time_ns: BigInt(timeMs) * 1_000_000n, pid, reserved: 0 });

  it('decodes the launcher\'s 32-byte records, skipping damaged ones and a partial tail', () => {
    expect(RECORD_SIZE).toBe(32);
    const bad = Buffer.alloc(32, 0xee);
    const buf = Buffer.concat([rec(Outcome.HIT as number, 0xabcn, 1000), bad, rec(Outcome.MISS as number, 0n, 2000), Buffer.alloc(5)]);
    const d = decodeRunRecords(buf);
    expect(d.bad).toBe(1);
    expect(d.used).toBe(96);
    expect(d.records).toEqual([
      { outcome: 'HIT', key: '0000000000000abc', timeMs: 1000, pid: 1 },
      { outcome: 'MISS', key: '0000000000000000', timeMs: 2000, pid: 1 },
    ]);
    expect(outcomeName(9)).toBe('FAIL_CHECKSUM');
    expect(outcomeCode('FAIL_STALE_FILE')).toBe(12);
  });

  it('folds each record exactly once across folds, and zeroes', () => {
    const s = new Store(path.join(tmp(), 'st'));
    s.ensure('stats');
    const log = path.join(s.sub('stats'), 'runs.log');
    fs.appendFileSync(log, Buffer.concat([rec(0, 1n, 10), rec(0, 1n, 20), rec(1, 2n, 30)]));
    let st = foldStats(s);
    expect(summarize(st.counters)).toMatchObject({ runs: 3, hits: 2, misses: 1, bypassed: 0, fallbacks: 0 });
    expect(st.usage['0000000000000001']).toMatchObject({ uses: 2, lastUse: 20 });
    st = foldStats(s);
    expect(summarize(st.counters).runs).toBe(3); // nothing counted twice
    fs.appendFileSync(log, Buffer.concat([rec(12, 1n, 40), rec(3, 0n, 50)]));
    appendEvent(s, { e: 'snapshot', key: '0000000000000002', bytes: 10 });
    appendEvent(s, { e: 'refused', key: '0000000000000003', reason: 'threads' });
    st = foldStats(s);
    const sum = summarize(st.counters);
    expect(sum).toMatchObject({ runs: 5, hits: 2, misses: 1, bypassed: 1, fallbacks: 1 });
    expect(sum.outcomes.FAIL_STALE_FILE).toBe(1);
    expect(sum.snapshots).toEqual({ taken: 1, refused: 1, refusals: { threads: 1 } });
    expect(sum.runs).toBe(sum.hits + sum.misses + sum.bypassed + sum.fallbacks);
    // Without saving, a fold computes the same and changes nothing.
    expect(summarize(foldStats(s, { save: false }).counters).runs).toBe(5);
    zeroStats(s);
    expect(summarize(foldStats(s).counters).runs).toBe(0);
    expect(foldStats(s).usage['0000000000000001']?.uses).toBe(2); // LRU history survives
    fs.appendFileSync(log, rec(0, 1n, 60));
    expect(summarize(foldStats(s).counters).hits).toBe(1);
  });

  it('--show-stats names the trust-boundary outcomes and the new refusals in plain words', () => {
    const s = new Store(path.join(tmp(), 'words'));
    s.ensure('stats');
    const log = path.join(s.sub('stats'), 'runs.log');
    fs.appendFileSync(log, Buffer.concat([
      rec(Outcome.BYPASS_UNTRUSTED_DIR as number, 0n, 10), rec(Outcome.FAIL_EXE as number, 1n, 20),
      rec(Outcome.BYPASS_STACK_LIMIT as number, 1n, 30), rec(Outcome.FAIL_IDENTITY as number, 1n, 40),
    ]));
    for (const reason of ['too-new', 'side-effects', 'future-timestamp']) appendEvent(s, { e: 'refused', key: '0000000000000004', reason });
    const r = spawnSync(launcher, ['--show-stats'], { env: { PATH: process.env.PATH, CACHED_EXEC_DIR: s.dir }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    for (const words of [
      /cache dir not yours or unsafe \(nothing written\) +1/, /reads \/proc\/self\/exe \(no capability\) +1/,
      /stack limit too small to restore +1/, /image bound to another user's identity +1/,
      /too-new: a dependency changed just before \(retried\) +1/, /side-effects: the init changed files, sockets or processes +1/,
      /future-timestamp: a dependency dated ahead +1/,
    ]) expect(r.stdout).toMatch(words);
  });

  it('rotates a big log without losing records, and deletes it once quiet', () => {
    const s = new Store(path.join(tmp(), 'rot'));
    s.ensure('stats');
    const log = path.join(s.sub('stats'), 'runs.log');
    const n = (8 * 1024 * 1024) / 32 + 10;
    const one = rec(0, 5n, 1);
    fs.writeFileSync(log, Buffer.concat(Array.from({ length: n }, () => one)));
    expect(summarize(foldStats(s).counters).runs).toBe(n);
    const olds = fs.readdirSync(s.sub('stats')).filter((f) => f.endsWith('.old'));
    expect(olds).toHaveLength(1);
    expect(fs.existsSync(log)).toBe(false);
    // A launcher that opened the log before the rename appends to the renamed file.
    const old = path.join(s.sub('stats'), olds[0] as string);
    fs.appendFileSync(old, rec(1, 6n, 2));
    fs.appendFileSync(log, rec(1, 7n, 3));
    expect(summarize(foldStats(s).counters).runs).toBe(n + 2);
    expect(fs.existsSync(old)).toBe(true); // not quiet for a minute yet
    const past = new Date(Date.now() - 120_000);
    fs.utimesSync(old, past, past);
    expect(summarize(foldStats(s).counters).runs).toBe(n + 2);
    expect(fs.existsSync(old)).toBe(false);
    expect(summarize(foldStats(s).counters).runs).toBe(n + 2);
  });

  it('counts concurrent appends from many processes exactly (O_APPEND, one write each)', async () => {
    const s = new Store(path.join(tmp(), 'conc'));
    s.ensure('stats');
    const script = `
      const fs = require('node:fs');
      const p = process.argv[1];
      for (let i = 0; i < 200; i++) {
        const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
        fs.writeSync(fd, JSON.stringify({ t: Date.now(), e: 'snapshot', key: String(process.pid), bytes: i }) + '\\n');
        fs.closeSync(fd);
      }`;
    const file = path.join(s.sub('stats'), 'events.log');
    const codes = await Promise.all(Array.from({ length: 8 }, () => new Promise<number | null>((resolve) => {
      spawn(process.execPath, ['-e', script, file], { stdio: 'ignore' }).on('close', resolve);
    })));
    expect(codes).toEqual(Array(8).fill(0));
    expect(summarize(foldStats(s).counters).snapshots.taken).toBe(8 * 200);
  });
});

describe('keys and resolution agree with the launcher', () => {
  const shims = tmp('cx-shims-');
  fs.symlinkSync(launcher, path.join(shims, 'sh'));
  fs.symlinkSync(launcher, path.join(shims, 'true'));
  const noexec = tmp('cx-noexec-');
  fs.writeFileSync(path.join(noexec, 'cx-not-executable'), 'x', { mode: 0o644 });
  const cases: { prog: string; PATH: string }[] = [
    { prog: 'sh', PATH: '/usr/local/bin:/usr/bin:/bin' },
    { prog: 'true', PATH: '/bin:/usr/bin' },
    { prog: 'sh', PATH: `${shims}:/usr/bin:/bin` }, // the shim is skipped
    { prog: 'true', PATH: `${shims}:${shims}::/usr/bin` }, // twice, and an empty entry
    { prog: '/bin/sh', PATH: '' },
    { prog: path.relative(process.cwd(), '/bin/sh'), PATH: '/usr/bin' }, // relative, used as given
  ];
  for (const c of cases) {
    it(`${c.prog} with PATH=${c.PATH || '(empty)'}`, () => {
      const env = { PATH: c.PATH, CACHED_EXEC_DIR: '/nonexistent/cx' };
      const r = resolveProgram(c.prog, env);
      const k = keyFromStat(r.path, r.stat, env);
      const l = launcherKey(c.prog, env);
      expect(l.status).toBe(0);
      expect(keyHash(k)).toBe(l.hash);
      expect(path.join('/nonexistent/cx', 'images', `${keyHash(k)}.img`)).toBe(l.image);
      expect(r.path.startsWith(shims)).toBe(false);
    });
  }

  it('not found and not executable: same statuses as the launcher (127, 126)', () => {
    const env = { PATH: `${noexec}:/usr/bin`, CACHED_EXEC_DIR: '/nonexistent/cx' };
    for (const [prog, code] of [['cx-no-such-program', 127], ['cx-not-executable', 126]] as const) {
      expect(launcherKey(prog, env).status).toBe(code);
      try {
        resolveProgram(prog, env);
        expect.unreachable();
      } catch (e) {
        expect((e as CxError).exitCode).toBe(code);
      }
    }
  });

  it('finds the cache directory by the launcher\'s rule', () => {
    expect(launcherCacheDir({ CACHED_EXEC_DIR: '/a', XDG_CACHE_HOME: '/b', HOME: '/c' })).toBe('/a');
    expect(launcherCacheDir({ CACHED_EXEC_DIR: '', XDG_CACHE_HOME: '/b', HOME: '/c' })).toBe('/b/cached-exec');
    expect(launcherCacheDir({ HOME: '/c' })).toBe('/c/.cache/cached-exec');
    expect(launcherCacheDir({})).toBeNull();
    expect(launcherKey('sh', { PATH: '/bin', XDG_CACHE_HOME: '/xdg' }).image).toMatch(/^\/xdg\/cached-exec\/images\//);
  });
});

describe('checkImage mirrors the C reader', () => {
  const dir = tmp('cx-check-');
  const env = { PATH: '/usr/bin:/bin' };
  const sh = resolveProgram('sh', env);
  const key = keyFromStat(sh.path, sh.stat, env);
  const good = serializeImage(imageFor(key, [fileDep(sh.path, FileKind.MAPPED), fileDep('/etc/passwd', FileKind.READ),
    { ...fileDep('/etc/passwd', FileKind.ABSENT), path: path.join(dir, 'not-there') }]));
  let n = 0;
  const write = (buf: Buffer, mode = 0o600): string => {
    const f = path.join(dir, `i${n++}.img`);
    fs.writeFileSync(f, buf, { mode });
    fs.chmodSync(f, mode);
    return f;
  };
  const cOutcome = (f: string): string => {
    const r = spawnSync(launcher, ['--internal-inspect', f], { encoding: 'utf8' });
    return outcomeName(Number(/^check\.outcome=(\d+)/m.exec(r.stdout)?.[1]));
  };

  it('accepts the good image (HIT), with rotation past the age limit', () => {
    const f = write(good);
    expect(checkImage(f, { key, owner: euid })).toMatchObject({ outcome: 'HIT', rotate: false, regions: 2, files: 3 });
    expect(checkImage(f, { key, owner: euid, nowNs: BigInt(Date.now() + 8 * 86_400_000) * 1_000_000n }).rotate).toBe(true);
    expect(checkImage(f, { key, owner: euid, nowNs: BigInt(Date.now() + 8 * 86_400_000) * 1_000_000n, maxAgeSec: 0 }).rotate).toBe(false);
    expect(cOutcome(f)).toBe('HIT');
    expect(maxAgeFromEnv({})).toBe(604800);
    expect(maxAgeFromEnv({ CACHED_EXEC_MAX_AGE: '0' })).toBe(0);
    expect(maxAgeFromEnv({ CACHED_EXEC_MAX_AGE: '60s' })).toBe(60);
  });

  it('names each failure like the restorer', () => {
    const expectOutcome = (f: string, outcome: string, k = key, owner = euid): void => {
      expect(checkImage(f, { key: k, owner }).outcome, f).toBe(outcome);
    };
    expectOutcome(path.join(dir, 'missing.img'), 'MISS');
    expectOutcome(write(good, 0o666), 'FAIL_OWNER');
    expectOutcome(write(good), 'FAIL_OWNER', key, euid + 1);
    expectOutcome(write(good), 'FAIL_KEY', { ...key, pathEnv: '/bin' });
    expectOutcome(write(good), 'FAIL_KEY', { ...key, kernelRelease: 'other' });
    expectOutcome(write(good.subarray(0, good.length - 1)), 'FAIL_TRUNCATED');
    const stale = serializeImage(imageFor(key, [{ ...fileDep('/etc/passwd', FileKind.READ), size: 1n }]));
    expectOutcome(write(stale), 'FAIL_STALE_FILE');
    const neg = serializeImage(imageFor(key, [{ ...fileDep('/etc/passwd', FileKind.ABSENT) }]));
    expectOutcome(write(neg), 'FAIL_NEGATIVE_DEP');
    const gone = serializeImage(imageFor(key, [{ ...fileDep('/etc/passwd', FileKind.MAPPED), path: path.join(dir, 'gone.so') }]));
    expectOutcome(write(gone), 'FAIL_STALE_FILE');
  });

  it('agrees with --internal-inspect on hundreds of corrupted images', () => {
    // Flip bytes in the metadata; half the time fix the checksum so the structural
    // checks behind it (header fields, section table) are reached too.
    const meta = Number(decodeStruct(HEADER, good, 0).meta_size);
    let seed = 12345;
    const rand = (m: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % m;
    };
    const seen = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const b = Buffer.from(good);
      const at = rand(meta);
      b[at] = (b[at] as number) ^ (1 << rand(8));
      if (i % 2) rehash(b);
      const f = write(b);
      const c = cOutcome(f);
      const t = checkImage(f, { key, owner: euid });
      // The inspect mode stops after the section table; past it the TS check goes on (key, files, ...).
      if (c === 'HIT') expect(t.outcome.startsWith('FAIL_') || t.outcome === 'HIT', `byte ${at}: ${t.detail}`).toBe(true);
      else expect(t.outcome, `byte ${at} (${i % 2 ? 'rehashed' : 'raw'}): ${t.detail}`).toBe(c);
      seen.set(c, (seen.get(c) ?? 0) + 1);
      fs.rmSync(f);
    }
    expect(seen.get('FAIL_CHECKSUM')).toBeGreaterThan(50);
    expect(seen.get('FAIL_HEADER')).toBeGreaterThan(5);
  });

  it.runIf(isRoot)('refuses an image owned by another user (root only: needs chown)', () => {
    const f = write(good);
    fs.chownSync(f, 65534, 65534);
    expect(checkImage(f, { key, owner: 0 }).outcome).toBe('FAIL_OWNER');
  });
});
