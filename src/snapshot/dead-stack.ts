/**
 * Pointers into the stack below argc: dead frames.
 *
 * At the entry point `sp` is `&argc` and no frame is live, so a word pointing
 * below argc points into a frame of the loader that has returned. musl's
 * loader leaves one (`saved_addends`, a VLA in `__dls2`'s frame, never
 * cleared; read again only on REL architectures and only while the loader
 * relocates itself). Nothing can read through such a pointer without a bug,
 * but its value can still be compared or kept as a stack bound, so the
 * restore gives it the relation a cold run would have: the same distance
 * below this process's argc (slot BELOW_ARGC, arg = the distance).
 *
 * The distance is trusted only when it is the same in both differential runs,
 * whose argc addresses differ (B has more arguments), and when the real run
 * holds such a word at the same place with the same distance. A word that
 * points below argc but does not move with it (the same value in A and B) has
 * some other relation to the stack: refused.
 */
import type { ImageSlot } from '../image/format.js';
import { SlotKind } from '../image/schema.js';
import { PAGE, type CapturedMapping, type Mapping } from './capture.js';
import { translate } from './layout.js';
import { SnapshotRefusal } from './refusal.js';
import { describeAddr, type StackLayout } from './slots.js';

export interface DeadStackWord {
  /** Address in run A. */
  addr: bigint;
  /** &argc minus the word's value, the same in A and B. */
  below: bigint;
}

interface RunView {
  caps: CapturedMapping[];
  stack: StackLayout;
}

/** Every word of A's data pointing below A's argc, checked against B at the same address (same layout: ASLR off). */
export function deadStackWords(a: RunView, b: RunView, page: (c: CapturedMapping, i: number) => Buffer): DeadStackWord[] {
  const out: DeadStackWord[] = [];
  // The high halves first: a BigInt for every word of a big program's data costs tens of milliseconds.
  const hiLo = Number(a.stack.lo >> 32n);
  const hiHi = Number((a.stack.argcAddr - 1n) >> 32n);
  a.caps.forEach((ca, mi) => {
    const cb = b.caps[mi] as CapturedMapping;
    for (const [i, pa] of ca.data) {
      let pb: Buffer | undefined;
      for (let off = 0; off < PAGE; off += 8) {
        const hi = pa.readUInt32LE(off + 4);
        if (hi < hiLo || hi > hiHi) continue;
        const va = pa.readBigUInt64LE(off);
        if (va < a.stack.lo || va >= a.stack.argcAddr) continue;
        pb ??= page(cb, i);
        const below = a.stack.argcAddr - va;
        const addr = ca.start + BigInt(i * PAGE + off);
        if (pb.readBigUInt64LE(off) !== b.stack.argcAddr - below) {
          throw new SnapshotRefusal('unexplained-stack-pointer',
            `${describeAddr(a.caps, addr)} points 0x${below.toString(16)} bytes below argc (into a finished frame), but not at the same distance in a run with other arguments`);
        }
        out.push({ addr, below });
      }
    }
  });
  return out;
}

/**
 * The real run's BELOW_ARGC slots (found by the pointer scan) must be exactly
 * the differential runs' dead-stack words, translated to the real run's
 * addresses, with the same distances.
 */
export function checkDeadStackSlots(found: DeadStackWord[], a: { maps: Mapping[]; fsBase: bigint },
  real: CapturedMapping[], fsReal: bigint, slots: ImageSlot[]): void {
  const want = new Map<bigint, bigint>();
  for (const w of found) want.set(translate(w.addr, a.maps, real, a.fsBase, fsReal), w.below);
  const got = slots.filter((s) => s.kind === SlotKind.BELOW_ARGC);
  for (const s of got) {
    if (want.get(s.addr) !== s.arg) {
      throw new SnapshotRefusal('unexplained-stack-pointer',
        `${describeAddr(real, s.addr)} points 0x${s.arg.toString(16)} bytes below argc in the real run, which the differential runs did not show`);
    }
  }
  if (got.length !== want.size) {
    throw new SnapshotRefusal('layout-mismatch', `the differential runs had ${want.size} pointers below argc, the real run ${got.length}`);
  }
}
