/**
 * npm run bench [-- --quick] [--runs N] [--no-hyperfine] [--no-workloads] [--cache DIR]
 *                 [--out DIR | --update-committed] [--only bash,dash]
 *
 * Start-up of real programs, cold vs restored vs static builds (where
 * installed) vs LD_BIND_NOW=1 cold, side by side in one run: each group is run
 * by the C runner in interleaved, shuffled rounds after warmup rounds, and
 * reported as medians with the run count. Also: the static exit floor, the
 * miss path (launcher present, no image), restore work alone (dry run), image
 * sizes and snapshot times, a many-small-commands workload with and without
 * shims, and the PSS of 20 concurrent instances. Writes
 * latest.{md,svg,json} into build/bench/results/ (ignored by git), or with
 * --update-committed into benchmarks/results/ and the README's performance
 * table (readme-table.ts): committed figures change only on request.
 *
 * What a machine lacks is skipped with one line each (a program that is not
 * installed, a workload whose programs are missing, a compiler: see runner.ts);
 * a group whose image the machine refuses or does not restore is still timed,
 * marked "NOT restored". --runs N fixes every group's round count (an emulated
 * machine: the arm64 guest runs test/arm64/bench.sh with a small N).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseImage } from '../../src/image/format.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { machine } from './machine.js';
import { PROGRAMS, SYSTEM_PATH, resolveOnPath, type ProgramSpec } from './programs.js';
import { writeReports, consoleReport } from './report.js';
import { buildNative, runInterleaved, type Command, type Native, type RowKind } from './runner.js';
import { pairedRatio, summarize, type Ratio } from './stats.js';
import type { Group, ImageInfo, PssResult, Results, Row, Target, Workload } from './types.js';
import { updateReadme } from './readme-table.js';
import { COMMITTED_RESULTS, LOCAL_RESULTS, ROOT } from './root.js';

const LAUNCHER = path.join(ROOT, 'bin', 'cached-exec');

interface Options {
  quick: boolean;
  /** Fixed rounds per group and workload (warmup: a tenth, at least 1), instead of a time budget. */
  runs: number | null;
  workloads: boolean;
  /** The restored rows' cache, kept after the run (else a temp dir, removed). */
  cache: string | null;
  hyperfine: boolean;
  out: string;
  only: string[] | null;
  /** Write benchmarks/results/ and the README's table (a full run only). */
  updateCommitted: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, runs: null, workloads: true, cache: null, hyperfine: true, out: LOCAL_RESULTS, only: null, updateCommitted: false };
  let outGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--no-hyperfine') o.hyperfine = false;
    else if (a === '--no-workloads') o.workloads = false;
    else if (a === '--runs') {
      o.runs = Number(argv[++i]);
      if (!Number.isInteger(o.runs) || o.runs < 1) {
        console.error('bench: --runs needs a whole number >= 1');
        process.exit(2);
      }
    } else if (a === '--cache') o.cache = path.resolve(argv[++i] ?? '');
    else if (a === '--out') {
      o.out = path.resolve(argv[++i] ?? o.out);
      outGiven = true;
    } else if (a === '--update-committed') o.updateCommitted = true;
    else if (a === '--only') o.only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run bench [-- --quick] [--runs N] [--no-hyperfine] [--no-workloads] [--cache DIR]\n' +
        '                 [--out DIR | --update-committed] [--only prog,prog]\n' +
        `  results go to ${path.relative(process.cwd(), LOCAL_RESULTS) || '.'} (ignored by git) unless --out DIR;\n` +
        '  --runs N: N rounds per group and workload (warmup N/10, at least 1) instead of a time budget;\n' +
        '  --cache DIR: the restored rows\' cache (new or empty), kept after the run for inspection;\n' +
        '  --update-committed (a full run: no --quick, no --only) writes benchmarks/results/ and the README table');
      process.exit(0);
    } else {
      console.error(`bench: unknown option ${a}`);
      process.exit(2);
    }
  }
  if (o.updateCommitted) {
    // The committed figures are what the README cites: only a complete, full run may replace them.
    if (o.quick || o.only || outGiven || o.runs || !o.workloads) {
      console.error('bench: --update-committed needs a full run (no --quick, --runs, --no-workloads, --only or --out)');
      process.exit(2);
    }
    o.out = COMMITTED_RESULTS;
  }
  return o;
}

const log = (s: string): void => {
  process.stderr.write(`bench: ${s}\n`);
};

/** Static stand-ins where installed: [path, argv] for the same work as the program's bench command. */
function staticAlternative(spec: ProgramSpec): { label: string; path: string; argv: string[] } | null {
  const bashStatic = resolveOnPath('bash-static');
  const busybox = resolveOnPath('busybox');
  switch (spec.name) {
    case 'bash':
      return bashStatic ? { label: 'bash-static -c true', path: bashStatic, argv: ['bash-static', '-c', 'true'] } : null;
    case 'dash':
      return busybox ? { label: 'busybox sh -c true', path: busybox, argv: ['sh', '-c', 'true'] } : null;
    case 'sed':
    case 'ls':
    case 'cat':
      return busybox ? { label: `busybox ${spec.name} ${spec.benchArgs.join(' ')}`, path: busybox, argv: [spec.name, ...spec.benchArgs] } : null;
    case 'mawk':
    case 'gawk':
      return busybox ? { label: `busybox awk ${spec.benchArgs.join(' ')}`, path: busybox, argv: ['awk', ...spec.benchArgs] } : null;
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------

function warmProgram(name: string, env: Record<string, string>): ImageInfo {
  const t0 = process.hrtime.bigint();
  const w = spawnSync(LAUNCHER, ['--warm', name], { env, encoding: 'utf8', timeout: 120_000 });
  const warmMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const key = spawnSync(LAUNCHER, ['--internal-key', name], { env, encoding: 'utf8' });
  const image = /^[0-9a-f]{16} (.+)$/m.exec(key.stdout ?? '')?.[1];
  const info: ImageInfo = { ok: false, warmMs, bytes: 0, regions: 0, files: 0, detail: '', restores: false };
  if (!image || !fs.existsSync(image)) {
    const lines = `${w.stdout ?? ''}\n${w.stderr ?? ''}`.split('\n').map((l) => l.trim()).filter(Boolean);
    const why = (lines.find((l) => /error|refus|cannot|fail/i.test(l)) ?? lines[lines.length - 1] ?? '').slice(0, 200);
    info.detail = `--warm exit ${w.status}: ${why || 'no image'}`;
    return info;
  }
  info.ok = true;
  info.bytes = fs.statSync(image).size;
  const reported = /, ([\d.]+) ms\)/.exec(w.stdout ?? '');
  if (reported) info.snapshotMs = Number(reported[1]);
  try {
    const p = parseImage(fs.readFileSync(image));
    info.regions = p.model.regions.length;
    info.files = p.model.files.length;
  } catch (e) {
    info.detail = `image unreadable by the TS reader: ${(e as Error).message}`;
  }
  const spec = PROGRAMS.find((p) => p.name === name);
  if (spec) {
    // Up to 3 runs, as test/arm64/restore.sh does: a run whose stack ASLR put near an image
    // region is cold by rule (FAIL_COLLISION), which on arm64 (less randomisation) is
    // several runs in a hundred. Each run is judged by its own maps.
    for (let attempt = 1; attempt <= 3 && !info.restores; attempt++) {
      const r = spawnSync(LAUNCHER, [name, ...spec.mapsArgs], { env, encoding: 'utf8', timeout: 30_000 });
      info.restores = r.status === 0 && (r.stdout ?? '').includes(image);
      if (!info.restores) log(`${name}: maps check ${attempt} of 3: the image is not mapped (a cold run)`);
    }
    if (!info.restores) info.detail ||= 'image present but 3 runs through the launcher did not map it (cold fallback)';
  }
  return info;
}

function cmd(group: string, kind: RowKind, label: string, p: string, argv: string[], env: Record<string, string>): Command {
  return { id: `${group}/${kind}${kind === 'static' ? `:${label}` : ''}`, group, kind, label, path: p, argv, env };
}

/**
 * The launcher's own account of a dry run (stderr: "restore_ns=N regions=R files=F slots=S"):
 * time from the launcher's entry to just before the jump, measured in-process.
 */
function dryReport(image: ImageInfo, dry: Command, n: number): void {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = spawnSync(dry.path, dry.argv.slice(1), { argv0: dry.argv[0], env: dry.env, encoding: 'utf8' });
    const m = /restore_ns=(\d+) regions=(\d+) files=(\d+) slots=(\d+)/.exec(r.stderr ?? '');
    if (!m) return;
    times.push(Number(m[1]) / 1e6);
    image.regions = Number(m[2]);
    image.files = Number(m[3]);
    image.slots = Number(m[4]);
  }
  image.restoreMs = summarize(times);
}

/** One untimed run of each command: exit status check and a duration estimate. */
function probe(c: Command): { ms: number; status: number | null; stdout: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(c.path, c.argv.slice(1), { argv0: c.argv[0], env: c.env, encoding: 'utf8', timeout: 60_000 });
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, status: r.status, stdout: r.stdout ?? '' };
}

function roundsFor(estMs: number, opts: Options): { rounds: number; warmup: number } {
  if (opts.runs) return { rounds: opts.runs, warmup: Math.max(1, Math.round(opts.runs / 10)) };
  const budget = opts.quick ? 1500 : 9000;
  const [lo, hi] = opts.quick ? [15, 300] : [40, 1500];
  const rounds = Math.max(lo, Math.min(hi, Math.round(budget / Math.max(estMs, 0.05))));
  return { rounds, warmup: Math.max(3, Math.round(rounds / 10)) };
}

function rowsFrom(cmds: Command[], samples: Map<string, import('./runner.js').Sample[]>, expect: Map<string, number>): Row[] {
  return cmds.map((c) => {
    const s = samples.get(c.id) ?? [];
    const want = expect.get(c.id) ?? 0;
    return {
      id: c.id,
      kind: c.kind,
      label: c.label,
      command: [c.kind === 'bindnow' ? 'LD_BIND_NOW=1' : '', ...c.argv.map((a) => (/[\s'"]/.test(a) ? `'${a}'` : a))].filter(Boolean).join(' '),
      summary: summarize(s.map((x) => x.ns / 1e6)),
      minflt: summarize(s.map((x) => x.minflt)).median,
      maxrssKiB: summarize(s.map((x) => x.maxrssKiB)).median,
      badRuns: s.filter((x) => x.status !== want).length,
      samples: s,
    };
  });
}

function byRound(r: Row): Map<number, number> {
  return new Map(r.samples.map((s) => [s.round, s.ns]));
}

function runGroup(native: Native, name: string, title: string, cmds: Command[], opts: Options, tmp: string, seed: number,
  expect = new Map<string, number>(), notes = new Map<string, string>()): Group {
  const est = cmds.reduce((a, c) => a + probe(c).ms, 0);
  const { rounds, warmup } = roundsFor(est, opts);
  log(`${title}: ${cmds.length} variants x ${rounds} rounds (+${warmup} warmup)`);
  const samples = runInterleaved(native, cmds, rounds, warmup, seed, tmp);
  const rows = rowsFrom(cmds, samples, expect);
  for (const r of rows) {
    const n = notes.get(r.id);
    if (n) r.note = n;
  }
  const cold = rows.find((r) => r.kind === 'cold' || r.kind === 'floor');
  const vsCold: Record<string, Ratio> = {};
  if (cold) for (const r of rows) if (r !== cold) vsCold[r.id] = pairedRatio(byRound(r), byRound(cold));
  return { name, title, rounds, warmup, rows, vsCold };
}

function hyperfineCheck(g: Group, cmds: Command[], opts: Options, tmp: string): void {
  const picked = cmds.filter((c) => c.kind === 'cold' || c.kind === 'restored');
  if (picked.length < 2) return;
  const runs = opts.runs ?? (opts.quick ? 100 : 500);
  const json = path.join(tmp, `hf-${g.name}.json`);
  const quote = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  // hyperfine -N splits each command like a shell would; argv[0] is the path it execs.
  const lines = picked.map((c) => [c.path, ...c.argv.slice(1)].map(quote).join(' '));
  const env = picked.find((c) => c.kind === 'restored')?.env ?? {};
  const r = spawnSync('hyperfine', ['-N', '--style', 'none', '--warmup', String(Math.round(runs / 10)), '--runs', String(runs),
    '--export-json', json, ...lines], { env: { ...env, PATH: SYSTEM_PATH }, encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0 || !fs.existsSync(json)) {
    log(`hyperfine failed for ${g.name}: ${(r.stderr ?? '').trim().slice(0, 200)}`);
    return;
  }
  const data = JSON.parse(fs.readFileSync(json, 'utf8')) as { results: { median: number; times?: number[] }[] };
  g.hyperfine = data.results.map((res, i) => ({
    label: (picked[i] as Command).kind,
    medianMs: res.median * 1000,
    runs: res.times?.length ?? runs,
  }));
}

// ---------------------------------------------------------------------------
// Workloads

function shimDir(tmp: string, names: string[]): string {
  const d = path.join(tmp, 'shims');
  fs.mkdirSync(d, { recursive: true });
  for (const n of names) {
    const l = path.join(d, n);
    if (!fs.existsSync(l)) fs.symlinkSync(LAUNCHER, l);
  }
  return d;
}

interface WorkloadSpec {
  name: string;
  /** Interpreter name (resolved on PATH) and whether it too runs through its shim. */
  interp: string;
  shimInterp: boolean;
  script: string;
  programs: string[];
  /** Name of a variable that must point at a fresh scratch directory for each run. */
  scratchVar?: string;
}

function workloadSpecs(): WorkloadSpec[] {
  const specs: WorkloadSpec[] = [];
  const small = path.join(ROOT, 'benchmarks', 'workloads', 'small-commands.sh');
  const listed = /^# programs: (.+)$/m.exec(fs.readFileSync(small, 'utf8'))?.[1]?.split(/\s+/).filter(Boolean) ?? [];
  specs.push({ name: 'small-commands.sh (make -j1 style, ~400 execs)', interp: 'bash', shimInterp: true, script: small, programs: listed });
  // The boot demo (examples/boot): rc.sh run by sh with RC_ROOT, the programs run.sh shims.
  const rc = path.join(ROOT, 'examples', 'boot', 'rc.sh');
  const runner = path.join(ROOT, 'examples', 'boot', 'run.sh');
  if (fs.existsSync(rc)) {
    const progs = fs.existsSync(runner) ? /^progs="([^"]+)"/m.exec(fs.readFileSync(runner, 'utf8'))?.[1]?.split(/\s+/) ?? [] : [];
    specs.push({ name: 'examples/boot/rc.sh (boot rc script, run by sh)', interp: 'sh', shimInterp: false, script: rc, programs: progs, scratchVar: 'RC_ROOT' });
  }
  return specs;
}

function workloads(native: Native, opts: Options, tmp: string, env: Record<string, string>, runNotes: string[]): Workload[] {
  const out: Workload[] = [];
  for (const s of workloadSpecs()) {
    const interp = resolveOnPath(s.interp, SYSTEM_PATH, false);
    const absent = [s.interp, ...s.programs].filter((n) => resolveOnPath(n, SYSTEM_PATH, false) === null);
    if (!interp || absent.length) {
      const why = `workload ${s.name.replace(/ \(.*$/, '')} skipped: ${absent.join(', ')} not installed`;
      log(why);
      runNotes.push(why);
      continue;
    }
    const names = [...new Set([...(s.shimInterp ? [s.interp] : []), ...s.programs])].filter((n) => resolveOnPath(n) !== null);
    const shims = shimDir(tmp, names);
    const shimEnv = { ...env, PATH: `${shims}:${SYSTEM_PATH}` };
    const warmT0 = Date.now();
    let warmedOk = 0;
    for (const n of names) if (spawnSync(LAUNCHER, ['--warm', n], { env: shimEnv, stdio: 'ignore', timeout: 120_000 }).status === 0) warmedOk++;
    log(`${s.name}: warmed ${warmedOk}/${names.length} programs for the shim PATH in ${((Date.now() - warmT0) / 1000).toFixed(1)} s`);
    // A fresh scratch directory per run, made and removed by the same wrapper in both variants.
    const argvFor = (interpArgv0: string): string[] => s.scratchVar
      ? ['sh', '-c', `d=$(mktemp -d) && ${s.scratchVar}="$d" "$0" "$1" >/dev/null; st=$?; rm -rf "$d"; exit $st`, interpArgv0, s.script]
      : [interpArgv0, s.script];
    const shInterp = resolveOnPath('sh', SYSTEM_PATH, false) ?? '/bin/sh';
    const plainCmd = s.scratchVar ? cmd('workload', 'cold', 'plain PATH', shInterp, argvFor(interp), env)
      : cmd('workload', 'cold', 'plain PATH', interp, argvFor(s.interp), env);
    const shimInterpPath = s.shimInterp ? path.join(shims, s.interp) : interp;
    const shimCmd = s.scratchVar ? cmd('workload', 'restored', 'shims first on PATH', shInterp, argvFor(shimInterpPath), shimEnv)
      : cmd('workload', 'restored', 'shims first on PATH', shimInterpPath, argvFor(s.interp), shimEnv);
    const cmds = [plainCmd, shimCmd];
    const probes = cmds.map(probe);
    const est = probes.reduce((a, p) => a + p.ms, 0);
    const failed = probes.find((p) => p.status !== 0);
    const rounds = opts.runs ?? (opts.quick ? 5 : Math.max(10, Math.min(40, Math.round(20000 / est))));
    log(`${s.name}: 2 variants x ${rounds} rounds`);
    const samples = runInterleaved(native, cmds, rounds, opts.runs ? 1 : 2, 7, tmp);
    const rows = rowsFrom(cmds, samples, new Map());
    const [cold, shim] = rows as [Row, Row];
    const notes = [
      warmedOk < names.length ? `only ${warmedOk} of ${names.length} programs could be warmed` : `${names.length} programs shimmed and warmed${s.shimInterp ? ` (the interpreter ${s.interp} too)` : `; the interpreter ${s.interp} runs cold in both`}`,
      failed ? `a probe run exited with status ${failed.status}` : '',
    ].filter(Boolean);
    out.push({ name: s.name, rows, ratio: pairedRatio(byRound(shim), byRound(cold)), rounds, note: notes.join('; ') });
  }
  return out;
}

// ---------------------------------------------------------------------------
// PSS of N concurrent instances

function smaps(pid: number): { pss: number; rss: number } {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const get = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? NaN);
    return { pss: get('Pss'), rss: get('Rss') };
  } catch {
    return { pss: NaN, rss: NaN };
  }
}

async function concurrent(n: number, file: string, argv: string[], env: Record<string, string>): Promise<{ pss: number; rss: number; maps: string }> {
  const kids = argv.length ? Array.from({ length: n }, () => spawn(file, argv.slice(1), { argv0: argv[0], env, stdio: ['pipe', 'pipe', 'ignore'] })) : [];
  const ready = kids.map((k) => new Promise<void>((resolve) => {
    let buf = '';
    k.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      if (buf.includes('ready')) resolve();
    });
    k.on('close', () => resolve());
  }));
  await Promise.race([Promise.all(ready), new Promise((r) => setTimeout(r, 20_000))]);
  let pss = 0;
  let rss = 0;
  for (const k of kids) {
    const m = smaps(k.pid ?? -1);
    pss += m.pss;
    rss += m.rss;
  }
  let maps = '';
  try {
    maps = fs.readFileSync(`/proc/${kids[0]?.pid}/maps`, 'utf8');
  } catch { /* gone */ }
  await Promise.all(kids.map((k) => new Promise<void>((resolve) => {
    k.on('close', () => resolve());
    k.stdin?.end();
  })));
  return { pss: pss / n, rss: rss / n, maps };
}

async function pssCheck(env: Record<string, string>, image: ImageInfo | undefined, imagePath: string | null): Promise<PssResult | null> {
  const bash = resolveOnPath('bash');
  if (!bash) return null;
  const n = 20;
  const script = 'echo ready; read x';
  const cold = await concurrent(n, bash, ['bash', '-c', script], env);
  const restored = await concurrent(n, LAUNCHER, ['cached-exec', 'bash', '-c', script], env);
  const restoredOk = !!imagePath && restored.maps.includes(imagePath);
  return {
    instances: n,
    coldKiB: cold.pss,
    restoredKiB: restored.pss,
    coldRssKiB: cold.rss,
    restoredRssKiB: restored.rss,
    restoredOk,
    note: restoredOk ? undefined : `restored instances did not map the image${image?.detail ? ` (${image.detail})` : ''}`,
  };
}

// ---------------------------------------------------------------------------

function targets(groups: Group[], pss: PssResult | null, floorGroup: Group | undefined): Target[] {
  const t: Target[] = [];
  const med = (g: Group | undefined, kind: RowKind): number => g?.rows.find((r) => r.kind === kind)?.summary.median ?? NaN;
  const ratioRow = (name: string, limit: number, label: string): void => {
    const g = groups.find((x) => x.name === name);
    if (!g) {
      t.push({ what: label, limit: `<= ${limit}`, measured: 'not installed', ok: null });
      return;
    }
    const r = g.vsCold[`${name}/restored`];
    const restoredOk = g.image?.restores ?? false;
    const value = r?.ofMedians ?? NaN;
    t.push({
      what: label,
      limit: `<= ${limit}`,
      measured: `${value.toFixed(3)} (${med(g, 'restored').toFixed(3)} / ${med(g, 'cold').toFixed(3)} ms, ${g.rounds} runs each)`,
      ok: restoredOk ? value <= limit : false,
      why: restoredOk ? (value <= limit ? undefined : `over by ${((value / limit - 1) * 100).toFixed(0)}%`) : `no restore happened: ${g.image?.detail || 'not warmed'}`,
    });
  };
  ratioRow('bash', 0.75, 'bash -c true restored/cold');
  ratioRow('dash', 0.6, 'dash -c true restored/cold');
  ratioRow('cmake', 0.3, 'cmake --version restored/cold');
  const bash = groups.find((x) => x.name === 'bash');
  const bs = bash?.rows.find((r) => r.kind === 'static' && r.label.startsWith('bash-static'));
  if (bash && bs) {
    const v = med(bash, 'restored') / bs.summary.median;
    t.push({
      what: 'restored bash vs bash-static',
      limit: '<= 1.1x',
      measured: `${v.toFixed(3)}x (${med(bash, 'restored').toFixed(3)} / ${bs.summary.median.toFixed(3)} ms, ${bash.rounds} runs each)`,
      ok: bash.image?.restores ? v <= 1.1 : false,
      why: bash.image?.restores ? (v <= 1.1 ? undefined : `over by ${((v / 1.1 - 1) * 100).toFixed(0)}%`) : 'no restore happened',
    });
  } else {
    t.push({ what: 'restored bash vs bash-static', limit: '<= 1.1x', measured: 'bash-static not installed', ok: null });
  }
  if (floorGroup) {
    const floor = med(floorGroup, 'floor');
    const miss = med(floorGroup, 'miss');
    const over = miss - floor;
    t.push({
      what: 'miss-path overhead (launcher, no image) vs the static exit floor',
      limit: '<= 1.2x floor',
      measured: `${(over / floor).toFixed(2)}x (overhead ${over.toFixed(3)} ms = ${miss.toFixed(3)} - ${floor.toFixed(3)} ms, ${floorGroup.rounds} runs each)`,
      ok: over / floor <= 1.2,
      why: over / floor <= 1.2 ? undefined : 'the miss path is a second exec (launcher, then program): it costs at least one floor',
    });
  }
  // Restore time alone is judged on gdb (~300 regions); if gdb cannot be restored here, on the
  // restorable program with the most regions, and the row says so.
  const gdbGroup = groups.find((g) => g.name === 'gdb');
  const biggest = groups.filter((g) => g.image?.restores && g.image.restoreMs)
    .sort((a, b) => (b.image?.regions ?? 0) - (a.image?.regions ?? 0))[0];
  const gdb = gdbGroup?.image?.restores ? gdbGroup : biggest;
  if (gdbGroup && gdb !== gdbGroup) {
    t.push({
      what: 'restore time alone, gdb',
      limit: '< 0.5 ms',
      measured: 'gdb not restorable here',
      ok: false,
      why: gdbGroup.image?.detail || 'no image',
    });
  }
  if (gdb?.image?.ok) {
    const rm = gdb.image.restoreMs;
    const work = rm?.median ?? NaN;
    t.push({
      what: `restore time alone, ${gdb.name} (${gdb.image.regions} regions)`,
      limit: '< 0.5 ms',
      measured: rm ? `${work.toFixed(3)} ms (in-process, median of ${rm.n} dry runs; whole dry run ${med(gdb, 'dry').toFixed(3)} ms wall)` : 'dry run gave no timing',
      ok: gdb.image.restores && rm ? work < 0.5 : false,
      why: !gdb.image.restores ? 'no restore happened' : work < 0.5 ? undefined : `over by ${((work / 0.5 - 1) * 100).toFixed(0)}%`,
    });
  }
  if (pss) {
    t.push({
      what: `PSS per instance, ${pss.instances} concurrent bash`,
      limit: 'restored <= cold',
      measured: `${pss.restoredKiB.toFixed(0)} vs ${pss.coldKiB.toFixed(0)} KiB`,
      ok: pss.restoredOk ? pss.restoredKiB <= pss.coldKiB : false,
      why: pss.restoredOk ? undefined : pss.note,
    });
  }
  return t;
}

// ---------------------------------------------------------------------------
// Post-init images (--after-init): bash after its rc files, python3 after heavy imports.

interface PostInitSpec {
  name: string;
  title: string;
  /** The plain cold command a user runs today. */
  cold: string[];
  /** The launcher's arguments before the program's own. */
  launcherArgs: string[];
  program: string;
  args: string[];
  /** Variables for every row of the group (cold, adapter, restored alike). */
  extraEnv?: Record<string, string>;
  /** Learned preloads: argument lists run once through the launcher (cold, learning) before the warm. */
  learnWith?: string[][];
  /** Another spec of the same program took the image already (one image per script). */
  sharesImage?: boolean;
}

/**
 * Python command-line tools through --after-init with learned preloads: the
 * #! scripts in the bin directory of pyenv's newest python that has aws,
 * pip and flask (the issue's machine: 3.11). Without pyenv: no rows (a note says so).
 */
export function pythonToolSpecs(notes: string[]): PostInitSpec[] {
  const root = path.join(os.homedir(), '.pyenv', 'versions');
  let bin: string | null = null;
  try {
    for (const v of fs.readdirSync(root).sort().reverse()) {
      const d = path.join(root, v, 'bin');
      if (['aws', 'pip', 'flask'].every((t) => fs.existsSync(path.join(d, t)))) {
        bin = d;
        break;
      }
    }
  } catch { /* no pyenv */ }
  if (!bin) {
    notes.push('python tool rows (aws, pip, flask with learned preloads) skipped: no ~/.pyenv/versions/*/bin with aws, pip and flask');
    return [];
  }
  const extraEnv = { PIP_DISABLE_PIP_VERSION_CHECK: '1' }; // pip list would ask the network otherwise
  const tool = (t: string, label: string, args: string[], learnWith?: string[][]): PostInitSpec => ({
    name: `py-${t}-${label}-init`, title: `${t} ${args.join(' ')} (${bin}/${t}, learned preloads)`,
    cold: [path.join(bin, t), ...args], launcherArgs: ['--after-init'], program: path.join(bin, t), args, extraEnv,
    ...(learnWith ? { learnWith } : { sharesImage: true }),
  });
  return [
    tool('aws', 'version', ['--version'], [['--version'], ['configure', 'list']]), tool('aws', 'configure', ['configure', 'list']),
    tool('pip', 'version', ['--version'], [['--version'], ['list']]), tool('pip', 'list', ['list']),
    tool('flask', 'version', ['--version'], [['--version'], ['--help']]), tool('flask', 'help', ['--help']),
  ];
}

/** The first python3 whose imports include numpy (pyenv's, often), else the system one with the standard library. */
function pythonForBench(env: Record<string, string>): { exe: string; preload: string } | null {
  const home = os.homedir();
  const candidates = [resolveOnPath('python3')];
  try {
    for (const v of fs.readdirSync(path.join(home, '.pyenv', 'versions')).sort().reverse()) {
      candidates.push(path.join(home, '.pyenv', 'versions', v, 'bin', 'python3'));
    }
  } catch { /* no pyenv */ }
  const stdlib = 'json,decimal,asyncio,re,typing,random,email.mime.multipart,http.client,xml.etree.ElementTree,argparse,logging';
  for (const exe of candidates) {
    if (!exe || !fs.existsSync(exe)) continue;
    if (spawnSync(exe, ['-c', 'import numpy'], { env, timeout: 30_000 }).status === 0) return { exe, preload: `numpy,${stdlib}` };
  }
  const sys = resolveOnPath('python3');
  return sys ? { exe: sys, preload: stdlib } : null;
}

function postInitSpecs(env: Record<string, string>, tmp: string): PostInitSpec[] {
  const out: PostInitSpec[] = [];
  // The real rc file when there is one (root's here runs `pyenv init`), else a stand-in.
  let rc = path.join(os.homedir(), '.bashrc');
  if (!fs.existsSync(rc)) {
    rc = path.join(tmp, 'bashrc');
    fs.writeFileSync(rc, 'for i in $(seq 1 300); do eval "f$i() { echo $i; }"; done\nexport RC_LOADED=1\n');
  }
  if (resolveOnPath('bash')) {
    out.push({
      name: 'bash-init', title: `bash after ${rc.replace(os.homedir(), '~')}`, cold: ['bash', '-c', `. ${rc}; true`],
      launcherArgs: [`--after-init=${rc}`], program: 'bash', args: ['-c', 'true'],
    });
  }
  const py = pythonForBench(env);
  if (py) {
    out.push({
      name: 'python-init', title: `python3 after importing ${py.preload.split(',').slice(0, 3).join(', ')}, ...`,
      cold: [py.exe, '-c', `import ${py.preload}`], launcherArgs: ['--after-init', '--preload', py.preload], program: py.exe, args: ['-c', 'pass'],
    });
  }
  return out;
}

function hitCount(cacheDir: string): number {
  const log = path.join(cacheDir, 'stats', 'runs.log');
  if (!fs.existsSync(log)) return 0;
  // A FAIL_ADAPTER record amends its run's HIT: the python adapter ran it cold after the restore.
  const records = decodeRunRecords(fs.readFileSync(log)).records;
  return records.filter((r) => r.outcome === 'HIT').length - records.filter((r) => r.outcome === 'FAIL_ADAPTER').length;
}

function postInitGroups(native: Native, opts: Options, tmp: string, baseEnv: Record<string, string>, seed: number, notes: string[]): Group[] {
  const groups: Group[] = [];
  const wanted = (name: string): boolean => !opts.only || !opts.only.some((o) => o.endsWith('-init')) || opts.only.includes(name) ||
    (opts.only.includes('py-tools-init') && name.startsWith('py-'));
  let lastWarm: { ok: boolean; out: string } | null = null;
  for (const s of [...postInitSpecs(baseEnv, tmp), ...pythonToolSpecs(notes)].filter((x) => wanted(x.name))) {
    const env = { ...baseEnv, ...s.extraEnv };
    for (const args of s.learnWith ?? []) {
      log(`learning ${s.program} ${args.join(' ')}`);
      spawnSync(LAUNCHER, [...s.launcherArgs, s.program, ...args], { env, timeout: 120_000, stdio: 'ignore' });
    }
    log(`warming ${s.name}`);
    const t0 = process.hrtime.bigint();
    const w: { status: number | null; stdout: string; stderr: string } = s.sharesImage && lastWarm?.ok
      ? { status: 0, stdout: lastWarm.out, stderr: '' }
      : spawnSync(LAUNCHER, ['--warm', ...s.launcherArgs, s.program], { env, encoding: 'utf8', timeout: 900_000 });
    const image: ImageInfo = { ok: w.status === 0, warmMs: Number(process.hrtime.bigint() - t0) / 1e6, bytes: 0, regions: 0, files: 0,
      detail: w.status === 0 ? '' : `${w.stdout}${w.stderr}`.trim().split('\n').pop() ?? '', restores: false };
    const m = /\(([\d.]+ \w+), ([\d.]+) ms\)/.exec(w.stdout ?? '');
    if (m) image.snapshotMs = Number(m[2]);
    const imgPath = /: (\/\S+\.img) \(/.exec(w.stdout ?? '')?.[1];
    if (imgPath && fs.existsSync(imgPath)) {
      image.bytes = fs.statSync(imgPath).size;
      try {
        const p = parseImage(fs.readFileSync(imgPath));
        image.regions = p.model.regions.length;
        image.files = p.model.files.length;
      } catch { /* reported as 0 */ }
    }
    const before = hitCount(env.CACHED_EXEC_DIR as string);
    spawnSync(LAUNCHER, [...s.launcherArgs, s.program, ...s.args], { env, timeout: 60_000 });
    image.restores = hitCount(env.CACHED_EXEC_DIR as string) === before + 1;
    if (!image.restores) image.detail ||= 'a run through the launcher did not restore';
    if (!image.restores) log(`${s.name}: NOT restored (${image.detail}): its restored row is timed as what it is`);
    if (!s.sharesImage) lastWarm = { ok: w.status === 0, out: w.stdout ?? '' };
    const realProgram = s.program.startsWith('/') ? s.program : (resolveOnPath(s.program) as string);
    const cold0 = s.cold[0] as string;
    const cmds: Command[] = [
      cmd(s.name, 'cold', `${s.cold.join(' ').slice(0, 70)} (cold)`, cold0.startsWith('/') ? cold0 : (resolveOnPath(cold0) as string), s.cold, env),
      cmd(s.name, 'adapter', 'the adapter run directly (a miss)', LAUNCHER, ['cached-exec', ...s.launcherArgs, realProgram, ...s.args],
        { ...env, CACHED_EXEC_DISABLE: '1' }),
      cmd(s.name, 'restored', `cached-exec ${s.launcherArgs.join(' ').slice(0, 50)} ${path.basename(s.program)} ${s.args.join(' ')}`, LAUNCHER,
        ['cached-exec', ...s.launcherArgs, s.program, ...s.args], env),
    ];
    const expect = new Map<string, number>();
    const notesFor = new Map<string, string>();
    for (const c of cmds) {
      const p = probe(c);
      expect.set(c.id, p.status ?? 0);
      if (p.status !== 0) notesFor.set(c.id, `exit status ${p.status}`);
    }
    if (!image.restores) notesFor.set(`${s.name}/restored`, `NOT restored (${image.detail}): this row is a cold run`);
    const g = runGroup(native, s.name, s.title, cmds, opts, tmp, seed++, expect, notesFor);
    g.image = image;
    groups.push(g);
  }
  return groups;
}

/** Issue 14's bars: the numpy + stdlib row 15x, the python tools (py-*) and bash after its rc 10x. */
const postInitBar = (name: string): number => (name === 'python-init' ? 15 : 10);

function postInitTargets(groups: Group[]): Target[] {
  return groups.map((g) => {
    const bar = postInitBar(g.name);
    const r = g.vsCold[`${g.name}/restored`];
    const cold = g.rows.find((x) => x.kind === 'cold')?.summary.median ?? NaN;
    const restored = g.rows.find((x) => x.kind === 'restored')?.summary.median ?? NaN;
    const speedup = cold / restored;
    const ok = (g.image?.restores ?? false) && speedup >= bar;
    return {
      what: `${g.title}: cold / restored`,
      limit: `>= ${bar}x`,
      measured: `${speedup.toFixed(1)}x (${cold.toFixed(2)} / ${restored.toFixed(2)} ms, ratio ${(r?.ofMedians ?? NaN).toFixed(3)}, ${g.rounds} runs each)`,
      ok,
      ...(ok ? {} : {
        why: g.image?.restores
          ? `under ${bar}x: the restored run still does the work after the checkpoint (` + (g.name.startsWith('py-')
            ? 'the tool\'s own work after its imports, e.g. reading package metadata, the restore\'s check of every file the image ' +
              'depends on, and copying the pages restored runs write (learned pages, MADV_POPULATE_WRITE; all of them after a full exit, as pip\'s))'
            : 'for python3 mostly the restore itself: mapping the image and copying the pages restored runs write (learned pages, ' +
              'MADV_POPULATE_WRITE), and the exit freeing them; the interpreter\'s teardown is skipped when nothing would finalize)')
          : `no restore happened: ${g.image?.detail}`,
      }),
    };
  });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(LAUNCHER)) {
    console.error(`bench: ${LAUNCHER} is missing: run npm run build first`);
    process.exit(1);
  }
  const native = buildNative(ROOT, path.join(ROOT, 'build', 'bench'));
  const m = machine(ROOT, native.cc);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-bench-'));
  const cacheDir = opts.cache ?? path.join(tmp, 'cache');
  const emptyCache = path.join(tmp, 'empty-cache');
  if (opts.cache && fs.existsSync(opts.cache) && fs.readdirSync(opts.cache).length) {
    console.error(`bench: --cache ${opts.cache} is not empty (the rows must start with no images)`);
    process.exit(2);
  }
  fs.mkdirSync(cacheDir, { mode: 0o700, recursive: true });
  fs.mkdirSync(emptyCache, { mode: 0o700 });
  const env: Record<string, string> = {
    PATH: SYSTEM_PATH,
    HOME: os.homedir(),
    LC_ALL: 'C',
    SHLVL: '1',
    CACHED_EXEC_DIR: cacheDir,
    CACHED_EXEC_NO_WARM: '1',
  };
  const missEnv = { ...env, CACHED_EXEC_DIR: emptyCache };
  const notes: string[] = [...native.notes];
  const harness = native.runner
    ? 'C runner (benchmarks/runner.c): posix_spawn + wait4 per run, CLOCK_MONOTONIC, rounds interleaved and shuffled'
    : 'Node fallback (spawnSync per run, interleaved and shuffled): includes ~1 ms of Node spawn overhead per run';

  const wanted = ['bash', 'dash', 'perl', 'python3', 'sed', 'mawk', 'gawk', 'ls', 'cmake', 'gdb'];
  let specs = PROGRAMS.filter((p) => wanted.includes(p.name) && resolveOnPath(p.name) !== null);
  if (specs.some((p) => p.name === 'mawk')) specs = specs.filter((p) => p.name !== 'gawk');
  if (opts.only) specs = specs.filter((p) => opts.only?.includes(p.name));
  const missing = wanted.filter((n) => !specs.some((p) => p.name === n) && n !== 'gawk');
  for (const n of missing) {
    if (opts.only && !opts.only.includes(n)) continue;
    log(`${n}: not installed here (no dynamically linked ${n} on PATH): group skipped`);
  }
  if (missing.length) notes.push(`not installed or not selected: ${missing.join(', ')}`);

  const groups: Group[] = [];
  let seed = 1;
  let floorGroup: Group | undefined;
  if (native.floor) {
    const floorCmds = [
      cmd('floor', 'floor', 'static exit, no libc (the floor)', native.floor, ['exit-floor'], env),
      cmd('floor', 'miss', 'cached-exec exit-floor, no image (miss path)', LAUNCHER, ['cached-exec', native.floor], missEnv),
    ];
    floorGroup = runGroup(native, 'floor', 'exec floor and miss path', floorCmds, opts, tmp, seed++);
    groups.push(floorGroup);
  }

  let bashImagePath: string | null = null;
  for (const spec of specs) {
    const real = resolveOnPath(spec.name) as string;
    log(`warming ${spec.name}`);
    const image = warmProgram(spec.name, env);
    if (spec.name === 'bash') {
      const key = spawnSync(LAUNCHER, ['--internal-key', 'bash'], { env, encoding: 'utf8' });
      bashImagePath = /^[0-9a-f]{16} (.+)$/m.exec(key.stdout ?? '')?.[1] ?? null;
    }
    if (!image.ok || !image.restores) log(`${spec.name}: NOT restored (${image.detail || 'no image'}): its restored row is timed as what it is`);
    const g = spec.name;
    const args = spec.benchArgs;
    const cmds: Command[] = [
      cmd(g, 'cold', `${spec.label} (cold)`, real, [spec.name, ...args], env),
      cmd(g, 'restored', `cached-exec ${spec.label}`, LAUNCHER, ['cached-exec', spec.name, ...args], env),
      cmd(g, 'bindnow', `LD_BIND_NOW=1 ${spec.label}`, real, [spec.name, ...args], { ...env, LD_BIND_NOW: '1' }),
    ];
    const alt = staticAlternative(spec);
    if (alt) cmds.push(cmd(g, 'static', alt.label, alt.path, alt.argv, env));
    if (spec.name === 'bash' || spec.name === 'dash') {
      cmds.push(cmd(g, 'miss', `cached-exec ${spec.label}, no image (miss)`, LAUNCHER, ['cached-exec', spec.name, ...args], missEnv));
    }
    const notesFor = new Map<string, string>();
    const expect = new Map<string, number>();
    if (image.ok) {
      // Dry run: the whole restore, then exit(0) before the jump. If the restore fails the
      // launcher execs the program cold instead, which the maps listing would reveal.
      const dry = cmd(g, 'dry', `restore only (--internal-restore-dry ${spec.name})`, LAUNCHER, ['cached-exec', '--internal-restore-dry', spec.name, ...args], env);
      const check = probe({ ...dry, argv: ['cached-exec', '--internal-restore-dry', spec.name, ...spec.mapsArgs] });
      if (check.status !== 0 || check.stdout.length > 0) notesFor.set(dry.id, 'restore failed: this row is a cold run');
      cmds.push(dry);
      dryReport(image, dry, opts.runs ?? (opts.quick ? 50 : 300));
    }
    if (!image.restores) notesFor.set(`${g}/restored`, `NOT restored (${image.detail || 'no image'}): this row is the launcher + a cold run`);
    for (const c of cmds) {
      const p = probe(c);
      expect.set(c.id, p.status ?? 0);
      if (p.status !== 0) notesFor.set(c.id, `${notesFor.get(c.id) ?? ''} exit status ${p.status}`.trim());
    }
    const group = runGroup(native, g, spec.label, cmds, opts, tmp, seed++, expect, notesFor);
    group.image = image;
    if (opts.hyperfine && native.runner && ['bash', 'dash', 'cmake'].includes(g) && m.hyperfine !== 'not installed') {
      hyperfineCheck(group, cmds, opts, tmp);
    }
    groups.push(group);
  }

  const postInit = opts.only && !opts.only.some((o) => o.endsWith('-init')) ? [] : postInitGroups(native, opts, tmp, env, seed, notes);
  groups.push(...postInit);

  if (!opts.workloads && !opts.only) notes.push('workloads not run (--no-workloads)');
  const wl = opts.only || !opts.workloads ? [] : workloads(native, opts, tmp, env, notes);
  const bashGroup = groups.find((g) => g.name === 'bash');
  const pss = specs.some((s) => s.name === 'bash') ? await pssCheck(env, bashGroup?.image, bashImagePath) : null;
  const results: Results = {
    machine: m,
    quick: opts.quick,
    harness,
    notes,
    groups,
    workloads: wl,
    pss,
    targets: [...targets(groups, pss, floorGroup), ...postInitTargets(postInit)],
    elapsedS: (Date.now() - t0) / 1000,
  };
  console.log(consoleReport(results));
  const written = writeReports(results, opts.out);
  if (opts.updateCommitted) {
    updateReadme(path.join(ROOT, 'README.md'), results);
    written.push(path.join(ROOT, 'README.md'));
  }
  log(`wrote ${written.map((f) => path.relative(process.cwd(), f)).join(', ')}`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
