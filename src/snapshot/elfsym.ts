/**
 * Functions a mapped ELF file defines, by name, from its own dynamic symbol
 * table (SHT_DYNSYM, read from the file with pread: a library's headers and
 * tables, not its text). The address of a symbol in a process is then found
 * through the file offset its segment maps, so nothing depends on where or
 * how the loader placed the file.
 */
import * as fs from 'node:fs';

const SHT_DYNSYM = 11;
const STT_FUNC = 2;
const PT_LOAD = 1;
/** No symbol table worth reading is bigger (libc's .dynsym is ~60 KiB). */
const MAX_TABLE = 16 * 1024 * 1024;

export interface DefinedFunction {
  name: string;
  /** Offset in the file of the function's first byte. */
  fileOffset: bigint;
}

function pread(fd: number, len: number, pos: number): Buffer {
  const b = Buffer.alloc(len);
  const n = fs.readSync(fd, b, 0, len, pos);
  return n === len ? b : b.subarray(0, n);
}

/**
 * The functions among `names` that the file defines. Returns an empty list
 * for anything that is not a readable little-endian ELF64 file with a
 * dynamic symbol table: the caller treats a function it cannot find as one
 * it cannot trace, never as one that is not called.
 */
export function definedFunctions(file: string, names: ReadonlySet<string>): DefinedFunction[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const h = pread(fd, 64, 0);
    if (h.length < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return [];
    const phoff = Number(h.readBigUInt64LE(0x20));
    const shoff = Number(h.readBigUInt64LE(0x28));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const shentsize = h.readUInt16LE(0x3a);
    const shnum = h.readUInt16LE(0x3c);
    if (phentsize < 56 || shentsize < 64 || !shnum) return [];
    const ph = pread(fd, phentsize * phnum, phoff);
    const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
    for (let i = 0; i + phentsize <= ph.length; i += phentsize) {
      if (ph.readUInt32LE(i) !== PT_LOAD) continue;
      loads.push({ offset: ph.readBigUInt64LE(i + 8), vaddr: ph.readBigUInt64LE(i + 16), filesz: ph.readBigUInt64LE(i + 32) });
    }
    const sh = pread(fd, shentsize * shnum, shoff);
    const out: DefinedFunction[] = [];
    for (let i = 0; i + shentsize <= sh.length; i += shentsize) {
      if (sh.readUInt32LE(i + 4) !== SHT_DYNSYM) continue;
      const symOff = Number(sh.readBigUInt64LE(i + 0x18));
      const symSize = Number(sh.readBigUInt64LE(i + 0x20));
      const link = sh.readUInt32LE(i + 0x28);
      const entsize = Number(sh.readBigUInt64LE(i + 0x38)) || 24;
      if ((link + 1) * shentsize > sh.length || symSize > MAX_TABLE) return [];
      const strOff = Number(sh.readBigUInt64LE(link * shentsize + 0x18));
      const strSize = Number(sh.readBigUInt64LE(link * shentsize + 0x20));
      if (strSize > MAX_TABLE) return [];
      const syms = pread(fd, symSize, symOff);
      const strs = pread(fd, strSize, strOff);
      for (let s = 0; s + entsize <= syms.length; s += entsize) {
        const type = (syms[s + 4] as number) & 0xf;
        const shndx = syms.readUInt16LE(s + 6);
        const value = syms.readBigUInt64LE(s + 8);
        if (type !== STT_FUNC || shndx === 0 || value === 0n) continue;
        const nameOff = syms.readUInt32LE(s);
        const end = strs.indexOf(0, nameOff);
        if (end < 0) continue;
        const name = strs.toString('latin1', nameOff, end);
        if (!names.has(name)) continue;
        const seg = loads.find((l) => value >= l.vaddr && value < l.vaddr + l.filesz);
        if (seg) out.push({ name, fileOffset: value - seg.vaddr + seg.offset });
      }
    }
    return out;
  } catch {
    return [];
  } finally {
    fs.closeSync(fd);
  }
}
