/**
 * The clock forms a CLOCK slot may take (src/snapshot/vdso-clock.ts): what
 * the differential runs recognise as a copy of a reading, and that A's and
 * B's clocks are far enough apart for every form to differ.
 */
import { describe, expect, it } from 'vitest';
import { ClockForm } from '../../src/image/schema.js';
import {
  CLOCK_FORMS, CLOCK_OFFSET_B_NS, checkSameReads, clockValue, matchClockWord, type ClockRead,
} from '../../src/snapshot/vdso-clock.js';
import { SnapshotRefusal } from '../../src/snapshot/refusal.js';

const NOW = 1_796_300_000_123_456_789n; // 2026-12-03, ns
const read = (ns: bigint, clock = 0, fn = 'gettimeofday'): ClockRead => ({ fn, clock, ns });

describe('clock forms', () => {
  it('every form of every width differs between A\'s clock and B\'s, whatever A\'s', () => {
    for (const base of [NOW, NOW + 999_999_999n, 17n * 86_400n * 1_000_000_000n, 1n]) {
      for (const f of CLOCK_FORMS) {
        for (const width of [4, 8] as const) {
          expect(clockValue(base, f.form, width), `${f.what}/${width} at ${base}`).not.toBe(clockValue(base + CLOCK_OFFSET_B_NS, f.form, width));
        }
      }
    }
  });

  it('glib\'s stamp (ms, 4 bytes) and a timespec\'s fields are recognised, with the reading they copy', () => {
    const MONO = 12_345_678_901_234n; // uptime
    const a = [read(MONO, 1, 'clock_gettime'), read(NOW)];
    const b = a.map((r) => read(r.ns + CLOCK_OFFSET_B_NS, r.clock, r.fn));
    const ms4 = matchClockWord(clockValue(NOW, ClockForm.MS, 4), clockValue(NOW + CLOCK_OFFSET_B_NS, ClockForm.MS, 4), 4, a, b);
    expect(ms4).toMatchObject({ read: 1, arg: BigInt(ClockForm.MS << 8) });
    const nsec = matchClockWord(MONO % 1_000_000_000n, (MONO + CLOCK_OFFSET_B_NS) % 1_000_000_000n, 8, a, b);
    expect(nsec).toMatchObject({ read: 0, arg: 1n | BigInt(ClockForm.NSEC_OF_SEC << 8) });
  });

  it('a value computed from the time is no copy of it', () => {
    const a = [read(NOW)];
    const b = [read(NOW + CLOCK_OFFSET_B_NS)];
    const seed = (ns: bigint): bigint => BigInt.asUintN(32, (ns / 1_000_000_000n) * 2654435761n) ^ (ns % 1_000_000_000n);
    expect(matchClockWord(seed(NOW), seed(NOW + CLOCK_OFFSET_B_NS), 4, a, b)).toBeUndefined();
    expect(matchClockWord(clockValue(NOW, ClockForm.MS, 8) + 1n, clockValue(NOW + CLOCK_OFFSET_B_NS, ClockForm.MS, 8) + 1n, 8, a, b)).toBeUndefined();
  });

  it('runs that read other clocks, or another number of times, cannot be paired', () => {
    expect(() => checkSameReads([read(NOW)], [read(NOW, 1, 'clock_gettime')], 'x')).toThrow(SnapshotRefusal);
    expect(() => checkSameReads([read(NOW)], [], 'x')).toThrow(SnapshotRefusal);
    expect(() => checkSameReads([read(NOW)], [read(NOW + 7n)], 'x')).not.toThrow();
  });
});
