/**
 * Shims (ccache's masquerade): symlinks to the native launcher named after
 * programs, in a directory put first on PATH. The launcher, invoked through
 * one, runs the program of that name found further along PATH — never a shim:
 * it skips every candidate that is the launcher itself (same dev/ino), so a
 * shim directory twice on PATH, two shim directories, or a program that is a
 * symlink to the launcher cannot loop — restored when an image exists, cold
 * otherwise; a name found nowhere else fails like a shell (127).
 *
 * The shim directory, for every --shims-* command and --shell-init:
 *   - an operand containing '/' (`--shims-install ./shims sed`, or with the
 *     optional marker `--dir DIR`); a program name never contains '/';
 *   - with --system, <CACHED_EXEC_SYSTEM_DIR or /var/lib/cached-exec/system>/shims
 *     for boot scripts (root only; the directory is root-owned, 0755);
 *   - else CACHED_EXEC_SHIMS_DIR;
 *   - else env-paths' data directory: ~/.local/share/cached-exec/shims.
 *
 * --shims-install --auto [N] picks the N programs (default 20) run most often
 * through the launcher. The statistics (stats/runs.log, folded by stats.ts)
 * count runs per key hash only; a hash is turned back into a program by the
 * key stored in its image (key.exePath, the path the launcher found on PATH,
 * e.g. /usr/bin/awk rather than the alternatives target) or, for a program not
 * snapshotted yet, by its queue entry (the launcher writes the program path
 * there on a miss). Runs of keys that have neither (refused programs, misses
 * with background warming off) cannot be named and are not counted. Runs of
 * the same program under different PATHs are added up; a #! script counts for
 * its interpreter, which is what gets restored.
 *
 * Every install probes the program (snapshot/selflocate.ts): a program that
 * finds its installation through argv[0] gets a shim marked self-locating
 * (shims-marker.ts), for which the launcher passes the program's path as
 * argv[0]. Re-running --shims-install re-probes and re-marks existing shims.
 */
import envPaths from 'env-paths';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { foldStats } from '../../cache/stats.js';
import { readImageMeta } from '../../cache/store.js';
import { LAUNCHER } from '../../common/package.js';
import { resolveProgram } from '../../common/resolve.js';
import { CxError, ioError } from '../../common/errors.js';
import {
  AFTERINIT_NAME, PROBES_FILE, SELFPATH_NAME, ensureAfterInitLauncher, ensureSelfpathLauncher, isAfterInit, isMarked, markerText, readProbes,
  recordCurrent, shimTarget, writeProbes,
  type ProbeRecord,
} from './shims-marker.js';
import { printJson, table } from '../output.js';
import type { Context } from '../context.js';

export const DEFAULT_SYSTEM_DIR = '/var/lib/cached-exec/system';
const DEFAULT_AUTO = 20;

/** The default shim directory (no DIR operand) under `env`. */
export function shimsDir(env: NodeJS.ProcessEnv, system = false): string {
  if (system) return path.resolve(env.CACHED_EXEC_SYSTEM_DIR || DEFAULT_SYSTEM_DIR, 'shims');
  if (env.CACHED_EXEC_SHIMS_DIR) return path.resolve(env.CACHED_EXEC_SHIMS_DIR);
  // env-paths' rule, read from `env` (not this process's) so tests and --shell-init agree.
  if (env.XDG_DATA_HOME) return path.resolve(env.XDG_DATA_HOME, 'cached-exec', 'shims');
  if (env.HOME) return path.resolve(env.HOME, '.local', 'share', 'cached-exec', 'shims');
  return path.join(envPaths('cached-exec', { suffix: '' }).data, 'shims');
}

/** Separates the DIR operand (the one containing '/') from the others. */
export function splitDirOperand(ctx: Context): { dir: string | undefined; names: string[] } {
  const dirs = ctx.operands.filter((o) => o.includes('/'));
  const names = ctx.operands.filter((o) => !o.includes('/'));
  if (dirs.length > 1) throw new CxError('usage', `one shim directory at a time, got ${dirs.join(' and ')}`);
  if (ctx.modifiers.has('--dir') && !dirs.length) {
    throw new CxError('usage', '--dir needs a directory path containing a \'/\' (e.g. --dir ./shims)');
  }
  if (dirs.length && ctx.modifiers.has('--system')) {
    throw new CxError('usage', '--system and a shim directory cannot be combined', { path: dirs[0] });
  }
  return { dir: dirs[0] === undefined ? undefined : path.resolve(dirs[0]), names };
}

function target(ctx: Context): { dir: string; names: string[]; system: boolean } {
  const { dir, names } = splitDirOperand(ctx);
  const system = ctx.modifiers.has('--system');
  return { dir: dir ?? shimsDir(ctx.env, system), names, system };
}

function checkName(name: string): void {
  if (!name || name.includes('/') || name === '.' || name === '..' || name.startsWith('-')) {
    throw new CxError('usage', `'${name}' is not a program name`, { program: name });
  }
  // The launcher takes any basename starting with "cached-exec" as its own name (prefix form).
  if (name.startsWith('cached-exec')) {
    throw new CxError('usage', `a shim named '${name}' would be the launcher itself, not a program`, { program: name });
  }
}

const validName = (name: string): boolean => {
  try {
    checkName(name);
    return true;
  } catch {
    return false;
  }
};

/**
 * What is at `file`: one of our shims (a symlink to this launcher), a stale
 * shim (a symlink to some other or missing `.../cached-exec`: an older
 * checkout, a moved install), something else, or nothing.
 */
export type ShimState = 'ours' | 'stale' | 'foreign' | 'absent';

export function shimState(file: string): ShimState {
  let link: string;
  try {
    if (!fs.lstatSync(file).isSymbolicLink()) return 'foreign';
    link = fs.readlinkSync(file);
  } catch {
    return 'absent';
  }
  try {
    const a = fs.statSync(file);
    const b = fs.statSync(LAUNCHER);
    if (a.dev === b.dev && a.ino === b.ino) return 'ours';
  } catch { /* dangling: judged by its target's name */ }
  return ['cached-exec', SELFPATH_NAME, AFTERINIT_NAME].includes(path.basename(link)) ? 'stale' : 'foreign';
}

/** PATH without the shim directory: where the real programs are. */
function pathWithout(dir: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const parts = (env.PATH ?? '').split(':').filter((p) => path.resolve(p || '.') !== dir);
  return { ...env, PATH: parts.join(':') };
}

function realProgram(name: string, dir: string, env: NodeJS.ProcessEnv): string | null {
  try {
    return resolveProgram(name, pathWithout(dir, env)).path;
  } catch {
    return null;
  }
}

export interface ProgramRuns {
  name: string;
  exePath: string;
  runs: number;
}

/** The programs run most often through the launcher (see the module comment). */
export function mostRun(ctx: Context, n: number): ProgramRuns[] {
  const store = ctx.store();
  const usage = foldStats(store).usage;
  const exeOf = new Map<string, string>();
  for (const q of store.listQueue()) if (q.exePath) exeOf.set(q.hash, q.exePath);
  for (const im of store.listImages()) {
    try {
      exeOf.set(im.hash, readImageMeta(im.path).parsed.model.key.exePath);
    } catch { /* damaged image: its queue entry, if any, still names it */ }
  }
  const byExe = new Map<string, number>();
  for (const [hash, u] of Object.entries(usage)) {
    const exe = exeOf.get(hash);
    const runs = u.uses + u.misses + u.fallbacks;
    if (exe && runs > 0) byExe.set(exe, (byExe.get(exe) ?? 0) + runs);
  }
  // Several paths may share a basename (/bin/sed, /usr/bin/sed): one shim, their runs added.
  const byName = new Map<string, ProgramRuns>();
  for (const [exe, runs] of byExe) {
    const name = path.basename(exe);
    if (!validName(name)) continue;
    const prev = byName.get(name);
    if (!prev) byName.set(name, { name, exePath: exe, runs });
    else byName.set(name, { name, exePath: prev.runs >= runs ? prev.exePath : exe, runs: prev.runs + runs });
  }
  return [...byName.values()].sort((a, b) => b.runs - a.runs || a.name.localeCompare(b.name)).slice(0, n);
}

/** The --shell-init command line that puts `dir` on PATH. */
function initHint(ctx: Context, dir: string, system: boolean): string {
  const extra = system ? ' --system' : dir === shimsDir(ctx.env) ? '' : ` --dir '${dir.replace(/'/g, `'\\''`)}'`;
  return `eval "$(cached-exec --shell-init bash${extra})"`;
}

function isRoot(): boolean {
  return (process.geteuid?.() ?? 0) === 0;
}

/** Creates the shim directory; the system one (and any parent it creates) root-owned 0755 whatever the umask, and checked. */
function makeDir(dir: string, system: boolean): void {
  try {
    if (!system) fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    else {
      const missing: string[] = [];
      for (let d = dir; !fs.existsSync(d); d = path.dirname(d)) missing.unshift(d);
      for (const d of missing) {
        fs.mkdirSync(d, { mode: 0o755 });
        fs.chmodSync(d, 0o755);
      }
    }
  } catch (e) {
    throw ioError('create the shim directory', dir, e);
  }
  if (system) {
    const st = fs.statSync(dir);
    if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
      throw new CxError('io', `${dir} must be a directory owned by root and writable by root only ` +
        '(boot scripts put it first on PATH)', { path: dir });
    }
  }
}

function needRoot(system: boolean, command: string): void {
  if (system && !isRoot()) {
    throw new CxError('usage', `${command} --system changes the boot scripts' shim directory: run it as root`, { command });
  }
}

/**
 * Runs the self-locating probe on `program` as a shim named `name` would run
 * it. A probe that cannot run (no ptrace here) decides "not self-locating":
 * argv[0] then reaches the program as the caller passed it, as without shims.
 */
async function probe(name: string, program: string, dir: string, ctx: Context): Promise<ProbeRecord> {
  const st = fs.statSync(program, { bigint: true });
  const base = { program, dev: String(st.dev), ino: String(st.ino), mtimeNs: String(st.mtimeNs) };
  try {
    const { probeSelfLocating } = await import('../../snapshot/selflocate.js');
    const r = probeSelfLocating({ launcher: LAUNCHER, exePath: program, name, env: pathWithout(dir, ctx.env) });
    return { ...base, selfLocating: r.selfLocating, evidence: r.evidence, stop: r.stop, ms: r.ms };
  } catch (e) {
    ctx.out.err(`cached-exec: ${name}: the self-locating probe failed (${(e as Error).message}): argv[0] is passed as given`);
    return { ...base, selfLocating: false, evidence: null, stop: `probe failed: ${(e as Error).message}`, ms: 0 };
  }
}

export async function shimsInstall(ctx: Context): Promise<number> {
  const { dir, names: operands, system } = target(ctx);
  needRoot(system, '--shims-install');
  let names = operands;
  let auto: ProgramRuns[] | undefined;
  if (ctx.modifiers.has('--auto')) {
    if (names.length > 1) throw new CxError('usage', '--auto takes one count N (the programs are chosen from the statistics)');
    const n = names.length ? Number(names[0]) : DEFAULT_AUTO;
    if (!Number.isInteger(n) || n <= 0) throw new CxError('usage', `--auto takes a count, not '${names[0]}'`);
    auto = mostRun(ctx, n);
    names = auto.map((p) => p.name);
    if (!names.length) {
      if (ctx.json) printJson(ctx.out, { dir, shims: [] });
      else ctx.out.line('no statistics to choose from yet: run programs through cached-exec first, or name them');
      return 0;
    }
  } else if (!names.length) {
    throw new CxError('usage', '--shims-install needs PROG... or --auto [N]', { command: '--shims-install' });
  }
  for (const name of names) checkName(name);
  const afterInit = ctx.options.get('--after-init');
  if (afterInit) throw new CxError('usage', '--shims-install --after-init takes no FILE: the shim\'s program runs with its own init (python: learned preloads)');
  makeDir(dir, system);
  const probes = readProbes(dir);
  const done: {
    name: string; shim: string; program: string | null; created: boolean; selfLocating: boolean; afterInit: boolean; probe: ProbeRecord | null;
    runs?: number;
  }[] = [];
  for (const name of names) {
    const shim = path.join(dir, name);
    const state = shimState(shim);
    if (state === 'foreign') throw new CxError('io', `${shim} exists and is not a shim of cached-exec: left alone`, { path: shim });
    const program = realProgram(name, dir, ctx.env);
    const post = afterInit !== undefined;
    // A post-init shim's argv[0] is handled as self-locating's (the adapter checks python's own path): no probe.
    const record = program && !post ? await probe(name, program, dir, ctx) : null;
    if (record) probes[name] = record;
    else delete probes[name];
    const selfLocating = post || (record?.selfLocating ?? false);
    if (post) ensureAfterInitLauncher();
    else if (selfLocating) ensureSelfpathLauncher();
    const changed = state !== 'ours' || isAfterInit(shim) !== post || (!post && isMarked(shim) !== selfLocating);
    if (changed) {
      // Atomic: a temp symlink renamed into place (over a stale or differently marked shim too), so a shell never sees a half shim.
      const tmp = path.join(dir, `.${name}.${process.pid}.tmp`);
      try {
        fs.rmSync(tmp, { force: true });
        fs.symlinkSync(shimTarget(selfLocating, post), tmp);
        fs.renameSync(tmp, shim);
      } catch (e) {
        fs.rmSync(tmp, { force: true });
        throw ioError('create the shim', shim, e);
      }
    }
    const runs = auto?.find((p) => p.name === name)?.runs;
    done.push({ name, shim, program, created: changed, selfLocating, afterInit: post, probe: record, ...(runs === undefined ? {} : { runs }) });
  }
  writeProbes(dir, probes);
  const missing = done.filter((d) => d.program === null);
  if (ctx.json) printJson(ctx.out, { dir, shims: done });
  else {
    for (const d of done) {
      const marker = d.program ? `  [${d.afterInit ? AFTERINIT_TEXT : markerText(d.probe ?? undefined, d.selfLocating)}]` : '';
      ctx.out.line(`${d.name} -> ${d.program ?? '(not found on PATH)'}${d.runs === undefined ? '' : `  (${d.runs} runs)`}${marker}`);
    }
    ctx.out.line(`shims in ${dir}; put it first on PATH: ${initHint(ctx, dir, system)}`);
  }
  for (const d of missing) {
    ctx.out.err(`cached-exec: ${d.name}: not found on PATH (the shim says "command not found" until it is installed)`);
  }
  // A name found nowhere is most likely a typo: said by the status too (the shim is there all the same).
  return missing.length && !auto ? 1 : 0;
}

const AFTERINIT_TEXT = 'post-init: runs as cached-exec --after-init (python #! scripts: learned preloads); argv[0] as self-locating';

function listShims(dir: string): { name: string; shim: string; state: ShimState }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => !n.startsWith('.'))
    .map((name) => ({ name, shim: path.join(dir, name), state: shimState(path.join(dir, name)) }))
    .filter((s) => s.state === 'ours' || s.state === 'stale')
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function shimsRemove(ctx: Context): number {
  const { dir, names: operands, system } = target(ctx);
  needRoot(system, '--shims-remove');
  const names = operands.length ? operands : listShims(dir).map((s) => s.name);
  const removed: string[] = [];
  const kept: string[] = [];
  for (const name of names) {
    checkName(name);
    const shim = path.join(dir, name);
    const state = shimState(shim);
    if (state === 'ours' || state === 'stale') {
      fs.rmSync(shim);
      removed.push(name);
      continue;
    }
    if (state === 'foreign') {
      kept.push(name);
      ctx.out.err(`cached-exec: ${shim}: not a shim of cached-exec, left alone`);
    }
  }
  const probes = readProbes(dir);
  for (const name of removed) delete probes[name];
  try {
    if (fs.existsSync(dir)) writeProbes(dir, probes);
  } catch { /* a record we cannot rewrite only loses the probes' reasons */ }
  // The directory goes when it is left empty (stray temp files from a killed install included).
  try {
    const rest = fs.readdirSync(dir);
    if (rest.every((n) => /^\..+\.\d+\.tmp$/.test(n) || n === PROBES_FILE)) {
      for (const n of rest) fs.rmSync(path.join(dir, n), { force: true });
      fs.rmdirSync(dir);
    }
  } catch { /* absent, or not ours to remove */ }
  if (ctx.json) printJson(ctx.out, { dir, removed, kept });
  else ctx.out.line(`removed ${removed.length} shim(s) from ${dir}`);
  return kept.length ? 1 : 0;
}

export function shimsList(ctx: Context): number {
  const { dir, names } = target(ctx);
  if (names.length) throw new CxError('usage', `--shims-list takes no program names (got '${names[0]}')`, { command: '--shims-list' });
  const probes = readProbes(dir);
  const rows = listShims(dir).map(({ name, shim, state }) => {
    const program = realProgram(name, dir, ctx.env);
    const probe = probes[name];
    return {
      name,
      shim,
      program,
      stale: state === 'stale',
      selfLocating: isMarked(shim),
      afterInit: isAfterInit(shim),
      probe: probe ?? null,
      /** The program changed (or another one is found now) since the probe: --shims-install decides again. */
      probeOutdated: program !== null && !recordCurrent(probe, program),
    };
  });
  const onPath = (ctx.env.PATH ?? '').split(':').map((p) => path.resolve(p || '.'));
  const first = onPath[0] === dir;
  if (ctx.json) {
    printJson(ctx.out, { dir, onPath: onPath.includes(dir), first, shims: rows });
    return 0;
  }
  if (!rows.length) ctx.out.line(`no shims in ${dir}`);
  else {
    const what = (r: (typeof rows)[number]): string =>
      `${r.program ?? '(not found: command not found)'}${r.stale ? '  [stale: points to another cached-exec]' : ''}`;
    const argv0 = (r: (typeof rows)[number]): string => (r.program === null ? '' : r.afterInit ? AFTERINIT_TEXT
      : `${markerText(r.probe ?? undefined, r.selfLocating)}${r.probeOutdated && r.probe ? '; the program changed since: --shims-install probes it again' : ''}`);
    ctx.out.line(table(rows.map((r) => [r.name, what(r), argv0(r)]), ['shim', 'program', 'argv[0]']).join('\n'));
  }
  ctx.out.line(first ? `${dir} is first on PATH`
    : `${dir} is ${onPath.includes(dir) ? 'on PATH but not first' : 'not on PATH'}: ${initHint(ctx, dir, ctx.modifiers.has('--system'))}`);
  return 0;
}
