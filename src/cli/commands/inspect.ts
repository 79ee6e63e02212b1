/** --inspect IMAGE|KEY|PROG: a human-readable (or --json) dump of one image's metadata. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IMAGE_NAME_RE, keyHash } from '../../cache/key.js';
import { describeDependency } from '../../cache/envdeps.js';
import { describeInitSpec } from '../../resume/spec.js';
import { readImageMeta } from '../../cache/store.js';
import { describeLimit, type ImageModel, type ParsedImage } from '../../image/format.js';
import { ARCH_AARCH64, FileFlag, MAGIC, Prot, RegionFlag, StateFlag, constName } from '../../image/schema.js';
import { archName } from '../../image/machine.js';
import { CxError } from '../../common/errors.js';
import { afterInitFromOptions } from '../after-init.js';
import type { Context } from '../context.js';
import { predictRun } from '../predict.js';
import { formatAge, formatBytes, formatTime, hex, keyValues, printJson, table } from '../output.js';

const flagNames = (bits: number, names: Readonly<Record<string, number>>): string[] => {
  const out: string[] = [];
  let rest = bits;
  for (const [n, v] of Object.entries(names)) {
    if (bits & v) {
      out.push(n);
      rest &= ~v;
    }
  }
  if (rest) out.push(hex(rest));
  return out;
};

export const protString = (p: number): string =>
  `${p & Prot.READ ? 'r' : '-'}${p & Prot.WRITE ? 'w' : '-'}${p & Prot.EXEC ? 'x' : '-'}`;

/** A bigint as a JSON number when exact, else as a decimal string. */
const num = (v: bigint | number): number | string => {
  const b = BigInt(v);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) && b >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b.toString();
};

const nsTime = (sec: bigint, nsec: number): string => `${sec}.${String(nsec).padStart(9, '0')}`;

export interface InspectJson {
  file: string;
  fileSize: number;
  keyHash: string;
  nameMatchesKey: boolean | null;
  valid: boolean;
  problems: string[];
  header: Record<string, number | string>;
  sections: Record<string, number | string>[];
  key: Record<string, number | string>;
  files: Record<string, number | string | string[]>[];
  regions: Record<string, number | string | string[] | null>[];
  slots: Record<string, number | string>[];
  state: Record<string, number | string | string[]>;
  vdso: Record<string, number | string>[];
}

export function inspectJson(file: string, parsed: ParsedImage, fileSize: number): InspectJson {
  const m: ImageModel = parsed.model;
  const h = parsed.header;
  const hash = keyHash(m.key);
  const nameHash = IMAGE_NAME_RE.exec(path.basename(file))?.[1];
  const header: Record<string, number | string> = {};
  for (const [k, v] of Object.entries(h)) header[k] = k === 'magic' || k === 'checksum' || k === 'abi_hash' ? hex(v) : num(v);
  return {
    file,
    fileSize,
    keyHash: hash,
    nameMatchesKey: nameHash === undefined ? null : nameHash === hash,
    valid: parsed.problems.length === 0,
    problems: parsed.problems,
    header,
    sections: parsed.sections.map((s) => ({
      type: constName('CX_SECTION_', Number(s.type)), flags: Number(s.flags), offset: num(s.offset ?? 0),
      length: num(s.length ?? 0), count: Number(s.count), entsize: Number(s.entsize),
    })),
    key: {
      euid: m.key.euid, exePath: m.key.exePath, exeDev: hex(m.key.exeDev), exeIno: num(m.key.exeIno), exeSize: num(m.key.exeSize),
      exeMtime: nsTime(m.key.exeMtimeSec, m.key.exeMtimeNsec), exeCtime: nsTime(m.key.exeCtimeSec, m.key.exeCtimeNsec),
      pathEnv: m.key.pathEnv, kernelRelease: m.key.kernelRelease,
      ...(m.key.initSpec ? { initSpec: describeInitSpec(m.key.initSpec) } : {}),
      ...(m.key.variant ? { variant: hex(m.key.variant) } : {}),
      environment: m.key.envHash ? `the whole environment (sum ${hex(m.key.envHash)})`
        : m.envDeps?.length ? m.envDeps.map((d) => describeDependency(d)).join(', ') : 'none',
      limits: m.limits?.length ? m.limits.map(describeLimit).join(', ') : 'none read',
    },
    files: m.files.map((f, i) => ({
      index: i, path: f.path, kind: constName('CX_FILE_', f.kind), flags: flagNames(f.flags, FileFlag),
      dev: hex(f.dev), ino: num(f.ino), size: num(f.size), mtime: nsTime(f.mtimeSec, f.mtimeNsec),
      ctime: nsTime(f.ctimeSec, f.ctimeNsec), mode: f.mode.toString(8), uid: f.uid ?? 0, gid: f.gid ?? 0,
    })),
    regions: m.regions.map((r, i) => ({
      index: i, start: hex(r.addr), end: hex(r.addr + r.len), len: num(r.len), prot: protString(r.prot),
      source: constName('CX_SRC_', r.source), file: constName('CX_SRC_', r.source) === 'FILE' ? (m.files[r.file]?.path ?? `#${r.file}`) : null,
      offset: hex(r.offset), flags: flagNames(r.flags, RegionFlag),
    })),
    slots: m.slots.map((s, i) => ({
      index: i, addr: hex(s.addr), kind: constName('CX_SLOT_', s.kind), width: s.width, arg: num(s.arg),
    })),
    state: {
      entry: hex(m.state.entry), rtldFini: hex(m.state.rtldFini), fsBase: hex(m.state.fsBase),
      tidAddress: hex(m.state.tidAddress), robustHead: hex(m.state.robustHead), robustLen: num(m.state.robustLen),
      rseqArea: hex(m.state.rseqArea), rseqLen: m.state.rseqLen, rseqSig: hex(m.state.rseqSig),
      startCode: hex(m.state.startCode), endCode: hex(m.state.endCode), startData: hex(m.state.startData),
      endData: hex(m.state.endData), startBrk: hex(m.state.startBrk), brk: hex(m.state.brk), vdsoBase: hex(m.state.vdsoBase),
      atPhdr: hex(m.state.atPhdr), atPhnum: num(m.state.atPhnum), atEntry: hex(m.state.atEntry), atBase: hex(m.state.atBase),
      flags: flagNames(m.state.flags, StateFlag), comm: m.state.comm,
    },
    vdso: m.vdso.map((v) => ({ kind: constName('CX_VDSO_', v.kind), offset: num(v.offset), size: num(v.size) })),
  };
}

export function inspectText(j: InspectJson, now = Date.now()): string[] {
  const L: string[] = [];
  const created = Number(BigInt(j.header.created_ns ?? 0) / 1_000_000n);
  const dataRegions = j.regions.filter((r) => r.source === 'DATA');
  const dataBytes = dataRegions.reduce((a, r) => a + Number(r.len), 0);
  const mapped = j.regions.reduce((a, r) => a + Number(r.len), 0);
  L.push(...keyValues([
    ['image', j.file],
    ['size', `${formatBytes(j.fileSize)} (${j.fileSize} bytes)`],
    ['format', `version ${j.header.format_version}, ABI hash ${j.header.abi_hash}, arch ${archName(Number(j.header.arch))}, page size ${j.header.page_size}`],
    ['created', created ? `${formatTime(created)} (${formatAge(now - created)} ago)` : '?'],
    ['metadata', `${j.header.meta_size} bytes, region data from offset ${j.header.data_offset}, checksum ${j.header.checksum}`],
    ['valid', j.valid ? 'yes' : `NO: ${j.problems.join('; ')}`],
    ['key hash', `${j.keyHash}${j.nameMatchesKey === false ? '  (does NOT match the file name: the launcher will never find it)' : ''}`],
  ]));
  L.push('');
  L.push('sections');
  L.push(...table(j.sections.map((s) => [String(s.type), s.flags ? 'REQUIRED' : '-', `@${s.offset}`, `${s.length} B`, `${s.count} x ${s.entsize} B`]), ['type', 'flags', 'offset', 'length', 'records']).map((l) => `  ${l}`));
  L.push('');
  L.push('key');
  L.push(...keyValues([
    ['uid', String(j.key.euid)],
    ['program', String(j.key.exePath)],
    ['identity', `dev ${j.key.exeDev} ino ${j.key.exeIno} size ${j.key.exeSize} mtime ${j.key.exeMtime} ctime ${j.key.exeCtime}`],
    ['PATH', String(j.key.pathEnv)],
    ['kernel', String(j.key.kernelRelease)],
    ...(j.key.initSpec ? [['init', String(j.key.initSpec)] as [string, string]] : []),
    ...(j.key.variant ? [['variant', `${j.key.variant} (serves another environment than the key's primary image)`] as [string, string]] : []),
    ['environment', String(j.key.environment)],
    ['limits', `${String(j.key.limits)} (soft/hard: a run with other values is cold)`],
  ], '  '));
  L.push('');
  L.push(`files (${j.files.length})`);
  L.push(...table(j.files.map((f) => [
    String(f.index), String(f.kind), (f.flags as string[]).join(',') || '-', String(f.path),
    f.kind === 'ABSENT' ? '(must stay missing)'
      : f.kind === 'ACCESS' ? `mode ${f.mode} uid ${f.uid} gid ${f.gid} (who may pass)` : `dev ${f.dev} ino ${f.ino} size ${f.size} mode ${f.mode}`,
  ]), ['#', 'kind', 'flags', 'path', 'identity']).map((l) => `  ${l}`));
  L.push('');
  const bySource = (s: string): number => j.regions.filter((r) => r.source === s).length;
  L.push(`regions (${j.regions.length}: ${bySource('FILE')} file, ${bySource('DATA')} data, ${bySource('ZERO')} zero; ` +
    `${formatBytes(mapped)} mapped, ${formatBytes(dataBytes)} stored in the image)`);
  L.push(...table(j.regions.map((r) => [
    String(r.index), `${r.start}-${r.end}`, formatBytes(Number(r.len)), String(r.prot),
    r.source === 'FILE' ? `FILE ${r.file} +${r.offset}` : r.source === 'DATA' ? `DATA @${r.offset}` : String(r.source),
    (r.flags as string[]).join(',') || '-',
  ]), ['#', 'range', 'size', 'prot', 'source', 'flags']).map((l) => `  ${l}`));
  L.push('');
  L.push(`slots (${j.slots.length})`);
  L.push(...table(j.slots.map((s) => [String(s.index), String(s.addr), String(s.kind), String(s.width), String(s.arg)]),
    ['#', 'address', 'kind', 'width', 'arg']).map((l) => `  ${l}`));
  L.push('');
  L.push('state');
  const s = j.state;
  const aarch64 = j.header.arch === ARCH_AARCH64;
  L.push(...keyValues([
    ['entry', `${s.entry} (${aarch64 ? 'x0' : 'rdx'} = rtld_fini ${s.rtldFini})`],
    [aarch64 ? 'tpidr_el0' : 'fs_base', String(s.fsBase)],
    ['tid address', String(s.tidAddress)],
    ['robust list', `${s.robustHead} len ${s.robustLen}`],
    ['rseq', `${s.rseqArea} len ${s.rseqLen} sig ${s.rseqSig}`],
    ['code', `${s.startCode}-${s.endCode}`],
    ['data', `${s.startData}-${s.endData}`],
    ['brk', `${s.startBrk}-${s.brk}`],
    ['auxv', `AT_PHDR ${s.atPhdr} AT_PHNUM ${s.atPhnum} AT_ENTRY ${s.atEntry} AT_BASE ${s.atBase}`],
    ['flags', (s.flags as string[]).join(',') || '-'],
    ['comm', String(s.comm)],
  ], '  '));
  L.push('');
  L.push(`vdso (base ${s.vdsoBase}, ${j.vdso.length} parts)`);
  L.push(...table(j.vdso.map((v) => [String(v.kind), `${Number(v.offset) < 0 ? '-' : '+'}${hex(Math.abs(Number(v.offset)))}`, formatBytes(Number(v.size))]),
    ['kind', 'offset', 'size']).map((l) => `  ${l}`));
  return L;
}

/**
 * A regular file meant as an image: it starts with the image magic, or it is
 * not executable (then --inspect says why it is no image). An executable file
 * without the magic (`./prog`, `bash`) is a program: its image is the one it
 * would use.
 */
function isImageFile(file: string): boolean {
  let fd: number | undefined;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return false;
    if ((st.mode & 0o111) === 0) return true;
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const b = Buffer.alloc(8);
    return fs.readSync(fd, b, 0, 8, 0) === 8 && b.readBigUInt64LE(0) === MAGIC;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * The image file --inspect means by its operand, tried in this order: an
 * image file (by its magic, or a file no one may execute; an executable is a program); the key --list shows, or a unique prefix
 * of at least 4 hex digits of one, in the user's cache (the system layer with
 * --system); a program name or path, whose image is the one its next run
 * would use (--after-init/--preload select the post-init one, as for
 * --explain).
 */
export function findImage(ctx: Context, operand: string): string {
  if (operand.includes('/') && isImageFile(operand)) return operand;
  if (/^[0-9a-f]{4,16}$/.test(operand)) {
    const matches = ctx.store().listImages().filter((im) => im.hash.startsWith(operand));
    if (matches.length === 1) return (matches[0] as { path: string }).path;
    if (matches.length > 1) {
      throw new CxError('usage', `${operand} is the start of ${matches.length} keys (${matches.map((m) => m.hash).join(', ')}): give more digits`,
        { command: '--inspect', reason: 'ambiguous' });
    }
  }
  if (!operand.includes('/') && isImageFile(operand)) return operand;
  let p;
  try {
    p = predictRun(operand, ctx.env, ctx.store().euid, afterInitFromOptions(ctx, operand));
  } catch (e) {
    if (e instanceof CxError && e.code === 'not-found') {
      throw new CxError('not-found', operand.includes('/') ? `${operand}: No such file or directory`
        : `${operand}: no such image file, image key (see --list) or program`, { command: '--inspect', program: operand });
    }
    throw e;
  }
  const wanted = ctx.modifiers.has('--system') ? 'system' : 'user';
  const attempt = p.attempts.filter((a) => a.layer === wanted).at(-1);
  if (!attempt || !fs.existsSync(attempt.image)) {
    const opts = [...ctx.options].map(([k, v]) => (v ? `${k}=${v}` : k)).join(' ');
    throw new CxError('bad-image', `${operand}: no image yet${attempt ? ` (key ${attempt.key}, ${attempt.image})` : ''}; ` +
      `take one with: cached-exec --warm ${opts ? `${opts} ` : ''}${p.interpreter ? p.interpreter.path : operand}`,
    { command: '--inspect', program: operand, reason: 'no-image', ...(attempt ? { path: attempt.image } : {}) });
  }
  return attempt.image;
}

export function inspect(ctx: Context): number {
  const file = findImage(ctx, ctx.operands[0] as string);
  const { parsed, fileSize } = readImageMeta(file);
  const j = inspectJson(file, parsed, fileSize);
  if (ctx.json) printJson(ctx.out, j);
  else ctx.out.line(inspectText(j).join('\n'));
  return j.valid ? 0 : 1;
}
