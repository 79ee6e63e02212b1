/**
 * The built CLI (dist/cli/main.js, as the native launcher execs it), run as a
 * real process: both `node dist/cli/main.js ARGS` and `./bin/cached-exec ARGS`.
 * `npm test` builds first (pretest). Where the CLI predicts what the launcher
 * will do (--explain), the prediction is checked against what the real
 * launcher then records in its statistics log.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFromStat, keyHash } from '../../src/cache/key.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { decodeStruct, encodeStruct } from '../../src/image/codec.js';
import { PAGE_SIZE, serializeImage, type ImageKey, type ImageModel } from '../../src/image/format.js';
import {
  ARCH_AARCH64, FORMAT_VERSION, FileFlag, FileKind, HEADER, Prot, RegionFlag, STAT_RECORD, SlotKind, Src, StateFlag, VdsoKind, describeFormat, hash64, layout,
} from '../../src/image/schema.js';

const root = path.resolve(import.meta.dirname, '../..');
const mainJs = path.join(root, 'dist', 'cli', 'main.js');
const launcher = path.join(root, 'bin', 'cached-exec');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
const euid = process.geteuid?.() ?? 0;

const temps: string[] = [];
function tmp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(d, 0o700);
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

type Env = Record<string, string>;
const SYSTEM_PATH = '/usr/local/bin:/usr/bin:/bin';
const baseEnv = (dir: string, extra: Env = {}): Env =>
  ({ PATH: SYSTEM_PATH, HOME: os.homedir(), LC_ALL: 'C', CACHED_EXEC_DIR: dir, CACHED_EXEC_NO_WARM: '1', ...extra });

interface Res { status: number | null; stdout: string; stderr: string }
const node = (args: string[], env: Env): Res => {
  const r = spawnSync(process.execPath, [mainJs, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};
const lx = (args: string[], env: Env): Res => {
  const r = spawnSync(launcher, args, { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

function fileDep(p: string, kind: number, flags = 0): ImageModel['files'][number] {
  const st = fs.statSync(p, { bigint: true });
  return {
    path: p, kind, dev: st.dev, ino: st.ino, size: st.size, mtimeSec: st.mtimeNs / 1_000_000_000n,
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n), ctimeSec: st.ctimeNs / 1_000_000_000n,
    ctimeNsec: Number(st.ctimeNs % 1_000_000_000n), mode: Number(st.mode), flags,
  };
}

/** A synthetic image for `key`: valid as a file, never meant to be restored (tests make it fail first). */
function model(key: ImageKey, files: ImageModel['files'], pages = 1): ImageModel {
  return {
    createdNs: BigInt(Date.now()) * 1_000_000n,
    key,
    files,
    regions: [
      { addr: 0x10000000n, len: 0x1000n, prot: Prot.READ, source: Src.FILE, file: 0, offset: 0n, flags: 0 },
      { addr: 0x10001000n, len: BigInt(pages * PAGE_SIZE), prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n,
        flags: RegionFlag.PATCHED, data: Buffer.alloc(pages * PAGE_SIZE, 0x11) },
      { addr: 0x20000000n, len: 0x3000n, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: RegionFlag.HEAP },
    ],
    slots: [
      { addr: 0x10001008n, kind: SlotKind.ARGV, width: 8, arg: 0n },
      { addr: 0x10001010n, kind: SlotKind.ARGC, width: 4, arg: 0n },
    ],
    state: {
      entry: 0x10000040n, rtldFini: 0x7fff00001000n, fsBase: 0x7fff00002000n, tidAddress: 0n, robustHead: 0n, robustLen: 0n,
      rseqArea: 0n, rseqLen: 0, rseqSig: 0, startCode: 0x10000000n, endCode: 0x10001000n, startData: 0x10001000n,
      endData: 0x10002000n, startBrk: 0x20000000n, brk: 0x20003000n, vdsoBase: 0x7fff10000000n, atPhdr: 0x10000040n,
      atPhnum: 9n, atEntry: 0x10000040n, atBase: 0x7fff00000000n, flags: StateFlag.HAVE_FS_BASE, comm: 'synthetic',
    },
    vdso: [
      { offset: -0x4000n, size: 0x4000n, kind: VdsoKind.VVAR },
      { offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO },
    ],
  };
}

function keyOf(prog: string, env: Env): { key: ImageKey; hash: string; image: string; exe: string } {
  const r = spawnSync(launcher, ['--internal-key', prog], { env, encoding: 'utf8' });
  const m = /^([0-9a-f]{16}) (.+)$/m.exec(r.stdout);
  if (!m) throw new Error(`--internal-key ${prog}: ${r.stdout} ${r.stderr}`);
  const exe = prog.includes('/') ? prog
    : (env.PATH ?? '').split(':').map((d) => `${d || '.'}/${prog}`).find((p) => fs.existsSync(p)) as string;
  const key = keyFromStat(exe, fs.statSync(exe, { bigint: true }), env);
  expect(keyHash(key)).toBe(m[1]);
  return { key, hash: m[1] as string, image: m[2] as string, exe };
}

function rehash(buf: Buffer): void {
  const h = decodeStruct(HEADER, buf, 0);
  const off = layout(HEADER).fields.find((f) => f.name === 'checksum')?.offset as number;
  buf.writeBigUInt64LE(0n, off);
  buf.writeBigUInt64LE(hash64(buf.subarray(0, Number(h.meta_size))), off);
}

function lastRecords(dir: string, n: number): string[] {
  const buf = fs.readFileSync(path.join(dir, 'stats', 'runs.log'));
  return decodeRunRecords(buf).records.slice(-n).map((r) => r.outcome);
}

// ---------------------------------------------------------------------------

describe('informational commands', () => {
  const env = baseEnv('/nonexistent/cx-cli');

  it('--describe-format prints describeFormat(), from node and through the launcher', () => {
    for (const r of [node(['--describe-format'], env), lx(['--describe-format'], env)]) {
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(describeFormat());
      expect(r.stderr).toBe('');
    }
    const j = JSON.parse(node(['--describe-format', '--json'], env).stdout) as { formatVersion: number; structs: { name: string; size: number }[] };
    expect(j.formatVersion).toBe(FORMAT_VERSION);
    expect(j.structs.find((s) => s.name === 'cx_stat_record')?.size).toBe(32);
  });

  it('--help lists the commands and the environment variables', () => {
    const r = lx(['--help'], env);
    expect(r.status).toBe(0);
    for (const w of ['--warm', '--explain', '--inspect', '--describe-format', '--show-stats', '--zero-stats', '--list',
      '--cleanup', '--clear', '--max-size', 'CACHED_EXEC_DIR', 'CACHED_EXEC_DISABLE']) expect(r.stdout).toContain(w);
    expect(r.stdout).not.toContain('--drain-queue');
    expect(lx(['-h'], env).stdout).toBe(r.stdout);
  });

  it('--version prints the package version', () => {
    expect(lx(['--version'], env).stdout).toMatch(new RegExp(`^cached-exec ${pkg.version.replace(/\./g, '\\.')} `));
    expect(JSON.parse(node(['--version', '--json'], env).stdout)).toMatchObject({ version: pkg.version, formatVersion: FORMAT_VERSION });
  });

  it('an unknown option is a one-line error and exit status 2', () => {
    for (const r of [lx(['--no-such-option'], env), node(['--no-such-option'], env)]) {
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe("cached-exec: unknown option '--no-such-option' (see cached-exec --help)\n");
    }
    const j = node(['--bogus', '--json'], env);
    expect(j.status).toBe(2);
    expect(JSON.parse(j.stdout)).toEqual({ error: { code: 'usage', exitCode: 2, message: "unknown option '--bogus' (see cached-exec --help)", reason: '--bogus' } });
  });

  it('rejects missing and extra operands and combined commands with status 2', () => {
    expect(lx(['--inspect'], env).status).toBe(2);
    expect(lx(['--explain', 'a', 'b'], env).status).toBe(2);
    expect(lx(['--show-stats', '--list'], env).status).toBe(2);
    expect(lx(['--list', '--dry-run'], env).status).toBe(2);
    expect(lx([], env).status).toBe(2);
    expect(lx([], env).stderr.split('\n').filter(Boolean)).toHaveLength(1);
  });
});

describe('--inspect', () => {
  const dir = tmp('cx-cli-inspect-');
  const env = baseEnv(dir);
  const sh = keyOf('sh', env);
  const img = model(sh.key, [fileDep(sh.exe, FileKind.MAPPED, FileFlag.EXE), fileDep('/etc/passwd', FileKind.READ),
    { ...fileDep('/etc/passwd', FileKind.ABSENT), path: '/opt/cx-none/libnothing.so' }]);
  const bytes = serializeImage(img);
  const file = path.join(dir, `${sh.hash}.img`);
  fs.writeFileSync(file, bytes, { mode: 0o600 });

  it('dumps header, key, files, regions, slots, state and vdso', () => {
    const r = lx(['--inspect', file], env);
    expect(r.status, r.stderr).toBe(0);
    for (const w of [sh.exe, 'MAPPED', 'READ', 'ABSENT', '/opt/cx-none/libnothing.so', 'EXE', 'PATCHED', 'HEAP', 'r--', 'rw-',
      'ARGV', 'ARGC', 'VVAR', 'VDSO', 'synthetic', sh.hash, 'regions (3: 1 file, 1 data, 1 zero', 'valid     yes']) {
      expect(r.stdout).toContain(w);
    }
  });

  it('--json has every part with names for kinds and hex addresses', () => {
    const r = node(['--inspect', file, '--json'], env);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      file, fileSize: bytes.length, keyHash: sh.hash, nameMatchesKey: true, valid: true, problems: [],
      key: { exePath: sh.exe, pathEnv: SYSTEM_PATH, kernelRelease: os.release(), euid },
      files: [{ kind: 'MAPPED', flags: ['EXE'], path: sh.exe }, { kind: 'READ' }, { kind: 'ABSENT' }],
      regions: [
        { start: '0x10000000', end: '0x10001000', prot: 'r--', source: 'FILE', file: sh.exe },
        { source: 'DATA', flags: ['PATCHED'], prot: 'rw-' },
        { source: 'ZERO', flags: ['HEAP'], len: 0x3000 },
      ],
      slots: [{ kind: 'ARGV', width: 8, addr: '0x10001008' }, { kind: 'ARGC', width: 4 }],
      state: { entry: '0x10000040', comm: 'synthetic', flags: ['HAVE_FS_BASE'] },
      vdso: [{ kind: 'VVAR', offset: -0x4000 }, { kind: 'VDSO', offset: 0 }],
    });
    expect(j.header.magic).toBe('0x31474d4958455843');
  });

  it('reports a damaged image (exit 1) and refuses a file that is not an image', () => {
    const bad = Buffer.from(bytes);
    const created = layout(HEADER).fields.find((f) => f.name === 'created_ns')?.offset as number;
    bad[created] = (bad[created] as number) ^ 0xff; // covered by the checksum, harmless to parse
    const f = path.join(dir, 'damaged.img');
    fs.writeFileSync(f, bad);
    const r = lx(['--inspect', f], env);
    expect(r.status).toBe(1);
    expect(r.stdout).toContain('checksum mismatch');
    const g = path.join(dir, 'garbage');
    fs.writeFileSync(g, 'hello world, not an image at all, but long enough for a header..........................');
    const q = lx(['--inspect', g], env);
    expect(q.status).toBe(1);
    expect(q.stderr).toMatch(/^cached-exec: .*garbage: not a cached-exec image \(bad magic\)\n$/);
    expect(lx(['--inspect', path.join(dir, 'nope.img')], env).stderr).toMatch(/No such file or directory/);
  });
});

describe('--explain predicts what the launcher records', () => {
  const dir = tmp('cx-cli-explain-');
  const env = baseEnv(dir, { PATH: '/usr/bin:/bin' });
  const t = keyOf('true', env);
  const goodFiles = [fileDep(t.exe, FileKind.MAPPED, FileFlag.EXE), fileDep('/etc/passwd', FileKind.READ)];
  const put = (buf: Buffer, mode = 0o600): void => {
    fs.mkdirSync(path.dirname(t.image), { recursive: true, mode: 0o700 });
    fs.rmSync(t.image, { force: true });
    fs.writeFileSync(t.image, buf, { mode });
    fs.chmodSync(t.image, mode);
  };
  const cases: { name: string; setup: () => void; env?: Env; outcome: string }[] = [
    { name: 'no image', setup: () => fs.rmSync(t.image, { force: true }), outcome: 'MISS' },
    {
      name: 'corrupted checksum', outcome: 'FAIL_CHECKSUM', setup: () => {
        const b = serializeImage(model(t.key, goodFiles));
        b[200] = (b[200] as number) ^ 0x40;
        put(b);
      },
    },
    { name: 'truncated', outcome: 'FAIL_TRUNCATED', setup: () => put(serializeImage(model(t.key, goodFiles)).subarray(0, PAGE_SIZE + 100)) },
    {
      name: 'bad header (format version)', outcome: 'FAIL_HEADER', setup: () => {
        const b = serializeImage(model(t.key, goodFiles));
        b.writeUInt32LE(99, layout(HEADER).fields.find((f) => f.name === 'format_version')?.offset as number);
        rehash(b);
        put(b);
      },
    },
    {
      name: 'another architecture (an aarch64 image, checksum valid)', outcome: 'FAIL_ARCH', setup: () => {
        const b = serializeImage(model(t.key, goodFiles));
        b.writeUInt32LE(ARCH_AARCH64, layout(HEADER).fields.find((f) => f.name === 'arch')?.offset as number);
        rehash(b);
        put(b);
      },
    },
    {
      name: 'another page size (16K, checksum valid)', outcome: 'FAIL_PAGE_SIZE', setup: () => {
        const b = serializeImage(model(t.key, goodFiles));
        b.writeUInt32LE(16384, layout(HEADER).fields.find((f) => f.name === 'page_size')?.offset as number);
        rehash(b);
        put(b);
      },
    },
    { name: 'writable by others', outcome: 'FAIL_OWNER', setup: () => put(serializeImage(model(t.key, goodFiles)), 0o646) },
    { name: 'key mismatch', outcome: 'FAIL_KEY', setup: () => put(serializeImage(model({ ...t.key, pathEnv: '/bin' }, goodFiles))) },
    {
      name: 'stale library identity', outcome: 'FAIL_STALE_FILE',
      setup: () => put(serializeImage(model(t.key, [goodFiles[0] as ImageModel['files'][number], { ...fileDep('/etc/passwd', FileKind.MAPPED), size: 3n }]))),
    },
    {
      name: 'negative dependency now present', outcome: 'FAIL_NEGATIVE_DEP',
      setup: () => put(serializeImage(model(t.key, [...goodFiles, fileDep('/etc/hostname', FileKind.ABSENT)]))),
    },
    { name: 'CACHED_EXEC_DISABLE', outcome: 'BYPASS_DISABLED', env: { CACHED_EXEC_DISABLE: '1' }, setup: () => undefined },
    { name: 'LD_* in the environment', outcome: 'BYPASS_LOADER_ENV', env: { LD_BIND_NOW: '1' }, setup: () => undefined },
  ];

  for (const c of cases) {
    it(c.name, () => {
      c.setup();
      const e = { ...env, ...c.env };
      const x = node(['--explain', 'true', '--json'], e);
      expect(x.status, x.stderr).toBe(1);
      const p = JSON.parse(x.stdout);
      expect(p.outcome, p.detail).toBe(c.outcome);
      expect(p.restores).toBe(false);
      if (!c.outcome.startsWith('BYPASS')) {
        expect(p.key).toBe(t.hash);
        expect(p.image).toBe(t.image);
      }
      const run = lx(['true'], e);
      expect(run.status).toBe(0);
      expect(lastRecords(dir, 1)).toEqual([c.outcome]);
      // The human form says the same.
      expect(lx(['--explain', 'true'], e).stdout).toMatch(new RegExp(`why +${c.outcome}: `));
    });
  }

  it('a command that is not found: like the launcher, 127', () => {
    const r = lx(['--explain', 'cx-no-such-command'], env);
    expect(r.status).toBe(127);
    expect(r.stderr).toBe('cached-exec: cx-no-such-command: command not found\n');
  });

  it('a #! script: explains its interpreter', () => {
    const script = path.join(dir, 'script.sh');
    fs.writeFileSync(script, '#!/bin/sh -e\necho hi\n', { mode: 0o755 });
    const p = JSON.parse(node(['--explain', script, '--json'], env).stdout);
    expect(p.interpreter).toEqual({ path: '/bin/sh', arg: '-e' });
    expect(p.attempts).toHaveLength(2);
    expect(p.key).toBe(keyOf('/bin/sh', env).hash);
  });

  it('the statistics add up: runs = hits + misses + bypassed + fallbacks, by reason', () => {
    const s = JSON.parse(node(['--show-stats', '--json'], env).stdout);
    expect(s.runs).toBe(cases.length);
    expect(s.hits + s.misses + s.bypassed + s.fallbacks).toBe(s.runs);
    for (const c of cases) expect(s.outcomes[c.outcome], c.outcome).toBe(1);
    expect(s.bypassed).toBe(2);
    expect(s.fallbacks).toBe(cases.length - 3);
    const text = lx(['--show-stats'], env).stdout;
    expect(text).toMatch(new RegExp(`Runs +${cases.length}\\b`));
    expect(text).toMatch(/image checksum +1/);
  });

  it('50 concurrent runs are 50 records; --zero-stats starts over', async () => {
    fs.rmSync(t.image, { force: true });
    const before = JSON.parse(node(['--show-stats', '--json'], env).stdout).runs as number;
    const codes = await Promise.all(Array.from({ length: 50 }, () => new Promise<number | null>((resolve) => {
      spawn(launcher, ['true'], { env, stdio: 'ignore' }).on('close', resolve);
    })));
    expect(codes.every((c) => c === 0)).toBe(true);
    const s = JSON.parse(node(['--show-stats', '--json'], env).stdout);
    expect(s.runs).toBe(before + 50);
    expect(s.misses).toBe(51);
    expect(lx(['--zero-stats'], env).stdout).toBe('Statistics zeroed\n');
    expect(JSON.parse(node(['--show-stats', '--json'], env).stdout).runs).toBe(0);
    lx(['true'], env);
    expect(JSON.parse(node(['--show-stats', '--json'], env).stdout)).toMatchObject({ runs: 1, misses: 1 });
  });
});

describe('--list, --cleanup, --clear, --max-size', () => {
  const dir = tmp('cx-cli-manage-');
  const env = baseEnv(dir, { PATH: '/usr/bin:/bin' });
  const progs = ['true', 'false', 'cat', 'ls'].map((p) => ({ name: p, ...keyOf(p, env) }));
  const write = (p: (typeof progs)[number], pages: number, files?: ImageModel['files']): number => {
    const b = serializeImage(model(p.key, files ?? [fileDep(p.exe, FileKind.MAPPED, FileFlag.EXE)], pages));
    fs.mkdirSync(path.dirname(p.image), { recursive: true, mode: 0o700 });
    fs.writeFileSync(p.image, b, { mode: 0o600 });
    return b.length;
  };
  const hit = (hash: string, timeMs: number): void => {
    fs.mkdirSync(path.join(dir, 'stats'), { recursive: true, mode: 0o700 });
    fs.appendFileSync(path.join(dir, 'stats', 'runs.log'), encodeStruct(STAT_RECORD, {
      magic: 0x31545343, outcome: 0, key_hash: BigInt(`0x${hash}`), time_ns: BigInt(timeMs) * 1_000_000n, pid: 1, reserved: 0,
    }));
  };
  let size = 0;

  beforeAll(() => {
    // Written an hour ago (writing counts as a use), used since in the order below.
    const written = new Date(Date.now() - 3600_000);
    for (const p of progs) {
      size = write(p, 8);
      fs.utimesSync(p.image, written, written);
    }
    const now = Date.now();
    // Last use: ls (oldest), cat, false, true (newest); true used three times.
    hit(progs[3]?.hash as string, now - 4000);
    hit(progs[2]?.hash as string, now - 3000);
    hit(progs[1]?.hash as string, now - 2000);
    for (let i = 0; i < 3; i++) hit(progs[0]?.hash as string, now - 1000 + i);
  });

  it('--list shows program, size, uses; most recently used first', () => {
    const j = JSON.parse(node(['--list', '--json'], env).stdout);
    expect(j.images.map((e: { program: string }) => e.program)).toEqual(progs.map((p) => p.exe));
    expect(j.images[0]).toMatchObject({ key: progs[0]?.hash, uses: 3, size, valid: true, regions: 3 });
    const text = lx(['--list'], env).stdout;
    expect(text).toContain('4 image(s)');
    expect(text.split('\n')[1]).toContain(progs[0]?.exe as string);
  });

  it('--max-size evicts least recently used first and keeps the bound', () => {
    const r = lx(['--max-size', `${Math.floor(2.5 * size)}B`], env);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Evicted 2 least recently used image(s)');
    expect(fs.existsSync(progs[3]?.image as string)).toBe(false);
    expect(fs.existsSync(progs[2]?.image as string)).toBe(false);
    expect(fs.existsSync(progs[1]?.image as string)).toBe(true);
    expect(fs.existsSync(progs[0]?.image as string)).toBe(true);
    const s = JSON.parse(node(['--show-stats', '--json'], env).stdout);
    expect(s.evictions).toBe(2);
    expect(s.images).toEqual({ count: 2, bytes: 2 * size });
    expect(s.limits.maxSize).toBe(Math.floor(2.5 * size));
    expect(lx(['--max-size', 'huge'], env).status).toBe(2);
    expect(lx(['--max-size', '0'], env).stdout).toContain('unlimited');
  });

  it('--cleanup removes images no run can use, with the reason, and leftovers', () => {
    write(progs[2] as (typeof progs)[number], 1, [fileDep(progs[2]?.exe as string, FileKind.MAPPED), { ...fileDep('/etc/passwd', FileKind.READ), ino: 1n }]);
    write(progs[3] as (typeof progs)[number], 1, [fileDep(progs[3]?.exe as string, FileKind.MAPPED), fileDep('/etc/hostname', FileKind.ABSENT)]);
    const tmpFile = path.join(dir, 'images', `.${progs[0]?.hash}.img.999999999.1.tmp`);
    fs.writeFileSync(tmpFile, 'half');
    const past = new Date(Date.now() - 2 * 3600_000);
    fs.utimesSync(tmpFile, past, past);
    const dry = JSON.parse(node(['--cleanup', '--dry-run', '--json'], env).stdout);
    expect(dry.invalidated.map((i: { reason: string }) => i.reason).sort()).toEqual(['negative-dep', 'stale-file']);
    expect(fs.existsSync(progs[2]?.image as string)).toBe(true);
    const r = lx(['--cleanup'], env);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/removed .*: stale-file: \/etc\/passwd changed/);
    expect(r.stdout).toMatch(/removed .*: negative-dep: \/etc\/hostname exists now/);
    expect(r.stdout).toContain('removed 1 temporary file(s)');
    expect(fs.existsSync(tmpFile)).toBe(false);
    expect(fs.readdirSync(path.join(dir, 'images')).sort()).toEqual([`${progs[0]?.hash}.img`, `${progs[1]?.hash}.img`].sort());
    const s = JSON.parse(node(['--show-stats', '--json'], env).stdout);
    expect(s.invalidations).toEqual({ total: 2, reasons: { 'stale-file': 1, 'negative-dep': 1 } });
  });

  it('--clear removes every image; statistics stay', () => {
    const r = lx(['--clear'], env);
    expect(r.stdout).toMatch(/^Removed 2 image\(s\)/);
    expect(fs.readdirSync(path.join(dir, 'images'))).toEqual([]);
    expect(JSON.parse(node(['--show-stats', '--json'], env).stdout)).toMatchObject({ cleared: 2, evictions: 2 });
    expect(JSON.parse(node(['--list', '--json'], env).stdout).images).toEqual([]);
  });
});

describe('--warm', () => {
  it('reports a program that is not found and exits non-zero', () => {
    const r = lx(['--warm', 'cx-no-such-command'], baseEnv(tmp('cx-cli-warm-')));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('cx-no-such-command');
  });

  it('writes the image the launcher uses, and --explain then predicts a restore that happens', () => {
    const dir = tmp('cx-cli-warm-');
    const env = baseEnv(dir, { PATH: '/usr/bin:/bin' });
    const w = lx(['--warm', 'true'], env);
    const t = keyOf('true', env);
    expect(w.status, w.stderr).toBe(0); // /usr/bin/true is the simplest dynamic program there is
    expect(w.stdout).toMatch(new RegExp(`^true: ${t.image.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(`));
    expect(fs.statSync(t.image).mode & 0o777).toBe(0o600);
    const x = lx(['--explain', 'true'], env);
    expect(x.status, x.stdout).toBe(0);
    expect(lx(['true'], env).status).toBe(0);
    expect(lastRecords(dir, 1)).toEqual(['HIT']);
    const j = JSON.parse(node(['--warm', 'true', '--json'], env).stdout);
    expect(j.results[0]).toMatchObject({ program: 'true', ok: true, key: t.hash, image: t.image });
  });
});
