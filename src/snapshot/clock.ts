/**
 * The time stamp counter, which user space reads without a syscall.
 *
 * glibc's loader reads it at start-up for its LD_DEBUG=statistics timings
 * (`start_time`, `load_time`, `relocate_time` in ld.so's data): two runs of
 * the same program never agree on those words. The differential runs make
 * them agree by making rdtsc fault (PR_SET_TSC, PR_TSC_SIGSEGV) and answering
 * it from a counter. Some hypervisors ignore that setting (CR4.TSD): rdtsc
 * then just runs. There the words are found instead: a third run with
 * exactly A's inputs; whatever differs between A and that run depends on
 * time, not on argv, the environment or the pid.
 *
 * Such a word is accepted only in the loader's own mapping, whose timings
 * matter only under LD_DEBUG, and any LD_* variable makes a run cold
 * anyway. Anywhere else it is a library that keeps a clock reading (or seeds
 * from one): a restore would freeze it at the snapshot's value, so it is
 * refused, as a trapped rdtsc outside the loader is.
 */
import { spawnSync } from 'node:child_process';
import { PAGE, type CapturedMapping, type Mapping } from './capture.js';
import { SnapshotRefusal } from './refusal.js';
import { describeAddr } from './slots.js';

/** Test hook: behave as on a machine where rdtsc cannot be trapped. */
export const NO_TSC_TRAP_ENV = 'CACHED_EXEC_TEST_NO_TSC_TRAP';

const probed = new Map<string, boolean>();

/** Whether rdtsc faults under PR_TSC_SIGSEGV here (asked once per launcher: the launcher's probe dies of SIGSEGV if so). */
export function counterTrappable(launcher: string): boolean {
  if (process.env[NO_TSC_TRAP_ENV] === '1') return false;
  let v = probed.get(launcher);
  if (v === undefined) {
    const r = spawnSync(launcher, ['--internal-tsc-probe'], { stdio: 'ignore' });
    v = r.signal === 'SIGSEGV';
    probed.set(launcher, v);
  }
  return v;
}

/** A 4-byte word that differs between the runs with different inputs and is none of the explained kinds. */
export interface Unexplained {
  addr: bigint;
  va: number;
  vb: number;
}

/**
 * 4-byte positions that differ between two same-layout captures of runs
 * with identical inputs, other than each run's own pid.
 */
export function changingWords(a: CapturedMapping[], a2: CapturedMapping[], pidA: number, pidA2: number,
  page: (c: CapturedMapping, i: number) => Buffer): Set<bigint> {
  const out = new Set<bigint>();
  a.forEach((ma, mi) => {
    const mb = a2[mi] as CapturedMapping;
    for (let i = 0; i < ma.classes.length; i++) {
      if (!ma.data.has(i) && !mb.data.has(i) && ma.classes[i] === mb.classes[i]) continue;
      const pa = page(ma, i);
      const pb = page(mb, i);
      if (pa.equals(pb)) continue;
      for (let off = 0; off < PAGE; off += 4) {
        const va = pa.readUInt32LE(off);
        const vb = pb.readUInt32LE(off);
        if (va !== vb && !(va === pidA && vb === pidA2)) out.add(ma.start + BigInt(i * PAGE + off));
      }
    }
  });
  return out;
}

/** The file mapped at the loader's base address (AT_BASE), or undefined. */
export function loaderPath(maps: Mapping[], atBase: bigint | undefined): string | undefined {
  if (atBase === undefined) return undefined;
  return maps.find((m) => atBase >= m.start && atBase < m.end)?.path || undefined;
}

/**
 * Sorts unexplained differences by what a run with A's own inputs did:
 * unchanged there means the difference came from argv, the environment or
 * the pid (refused as unexplained); changed means a clock, accepted in the
 * loader's mapping and refused anywhere else. Returns how many were accepted.
 *
 * A counter reading is 8 bytes: its high half changes once in 2^32 ticks
 * (about a second), so it may differ between A and B while A and the third
 * run agree. A half whose other half (the same aligned 8-byte word) changed
 * is part of the same reading.
 */
export function acceptLoaderClockWords(unexplained: Unexplained[], changing: Set<bigint>, caps: CapturedMapping[],
  loader: string | undefined, unexplainedDetail: (u: Unexplained) => string): number {
  let accepted = 0;
  for (const u of unexplained) {
    if (!changing.has(u.addr) && !changing.has(u.addr ^ 4n)) throw new SnapshotRefusal('unexplained-difference', unexplainedDetail(u));
    const m = caps.find((x) => u.addr >= x.start && u.addr < x.end);
    if (!loader || !m || m.path !== loader) {
      throw new SnapshotRefusal('unsupported-syscall',
        `${describeAddr(caps, u.addr)} changes between two runs with the same inputs: a constructor kept a clock reading (the time stamp counter, read without a syscall) that a restore would freeze at the snapshot's`);
    }
    accepted++;
  }
  return accepted;
}
