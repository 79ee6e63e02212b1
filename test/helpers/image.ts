/**
 * Low-level edits of an image file for fallback tests: corrupt, truncate, or
 * move a region onto an address the restoring process already uses. Field
 * positions come from the schema (the one source of truth), never from
 * constants written here.
 */
import * as fs from 'node:fs';
import { decodeStruct, encodeStruct } from '../../src/image/codec.js';
import { HEADER, REGION, SECTION, Section, hash64, layout, sizeOf } from '../../src/image/schema.js';

export function headerFieldOffset(name: string): number {
  const f = layout(HEADER).fields.find((x) => x.name === name);
  if (!f) throw new Error(`no header field ${name}`);
  return f.offset;
}

/** Recomputes the checksum over [0, meta_size) with the checksum field zero. */
export function rehash(buf: Buffer): void {
  const h = decodeStruct(HEADER, buf, 0);
  const meta = Number(h.meta_size);
  const off = headerFieldOffset('checksum');
  buf.writeBigUInt64LE(0n, off);
  buf.writeBigUInt64LE(hash64(buf.subarray(0, meta)), off);
}

export interface RegionRef {
  /** Byte offset of the region record in the image. */
  at: number;
  addr: bigint;
  len: bigint;
  source: number;
}

export function regions(buf: Buffer): RegionRef[] {
  const h = decodeStruct(HEADER, buf, 0);
  const secSize = sizeOf(SECTION);
  for (let i = 0; i < Number(h.section_count); i++) {
    const s = decodeStruct(SECTION, buf, Number(h.header_size) + i * secSize);
    if (Number(s.type) !== Section.REGIONS) continue;
    const out: RegionRef[] = [];
    for (let j = 0; j < Number(s.count); j++) {
      const at = Number(s.offset) + j * Number(s.entsize);
      const r = decodeStruct(REGION, buf, at);
      out.push({ at, addr: r.addr as bigint, len: r.len as bigint, source: Number(r.source) });
    }
    return out;
  }
  throw new Error('image has no REGIONS section');
}

/**
 * Moves the lowest region to `addr` (keeping the table sorted: `addr` must be
 * below the second region) and fixes the checksum, so the only thing wrong
 * with the image is that the address is taken at restore time.
 */
export function moveFirstRegion(file: string, addr: bigint): void {
  const buf = fs.readFileSync(file);
  const rs = regions(buf);
  const first = rs[0];
  if (!first) throw new Error('image has no regions');
  const rec = decodeStruct(REGION, buf, first.at);
  rec.addr = addr;
  encodeStruct(REGION, rec, buf, first.at);
  rehash(buf);
  fs.writeFileSync(file, buf);
}

/** XORs one byte at `offset` (in place, size and mode unchanged). */
export function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] = (b[0] as number) ^ 0xff;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

export function metaSize(file: string): number {
  const buf = fs.readFileSync(file);
  return Number(decodeStruct(HEADER, buf, 0).meta_size);
}

/** First PT_LOAD virtual address of an ELF64 file (where the launcher's text lives). */
export function firstLoadAddress(elf: string): bigint {
  const b = fs.readFileSync(elf);
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (b.readUInt32LE(at) === 1 /* PT_LOAD */) return b.readBigUInt64LE(at + 0x10) & ~0xfffn;
  }
  throw new Error(`${elf}: no PT_LOAD`);
}
