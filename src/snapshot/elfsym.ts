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

interface DynamicSymbol {
  name: string;
  type: number;
  /** Section index: 0 for a symbol the file imports. */
  shndx: number;
  value: bigint;
}

/**
 * Reads the file's dynamic symbol tables and calls `each` for every symbol
 * whose name is in `names`. Returns the PT_LOAD segments, or null for anything
 * that is not a readable little-endian ELF64 file with a section table.
 */
function scanDynamicSymbols(file: string, names: ReadonlySet<string>, each: (s: DynamicSymbol) => void):
  { vaddr: bigint; offset: bigint; filesz: bigint }[] | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    const h = pread(fd, 64, 0);
    if (h.length < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return null;
    const phoff = Number(h.readBigUInt64LE(0x20));
    const shoff = Number(h.readBigUInt64LE(0x28));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const shentsize = h.readUInt16LE(0x3a);
    const shnum = h.readUInt16LE(0x3c);
    if (phentsize < 56 || shentsize < 64 || !shnum) return null;
    const ph = pread(fd, phentsize * phnum, phoff);
    const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
    for (let i = 0; i + phentsize <= ph.length; i += phentsize) {
      if (ph.readUInt32LE(i) !== PT_LOAD) continue;
      loads.push({ offset: ph.readBigUInt64LE(i + 8), vaddr: ph.readBigUInt64LE(i + 16), filesz: ph.readBigUInt64LE(i + 32) });
    }
    const sh = pread(fd, shentsize * shnum, shoff);
    for (let i = 0; i + shentsize <= sh.length; i += shentsize) {
      if (sh.readUInt32LE(i + 4) !== SHT_DYNSYM) continue;
      const symOff = Number(sh.readBigUInt64LE(i + 0x18));
      const symSize = Number(sh.readBigUInt64LE(i + 0x20));
      const link = sh.readUInt32LE(i + 0x28);
      const entsize = Number(sh.readBigUInt64LE(i + 0x38)) || 24;
      if ((link + 1) * shentsize > sh.length || symSize > MAX_TABLE) return null;
      const strOff = Number(sh.readBigUInt64LE(link * shentsize + 0x18));
      const strSize = Number(sh.readBigUInt64LE(link * shentsize + 0x20));
      if (strSize > MAX_TABLE) return null;
      const syms = pread(fd, symSize, symOff);
      const strs = pread(fd, strSize, strOff);
      for (let s = 0; s + entsize <= syms.length; s += entsize) {
        const nameOff = syms.readUInt32LE(s);
        const end = strs.indexOf(0, nameOff);
        if (end < 0) continue;
        const name = strs.toString('latin1', nameOff, end);
        if (!names.has(name)) continue;
        each({ name, type: (syms[s + 4] as number) & 0xf, shndx: syms.readUInt16LE(s + 6), value: syms.readBigUInt64LE(s + 8) });
      }
    }
    return loads;
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The functions among `names` that the file defines. Returns an empty list
 * for anything that is not a readable little-endian ELF64 file with a
 * dynamic symbol table: the caller treats a function it cannot find as one
 * it cannot trace, never as one that is not called.
 */
export function definedFunctions(file: string, names: ReadonlySet<string>): DefinedFunction[] {
  const found: DynamicSymbol[] = [];
  const loads = scanDynamicSymbols(file, names, (s) => {
    if (s.type === STT_FUNC && s.shndx !== 0 && s.value !== 0n) found.push(s);
  });
  if (!loads) return [];
  const out: DefinedFunction[] = [];
  for (const s of found) {
    const seg = loads.find((l) => s.value >= l.vaddr && s.value < l.vaddr + l.filesz);
    if (seg) out.push({ name: s.name, fileOffset: s.value - seg.vaddr + seg.offset });
  }
  return out;
}

/**
 * What starts a thread with the C library's default attributes (whose stack
 * size glibc took from RLIMIT_STACK before the entry point), or loads code
 * that might: creating threads, C11 threads, the interfaces whose helper
 * threads glibc starts, dlopen and dlsym (a function found by name).
 */
const THREAD_STARTERS: ReadonlySet<string> = new Set([
  'pthread_create', 'thrd_create', 'dlopen', 'dlmopen', 'dlsym', 'dlvsym', 'pthread_getattr_default_np', 'timer_create', 'mq_notify',
  'aio_read', 'aio_write', 'aio_fsync', 'aio_read64', 'aio_write64', 'aio_fsync64', 'lio_listio', 'lio_listio64', 'getaddrinfo_a',
]);

/**
 * Whether any of the files (a program and the libraries mapped with it) may
 * start a thread with default attributes: one imports a THREAD_STARTERS
 * symbol, or cannot be read (then it may).
 */
export function mayCreateThreads(files: readonly string[]): boolean {
  for (const f of files) {
    let imports = false;
    const ok = scanDynamicSymbols(f, THREAD_STARTERS, (s) => {
      if (s.shndx === 0) imports = true;
    });
    if (!ok || imports) return true;
  }
  return false;
}
