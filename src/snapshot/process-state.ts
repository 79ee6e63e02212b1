/**
 * What every image records of a stopped tracee, post-link or post-init: the
 * kernel-side state (/proc/PID/stat, the loader's syscalls, auxv) and the
 * vdso layout; and the check that the program did not change meanwhile.
 */
import * as fs from 'node:fs';
import type { ImageKey, ImageModel, ImageVdsoPart } from '../image/format.js';
import { StateFlag, VdsoKind } from '../image/schema.js';
import { PAGE, isSpecial, type Mapping } from './capture.js';
import { SnapshotRefusal } from './refusal.js';
import { AT, type StoppedAtEntry } from './trace.js';
import { ARCH } from './tracer-arch.js';

const PAGE_N = BigInt(PAGE);

/** The program must be the file keyed before the runs: a change during them would give one file's image another's key. */
export function checkProgramUnchanged(exePath: string, before: ImageKey, after: ImageKey): void {
  if (after.exeIno !== before.exeIno || after.exeDev !== before.exeDev || after.exeSize !== before.exeSize ||
      after.exeMtimeSec !== before.exeMtimeSec || after.exeMtimeNsec !== before.exeMtimeNsec ||
      after.exeCtimeSec !== before.exeCtimeSec || after.exeCtimeNsec !== before.exeCtimeNsec) {
    throw new SnapshotRefusal('too-new', `${exePath} changed while it was being snapshotted`);
  }
}

export const byAddress = (a: { addr: bigint }, b: { addr: bigint }): number => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0);

function statFields(pid: number): string[] {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm)": comm may contain spaces and parentheses.
  return s.slice(s.lastIndexOf(')') + 2).trim().split(' ');
}

/** What kernelState needs of a stopped tracee (at the entry point or at a post-init checkpoint). */
export type StoppedTracee = Pick<StoppedAtEntry, 'pid' | 'auxv' | 'regs' | 'threadPointer' | 'loader'>;

export function kernelState(t: StoppedTracee, maps: Mapping[]): ImageModel['state'] {
  const stat = statFields(t.pid);
  /** /proc/PID/stat field n (1-based, as proc(5) numbers them). */
  const field = (n: number): bigint => {
    const v = stat[n - 3];
    if (v === undefined) throw new SnapshotRefusal('internal', `/proc/${t.pid}/stat has no field ${n}`);
    return BigInt(v);
  };
  const startBrk = field(47);
  const l = t.loader;
  const brk = l.brk ?? startBrk;
  const heap = heapSpan(maps);
  const roundUp = (v: bigint): bigint => (v + PAGE_N - 1n) / PAGE_N * PAGE_N;
  if (heap ? heap.start !== roundUp(startBrk) || heap.end !== roundUp(brk) : brk !== startBrk) {
    throw new SnapshotRefusal('internal', `program break 0x${brk.toString(16)} does not match the heap mapping`);
  }
  const vdsoBase = t.auxv.get(AT.SYSINFO_EHDR);
  if (!vdsoBase) throw new SnapshotRefusal('internal', 'no AT_SYSINFO_EHDR');
  const fsBase = t.threadPointer;
  return {
    entry: ARCH.pc(t.regs), rtldFini: ARCH.rtldFini(t.regs), fsBase,
    tidAddress: l.tidAddress ?? 0n, robustHead: l.robust?.head ?? 0n, robustLen: l.robust?.len ?? 0n,
    rseqArea: l.rseq?.area ?? 0n, rseqLen: l.rseq?.len ?? 0, rseqSig: l.rseq?.sig ?? 0,
    startCode: field(26), endCode: field(27), startData: field(45), endData: field(46), startBrk, brk,
    vdsoBase, atPhdr: t.auxv.get(AT.PHDR) ?? 0n, atPhnum: t.auxv.get(AT.PHNUM) ?? 0n,
    atEntry: t.auxv.get(AT.ENTRY) ?? 0n, atBase: t.auxv.get(AT.BASE) ?? 0n,
    flags: (l.tidAddress !== undefined ? StateFlag.HAVE_TID_ADDRESS : 0) | (l.robust ? StateFlag.HAVE_ROBUST_LIST : 0) |
      (l.rseq ? StateFlag.HAVE_RSEQ : 0) | (fsBase ? StateFlag.HAVE_FS_BASE : 0),
    comm: fs.readFileSync(`/proc/${t.pid}/comm`, 'utf8').replace(/\n$/, ''),
  };
}

/**
 * The [heap] VMAs as one span. A heap may be split by protection: musl's
 * malloc makes the first page of its brk area PROT_NONE (a guard before its
 * metadata), so [heap] is a ---p and an rw-p VMA. The image keeps each part
 * as its own region; the break spans them all. Parts that do not touch are
 * not one heap.
 */
export function heapSpan(maps: Mapping[]): { start: bigint; end: bigint } | undefined {
  const parts = maps.filter((m) => m.path === '[heap]');
  const first = parts[0];
  if (!first) return undefined;
  let end = first.end;
  for (const p of parts.slice(1)) {
    if (p.start !== end) throw new SnapshotRefusal('internal', `the heap has a hole at 0x${end.toString(16)}`);
    end = p.end;
  }
  return { start: first.start, end };
}

/** The kernel's special mappings ([vvar], [vvar_vclock], [vdso], ...) relative to the vdso: moved as one block. */
export function vdsoParts(maps: Mapping[], vdsoBase: bigint): ImageVdsoPart[] {
  const kinds: Record<string, number> = { '[vvar]': VdsoKind.VVAR, '[vvar_vclock]': VdsoKind.VVAR_VCLOCK, '[vdso]': VdsoKind.VDSO };
  const parts = maps
    .filter((m) => isSpecial(m) && m.path !== '[stack]' && m.path !== '[vsyscall]')
    .map((m) => ({ offset: m.start - vdsoBase, size: m.end - m.start, kind: kinds[m.path] ?? VdsoKind.OTHER }));
  if (!parts.some((p) => p.kind === VdsoKind.VDSO && p.offset === 0n)) throw new SnapshotRefusal('internal', 'no [vdso] at AT_SYSINFO_EHDR');
  return parts;
}
