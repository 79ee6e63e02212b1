/**
 * The restorer's checks, in TypeScript, in the restorer's order
 * (src/restore/restore.c: read_meta, check_owner, check_header,
 * find_sections, check_key, check_age, check_files, then the static parts of
 * move_vdso, map_regions and patch_slots). `--explain` uses this to say
 * whether the next run restores and if not why; `--cleanup` uses it to find
 * images no run can use any more.
 *
 * Outcomes are the CX_OUTCOME_* names from the schema, so they read the same
 * as the statistics. What only the run itself can know (whether the image's
 * addresses are free in that process, whether the kernel accepts the vdso
 * move) is not checked here: a HIT verdict means "restores unless the address
 * space of the run collides", which the launcher then handles by running cold.
 *
 * With `verifyData`, the region data is also checked against the image's
 * INTEGRITY checksum, which the launcher does not do (the hot path trusts an
 * image's data as the kernel trusts a library's code): a damaged image is
 * FAIL_CHECKSUM here although the launcher would still restore it.
 */
import * as fs from 'node:fs';
import { decodeStruct } from '../image/codec.js';
import { DATA_PROBLEM, describeLimit, type ImageEnvDep, type ImageKey, type ImageLimit } from '../image/format.js';
import { archName, hostCpuId, hostMachine, systemPageSize } from '../image/machine.js';
import { openRegular, readImageMeta, verifyImageData } from './store.js';
import { describeDependency, observedEnvHash, unmetDependencies, variantSelector } from './envdeps.js';
import {
  ABI_HASH, ENV_DEP, FILE, FORMAT_VERSION, FileKind, HEADER, KEY, LIMIT, MAGIC, Outcome, REGION, RESUME, SECTION, SIGACTION,
  SLOT, STATE, SecFlag, Section, SlotKind, Src, StateFlag, VDSO_PART, constName, hash64, layout, sizeOf,
} from '../image/schema.js';

/** A CX_OUTCOME_* name without the prefix: 'HIT', 'MISS', 'FAIL_CHECKSUM', ... */
export type OutcomeName = string;

export interface Verdict {
  outcome: OutcomeName;
  /** One line for humans: what was wrong, naming the field or file. */
  detail: string;
  /** A HIT past CACHED_EXEC_MAX_AGE: restored, but queued to be re-taken. */
  rotate: boolean;
  /** Filled once the header could be read. */
  createdNs?: bigint;
  regions?: number;
  files?: number;
  size?: number;
  /** Filled once the key was read: the image's tie to the environment. */
  env?: {
    /** The variables it depends on, each with whether the run's environment matches (describeDependency). */
    deps: ImageEnvDep[];
    /** Bound to the whole environment (key.env_hash). */
    whole: boolean;
    /** FAIL_ENV: the selector of the variant image that would serve this environment. */
    selector?: bigint;
  };
  /** Filled once the sections were read: the resource limits the program read (LIMITS). */
  limits?: ImageLimit[];
}

export interface CheckOptions {
  /** The key this run computes; compared field by field like check_key. */
  key: ImageKey;
  /** Owner the image must have: the user's euid, or 0 for the system layer. */
  owner: number;
  /** AT_PAGESZ of a run (default: this process's). */
  pageSize?: number;
  /** The launcher's CPU id of this machine (default: hostCpuId()). */
  cpuId?: number;
  /** CLOCK_REALTIME now, in ns (default: Date.now()). */
  nowNs?: bigint;
  /** CACHED_EXEC_MAX_AGE in seconds as the launcher reads it (default: from env or 7 days; 0 = never). */
  maxAgeSec?: number;
  /** The run's environment, for the image's dependencies on it (ENV_DEPS, key.env_hash); unchecked when absent (--cleanup). */
  env?: NodeJS.ProcessEnv;
  /** The euid of the run: an IDENTITY_BOUND image serves key.euid only (default: opts.key.euid). */
  runEuid?: number;
  /** Also read the region data and compare it with the INTEGRITY checksum (--explain, --cleanup, the watcher). */
  verifyData?: boolean;
  /**
   * Whether the run can make /proc/self/exe name the program (cli/capability.ts
   * exeSettable); when false, an image with CX_STATE_READS_EXE is FAIL_EXE.
   * Unchecked when absent (--cleanup: another run may be able to).
   */
  exeSettable?: { settable: boolean; why: string };
  /** The run's resource limits (LIMITS: limits.c compares them); unchecked when absent (--cleanup: another run may have others). */
  limits?: (resource: number) => { soft: bigint; hard: bigint };
}

const META_PAGE = 4096;
/** restore.h: CX_RLIMIT_COUNT (RLIM_NLIMITS). */
const RLIMIT_COUNT = 16;
/** restore.h: MAX_FILES. */
const MAX_FILES = 16384;

export const outcomeName = (code: number): OutcomeName => constName('CX_OUTCOME_', code);
export const outcomeCode = (name: OutcomeName): number => {
  const v = Outcome[name];
  if (v === undefined) throw new Error(`unknown outcome ${name}`);
  return v;
};

/** AT_PAGESZ of this process (image/machine.ts; re-exported for existing importers). */
export { systemPageSize };

/** CACHED_EXEC_MAX_AGE exactly as check_age parses it: leading digits, default 7 days. */
export function maxAgeFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.CACHED_EXEC_MAX_AGE;
  if (v === undefined || v === '') return 7 * 24 * 3600;
  const m = /^\d*/.exec(v)?.[0] ?? '';
  return m === '' ? 0 : Number(m);
}

type Rec = Record<string, bigint | number>;
const B = (x: bigint | number | undefined): bigint => BigInt(x ?? 0);

function str(strings: Buffer, off: number): string | null {
  if (off >= strings.length) return null;
  const end = strings.indexOf(0, off);
  return end < 0 ? null : strings.toString('utf8', off, end);
}

function identityDiff(f: Rec, st: fs.BigIntStats): string | null {
  const checks: [string, bigint, bigint][] = [
    ['dev', B(f.dev ?? 0), st.dev],
    ['inode', B(f.ino ?? 0), st.ino],
    ['size', B(f.size ?? 0), st.size],
    ['mtime', B(f.mtime_sec ?? 0) * 1_000_000_000n + B(f.mtime_nsec ?? 0), st.mtimeNs],
    ['ctime', B(f.ctime_sec ?? 0) * 1_000_000_000n + B(f.ctime_nsec ?? 0), st.ctimeNs],
  ];
  const bad = checks.filter(([, a, b]) => a !== b).map(([n]) => n);
  return bad.length ? bad.join(', ') : null;
}

/** Runs the restorer's checks on the image at `file` for a run with `opts.key`. */
export function checkImage(file: string, opts: CheckOptions): Verdict {
  const v = (outcome: OutcomeName, detail: string, extra: Partial<Verdict> = {}): Verdict =>
    ({ outcome, detail, rotate: false, ...extra });

  // read_meta
  let fd: number;
  try {
    fd = openRegular(file); // like the launcher: no symlink, no blocking on a FIFO, a regular file only
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return v('MISS', 'no image for this key');
    if (code === 'EINVAL') return v('FAIL_IMAGE_IO', 'the image is not a regular file (a FIFO or device there is never read)');
    if (code === 'ELOOP') return v('FAIL_IMAGE_IO', 'the image is a symlink (never followed)');
    return v('FAIL_IMAGE_IO', `cannot open the image: ${code ?? String(e)}`);
  }
  let meta: Buffer;
  let st: fs.Stats;
  try {
    st = fs.fstatSync(fd);
    const first = Buffer.alloc(META_PAGE);
    const n = fs.readSync(fd, first, 0, META_PAGE, 0);
    if (n < sizeOf(HEADER)) return v('FAIL_TRUNCATED', `only ${n} bytes: shorter than a header`);
    const h = decodeStruct(HEADER, first, 0);
    if (h.magic !== MAGIC) return v('FAIL_HEADER', 'bad magic: not a cached-exec image');
    const metaSize = Number(h.meta_size);
    const fileSize = B(h.file_size);
    if (metaSize < sizeOf(HEADER) || B(metaSize) > fileSize || fileSize !== B(st.size)) {
      return v('FAIL_TRUNCATED', `file is ${st.size} bytes, header says ${fileSize} (metadata ${metaSize})`);
    }
    meta = Buffer.alloc(metaSize);
    first.copy(meta, 0, 0, Math.min(n, metaSize));
    if (metaSize > n && fs.readSync(fd, meta, n, metaSize - n, n) !== metaSize - n) {
      return v('FAIL_TRUNCATED', 'metadata cut short');
    }
  } catch (e) {
    return v('FAIL_IMAGE_IO', `cannot read the image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  } finally {
    fs.closeSync(fd);
  }
  const h = decodeStruct(HEADER, meta, 0);
  const info: Partial<Verdict> = { createdNs: B(h.created_ns), size: st.size };

  // check_owner
  if (st.uid !== opts.owner) return v('FAIL_OWNER', `image owned by uid ${st.uid}, not ${opts.owner}`, info);
  if (st.mode & 0o022) return v('FAIL_OWNER', `image writable by group or others (mode ${(st.mode & 0o777).toString(8)})`, info);
  if (!st.isFile()) return v('FAIL_OWNER', 'image is not a regular file', info);

  // check_header: the machine first (an image taken on another one is not bad, only not ours).
  const pageSize = opts.pageSize ?? systemPageSize();
  if (Number(h.arch) !== hostMachine()) {
    return v('FAIL_ARCH', `image taken on ${archName(Number(h.arch))}, this machine is ${archName(hostMachine())}`, info);
  }
  if (Number(h.page_size) !== pageSize) {
    return v('FAIL_PAGE_SIZE', `image taken with ${h.page_size}-byte pages, this kernel's are ${pageSize} bytes (AT_PAGESZ)`, info);
  }
  const headerBad: string[] = [];
  if (Number(h.format_version) !== FORMAT_VERSION) headerBad.push(`format version ${h.format_version} (this build reads ${FORMAT_VERSION})`);
  if (Number(h.abi_hash) !== ABI_HASH) headerBad.push(`ABI hash 0x${Number(h.abi_hash).toString(16)} (this build has 0x${ABI_HASH.toString(16)})`);
  if (Number(h.header_size) < sizeOf(HEADER)) headerBad.push(`header size ${h.header_size}`);
  if (B(h.data_offset) % BigInt(pageSize) !== 0n) headerBad.push('data offset not page-aligned');
  if (meta.length & 7) headerBad.push('metadata size not 8-aligned');
  if (headerBad.length) return v('FAIL_HEADER', headerBad.join('; '), info);
  const sumAt = checksumOffset();
  const copy = Buffer.from(meta);
  copy.writeBigUInt64LE(0n, sumAt);
  if (hash64(copy) !== B(h.checksum)) return v('FAIL_CHECKSUM', 'metadata checksum mismatch (image corrupted)', info);
  const cpu = opts.cpuId ?? hostCpuId();
  if (Number(h.cpu_id) !== cpu) {
    return v('FAIL_CPU', `image taken on a CPU with other features (cpu id ${Number(h.cpu_id).toString(16).padStart(8, '0')}, ` +
      `this machine's is ${cpu.toString(16).padStart(8, '0')}): its libraries chose code for that CPU`, info);
  }

  // find_sections
  const table = Number(h.header_size);
  const count = Number(h.section_count);
  if (table + count * sizeOf(SECTION) > meta.length) return v('FAIL_HEADER', 'section table runs past the metadata', info);
  const found = new Map<number, Rec>();
  for (let i = 0; i < count; i++) {
    const s = decodeStruct(SECTION, meta, table + i * sizeOf(SECTION));
    const off = B(s.offset);
    const len = B(s.length);
    const type = Number(s.type);
    const name = constName('CX_SECTION_', type);
    if (off > B(meta.length) || len > B(meta.length) - off || (off & 7n) !== 0n) {
      return v('FAIL_HEADER', `section ${name} out of bounds`, info);
    }
    if (Number(s.count) && B(s.count) * B(s.entsize) > len) return v('FAIL_HEADER', `section ${name} records overflow it`, info);
    const min: Record<number, number> = {
      [Section.KEY]: sizeOf(KEY), [Section.FILES]: sizeOf(FILE), [Section.REGIONS]: sizeOf(REGION),
      [Section.SLOTS]: sizeOf(SLOT), [Section.STATE]: sizeOf(STATE), [Section.VDSO]: sizeOf(VDSO_PART),
      [Section.RESUME]: sizeOf(RESUME), [Section.SIGACTIONS]: sizeOf(SIGACTION), [Section.ENV_DEPS]: sizeOf(ENV_DEP),
      [Section.LIMITS]: sizeOf(LIMIT),
    };
    if (type === Section.KEY || type === Section.STATE || type === Section.RESUME) {
      if (Number(s.count) !== 1 || Number(s.entsize) < (min[type] ?? 0)) return v('FAIL_HEADER', `section ${name} malformed`, info);
    } else if (min[type] !== undefined) {
      if (Number(s.count) && Number(s.entsize) < (min[type] ?? 0)) return v('FAIL_HEADER', `section ${name} entries too small`, info);
    } else if (type !== Section.STRINGS && type !== Section.XSTATE && type !== Section.SNAPSHOT_ENV && (Number(s.flags) & SecFlag.REQUIRED)) {
      return v('FAIL_HEADER', `unknown required section type ${type} (written by a newer version)`, info);
    }
    if (min[type] !== undefined || type === Section.STRINGS || type === Section.XSTATE) found.set(type, s);
  }
  for (const need of [Section.KEY, Section.STRINGS, Section.STATE, Section.REGIONS]) {
    if (!found.has(need)) return v('FAIL_HEADER', `missing section ${constName('CX_SECTION_', need)}`, info);
  }
  const nfiles = Number(found.get(Section.FILES)?.count ?? 0);
  if (nfiles > MAX_FILES) return v('FAIL_HEADER', `${nfiles} files (the restorer takes at most ${MAX_FILES})`, info);
  const sec = (t: number): Rec => found.get(t) as Rec;
  const strings = meta.subarray(Number(sec(Section.STRINGS).offset), Number(sec(Section.STRINGS).offset) + Number(sec(Section.STRINGS).length));
  const records = (t: number, def: typeof FILE): Rec[] => {
    const s = found.get(t);
    if (!s) return [];
    return Array.from({ length: Number(s.count) }, (_, i) => decodeStruct(def, meta, Number(s.offset) + i * Number(s.entsize)));
  };
  const files = records(Section.FILES, FILE);
  const regions = records(Section.REGIONS, REGION);
  const slots = records(Section.SLOTS, SLOT);
  const vdso = records(Section.VDSO, VDSO_PART);
  const state = records(Section.STATE, STATE)[0] as Rec;
  info.regions = regions.length;
  info.files = files.length;

  // check_key
  const k = records(Section.KEY, KEY)[0] as Rec;
  const exe = str(strings, Number(k.exe_path));
  const pathEnv = str(strings, Number(k.path_env));
  const release = str(strings, Number(k.kernel_release));
  if (exe === null || pathEnv === null || release === null) return v('FAIL_HEADER', 'key strings out of bounds', info);
  const want = opts.key;
  const keyDiffs: string[] = [];
  if (Number(k.euid) !== want.euid) keyDiffs.push(`uid ${k.euid} vs ${want.euid}`);
  if (exe !== want.exePath) keyDiffs.push(`program path ${JSON.stringify(exe)} vs ${JSON.stringify(want.exePath)}`);
  if (B(k.exe_dev) !== want.exeDev || B(k.exe_ino) !== want.exeIno) keyDiffs.push('program dev/inode');
  if (B(k.exe_size) !== want.exeSize) keyDiffs.push('program size');
  if (B(k.exe_mtime_sec) !== want.exeMtimeSec || Number(k.exe_mtime_nsec) !== want.exeMtimeNsec) keyDiffs.push('program mtime');
  if (B(k.exe_ctime_sec) !== want.exeCtimeSec || Number(k.exe_ctime_nsec) !== want.exeCtimeNsec) keyDiffs.push('program ctime');
  if (pathEnv !== want.pathEnv) keyDiffs.push('PATH');
  if (release !== want.kernelRelease) keyDiffs.push(`kernel release ${release} vs ${want.kernelRelease}`);
  const spec = str(strings, Number(k.init_spec ?? 0)) ?? '';
  if (spec !== (want.initSpec ?? '')) keyDiffs.push(`init ${JSON.stringify(spec)} vs ${JSON.stringify(want.initSpec ?? '')}`);
  if (keyDiffs.length) return v('FAIL_KEY', `key differs (hash collision or hand-placed image): ${keyDiffs.join(', ')}`, info);

  // restore.c: an image that depends on who took it serves that user only.
  const runEuid = opts.runEuid ?? want.euid;
  if ((Number(state.flags) & StateFlag.IDENTITY_BOUND) && Number(k.euid) !== runEuid) {
    return v('FAIL_IDENTITY', `the image depends on uid ${k.euid}'s identity (it asked who runs it, or read what others cannot): not served to uid ${runEuid}`, info);
  }

  // check_env_deps: the variables the image depends on, as this run has them.
  const deps: ImageEnvDep[] = records(Section.ENV_DEPS, ENV_DEP).map((d) => {
    const name = str(strings, Number(d.name));
    return { name: name ?? '', flags: Number(d.flags), valueHash: B(d.value_hash) };
  });
  if (deps.some((d) => !d.name)) return v('FAIL_HEADER', 'environment dependency name out of bounds', info);
  const whole = B(k.env_hash) !== 0n;
  info.env = { deps, whole };
  if (opts.env) {
    const env = opts.env;
    const why: string[] = [];
    if (whole && observedEnvHash({ initSpec: spec }, env) !== B(k.env_hash)) {
      why.push(spec ? 'the whole environment but the per-run variables (the init ran other programs or listed its variables)'
        : 'the whole environment (library constructors read it without getenv)');
    }
    for (const d of unmetDependencies(deps, env)) why.push(describeDependency(d, env));
    if (why.length) {
      info.env.selector = variantSelector({ initSpec: spec, envHash: B(k.env_hash) }, deps, env);
      return v('FAIL_ENV', `the image depends on ${why.join('; ')}`, info);
    }
  }

  // check_limits (limits.c): the resource limits the program read, as this run has them.
  const limits: ImageLimit[] = records(Section.LIMITS, LIMIT).map((l) => ({ resource: Number(l.resource), soft: B(l.soft), hard: B(l.hard) }));
  if (limits.length > RLIMIT_COUNT || limits.some((l) => l.resource >= RLIMIT_COUNT)) return v('FAIL_HEADER', 'bad LIMITS section', info);
  info.limits = limits;
  if (opts.limits) {
    const now = opts.limits;
    const differ = limits.filter((l) => {
      const n = now(l.resource);
      return n.soft !== l.soft || n.hard !== l.hard;
    });
    if (differ.length) {
      return v('FAIL_LIMITS', `the program read resource limits before the image was taken, and this run's differ: ${differ.map((l) =>
        `${describeLimit(l)} in the image, ${describeLimit({ ...l, ...now(l.resource) }).replace(/^\S+ /, '')} now`).join('; ')}`, info);
    }
  }

  // check_age
  const maxAge = B(opts.maxAgeSec ?? maxAgeFromEnv());
  const now = opts.nowNs ?? B(Date.now()) * 1_000_000n;
  const rotate = maxAge > 0n && now > B(h.created_ns) + maxAge * 1_000_000_000n;

  // The READS_EXE check (restore.c, right after check_age).
  if (opts.exeSettable && !opts.exeSettable.settable && (Number(state.flags) & StateFlag.READS_EXE)) {
    return v('FAIL_EXE', `the program reads /proc/self/exe, which would name the launcher: ${opts.exeSettable.why}`, { ...info, rotate });
  }

  // check_files
  const mapped = new Set<number>();
  for (const [i, f] of files.entries()) {
    const p = str(strings, Number(f.path));
    if (p === null) return v('FAIL_HEADER', `file ${i}: path out of bounds`, info);
    const kind = Number(f.kind);
    if (kind === FileKind.MAPPED || kind === FileKind.READ) {
      let fst: fs.BigIntStats;
      try {
        fst = fs.statSync(p, { bigint: true });
      } catch (e) {
        return v('FAIL_STALE_FILE', `${p} is gone (${(e as NodeJS.ErrnoException).code ?? 'error'})`, info);
      }
      if (kind === FileKind.MAPPED) {
        try {
          fs.accessSync(p, fs.constants.R_OK);
        } catch {
          return v('FAIL_STALE_FILE', `${p} is no longer readable`, info);
        }
        mapped.add(i);
      }
      const diff = identityDiff(f, fst);
      if (diff) return v('FAIL_STALE_FILE', `${p} changed since the snapshot (${diff})`, info);
    } else if (kind === FileKind.ACCESS) {
      let dst: fs.Stats;
      try {
        dst = fs.statSync(p);
      } catch (e) {
        return v('FAIL_STALE_FILE', `${p} is gone (${(e as NodeJS.ErrnoException).code ?? 'error'}): it led to a dependency`, info);
      }
      if (dst.mode !== Number(f.mode) || dst.uid !== Number(f.uid ?? 0) || dst.gid !== Number(f.gid ?? 0)) {
        return v('FAIL_STALE_FILE', `${p} changed who may pass it (mode ${(Number(f.mode) & 0o7777).toString(8)} uid ${f.uid} gid ${f.gid} -> ` +
          `${(dst.mode & 0o7777).toString(8)} uid ${dst.uid} gid ${dst.gid})`, info);
      }
    } else if (kind === FileKind.ABSENT) {
      try {
        fs.statSync(p);
        return v('FAIL_NEGATIVE_DEP', `${p} exists now; the loader found nothing there at snapshot time`, info);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'ENOTDIR') {
          return v('FAIL_NEGATIVE_DEP', `${p}: ${code ?? 'error'} (the restorer needs it to be missing)`, info);
        }
      }
    } else {
      return v('FAIL_HEADER', `file ${i}: unknown kind ${kind}`, info);
    }
  }

  // The static parts of move_vdso, map_regions, patch_slots.
  if (!B(state.vdso_base ?? 0) || vdso.length === 0) return v('FAIL_VDSO', 'image has no vdso layout', info);
  const dataOffset = B(h.data_offset);
  const fileSize = B(h.file_size);
  for (const [i, r] of regions.entries()) {
    const addr = B(r.addr);
    const len = B(r.len);
    if ((addr | len) % BigInt(pageSize) !== 0n || len === 0n) return v('FAIL_HEADER', `region ${i} not page-aligned`, info);
    const src = Number(r.source);
    if (src === Src.FILE) {
      if (Number(r.file) >= files.length || !mapped.has(Number(r.file))) return v('FAIL_HEADER', `region ${i}: bad file index`, info);
    } else if (src === Src.DATA) {
      const off = B(r.offset);
      if (off < dataOffset || off > fileSize || len > fileSize - off) return v('FAIL_TRUNCATED', `region ${i}: data past the end of the image`, info);
    } else if (src !== Src.ZERO) {
      return v('FAIL_HEADER', `region ${i}: unknown source ${src}`, info);
    }
  }
  const knownSlots = new Set(Object.values(SlotKind));
  for (const [i, s] of slots.entries()) {
    if (!knownSlots.has(Number(s.kind))) return v('FAIL_SLOT', `slot ${i}: unknown kind ${s.kind}`, info);
    if (Number(s.width) !== 4 && Number(s.width) !== 8) return v('FAIL_HEADER', `slot ${i}: width ${s.width}`, info);
  }

  if (opts.verifyData) {
    const damaged = dataDamaged(file);
    if (damaged) return v('FAIL_CHECKSUM', damaged, info);
  }

  return v('HIT', rotate
    ? 'restores (image past CACHED_EXEC_MAX_AGE: the run queues it to be re-taken)'
    : 'restores, unless the run finds the image\'s addresses taken (then it runs cold)', { ...info, rotate });
}

/** A message when the region data no longer matches the image's INTEGRITY checksum, else null. */
function dataDamaged(file: string): string | null {
  try {
    if (verifyImageData(file, readImageMeta(file).parsed)) return null;
  } catch {
    return null; // vanished or unreadable: the metadata checks above decide
  }
  return `${DATA_PROBLEM}: the launcher does not check page data and would still restore it; --cleanup removes it`;
}

function checksumOffset(): number {
  const f = layout(HEADER).fields.find((x) => x.name === 'checksum');
  if (!f) throw new Error('schema: header has no checksum field');
  return f.offset;
}
