/**
 * Secrets a loader copies verbatim from AT_RANDOM before the entry point.
 *
 * musl's malloc (mallocng) copies AT_RANDOM bytes 8-15 into its context
 * (`ctx.secret`) and into the check word of each metadata area when the
 * loader first allocates (its constructor queue), and compares them for
 * equality only. Kept as the snapshot had them, every restored process would
 * share one malloc secret; a cold run's is its own AT_RANDOM's. RANDOM_COPY
 * slots give a restored process its own, so it matches a cold run.
 *
 * Found by difference, not by knowing musl: one more run with A's inputs but
 * other AT_RANDOM bytes 8-15 (bytes 0-7, the stack guard's, kept). Every
 * aligned word that differs must be a copy of those bytes in both runs; the
 * pid is the only other difference allowed. Anything else that changed is
 * derived from them (glibc's pointer guard is the same bytes, and pointers
 * mangled with it would differ): then nothing is patched and the image keeps
 * the snapshot's values, shared by every restore, as before. Only asked for
 * loaders that are their C library (libc-loader.ts), whose code is all that
 * runs before the entry point: one traced run more for them, none for glibc.
 */
import * as fs from 'node:fs';
import type { ImageSlot } from '../image/format.js';
import { SlotKind } from '../image/schema.js';
import { PAGE, type CapturedMapping } from './capture.js';
import { capture, pageContent, sameLayout, type Differential } from './diff.js';
import { translate } from './layout.js';
import { SnapshotRefusal } from './refusal.js';
import { describeAddr } from './slots.js';

/** Offset of the copied bytes in AT_RANDOM. */
const OFFSET = 8;

export type RandomCopies =
  | { ok: true; addrs: bigint[] } // in run A
  | { ok: false; detail: string };

/** Runs A once more with other AT_RANDOM bytes 8-15 and sorts what changed (see the module comment). */
export function findRandomCopies(diff: Differential): RandomCopies {
  const a = diff.runA;
  const random = Buffer.from(a.random);
  for (let i = OFFSET; i < OFFSET + 8; i++) random[i] = (random[i] as number) ^ 0xa5;
  const r = capture({ ...diff.optsA, atRandom: random });
  sameLayout(a.caps, r.caps);
  const wantA = a.random.readBigUInt64LE(OFFSET);
  const wantR = random.readBigUInt64LE(OFFSET);
  const files = new Map<string, number>();
  const addrs: bigint[] = [];
  try {
    for (let mi = 0; mi < a.caps.length; mi++) {
      const ca = a.caps[mi] as CapturedMapping;
      const cr = r.caps[mi] as CapturedMapping;
      for (let i = 0; i < ca.classes.length; i++) {
        if (!ca.data.has(i) && !cr.data.has(i) && ca.classes[i] === cr.classes[i]) continue;
        const pa = pageContent(ca, i, files);
        const pr = pageContent(cr, i, files);
        if (pa.equals(pr)) continue;
        for (let off = 0; off < PAGE; off += 8) {
          const va = pa.readBigUInt64LE(off);
          const vr = pr.readBigUInt64LE(off);
          if (va === vr) continue;
          const addr = ca.start + BigInt(i * PAGE + off);
          if (va === wantA && vr === wantR) {
            addrs.push(addr);
            continue;
          }
          const halvesArePid = [0, 4].every((k) => {
            const ha = pa.readUInt32LE(off + k);
            const hr = pr.readUInt32LE(off + k);
            return ha === hr || (ha === a.pid && hr === r.pid);
          });
          if (!halvesArePid) return { ok: false, detail: `${describeAddr(a.caps, addr)} is derived from AT_RANDOM bytes 8-15, not a copy` };
        }
      }
    }
  } finally {
    for (const fd of files.values()) fs.closeSync(fd);
  }
  return { ok: true, addrs };
}

/** The copies at the real run's addresses, each checked to hold the real run's own bytes. */
export function randomCopySlots(found: bigint[], diff: Differential, real: CapturedMapping[], fsReal: bigint, realRandom: Buffer): ImageSlot[] {
  const want = realRandom.readBigUInt64LE(OFFSET);
  return found.map((addrA) => {
    const addr = translate(addrA, diff.runA.maps, real, diff.runA.fsBase, fsReal);
    const m = real.find((x) => addr >= x.start && addr < x.end);
    const off = m ? Number(addr - m.start) : 0;
    const page = m?.data.get(Math.floor(off / PAGE));
    if (!page || page.readBigUInt64LE(off % PAGE) !== want) {
      throw new SnapshotRefusal('layout-mismatch', `${describeAddr(real, addr)} does not hold the real run's AT_RANDOM bytes 8-15`);
    }
    return { addr, kind: SlotKind.RANDOM_COPY, width: 8 as const, arg: BigInt(OFFSET) };
  });
}
