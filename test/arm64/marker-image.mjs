#!/usr/bin/env node
/**
 * marker-image.mjs PROG IMAGE: a post-link image of a static program (the
 * marker probe, test/arm64/probes/marker.c), written by hand from its ELF
 * program headers: what the kernel would map, with the data page's marker
 * string changed from "cold" to "rstd". The aarch64 snapshotter does not
 * exist yet; this lets the guest prove the aarch64 restorer itself (vdso move,
 * regions, auxv, PR_SET_MM_MAP, the trampoline's cache maintenance and entry)
 * on a real arm64 kernel: a restored run prints "rstd", a cold one "cold".
 * Works on x86_64 too. The key is computed as the launcher does
 * (keyFromStat) and compared with its --internal-key by the caller.
 */
import { Buffer } from 'node:buffer';
import * as fs from 'node:fs';
import process from 'node:process';
import { keyFromStat } from '../../dist/cache/key.js';
import { serializeImage } from '../../dist/image/format.js';
import { systemPageSize } from '../../dist/image/machine.js';
import { FileFlag, FileKind, Prot, Src, VdsoKind } from '../../dist/image/schema.js';

const [prog, image] = process.argv.slice(2);
if (!prog || !image) {
  process.stderr.write('usage: marker-image.mjs PROG IMAGE\n');
  process.exit(2);
}
const page = BigInt(systemPageSize());
const down = (v) => v & ~(page - 1n);
const up = (v) => (v + page - 1n) & ~(page - 1n);

const elf = fs.readFileSync(prog);
if (elf.readUInt32BE(0) !== 0x7f454c46 || elf.readUInt16LE(16) !== 2) throw new Error(`${prog}: not a static ET_EXEC ELF file`);
const entry = elf.readBigUInt64LE(24);
const phoff = elf.readBigUInt64LE(32);
const phentsize = elf.readUInt16LE(54), phnum = elf.readUInt16LE(56);
const loads = [];
for (let i = 0; i < phnum; i++) {
  const o = Number(phoff) + i * phentsize;
  if (elf.readUInt32LE(o) === 2) throw new Error(`${prog} has PT_DYNAMIC: a static program only`);
  if (elf.readUInt32LE(o) !== 1) continue; // PT_LOAD
  loads.push({ flags: elf.readUInt32LE(o + 4), offset: elf.readBigUInt64LE(o + 8), vaddr: elf.readBigUInt64LE(o + 16),
    filesz: elf.readBigUInt64LE(o + 32), memsz: elf.readBigUInt64LE(o + 40) });
}
const prot = (f) => ((f & 4) ? Prot.READ : 0) | ((f & 2) ? Prot.WRITE : 0) | ((f & 1) ? Prot.EXEC : 0);
const regions = [];
let marked = 0;
for (const l of loads) {
  const addr = down(l.vaddr);
  const fileEnd = up(l.vaddr + l.filesz), end = up(l.vaddr + l.memsz);
  const fileOff = down(l.offset);
  if (!(l.flags & 2)) {
    regions.push({ addr, len: fileEnd - addr, prot: prot(l.flags), source: Src.FILE, file: 0, offset: fileOff, flags: 0 });
    continue;
  }
  // The writable segment as the kernel leaves it: file bytes up to filesz, zeros after (bss).
  const data = Buffer.alloc(Number(end - addr));
  elf.copy(data, 0, Number(fileOff), Number(l.offset + l.filesz));
  data.fill(0, Number(l.vaddr - addr + l.filesz));
  const at = data.indexOf('CX-MARKER:cold\0');
  if (at >= 0) {
    data.write('CX-MARKER:rstd', at);
    marked++;
  }
  regions.push({ addr, len: end - addr, prot: prot(l.flags), source: Src.DATA, file: 0, offset: 0n, flags: 0, data });
}
if (marked !== 1) throw new Error(`${prog}: the marker string is not in one writable segment`);
regions.sort((a, b) => (a.addr < b.addr ? -1 : 1));
for (let i = 1; i < regions.length; i++) if (regions[i].addr < regions[i - 1].addr + regions[i - 1].len) throw new Error('segments share a page');
const text = loads.find((l) => l.flags & 1), rw = loads.find((l) => l.flags & 2);

// This kernel's special mappings, relative to [vdso]: the layout the launcher moves.
const special = [];
for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
  const m = /^([0-9a-f]+)-([0-9a-f]+) .*\[(vvar|vvar_vclock|vdso)\]$/.exec(line);
  if (m) special.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), name: m[3] });
}
const vdso = special.find((s) => s.name === 'vdso');
if (!vdso) throw new Error('no [vdso] in /proc/self/maps');
const kind = { vvar: VdsoKind.VVAR, vvar_vclock: VdsoKind.VVAR_VCLOCK, vdso: VdsoKind.VDSO };
const vdsoBase = 0x100_0000_0000n; // 1 TiB: below every arm64 and x86_64 VA limit, far from programs and stacks

const st = fs.statSync(prog, { bigint: true });
const b = serializeImage({
  createdNs: BigInt(Date.now()) * 1_000_000n,
  key: keyFromStat(prog, st, process.env),
  files: [{
    path: prog, kind: FileKind.MAPPED, dev: st.dev, ino: st.ino, size: st.size, mtimeSec: st.mtimeNs / 1_000_000_000n,
    mtimeNsec: Number(st.mtimeNs % 1_000_000_000n), ctimeSec: st.ctimeNs / 1_000_000_000n,
    ctimeNsec: Number(st.ctimeNs % 1_000_000_000n), mode: Number(st.mode), flags: FileFlag.EXE,
  }],
  regions,
  slots: [],
  state: {
    entry, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0, rseqSig: 0,
    startCode: text.vaddr, endCode: text.vaddr + text.filesz, startData: rw.vaddr, endData: rw.vaddr + rw.filesz,
    startBrk: up(rw.vaddr + rw.memsz), brk: up(rw.vaddr + rw.memsz), vdsoBase,
    atPhdr: loads[0].vaddr - loads[0].offset + phoff, atPhnum: BigInt(phnum), atEntry: entry, atBase: 0n, flags: 0, comm: 'marker',
  },
  vdso: special.map((s) => ({ offset: s.start - vdso.start, size: s.end - s.start, kind: kind[s.name] })),
});
const tmp = `${image}.${process.pid}.tmp`;
fs.writeFileSync(tmp, b, { mode: 0o600 });
fs.renameSync(tmp, image);
process.stdout.write(`${image}: ${regions.length} regions, entry 0x${entry.toString(16)}, page ${page}\n`);
