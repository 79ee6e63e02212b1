/**
 * Clock reads through the vdso before the entry point, answered by the tracer.
 *
 * Reading the clock through the vdso is no syscall (vdso.ts plants an int3 on
 * each of its functions). A library constructor that takes the time (glib's
 * slice allocator stamps its magazine cache with `g_get_real_time() / 1000`
 * when it initialises, in every glib program: gdb, gio, gdbus...) would keep
 * the snapshot's time in every restored process. Instead of refusing, the
 * differential runs get *different* clocks, far apart (A: now; B: 400 days
 * and an odd fraction of a second later, so dates, days of the week and every
 * unit differ) and running at different paces (so durations differ), and
 * every word that differs between them must be explained:
 *  - a verbatim copy of one reading, in one of a few units (s, ms, µs, ns of
 *    the whole value, or the µs/ns part of a timeval/timespec), 4 or 8 bytes
 *    wide (truncated): a CLOCK slot, which the restore fills with its own
 *    clock_gettime of the same clock, so the program holds what a cold
 *    start at that moment would have read;
 *  - anything else computed from the time (a seed, a date, a duration, a
 *    calibration) is `unexplained-difference`, refused as before.
 * A read that leaves no trace at all needs no slot. Only clocks a restore
 * can read for itself are answered (CLOCK_REALTIME, MONOTONIC, BOOTTIME and
 * their coarse/raw/alarm/TAI kin); a process or thread CPU clock refuses, as
 * does any vdso function that is not a clock (getrandom).
 *
 * Post-init snapshots (checkpoint.ts) answer the clock with one fake clock in
 * both runs and keep what the init took from it: that is documented there and
 * untouched here.
 */
import * as fs from 'node:fs';
import { ClockForm } from '../image/schema.js';
import { SnapshotRefusal } from './refusal.js';
import type { RegFile } from './regs.js';
import { ARCH } from './tracer-arch.js';

/** One clock reading the tracer answered: the clock id and the value in ns. */
export interface ClockRead {
  fn: string;
  clock: number;
  ns: bigint;
}

/** Clock ids a restore can read with clock_gettime: REALTIME 0, MONOTONIC 1, MONOTONIC_RAW 4, REALTIME_COARSE 5, MONOTONIC_COARSE 6, BOOTTIME 7, REALTIME_ALARM 8, BOOTTIME_ALARM 9, TAI 11. */
const WALL_CLOCKS = new Set([0, 1, 4, 5, 6, 7, 8, 9, 11]);
const REALTIME_LIKE = new Set([0, 5, 8, 11]);
const SEC = 1_000_000_000n;

/** B's clocks run this far ahead of A's: more than a year, with every sub-unit different. */
export const CLOCK_OFFSET_B_NS = 400n * 86_400n * 1_000_000_000n + 12_345_678_901_234n + 777n;
/**
 * Each reading moves the answering clock on by a step (two reads never
 * return the same value). B's step is another than A's, so what a
 * constructor computes from elapsed time (a calibration loop, a duration)
 * differs too, and is refused.
 */
const STEP_NS = 1_000n;
const STEP_B_NS = 2_719n;

/** The clock a traced run answers from: a realtime and a monotonic base; each read moves both by step ns. */
export interface ClockBase {
  realtime: bigint;
  monotonic: bigint;
  step: bigint;
}

export function clockNow(): ClockBase {
  return { realtime: BigInt(Date.now()) * 1_000_000n, monotonic: process.hrtime.bigint(), step: STEP_NS };
}

/** Run B's clock: far ahead of A's, and running at another pace. */
export function clockB(a: ClockBase): ClockBase {
  return { realtime: a.realtime + CLOCK_OFFSET_B_NS, monotonic: a.monotonic + CLOCK_OFFSET_B_NS, step: STEP_B_NS };
}

/**
 * Does the vdso function at a guard on behalf of the tracee (the tracee is
 * stopped on the breakpoint at its first instruction): writes the answer,
 * returns to the caller. Refuses what a restore could not answer for itself.
 */
export function answerVdsoClock(name: string, regs: RegFile, mem: number, base: ClockBase, reads: ClockRead[]): void {
  const arg0 = ARCH.callArg(regs, 0);
  const arg1 = ARCH.callArg(regs, 1);
  const now = (clock: number): bigint => {
    if (!WALL_CLOCKS.has(clock)) {
      throw new SnapshotRefusal('unsupported-syscall', `vdso ${name}() of clock ${clock} (a CPU-time clock) before the entry point: a restore cannot give back what it read`);
    }
    const ns = (REALTIME_LIKE.has(clock) ? base.realtime : base.monotonic) + BigInt(reads.length + 1) * base.step;
    reads.push({ fn: name, clock, ns });
    return ns;
  };
  switch (name) {
    case 'clock_gettime': {
      const ns = now(Number(BigInt.asIntN(32, arg0)));
      if (arg1) writeWords(mem, arg1, [ns / SEC, ns % SEC]);
      ARCH.setResult(regs, 0n);
      break;
    }
    case 'gettimeofday': {
      if (arg1) throw new SnapshotRefusal('unsupported-syscall', 'vdso gettimeofday() asked for the time zone before the entry point');
      const ns = now(0);
      if (arg0) writeWords(mem, arg0, [ns / SEC, (ns % SEC) / 1000n]);
      ARCH.setResult(regs, 0n);
      break;
    }
    case 'time': {
      const sec = now(0) / SEC;
      if (arg0) writeWords(mem, arg0, [sec]);
      ARCH.setResult(regs, sec);
      break;
    }
    default:
      throw new SnapshotRefusal('unsupported-syscall', `vdso ${name}() before the entry point: a restore would keep what it returned`);
  }
  ARCH.returnNow(mem, regs);
}

function writeWords(mem: number, addr: bigint, words: bigint[]): void {
  const b = Buffer.alloc(words.length * 8);
  words.forEach((w, i) => b.writeBigInt64LE(w, i * 8));
  if (fs.writeSync(mem, b, 0, b.length, Number(addr)) !== b.length) {
    throw new SnapshotRefusal('internal', `cannot write tracee memory at 0x${addr.toString(16)}`);
  }
}

/**
 * The forms a copy of a reading may take (CX_CLOCKFORM_*, arg bits 8-15):
 * the whole value in ns, µs, ms or s, or the sub-second part of a timespec
 * (ns) or a timeval (µs).
 */
export const CLOCK_FORMS: readonly { form: number; divisor: bigint; subSecond: boolean; what: string }[] = [
  { form: ClockForm.NS, divisor: 1n, subSecond: false, what: 'ns' },
  { form: ClockForm.US, divisor: 1_000n, subSecond: false, what: 'µs' },
  { form: ClockForm.MS, divisor: 1_000_000n, subSecond: false, what: 'ms' },
  { form: ClockForm.SEC, divisor: SEC, subSecond: false, what: 's' },
  { form: ClockForm.NSEC_OF_SEC, divisor: 1n, subSecond: true, what: 'ns of the second' },
  { form: ClockForm.USEC_OF_SEC, divisor: 1_000n, subSecond: true, what: 'µs of the second' },
];

/** A reading in a form, truncated to width bytes (what a C assignment to a narrower integer keeps). */
export function clockValue(ns: bigint, form: number, width: 4 | 8): bigint {
  const f = CLOCK_FORMS.find((x) => x.form === form);
  if (!f) throw new SnapshotRefusal('internal', `unknown clock form ${form}`);
  const v = (f.subSecond ? ns % SEC : ns) / f.divisor;
  return BigInt.asUintN(width * 8, v);
}

export interface ClockSlotMatch {
  read: number; // index into the reads
  arg: bigint; // clock id | form << 8
  what: string;
}

/**
 * The reading a differing word copies, if any: the same reading (by order)
 * and form in A and B. Forms whose values are too small to tell apart from
 * other data (the sub-second parts in 4 bytes are up to 10^9) still differ
 * between A and B by construction of CLOCK_OFFSET_B_NS, and the real run
 * verifies the slot against its own reading.
 */
export function matchClockWord(va: bigint, vb: bigint, width: 4 | 8, readsA: ClockRead[], readsB: ClockRead[]): ClockSlotMatch | undefined {
  for (let i = 0; i < readsA.length; i++) {
    const ra = readsA[i] as ClockRead;
    const rb = readsB[i] as ClockRead;
    for (const f of CLOCK_FORMS) {
      if (clockValue(ra.ns, f.form, width) === va && clockValue(rb.ns, f.form, width) === vb) {
        return { read: i, arg: BigInt(ra.clock) | (BigInt(f.form) << 8n), what: `${f.what} of ${ra.fn}() reading ${i + 1} (clock ${ra.clock})` };
      }
    }
  }
  return undefined;
}

/** A and B (and the real run) must have read the same clocks in the same order: else what was kept cannot be paired. */
export function checkSameReads(a: ClockRead[], b: ClockRead[], which: string): void {
  const same = a.length === b.length && a.every((r, i) => r.clock === b[i]?.clock && r.fn === b[i]?.fn);
  if (!same) {
    const list = (x: ClockRead[]): string => x.map((r) => `${r.fn}(${r.clock})`).join(', ') || 'none';
    throw new SnapshotRefusal('unexplained-difference', `the constructors read the clock differently in ${which} (${list(a)} vs ${list(b)})`);
  }
}
