/**
 * Slots: words in the captured memory that hold values of the snapshot
 * process which a restoring process must replace with its own.
 *
 * Pointers into the old [stack] are found by scanning every aligned word of
 * the captured data pages and classified by what they point at in the stack
 * the kernel built (argc, argv, envp, auxv, the argv strings, the strings and
 * bytes auxv points to), or, below argc, by their distance from argc (dead
 * frames of the loader; diff.ts checks that distance is the same in runs
 * with different argv). Anything else pointing into the stack is a refusal:
 * a restore cannot know what a frame pointer or an environment string should
 * become. The stack protector guard is found by value (derived from AT_RANDOM
 * the way the loader derives it: searching for both the raw and the low-byte-
 * cleared form). argc and tid copies are not pointers; diff.ts finds them.
 */
import { SlotKind } from '../image/schema.js';
import type { ImageSlot } from '../image/format.js';
import { PAGE, type CapturedMapping, type Mapping } from './capture.js';
import { SnapshotRefusal } from './refusal.js';
import { AT, readCString, readMem, type StoppedAtEntry } from './trace.js';
import { ARCH } from './tracer-arch.js';

export interface StackLayout {
  lo: bigint; // [stack] mapping
  hi: bigint;
  argcAddr: bigint;
  argc: number;
  argvAddr: bigint;
  argvStrings: { addr: bigint; value: string }[];
  envpAddr: bigint;
  envc: number;
  envStrings: { addr: bigint; len: number }[];
  auxvAddr: bigint;
  auxvLen: number; // bytes including AT_NULL
  platform?: { addr: bigint; len: number };
  basePlatform?: { addr: bigint; len: number };
  execfn?: { addr: bigint; len: number };
  random?: bigint;
}

export function readStack(t: StoppedAtEntry, maps: Mapping[]): StackLayout {
  const stack = maps.find((m) => m.path === '[stack]');
  if (!stack) throw new SnapshotRefusal('internal', 'no [stack] mapping');
  const sp = ARCH.sp(t.regs);
  const word = (a: bigint): bigint => readMem(t.mem, a, 8).readBigUInt64LE(0);
  const argc = Number(word(sp));
  const argvAddr = sp + 8n;
  const argvStrings = [];
  for (let i = 0; i < argc; i++) {
    const a = word(argvAddr + BigInt(i) * 8n);
    argvStrings.push({ addr: a, value: readCString(t.mem, a, 1 << 20) });
  }
  const envpAddr = argvAddr + BigInt(argc + 1) * 8n;
  const envStrings = [];
  let e = envpAddr;
  for (;;) {
    const a = word(e);
    if (a === 0n) break;
    envStrings.push({ addr: a, len: Buffer.byteLength(readCString(t.mem, a, 1 << 20)) + 1 });
    e += 8n;
  }
  const auxvAddr = e + 8n;
  const str = (type: bigint): { addr: bigint; len: number } | undefined => {
    const a = t.auxv.get(type);
    return a ? { addr: a, len: Buffer.byteLength(readCString(t.mem, a)) + 1 } : undefined;
  };
  const layout: StackLayout = {
    lo: stack.start, hi: stack.end, argcAddr: sp, argc, argvAddr, argvStrings, envpAddr, envc: envStrings.length,
    envStrings, auxvAddr, auxvLen: t.auxvBytes.length,
  };
  const platform = str(AT.PLATFORM);
  if (platform) layout.platform = platform;
  const basePlatform = str(AT.BASE_PLATFORM);
  if (basePlatform) layout.basePlatform = basePlatform;
  const execfn = str(AT.EXECFN);
  if (execfn) layout.execfn = execfn;
  const random = t.auxv.get(AT.RANDOM);
  if (random) layout.random = random;
  return layout;
}

export interface Classified {
  kind: number;
  arg: bigint;
}

/** What a pointer into the old stack means, or null when it has no restorable meaning. */
export function classifyStackPointer(v: bigint, s: StackLayout): Classified | null {
  if (v === s.argcAddr) return { kind: SlotKind.ARGC_ADDR, arg: 0n };
  // Below the entry point's sp nothing is live: a frame of the loader that has returned
  // (musl's saved_addends). Its relation to argc is kept; diff.ts proves it is one.
  if (v >= s.lo && v < s.argcAddr) return { kind: SlotKind.BELOW_ARGC, arg: s.argcAddr - v };
  if (v >= s.argvAddr && v <= s.argvAddr + BigInt(s.argc) * 8n && (v - s.argvAddr) % 8n === 0n) {
    return { kind: SlotKind.ARGV, arg: (v - s.argvAddr) / 8n };
  }
  if (v === s.envpAddr) return { kind: SlotKind.ENVP, arg: 0n };
  if (v >= s.auxvAddr && v < s.auxvAddr + BigInt(s.auxvLen)) return { kind: SlotKind.AUXV, arg: v - s.auxvAddr };
  const inStr = (r: { addr: bigint; len: number } | undefined): bigint | null =>
    r && v >= r.addr && v < r.addr + BigInt(r.len) ? v - r.addr : null;
  let off = inStr(s.platform);
  if (off !== null) return { kind: SlotKind.PLATFORM, arg: off };
  off = inStr(s.basePlatform);
  if (off !== null) return { kind: SlotKind.BASE_PLATFORM, arg: off };
  off = inStr(s.execfn);
  if (off !== null && off === 0n) return { kind: SlotKind.EXECFN, arg: 0n };
  if (s.random !== undefined && v >= s.random && v < s.random + 16n) return { kind: SlotKind.RANDOM, arg: v - s.random };
  for (let i = 0; i < s.argvStrings.length; i++) {
    const a = s.argvStrings[i] as { addr: bigint; value: string };
    if (v === a.addr) return { kind: SlotKind.ARGV_STR, arg: BigInt(i) };
    const base = a.value.lastIndexOf('/') + 1;
    if (base > 0 && v === a.addr + BigInt(Buffer.byteLength(a.value.slice(0, base)))) {
      return { kind: SlotKind.ARGV_BASENAME, arg: BigInt(i) };
    }
  }
  return null;
}

/**
 * "module+offset" for an address, offsets from the module's first mapping (as
 * symbol addresses are); an anonymous mapping right after a file's mappings is
 * that file's .bss and is named after it.
 */
export function describeAddr(maps: Mapping[], addr: bigint): string {
  const i = maps.findIndex((c) => addr >= c.start && addr < c.end);
  const m = maps[i];
  if (!m) return `0x${addr.toString(16)}`;
  const prev = maps[i - 1];
  const owner = m.path === '' && prev && prev.path.startsWith('/') && prev.end === m.start ? prev.path : m.path;
  const first = owner ? maps.find((c) => c.path === owner) : undefined;
  return `${owner || 'anonymous'}+0x${(addr - (first ?? m).start).toString(16)}`;
}

/** Scans data pages for pointers into the old stack; refuses on any it cannot explain. */
export function findStackSlots(caps: CapturedMapping[], s: StackLayout): ImageSlot[] {
  const slots: ImageSlot[] = [];
  for (const c of caps) {
    for (const [i, page] of c.data) {
      for (let off = 0; off < PAGE; off += 8) {
        const v = page.readBigUInt64LE(off);
        if (v < s.lo || v >= s.hi) continue;
        const addr = c.start + BigInt(i * PAGE + off);
        const cl = classifyStackPointer(v, s);
        if (!cl) {
          throw new SnapshotRefusal('unexplained-stack-pointer',
            `${describeAddr(caps, addr)} holds 0x${v.toString(16)}, a stack address that is not argv, envp or auxv`);
        }
        slots.push({ addr, kind: cl.kind, width: 8, arg: cl.arg });
      }
    }
  }
  return slots;
}

/**
 * The stack protector guard: derived from AT_RANDOM's first 8 bytes, stored in
 * the thread block (x86_64) or a global variable (aarch64: __stack_chk_guard,
 * regs.ts). Found by value, not by offset: the word in the mapping holding the
 * thread pointer (aarch64: in any captured data) equal to those bytes with the low byte cleared
 * (the zero byte stops string overflows from leaking it; arg = 8 bits to
 * clear) or, failing that, equal to them unchanged (arg = 0). Any other copy
 * of the same 64-bit value anywhere in captured data is the guard too (a
 * chance match of 56 random bits does not happen) and is patched with it.
 * No guard found: no slot, and restored processes share the snapshot's guard.
 */
export function findCanaries(t: StoppedAtEntry, caps: CapturedMapping[], fsBase: bigint | undefined): ImageSlot[] {
  const r = t.auxv.get(AT.RANDOM);
  if (!r || !fsBase) return [];
  const raw = readMem(t.mem, r, 8).readBigUInt64LE(0);
  const home = ARCH.stackGuard === 'thread-block' ? caps.filter((m) => fsBase >= m.start && fsBase < m.end) : caps;
  if (!home.length) return [];
  const wordsEqual = (c: CapturedMapping, want: bigint): bigint[] => {
    const hits: bigint[] = [];
    for (const [i, page] of c.data) {
      for (let off = 0; off < PAGE; off += 8) if (page.readBigUInt64LE(off) === want) hits.push(c.start + BigInt(i * PAGE + off));
    }
    return hits;
  };
  for (const [want, bits] of [[raw & ~0xffn, 8n], [raw, 0n]] as const) {
    if (want === 0n || !home.some((c) => wordsEqual(c, want).length > 0)) continue;
    return caps.flatMap((c) => wordsEqual(c, want)).map((addr) => ({ addr, kind: SlotKind.CANARY, width: 8 as const, arg: bits }));
  }
  return [];
}
