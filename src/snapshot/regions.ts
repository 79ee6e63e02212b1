/**
 * Page classes become regions, and neighbours one mmap can serve are merged:
 * the region count is the restore cost of many-library programs.
 *
 * Merging needs the same protection and a continuing source: the next file
 * offset of the same file (FILE), anything (ZERO), or simply the next page
 * (DATA: the writer lays data out in address order, so adjacent DATA regions
 * are adjacent in the image too). Short zero runs touching data of the same
 * protection are stored as data: a few zero pages in the image file cost
 * less than an extra mmap at every restore (measured on cmake, bash, curl, vim
 * in the commit that set ABSORB_ZERO_PAGES).
 */
import type { ImageRegion, ImageSlot } from '../image/format.js';
import { RegionFlag, Src } from '../image/schema.js';
import { PAGE, isFileBacked, type CapturedMapping } from './capture.js';
import type { FileTable } from './files.js';
import { SnapshotRefusal } from './refusal.js';

const PAGE_N = BigInt(PAGE);
/** Zero runs of up to this many pages next to data (same protection) are stored as data. */
export const ABSORB_ZERO_PAGES = 16;

export function buildRegions(caps: CapturedMapping[], files: FileTable, slots: ImageSlot[]): ImageRegion[] {
  const pages: ImageRegion[] = [];
  for (const c of caps) {
    const fileIndex = isFileBacked(c) ? files.byMappedPath.get(c.path) : undefined;
    for (let i = 0; i < c.classes.length; i++) {
      // PROT_NONE: an address-space reservation (library gaps, guard pages): nothing to load.
      const cls = c.prot === 0 ? 'zero' : c.classes[i];
      const r: ImageRegion = {
        addr: c.start + BigInt(i) * PAGE_N, len: PAGE_N, prot: c.prot, file: 0, offset: 0n,
        flags: c.path === '[heap]' ? RegionFlag.HEAP : 0,
        source: cls === 'file' ? Src.FILE : cls === 'data' ? Src.DATA : Src.ZERO,
      };
      if (cls === 'file') {
        if (fileIndex === undefined) throw new SnapshotRefusal('internal', `file page in ${c.path} without a file entry`);
        r.file = fileIndex;
        r.offset = c.offset + BigInt(i) * PAGE_N;
      } else if (cls === 'data') {
        const data = c.data.get(i);
        if (!data) throw new SnapshotRefusal('internal', `data page of ${c.path || 'anonymous'} not captured`);
        r.data = data;
      }
      pages.push(r);
    }
  }
  let merged = mergeRegions(pages);
  for (let i = 0; i < merged.length; i++) {
    const r = merged[i] as ImageRegion;
    if (r.source !== Src.ZERO || r.prot === 0 || r.len > BigInt(ABSORB_ZERO_PAGES) * PAGE_N) continue;
    const touchesData = (n: ImageRegion | undefined, before: boolean): boolean =>
      !!n && n.source === Src.DATA && n.prot === r.prot && (n.flags & RegionFlag.HEAP) === (r.flags & RegionFlag.HEAP) &&
      (before ? n.addr + n.len === r.addr : r.addr + r.len === n.addr);
    if (touchesData(merged[i - 1], true) || touchesData(merged[i + 1], false)) {
      r.source = Src.DATA;
      r.data = Buffer.alloc(Number(r.len));
    }
  }
  merged = mergeRegions(merged);
  markPatched(merged, slots);
  return merged;
}

function mergeRegions(rs: ImageRegion[]): ImageRegion[] {
  const out: ImageRegion[] = [];
  for (const r of rs) {
    const last = out[out.length - 1];
    if (last && last.addr + last.len === r.addr && last.prot === r.prot && last.source === r.source &&
        (last.flags & RegionFlag.HEAP) === (r.flags & RegionFlag.HEAP) &&
        (r.source !== Src.FILE || (last.file === r.file && last.offset + last.len === r.offset))) {
      last.len += r.len;
      if (r.source === Src.DATA) last.data = Buffer.concat([last.data as Buffer, r.data as Buffer]);
      continue;
    }
    out.push({ ...r });
  }
  return out;
}

/** Regions holding slots are mapped writable at restore, patched, then re-protected. */
function markPatched(regions: ImageRegion[], slots: ImageSlot[]): void {
  for (const s of slots) {
    const r = regions.find((x) => s.addr >= x.addr && s.addr + BigInt(s.width) <= x.addr + x.len);
    if (!r || r.source !== Src.DATA) {
      throw new SnapshotRefusal('internal', `slot at 0x${s.addr.toString(16)} is not inside one captured data region`);
    }
    r.flags |= RegionFlag.PATCHED;
  }
}
