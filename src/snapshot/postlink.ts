/**
 * postLinkModel: a program stopped at its ELF entry point, as an image model.
 *
 *  1. refuse what cannot be restored (elf.ts: not ELF, static, foreign, privileged);
 *  2. the differential runs A and B (diff.ts): where argc and tid copies live,
 *     and the proof that nothing else depends on argv, environment or pid;
 *  3. the real run: trace to the entry point with LD_BIND_NOW=1 (trace.ts,
 *     syscalls.ts), check the process is in a state an image can stand for,
 *     capture its address space (capture.ts), find slots (slots.ts) and
 *     translate the differential ones (layout.ts);
 *  4. files, regions, kernel state, vdso layout, key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageModel, ImageSlot } from '../image/format.js';
import { SlotKind, StateFlag } from '../image/schema.js';
import { identityAndAccess } from './access.js';
import { checkNotTooNew } from './fresh.js';
import { envHash, keyFor } from '../cache/key.js';
import type { SnapshotOptions } from './api.js';
import { captureMappings, readMaps } from './capture.js';
import { differential, translateSlots } from './diff.js';
import { checkProgram } from './elf.js';
import { perturbedEnv, snapshotEnv } from './env.js';
import { retakeEntries } from '../cache/envdeps.js';
import { MAX_ENV_DEPS, describeLookedUp, lookupDependencies } from './lookups.js';
import { buildFiles } from './files.js';
import { checkSameContents } from './layout.js';
import { byAddress, checkProgramUnchanged, kernelState, vdsoParts } from './process-state.js';
import { SnapshotRefusal } from './refusal.js';
import { buildRegions } from './regions.js';
import { findCanaries, findStackSlots, readStack, type StackLayout } from './slots.js';
import { AT, killTracee, readMem, runToEntry, type StoppedAtEntry } from './trace.js';
import { describeLimits, imageLimits } from './limits.js';
import { syscallName } from './syscalls.js';
import { clockNow } from './vdso-clock.js';
import { loaderIsLibc } from './libc-loader.js';
import { checkDeadStackSlots } from './dead-stack.js';
import { findRandomCopies, randomCopySlots } from './random-copies.js';
import { ARCH } from './tracer-arch.js';

const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * Extra arguments for every run. argc copies found by the differential runs
 * are verified in the real run by value; an unusual argc makes that check
 * meaningful (a stray word equal to 1 is common, one equal to 38 much less).
 */
const ARGC_PADDING = 37;

export function postLinkModel(opts: SnapshotOptions): { image: ImageModel; notes: string[] } {
  // Before anything is read: a dependency must be older than this (fresh.ts).
  const startNs = BigInt(Date.now()) * 1_000_000n;
  const exePath = path.resolve(opts.exePath);
  const program = checkProgram(exePath);
  const keyBefore = keyFor(exePath, opts.env);
  const envp = snapshotEnv(opts.env);
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const argv = [exePath, ...opts.argv.slice(1), ...Array.from({ length: ARGC_PADDING }, (_, i) => `cx-pad-${i}`)];
  const libcLoader = loaderIsLibc(program.interpreter);
  const base = { launcher: opts.launcher, exePath, argv, envp, noAslr: false, deadline, loaderIsLibc: libcLoader, ...(opts.limits ? { limits: opts.limits } : {}) };

  // The differential runs first: a refusal there costs no real run, and the
  // real run's tracee is then the only one alive while it is captured.
  const diff = differential(base, (keep) => perturbedEnv(envp, keep));
  // What the constructors looked up is the image's only tie to the environment;
  // reads that bypassed getenv, or too many names, bind it to the whole of it.
  const deps = diff.envBound ? null : lookupDependencies(diff.lookups, opts.env);
  // Before the real run, like the differential runs (random-copies.ts).
  const copies = libcLoader ? findRandomCopies(diff) : undefined;

  // The real run reads the real time (answered, to verify the clock slots against it).
  const t = runToEntry({ ...base, clock: clockNow() });
  try {
    checkEntryState(t);
    const maps = readMaps(t.pid);
    checkSameContents(diff.runA.maps, maps);
    const caps = captureMappings(t.pid, t.mem, maps);
    const stack = readStack(t, maps);
    checkStack(stack, argv);
    const fsBase = t.threadPointer;
    const slots: ImageSlot[] = [
      ...findStackSlots(caps, stack),
      ...findCanaries(t, caps, fsBase),
      ...translateSlots(diff.slots, diff.runA, caps, fsBase, stack.argc, t.pid, t.clockReads),
      ...(copies?.ok && copies.addrs.length ? randomCopySlots(copies.addrs, diff, caps, fsBase, atRandomBytes(t, stack)) : []),
    ];
    checkDeadStackSlots(diff.deadStack, diff.runA, caps, fsBase, slots);
    const seen = new Set<bigint>();
    for (const s of slots) {
      if (seen.has(s.addr)) throw new SnapshotRefusal('internal', `two slots at 0x${s.addr.toString(16)}`);
      seen.add(s.addr);
    }
    // glibc's loader keeps one (__libc_stack_end): its absence means the scan missed something.
    // A loader that is its libc keeps none: its start code gets sp (libc-loader.ts).
    if (!libcLoader && !slots.some((s) => s.kind === SlotKind.ARGC_ADDR)) throw new SnapshotRefusal('internal', 'no pointer to argc found');
    const files = buildFiles(t.paths, maps, exePath, program.interpreter);
    const identityBound = identityAndAccess(files.files, t.paths, [], t.identityAsked);
    checkNotTooNew(files.files, startNs);
    const regions = buildRegions(caps, files, slots);
    const state = kernelState(t, maps);
    // rdx (x0) is rtld_fini only for a loader that passes one; musl's leaves a dead stack address there (libc-loader.ts).
    if (libcLoader) state.rtldFini = 0n;
    if (identityBound) state.flags |= StateFlag.IDENTITY_BOUND;
    const key = keyFor(exePath, opts.env);
    if (!deps) key.envHash = envHash(opts.env);
    checkProgramUnchanged(exePath, keyBefore, key);
    const limits = imageLimits(t.loader, files.files, libcLoader);
    const image: ImageModel = {
      createdNs: BigInt(Date.now()) * 1_000_000n,
      key,
      files: files.files,
      regions,
      slots: slots.sort(byAddress),
      state,
      vdso: vdsoParts(maps, state.vdsoBase),
      ...(deps?.length ? { envDeps: deps } : {}),
      ...(limits.length ? { limits } : {}),
      // A re-take needs what the image depends on (no other variable goes into an image).
      ...(!deps || deps.length ? { snapshotEnv: retakeEntries(deps ?? [], opts.env, !deps) } : {}),
    };
    const notes = [
      `${t.syscallCount} syscalls before the entry point (${summarizeSyscalls(t)})`,
      `${slots.length} slots, ${regions.length} regions, ${files.files.length} files`,
    ];
    if (identityBound) notes.push(`identity-bound (served only to uid ${key.euid}): ${identityBound}`);
    const limitsNote = describeLimits(limits, 'before the entry point');
    if (limitsNote) notes.push(limitsNote);
    if (!deps) {
      notes.push(diff.envBound
        ? 'library constructors read the environment other than through getenv: the image serves only this exact environment'
        : `library constructors looked up more than ${MAX_ENV_DEPS} variables: the image serves only this exact environment`);
    } else if (deps.length) {
      notes.push(`library constructors looked up ${describeLookedUp(deps)}: the image serves runs that agree on these`);
    }
    if (copies?.ok && copies.addrs.length) {
      notes.push(`${copies.addrs.length} words are copies of AT_RANDOM bytes 8-15 made before the entry point (musl's malloc secret): each restore gets its own`);
    } else if (copies && !copies.ok) {
      notes.push(`AT_RANDOM bytes 8-15 are kept as the snapshot had them, shared by every restore: ${copies.detail}`);
    }
    const clockSlots = diff.slots.filter((s) => s.clock);
    if (clockSlots.length) {
      notes.push(`library constructors kept ${clockSlots.length} clock reading(s) (${clockSlots.map((s) => s.clock?.what).join('; ')}): each restore writes its own time there`);
    } else if (t.clockReads.length) {
      notes.push(`library constructors read the clock ${t.clockReads.length} time(s) and kept nothing of it`);
    }
    if (diff.loaderClockWords) {
      notes.push(`${diff.loaderClockWords} 4-byte words of the loader's own start-up timings differ between runs with the same inputs (the counter, read without a syscall, cannot be trapped here): kept as the snapshot took them`);
    }
    if (diff.randomCopies) {
      notes.push(`${diff.randomCopies} words are getrandom output kept verbatim before the entry point (malloc's tcache key): shared by every restore`);
    }
    return { image, notes };
  } finally {
    killTracee(t.pid, t.mem);
  }
}

function summarizeSyscalls(t: StoppedAtEntry): string {
  return [...t.syscallsByNr].sort((a, b) => b[1] - a[1]).map(([nr, n]) => `${syscallName(nr)} ${n}`).join(', ');
}

/** The process must be in a state an image can stand for: the syscall policy's result, seen by the kernel. */
function checkEntryState(t: StoppedAtEntry): void {
  const tasks = fs.readdirSync(`/proc/${t.pid}/task`);
  if (tasks.length !== 1) throw new SnapshotRefusal('threads', `${tasks.length} threads at the entry point`);
  const fds = fs.readdirSync(`/proc/${t.pid}/fd`).map(Number).filter((fd) => fd > 2);
  if (fds.length) {
    const what = fds.map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`);
      } catch {
        return String(fd);
      }
    });
    throw new SnapshotRefusal('open-fds', `constructors left files open: ${what.join(', ')}`);
  }
  const children = fs.readFileSync(`/proc/${t.pid}/task/${t.pid}/children`, 'utf8').trim();
  if (children) throw new SnapshotRefusal('children', `child processes exist at the entry point: ${children}`);
  // The spawn reset every disposition and the mask, so anything here was done before the entry point.
  const status = fs.readFileSync(`/proc/${t.pid}/status`, 'utf8');
  for (const field of ['SigPnd', 'ShdPnd', 'SigBlk', 'SigIgn', 'SigCgt', 'Seccomp']) {
    const m = new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(status);
    if (!m) throw new SnapshotRefusal('internal', `no ${field} in /proc/${t.pid}/status`);
    if (/[^0]/.test(m[1] as string)) {
      throw new SnapshotRefusal('unsupported-syscall', `signal or seccomp state at the entry point: ${field} ${m[1]}`);
    }
  }
  if (ARCH.pc(t.regs) !== t.auxv.get(AT.ENTRY)) throw new SnapshotRefusal('internal', 'not stopped at the entry point');
  // x86_64's loaders set it with arch_prctl(ARCH_SET_FS); aarch64's with msr (no syscall: nothing to compare).
  if (t.loader.fsBase !== undefined && t.loader.fsBase !== t.threadPointer) {
    throw new SnapshotRefusal('internal', 'fs_base differs from the loader\'s arch_prctl(ARCH_SET_FS)');
  }
  if (ARCH.sp(t.regs) % 16n !== 0n) throw new SnapshotRefusal('internal', 'sp at the entry point is not 16-byte aligned: a frame is live');
}

function atRandomBytes(t: StoppedAtEntry, s: StackLayout): Buffer {
  if (s.random === undefined) throw new SnapshotRefusal('internal', 'no AT_RANDOM in the real run');
  return readMem(t.mem, s.random, 16);
}

/** rsp must point at the kernel's argc with our argv above it: no frame of the loader is live. */
function checkStack(s: StackLayout, argv: string[]): void {
  if (s.argc !== argv.length || s.argvStrings.some((a, i) => a.value !== argv[i])) {
    throw new SnapshotRefusal('internal', 'the stack at the entry point is not the kernel\'s initial frame');
  }
}

