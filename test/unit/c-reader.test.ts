/**
 * The C reader (bin/cached-exec --internal-inspect) must see exactly what the
 * TypeScript writer wrote, field by field. This is the proof that the generated
 * header and the schema agree on the bytes, not only on the names.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RESUME_REGS, parseImage, serializeImage, type ImageModel } from '../../src/image/format.js';
import { FileKind, FileFlag, Src, SlotKind, StateFlag, VdsoKind, Prot, RegionFlag, Ident, ResumeFlag, hash64 } from '../../src/image/schema.js';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');

function sampleModel(): ImageModel {
  const page = Buffer.alloc(4096, 0x5a);
  return {
    createdNs: 1_795_000_000_123_456_789n,
    key: {
      euid: 1000, exePath: '/usr/bin/example', exeDev: 0x803n, exeIno: 0xfedcba9876543210n, exeSize: 123456n,
      exeMtimeSec: 1_700_000_000n, exeMtimeNsec: 999_999_999, exeCtimeSec: 1_700_000_001n, exeCtimeNsec: 1,
      pathEnv: '/usr/local/bin:/usr/bin:/bin', kernelRelease: '6.18.0-test',
    },
    files: [
      { path: '/usr/bin/example', kind: FileKind.MAPPED, dev: 0x803n, ino: 11n, size: 123456n, mtimeSec: 5n, mtimeNsec: 6, ctimeSec: 7n, ctimeNsec: 8, mode: 0o100755, flags: FileFlag.EXE },
      { path: '/etc/ld.so.cache', kind: FileKind.READ, dev: 0x803n, ino: 12n, size: 4096n, mtimeSec: 9n, mtimeNsec: 10, ctimeSec: 11n, ctimeNsec: 12, mode: 0o100644, flags: 0 },
      { path: '/opt/lib/glibc-hwcaps/x86-64-v3/libfoo.so', kind: FileKind.ABSENT, dev: 0n, ino: 0n, size: 0n, mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0, mode: 0, flags: 0 },
    ],
    regions: [
      { addr: 0x555555554000n, len: 0x2000n, prot: Prot.READ, source: Src.FILE, file: 0, offset: 0n, flags: 0 },
      { addr: 0x555555556000n, len: 0x1000n, prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: RegionFlag.PATCHED, data: page },
      { addr: 0x555555557000n, len: 0x3000n, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: RegionFlag.HEAP },
    ],
    slots: [
      { addr: 0x555555556008n, kind: SlotKind.ARGV, width: 8, arg: 0n },
      { addr: 0x555555556010n, kind: SlotKind.ARGC, width: 4, arg: 0n },
      { addr: 0x555555556018n, kind: SlotKind.CANARY, width: 8, arg: 8n },
    ],
    state: {
      entry: 0x555555555040n, rtldFini: 0x7ffff7fc9040n, fsBase: 0x7ffff7d8a740n, tidAddress: 0x7ffff7d8aa10n,
      robustHead: 0x7ffff7d8aa20n, robustLen: 24n, rseqArea: 0x7ffff7d8b0e0n, rseqLen: 32, rseqSig: 0x53053053,
      startCode: 0x555555555000n, endCode: 0x555555556000n, startData: 0x555555557000n, endData: 0x555555558000n,
      startBrk: 0x555555559000n, brk: 0x55555557a000n, vdsoBase: 0x7ffff7fc1000n, atPhdr: 0x555555554040n,
      atPhnum: 13n, atEntry: 0x555555555040n, atBase: 0x7ffff7fc3000n,
      flags: StateFlag.HAVE_FS_BASE | StateFlag.HAVE_RSEQ, comm: 'example',
    },
    vdso: [
      { offset: -0x4000n, size: 0x3000n, kind: VdsoKind.VVAR },
      { offset: -0x1000n, size: 0x1000n, kind: VdsoKind.VVAR_VCLOCK },
      { offset: 0n, size: 0x2000n, kind: VdsoKind.VDSO },
    ],
    limits: [{ resource: 3, soft: 8_388_608n, hard: 0xffff_ffff_ffff_ffffn }, { resource: 7, soft: 1024n, hard: 4096n }],
  };
}

/** The sample as a post-init image: init spec, resume registers, dispositions, XSAVE area. */
function postInitModel(): ImageModel {
  const m = sampleModel();
  const xstate = Buffer.alloc(832);
  for (let i = 0; i < xstate.length; i++) xstate[i] = (i * 7 + 3) & 0xff;
  m.key = { ...m.key, initSpec: 'after-init\x1f-c\x1f. "$0"\x1f/pkg/shell/cached-exec-resume.bash', envHash: 0xfedcba9876543211n };
  m.regions.push({ addr: 0x7ffffffde000n, len: 0x21000n, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: RegionFlag.STACK });
  m.slots = [
    { addr: 0x555555556008n, kind: SlotKind.PROCESS_ID, width: 4, arg: BigInt(Ident.PGID) },
    { addr: 0x555555556010n, kind: SlotKind.PROCESS_ID_TEXT, width: 8, arg: BigInt(Ident.SID | (8 << 8)) },
  ];
  const regs = Object.fromEntries(RESUME_REGS.map((r, i) => [r, 0x1000n * BigInt(i + 1) + 0xabcdef0000000000n]));
  m.resume = {
    regs: regs as NonNullable<ImageModel['resume']>['regs'], xfeatures: 0x2e7n, xstate, sigmask: 0x10000n,
    ignoredAtStart: 0x4n, stackReserve: 8n << 20n, resumeFd: 100, umask: 0o027,
    sigactions: [
      { signo: 3, handler: 1n, flags: 0x4000000n, restorer: 0x7ffff7c3c050n, mask: 0n },
      { signo: 17, handler: 0x555555580040n, flags: 0x14000000n, restorer: 0x7ffff7c3c050n, mask: 0x10000n },
    ],
  };
  return m;
}

function inspect(file: string): { status: number | null; fields: Map<string, string> } {
  const r = spawnSync(launcher, ['--internal-inspect', file], { encoding: 'utf8' });
  const fields = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return { status: r.status, fields };
}

const u64 = (v: bigint | number): string => BigInt.asUintN(64, BigInt(v)).toString();

describe('C reader agrees with the TypeScript writer', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-creader-'));
  const file = path.join(dir, 'sample.img');
  const model = sampleModel();
  const bytes = serializeImage(model);
  fs.writeFileSync(file, bytes, { mode: 0o600 });

  it('builds the launcher', () => {
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--quiet']);
    expect(fs.existsSync(launcher)).toBe(true);
  });

  it('reads every field', () => {
    const { status, fields } = inspect(file);
    expect(fields.get('check.outcome')).toBe('0');
    expect(status).toBe(0);
    const expectKv: [string, string][] = [
      ['header.file_size', String(bytes.length)],
      ['header.created_ns', u64(model.createdNs)],
      ['key.euid', '1000'],
      ['key.exe_path', model.key.exePath],
      ['key.exe_dev', u64(model.key.exeDev)],
      ['key.exe_ino', u64(model.key.exeIno)],
      ['key.exe_size', u64(model.key.exeSize)],
      ['key.exe_mtime_sec', u64(model.key.exeMtimeSec)],
      ['key.exe_mtime_nsec', String(model.key.exeMtimeNsec)],
      ['key.exe_ctime_sec', u64(model.key.exeCtimeSec)],
      ['key.exe_ctime_nsec', String(model.key.exeCtimeNsec)],
      ['key.path_env', model.key.pathEnv],
      ['key.kernel_release', model.key.kernelRelease],
      ['state.comm', 'example'],
    ];
    model.files.forEach((f, i) => {
      expectKv.push([`file[${i}].path`, f.path], [`file[${i}].kind`, String(f.kind)], [`file[${i}].dev`, u64(f.dev)],
        [`file[${i}].ino`, u64(f.ino)], [`file[${i}].size`, u64(f.size)], [`file[${i}].mtime_sec`, u64(f.mtimeSec)],
        [`file[${i}].mtime_nsec`, String(f.mtimeNsec)], [`file[${i}].ctime_sec`, u64(f.ctimeSec)],
        [`file[${i}].ctime_nsec`, String(f.ctimeNsec)], [`file[${i}].mode`, String(f.mode)], [`file[${i}].flags`, String(f.flags)]);
    });
    model.regions.forEach((r, i) => {
      expectKv.push([`region[${i}].addr`, u64(r.addr)], [`region[${i}].len`, u64(r.len)], [`region[${i}].prot`, String(r.prot)],
        [`region[${i}].source`, String(r.source)], [`region[${i}].flags`, String(r.flags)]);
      if (r.source === Src.FILE) expectKv.push([`region[${i}].offset`, u64(r.offset)], [`region[${i}].file`, String(r.file)]);
    });
    // DATA offsets are assigned by the writer: page-aligned, inside the file.
    const dataOff = BigInt(fields.get('region[1].offset') ?? '0');
    expect(dataOff % 4096n).toBe(0n);
    expect(bytes.subarray(Number(dataOff), Number(dataOff) + 4096).equals(Buffer.alloc(4096, 0x5a))).toBe(true);
    model.slots.forEach((s, i) => {
      expectKv.push([`slot[${i}].addr`, u64(s.addr)], [`slot[${i}].arg`, u64(s.arg)], [`slot[${i}].kind`, String(s.kind)],
        [`slot[${i}].width`, String(s.width)]);
    });
    const st = model.state;
    const stateFields: [string, bigint | number][] = [
      ['entry', st.entry], ['rtld_fini', st.rtldFini], ['fs_base', st.fsBase], ['tid_address', st.tidAddress],
      ['robust_head', st.robustHead], ['robust_len', st.robustLen], ['rseq_area', st.rseqArea], ['rseq_len', st.rseqLen],
      ['rseq_sig', st.rseqSig], ['start_code', st.startCode], ['end_code', st.endCode], ['start_data', st.startData],
      ['end_data', st.endData], ['start_brk', st.startBrk], ['brk', st.brk], ['vdso_base', st.vdsoBase],
      ['at_phdr', st.atPhdr], ['at_phnum', st.atPhnum], ['at_entry', st.atEntry], ['at_base', st.atBase], ['flags', st.flags],
    ];
    for (const [k, v] of stateFields) expectKv.push([`state.${k}`, u64(v)]);
    model.vdso.forEach((v, i) => {
      expectKv.push([`vdso[${i}].offset`, u64(v.offset)], [`vdso[${i}].size`, u64(v.size)], [`vdso[${i}].kind`, String(v.kind)]);
    });
    model.limits?.forEach((l, i) => {
      expectKv.push([`limit[${i}].resource`, String(l.resource)], [`limit[${i}].soft`, u64(l.soft)], [`limit[${i}].hard`, u64(l.hard)]);
    });
    expect(model.limits?.length).toBe(2);
    for (const [k, v] of expectKv) expect(fields.get(k), k).toBe(v);
  });

  it('reads every post-init field', () => {
    const m = postInitModel();
    const pfile = path.join(dir, 'post-init.img');
    const pbytes = serializeImage(m);
    fs.writeFileSync(pfile, pbytes, { mode: 0o600 });
    expect(parseImage(pbytes).model.resume?.sigactions.length).toBe(2);
    const { status, fields } = inspect(pfile);
    expect(fields.get('check.outcome')).toBe('0');
    expect(status).toBe(0);
    const r = m.resume as NonNullable<ImageModel['resume']>;
    const expectKv: [string, string][] = [
      ['key.init_spec', m.key.initSpec as string],
      ['key.env_hash', u64(m.key.envHash as bigint)],
      ['resume.xfeatures', u64(r.xfeatures)],
      ['resume.sigmask', u64(r.sigmask)],
      ['resume.ignored_at_start', u64(r.ignoredAtStart)],
      ['resume.stack_reserve', u64(r.stackReserve)],
      ['resume.xstate_size', String(r.xstate.length)],
      ['resume.resume_fd', String(r.resumeFd)],
      ['resume.umask', String(r.umask)],
      ['resume.flags', String(ResumeFlag.SET_UMASK)],
      ['resume.sigactions', String(r.sigactions.length)],
      ['xstate.length', String(r.xstate.length)],
      ['xstate.hash', u64(hash64(r.xstate))],
      [`region[${m.regions.length - 1}].flags`, String(RegionFlag.STACK)],
    ];
    for (const name of RESUME_REGS) expectKv.push([`resume.${name}`, u64(r.regs[name])]);
    r.sigactions.forEach((a, i) => {
      expectKv.push([`sigaction[${i}].signo`, String(a.signo)], [`sigaction[${i}].handler`, u64(a.handler)],
        [`sigaction[${i}].flags`, u64(a.flags)], [`sigaction[${i}].restorer`, u64(a.restorer)], [`sigaction[${i}].mask`, u64(a.mask)]);
    });
    m.slots.forEach((s, i) => {
      expectKv.push([`slot[${i}].addr`, u64(s.addr)], [`slot[${i}].arg`, u64(s.arg)], [`slot[${i}].kind`, String(s.kind)],
        [`slot[${i}].width`, String(s.width)]);
    });
    for (const [k, v] of expectKv) expect(fields.get(k), k).toBe(v);
    // A post-link image has an empty init spec and no resume fields.
    expect(inspect(file).fields.get('key.init_spec')).toBe('');
    expect(inspect(file).fields.has('resume.rip')).toBe(false);
  });

  it('rejects a corrupted checksum, a truncated file and a bad magic', () => {
    const corrupt = Buffer.from(bytes);
    corrupt[200] = (corrupt[200] ?? 0) ^ 0xff; // inside the section bodies
    fs.writeFileSync(file + '.c', corrupt);
    expect(inspect(file + '.c').fields.get('check.outcome')).toBe('9'); // FAIL_CHECKSUM

    fs.writeFileSync(file + '.t', bytes.subarray(0, bytes.length - 4096));
    expect(inspect(file + '.t').fields.get('check.outcome')).toBe('10'); // FAIL_TRUNCATED

    const magic = Buffer.from(bytes);
    magic[0] = 0;
    fs.writeFileSync(file + '.m', magic);
    expect(inspect(file + '.m').fields.get('check.outcome')).toBe('7'); // FAIL_HEADER
  });
});
