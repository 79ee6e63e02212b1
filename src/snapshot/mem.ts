/** Reading a stopped tracee's memory through /proc/PID/mem (pread at the address). */
import * as fs from 'node:fs';
import { SnapshotRefusal } from './refusal.js';

export function readMem(memFd: number, addr: bigint, len: number): Buffer {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const n = fs.readSync(memFd, buf, off, len - off, Number(addr) + off);
    if (n <= 0) throw new SnapshotRefusal('internal', `short read of tracee memory at 0x${(addr + BigInt(off)).toString(16)}`);
    off += n;
  }
  return buf;
}

export function readCString(memFd: number, addr: bigint, max = 4096): string {
  const chunk = Buffer.alloc(256);
  const parts: Buffer[] = [];
  let total = 0;
  while (total < max) {
    let n: number;
    try {
      n = fs.readSync(memFd, chunk, 0, chunk.length, Number(addr) + total);
    } catch {
      break;
    }
    if (n <= 0) break;
    const z = chunk.subarray(0, n).indexOf(0);
    if (z >= 0) {
      parts.push(Buffer.from(chunk.subarray(0, z)));
      break;
    }
    parts.push(Buffer.from(chunk.subarray(0, n)));
    total += n;
  }
  return Buffer.concat(parts).toString('utf8');
}


/** Writes code bytes into the tracee (a breakpoint, or what it replaced). */
export function writeBytes(mem: number, addr: bigint, bytes: Buffer): void {
  if (fs.writeSync(mem, bytes, 0, bytes.length, Number(addr)) !== bytes.length) {
    throw new SnapshotRefusal('internal', `cannot write tracee memory at 0x${addr.toString(16)}`);
  }
}
