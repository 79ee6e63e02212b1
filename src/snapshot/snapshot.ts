/**
 * takeSnapshot: a program stopped at its ELF entry point, as an image model.
 *
 *  1. refuse what cannot be restored (not ELF, static, foreign, privileged);
 *  2. the real run: trace to the entry point with LD_BIND_NOW=1, capture the
 *     address space, find stack pointer slots and the stack guard;
 *  3. the differential runs: find argc and tid copies (diff.ts);
 *  4. regions, files, state, vdso layout, key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageFile, ImageModel, ImageRegion, ImageSlot, ImageVdsoPart } from '../image/format.js';
import { FileFlag, FileKind, RegionFlag, SlotKind, Src, StateFlag, VdsoKind } from '../image/schema.js';
import { keyFor } from '../cache/key.js';
import { hasFileCapabilities } from '../sys/libc.js';
import type { SnapshotOptions, SnapshotOutcome } from './api.js';
import { PAGE, captureMappings, isFileBacked, isSpecial, readMaps, type CapturedMapping, type Mapping } from './capture.js';
import { differential, translateSlots } from './diff.js';
import { SnapshotRefusal } from './refusal.js';
import { findCanary, findStackSlots, readStack } from './slots.js';
import { AT, killTracee, runToEntry, type StoppedAtEntry } from './trace.js';

const PAGE_N = BigInt(PAGE);
/** Zero runs up to this many pages next to data are stored as data: one mmap instead of two. */
const ABSORB_ZERO_PAGES = 16;

const LOADER_VARS = /^(LD_|GLIBC_TUNABLES$|MALLOC_)/;

export function snapshotEnv(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || LOADER_VARS.test(k)) continue;
    out.push(`${k}=${v}`);
  }
  out.push('LD_BIND_NOW=1');
  return out;
}

/** The same environment with every value changed (but LD_BIND_NOW): the differential run B. */
function perturbedEnv(envp: string[]): string[] {
  return [...envp.map((e) => (e.startsWith('LD_BIND_NOW=') ? e : `${e}_`)), 'CX_DIFFERENTIAL_RUN=b'];
}

export function checkElf(exePath: string): void {
  let fd: number;
  try {
    fd = fs.openSync(exePath, 'r');
  } catch (e) {
    throw new SnapshotRefusal('not-found', `${exePath}: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || (st.mode & 0o111) === 0) throw new SnapshotRefusal('not-found', `${exePath} is not an executable file`);
    if (st.mode & 0o6000) throw new SnapshotRefusal('privileged', `${exePath} is setuid or setgid`);
    const h = Buffer.alloc(64);
    fs.readSync(fd, h, 0, 64, 0);
    if (h.readUInt32BE(0) !== 0x7f454c46) throw new SnapshotRefusal('not-elf', `${exePath} is not an ELF file`);
    if (h[4] !== 2 || h[5] !== 1 || h.readUInt16LE(18) !== 62) throw new SnapshotRefusal('foreign-arch', `${exePath} is not x86_64`);
    const phoff = Number(h.readBigUInt64LE(32));
    const phentsize = h.readUInt16LE(54);
    const phnum = h.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, ph, 0, ph.length, phoff);
    let interp = false;
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) interp = true;
    if (!interp) throw new SnapshotRefusal('static-binary', `${exePath} has no program interpreter: nothing for the loader to save`);
  } finally {
    fs.closeSync(fd);
  }
  if (hasFileCapabilities(exePath)) throw new SnapshotRefusal('privileged', `${exePath} has file capabilities`);
}

function checkEntryState(t: StoppedAtEntry): void {
  const tasks = fs.readdirSync(`/proc/${t.pid}/task`);
  if (tasks.length !== 1) throw new SnapshotRefusal('threads', `${tasks.length} threads at the entry point`);
  const fds = fs.readdirSync(`/proc/${t.pid}/fd`).map(Number).filter((fd) => fd > 2);
  if (fds.length) {
    const what = fds.map((fd) => { try { return fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`); } catch { return String(fd); } });
    throw new SnapshotRefusal('open-fds', `constructors left files open: ${what.join(', ')}`);
  }
  const children = fs.readFileSync(`/proc/${t.pid}/task/${t.pid}/children`, 'utf8').trim();
  if (children) throw new SnapshotRefusal('children', `child processes exist at the entry point: ${children}`);
}

function statFields(pid: number): string[] {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
}

interface Builder {
  files: ImageFile[];
  index: Map<string, number>;
}

function identity(p: string): Omit<ImageFile, 'path' | 'kind' | 'flags'> {
  const st = fs.statSync(p, { bigint: true });
  return {
    dev: st.dev, ino: st.ino, size: st.size, mode: Number(st.mode),
    mtimeSec: st.mtimeNs / 1_000_000_000n, mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
    ctimeSec: st.ctimeNs / 1_000_000_000n, ctimeNsec: Number(st.ctimeNs % 1_000_000_000n),
  };
}

/**
 * Mapped files are checked at restore through the path the loader opened
 * (e.g. /lib/x86_64-linux-gnu/libc.so.6) when that names the same inode, so
 * one open+fstat proves both that the path still leads there and that the
 * file is unchanged.
 */
function buildFiles(t: StoppedAtEntry, caps: Mapping[], exePath: string): Builder {
  const b: Builder = { files: [], index: new Map() };
  const exe = fs.statSync(exePath, { bigint: true });
  const opened = new Map<string, string>(); // "dev:ino" -> path the loader opened
  for (const e of t.paths) {
    if (e.kind !== 'open' || e.result < 0) continue;
    try {
      const st = fs.statSync(e.path, { bigint: true });
      const k = `${st.dev}:${st.ino}`;
      if (!opened.has(k)) opened.set(k, e.path);
    } catch {
      /* gone already: the mapped path is used */
    }
  }
  for (const m of caps) {
    if (!isFileBacked(m) || b.index.has(m.path)) continue;
    const id = identity(m.path);
    if (Number(id.ino) !== m.inode) throw new SnapshotRefusal('internal', `${m.path} changed while it was being captured`);
    const isExe = id.dev === exe.dev && id.ino === exe.ino;
    const p = isExe ? exePath : (opened.get(`${id.dev}:${id.ino}`) ?? m.path);
    b.index.set(m.path, b.files.length);
    b.files.push({ path: p, kind: FileKind.MAPPED, flags: isExe ? FileFlag.EXE : 0, ...id });
  }
  const mappedIds = new Set(b.files.map((f) => `${f.dev}:${f.ino}`));
  const seen = new Set<string>(b.files.map((f) => f.path));
  const ok = new Set(t.paths.filter((e) => e.result >= 0).map((e) => e.path));
  for (const e of t.paths) {
    if (seen.has(e.path) || e.path === '') continue;
    seen.add(e.path);
    if (e.result >= 0) {
      let id: ReturnType<typeof identity>;
      try {
        id = identity(e.path);
      } catch {
        continue;
      }
      if (mappedIds.has(`${id.dev}:${id.ino}`)) continue; // checked through its mapping
      if ((id.mode & 0o170000) !== 0o100000) continue; // directories: their entries are what matters
      b.files.push({ path: e.path, kind: FileKind.READ, flags: 0, ...id });
    } else if ((e.result === -2 || e.result === -20) && !ok.has(e.path)) {
      b.files.push({
        path: e.path, kind: FileKind.ABSENT, flags: 0, dev: 0n, ino: 0n, size: 0n, mode: 0,
        mtimeSec: 0n, mtimeNsec: 0, ctimeSec: 0n, ctimeNsec: 0,
      });
    }
  }
  return b;
}

/** Page classes become regions; neighbours that one mmap can serve are merged. */
export function buildRegions(caps: CapturedMapping[], files: Builder, slots: ImageSlot[]): ImageRegion[] {
  const out: ImageRegion[] = [];
  for (const c of caps) {
    const fileIndex = isFileBacked(c) ? (files.index.get(c.path) ?? -1) : -1;
    for (let i = 0; i < c.classes.length; i++) {
      const cls = c.prot === 0 ? 'zero' : c.classes[i];
      const addr = c.start + BigInt(i) * PAGE_N;
      const r: ImageRegion = {
        addr, len: PAGE_N, prot: c.prot, file: 0, offset: 0n, flags: c.path === '[heap]' ? RegionFlag.HEAP : 0,
        source: cls === 'file' ? Src.FILE : cls === 'data' ? Src.DATA : Src.ZERO,
      };
      if (cls === 'file') {
        if (fileIndex < 0) throw new SnapshotRefusal('internal', `file page in ${c.path} without a file entry`);
        r.file = fileIndex;
        r.offset = c.offset + BigInt(i) * PAGE_N;
      } else if (cls === 'data') {
        r.data = c.data.get(i) as Buffer;
      }
      out.push(r);
    }
  }
  let merged = mergeRegions(out);
  // Short zero runs touching data of the same protection become data.
  for (let i = 0; i < merged.length; i++) {
    const r = merged[i] as ImageRegion;
    if (r.source !== Src.ZERO || r.prot === 0 || r.len > BigInt(ABSORB_ZERO_PAGES) * PAGE_N) continue;
    const prev = merged[i - 1];
    const next = merged[i + 1];
    const touches = (n: ImageRegion | undefined, before: boolean): boolean =>
      !!n && n.source === Src.DATA && n.prot === r.prot && (before ? n.addr + n.len === r.addr : r.addr + r.len === n.addr);
    if (touches(prev, true) || touches(next, false)) {
      r.source = Src.DATA;
      r.data = Buffer.alloc(Number(r.len));
    }
  }
  merged = mergeRegions(merged);
  const sorted = [...slots].sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
  let j = 0;
  for (const r of merged) {
    while (j < sorted.length && (sorted[j] as ImageSlot).addr < r.addr) j++;
    if (j < sorted.length && (sorted[j] as ImageSlot).addr < r.addr + r.len) {
      if (r.source !== Src.DATA) throw new SnapshotRefusal('internal', `slot at 0x${(sorted[j] as ImageSlot).addr.toString(16)} outside captured data`);
      r.flags |= RegionFlag.PATCHED;
    }
  }
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

function vdsoParts(maps: Mapping[], vdsoBase: bigint): ImageVdsoPart[] {
  const kinds: Record<string, number> = { '[vvar]': VdsoKind.VVAR, '[vvar_vclock]': VdsoKind.VVAR_VCLOCK, '[vdso]': VdsoKind.VDSO };
  return maps
    .filter((m) => isSpecial(m) && m.path !== '[stack]' && m.path !== '[vsyscall]')
    .map((m) => ({ offset: m.start - vdsoBase, size: m.end - m.start, kind: kinds[m.path] ?? VdsoKind.OTHER }));
}

export function takeSnapshot(opts: SnapshotOptions): SnapshotOutcome {
  const t0 = Date.now();
  try {
    const image = snapshotModel(opts);
    return { ok: true, image, ms: Date.now() - t0, notes: [] };
  } catch (e) {
    if (e instanceof SnapshotRefusal) return { ok: false, reason: e.code, detail: e.detail, ms: Date.now() - t0 };
    return { ok: false, reason: 'internal', detail: (e as Error).message, ms: Date.now() - t0 };
  }
}

function snapshotModel(opts: SnapshotOptions): ImageModel {
  const exePath = path.resolve(opts.exePath);
  checkElf(exePath);
  const envp = snapshotEnv(opts.env);
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const argv = [exePath, ...opts.argv.slice(1)];
  const base = { launcher: opts.launcher, exePath, argv, envp, noAslr: false, deadline };

  // The differential runs first: the real run's tracee then is the last one alive.
  const diff = differential(base, perturbedEnv(envp));

  const t = runToEntry(base);
  try {
    checkEntryState(t);
    const maps = readMaps(t.pid);
    const caps = captureMappings(t.pid, t.mem, maps);
    const stack = readStack(t, maps);
    const slots = findStackSlots(caps, stack);
    const fsBase = t.loader.fsBase ?? t.regs.fs_base;
    const canary = findCanary(t, caps, fsBase);
    if (canary) slots.push(canary);
    slots.push(...translateSlots(diff.slots, diff.runA, diff.runA.fsBase, caps, fsBase, stack.argc, t.pid));
    const seen = new Set<bigint>();
    for (const s of slots) {
      if (seen.has(s.addr)) throw new SnapshotRefusal('internal', `two slots at 0x${s.addr.toString(16)}`);
      seen.add(s.addr);
    }
    const files = buildFiles(t, caps, exePath);
    const regions = buildRegions(caps, files, slots);
    const stat = statFields(t.pid);
    const f = (n: number): bigint => BigInt(stat[n - 3] ?? '0');
    const vdsoBase = t.auxv.get(AT.SYSINFO_EHDR) ?? 0n;
    if (!vdsoBase) throw new SnapshotRefusal('internal', 'no vdso');
    if (t.regs.rip !== t.auxv.get(AT.ENTRY)) throw new SnapshotRefusal('internal', 'not stopped at the entry point');
    const l = t.loader;
    const model: ImageModel = {
      createdNs: BigInt(Date.now()) * 1_000_000n,
      key: keyFor(exePath, opts.env),
      files: files.files,
      regions,
      slots: slots.sort((a, b) => (a.addr < b.addr ? -1 : 1)),
      state: {
        entry: t.regs.rip, rtldFini: t.regs.rdx, fsBase,
        tidAddress: l.tidAddress ?? 0n, robustHead: l.robust?.head ?? 0n, robustLen: l.robust?.len ?? 0n,
        rseqArea: l.rseq?.area ?? 0n, rseqLen: l.rseq?.len ?? 0, rseqSig: l.rseq?.sig ?? 0,
        startCode: f(26), endCode: f(27), startData: f(45), endData: f(46), startBrk: f(47), brk: l.brk ?? f(47),
        vdsoBase, atPhdr: t.auxv.get(AT.PHDR) ?? 0n, atPhnum: t.auxv.get(AT.PHNUM) ?? 0n,
        atEntry: t.auxv.get(AT.ENTRY) ?? 0n, atBase: t.auxv.get(AT.BASE) ?? 0n,
        flags: (l.tidAddress !== undefined ? StateFlag.HAVE_TID_ADDRESS : 0) | (l.robust ? StateFlag.HAVE_ROBUST_LIST : 0) |
          (l.rseq ? StateFlag.HAVE_RSEQ : 0) | (fsBase ? StateFlag.HAVE_FS_BASE : 0),
        comm: fs.readFileSync(`/proc/${t.pid}/comm`, 'utf8').trim(),
      },
      vdso: vdsoParts(maps, vdsoBase),
    };
    if (!slots.some((s) => s.kind === SlotKind.ARGC_ADDR)) throw new SnapshotRefusal('internal', 'no pointer to argc found');
    return model;
  } finally {
    killTracee(t.pid, t.mem);
  }
}
