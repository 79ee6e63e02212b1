/**
 * The differential snapshot: finds the words that hold argc or the thread id,
 * which no pointer scan can see, and proves nothing else depends on argv, the
 * environment or the pid.
 *
 * Two extra runs, A and B, with ASLR off so both get the same layout, the same
 * AT_RANDOM bytes (written into B at its exec stop, so the stack guard, the
 * pointer guard and every mangled pointer are equal), and different argc, argv
 * strings and environment values. Every word that differs between A and B must
 * be a pointer into each run's stack with the same meaning, or argc, or the
 * pid; anything else refuses. The positions found are then translated to the
 * real (randomised) run by pairing its mappings with A's.
 */
import * as fs from 'node:fs';
import { SlotKind } from '../image/schema.js';
import type { ImageSlot } from '../image/format.js';
import { PAGE, captureMappings, isFileBacked, readMaps, type CapturedMapping, type Mapping } from './capture.js';
import { translate } from './layout.js';
import { SnapshotRefusal } from './refusal.js';
import { classifyStackPointer, describeAddr, readStack, type StackLayout } from './slots.js';
import { AT, killTracee, readMem, runToEntry, type StoppedAtEntry, type TraceOptions } from './trace.js';
import { acceptLoaderClockWords, changingWords, counterTrappable, loaderPath, type Unexplained } from './clock.js';
import type { EnvLookup } from './lookups.js';
import { checkSameReads, clockB, clockNow, clockValue, matchClockWord, type ClockBase, type ClockRead } from './vdso-clock.js';
import { deadStackWords, type DeadStackWord } from './dead-stack.js';

export interface Run {
  pid: number;
  fsBase: bigint;
  /** The rseq area: the kernel writes the current CPU there; not program state. */
  rseq?: { area: bigint; len: number };
  argc: number;
  caps: CapturedMapping[];
  maps: Mapping[];
  stack: StackLayout;
  randomOutputs: Buffer[];
  /** The loader's file, as maps names it. */
  loader?: string;
  /** The vdso clock reads the tracer answered, in order. */
  clockReads: ClockRead[];
}

/**
 * The loader reads the time stamp counter for its start-up statistics; the
 * tracer answers those reads with a counter so both runs agree. A read from
 * anywhere else is a constructor taking the time (or seeding from it), which a
 * restore would freeze at the snapshot's value.
 */
function checkTimeStampReads(t: StoppedAtEntry, maps: Mapping[]): void {
  const base = t.auxv.get(AT.BASE);
  const loader = maps.find((m) => base !== undefined && base >= m.start && base < m.end);
  for (const rip of t.rdtscAt) {
    const m = maps.find((x) => rip >= x.start && rip < x.end);
    if (!loader || !m || !isFileBacked(m) || m.path !== loader.path) {
      throw new SnapshotRefusal('unsupported-syscall', `rdtsc at ${describeAddr(maps, rip)} before the entry point: a restore would keep the snapshot's time`);
    }
  }
}

export type CapturedRun = Run & { random: Buffer; lookups?: EnvLookup[] };

export function capture(o: TraceOptions): CapturedRun {
  const t = runToEntry(o);
  try {
    const trap = t.envTrap;
    const maps = readMaps(t.pid).filter((m) => !trap || m.end <= trap.start || m.start >= trap.end);
    checkTimeStampReads(t, maps);
    const caps = captureMappings(t.pid, t.mem, maps);
    const stack = readStack(t, maps);
    const r = t.auxv.get(AT.RANDOM);
    const random = r ? readMem(t.mem, r, 16) : Buffer.alloc(16);
    const loader = loaderPath(maps, t.auxv.get(AT.BASE));
    const run = {
      pid: t.pid, fsBase: t.threadPointer, argc: stack.argc, caps, maps, stack, random, randomOutputs: t.randomOutputs, clockReads: t.clockReads,
      ...(loader ? { loader } : {}), ...(t.envLookups ? { lookups: t.envLookups } : {}),
    };
    return t.loader.rseq ? { ...run, rseq: t.loader.rseq } : run;
  } finally {
    killTracee(t.pid, t.mem);
  }
}

export function pageContent(c: CapturedMapping, i: number, fileCache: Map<string, number>): Buffer {
  const d = c.data.get(i);
  if (d) return d;
  const buf = Buffer.alloc(PAGE);
  if (c.classes[i] === 'file' && isFileBacked(c)) {
    let fd = fileCache.get(c.path);
    if (fd === undefined) {
      fd = fs.openSync(c.path, 'r');
      fileCache.set(c.path, fd);
    }
    fs.readSync(fd, buf, 0, PAGE, Number(c.offset) + i * PAGE);
  }
  return buf;
}

/** The two ASLR-off runs must have mapped the same things at the same addresses. */
export function sameLayout(a: CapturedMapping[], b: CapturedMapping[]): void {
  const same = a.length === b.length && a.every((m, i) => {
    const n = b[i] as CapturedMapping;
    return m.start === n.start && m.end === n.end && m.path === n.path && m.perms === n.perms && m.offset === n.offset;
  });
  if (!same) throw new SnapshotRefusal('layout-mismatch', 'the two ASLR-off runs mapped different things');
}

export interface NonPointerSlot {
  /** Address in run A. */
  addr: bigint;
  kind: number; // ARGC, TID or CLOCK
  /** CLOCK: width, slot argument (clock id, form) and which reading (by order) it copies. */
  clock?: { width: 4 | 8; arg: bigint; read: number; what: string };
}

/**
 * Runs A and B and returns where argc and tid copies live, as positions in
 * A's mappings (translate with translateSlots).
 */
export interface Differential {
  slots: NonPointerSlot[];
  /** The options run A had: a further run with A's inputs (random-copies.ts). */
  optsA: TraceOptions;
  /** Pointers below argc in A (dead-stack.ts), at the same distance in B. */
  deadStack: DeadStackWord[];
  runA: CapturedRun;
  randomCopies: number;
  /** Words of the loader's own timings that a third run with A's inputs showed to change with time (clock.ts). */
  loaderClockWords: number;
  /**
   * Library constructors read the environment other than through getenv
   * (they walked `environ`): the image is bound to the snapshot's whole
   * environment (key.envHash) instead of being refused, and the two runs had
   * that same environment, differing only in argv and pid.
   */
  envBound: boolean;
  /**
   * Not bound: every getenv/secure_getenv call the constructors made, in
   * order, with the value it returned (the same in both runs: B keeps A's
   * values of these names and differs in every other one).
   */
  lookups: EnvLookup[];
}

/**
 * `perturb(keep)` is B's environment: A's with every value changed but those
 * of the names in `keep` (what A's constructors looked up), and one more
 * variable.
 */
export function differential(base: TraceOptions, perturb: (keep: ReadonlySet<string>) => string[]): Differential {
  // A's clock is now, B's far ahead (vdso-clock.ts); a third run with A's inputs gets A's clock too.
  const clock = clockNow();
  try {
    const optsA: TraceOptions = { ...optionsA(base, clock), trapEnvironment: true, traceLookups: true };
    const a = capture(optsA);
    const lookupsA = a.lookups ?? [];
    const b = capture({ ...optionsB(base, a.random, clock), envp: perturb(new Set(lookupsA.map((l) => l.name))), trapEnvironment: true, traceLookups: true });
    if (!sameLookups(lookupsA, b.lookups ?? [])) {
      // Which variables are looked up depends on argv, the pid or another variable's value: no name list can key that.
      throw new SnapshotRefusal('reads-environment', `the constructors looked up other variables in the second run (${describeLookups(lookupsA)} vs ${describeLookups(b.lookups ?? [])})`);
    }
    return { ...compareRuns(a, b, optsA), optsA, envBound: false, lookups: lookupsA };
  } catch (e) {
    if (!(e instanceof SnapshotRefusal) || e.code !== 'reads-environment') throw e;
    const optsA: TraceOptions = { ...optionsA(base, clock), trapEnvironment: false };
    const a = capture(optsA);
    const b = capture({ ...optionsB(base, a.random, clock), trapEnvironment: false });
    return { ...compareRuns(a, b, optsA), optsA, envBound: true, lookups: [] };
  }
}

const optionsA = (base: TraceOptions, clock: ClockBase): TraceOptions =>
  ({ ...base, noAslr: true, deterministic: true, randomStream: 'a', argv: [...base.argv, 'cx-diff-a'], clock });

const optionsB = (base: TraceOptions, atRandom: Buffer, clock: ClockBase): TraceOptions =>
  ({ ...base, noAslr: true, deterministic: true, randomStream: 'b', argv: [...base.argv, 'cx-diff-bb', 'cx-diff-bbb', 'cx-diff-bbbb'], atRandom,
    clock: clockB(clock) });

function sameLookups(a: EnvLookup[], b: EnvLookup[]): boolean {
  return a.length === b.length && a.every((l, i) => l.name === b[i]?.name && l.value === b[i]?.value);
}

function describeLookups(l: EnvLookup[]): string {
  return l.length ? l.map((x) => x.name).join(', ') : 'none';
}

/** optsA: the options A ran with, for a third run with its inputs (explainByClock). */
function compareRuns(a: CapturedRun, b: CapturedRun, optsA: TraceOptions): Omit<Differential, 'envBound' | 'lookups' | 'optsA'> {
  sameLayout(a.caps, b.caps);
  checkSameReads(a.clockReads, b.clockReads, 'the two differential runs');
  const randomCopy = verbatimRandomWords(a.randomOutputs, b.randomOutputs);
  let randomCopies = 0;
  const files = new Map<string, number>();
  const slots: NonPointerSlot[] = [];
  const unexplained: Unexplained[] = [];
  let deadStack: DeadStackWord[];
  let loaderClockWords = 0;
  try {
    deadStack = deadStackWords(a, b, (c, i) => pageContent(c, i, files));
    a.caps.forEach((ca, mi) => {
      const cb = b.caps[mi] as CapturedMapping;
      for (let i = 0; i < ca.classes.length; i++) {
        if (ca.classes[i] !== 'data' && cb.classes[i] !== 'data') continue;
        const pa = pageContent(ca, i, files);
        const pb = pageContent(cb, i, files);
        if (pa.equals(pb)) continue;
        for (let off = 0; off < PAGE; off += 8) {
          const va = pa.readBigUInt64LE(off);
          const vb = pb.readBigUInt64LE(off);
          if (va === vb) continue;
          const addr = ca.start + BigInt(i * PAGE + off);
          if (a.rseq && addr >= a.rseq.area && addr < a.rseq.area + BigInt(a.rseq.len)) continue;
          if (explainedPointer(va, vb, a.stack, b.stack)) continue;
          if (randomCopy.get(va) === vb) {
            randomCopies++;
            continue;
          }
          const clock8 = matchClockWord(va, vb, 8, a.clockReads, b.clockReads);
          if (clock8) {
            slots.push({ addr, kind: SlotKind.CLOCK, clock: { width: 8, ...clock8 } });
            continue;
          }
          if (inStack(va, a.stack) && inStack(vb, b.stack)) {
            throw new SnapshotRefusal('unexplained-stack-pointer',
              `${describeAddr(a.caps, addr)} holds a stack address that is not argv, envp or auxv, or not the same one in both runs`);
          }
          for (const k of [0, 4]) {
            const ha = pa.readUInt32LE(off + k);
            const hb = pb.readUInt32LE(off + k);
            if (ha === hb) continue;
            const where = { addr: addr + BigInt(k) };
            const clock4 = matchClockWord(BigInt(ha), BigInt(hb), 4, a.clockReads, b.clockReads);
            if (ha === a.argc && hb === b.argc) slots.push({ ...where, kind: SlotKind.ARGC });
            else if (ha === a.pid && hb === b.pid) slots.push({ ...where, kind: SlotKind.TID });
            else if (clock4) slots.push({ ...where, kind: SlotKind.CLOCK, clock: { width: 4, ...clock4 } });
            else unexplained.push({ ...where, va: ha, vb: hb });
          }
        }
      }
    });
    if (unexplained.length) loaderClockWords = explainByClock(unexplained, a, optsA, (c, i) => pageContent(c, i, files));
  } finally {
    for (const fd of files.values()) fs.closeSync(fd);
  }
  return { slots, deadStack, runA: a, randomCopies, loaderClockWords };
}

/**
 * Where rdtsc cannot be trapped (clock.ts), the loader's timings differ
 * between A and B too: a third run with A's inputs tells them apart from
 * what argv, the environment or the pid changed. Throws unless every
 * unexplained word is one of the loader's clock readings; returns how many.
 */
function explainByClock(unexplained: Unexplained[], a: CapturedRun, optsA: TraceOptions,
  page: (c: CapturedMapping, i: number) => Buffer): number {
  const detail = (u: Unexplained): string =>
    `${describeAddr(a.caps, u.addr)} differs between runs with different argv/env/pid (0x${u.va.toString(16)} vs 0x${u.vb.toString(16)})`;
  let changing = new Set<bigint>();
  if (!counterTrappable(optsA.launcher)) {
    const again = capture({ ...optsA, atRandom: a.random });
    sameLayout(a.caps, again.caps);
    changing = changingWords(a.caps, again.caps, a.pid, again.pid, page);
  }
  return acceptLoaderClockWords(unexplained, changing, a.caps, a.loader, detail);
}

/**
 * getrandom output kept verbatim (8 bytes at any offset of one call's
 * output), as word in A -> the same word in B. Such a copy is a key chosen
 * once per process, like malloc's tcache key: every restore shares it, the
 * same trade as the pointer guard. Anything computed from random bytes (a
 * seeded generator's state) matches no entry and is refused.
 */
function verbatimRandomWords(outA: Buffer[], outB: Buffer[]): Map<bigint, bigint> {
  if (outA.length !== outB.length || outA.some((o, i) => o.length !== outB[i]?.length)) {
    throw new SnapshotRefusal('unexplained-difference', 'the differential runs made different getrandom calls');
  }
  const words = new Map<bigint, bigint>();
  outA.forEach((oa, i) => {
    const ob = outB[i] as Buffer;
    for (let off = 0; off + 8 <= oa.length; off++) words.set(oa.readBigUInt64LE(off), ob.readBigUInt64LE(off));
  });
  return words;
}

const inStack = (v: bigint, s: StackLayout): boolean => v >= s.lo && v < s.hi;

/** Both words point into their run's stack at the same thing (same slot kind and argument). */
function explainedPointer(va: bigint, vb: bigint, sa: StackLayout, sb: StackLayout): boolean {
  if (!inStack(va, sa) || !inStack(vb, sb)) return false;
  const ka = classifyStackPointer(va, sa);
  const kb = classifyStackPointer(vb, sb);
  return !!ka && !!kb && ka.kind === kb.kind && ka.arg === kb.arg;
}

/**
 * Positions found in run A as addresses of the real run, verified against
 * its own argc, pid and clock readings (clockReads: what the tracer answered
 * the real run, in order).
 */
export function translateSlots(found: NonPointerSlot[], a: Run, real: CapturedMapping[], fsC: bigint, argc: number, pid: number,
  clockReads: ClockRead[]): ImageSlot[] {
  // Always: a reading the real run took and A did not (another environment) was never checked for what it left.
  checkSameReads(a.clockReads, clockReads, 'the differential and the real run');
  return found.map((s) => {
    const addr = translate(s.addr, a.maps, real, a.fsBase, fsC);
    const m = real.find((x) => addr >= x.start && addr < x.end);
    const off = m ? Number(addr - m.start) : 0;
    const page = m?.data.get(Math.floor(off / PAGE));
    if (s.clock) {
      const { width, arg, read, what } = s.clock;
      const have = page ? (width === 8 ? page.readBigUInt64LE(off % PAGE) : BigInt(page.readUInt32LE(off % PAGE))) : undefined;
      const reading = clockReads[read] as ClockRead;
      if (have !== clockValue(reading.ns, Number((arg >> 8n) & 0xffn), width)) {
        throw new SnapshotRefusal('layout-mismatch', `${describeAddr(real, addr)} does not hold the ${what} in the real run`);
      }
      return { addr, kind: s.kind, width, arg };
    }
    const want = s.kind === SlotKind.ARGC ? argc : pid;
    if (!page || page.readUInt32LE(off % PAGE) !== want) {
      throw new SnapshotRefusal('layout-mismatch', `${describeAddr(real, addr)} does not hold ${s.kind === SlotKind.ARGC ? 'argc' : 'the pid'} in the real run`);
    }
    return { addr, kind: s.kind, width: 4 as const, arg: 0n };
  });
}
