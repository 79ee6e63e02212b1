/**
 * The snapshotter on real installed programs with real ptrace: the slots,
 * regions, files and state a restore needs, the image round trip, and that
 * nothing of the snapshot run's environment or argv lands in the image.
 * Refusals are in snapshot-refusals.test.ts.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseImage, serializeImage, type ImageModel } from '../../src/image/format.js';
import { FileFlag, FileKind, RegionFlag, SlotKind, Src, StateFlag, VdsoKind, constName } from '../../src/image/schema.js';
import type { SnapshotOutcome } from '../../src/snapshot/api.js';
import { takeSnapshot } from '../../src/snapshot/snapshot.js';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: os.homedir(), LC_ALL: 'C' };

const programs = ['/bin/bash', '/bin/dash', '/usr/bin/perl', '/usr/bin/sed', '/usr/bin/mawk', '/bin/ls', '/bin/cat']
  .filter((p) => fs.existsSync(p));
const pythons = ['/usr/bin/python3', '/root/.pyenv/versions/3.11.7/bin/python3.11'].filter((p) => fs.existsSync(p));

beforeAll(() => {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--quiet']);
});

function snapshot(exe: string, extraEnv: Record<string, string> = {}): SnapshotOutcome {
  return takeSnapshot({ exePath: exe, argv: [exe], env: { ...env, ...extraEnv }, launcher });
}

function snap(exe: string, extraEnv: Record<string, string> = {}): ImageModel {
  const r = snapshot(exe, extraEnv);
  if (!r.ok) throw new Error(`${exe} refused: ${r.reason}: ${r.detail}`);
  return r.image;
}

function kinds(m: ImageModel): Map<string, number> {
  const k = new Map<string, number>();
  for (const s of m.slots) k.set(constName('CX_SLOT_', s.kind), (k.get(constName('CX_SLOT_', s.kind)) ?? 0) + 1);
  return k;
}

/** Everything a restorer relies on, for one image. */
function expectRestorable(exe: string, m: ImageModel): void {
  const k = kinds(m);
  // The words every glibc program has at its entry point (DESIGN.md, facts measured).
  for (const want of ['ARGC_ADDR', 'ARGV', 'ENVP', 'AUXV', 'TID', 'CANARY']) {
    expect(k.get(want), `${want} in ${[...k]}`).toBeGreaterThan(0);
  }
  expect(k.get('ARGC')).toBe(2); // ld.so's and libc's copies, found only by the differential run
  expect((k.get('ARGV_STR') ?? 0) + (k.get('ARGV_BASENAME') ?? 0)).toBeGreaterThan(0);
  for (const s of m.slots) {
    if (s.kind === SlotKind.ARGC || s.kind === SlotKind.TID) expect(s.width).toBe(4);
    else expect(s.width).toBe(8);
    if (s.kind === SlotKind.CANARY) expect(s.arg).toBe(8n);
  }

  let prevEnd = 0n;
  for (const r of m.regions) {
    expect(r.addr % 4096n).toBe(0n);
    expect(r.len % 4096n).toBe(0n);
    expect(r.len).toBeGreaterThan(0n);
    expect(r.addr >= prevEnd, `region at 0x${r.addr.toString(16)} overlaps or is out of order`).toBe(true);
    prevEnd = r.addr + r.len;
    if (r.source === Src.DATA) expect(r.data?.length).toBe(Number(r.len));
    if (r.source === Src.FILE) {
      expect(m.files[r.file]?.kind).toBe(FileKind.MAPPED);
      expect(r.offset % 4096n).toBe(0n);
    }
    if (r.prot === 0) expect(r.source).toBe(Src.ZERO);
  }
  let prevSlot = -1n;
  for (const s of m.slots) {
    expect(s.addr > prevSlot).toBe(true);
    prevSlot = s.addr;
    const r = m.regions.find((x) => s.addr >= x.addr && s.addr + BigInt(s.width) <= x.addr + x.len);
    expect(r?.source, `slot at 0x${s.addr.toString(16)}`).toBe(Src.DATA);
    expect((r?.flags ?? 0) & RegionFlag.PATCHED).toBe(RegionFlag.PATCHED);
  }
  for (const r of m.regions) {
    if (r.flags & RegionFlag.PATCHED) expect(m.slots.some((s) => s.addr >= r.addr && s.addr < r.addr + r.len)).toBe(true);
  }

  const exeFiles = m.files.filter((f) => (f.flags & FileFlag.EXE) !== 0);
  expect(exeFiles.map((f) => f.path)).toEqual([exe]);
  expect(m.files.some((f) => f.kind === FileKind.READ && f.path === '/etc/ld.so.cache')).toBe(true);
  expect(new Set(m.files.map((f) => f.path)).size).toBe(m.files.length);

  const st = m.state;
  expect(st.entry).toBe(st.atEntry);
  // A program behind a directory others cannot search (pyenv's under /root) depends on who took it.
  const hidden = !othersCanSearchTo(exe);
  // READS_EXE is the program's own (perl, cmake name /proc/self/exe): exe-reads tests cover it.
  expect(st.flags & ~StateFlag.READS_EXE).toBe(StateFlag.HAVE_TID_ADDRESS | StateFlag.HAVE_ROBUST_LIST | StateFlag.HAVE_RSEQ |
    StateFlag.HAVE_FS_BASE | (hidden ? StateFlag.IDENTITY_BOUND : 0));
  // Every directory on the way to a dependency is an ACCESS entry (a later chmod of it is noticed).
  for (const d of ['/', path.dirname(exe)]) expect(m.files.some((f) => f.kind === FileKind.ACCESS && f.path === d), d).toBe(true);
  expect(st.brk >= st.startBrk).toBe(true);
  expect(st.rseqLen).toBeGreaterThan(0);
  expect(st.comm).toBe(path.basename(exe).slice(0, 15));
  expect(m.vdso.find((v) => v.kind === VdsoKind.VDSO)?.offset).toBe(0n);
  expect(m.vdso.every((v) => v.kind === VdsoKind.VDSO || v.offset < 0n)).toBe(true);
  // No region may sit where the vdso block goes back at restore.
  for (const v of m.vdso) {
    const lo = st.vdsoBase + v.offset;
    expect(m.regions.some((r) => r.addr < lo + v.size && lo < r.addr + r.len)).toBe(false);
  }
  expect(m.key.exePath).toBe(exe);

  const bytes = serializeImage(m);
  const back = parseImage(bytes);
  expect(back.problems).toEqual([]);
  expect(back.model.slots).toEqual(m.slots);
  expect(back.model.state).toEqual(m.state);
  expect(back.model.files).toEqual(m.files);
  expect(back.model.regions.map((r) => [r.addr, r.len, r.prot, r.source, r.flags])).toEqual(
    m.regions.map((r) => [r.addr, r.len, r.prot, r.source, r.flags]));
  for (const [i, r] of back.model.regions.entries()) {
    if (r.source !== Src.DATA) continue;
    const stored = bytes.subarray(Number(r.offset), Number(r.offset + r.len));
    expect(stored.equals(m.regions[i]?.data as Buffer)).toBe(true);
  }
}

/** Whether every directory on the way to `p` has o+x. */
function othersCanSearchTo(p: string): boolean {
  const parts = path.dirname(fs.realpathSync(p)).split('/').filter(Boolean);
  return parts.every((_, i) => (fs.statSync(`/${parts.slice(0, i + 1).join('/')}`).mode & 0o1) !== 0) && (fs.statSync('/').mode & 0o1) !== 0;
}

describe('snapshots of real programs', () => {
  for (const exe of programs) {
    it(`${path.basename(exe)}: slots, regions, files and state are what a restore needs`, () => {
      expectRestorable(exe, snap(exe));
    });
  }

  /**
   * cmake links curl, gnutls, nettle and p11-kit here, whose constructors
   * look up GNUTLS_*, NETTLE_FAT_*, P11_KIT_*, OPENSSL_ia32cap with getenv:
   * the image is keyed on those variables (their values, or their absence),
   * not on the whole environment.
   */
  it.runIf(fs.existsSync('/usr/bin/cmake'))('cmake: restorable, keyed on the variables its libraries look up', () => {
    const secret = `s3cr3t-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const r = snapshot('/usr/bin/cmake', { CX_SECRET_TEST: secret, OPENSSL_ia32cap: '~0x200000200000000' });
    expect(r.ok, r.ok ? '' : `${r.reason}: ${r.detail}`).toBe(true);
    if (!r.ok) return;
    expectRestorable('/usr/bin/cmake', r.image);
    expect(r.image.key.envHash ?? 0n).toBe(0n);
    const names = r.image.envDeps?.map((d) => d.name) ?? [];
    expect(names).toContain('OPENSSL_ia32cap');
    expect(names.some((n) => n.startsWith('GNUTLS_'))).toBe(true);
    expect(names).not.toContain('PATH');
    // What a re-take needs: the values of the variables looked up, and nothing else of the environment.
    expect(r.image.snapshotEnv).toEqual(['OPENSSL_ia32cap=~0x200000200000000']);
    const bytes = serializeImage(r.image);
    for (const needle of [secret, 'CX_SECRET_TEST']) expect(bytes.includes(Buffer.from(needle)), needle).toBe(false);
  });

  for (const exe of pythons) {
    it(`${exe}: snapshots like any other program (its start-up cost is after main)`, () => {
      expectRestorable(exe, snap(exe));
    });
  }

  it('keeps the snapshot environment and argv out of the image', () => {
    const secret = `s3cr3t-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const m = snap('/bin/bash', { CX_SECRET_TEST: secret, ANOTHER: `x${secret}y` });
    const bytes = serializeImage(m);
    for (const needle of [secret, 'CX_SECRET_TEST', 'cx-pad-', 'cx-diff-', 'CX_DIFFERENTIAL_RUN']) {
      expect(bytes.includes(Buffer.from(needle)), needle).toBe(false);
    }
  });

  it('takes the real run with address space randomisation on', () => {
    const a = snap('/bin/dash');
    const b = snap('/bin/dash');
    expect(a.state.entry).not.toBe(b.state.entry);
    expect(a.slots.length).toBe(b.slots.length);
    expect(a.slots.map((s) => [s.kind, s.arg, s.width])).toEqual(b.slots.map((s) => [s.kind, s.arg, s.width]));
  });

  it('drops the loader\'s variables and binds every symbol now', () => {
    const r = snapshot('/bin/cat', { LD_PRELOAD: '/nonexistent/preload.so', LD_LIBRARY_PATH: '/nonexistent', MALLOC_CHECK_: '3' });
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.image.files.some((f) => f.path.startsWith('/nonexistent'))).toBe(false);
  });
});
