/**
 * The image format's single source of truth (src/image/schema.ts) against
 * everything derived from it: the committed C header, the writer and reader,
 * the checksum, and the key bytes the launcher hashes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { keyBytes, keyHash } from '../../src/cache/key.js';
import { decodeStruct } from '../../src/image/codec.js';
import { PAGE_SIZE, parseImage, serializeImage, type ImageKey, type ImageModel } from '../../src/image/format.js';
import { generateHeader } from '../../src/image/gen-header.js';
import {
  ABI_HASH, FORMAT_VERSION, FileFlag, FileKind, HEADER, MAGIC, Prot, RegionFlag, SECTION, Section, SlotKind, Src, StateFlag,
  VdsoKind, describeFormat, hash64, layout, sizeOf,
} from '../../src/image/schema.js';

const root = path.resolve(import.meta.dirname, '../..');

function syntheticModel(): ImageModel {
  const data1 = Buffer.alloc(2 * PAGE_SIZE);
  for (let i = 0; i < data1.length; i++) data1[i] = (i * 7) & 0xff;
  const data2 = Buffer.alloc(PAGE_SIZE, 0xa5);
  return {
    createdNs: 1_796_000_000_000_000_001n,
    key: {
      euid: 4242, exePath: '/opt/ünïcode/bin/prog', exeDev: 0xfd01n, exeIno: 0xffff_ffff_ffff_fff0n, exeSize: 98765n,
      exeMtimeSec: 1_700_000_000n, exeMtimeNsec: 1, exeCtimeSec: -5n, exeCtimeNsec: 999_999_999,
      pathEnv: '/usr/bin::/bin:', kernelRelease: '6.18.0-synthetic', cpuId: 0x8badf00d,
    },
    files: [
      { path: '/opt/ünïcode/bin/prog', kind: FileKind.MAPPED, dev: 0xfd01n, ino: 0xffff_ffff_ffff_fff0n, size: 98765n, mtimeSec: 1_700_000_000n, mtimeNsec: 1, ctimeSec: -5n, ctimeNsec: 999_999_999, mode: 0o100755, flags: FileFlag.EXE },
      { path: '/lib/x86_64-linux-gnu/libc.so.6', kind: FileKind.MAPPED, dev: 0x801n, ino: 77n, size: 1_922_136n, mtimeSec: 1n, mtimeNsec: 2, ctimeSec: 3n, ctimeNsec: 4, mode: 0o100644, flags: 0 },
      { path: '/etc/ld.so.cache', kind: FileKind.READ, dev: 0x801n, ino: 78n, size: 20_000n, mtimeSec: 5n, mtimeNsec: 6, ctimeSec: 7n, ctimeNsec: 8, mode: 0o100644, flags: 0 },
      { path: '/opt/lib/glibc-hwcaps/x86-64-v3/libfoo.so', kind: FileKind.ABSENT, dev: 0n, ino: 0n, size: 0n, mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0, mode: 0, flags: 0 },
    ],
    regions: [
      { addr: 0x5555_5555_4000n, len: 0x1000n, prot: Prot.READ, source: Src.FILE, file: 0, offset: 0n, flags: 0 },
      { addr: 0x5555_5555_5000n, len: 0x2000n, prot: Prot.READ | Prot.EXEC, source: Src.FILE, file: 0, offset: 0x1000n, flags: 0 },
      { addr: 0x5555_5555_7000n, len: 0x2000n, prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: RegionFlag.PATCHED, data: data1 },
      { addr: 0x5555_5555_9000n, len: 0x21000n, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: RegionFlag.HEAP },
      { addr: 0x7fff_f7d8_0000n, len: 0x1000n, prot: Prot.READ, source: Src.DATA, file: 0, offset: 0n, flags: RegionFlag.PATCHED, data: data2 },
    ],
    slots: [
      { addr: 0x5555_5555_7008n, kind: SlotKind.ARGV, width: 8, arg: 0n },
      { addr: 0x5555_5555_7010n, kind: SlotKind.ARGC, width: 4, arg: 0n },
      { addr: 0x5555_5555_7018n, kind: SlotKind.ARGV_BASENAME, width: 8, arg: 0n },
      { addr: 0x7fff_f7d8_0028n, kind: SlotKind.CANARY, width: 8, arg: 8n },
    ],
    state: {
      entry: 0x5555_5555_5040n, rtldFini: 0x7fff_f7fc_9040n, fsBase: 0x7fff_f7d8_a740n, tidAddress: 0x7fff_f7d8_aa10n,
      robustHead: 0x7fff_f7d8_aa20n, robustLen: 24n, rseqArea: 0x7fff_f7d8_b0e0n, rseqLen: 32, rseqSig: 0x5305_3053,
      startCode: 0x5555_5555_5000n, endCode: 0x5555_5555_7000n, startData: 0x5555_5555_7000n, endData: 0x5555_5555_9000n,
      startBrk: 0x5555_5555_9000n, brk: 0x5555_5557_a000n, vdsoBase: 0x7fff_f7fc_1000n, atPhdr: 0x5555_5555_4040n,
      atPhnum: 13n, atEntry: 0x5555_5555_5040n, atBase: 0x7fff_f7fc_3000n,
      flags: StateFlag.HAVE_FS_BASE | StateFlag.HAVE_RSEQ | StateFlag.HAVE_TID_ADDRESS | StateFlag.HAVE_ROBUST_LIST, comm: 'prog',
    },
    vdso: [
      { offset: -0x4000n, size: 0x3000n, kind: VdsoKind.VVAR },
      { offset: -0x1000n, size: 0x1000n, kind: VdsoKind.VVAR_VCLOCK },
      { offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO },
    ],
    limits: [{ resource: 3, soft: 8_388_608n, hard: 0xffff_ffff_ffff_ffffn }],
  };
}

/** The model as the reader returns it: DATA bytes live in the file, not in the model. */
function withoutData(m: ImageModel): ImageModel {
  return { ...m, regions: m.regions.map(({ data: _data, ...r }) => ({ ...r })) };
}

describe('C header', () => {
  it('the committed src/restore/image_format.h is exactly generateHeader() (run `npm run gen:header` after a schema change)', () => {
    const committed = fs.readFileSync(path.join(root, 'src', 'restore', 'image_format.h'), 'utf8');
    expect(committed).toBe(generateHeader());
  });

  it('carries the ABI hash of the schema text and the format version', () => {
    const h = generateHeader();
    expect(h).toContain(`#define CX_ABI_HASH 0x${ABI_HASH.toString(16).padStart(8, '0')}u`);
    expect(h).toContain(`#define CX_FORMAT_VERSION ${FORMAT_VERSION}u`);
    expect(ABI_HASH).toBe(Number(hash64(new TextEncoder().encode(describeFormat())) & 0xffffffffn));
  });

  it('lays out every struct without implicit padding', () => {
    for (const s of [HEADER, SECTION]) expect(layout(s).size % 8).toBe(0);
    expect(sizeOf(HEADER)).toBe(80);
    expect(sizeOf(SECTION)).toBe(32);
  });
});

describe('serialize / parse', () => {
  const model = syntheticModel();
  const bytes = serializeImage(model);

  it('round-trips every field', () => {
    const parsed = parseImage(bytes);
    expect(parsed.problems).toEqual([]);
    const got = parsed.model;
    const want = withoutData(model);
    expect(got.createdNs).toBe(want.createdNs);
    expect(got.key).toEqual(want.key);
    expect(got.files).toEqual(want.files);
    expect(got.slots).toEqual(want.slots);
    expect(got.state).toEqual(want.state);
    expect(got.vdso).toEqual(want.vdso);
    expect(got.limits).toEqual(want.limits);
    expect(got.regions.map(({ offset: _o, ...r }) => r)).toEqual(want.regions.map(({ offset: _o, ...r }) => r));
    // FILE offsets are kept; DATA offsets are assigned by the writer.
    expect(got.regions[1]?.offset).toBe(0x1000n);
  });

  it('stores DATA regions page-aligned, in address order, byte-exact', () => {
    const { model: got, header } = parseImage(bytes);
    const data = got.regions.filter((r) => r.source === Src.DATA);
    expect(data).toHaveLength(2);
    expect(Number(data[0]?.offset)).toBe(Number(header.data_offset));
    expect(Number(data[1]?.offset)).toBe(Number(header.data_offset) + 2 * PAGE_SIZE);
    for (const [i, r] of data.entries()) {
      expect(Number(r.offset) % PAGE_SIZE).toBe(0);
      const src = model.regions.filter((x) => x.source === Src.DATA)[i]?.data as Buffer;
      expect(bytes.subarray(Number(r.offset), Number(r.offset) + Number(r.len)).equals(src)).toBe(true);
    }
    expect(bytes.length).toBe(Number(header.data_offset) + 3 * PAGE_SIZE);
    expect(BigInt(header.file_size)).toBe(BigInt(bytes.length));
  });

  it('writes the header fields the restorer checks', () => {
    const h = decodeStruct(HEADER, bytes, 0);
    expect(h.magic).toBe(MAGIC);
    expect(h.format_version).toBe(FORMAT_VERSION);
    expect(h.abi_hash).toBe(ABI_HASH);
    expect(h.page_size).toBe(4096);
    expect(Number(h.meta_size) % 8).toBe(0);
    expect(Number(h.data_offset) % 4096).toBe(0);
    const types = parseImage(bytes).sections.map((s) => Number(s.type));
    expect(types).toEqual([Section.KEY, Section.STRINGS, Section.FILES, Section.REGIONS, Section.SLOTS, Section.STATE, Section.VDSO, Section.LIMITS, Section.INTEGRITY]);
  });

  it('is deterministic', () => {
    expect(serializeImage(syntheticModel()).equals(bytes)).toBe(true);
  });

  it('round-trips an image without files, slots or DATA regions', () => {
    const bare: ImageModel = { ...syntheticModel(), files: [], slots: [], regions: [
      { addr: 0x10000n, len: 0x1000n, prot: Prot.READ, source: Src.ZERO, file: 0, offset: 0n, flags: 0 },
    ] };
    const b = serializeImage(bare);
    const p = parseImage(b);
    expect(p.problems).toEqual([]);
    expect(p.model.regions).toHaveLength(1);
    expect(b.length).toBe(Number(p.header.data_offset));
  });
});

describe('checksum', () => {
  const bytes = serializeImage(syntheticModel());
  const metaSize = Number(decodeStruct(HEADER, bytes, 0).meta_size);

  it('detects a flipped byte anywhere in the metadata', () => {
    // Every 61st byte of the section table and bodies (the header's own fields are checked separately).
    for (let at = sizeOf(HEADER); at < metaSize; at += 61) {
      const c = Buffer.from(bytes);
      c[at] = (c[at] as number) ^ 0x01;
      let problems: string[];
      try {
        problems = parseImage(c).problems;
      } catch {
        continue; // corrupting the section table can make a section unreadable: also a rejection
      }
      expect(problems, `byte ${at}`).toContain('checksum mismatch');
    }
  });

  it('detects a changed creation time and a changed checksum field', () => {
    const c = Buffer.from(bytes);
    const created = layout(HEADER).fields.find((f) => f.name === 'created_ns')?.offset as number;
    c[created] = (c[created] as number) ^ 0x80;
    expect(parseImage(c).problems).toContain('checksum mismatch');
    const d = Buffer.from(bytes);
    const sum = layout(HEADER).fields.find((f) => f.name === 'checksum')?.offset as number;
    d[sum] = (d[sum] as number) ^ 0x01;
    expect(parseImage(d).problems).toContain('checksum mismatch');
  });

  it('reports truncation and rejects a bad magic', () => {
    expect(parseImage(bytes.subarray(0, bytes.length - PAGE_SIZE)).problems.some((p) => p.startsWith('file size'))).toBe(true);
    const m = Buffer.from(bytes);
    m[0] = 0;
    expect(() => parseImage(m)).toThrow(/magic/);
  });
});

describe('key', () => {
  const k: ImageKey = {
    euid: 1000, exePath: '/usr/bin/bash', exeDev: 0x803n, exeIno: 1234567n, exeSize: 1265648n,
    exeMtimeSec: 1_700_000_000n, exeMtimeNsec: 123456789, exeCtimeSec: 1_700_000_100n, exeCtimeNsec: 987654321,
    pathEnv: '/usr/local/bin:/usr/bin:/bin', kernelRelease: '6.18.0-test', cpuId: 0x12345679,
  };

  it('hash64 is FNV-1a over little-endian 64-bit words, then bytes (known vectors)', () => {
    expect(hash64(new Uint8Array())).toBe(0xcbf29ce484222325n); // the offset basis
    expect(hash64(Buffer.from('a'))).toBe(0xaf63dc4c8601ec8cn); // the published FNV-1a 64 value of "a"
    expect(hash64(Buffer.from('cached-exec'))).toBe(0x8661520afac201e6n);
  });

  it('keyBytes follows the documented record, byte for byte', () => {
    const expected = [
      '03000000', // u32 format_version
      'e8030000', // u32 euid 1000
      '0308000000000000', // u64 dev
      '87d6120000000000', // u64 ino 1234567
      'f04f130000000000', // u64 size 1265648
      '00f1536500000000', // i64 mtime_sec 1700000000
      '64f1536500000000', // i64 ctime_sec 1700000100
      '15cd5b07', // u32 mtime_nsec 123456789
      'b168de3a', // u32 ctime_nsec 987654321
      Buffer.from('/usr/bin/bash\0/usr/local/bin:/usr/bin:/bin\x006.18.0-test\0').toString('hex'),
      '0000000000000000', // u64 groups_hash (none: a system-layer key)
      '7956341200000000', // u64 cpu_id 0x12345679
    ].join('');
    expect(FORMAT_VERSION).toBe(3);
    expect(keyBytes(k).toString('hex')).toBe(expected);
    // A post-init image's init spec comes before the groups, a variant's selector after the CPU id; no environment.
    const spec = 'after-init\x1f/x';
    expect(keyBytes({ ...k, initSpec: spec, groupsHash: 7n, variant: 0x1122334455667788n }).toString('hex')).toBe(
      expected.slice(0, -32) + Buffer.from(`${spec}\0`).toString('hex') + '0700000000000000' + '7956341200000000' + '8877665544332211');
  });

  it('keyHash vectors are stable', () => {
    expect(keyHash(k)).toBe('afc718827495c22e');
    expect(keyHash({ ...k, euid: 0 })).toBe('dd4cec1a7495c22e');
    expect(keyHash({ ...k, pathEnv: '/usr/bin:/bin' })).toBe('858ac7d127db9255');
    expect(keyHash({ ...k, variant: 0x1234n })).toBe('0ff041a4553d25ea');
  });

  it('every key field changes the hash', () => {
    const variants: Partial<ImageKey>[] = [
      { euid: 1001 }, { exePath: '/usr/bin/bash2' }, { exeDev: 0x804n }, { exeIno: 1234568n }, { exeSize: 1265649n },
      { exeMtimeSec: 1_700_000_001n }, { exeMtimeNsec: 123456780 }, { exeCtimeSec: 1_700_000_101n }, { exeCtimeNsec: 987654320 },
      { pathEnv: '/usr/local/bin:/usr/bin:/bin:' }, { kernelRelease: '6.18.1-test' }, { groupsHash: 1n }, { variant: 1n },
      { initSpec: 'after-init' }, { cpuId: 0x12345677 },
    ];
    const hashes = new Set([keyHash(k), ...variants.map((v) => keyHash({ ...k, ...v }))]);
    expect(hashes.size).toBe(variants.length + 1);
  });
});
