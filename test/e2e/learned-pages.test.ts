/**
 * Learned pages (src/restore/pages.c, the python adapter's _record_pages): a
 * post-init python restore copies only the writable pages restored runs wrote.
 * Every case compares a restored run with plain python (stdout, stderr,
 * status), and reads what the restore populated from outside: the
 * Anonymous kB of the image's writable mappings in /proc/PID/smaps of a
 * restored python blocked on stdin (a copied page is anonymous; one left to
 * fault is the file's until written).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, baseEnv, removeDir, run, tmpCacheDir, tmpDir, waitFor, type Env, type RunResult } from '../helpers/cx.js';
import { NOBODY, copyPackage, nobodyDir, runAs } from '../helpers/unprivileged.js';

const PY = '/usr/bin/python3';
const PRELOAD = 'json,decimal,email.mime.multipart,http.client,argparse,logging,xml.etree.ElementTree';
const cache = tmpCacheDir();
const work = tmpDir('cx-learned-pages-');
const env: Env = baseEnv(cache);
const after = (args: string[]): string[] => ['--after-init', '--preload', PRELOAD, PY, ...args];
const PROG = ['-c', 'import json, sys; print(json.dumps({"argv": sys.argv[1:]})); sys.stderr.write("to stderr\\n"); sys.exit(3)', 'a b'];

let image = '';
const pagesPath = (): string => image.replace(/\.img$/, '.pages');

interface PagesHeader { flags: number; runs: number; nranges: number; ino: bigint }
function header(file = pagesPath()): PagesHeader {
  const b = fs.readFileSync(file);
  expect(b.length).toBeGreaterThanOrEqual(64);
  expect(b.readBigUInt64LE(0)).toBe(0x3153454741505843n); // "CXPAGES1"
  return { ino: b.readBigUInt64LE(16), flags: b.readUInt32LE(48), runs: b.readUInt32LE(52), nranges: b.readUInt32LE(56) };
}

const hits = (dir = cache): number => {
  const log = path.join(dir, 'stats', 'runs.log');
  const records = fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records : [];
  return records.filter((r) => r.outcome === 'HIT').length - records.filter((r) => r.outcome === 'FAIL_ADAPTER').length;
};

const observed = (r: RunResult): { stdout: string; stderr: string; status: number | null } =>
  ({ stdout: r.stdout.toString(), stderr: r.stderr.toString(), status: r.status });

/** A restored run of PROG has plain python's output and status, and restored. */
async function restoredLikeCold(): Promise<void> {
  const plain = await run(PY, PROG, { cwd: work, env });
  expect(plain.status).toBe(3);
  const before = hits();
  const restored = await run(LAUNCHER, after(PROG), { cwd: work, env });
  expect(hits() - before, restored.stderr.toString()).toBe(1);
  expect(observed(restored)).toEqual(observed(plain));
}

/**
 * Size and Anonymous (kB) of the image's writable region mappings in a restored
 * python blocked on stdin (offset 0 is the launcher's view of the metadata, no region).
 */
async function populated(): Promise<{ size: number; anon: number }> {
  const before = hits();
  const child = spawn(LAUNCHER, after(['-c', 'import sys; sys.stdin.readline()']), { cwd: work, env, stdio: ['pipe', 'ignore', 'ignore'] });
  const smaps = `/proc/${child.pid}/smaps`;
  const read = (): { size: number; anon: number } | null => {
    let text: string;
    try {
      text = fs.readFileSync(smaps, 'utf8');
    } catch {
      return null;
    }
    let size = 0, anon = 0, mine = false, seen = false;
    for (const line of text.split('\n')) {
      const m = /^[0-9a-f]+-[0-9a-f]+ (\S+) ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
      if (m) {
        mine = m[3] === image && m[1]?.[1] === 'w' && m[2] !== '00000000';
        seen ||= m[3] === image;
        continue;
      }
      const f = /^(Size|Anonymous):\s+(\d+) kB/.exec(line);
      if (mine && f) {
        if (f[1] === 'Size') size += Number(f[2]);
        else anon += Number(f[2]);
      }
    }
    return seen ? { size, anon } : null;
  };
  // The image is mapped once the launcher restored; sleeping then is python blocked on stdin.
  const blocked = (): boolean => {
    try {
      return read() !== null && /^State:\s+S/m.test(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  await waitFor(blocked, 60_000);
  const got = read();
  child.stdin.end('\n');
  await new Promise((resolve) => child.on('close', resolve));
  expect(got, 'the blocked run restored').not.toBeNull();
  expect(hits() - before).toBe(1);
  return got as unknown as { size: number; anon: number };
}

/** Runs until the set is made (4 restores union it). */
async function learn(): Promise<void> {
  for (let i = 0; i < 4; i++) await restoredLikeCold();
  expect(header()).toMatchObject({ flags: 0, runs: 4 });
}

beforeAll(() => {
  const w = spawnSync(LAUNCHER, ['--warm', ...after([])], { env, encoding: 'utf8', timeout: 300_000 });
  expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
  image = /: (\/\S+\.img) \(/.exec(w.stdout)?.[1] ?? '';
  expect(fs.existsSync(image), w.stdout).toBe(true);
}, 320_000);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('learned pages', () => {
  it('without a file: the first restore learns (populates nothing), output as cold; the file then holds fewer pages', async () => {
    expect(fs.existsSync(pagesPath())).toBe(false);
    await restoredLikeCold();
    const h = header();
    expect(h).toMatchObject({ flags: 0, runs: 1 });
    expect(h.nranges).toBeGreaterThan(0);
    expect(h.ino).toBe(BigInt(fs.statSync(image).ino));
  }, 120_000);

  it('unions 4 runs, then is used as it is, never rewritten; a restore copies far fewer pages than the full populate', async () => {
    for (let i = 0; i < 3; i++) await restoredLikeCold();
    expect(header()).toMatchObject({ flags: 0, runs: 4 });
    const st = fs.statSync(pagesPath());
    const learned = await populated();
    await restoredLikeCold();
    const st2 = fs.statSync(pagesPath());
    expect([st2.ino, st2.mtimeMs]).toEqual([st.ino, st.mtimeMs]);
    // The full populate, for comparison: a file that says FULL.
    const saved = fs.readFileSync(pagesPath());
    const b = Buffer.from(saved.subarray(0, 64));
    b.writeUInt32LE(1, 48);
    b.writeUInt32LE(0, 56);
    fs.writeFileSync(pagesPath(), b);
    const all = await populated();
    fs.writeFileSync(pagesPath(), saved);
    expect(all.size).toBe(learned.size);
    expect(all.anon).toBeGreaterThan(all.size * 0.9);
    expect(learned.anon).toBeLessThan(all.size * 0.6);
  }, 240_000);

  // Each: the file as an attacker or an accident leaves it; the run is as cold, every page populated, the file untouched.
  const hostile: Array<[string, (p: string, valid: Buffer) => void]> = [
    ['garbage', (p) => fs.writeFileSync(p, Buffer.alloc(100, 0x41))],
    ['truncated', (p, v) => fs.writeFileSync(p, v.subarray(0, v.length - 5))],
    ['oversized (more ranges than the launcher reads)', (p, v) => {
      const b = Buffer.concat([v.subarray(0, 64), Buffer.alloc(16 * 2000)]);
      b.writeUInt32LE(2000, 56);
      fs.writeFileSync(p, b);
    }],
    ['a range outside the writable regions', (p, v) => {
      const b = Buffer.from(v.subarray(0, 80));
      b.writeUInt32LE(1, 56);
      b.writeBigUInt64LE(0x10000n, 64);
      b.writeBigUInt64LE(0x1000n, 72);
      fs.writeFileSync(p, b);
    }],
    ['another user\'s', (p, v) => {
      fs.writeFileSync(p, v);
      fs.chownSync(p, NOBODY.uid, NOBODY.gid);
    }],
    ['group-writable', (p, v) => {
      fs.writeFileSync(p, v);
      fs.chmodSync(p, 0o620);
    }],
    ['a symlink to a valid file', (p, v) => {
      fs.writeFileSync(path.join(work, 'target.pages'), v);
      fs.symlinkSync(path.join(work, 'target.pages'), p);
    }],
    ['a FIFO', (p) => {
      expect(spawnSync('mkfifo', [p]).status).toBe(0);
    }],
  ];
  for (const [what, make] of hostile) {
    it(`a file that is ${what}: the full populate, output as cold, the file left as it was`, async () => {
      const valid = fs.readFileSync(pagesPath());
      expect(header()).toMatchObject({ flags: 0, runs: 4 });
      fs.rmSync(pagesPath());
      make(pagesPath(), valid);
      const snapshot = (): string => {
        const st = fs.lstatSync(pagesPath());
        return `${st.mode} ${st.uid} ${st.ino} ${st.size} ${st.mtimeMs} ${st.isFIFO() ? '' : fs.readFileSync(pagesPath()).toString('hex')}`;
      };
      const before = snapshot();
      await restoredLikeCold();
      const p = await populated();
      expect(p.anon).toBeGreaterThan(p.size * 0.9);
      expect(snapshot()).toBe(before);
      if (what.startsWith('a symlink')) expect(fs.readFileSync(path.join(work, 'target.pages'))).toEqual(valid);
      fs.rmSync(pagesPath());
      fs.writeFileSync(pagesPath(), valid, { mode: 0o600 });
    }, 120_000);
  }

  it('a file learned on another image (re-taken: other inode) is learned again', async () => {
    const b = fs.readFileSync(pagesPath());
    b.writeBigUInt64LE(b.readBigUInt64LE(16) + 1n, 16);
    fs.writeFileSync(pagesPath(), b);
    await restoredLikeCold();
    expect(header()).toMatchObject({ flags: 0, runs: 1, ino: BigInt(fs.statSync(image).ino) });
    for (let i = 0; i < 3; i++) await restoredLikeCold();
    expect(header().runs).toBe(4);
  }, 240_000);

  it('a run that takes python\'s full exit (a file left open) records FULL: every page populated after, output as cold', async () => {
    fs.rmSync(pagesPath());
    const out = path.join(work, 'open.txt');
    const args = ['-c', `f = open(${JSON.stringify(out)}, 'w'); f.write('tail without close')`];
    const plain = await run(PY, args, { cwd: work, env });
    fs.rmSync(out);
    const restored = await run(LAUNCHER, after(args), { cwd: work, env });
    expect(observed(restored)).toEqual(observed(plain));
    expect(fs.readFileSync(out, 'utf8')).toBe('tail without close');
    expect(header()).toMatchObject({ flags: 1, runs: 1, nranges: 0 });
    const p = await populated();
    expect(p.anon).toBeGreaterThan(p.size * 0.9);
    await restoredLikeCold();
  }, 120_000);

  it('a learning run that never reaches the exit (it execs) leaves FULL in place, not a second run without populate', async () => {
    fs.rmSync(pagesPath());
    const args = ['-c', 'import os; os.execv("/bin/echo", ["echo", "exec\'d"])'];
    const restored = await run(LAUNCHER, after(args), { cwd: work, env });
    expect(observed(restored)).toEqual({ stdout: "exec'd\n", stderr: '', status: 0 });
    expect(header()).toMatchObject({ flags: 1, runs: 0, nranges: 0 });
    expect(fs.readdirSync(path.dirname(image)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const p = await populated();
    expect(p.anon).toBeGreaterThan(p.size * 0.9);
    fs.rmSync(pagesPath());
    await learn();
  }, 240_000);

  it('removing the image (eviction, --cleanup) removes its pages file', async () => {
    const { Store } = await import('../../src/cache/store.js');
    const hash = path.basename(image, '.img');
    const copy = path.join(work, 'saved.img');
    fs.copyFileSync(image, copy);
    expect(new Store(cache).removeImage(hash)).toBe(true);
    expect(fs.existsSync(pagesPath())).toBe(false);
    fs.copyFileSync(copy, image);
  });
});

describe('learned pages as an unprivileged user', () => {
  it('nobody, with a cache of its own: learns, then populates only the set; output as cold', () => {
    const pkg = copyPackage();
    const ncache = nobodyDir('cx-cache-nobody-');
    const nwork = nobodyDir('cx-work-nobody-');
    const nenv: Env = { ...baseEnv(ncache), HOME: nwork };
    try {
      const w = runAs('nobody', pkg.launcher, ['--warm', ...after([])], { env: nenv, cwd: nwork, timeoutMs: 300_000 });
      expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
      const img = /: (\/\S+\.img) \(/.exec(w.stdout)?.[1] ?? '';
      const pages = img.replace(/\.img$/, '.pages');
      const plain = runAs('nobody', PY, PROG, { env: nenv, cwd: nwork });
      expect(plain.status).toBe(3);
      for (let i = 1; i <= 4; i++) {
        const r = runAs('nobody', pkg.launcher, after(PROG), { env: nenv, cwd: nwork });
        expect({ stdout: r.stdout, stderr: r.stderr, status: r.status }).toEqual({ stdout: plain.stdout, stderr: plain.stderr, status: 3 });
        expect(header(pages)).toMatchObject({ flags: 0, runs: i });
      }
      expect(hits(ncache)).toBe(4);
      const st = fs.statSync(pages);
      expect([st.uid, st.mode & 0o777]).toEqual([NOBODY.uid, 0o600]);
    } finally {
      removeDir(ncache);
      removeDir(nwork);
      removeDir(pkg.root);
    }
  }, 400_000);
});
