// node test/arm64/guard.mjs IMAGE PID: reads, from outside, the stack
// protector guard a restored process holds at each CANARY slot of its image
// (/proc/PID/mem) and compares it with what that process's own AT_RANDOM
// gives (its first 8 bytes, the slot's low bits cleared, as the loader
// derives it). Prints the guard; exit 0 when every slot holds the process's
// own, 1 otherwise (or when the image has no CANARY slot).
import { Buffer } from 'node:buffer';
import * as fs from 'node:fs';
import process from 'node:process';
import { parseImage } from '../../dist/image/format.js';
import { SlotKind } from '../../dist/image/schema.js';

const [image, pid] = process.argv.slice(2);
const slots = parseImage(fs.readFileSync(image)).model.slots.filter((s) => s.kind === SlotKind.CANARY);
const auxv = fs.readFileSync(`/proc/${pid}/auxv`);
let random;
for (let i = 0; i + 16 <= auxv.length; i += 16) if (auxv.readBigUInt64LE(i) === 25n) random = auxv.readBigUInt64LE(i + 8);
const mem = fs.openSync(`/proc/${pid}/mem`, 'r');
const word = (addr) => {
  const b = Buffer.alloc(8);
  fs.readSync(mem, b, 0, 8, Number(addr));
  return b.readBigUInt64LE(0);
};
const raw = word(random);
let ok = slots.length > 0;
for (const s of slots) {
  const have = word(s.addr);
  const want = raw & ~((1n << s.arg) - 1n);
  process.stdout.write(`CANARY 0x${s.addr.toString(16)}: 0x${have.toString(16)} own AT_RANDOM gives 0x${want.toString(16)}\n`);
  if (have !== want) ok = false;
}
if (!slots.length) process.stdout.write('no CANARY slot in the image\n');
process.exit(ok ? 0 : 1);
