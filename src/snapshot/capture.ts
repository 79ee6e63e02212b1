/**
 * Capture of a stopped tracee's address space: /proc/PID/maps, and for every
 * mapping the class of each page.
 *
 * Which pages differ from their file is read from /proc/PID/pagemap instead of
 * comparing everything: a private file page that was never written is still
 * the page-cache page (bit 61 set) or not present at all, so only anonymous
 * copies (written pages) and anonymous memory are read. Written pages that
 * happen to equal their file again (the entry page after the breakpoint was
 * removed) are compared and stay file-backed.
 */
import * as fs from 'node:fs';
import { SnapshotRefusal } from './refusal.js';
import { readMem } from './trace.js';
import { systemPageSize } from '../image/machine.js';

/** AT_PAGESZ: the traced program runs on this kernel, with these pages (16K on some arm64 kernels). */
export const PAGE = systemPageSize();
const PAGE_N = BigInt(PAGE);

export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string; // e.g. "r-xp"
  offset: bigint;
  /** Device as maps prints it ("fd:01"), for the identity check of mapped files. */
  dev: string;
  inode: number;
  path: string; // '' for anonymous
}

export type PageClass = 'file' | 'data' | 'zero';

export interface CapturedMapping extends Mapping {
  /** One entry per page. */
  classes: PageClass[];
  /** Contents of 'data' pages, by page index. */
  data: Map<number, Buffer>;
  prot: number;
}

export const SPECIAL = new Set(['[stack]', '[vdso]', '[vvar]', '[vvar_vclock]', '[vsyscall]']);
export const isSpecial = (m: Mapping): boolean => SPECIAL.has(m.path) || (m.path.startsWith('[v') && m.path.endsWith(']'));
export const isFileBacked = (m: Mapping): boolean => m.path.startsWith('/') && m.inode !== 0;

export function readMaps(pid: number): Mapping[] {
  const out: Mapping[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$/.exec(line);
    if (!m) throw new SnapshotRefusal('internal', `cannot parse maps line: ${line}`);
    const perms = m[3] as string;
    const name = m[7] ?? '';
    const mapping: Mapping = {
      start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms, offset: BigInt(`0x${m[4]}`),
      dev: m[5] as string, inode: Number(m[6]), path: name.replace(/ \(deleted\)$/, ''),
    };
    // Checked here, before anything else looks at the name: shared anonymous memory shows as "/dev/zero (deleted)".
    if (perms[3] === 's' && perms[1] === 'w') {
      throw new SnapshotRefusal('shared-writable-mapping', `${name || 'anonymous'} at 0x${mapping.start.toString(16)} is MAP_SHARED and writable`);
    }
    if (name.endsWith(' (deleted)')) throw new SnapshotRefusal('internal', `mapped file was deleted: ${name}`);
    if (!isSpecial(mapping) && name !== '' && !isFileBacked(mapping) && name !== '[heap]' && !name.startsWith('[anon:')) {
      throw new SnapshotRefusal('internal', `unknown kind of mapping: ${name}`);
    }
    out.push(mapping);
  }
  return heapFromBreak(out, startBrk(pid));
}

/** /proc/PID/stat field 47, start_brk: where the heap starts. */
function startBrk(pid: number): bigint {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const v = s.slice(s.lastIndexOf(')') + 2).trim().split(' ')[47 - 3];
  if (v === undefined) throw new SnapshotRefusal('internal', `/proc/${pid}/stat has no start_brk`);
  return BigInt(v);
}

/**
 * The kernel names a VMA "[heap]" when it touches [start_brk, brk], not
 * only when it is the heap. Before Linux 6.5 an ASLR-off process's break
 * starts right at the end of the program's .bss (no gap page), so with no
 * heap yet the .bss VMA is "[heap]", and with one the two may be one VMA:
 * the differential runs (ASLR off) would then see a heap the real run has
 * not (seen on arm64 with Linux 6.1: dash's 8 KiB .bss). What lies below
 * start_brk is the .bss: named as the anonymous memory it is.
 */
function heapFromBreak(maps: Mapping[], brkStart: bigint): Mapping[] {
  return maps.flatMap((m) => {
    if (m.path !== '[heap]' || m.start >= brkStart) return [m];
    if (m.end <= brkStart) return [{ ...m, path: '' }];
    return [{ ...m, end: brkStart, path: '' }, { ...m, start: brkStart }];
  });
}

/** True when a stat result names the file maps shows for m (device and inode). */
export function sameFileAsMapping(m: Mapping, st: fs.BigIntStats): boolean {
  const [major, minor] = m.dev.split(':').map((x) => BigInt(`0x${x}`));
  // glibc's dev_t encoding (gnu_dev_major/gnu_dev_minor).
  const stMajor = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const stMinor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  return st.ino === BigInt(m.inode) && stMajor === major && stMinor === minor;
}

export const protOf = (perms: string): number =>
  (perms[0] === 'r' ? 1 : 0) | (perms[1] === 'w' ? 2 : 0) | (perms[2] === 'x' ? 4 : 0);

const isZero = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
};

export function captureMappings(pid: number, mem: number, maps: Mapping[]): CapturedMapping[] {
  const pagemap = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  const fileFds = new Map<string, { fd: number; size: number }>();
  try {
    const out: CapturedMapping[] = [];
    for (const m of maps) {
      if (isSpecial(m)) continue;
      const npages = Number((m.end - m.start) / PAGE_N);
      const classes: PageClass[] = new Array<PageClass>(npages).fill('zero');
      const data = new Map<number, Buffer>();
      const prot = protOf(m.perms);
      out.push({ ...m, classes, data, prot });
      if (prot === 0) continue; // PROT_NONE: address space reservation only
      const pm = Buffer.alloc(npages * 8);
      fs.readSync(pagemap, pm, 0, pm.length, Number((m.start / PAGE_N) * 8n));
      let file: { fd: number; size: number } | undefined;
      if (isFileBacked(m)) {
        file = fileFds.get(m.path);
        if (!file) {
          const fd = fs.openSync(m.path, 'r');
          const st = fs.fstatSync(fd, { bigint: true });
          file = { fd, size: Number(st.size) };
          fileFds.set(m.path, file);
          if (!sameFileAsMapping(m, st)) throw new SnapshotRefusal('too-new', `${m.path} changed while it was being captured`);
        }
      }
      for (let i = 0; i < npages; i++) {
        const e = pm.readBigUInt64LE(i * 8);
        const present = (e >> 63n) & 1n || (e >> 62n) & 1n;
        const filePage = (e >> 61n) & 1n;
        const addr = m.start + BigInt(i) * PAGE_N;
        const fileOff = Number(m.offset) + i * PAGE;
        if (file) {
          const inFile = fileOff < file.size;
          if (!present || filePage) {
            classes[i] = inFile ? 'file' : 'zero';
            continue;
          }
          const page = readMem(mem, addr, PAGE);
          if (inFile) {
            const disk = Buffer.alloc(PAGE);
            fs.readSync(file.fd, disk, 0, PAGE, fileOff);
            if (disk.equals(page)) {
              classes[i] = 'file';
              continue;
            }
          }
          if (isZero(page)) classes[i] = 'zero';
          else {
            classes[i] = 'data';
            data.set(i, page);
          }
        } else if (present) {
          const page = readMem(mem, addr, PAGE);
          if (!isZero(page)) {
            classes[i] = 'data';
            data.set(i, page);
          }
        }
      }
    }
    return out;
  } finally {
    fs.closeSync(pagemap);
    for (const f of fileFds.values()) fs.closeSync(f.fd);
  }
}

/** The 8-byte word at addr if it lies in a captured data page, else undefined (file or zero page). */
export function wordAt(caps: CapturedMapping[], addr: bigint): bigint | undefined {
  for (const c of caps) {
    if (addr < c.start || addr >= c.end) continue;
    const off = Number(addr - c.start);
    const page = c.data.get(Math.floor(off / PAGE));
    return page ? page.readBigUInt64LE(off % PAGE) : undefined;
  }
  return undefined;
}
