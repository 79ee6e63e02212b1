/**
 * In-memory model of an image, its serialisation and its parsing.
 *
 * Layout on disk: header | section table | sections (8-aligned) | pad to page |
 * region data (page-aligned, in address order so adjacent DATA regions are
 * contiguous in the file and can be merged into one mmap).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeStruct, encodeStruct } from './codec.js';
import {
  ABI_HASH, ENV_DEP, FILE, FORMAT_VERSION, HEADER, INTEGRITY, KEY, LIMIT, MAGIC, REGION, RESUME, SECTION, SIGACTION, SLOT, STATE,
  VDSO_PART, FileKind, ResumeFlag, Section, SecFlag, Src, hash64, sizeOf, type StructDef,
} from './schema.js';
import { hostCpuId, hostMachine, systemPageSize } from './machine.js';

/** AT_PAGESZ of this kernel: data is laid out (and mapped at restore) in its pages; the header records it. */
export const PAGE_SIZE = systemPageSize();

export interface ImageKey {
  euid: number;
  exePath: string;
  exeDev: bigint;
  exeIno: bigint;
  exeSize: bigint;
  exeMtimeSec: bigint;
  exeMtimeNsec: number;
  exeCtimeSec: bigint;
  exeCtimeNsec: number;
  pathEnv: string;
  kernelRelease: string;
  /**
   * Non-zero: the image depends on the whole environment and serves only one
   * with this sum (post-link: envHash(), constructors walked `environ`;
   * post-init: resumeEnvHash(), the init ran children or listed variables).
   */
  envHash?: bigint;
  /**
   * Post-init images: what ran before the checkpoint (adapter and its init
   * arguments, see src/resume/spec.ts). Part of the lookup key.
   */
  initSpec?: string;
  /** groupsHash() of the user the image was taken for; 0 in the system layer. Part of the lookup key. */
  groupsHash?: bigint;
  /**
   * The CPU id the image is for (the launcher's cx_arch_cpu_id; default: this
   * machine's, hostCpuId()). Part of the lookup key, and the header's cpu_id,
   * which the launcher checks (FAIL_CPU).
   */
  cpuId?: number;
  /**
   * A variant image: serves another environment than the primary image of
   * the same key; part of its lookup key (src/cache/envdeps.ts).
   */
  variant?: bigint;
}

/** A variable an image depends on (cx_env_dep; src/cache/envdeps.ts says how a run's value is compared). */
export interface ImageEnvDep {
  name: string;
  flags: number; // EnvDepFlag
  valueHash: bigint;
}

/** Registers by the names of the kernel's user_regs_struct (cx_resume fields). */
export const RESUME_REGS = ['r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx',
  'rsi', 'rdi', 'orig_rax', 'rip', 'eflags', 'rsp', 'gs_base'] as const;
export type ResumeReg = (typeof RESUME_REGS)[number];

export interface ImageSigaction {
  signo: number;
  handler: bigint;
  flags: bigint;
  restorer: bigint;
  mask: bigint;
}

/** Post-init images: the stopped thread and the process state around it. */
export interface ImageResume {
  regs: Record<ResumeReg, bigint>;
  xfeatures: bigint;
  /** XSAVE standard-format area, as PTRACE_GETREGSET(NT_X86_XSTATE) gave it. */
  xstate: Buffer;
  sigmask: bigint;
  ignoredAtStart: bigint;
  stackReserve: bigint;
  resumeFd: number;
  /** Set when the init changed the umask: the restore applies it. */
  umask?: number;
  sigactions: ImageSigaction[];
}

export interface ImageFile {
  path: string;
  kind: number; // FileKind
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
  mode: number;
  flags: number; // FileFlag
  /** Owner: written and read back for ACCESS entries only (a directory on the way to a dependency). */
  uid?: number;
  gid?: number;
}

export interface ImageRegion {
  addr: bigint;
  len: bigint;
  prot: number; // Prot bits
  source: number; // Src
  /** FILE: index into files. */
  file: number;
  /** FILE: offset in the file. DATA: filled in by the writer (absolute image offset). */
  offset: bigint;
  flags: number; // RegionFlag
  /** DATA: the bytes (len of them). */
  data?: Buffer;
}

export interface ImageSlot {
  addr: bigint;
  kind: number; // SlotKind
  width: 4 | 8;
  arg: bigint;
}

export interface ImageState {
  entry: bigint;
  rtldFini: bigint;
  fsBase: bigint;
  tidAddress: bigint;
  robustHead: bigint;
  robustLen: bigint;
  rseqArea: bigint;
  rseqLen: number;
  rseqSig: number;
  startCode: bigint;
  endCode: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  brk: bigint;
  vdsoBase: bigint;
  atPhdr: bigint;
  atPhnum: bigint;
  atEntry: bigint;
  atBase: bigint;
  flags: number; // StateFlag
  comm: string;
}

export interface ImageVdsoPart {
  offset: bigint;
  size: bigint;
  kind: number; // VdsoKind
}

/** A resource limit as the program read it (prlimit64 without a new value): RLIMIT_*, soft and hard. */
export interface ImageLimit {
  resource: number;
  soft: bigint;
  hard: bigint;
}

const LIMIT_NAMES = ['CPU', 'FSIZE', 'DATA', 'STACK', 'CORE', 'RSS', 'NPROC', 'NOFILE', 'MEMLOCK', 'AS', 'LOCKS', 'SIGPENDING', 'MSGQUEUE', 'NICE', 'RTPRIO', 'RTTIME'];

/** "RLIMIT_STACK 8388608/unlimited" (soft/hard), for --warm's notes, --inspect and --explain. */
export function describeLimit(l: ImageLimit): string {
  const v = (x: bigint): string => (x === 0xffffffffffffffffn ? 'unlimited' : String(x));
  return `RLIMIT_${LIMIT_NAMES[l.resource] ?? String(l.resource)} ${v(l.soft)}/${v(l.hard)}`;
}

export interface ImageModel {
  createdNs: bigint;
  key: ImageKey;
  files: ImageFile[];
  regions: ImageRegion[];
  slots: ImageSlot[];
  state: ImageState;
  vdso: ImageVdsoPart[];
  resume?: ImageResume;
  /** The environment variables the image depends on (empty: none, or envHash binds the whole environment). */
  envDeps?: ImageEnvDep[];
  /** The environment the snapshot ran in (NAME=value): what a re-take of this image needs (SNAPSHOT_ENV). */
  snapshotEnv?: string[];
  /** Resource limits the program read before the image was taken (LIMITS): a restore needs the same ones. */
  limits?: ImageLimit[];
  /** Read back from an image (the writer computes it): the region data's checksum. */
  integrity?: { dataHash: bigint; dataLen: bigint };
}

/**
 * The hot path trusts an image's region data as the kernel trusts a
 * library's code (checking every page would cost more than the restore);
 * --explain, --cleanup and the watcher verify it with this.
 */
export const DATA_PROBLEM = 'region data checksum mismatch (a damaged page)';
export function problemWithData(integrity: { dataHash: bigint; dataLen: bigint }, data: Buffer | Buffer[]): boolean {
  const parts = Array.isArray(data) ? data : [data];
  const len = parts.reduce((n, p) => n + p.length, 0);
  return integrity.dataLen !== BigInt(len) || dataHash(parts) !== integrity.dataHash;
}

class StringTable {
  private readonly parts: Buffer[] = [];
  private readonly index = new Map<string, number>();
  private size = 0;
  constructor() {
    this.add(''); // offset 0 is the empty string
  }
  add(s: string): number {
    const hit = this.index.get(s);
    if (hit !== undefined) return hit;
    const bytes = Buffer.from(s + '\0', 'utf8');
    if (bytes.indexOf(0) !== bytes.length - 1) throw new Error(`string contains NUL: ${JSON.stringify(s)}`);
    const off = this.size;
    this.parts.push(bytes);
    this.size += bytes.length;
    this.index.set(s, off);
    return off;
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

function encodeArray(def: StructDef, items: Record<string, bigint | number>[]): Buffer {
  const size = sizeOf(def);
  const buf = Buffer.alloc(size * items.length);
  items.forEach((it, i) => encodeStruct(def, it, buf, i * size));
  return buf;
}

/** Serialises an image. DATA region offsets are assigned here. */
export function serializeImage(img: ImageModel): Buffer {
  const strings = new StringTable();
  const key = encodeStruct(KEY, {
    euid: img.key.euid,
    exe_path: strings.add(img.key.exePath),
    exe_dev: img.key.exeDev,
    exe_ino: img.key.exeIno,
    exe_size: img.key.exeSize,
    exe_mtime_sec: img.key.exeMtimeSec,
    exe_ctime_sec: img.key.exeCtimeSec,
    exe_mtime_nsec: img.key.exeMtimeNsec,
    exe_ctime_nsec: img.key.exeCtimeNsec,
    path_env: strings.add(img.key.pathEnv),
    kernel_release: strings.add(img.key.kernelRelease),
    env_hash: img.key.envHash ?? 0n,
    init_spec: strings.add(img.key.initSpec ?? ''),
    variant: img.key.variant ?? 0n,
    groups_hash: img.key.groupsHash ?? 0n,
  });
  const deps = img.envDeps ?? [];
  const envDeps = encodeArray(ENV_DEP, deps.map((d) => ({ name: strings.add(d.name), flags: d.flags, value_hash: d.valueHash })));
  const lims = img.limits ?? [];
  const limits = encodeArray(LIMIT, lims.map((l) => ({ resource: l.resource, soft: l.soft, hard: l.hard })));
  const snapshotEnv = img.snapshotEnv ? Buffer.from(img.snapshotEnv.map((e) => `${e}\0`).join(''), 'utf8') : null;
  const files = encodeArray(FILE, img.files.map((fl) => ({
    path: strings.add(fl.path), kind: fl.kind, dev: fl.dev, ino: fl.ino, size: fl.size,
    mtime_sec: fl.mtimeSec, ctime_sec: fl.ctimeSec, mtime_nsec: fl.mtimeNsec, ctime_nsec: fl.ctimeNsec,
    mode: fl.mode, flags: fl.flags, uid: fl.uid ?? 0, gid: fl.gid ?? 0,
  })));
  const st = img.state;
  const state = encodeStruct(STATE, {
    entry: st.entry, rtld_fini: st.rtldFini, fs_base: st.fsBase, tid_address: st.tidAddress,
    robust_head: st.robustHead, robust_len: st.robustLen, rseq_area: st.rseqArea, rseq_len: st.rseqLen,
    rseq_sig: st.rseqSig, start_code: st.startCode, end_code: st.endCode, start_data: st.startData,
    end_data: st.endData, start_brk: st.startBrk, brk: st.brk, vdso_base: st.vdsoBase, at_phdr: st.atPhdr,
    at_phnum: st.atPhnum, at_entry: st.atEntry, at_base: st.atBase, flags: st.flags, comm: strings.add(st.comm),
  });
  const slots = encodeArray(SLOT, img.slots.map((s) => ({ addr: s.addr, arg: s.arg, kind: s.kind, width: s.width })));
  const vdso = encodeArray(VDSO_PART, img.vdso.map((v) => ({ offset: v.offset, size: v.size, kind: v.kind })));

  const r = img.resume;
  const resume = r ? encodeStruct(RESUME, {
    ...r.regs, xfeatures: r.xfeatures, sigmask: r.sigmask, ignored_at_start: r.ignoredAtStart,
    stack_reserve: r.stackReserve, xstate_size: r.xstate.length, resume_fd: r.resumeFd, umask: r.umask ?? 0,
    flags: r.umask !== undefined ? ResumeFlag.SET_UMASK : 0,
  }) : null;
  const sigactions = encodeArray(SIGACTION, (r?.sigactions ?? []).map((a) => ({ ...a })));
  if (snapshotEnv && img.snapshotEnv?.some((e) => e.includes('\0'))) throw new Error('an environment entry contains NUL');
  // Regions are encoded after the data layout is known; reserve their size now.
  const regionsSize = sizeOf(REGION) * img.regions.length;
  const stringsBuf = strings.bytes();

  const sections: { type: number; flags: number; body: Buffer | null; size: number; count: number; entsize: number }[] = [
    { type: Section.KEY, flags: SecFlag.REQUIRED, body: key, size: key.length, count: 1, entsize: sizeOf(KEY) },
    { type: Section.STRINGS, flags: SecFlag.REQUIRED, body: stringsBuf, size: stringsBuf.length, count: 0, entsize: 0 },
    { type: Section.FILES, flags: SecFlag.REQUIRED, body: files, size: files.length, count: img.files.length, entsize: sizeOf(FILE) },
    { type: Section.REGIONS, flags: SecFlag.REQUIRED, body: null, size: regionsSize, count: img.regions.length, entsize: sizeOf(REGION) },
    { type: Section.SLOTS, flags: SecFlag.REQUIRED, body: slots, size: slots.length, count: img.slots.length, entsize: sizeOf(SLOT) },
    { type: Section.STATE, flags: SecFlag.REQUIRED, body: state, size: state.length, count: 1, entsize: sizeOf(STATE) },
    { type: Section.VDSO, flags: SecFlag.REQUIRED, body: vdso, size: vdso.length, count: img.vdso.length, entsize: sizeOf(VDSO_PART) },
  ];
  if (r && resume) {
    // REQUIRED: a launcher that does not know post-init images must run cold, not jump to the entry point.
    sections.push(
      { type: Section.RESUME, flags: SecFlag.REQUIRED, body: resume, size: resume.length, count: 1, entsize: sizeOf(RESUME) },
      { type: Section.SIGACTIONS, flags: SecFlag.REQUIRED, body: sigactions, size: sigactions.length, count: r.sigactions.length, entsize: sizeOf(SIGACTION) },
      { type: Section.XSTATE, flags: SecFlag.REQUIRED, body: r.xstate, size: r.xstate.length, count: 0, entsize: 0 },
    );
  }
  if (deps.length) {
    // REQUIRED: a launcher that cannot compare them must not restore the image for an environment it was not taken for.
    sections.push({ type: Section.ENV_DEPS, flags: SecFlag.REQUIRED, body: envDeps, size: envDeps.length, count: deps.length, entsize: sizeOf(ENV_DEP) });
  }
  if (lims.length) {
    // REQUIRED: a launcher that cannot compare them must not restore state derived from other limits.
    sections.push({ type: Section.LIMITS, flags: SecFlag.REQUIRED, body: limits, size: limits.length, count: lims.length, entsize: sizeOf(LIMIT) });
  }
  if (snapshotEnv) sections.push({ type: Section.SNAPSHOT_ENV, flags: 0, body: snapshotEnv, size: snapshotEnv.length, count: 0, entsize: 0 });

  // The region data's checksum: its body is filled in once the data is laid out.
  const integrity = Buffer.alloc(sizeOf(INTEGRITY));
  sections.push({ type: Section.INTEGRITY, flags: 0, body: integrity, size: integrity.length, count: 1, entsize: sizeOf(INTEGRITY) });

  const headerSize = sizeOf(HEADER);
  let off = headerSize + sizeOf(SECTION) * sections.length;
  const offsets: number[] = [];
  for (const s of sections) {
    off = align(off, 8);
    offsets.push(off);
    off += s.size;
  }
  const metaSize = align(off, 8);
  const dataOffset = align(metaSize, PAGE_SIZE);

  // Assign data offsets in address order.
  let dataOff = dataOffset;
  const dataParts: Buffer[] = [];
  const regionRecs = img.regions.map((r) => {
    let offset = r.offset;
    if (r.source === Src.DATA) {
      if (!r.data || BigInt(r.data.length) !== r.len) throw new Error(`DATA region at 0x${r.addr.toString(16)} without matching data`);
      offset = BigInt(dataOff);
      dataParts.push(r.data);
      dataOff += r.data.length;
      if (r.data.length % PAGE_SIZE !== 0) throw new Error('DATA region length not page-aligned');
    }
    return { addr: r.addr, len: r.len, offset, prot: r.prot, source: r.source, file: r.file, flags: r.flags };
  });
  const regions = encodeArray(REGION, regionRecs);
  encodeStruct(INTEGRITY, { data_hash: dataHash(dataParts), data_len: BigInt(dataOff - dataOffset) }, integrity, 0);

  const meta = Buffer.alloc(dataOffset);
  encodeStruct(HEADER, {
    magic: MAGIC, format_version: FORMAT_VERSION, abi_hash: ABI_HASH, arch: hostMachine(), page_size: PAGE_SIZE,
    header_size: headerSize, section_count: sections.length, meta_size: metaSize, data_offset: dataOffset,
    file_size: dataOff, checksum: 0, created_ns: img.createdNs, flags: 0, cpu_id: img.key.cpuId ?? hostCpuId(),
  }, meta, 0);
  sections.forEach((s, i) => {
    const at = offsets[i] as number;
    encodeStruct(SECTION, { type: s.type, flags: s.flags, offset: at, length: s.size, count: s.count, entsize: s.entsize },
      meta, headerSize + i * sizeOf(SECTION));
    (s.body ?? regions).copy(meta, at);
  });
  const sum = hash64(meta.subarray(0, metaSize));
  meta.writeBigUInt64LE(sum, checksumOffset());
  return Buffer.concat([meta, ...dataParts]);
}

/** cx_hash64 over the region data as one byte string (the parts are whole pages, so words never straddle them). */
export function dataHash(parts: Buffer[]): bigint {
  let h: bigint | undefined;
  for (const p of parts) h = hash64(p, h);
  return h ?? hash64(Buffer.alloc(0));
}

function checksumOffset(): number {
  // Computed from the schema rather than assumed.
  const probe = encodeStruct(HEADER, { checksum: 0xffffffffffffffffn });
  return probe.indexOf(Buffer.alloc(8, 0xff));
}

export interface ParsedImage {
  header: Record<string, bigint | number>;
  sections: Record<string, bigint | number>[];
  model: ImageModel;
  /** Problems a restorer would refuse on (empty when valid). */
  problems: string[];
}

function readStr(strings: Buffer, off: number): string {
  const end = strings.indexOf(0, off);
  return strings.toString('utf8', off, end < 0 ? strings.length : end);
}

/** Parses and validates an image (the TypeScript mirror of the C checks). */
export function parseImage(buf: Buffer): ParsedImage {
  const problems: string[] = [];
  const header = decodeStruct(HEADER, buf, 0);
  if (header.magic !== MAGIC) throw new Error('not a cached-exec image (bad magic)');
  if (header.format_version !== FORMAT_VERSION) problems.push(`format version ${header.format_version} != ${FORMAT_VERSION}`);
  if (header.abi_hash !== ABI_HASH) problems.push(`abi hash 0x${Number(header.abi_hash).toString(16)} != 0x${ABI_HASH.toString(16)}`);
  if (header.file_size !== BigInt(buf.length)) problems.push(`file size ${buf.length} != recorded ${header.file_size}`);
  const metaSize = Number(header.meta_size);
  if (metaSize > buf.length) throw new Error('image truncated inside its metadata');
  const meta = Buffer.from(buf.subarray(0, metaSize));
  meta.writeBigUInt64LE(0n, checksumOffset());
  if (hash64(meta) !== header.checksum) problems.push('checksum mismatch');

  const sections: Record<string, bigint | number>[] = [];
  const byType = new Map<number, Record<string, bigint | number>>();
  for (let i = 0; i < Number(header.section_count); i++) {
    const s = decodeStruct(SECTION, buf, Number(header.header_size) + i * sizeOf(SECTION));
    sections.push(s);
    byType.set(Number(s.type), s);
  }
  const body = (type: number): Buffer => {
    const s = byType.get(type);
    if (!s) throw new Error(`missing section ${type}`);
    return buf.subarray(Number(s.offset), Number(s.offset) + Number(s.length));
  };
  const records = (type: number, def: StructDef): Record<string, bigint | number>[] => {
    const s = byType.get(type);
    if (!s) throw new Error(`missing section ${type}`);
    const out: Record<string, bigint | number>[] = [];
    for (let i = 0; i < Number(s.count); i++) out.push(decodeStruct(def, buf, Number(s.offset) + i * Number(s.entsize)));
    return out;
  };
  const strings = body(Section.STRINGS);
  const k = records(Section.KEY, KEY)[0] as Record<string, bigint | number>;
  const st = records(Section.STATE, STATE)[0] as Record<string, bigint | number>;
  const n = (v: bigint | number | undefined): number => Number(v ?? 0);
  const b = (v: bigint | number | undefined): bigint => BigInt(v ?? 0);
  const model: ImageModel = {
    createdNs: b(header.created_ns),
    key: {
      cpuId: n(header.cpu_id),
      euid: n(k.euid), exePath: readStr(strings, n(k.exe_path)), exeDev: b(k.exe_dev), exeIno: b(k.exe_ino),
      exeSize: b(k.exe_size), exeMtimeSec: b(k.exe_mtime_sec), exeMtimeNsec: n(k.exe_mtime_nsec),
      exeCtimeSec: b(k.exe_ctime_sec), exeCtimeNsec: n(k.exe_ctime_nsec), pathEnv: readStr(strings, n(k.path_env)),
      kernelRelease: readStr(strings, n(k.kernel_release)),
      ...(b(k.env_hash) ? { envHash: b(k.env_hash) } : {}),
      ...(readStr(strings, n(k.init_spec)) ? { initSpec: readStr(strings, n(k.init_spec)) } : {}),
      ...(b(k.variant) ? { variant: b(k.variant) } : {}),
      ...(b(k.groups_hash) ? { groupsHash: b(k.groups_hash) } : {}),
    },
    files: records(Section.FILES, FILE).map((r) => ({
      path: readStr(strings, n(r.path)), kind: n(r.kind), dev: b(r.dev), ino: b(r.ino), size: b(r.size),
      mtimeSec: b(r.mtime_sec), mtimeNsec: n(r.mtime_nsec), ctimeSec: b(r.ctime_sec), ctimeNsec: n(r.ctime_nsec),
      mode: n(r.mode), flags: n(r.flags),
      ...(n(r.kind) === FileKind.ACCESS ? { uid: n(r.uid), gid: n(r.gid) } : {}),
    })),
    regions: records(Section.REGIONS, REGION).map((r) => ({
      addr: b(r.addr), len: b(r.len), offset: b(r.offset), prot: n(r.prot), source: n(r.source), file: n(r.file), flags: n(r.flags),
    })),
    slots: records(Section.SLOTS, SLOT).map((r) => ({ addr: b(r.addr), arg: b(r.arg), kind: n(r.kind), width: n(r.width) === 4 ? 4 : 8 })),
    state: {
      entry: b(st.entry), rtldFini: b(st.rtld_fini), fsBase: b(st.fs_base), tidAddress: b(st.tid_address),
      robustHead: b(st.robust_head), robustLen: b(st.robust_len), rseqArea: b(st.rseq_area), rseqLen: n(st.rseq_len),
      rseqSig: n(st.rseq_sig), startCode: b(st.start_code), endCode: b(st.end_code), startData: b(st.start_data),
      endData: b(st.end_data), startBrk: b(st.start_brk), brk: b(st.brk), vdsoBase: b(st.vdso_base), atPhdr: b(st.at_phdr),
      atPhnum: b(st.at_phnum), atEntry: b(st.at_entry), atBase: b(st.at_base), flags: n(st.flags), comm: readStr(strings, n(st.comm)),
    },
    vdso: records(Section.VDSO, VDSO_PART).map((r) => ({ offset: b(r.offset), size: b(r.size), kind: n(r.kind) })),
  };
  if (byType.has(Section.RESUME)) {
    const rr = records(Section.RESUME, RESUME)[0] as Record<string, bigint | number>;
    const regs = Object.fromEntries(RESUME_REGS.map((name) => [name, b(rr[name])])) as Record<ResumeReg, bigint>;
    model.resume = {
      regs, xfeatures: b(rr.xfeatures), xstate: Buffer.from(body(Section.XSTATE)), sigmask: b(rr.sigmask),
      ignoredAtStart: b(rr.ignored_at_start), stackReserve: b(rr.stack_reserve), resumeFd: n(rr.resume_fd),
      ...((n(rr.flags) & ResumeFlag.SET_UMASK) ? { umask: n(rr.umask) } : {}),
      sigactions: records(Section.SIGACTIONS, SIGACTION).map((a) => ({
        signo: n(a.signo), handler: b(a.handler), flags: b(a.flags), restorer: b(a.restorer), mask: b(a.mask),
      })),
    };
  }
  if (byType.has(Section.ENV_DEPS)) {
    model.envDeps = records(Section.ENV_DEPS, ENV_DEP).map((d) => ({ name: readStr(strings, n(d.name)), flags: n(d.flags), valueHash: b(d.value_hash) }));
  }
  if (byType.has(Section.LIMITS)) {
    model.limits = records(Section.LIMITS, LIMIT).map((l) => ({ resource: n(l.resource), soft: b(l.soft), hard: b(l.hard) }));
  }
  if (byType.has(Section.SNAPSHOT_ENV)) {
    const text = body(Section.SNAPSHOT_ENV).toString('utf8');
    model.snapshotEnv = text ? text.replace(/\0$/, '').split('\0') : [];
  }
  if (byType.has(Section.INTEGRITY)) {
    const ig = records(Section.INTEGRITY, INTEGRITY)[0] as Record<string, bigint | number>;
    model.integrity = { dataHash: b(ig.data_hash), dataLen: b(ig.data_len) };
    // Only a whole image can be checked here; readImageMeta's callers use verifyImageData.
    if (BigInt(buf.length) === b(header.file_size) && problemWithData(model.integrity, buf.subarray(Number(header.data_offset)))) {
      problems.push(DATA_PROBLEM);
    }
  }
  return { header, sections, model, problems };
}

/** Writes atomically: a temp file in the same directory, fsync, rename. */
export function writeFileAtomic(file: string, data: Buffer, mode = 0o600): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
