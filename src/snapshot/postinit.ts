/**
 * postInitModel: a program stopped after its initialisation, at the
 * checkpoint read of the resume protocol (docs/resume-protocol.md).
 *
 *  1. two runs, A and B, to the checkpoint (checkpoint.ts): same layout (ASLR
 *     off), same AT_RANDOM, clocks, random bytes and child ids, different
 *     umask and different sentinels for the process's own ids;
 *  2. the process state at the checkpoint must be one an image can stand for:
 *     one thread, no children, fds 0-2 and the resume fd only, nothing
 *     pending, dispositions as traced;
 *  3. every word that differs between A and B must hold one of the process
 *     ids (binary, or decimal text) or the thread id: those become slots the
 *     restore patches. Anything else is a refusal;
 *  4. run A is the image: regions (its stack too, which keeps live frames),
 *     registers and FPU state, signal dispositions and mask, umask when the
 *     init set it, the files and directories it read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ImageEnvDep, ImageFile, ImageLimit, ImageModel, ImageResume, ImageSlot } from '../image/format.js';
import { RESUME_REGS } from '../image/format.js';
import { ARCH_AARCH64, ARCH_X86_64, FileKind, Ident, RESUME_AARCH64, RegionFlag, SlotKind, StateFlag, layout } from '../image/schema.js';
import { keyFor } from '../cache/key.js';
import { RESUME_FD, RESUME_FD_ENV, RESUME_MAGIC, afterInitArgv, initSpec, isPerRunVariable, resumeEnvHash, type AdapterKind } from '../resume/spec.js';
import { retakeEntries } from '../cache/envdeps.js';
import { BASH_LOOKUPS, LIBC_LOOKUPS, MAX_ENV_DEPS, describeLookedUp, initLookups, lookupDependencies } from './lookups.js';
import * as os from 'node:os';
import { PAGE, captureMappings, readMaps, type CapturedMapping, type Mapping } from './capture.js';
import { runToCheckpoint, type Identity, type StoppedAtCheckpoint } from './checkpoint.js';
import { checkProgram } from './elf.js';
import { ARCH } from './tracer-arch.js';
import { snapshotEnv } from './env.js';
import { buildFiles, isPseudoPath } from './files.js';
import { SnapshotRefusal } from './refusal.js';
import { buildRegions } from './regions.js';
import { describeAddr } from './slots.js';
import { AT, killTracee, type PathEvent } from './trace.js';
import { describeLimits, imageLimits } from './limits.js';
import { loaderIsLibc } from './libc-loader.js';
import { readMem } from './mem.js';
import { acceptLoaderClockWords, changingWords, counterTrappable, loaderPath, type Unexplained } from './clock.js';
import { byAddress, checkProgramUnchanged, kernelState, vdsoParts } from './process-state.js';
import { identityAndAccess } from './access.js';
import { checkNotTooNew } from './fresh.js';
import type { Effect } from './effects.js';

export interface PostInitOptions {
  /** Resolved absolute path of the program. */
  exePath: string;
  /** The program's argv[0] as the user gives it. */
  argv0: string;
  /** Adapter words (src/resume/spec.ts adapterWords): empty for a program that speaks the protocol. */
  words: string[];
  kind: AdapterKind;
  env: NodeJS.ProcessEnv;
  launcher: string;
  timeoutMs?: number;
  /** Resource limits the program starts with (SnapshotOptions.limits). */
  limits?: readonly ImageLimit[];
}

const DEFAULT_TIMEOUT_MS = 60_000;
/** Informational (format field): the launcher lets the stack grow as RLIMIT_STACK allows (MAP_GROWSDOWN). */
const STACK_RESERVE = 8n * 1024n * 1024n;

/** Sentinels for the process's own ids: as many digits as the largest pid, so any real id fits where one was written as text. */
function sentinels(run: 0 | 1): Identity {
  let digits = 7;
  try {
    digits = fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim().length;
  } catch {
    /* default pid_max of 64-bit kernels has 7 digits */
  }
  const pick = (s: string): number => Number(s.slice(0, Math.max(2, Math.min(7, digits))));
  const sets = [['3141592', '2718281', '1414213', '1732050'], ['2236067', '2645751', '3316624', '3605551']][run] as string[];
  return { pid: pick(sets[0] as string), ppid: pick(sets[1] as string), pgid: pick(sets[2] as string), sid: pick(sets[3] as string) };
}

interface Run {
  t: StoppedAtCheckpoint;
  maps: Mapping[];
  caps: CapturedMapping[];
  /** After the test context was applied (the close of the resume fd). */
  after: CapturedMapping[];
  /** Kernel-side state at the checkpoint (read before the tracee is gone). */
  state: ImageModel['state'];
  /** What the init's children read (and still is what they read). */
  childPaths: PathEvent[];
  stack: Mapping;
  status: Map<string, string>;
  identity: Identity;
}

function procStatus(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return out;
}

const hexMask = (s: string | undefined): bigint => BigInt(`0x${s ?? '0'}`);

/** One thread, no children, only fds 0-2 (as given) and the resume fd, nothing pending. */
function checkProcessState(t: StoppedAtCheckpoint, status: Map<string, string>, output: string): void {
  // The children's output too: a restore would print none of it.
  const printed = fs.readFileSync(output);
  if (printed.length) {
    throw new SnapshotRefusal('unsupported-syscall', `the init or a child of it printed ${JSON.stringify(printed.subarray(0, 200).toString('latin1'))}: a restore would not`);
  }
  const tasks = fs.readdirSync(`/proc/${t.pid}/task`);
  if (tasks.length !== 1) {
    throw new SnapshotRefusal('threads', `${tasks.length} threads at the checkpoint (OpenBLAS starts threads when numpy is imported: OPENBLAS_NUM_THREADS=1 avoids them)`);
  }
  const children = fs.readFileSync(`/proc/${t.pid}/task/${t.pid}/children`, 'utf8').trim();
  if (children) throw new SnapshotRefusal('children', `child processes still exist at the checkpoint: ${children}`);
  for (const name of fs.readdirSync(`/proc/${t.pid}/fd`)) {
    const fd = Number(name);
    let target = '?';
    try {
      target = fs.readlinkSync(`/proc/${t.pid}/fd/${fd}`);
    } catch {
      /* gone */
    }
    if ((fd === 0 && target === '/dev/null') || ((fd === 1 || fd === 2) && target === output) || fd === RESUME_FD) continue;
    throw new SnapshotRefusal('open-fds', `fd ${fd} (${target}) is open at the checkpoint: only 0-2 and the resume fd may be`);
  }
  for (const field of ['SigPnd', 'ShdPnd']) {
    if (hexMask(status.get(field)) !== 0n) throw new SnapshotRefusal('unsupported-syscall', `a signal is pending at the checkpoint (${field} ${status.get(field)})`);
  }
  if (status.get('Seccomp') !== '0') throw new SnapshotRefusal('unsupported-syscall', 'seccomp is on at the checkpoint');
  // What the trace saw of rt_sigaction must be what the kernel has.
  let ign = 0n;
  let cgt = 0n;
  for (const [sig, a] of t.sigactions) {
    const bit = 1n << BigInt(sig - 1);
    if (a.handler === 1n) ign |= bit;
    else if (a.handler !== 0n) cgt |= bit;
  }
  if (ign !== hexMask(status.get('SigIgn')) || cgt !== hexMask(status.get('SigCgt'))) {
    throw new SnapshotRefusal('internal', `signal dispositions at the checkpoint (SigIgn ${status.get('SigIgn')}, SigCgt ${status.get('SigCgt')}) are not what the trace saw`);
  }
}

function capture(o: Parameters<typeof runToCheckpoint>[0]): Run {
  const t = runToCheckpoint(o);
  try {
    const status = procStatus(t.pid);
    checkProcessState(t, status, o.outputFile);
    const maps = readMaps(t.pid);
    const stack = maps.find((m) => m.path === '[stack]');
    const sp = ARCH.sp(t.regs);
    if (!stack || sp < stack.start || sp >= stack.end) throw new SnapshotRefusal('internal', 'the stack pointer is not in [stack] at the checkpoint');
    refuseSignedReturnAddresses(t, maps, sp, stack);
    // The stack is captured like any anonymous memory: it holds the live frames.
    const captureList = maps.map((m) => (m === stack ? { ...m, path: '' } : m));
    const caps = captureMappings(t.pid, t.mem, captureList);
    const state = kernelState(t, maps);
    const childPaths = t.children.dependencies();
    t.resumeUntilClose();
    const after = captureMappings(t.pid, t.mem, readMaps(t.pid).map((m) => (m.path === '[stack]' ? { ...m, path: '' } : m)));
    return { t, maps, caps, after, state, childPaths, stack, status, identity: o.identity };
  } finally {
    killTracee(t.pid, t.mem);
    t.children.killAll();
  }
}

/** The post-init image of a program (takeSnapshot with afterInit); throws SnapshotRefusal. */
export function postInitModel(opts: PostInitOptions): { image: ImageModel; notes: string[] } {
  // Before anything is read: a dependency must be older than this (fresh.ts).
  const startNs = BigInt(Date.now()) * 1_000_000n;
  const exePath = path.resolve(opts.exePath);
  const program = checkProgram(exePath);
  if (ARCH.machine !== ARCH_X86_64 && ARCH.machine !== ARCH_AARCH64) {
    // The RESUME section holds x86_64's or aarch64's registers (machineResume).
    throw new SnapshotRefusal('unported-arch', `post-init snapshots are taken on x86_64 and aarch64 only (this machine is ${ARCH.name}); the program runs cold with --after-init`);
  }
  const keyBefore = keyFor(exePath, opts.env);
  const envp = [...snapshotEnv({ ...opts.env, PWD: '/', [RESUME_FD_ENV]: String(RESUME_FD) })];
  const argv = afterInitArgv(opts.words, [opts.argv0]).slice(0, opts.words.length ? -1 : undefined);
  // The snapshot passes no user argv: "--" ends the adapter's own options, the rest comes with the context.
  if (opts.words.length) argv.push('--');
  const clock = { realtime: BigInt(Date.now()) * 1_000_000n, monotonic: process.hrtime.bigint() };
  const contextDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-resume-'));
  const contextFile = path.join(contextDir, 'context');
  const outputFile = path.join(contextDir, 'output');
  fs.writeFileSync(outputFile, '');
  fs.writeFileSync(contextFile, testContext(opts.kind, opts.argv0, envp));
  const base = {
    launcher: opts.launcher, exePath, argv, envp, resumeFd: RESUME_FD, clock, randomStream: 'init', deadline: 0, contextFile, outputFile,
    ...(opts.limits ? { limits: opts.limits } : {}),
    lookups: opts.kind === 'bash' ? [...LIBC_LOOKUPS, ...BASH_LOOKUPS] : LIBC_LOOKUPS,
  };
  try {
    return postInitImage(opts, exePath, program.interpreter, keyBefore, base, startNs);
  } finally {
    fs.rmSync(contextDir, { recursive: true, force: true });
  }
}

/**
 * The context both differential runs resume with: a command that does
 * nothing, the snapshot's own environment, "/" and a fixed seed. What the
 * adapter overwrites while applying it is not the image's concern.
 */
function testContext(kind: AdapterKind, argv0: string, envp: string[]): Buffer {
  const argv = kind === 'bash' ? [argv0, '-c', ':'] : kind === 'python' ? [argv0, '-c', 'pass'] : [argv0];
  const env = envp.filter((e) => !e.startsWith(`${RESUME_FD_ENV}=`));
  const fields = [RESUME_MAGIC, String(argv.length), ...argv, String(env.length), ...env, '/', '0123456789abcdef0123456789abcdef'];
  return Buffer.from(fields.map((f) => `${f}\0`).join(''));
}

/** What the init did outside its memory, as one refusal line. */
function refuseEffects(effects: Effect[]): void {
  if (!effects.length) return;
  const more = effects.length > 3 ? ` (and ${effects.length - 3} more)` : '';
  throw new SnapshotRefusal('side-effects', `${effects.slice(0, 3).map((e) => e.detail).join('; ')}${more}: a restore would not do this`);
}

function postInitImage(opts: PostInitOptions, exePath: string, interpreter: string, keyBefore: ReturnType<typeof keyFor>,
  base: Omit<Parameters<typeof runToCheckpoint>[0], 'identity' | 'umask' | 'atRandom'>, firstStartNs: bigint): { image: ImageModel; notes: string[] } {
  let startNs = firstStartNs;
  // Each run has the whole time: an emulated CPU (the arm64 guest) takes tens of seconds for one traced bash init.
  const deadline = (): number => Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const runA = (atRandom?: Buffer): Run => capture({ ...base, deadline: deadline(), identity: sentinels(0), umask: 0o022, ...(atRandom ? { atRandom } : {}) });
  const runPair = (): [Run, Run] => {
    let a = runA();
    // A first run that wrote caches (Python's bytecode on a first import) left them for
    // the runs after it: once more. An init that changes something every time is refused.
    if (a.t.effects.length) {
      // What the first run wrote is read by the next: the image's dependencies date from here.
      startNs = BigInt(Date.now()) * 1_000_000n;
      a = runA();
    }
    refuseEffects(a.t.effects);
    const b = capture({ ...base, deadline: deadline(), identity: sentinels(1), umask: 0o077, atRandom: a.t.random });
    refuseEffects(b.t.effects);
    return [a, b];
  };
  const trapped = counterTrappable(base.launcher);
  let [a, b] = runPair();
  let slots: ImageSlot[];
  try {
    slots = compare(a, b, trapped ? undefined : () => runA(a.t.random));
  } catch (e) {
    // A first run that wrote caches (Python's bytecode) takes another path than the runs after it.
    if (!(e instanceof SnapshotRefusal) || !a.t.paths.length) throw e;
    [a, b] = runPair();
    const first = a;
    slots = compare(a, b, trapped ? undefined : () => runA(first.t.random));
  }

  const t = a.t;
  // What the init made and removed again (a temporary file) is its own, not a dependency.
  const events = [...t.paths, ...a.childPaths].filter((e) => !t.madeByInit(e.path));
  const listed = t.listedDirs.filter((d) => !t.madeByInit(d));
  const files = buildFiles(events, a.maps, exePath, interpreter);
  addListedDirectories(files.files, listed);
  const identityBound = identityAndAccess(files.files, events, listed, t.identityAsked);
  checkNotTooNew(files.files, startNs);
  const regions = buildRegions(a.caps, files, slots);
  // The launcher maps the stack's regions as one growing mapping (RLIMIT_STACK applies as to a cold stack).
  const stackRegions = regions.filter((r) => r.addr >= a.stack.start && r.addr < a.stack.end);
  if (!stackRegions.length) throw new SnapshotRefusal('internal', 'no region for the stack');
  for (const r of stackRegions) r.flags |= RegionFlag.STACK;

  const umaskA = parseInt(a.status.get('Umask') ?? '', 8);
  const umaskB = parseInt(b.status.get('Umask') ?? '', 8);
  let umask: number | undefined;
  if (umaskA === umaskB) umask = umaskA;
  else if (umaskA !== 0o022 || umaskB !== 0o077) throw new SnapshotRefusal('unexplained-difference', `the umask at the checkpoint depends on the starting umask (${umaskA.toString(8)} vs ${umaskB.toString(8)})`);

  const resume: ImageResume = {
    ...machineResume(t),
    sigmask: hexMask(a.status.get('SigBlk')),
    ignoredAtStart: 0n, // the snapshot starts with every disposition at its default
    stackReserve: STACK_RESERVE,
    resumeFd: RESUME_FD,
    ...(umask !== undefined ? { umask } : {}),
    sigactions: [...t.sigactions].filter(([, s]) => s.handler !== 0n).sort(([x], [y]) => x - y)
      .map(([signo, s]) => ({ signo, ...s })),
  };

  const state = a.state;
  if (identityBound) state.flags |= StateFlag.IDENTITY_BOUND;
  const key = keyFor(exePath, opts.env);
  key.initSpec = initSpec(opts.words);
  const env = initEnvironment(opts.env, a, b);
  if (env.whole) key.envHash = resumeEnvHash(opts.env);
  checkProgramUnchanged(exePath, keyBefore, key);
  const limits = imageLimits(a.t.loader, files.files, loaderIsLibc(interpreter));
  const image: ImageModel = {
    createdNs: BigInt(Date.now()) * 1_000_000n,
    key,
    files: files.files,
    regions,
    slots: slots.sort(byAddress),
    state,
    vdso: vdsoParts(a.maps, state.vdsoBase),
    resume,
    ...(env.deps.length ? { envDeps: env.deps } : {}),
    ...(limits.length ? { limits } : {}),
    snapshotEnv: retakeEntries(env.deps, opts.env, env.whole),
  };
  const notes = [
    `${t.syscallCount} syscalls before the checkpoint, ${t.forks} children (all finished)`,
    `${slots.length} slots, ${regions.length} regions, ${files.files.length} files`,
    `shared by every restore of this image: the address-space layout (ASLR off), the stack guard and pointer guard, random bytes and clock readings taken during the init`,
    env.note,
  ];
  if (identityBound) notes.push(`identity-bound (served only to uid ${key.euid}): ${identityBound}`);
  const limitsNote = describeLimits(image.limits ?? [], 'before the checkpoint');
  if (limitsNote) notes.push(limitsNote);
  return { image, notes };
}

/**
 * The machine's part of the RESUME section. x86_64: the registers by name
 * in cx_resume and the XSAVE area. aarch64: cx_resume's registers stay zero
 * and the XSTATE section holds struct cx_resume_aarch64 (schema.ts).
 */
function machineResume(t: StoppedAtCheckpoint): Pick<ImageResume, 'regs' | 'xfeatures' | 'xstate'> {
  const regs = t.regs;
  if (ARCH.machine === ARCH_X86_64) {
    // ptrace's XSAVE copy puts the process's XCR0 in the first software-reserved word (offset 464).
    const xfeatures = t.xstate.length >= 472 ? t.xstate.readBigUInt64LE(464) : 0n;
    if (!xfeatures || t.xstate.length < 576) throw new SnapshotRefusal('internal', `no XSAVE state for the stopped thread (${t.xstate.length} bytes, ${t.xstate.subarray(464, 488).toString('hex')})`);
    return { regs: Object.fromEntries(RESUME_REGS.map((n) => [n, regs[n] ?? 0n])) as ImageResume['regs'], xfeatures, xstate: t.xstate };
  }
  const l = layout(RESUME_AARCH64);
  const at = (name: string): number => (l.fields.find((f) => f.name === name) as { offset: number }).offset;
  const out = Buffer.alloc(l.size);
  for (let i = 0; i < 31; i++) out.writeBigUInt64LE(regs[`x${i}`] ?? 0n, at('x') + i * 8);
  out.writeBigUInt64LE(ARCH.sp(regs), at('sp'));
  out.writeBigUInt64LE(ARCH.pc(regs), at('pc'));
  out.writeBigUInt64LE(regs.pstate ?? 0n, at('pstate'));
  // user_fpsimd_state: v0-v31 (512 bytes), fpsr, fpcr.
  t.xstate.copy(out, at('v'), 0, 512);
  out.writeUInt32LE(t.xstate.readUInt32LE(512), at('fpsr'));
  out.writeUInt32LE(t.xstate.readUInt32LE(516), at('fpcr'));
  out.writeUInt32LE(t.vectorLength, at('sve_vl'));
  return { regs: Object.fromEntries(RESUME_REGS.map((n) => [n, 0n])) as ImageResume['regs'], xfeatures: 0n, xstate: out };
}

/**
 * Pointer authentication (aarch64, -mbranch-protection=pac-ret): a function
 * built with it signs its return address with the process's APIA key
 * (paciasp) and authenticates it before returning. The keys are random per
 * exec and a process cannot set its own: a restored process has the
 * launcher's keys, so a live frame signed with the snapshot's would fault on
 * its return. Such an init is refused: a word of the live stack whose PAC
 * bits are set and which, with them cleared, points into executable code is
 * a signed return address. (Debian 12's arm64 programs have no paciasp.)
 */
function refuseSignedReturnAddresses(t: StoppedAtCheckpoint, maps: Mapping[], sp: bigint, stack: Mapping): void {
  const mask = ARCH.pacMask(t.pid);
  if (!mask) return;
  const code = maps.filter((m) => m.perms.includes('x'));
  const signedCode = (w: bigint): Mapping | undefined => {
    if (!(w & mask)) return undefined;
    const stripped = w & ~mask;
    return code.find((c) => stripped >= c.start && stripped < c.end);
  };
  const refuse = (w: bigint, where: string, m: Mapping): never => {
    throw new SnapshotRefusal('unsupported-syscall', `a live frame holds a return address signed with pointer authentication (0x${w.toString(16)} ${where}, into ${m.path || 'anonymous code'}): the restored process has other PAC keys and would fault on its return`);
  };
  // A leaf function built with pac-ret+leaf keeps its signed return address in x30.
  for (const [name, w] of Object.entries(t.regs)) {
    const m = name !== 'pc' && name !== 'sp' ? signedCode(w) : undefined;
    if (m) refuse(w, `in ${name}`, m);
  }
  const live = readMem(t.mem, sp, Number(stack.end - sp));
  for (let off = 0; off + 8 <= live.length; off += 8) {
    const w = live.readBigUInt64LE(off);
    const m = signedCode(w);
    if (m) refuse(w, `at sp+${off}`, m);
  }
}

/**
 * What the image depends on of the environment: the variables the program
 * looked up until the checkpoint (bash's variable table, getenv) or the
 * adapter announced (Python's os.environ, the names an adapter cannot apply),
 * their values or their absence, but the per-run ones the adapter applies.
 * The whole environment but those when the init ran other programs (they
 * read what they like, unseen), listed every variable, or read too many.
 */
function initEnvironment(env: NodeJS.ProcessEnv, a: Run, b: Run): { deps: ImageEnvDep[]; whole: boolean; note: string } {
  const whole = (why: string): { deps: ImageEnvDep[]; whole: boolean; note: string } =>
    ({ deps: [], whole: true, note: `the image serves only this environment (every variable but the per-run ones): ${why}` });
  if (a.t.forks) return whole(`the init ran ${a.t.forks} other program(s), which may read any variable`);
  const lookups = [...initLookups(a.t.envLookups), ...initLookups(b.t.envLookups)];
  if (lookups.some((l) => l.name === '*')) return whole(`the init listed every variable (${lookups.find((l) => l.name === '*')?.via})`);
  // The adapter's own variables (__cx_*) are never the caller's.
  const deps = lookupDependencies(lookups, env, (n) => isPerRunVariable(n, env) || n.startsWith('__cx_'));
  if (!deps) return whole(`the init read more than ${MAX_ENV_DEPS} variables`);
  return { deps, whole: false, note: deps.length ? `the image serves runs that agree on ${describeLookedUp(deps)}` : 'the image serves any environment (the init read no variable)' };
}

/** Directories whose listing the init read: an entry added or removed changes their mtime. */
function addListedDirectories(files: ImageFile[], dirs: string[]): void {
  const have = new Set(files.map((f) => f.path));
  for (const d of dirs) {
    if (have.has(d) || isPseudoPath(d)) continue;
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(d, { bigint: true });
    } catch {
      throw new SnapshotRefusal('too-new', `${d} changed while the program was being snapshotted`);
    }
    files.push({
      path: d, kind: FileKind.READ, flags: 0, dev: st.dev, ino: st.ino, size: st.size, mode: Number(st.mode),
      mtimeSec: st.mtimeNs / 1_000_000_000n, mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
      ctimeSec: st.ctimeNs / 1_000_000_000n, ctimeNsec: Number(st.ctimeNs % 1_000_000_000n),
    });
    have.add(d);
  }
}

const isDigit = (b: number | undefined): boolean => b !== undefined && b >= 0x30 && b <= 0x39;
const IDENT_KINDS: [keyof Identity, number][] = [['pid', Ident.PID], ['ppid', Ident.PPID], ['pgid', Ident.PGID], ['sid', Ident.SID]];

function sameLayout(a: CapturedMapping[], b: CapturedMapping[], when: string): void {
  if (a.length !== b.length || a.some((m, i) => {
    const n = b[i] as CapturedMapping;
    return m.start !== n.start || m.end !== n.end || m.perms !== n.perms || m.path !== n.path || m.offset !== n.offset;
  })) {
    throw new SnapshotRefusal('layout-mismatch', `the two runs mapped different things ${when}`);
  }
}

/** Bytes of a captured page as the process saw them (file pages read from the file). */
function pageBytes(c: CapturedMapping, i: number): Buffer {
  const d = c.data.get(i);
  if (d) return d;
  const buf = Buffer.alloc(PAGE);
  if (c.classes[i] === 'file' && c.path.startsWith('/')) {
    const fd = fs.openSync(c.path, 'r');
    try {
      fs.readSync(fd, buf, 0, PAGE, Number(c.offset) + i * PAGE);
    } finally {
      fs.closeSync(fd);
    }
  }
  return buf;
}

type Difference =
  | { addr: bigint; what: 'id'; ident: number }
  | { addr: bigint; what: 'text'; ident: number; capacity: number }
  | { addr: bigint; what: 'tid' }
  | { addr: bigint; what: 'other'; va: number; vb: number };

/**
 * Every difference between two same-layout captures, as 4-byte positions:
 * a process id sentinel (binary or NUL-terminated decimal text), the real
 * thread id, or something else. The rseq area (the kernel's CPU number) and
 * dead stack below the red zone are not program state.
 */
function differences(a: Run, b: Run, ca: CapturedMapping[], cb: CapturedMapping[]): Difference[] {
  const out: Difference[] = [];
  const deadBelow = ARCH.sp(a.t.regs) - ARCH.redZone;
  const rseq = a.t.loader.rseq;
  ca.forEach((ma, mi) => {
    const mb = cb[mi] as CapturedMapping;
    for (let i = 0; i < ma.classes.length; i++) {
      if (!ma.data.has(i) && !mb.data.has(i) && ma.classes[i] === mb.classes[i]) continue;
      const pa = pageBytes(ma, i);
      const pb = pageBytes(mb, i);
      if (pa.equals(pb)) continue;
      const pageAddr = ma.start + BigInt(i * PAGE);
      const explained = new Uint8Array(PAGE);
      for (const [k, ident] of IDENT_KINDS) {
        const ta = Buffer.from(String(a.identity[k]));
        const tb = Buffer.from(String(b.identity[k]));
        for (let off: number = pa.indexOf(ta); off >= 0; off = pa.indexOf(ta, off + 1)) {
          const end = off + ta.length;
          if (end >= PAGE || pa[end] !== 0 || pb[end] !== 0 || isDigit(pa[off - 1]) || !pb.subarray(off, end).equals(tb)) continue;
          explained.fill(1, off, end);
          out.push({ addr: pageAddr + BigInt(off), what: 'text', ident, capacity: ta.length + 1 });
        }
      }
      for (let off = 0; off < PAGE; off += 4) {
        const va = pa.readUInt32LE(off);
        const vb = pb.readUInt32LE(off);
        if (va === vb) continue;
        const addr = pageAddr + BigInt(off);
        if (addr < deadBelow && addr >= a.stack.start && addr < a.stack.end) continue;
        if (rseq && addr >= rseq.area && addr < rseq.area + BigInt(rseq.len)) continue;
        let differing = false;
        for (let k = 0; k < 4; k++) if (pa[off + k] !== pb[off + k] && !explained[off + k]) differing = true;
        if (!differing) continue;
        const id = IDENT_KINDS.find(([k]) => a.identity[k] === va && b.identity[k] === vb);
        if (id) out.push({ addr, what: 'id', ident: id[1] });
        else if (va === a.t.pid && vb === b.t.pid) out.push({ addr, what: 'tid' });
        else out.push({ addr, what: 'other', va, vb });
      }
    }
  });
  return out;
}

/** 4 bytes at addr in a capture, or undefined when unmapped there. */
function wordAt(caps: CapturedMapping[], addr: bigint): number | undefined {
  const m = caps.find((x) => addr >= x.start && addr + 4n <= x.end);
  if (!m) return undefined;
  const off = Number(addr - m.start);
  return pageBytes(m, Math.floor(off / PAGE)).readUInt32LE(off % PAGE);
}

/**
 * The image's slots. At the checkpoint, every word that differs between A and
 * B is a process id, the thread id, or something the resume overwrites: equal
 * in both runs once the test context was applied (bash's $RANDOM state,
 * seeded from the pid at start, and reseeded by the adapter). After the
 * resume, only ids may differ.
 */
function compare(a: Run, b: Run, runAgain: (() => Run) | undefined): ImageSlot[] {
  sameLayout(a.caps, b.caps, 'before the checkpoint');
  sameLayout(a.after, b.after, 'while resuming');
  for (const r of ARCH.checkpointRegs) {
    if (a.t.regs[r] !== b.t.regs[r]) {
      throw new SnapshotRefusal('unexplained-difference', `register ${r} differs between the two runs at the checkpoint`);
    }
  }
  const clock = new LoaderClock(a, runAgain);
  const stillDiffer = differences(a, b, a.after, b.after).flatMap((d) => (d.what === 'other' ? [d] : []));
  clock.accept(stillDiffer, 'after', (u) =>
    `${describeAddr(a.after, u.addr)} still differs between two runs after the resume (0x${u.va.toString(16)} vs 0x${u.vb.toString(16)}): it depends on something a restore cannot reproduce`);
  const slots: ImageSlot[] = [];
  const notOverwritten: Unexplained[] = [];
  for (const d of differences(a, b, a.caps, b.caps)) {
    if (d.what === 'id') slots.push({ addr: d.addr, kind: SlotKind.PROCESS_ID, width: 4, arg: BigInt(d.ident) });
    else if (d.what === 'tid') slots.push({ addr: d.addr, kind: SlotKind.TID, width: 4, arg: 0n });
    else if (d.what === 'text') slots.push({ addr: d.addr, kind: SlotKind.PROCESS_ID_TEXT, width: 8, arg: BigInt(d.ident | (d.capacity << 8)) });
    else {
      const wa = wordAt(a.after, d.addr);
      if (wa === undefined || wa !== wordAt(b.after, d.addr)) notOverwritten.push(d);
    }
  }
  clock.accept(notOverwritten, 'caps', (u) =>
    `${describeAddr(a.caps, u.addr)} differs between two runs of the init (0x${u.va.toString(16)} vs 0x${u.vb.toString(16)}) and the resume does not overwrite it: it depends on something a restore cannot reproduce`);
  return slots;
}

/**
 * The loader's start-up timings where rdtsc cannot be trapped (clock.ts):
 * a third run with A's inputs (runAgain, undefined where rdtsc is trapped),
 * made only when some difference is left over.
 */
class LoaderClock {
  private again: Run | undefined;
  private readonly changing = new Map<'caps' | 'after', Set<bigint>>();

  constructor(private readonly a: Run, private readonly runAgain: (() => Run) | undefined) {}

  accept(unexplained: Unexplained[], when: 'caps' | 'after', detail: (u: Unexplained) => string): void {
    if (!unexplained.length) return;
    const a = this.a;
    const loader = loaderPath(a.maps, a.t.auxv.get(AT.BASE));
    acceptLoaderClockWords(unexplained, this.changingWords(when), a[when], loader, detail);
  }

  private changingWords(when: 'caps' | 'after'): Set<bigint> {
    if (!this.runAgain) return new Set();
    let set = this.changing.get(when);
    if (!set) {
      this.again ??= this.runAgain();
      sameLayout(this.a[when], this.again[when], 'with the same inputs');
      set = changingWords(this.a[when], this.again[when], this.a.t.pid, this.again.t.pid, pageBytes);
      this.changing.set(when, set);
    }
    return set;
  }
}


