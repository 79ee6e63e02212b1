/**
 * --after-init[=FILE] and --preload LIST for the admin commands (--warm,
 * --explain): the adapter words the launcher would use for PROG.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { adapterKind, adapterWords } from '../resume/spec.js';
import { CxError } from '../common/errors.js';
import { readShebang, resolveProgram } from '../common/resolve.js';
import type { Context } from './context.js';

/**
 * A #! script whose line names python (no argument) runs through the python
 * adapter with learned preloads, as the launcher does (after_init.c
 * after_init_python_script): its interpreter and the script as the target.
 */
function pythonScript(program: string, env: NodeJS.ProcessEnv): { interpreter: string; target: string } | null {
  try {
    const r = resolveProgram(program, env);
    const sb = readShebang(r.path);
    if (!sb) return null;
    const target = `script:${path.resolve(r.path)}`;
    if (sb.arg !== null && path.basename(sb.interpreter) === 'env' && adapterKind(sb.arg) === 'python' && !sb.arg.includes('/')) {
      // "#!/usr/bin/env python3": the first python3 on PATH, unless a shim comes first (the launcher's env_lookup).
      for (const dir of (env.PATH ?? '/bin:/usr/bin').split(':')) {
        const cand = path.join(dir || '.', sb.arg);
        if (!fs.existsSync(cand)) continue;
        const py = resolveProgram(sb.arg, env);
        return py.path === cand && path.isAbsolute(cand) ? { interpreter: cand, target } : null;
      }
      return null;
    }
    if (sb.arg !== null || adapterKind(sb.interpreter) !== 'python') return null;
    return { interpreter: sb.interpreter, target };
  } catch {
    return null;
  }
}

/**
 * undefined when no --after-init was given. `program`, when set, is what the
 * image is of (a python #! script's interpreter).
 */
export function afterInitFromOptions(ctx: Context, program: string): { words: string[]; program?: string } | undefined {
  const init = ctx.options.get('--after-init');
  const preload = ctx.options.get('--preload');
  if (init === undefined) {
    if (preload !== undefined) throw new CxError('usage', '--preload needs --after-init', { reason: '--preload' });
    return undefined;
  }
  const kind = adapterKind(program);
  const script = kind === 'generic' && !init && preload === undefined ? pythonScript(program, ctx.env) : null;
  if (script) return { words: adapterWords('python', { learn: script.target }), program: script.interpreter };
  if (kind === 'generic' && (init || preload)) {
    throw new CxError('usage', '--after-init=FILE and --preload need bash or python', { reason: '--after-init' });
  }
  if (preload !== undefined && kind !== 'python') throw new CxError('usage', '--preload needs python', { reason: '--preload' });
  const initFile = init ? path.resolve(init) : undefined;
  if (initFile) assertReadableFile(initFile, init as string);
  return { words: adapterWords(kind, { ...(initFile ? { initFile } : {}), ...(preload ? { preload } : {}) }) };
}

/** The init file must exist before anything is snapshotted: a missing one would only show up as the init's error output. */
function assertReadableFile(file: string, given: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
    fs.accessSync(file, fs.constants.R_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : code === 'EACCES' ? 'is not readable' : `cannot be read (${code})`;
    throw new CxError('io', `--after-init=${given}: the init file ${file} ${why}; nothing was snapshotted`,
      { path: file, reason: code ?? 'io', cause: e });
  }
  if (!st.isFile()) {
    throw new CxError('io', `--after-init=${given}: ${file} is not a regular file; nothing was snapshotted`, { path: file, reason: 'not-a-file' });
  }
}

/** "--after-init[=FILE] [--preload LIST]" as the user would type them, from the adapter words. */
export function afterInitOptionText(words: string[]): string {
  const arg = (flag: string): string | undefined => {
    const i = words.indexOf(flag);
    return i >= 0 ? words[i + 1] : undefined;
  };
  const file = arg('--init');
  const preload = arg('--preload');
  return [file ? `--after-init=${file}` : '--after-init', ...(preload ? [`--preload ${preload}`] : [])].join(' ');
}
