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

/** Compiles the runner and the floor program into buildDir (skipped when unchanged). */
export function buildNative(root: string, buildDir: string): Native {
  fs.mkdirSync(buildDir, { recursive: true });
  const cc = process.env.CC || 'cc';
  const version = ccVersion(cc);
  const notes: string[] = [];
  if (!version) {
    notes.push(`no C compiler ("${cc}"): using the Node fallback harness, and no floor row`);
    return { runner: null, floor: null, cc: null, notes };
  }
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
