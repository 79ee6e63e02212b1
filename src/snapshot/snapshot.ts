/**
 * takeSnapshot: a program stopped at its ELF entry point, as an image model.
 *
 *  1. refuse what cannot be restored (elf.ts: not ELF, static, foreign, privileged);
 *  2. the differential runs A and B (diff.ts): where argc and tid copies live,
 *     and the proof that nothing else depends on argv, environment or pid;
 *  3. the real run: trace to the entry point with LD_BIND_NOW=1 (trace.ts,
 *     syscalls.ts), check the process is in a state an image can stand for,
 *     capture its address space (capture.ts), find slots (slots.ts) and
 *     translate the differential ones (layout.ts);
 *  4. files, regions, kernel state, vdso layout, key.
 * Every doubt is a refusal (refusal.ts); no tracee outlives the call.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageKey, ImageModel, ImageSlot, ImageVdsoPart } from '../image/format.js';
import { FileFlag, SlotKind, StateFlag, VdsoKind } from '../image/schema.js';
import { envHash, keyFor } from '../cache/key.js';
import type { SnapshotOptions, SnapshotOutcome } from './api.js';
import { PAGE, captureMappings, isSpecial, readMaps, type Mapping } from './capture.js';
import { differential, translateSlots } from './diff.js';
import { checkProgram } from './elf.js';
import { perturbedEnv, snapshotEnv } from './env.js';
import { buildFiles } from './files.js';
import { checkSameContents } from './layout.js';
import { SnapshotRefusal } from './refusal.js';
import { buildRegions } from './regions.js';
import { findCanaries, findStackSlots, readStack, type StackLayout } from './slots.js';
import { AT, killTracee, runToEntry, type StoppedAtEntry } from './trace.js';
import { syscallName } from './syscalls.js';
import { postInitModel } from './postinit.js';
import { identityAndAccess } from './access.js';
import { checkNotTooNew } from './fresh.js';
import { imageNamesExe } from './exe-reads.js';

export { snapshotEnv } from './env.js';

const PAGE_N = BigInt(PAGE);
const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * Extra arguments for every run. argc copies found by the differential runs
 * are verified in the real run by value; an unusual argc makes that check
 * meaningful (a stray word equal to 1 is common, one equal to 38 much less).
 */
const ARGC_PADDING = 37;

export function takeSnapshot(opts: SnapshotOptions): SnapshotOutcome {
  const t0 = Date.now();
  const a = opts.afterInit;
  try {
    const { image, notes } = a
      ? postInitModel({
        exePath: opts.exePath, argv0: opts.argv[0] ?? opts.exePath, words: a.words, kind: a.kind, env: opts.env,
        launcher: opts.launcher, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      })
      : snapshotModel(opts);
    markReadsExe(image, notes);
    return { ok: true, image, ms: Date.now() - t0, notes };
  } catch (e) {
    const ms = Date.now() - t0;
    if (e instanceof SnapshotRefusal) return { ok: false, reason: e.code, detail: e.detail, ms };
    return { ok: false, reason: 'internal', detail: (e as Error).message.split('\n')[0] ?? 'unknown error', ms };
  }
}

/** CX_STATE_READS_EXE when the program's code names /proc/self/exe (exe-reads.ts). */
function markReadsExe(image: ImageModel, notes: string[]): void {
  const exe = image.files.find((f) => f.flags & FileFlag.EXE);
  const found = imageNamesExe(image.files, exe ? checkProgram(exe.path).interpreter : null);
  if (!found) return;
  image.state.flags |= StateFlag.READS_EXE;
  notes.push(`${found.file} names ${found.what}: restored only where /proc/self/exe can be made the program (CAP_CHECKPOINT_RESTORE), else cold`);
}

function snapshotModel(opts: SnapshotOptions): { image: ImageModel; notes: string[] } {
  // Before anything is read: a dependency must be older than this (fresh.ts).
  const startNs = BigInt(Date.now()) * 1_000_000n;
  const exePath = path.resolve(opts.exePath);
  const program = checkProgram(exePath);
  const keyBefore = keyFor(exePath, opts.env);
  const envp = snapshotEnv(opts.env);
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const argv = [exePath, ...opts.argv.slice(1), ...Array.from({ length: ARGC_PADDING }, (_, i) => `cx-pad-${i}`)];
  const base = { launcher: opts.launcher, exePath, argv, envp, noAslr: false, deadline };

  // The differential runs first: a refusal there costs no real run, and the
  // real run's tracee is then the only one alive while it is captured.
  const diff = differential(base, perturbedEnv(envp));

  const t = runToEntry(base);
  try {
    checkEntryState(t);
    const maps = readMaps(t.pid);
    checkSameContents(diff.runA.maps, maps);
    const caps = captureMappings(t.pid, t.mem, maps);
    const stack = readStack(t, maps);
    checkStack(stack, argv);
    const fsBase = t.regs.fs_base;
    const slots: ImageSlot[] = [
      ...findStackSlots(caps, stack),
      ...findCanaries(t, caps, fsBase),
      ...translateSlots(diff.slots, diff.runA, caps, fsBase, stack.argc, t.pid),
    ];
    const seen = new Set<bigint>();
    for (const s of slots) {
      if (seen.has(s.addr)) throw new SnapshotRefusal('internal', `two slots at 0x${s.addr.toString(16)}`);
      seen.add(s.addr);
    }
    if (!slots.some((s) => s.kind === SlotKind.ARGC_ADDR)) throw new SnapshotRefusal('internal', 'no pointer to argc found');
    const files = buildFiles(t.paths, maps, exePath, program.interpreter);
    const identityBound = identityAndAccess(files.files, t.paths, [], t.identityAsked);
    checkNotTooNew(files.files, startNs);
    const regions = buildRegions(caps, files, slots);
    const state = kernelState(t, maps);
    if (identityBound) state.flags |= StateFlag.IDENTITY_BOUND;
    const key = keyFor(exePath, opts.env);
    if (diff.envBound) key.envHash = envHash(opts.env);
    checkProgramUnchanged(exePath, keyBefore, key);
    const image: ImageModel = {
      createdNs: BigInt(Date.now()) * 1_000_000n,
      key,
      files: files.files,
      regions,
      slots: slots.sort(byAddress),
      state,
      vdso: vdsoParts(maps, state.vdsoBase),
    };
    const notes = [
      `${t.syscallCount} syscalls before the entry point (${summarizeSyscalls(t)})`,
      `${slots.length} slots, ${regions.length} regions, ${files.files.length} files`,
    ];
    if (identityBound) notes.push(`identity-bound (served only to uid ${key.euid}): ${identityBound}`);
    for (const l of t.loader.limitsRead) {
      const v = (x: bigint): string => (x === 0xffffffffffffffffn ? 'unlimited' : String(x));
      notes.push(`resource limit ${l.resource} read before the entry point (soft ${v(l.cur)}, hard ${v(l.max)}): a caller with another limit gets values derived from this one`);
    }
    if (diff.randomCopies) {
      notes.push(`${diff.randomCopies} words are getrandom output kept verbatim before the entry point (malloc's tcache key): shared by every restore`);
    }
    return { image, notes };
  } finally {
    killTracee(t.pid, t.mem);
  }
}

/** The program must be the file keyed before the runs: a change during them would give one file's image another's key. */
export function checkProgramUnchanged(exePath: string, before: ImageKey, after: ImageKey): void {
  if (after.exeIno !== before.exeIno || after.exeDev !== before.exeDev || after.exeSize !== before.exeSize ||
      after.exeMtimeSec !== before.exeMtimeSec || after.exeMtimeNsec !== before.exeMtimeNsec ||
      after.exeCtimeSec !== before.exeCtimeSec || after.exeCtimeNsec !== before.exeCtimeNsec) {
    throw new SnapshotRefusal('too-new', `${exePath} changed while it was being snapshotted`);
  }
}

export const byAddress = (a: { addr: bigint }, b: { addr: bigint }): number => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0);

function summarizeSyscalls(t: StoppedAtEntry): string {
  return [...t.syscallsByNr].sort((a, b) => b[1] - a[1]).map(([nr, n]) => `${syscallName(nr)} ${n}`).join(', ');
}

/** The process must be in a state an image can stand for: the syscall policy's result, seen by the kernel. */
function checkEntryState(t: StoppedAtEntry): void {
  const tasks = fs.readdirSync(`/proc/${t.pid}/task`);
  if (tasks.length !== 1) throw new SnapshotRefusal('threads', `${tasks.length} threads at the entry point`);
  const fds = fs.readdirSync(`/proc/${t.pid}/fd`).map(Number).filter((fd) => fd > 2);
  if (fds.length) {
    const what = fds.map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`);
      } catch {
        return String(fd);
      }
    });
    throw new SnapshotRefusal('open-fds', `constructors left files open: ${what.join(', ')}`);
  }
  const children = fs.readFileSync(`/proc/${t.pid}/task/${t.pid}/children`, 'utf8').trim();
  if (children) throw new SnapshotRefusal('children', `child processes exist at the entry point: ${children}`);
  // The spawn reset every disposition and the mask, so anything here was done before the entry point.
  const status = fs.readFileSync(`/proc/${t.pid}/status`, 'utf8');
  for (const field of ['SigPnd', 'ShdPnd', 'SigBlk', 'SigIgn', 'SigCgt', 'Seccomp']) {
    const m = new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(status);
    if (!m) throw new SnapshotRefusal('internal', `no ${field} in /proc/${t.pid}/status`);
    if (/[^0]/.test(m[1] as string)) {
      throw new SnapshotRefusal('unsupported-syscall', `signal or seccomp state at the entry point: ${field} ${m[1]}`);
    }
  }
  if (t.regs.rip !== t.auxv.get(AT.ENTRY)) throw new SnapshotRefusal('internal', 'not stopped at the entry point');
  if (t.loader.fsBase !== undefined && t.loader.fsBase !== t.regs.fs_base) {
    throw new SnapshotRefusal('internal', 'fs_base differs from the loader\'s arch_prctl(ARCH_SET_FS)');
  }
  if (t.regs.rsp % 16n !== 0n) throw new SnapshotRefusal('internal', 'rsp at the entry point is not 16-byte aligned: a frame is live');
}

/** rsp must point at the kernel's argc with our argv above it: no frame of the loader is live. */
function checkStack(s: StackLayout, argv: string[]): void {
  if (s.argc !== argv.length || s.argvStrings.some((a, i) => a.value !== argv[i])) {
    throw new SnapshotRefusal('internal', 'the stack at the entry point is not the kernel\'s initial frame');
  }
}

function statFields(pid: number): string[] {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm)": comm may contain spaces and parentheses.
  return s.slice(s.lastIndexOf(')') + 2).trim().split(' ');
}

/** What kernelState needs of a stopped tracee (at the entry point or at a post-init checkpoint). */
export type StoppedTracee = Pick<StoppedAtEntry, 'pid' | 'auxv' | 'regs' | 'loader'>;

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
  const heap = maps.find((m) => m.path === '[heap]');
  const roundUp = (v: bigint): bigint => (v + PAGE_N - 1n) / PAGE_N * PAGE_N;
  if (heap ? heap.start !== roundUp(startBrk) || heap.end !== roundUp(brk) : brk !== startBrk) {
    throw new SnapshotRefusal('internal', `program break 0x${brk.toString(16)} does not match the heap mapping`);
  }
  const vdsoBase = t.auxv.get(AT.SYSINFO_EHDR);
  if (!vdsoBase) throw new SnapshotRefusal('internal', 'no AT_SYSINFO_EHDR');
  const fsBase = t.regs.fs_base;
  return {
    entry: t.regs.rip, rtldFini: t.regs.rdx, fsBase,
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

/** The kernel's special mappings ([vvar], [vvar_vclock], [vdso], ...) relative to the vdso: moved as one block. */
export function vdsoParts(maps: Mapping[], vdsoBase: bigint): ImageVdsoPart[] {
  const kinds: Record<string, number> = { '[vvar]': VdsoKind.VVAR, '[vvar_vclock]': VdsoKind.VVAR_VCLOCK, '[vdso]': VdsoKind.VDSO };
  const parts = maps
    .filter((m) => isSpecial(m) && m.path !== '[stack]' && m.path !== '[vsyscall]')
    .map((m) => ({ offset: m.start - vdsoBase, size: m.end - m.start, kind: kinds[m.path] ?? VdsoKind.OTHER }));
  if (!parts.some((p) => p.kind === VdsoKind.VDSO && p.offset === 0n)) throw new SnapshotRefusal('internal', 'no [vdso] at AT_SYSINFO_EHDR');
  return parts;
}
