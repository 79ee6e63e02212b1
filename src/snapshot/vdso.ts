/**
 * The vdso's functions, read from its own ELF image in the tracee.
 *
 * Reading the clock through the vdso (time, gettimeofday, clock_gettime) is no
 * syscall, so the syscall policy cannot see it, and the differential runs
 * cannot either when both fall in the same second. A constructor that keeps
 * such a value would keep the snapshot's time in every restored process, so
 * the tracer plants a breakpoint on each vdso function that is not known to be
 * a pure query and refuses when one is hit.
 */
import { SnapshotRefusal } from './refusal.js';

/** vdso functions whose answer a restore may keep: the CPU number is a hint, the resolution constant. */
const HARMLESS = new Set(['getcpu', 'clock_getres']);

const SHT_DYNSYM = 11;
const STT_FUNC = 2;
const PT_LOAD = 1;

export interface VdsoFunction {
  addr: bigint;
  name: string;
}

/** Functions of the vdso image (bytes read from base) a breakpoint should guard, deduplicated by address. */
export function guardedVdsoFunctions(image: Buffer, base: bigint): VdsoFunction[] {
  const bad = (why: string): never => {
    throw new SnapshotRefusal('internal', `cannot read the vdso's symbol table: ${why}`);
  };
  if (image.length < 64 || image.readUInt32BE(0) !== 0x7f454c46 || image[4] !== 2) bad('not an ELF64 image');
  const phoff = Number(image.readBigUInt64LE(0x20));
  const shoff = Number(image.readBigUInt64LE(0x28));
  const phentsize = image.readUInt16LE(0x36);
  const phnum = image.readUInt16LE(0x38);
  const shentsize = image.readUInt16LE(0x3a);
  const shnum = image.readUInt16LE(0x3c);
  const inImage = (off: number, len: number): boolean => off >= 0 && off + len <= image.length;
  let loadVaddr: bigint | undefined;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (!inImage(at, 56)) bad('program headers out of range');
    if (image.readUInt32LE(at) === PT_LOAD) {
      loadVaddr = image.readBigUInt64LE(at + 0x10);
      break;
    }
  }
  if (loadVaddr === undefined) bad('no PT_LOAD');
  const bias = base - (loadVaddr as bigint);
  const byAddr = new Map<bigint, string>();
  let sawSymbols = false;
  for (let i = 0; i < shnum; i++) {
    const sh = shoff + i * shentsize;
    if (!inImage(sh, 64)) bad('section headers out of range');
    if (image.readUInt32LE(sh + 4) !== SHT_DYNSYM) continue;
    const symOff = Number(image.readBigUInt64LE(sh + 0x18));
    const symSize = Number(image.readBigUInt64LE(sh + 0x20));
    const link = image.readUInt32LE(sh + 0x28);
    const entsize = Number(image.readBigUInt64LE(sh + 0x38)) || 24;
    const strSh = shoff + link * shentsize;
    if (!inImage(strSh, 64) || !inImage(symOff, symSize)) bad('symbol table out of range');
    const strOff = Number(image.readBigUInt64LE(strSh + 0x18));
    const strSize = Number(image.readBigUInt64LE(strSh + 0x20));
    if (!inImage(strOff, strSize)) bad('string table out of range');
    sawSymbols = true;
    for (let s = 0; s + entsize <= symSize; s += entsize) {
      const e = symOff + s;
      const nameOff = image.readUInt32LE(e);
      const type = (image[e + 4] as number) & 0xf;
      const shndx = image.readUInt16LE(e + 6);
      const value = image.readBigUInt64LE(e + 8);
      if (type !== STT_FUNC || shndx === 0 || value === 0n) continue;
      const end = image.indexOf(0, strOff + nameOff);
      // x86_64 names them __vdso_clock_gettime (and clock_gettime), aarch64 __kernel_clock_gettime.
      const name = image.toString('latin1', strOff + nameOff, end < 0 ? strOff + strSize : end).replace(/^__(vdso|kernel)_/, '');
      if (HARMLESS.has(name)) continue;
      byAddr.set(value + bias, name);
    }
  }
  if (!sawSymbols) bad('no dynamic symbol table');
  return [...byAddr].map(([addr, name]) => ({ addr, name }));
}
