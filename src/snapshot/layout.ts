/**
 * Pairing the differential run's address space (ASLR off) with the real,
 * randomised run's.
 *
 * Whole-VMA pairing in address order does not work: the loader aligns
 * libraries by mapping more and unmapping the excess, so where holes fall
 * depends on the random base, and anonymous mappings that end up adjacent are
 * merged into one VMA in one run and not in the other (measured: cmake has 259
 * VMAs in both runs, but its anonymous rw-p ones split differently; python3.11
 * has 28 and 29). What must agree is what was mapped:
 *  - file mappings: the same (path, offset, protection, size) in both runs;
 *  - anonymous memory: the same number of bytes per protection;
 *  - the heap: the same size.
 * Addresses are then translated by anchors that do not depend on placement:
 * the thread pointer for the thread block, file and offset for file mappings,
 * the file mapping an anonymous one follows (its .bss), the heap start.
 */
import { describeAddr } from './slots.js';
import { isFileBacked, isSpecial, type Mapping } from './capture.js';
import { SnapshotRefusal } from './refusal.js';

const fileKey = (m: Mapping): string => `${m.path}|${m.offset}|${m.perms}|${m.end - m.start}`;

/** Refuses 'layout-mismatch' unless both runs mapped the same things (see the module comment). */
export function checkSameContents(a: Mapping[], c: Mapping[]): void {
  const summary = (maps: Mapping[]): Map<string, bigint> => {
    const out = new Map<string, bigint>();
    const add = (k: string, n: bigint): void => {
      out.set(k, (out.get(k) ?? 0n) + n);
    };
    for (const m of maps) {
      if (isSpecial(m)) continue;
      if (isFileBacked(m)) add(`file ${fileKey(m)}`, 1n);
      else if (m.path === '[heap]') add('heap', m.end - m.start);
      else add(`anonymous ${m.perms}`, m.end - m.start);
    }
    return out;
  };
  const sa = summary(a);
  const sc = summary(c);
  for (const k of new Set([...sa.keys(), ...sc.keys()])) {
    if (sa.get(k) !== sc.get(k)) {
      throw new SnapshotRefusal('layout-mismatch', `the real and the differential runs differ in ${k}: ${sa.get(k) ?? 0n} vs ${sc.get(k) ?? 0n}`);
    }
  }
}

/**
 * Where an address of run A lies in run C. The file, heap and .bss anchors
 * demand that the VMA holding the address has the same size and protection in
 * both runs, so an offset inside it means the same thing. The thread block is
 * the exception: the loader allocates it among its own small allocations,
 * whose VMA merges with whatever the holes put next to it (curl and
 * python3.11 differ here), so it is anchored at the thread pointer alone and
 * only the span from the thread pointer to the address must lie inside one
 * VMA in both runs. The slot's value, checked in the real run, confirms it.
 */
export function translate(addr: bigint, a: Mapping[], c: Mapping[], fsA: bigint, fsC: bigint): bigint {
  const i = a.findIndex((m) => addr >= m.start && addr < m.end);
  const m = a[i];
  if (!m) throw new SnapshotRefusal('layout-mismatch', `0x${addr.toString(16)} is not mapped in the differential run`);
  const size = m.end - m.start;
  const unique = (pred: (n: Mapping) => boolean): Mapping => {
    const hits = c.filter((n) => n.perms === m.perms && n.end - n.start === size && pred(n));
    if (hits.length !== 1) throw new SnapshotRefusal('layout-mismatch', `cannot pair ${describeAddr(a, addr)} with the real run`);
    return hits[0] as Mapping;
  };
  let n: Mapping;
  if (fsA >= m.start && fsA < m.end) {
    const target = fsC + (addr - fsA);
    const tls = c.find((x) => fsC >= x.start && fsC < x.end);
    if (!tls || tls.perms !== m.perms || target < tls.start || target >= tls.end) {
      throw new SnapshotRefusal('layout-mismatch', `${describeAddr(a, addr)} (thread pointer${addr >= fsA ? '+' : '-'}0x${(addr >= fsA ? addr - fsA : fsA - addr).toString(16)}) is outside the real run's thread block mapping`);
    }
    return target;
  } else if (m.path === '[heap]') {
    n = unique((x) => x.path === '[heap]');
  } else if (isFileBacked(m)) {
    n = unique((x) => x.path === m.path && x.offset === m.offset);
  } else {
    const prev = a[i - 1];
    if (!prev || !isFileBacked(prev) || prev.end !== m.start || m.path !== '') {
      throw new SnapshotRefusal('layout-mismatch', `${describeAddr(a, addr)} is in an anonymous mapping with no anchor`);
    }
    const pc = c.filter((x) => fileKey(x) === fileKey(prev));
    if (pc.length !== 1) throw new SnapshotRefusal('layout-mismatch', `cannot pair ${describeAddr(a, addr)} with the real run`);
    const anchorEnd = (pc[0] as Mapping).end;
    n = unique((x) => x.start === anchorEnd && x.path === '');
  }
  return n.start + (addr - m.start);
}
