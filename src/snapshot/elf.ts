/**
 * What the program file itself says, read before anything runs: an ELF
 * executable for this machine with a program interpreter, not privileged.
 */
import * as fs from 'node:fs';
import { hasFileCapabilities } from '../sys/libc.js';
import { archName, hostMachine } from '../image/machine.js';
import { SnapshotRefusal } from './refusal.js';
import { hostArch } from './tracer-arch.js';

const ELF_MAGIC = 0x7f454c46;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const ET_DYN = 3;
const PT_INTERP = 3;

export interface ProgramFile {
  /** PT_INTERP: the path the kernel opened as the dynamic loader. */
  interpreter: string;
}

function readExactly(fd: number, len: number, pos: number, what: string): Buffer {
  const buf = Buffer.alloc(len);
  if (fs.readSync(fd, buf, 0, len, pos) !== len) throw new SnapshotRefusal('not-elf', `truncated ${what}`);
  return buf;
}

/** Refuses programs that cannot be snapshotted; returns what the loader will be. */
export function checkProgram(exePath: string): ProgramFile {
  let fd: number;
  try {
    fd = fs.openSync(exePath, 'r');
  } catch (e) {
    throw new SnapshotRefusal('not-found', `${exePath}: ${(e as Error).message}`);
  }
  let interpreter: string | undefined;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || (st.mode & 0o111) === 0) throw new SnapshotRefusal('not-found', `${exePath} is not an executable file`);
    if (st.mode & 0o6000) throw new SnapshotRefusal('privileged', `${exePath} is setuid or setgid`);
    if (st.size < 64) throw new SnapshotRefusal('not-elf', `${exePath} is not an ELF file`);
    const h = readExactly(fd, 64, 0, 'ELF header');
    if (h.readUInt32BE(0) !== ELF_MAGIC) throw new SnapshotRefusal('not-elf', `${exePath} is not an ELF file`);
    if (h[4] !== ELFCLASS64 || h[5] !== ELFDATA2LSB || h.readUInt16LE(18) !== hostMachine()) {
      throw new SnapshotRefusal('foreign-arch', `${exePath} is not an ${archName(hostMachine())} ELF file`);
    }
    // The tracer speaks the machine's registers, syscalls and breakpoints through a module per architecture (regs.ts).
    if (!hostArch()) {
      throw new SnapshotRefusal('unported-arch', `snapshots are taken on x86_64 and aarch64 only (this machine is ${archName(hostMachine())}: no register, syscall-table and breakpoint module for it); the program runs cold`);
    }
    const type = h.readUInt16LE(16);
    if (type !== ET_EXEC && type !== ET_DYN) throw new SnapshotRefusal('not-elf', `${exePath} is an ELF file of type ${type}, not a program`);
    const phoff = Number(h.readBigUInt64LE(32));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);
    if (phentsize < 56) throw new SnapshotRefusal('not-elf', `${exePath}: program header entries of ${phentsize} bytes`);
    const ph = readExactly(fd, phentsize * phnum, phoff, 'program headers');
    for (let i = 0; i < phnum; i++) {
      const at = i * phentsize;
      if (ph.readUInt32LE(at) !== PT_INTERP) continue;
      const off = Number(ph.readBigUInt64LE(at + 8));
      const size = Number(ph.readBigUInt64LE(at + 32));
      if (size < 2 || size > 4096) throw new SnapshotRefusal('not-elf', `${exePath}: PT_INTERP of ${size} bytes`);
      const raw = readExactly(fd, size, off, 'PT_INTERP');
      interpreter = raw.toString('utf8', 0, raw.indexOf(0) < 0 ? size : raw.indexOf(0));
    }
  } finally {
    fs.closeSync(fd);
  }
  if (interpreter === undefined) {
    throw new SnapshotRefusal('static-binary', `${exePath} has no program interpreter: nothing for the loader to save`);
  }
  // Unreadable attributes (no xattr support on the file system) mean no file capabilities.
  if (hasFileCapabilities(exePath)) throw new SnapshotRefusal('privileged', `${exePath} has file capabilities`);
  return { interpreter };
}
