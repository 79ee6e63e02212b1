/**
 * Shims (ccache's masquerade): symlinks to the native launcher named after
 * programs, in a directory put first on PATH. The launcher, invoked through
 * one, runs the program of that name found further along PATH — never a shim
 * (it skips every candidate that is the launcher itself) — restored when an
 * image exists, cold otherwise.
 *
 * The shim directory: CACHED_EXEC_SHIMS_DIR, else env-paths' data directory
 * (~/.local/share/cached-exec/shims); with --system, <CACHED_EXEC_SYSTEM_DIR>/shims
 * for boot scripts.
 */
import envPaths from 'env-paths';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { foldStats } from '../../cache/stats.js';
import { readImageMeta } from '../../cache/store.js';
import { LAUNCHER } from '../paths.js';
import { resolveProgram } from '../resolve.js';
import { CliError, ioError } from '../errors.js';
import { printJson, table } from '../output.js';
import type { Context } from '../context.js';

export function shimsDir(env: NodeJS.ProcessEnv, system = false): string {
  if (system) {
    const dir = env.CACHED_EXEC_SYSTEM_DIR;
    if (!dir) throw new CliError('usage', '--system needs CACHED_EXEC_SYSTEM_DIR to name the system directory', { reason: '--system' });
    return path.join(dir, 'shims');
  }
  if (env.CACHED_EXEC_SHIMS_DIR) return env.CACHED_EXEC_SHIMS_DIR;
  // env-paths' rule, read from `env` (not this process's) so tests and --shell-init agree.
  if (env.XDG_DATA_HOME) return path.join(env.XDG_DATA_HOME, 'cached-exec', 'shims');
  if (env.HOME) return path.join(env.HOME, '.local', 'share', 'cached-exec', 'shims');
  return path.join(envPaths('cached-exec', { suffix: '' }).data, 'shims');
}

const dirOf = (ctx: Context): string => shimsDir(ctx.env, ctx.modifiers.has('--system'));

function checkName(name: string): void {
  if (!name || name.includes('/') || name === '.' || name === '..') {
    throw new CliError('usage', `'${name}' is not a program name (no '/')`, { program: name });
  }
  if (name.startsWith('cached-exec')) {
    throw new CliError('usage', `a shim named '${name}' would be the launcher itself`, { program: name });
  }
}

/** Is `file` a symlink whose target is this launcher? */
function isOurShim(file: string): boolean {
  try {
    if (!fs.lstatSync(file).isSymbolicLink()) return false;
    const a = fs.statSync(file);
    const b = fs.statSync(LAUNCHER);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/** PATH without the shim directory: where the real programs are. */
function pathWithout(dir: string, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const parts = (env.PATH ?? '').split(':').filter((p) => path.resolve(p || '.') !== path.resolve(dir));
  return { ...env, PATH: parts.join(':') };
}

/** The programs run most often, from the statistics (images, queued and refused keys). */
function mostRun(ctx: Context, n: number): string[] {
  const store = ctx.store();
  const usage = foldStats(store).usage;
  const programs = new Map<string, number>();
  const add = (exe: string | undefined, key: string): void => {
    if (!exe) return;
    const u = usage[key];
    const runs = (u?.uses ?? 0) + (u?.misses ?? 0) + (u?.fallbacks ?? 0);
    programs.set(exe, (programs.get(exe) ?? 0) + runs);
  };
  for (const im of store.listImages()) {
    try {
      add(readImageMeta(im.path).parsed.model.key.exePath, im.hash);
    } catch {
      /* damaged image: skipped */
    }
  }
  for (const q of store.listQueue()) add(q.exePath, q.hash);
  return [...programs.entries()]
    .filter(([, runs]) => runs > 0)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, n)
    .map(([exe]) => path.basename(exe));
}

export function shimsInstall(ctx: Context): number {
  const dir = dirOf(ctx);
  const auto = ctx.modifiers.has('--auto');
  let names = ctx.operands;
  if (auto) {
    const n = names.length ? Number(names[0]) : 20;
    if (!Number.isInteger(n) || n <= 0) throw new CliError('usage', `--auto takes a count, not '${names[0]}'`);
    names = mostRun(ctx, n);
    if (!names.length) {
      ctx.out.line('no statistics yet: run programs through cached-exec first, or name them');
      return 0;
    }
  } else if (!names.length) {
    throw new CliError('usage', '--shims-install needs PROG... or --auto [N]', { command: '--shims-install' });
  }
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw ioError('create the shim directory', dir, e);
  }
  const done: { name: string; shim: string; program: string | null }[] = [];
  let missing = 0;
  for (const name of names) {
    checkName(name);
    const shim = path.join(dir, name);
    let program: string | null = null;
    try {
      program = resolveProgram(name, pathWithout(dir, ctx.env)).path;
    } catch {
      missing++;
    }
    if (fs.existsSync(shim) || isSymlink(shim)) {
      if (!isOurShim(shim)) throw new CliError('io', `${shim} exists and is not a shim of this launcher: left alone`, { path: shim });
    } else {
      // Atomic: a temp symlink renamed into place, so a shell never sees a half shim.
      const tmp = path.join(dir, `.${name}.${process.pid}.tmp`);
      fs.symlinkSync(LAUNCHER, tmp);
      fs.renameSync(tmp, shim);
    }
    done.push({ name, shim, program });
  }
  if (ctx.json) printJson(ctx.out, { dir, shims: done });
  else {
    for (const d of done) ctx.out.line(`${d.name} -> ${d.program ?? '(not found on PATH: runs as "command not found")'}`);
    ctx.out.line(`shims in ${dir}; put it first on PATH: eval "$(cached-exec --shell-init bash)"`);
  }
  return missing && !auto ? 1 : 0;
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

export function shimsRemove(ctx: Context): number {
  const dir = dirOf(ctx);
  const names = ctx.operands.length ? ctx.operands : listShims(dir).map((s) => s.name);
  const removed: string[] = [];
  for (const name of names) {
    checkName(name);
    const shim = path.join(dir, name);
    if (!isOurShim(shim)) {
      if (ctx.operands.length) ctx.out.err(`cached-exec: ${shim}: not a shim of this launcher, left alone`);
      continue;
    }
    fs.rmSync(shim);
    removed.push(name);
  }
  if (ctx.json) printJson(ctx.out, { dir, removed });
  else ctx.out.line(`removed ${removed.length} shim(s) from ${dir}`);
  return 0;
}

function listShims(dir: string): { name: string; shim: string }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => !n.startsWith('.')).map((name) => ({ name, shim: path.join(dir, name) }))
    .filter((s) => isOurShim(s.shim)).sort((a, b) => a.name.localeCompare(b.name));
}

export function shimsList(ctx: Context): number {
  const dir = dirOf(ctx);
  const env = pathWithout(dir, ctx.env);
  const rows = listShims(dir).map(({ name, shim }) => {
    let program: string | null = null;
    try {
      program = resolveProgram(name, env).path;
    } catch {
      /* shown as not found */
    }
    return { name, shim, program };
  });
  const onPath = (ctx.env.PATH ?? '').split(':').map((p) => path.resolve(p || '.'));
  const first = onPath[0] === path.resolve(dir);
  if (ctx.json) {
    printJson(ctx.out, { dir, onPath: onPath.includes(path.resolve(dir)), first, shims: rows });
    return 0;
  }
  if (!rows.length) ctx.out.line(`no shims in ${dir}`);
  else ctx.out.line(table(rows.map((r) => [r.name, r.program ?? '(not found)']), ['shim', 'runs']).join('\n'));
  ctx.out.line(first ? `${dir} is first on PATH` : `${dir} is not first on PATH: eval "$(cached-exec --shell-init bash)"`);
  return 0;
}

/**
 * `eval "$(cached-exec --shell-init bash)"`: puts the shim directory first on
 * PATH once (evaluating it again changes nothing) and makes the shell forget
 * programs it already hashed. Uninstall: remove the line from the rc file,
 * then `cached-exec --shims-remove`.
 */
export function shellInit(ctx: Context): number {
  const shell = ctx.operands[0] ?? 'sh';
  if (!['bash', 'zsh', 'sh', 'dash', 'ksh'].includes(shell)) {
    throw new CliError('usage', `--shell-init knows bash, zsh and sh, not '${shell}'`, { reason: shell });
  }
  const dir = dirOf(ctx);
  const q = `'${dir.replace(/'/g, `'\\''`)}'`;
  const lines = [
    `# cached-exec: shims first on PATH (idempotent). Uninstall: delete this line from your rc file.`,
    `__cx_shims=${q}`,
    `case ":\${PATH}:" in *":\${__cx_shims}:"*) ;; *) PATH="\${__cx_shims}\${PATH:+:\${PATH}}"; export PATH ;; esac`,
    `unset __cx_shims`,
    shell === 'zsh' ? 'rehash' : 'hash -r 2>/dev/null || true',
  ];
  ctx.out.line(lines.join('\n'));
  return 0;
}
