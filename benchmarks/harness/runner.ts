/**
 * The timing harness: builds benchmarks/runner.c (posix_spawn + wait4,
 * interleaved rounds, per-run nanoseconds and rusage) and the static exit
 * floor with the machine's cc, and runs groups of commands through it. Without
 * a C compiler it falls back to a Node loop with the same discipline
 * (interleaved, shuffled, warmup, per-run samples) but a much higher and
 * noisier per-spawn overhead, which the report then says.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type RowKind = 'cold' | 'restored' | 'static' | 'bindnow' | 'miss' | 'dry' | 'floor' | 'workload' | 'adapter';

export interface Command {
  /** Unique id, e.g. "bash/restored". */
  id: string;
  group: string;
  kind: RowKind;
  label: string;
  path: string;
  argv: string[];
  env: Record<string, string>;
}

export interface Sample {
  round: number;
  ns: number;
  status: number;
  minflt: number;
  majflt: number;
  maxrssKiB: number;
}

export interface Native {
  runner: string | null;
  floor: string | null;
  cc: string | null;
  notes: string[];
}

function ccVersion(cc: string): string | null {
  const r = spawnSync(cc, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? cc) : null;
}

function buildOne(cc: string, src: string, out: string, flags: string[], notes: string[]): string | null {
  const digest = createHash('sha256').update(fs.readFileSync(src)).update(flags.join(' ')).digest('hex');
  const stamp = `${out}.stamp`;
  if (fs.existsSync(out) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === digest) return out;
  const tmp = `${out}.${process.pid}.tmp`;
  const r = spawnSync(cc, [...flags, '-o', tmp, src], { encoding: 'utf8' });
  if (r.status !== 0) {
    notes.push(`could not build ${path.basename(out)}: ${r.stderr.trim().split('\n')[0] ?? ''}`);
    fs.rmSync(tmp, { force: true });
    return null;
  }
  fs.renameSync(tmp, out);
  fs.writeFileSync(stamp, digest);
  return out;
}

/** ELF e_machine of each of Node's architectures: a prebuilt helper must be this machine's. */
const ELF_MACHINE: Record<string, number> = { x64: 62, arm64: 183 };

function elfMachine(file: string): number | null {
  try {
    const b = Buffer.alloc(20);
    const fd = fs.openSync(file, 'r');
    try {
      if (fs.readSync(fd, b, 0, 20, 0) < 20 || b.readUInt32BE(0) !== 0x7f454c46) return null;
    } finally {
      fs.closeSync(fd);
    }
    return b.readUInt16LE(18);
  } catch {
    return null;
  }
}

/**
 * What `buildDir/prebuilt.json` describes: helpers compiled on another machine
 * for this one (the arm64 guest, which has no compiler, gets them from
 * scripts/arm64/lib/cross.mjs). Entry per file name: the sha256 of the source
 * it was built from, the compiler and flags.
 */
interface Prebuilt {
  [file: string]: { source: string; sha256: string; cc: string; flags: string[] };
}

/**
 * Without a compiler: the runner and floor from prebuilt.json, each used only if it is
 * an ELF for this machine built from today's source (else that helper is absent).
 */
function usePrebuilt(root: string, buildDir: string, cc: string): Native {
  const notes: string[] = [];
  let list: Prebuilt = {};
  try {
    list = JSON.parse(fs.readFileSync(path.join(buildDir, 'prebuilt.json'), 'utf8')) as Prebuilt;
  } catch { /* none */ }
  const pick = (name: string, src: string): string | null => {
    const e = list[name];
    const file = path.join(buildDir, name);
    if (!e) return null;
    const sha = createHash('sha256').update(fs.readFileSync(path.join(root, src))).digest('hex');
    if (e.sha256 !== sha) {
      notes.push(`prebuilt ${name} ignored: built from another version of ${src}`);
      return null;
    }
    if (elfMachine(file) !== ELF_MACHINE[process.arch]) {
      notes.push(`prebuilt ${name} ignored: not an ELF program for ${process.arch}`);
      return null;
    }
    return file;
  };
  const runner = pick('runner', 'benchmarks/runner.c');
  const floor = pick('exit-floor', 'benchmarks/exit.c');
  const by = [...new Set(Object.values(list).map((e) => e.cc))].join(', ');
  if (runner || floor) {
    notes.push(`no C compiler ("${cc}"): ${[runner && 'runner', floor && 'exit-floor'].filter(Boolean).join(' and ')} prebuilt (${path.join(path.relative(root, buildDir), 'prebuilt.json')}: ${by})`);
  }
  if (!runner) notes.push(`no C compiler ("${cc}") and no usable prebuilt runner: using the Node fallback harness`);
  if (!floor) notes.push('no floor row (no exit-floor program)');
  return { runner, floor, cc: runner || floor ? `none here; helpers prebuilt by ${by}` : null, notes };
}

/**
 * Compiles the runner and the floor program into buildDir (skipped when unchanged);
 * without a compiler, uses prebuilt ones (usePrebuilt) or the Node fallback.
 */
export function buildNative(root: string, buildDir: string): Native {
  fs.mkdirSync(buildDir, { recursive: true });
  const cc = process.env.CC || 'cc';
  const version = ccVersion(cc);
  const notes: string[] = [];
  if (!version) return usePrebuilt(root, buildDir, cc);
  const runner = buildOne(cc, path.join(root, 'benchmarks', 'runner.c'), path.join(buildDir, 'runner'), ['-O2', '-Wall'], notes);
  const floor = buildOne(cc, path.join(root, 'benchmarks', 'exit.c'), path.join(buildDir, 'exit-floor'), ['-O2', '-nostdlib', '-static'], notes);
  return { runner, floor, cc: version, notes };
}

function writeSpec(file: string, cmds: readonly Command[]): void {
  const parts: string[] = [String(cmds.length)];
  for (const c of cmds) {
    parts.push(c.path, String(c.argv.length), ...c.argv);
    const env = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
    parts.push(String(env.length), ...env);
  }
  for (const p of parts) if (p.includes('\0')) throw new Error(`NUL in benchmark command: ${JSON.stringify(p)}`);
  fs.writeFileSync(file, parts.join('\0') + '\0');
}

/** Runs `rounds` interleaved rounds (after `warmup` unreported ones); samples per command id. */
export function runInterleaved(
  native: Native,
  cmds: readonly Command[],
  rounds: number,
  warmup: number,
  seed: number,
  tmpDir: string,
): Map<string, Sample[]> {
  const out = new Map<string, Sample[]>(cmds.map((c) => [c.id, []]));
  if (native.runner) {
    const spec = path.join(tmpDir, `spec-${seed}.bin`);
    writeSpec(spec, cmds);
    const r = spawnSync(native.runner, [spec, String(rounds), String(warmup), String(seed)], {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`bench runner failed (${r.status}): ${r.stderr}`);
    for (const line of r.stdout.split('\n')) {
      if (!line) continue;
      const [ci, round, ns, status, minflt, majflt, maxrss] = line.split(' ').map(Number);
      const c = cmds[ci as number];
      if (!c) continue;
      out.get(c.id)?.push({
        round: round as number, ns: ns as number, status: status as number,
        minflt: minflt as number, majflt: majflt as number, maxrssKiB: maxrss as number,
      });
    }
    return out;
  }
  // Node fallback: same interleaving and shuffling, spawnSync per run.
  let rng = seed | 1;
  const rand = (n: number): number => {
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    return (rng >>> 0) % n;
  };
  for (let round = -warmup; round < rounds; round++) {
    const order = cmds.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rand(i + 1);
      [order[i], order[j]] = [order[j] as number, order[i] as number];
    }
    for (const i of order) {
      const c = cmds[i] as Command;
      const t0 = process.hrtime.bigint();
      const r = spawnSync(c.path, c.argv.slice(1), { argv0: c.argv[0], env: c.env, stdio: 'ignore' });
      const ns = Number(process.hrtime.bigint() - t0);
      if (round < 0) continue;
      const status = r.status ?? 128;
      out.get(c.id)?.push({ round, ns, status, minflt: NaN, majflt: NaN, maxrssKiB: NaN });
    }
  }
  return out;
}
