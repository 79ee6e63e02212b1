/**
 * `eval "$(cached-exec --shell-init bash)"` (or zsh, sh): shell code that puts
 * the shim directory first on PATH once. Evaluating it again (a nested shell
 * that re-reads the rc file, `exec bash`, sourcing the rc file by hand) finds
 * the directory already on PATH and changes nothing, so PATH never grows.
 *
 * The code is plain POSIX sh (bash, zsh, dash, ksh and busybox sh run it), it
 * quotes the directory (spaces, quotes, `$` survive), it tolerates `set -u`
 * and an unset PATH (then the shims come before the usual system directories,
 * not alone: the launcher must find the real programs further along), and it
 * makes the shell forget the program locations it hashed before.
 *
 * Uninstall: delete the eval line from the rc file, then
 * `cached-exec --shims-remove` (and `cached-exec --clear` for the images).
 * shell/cached-exec.sh is the same code for users who prefer to source a file.
 */
import * as path from 'node:path';
import { CxError } from '../../common/errors.js';
import type { Context } from '../context.js';
import { shimsDir, splitDirOperand } from './shims.js';

export const SHELLS = ['bash', 'zsh', 'sh', 'dash', 'ksh'] as const;
export type Shell = (typeof SHELLS)[number];

/** Used when PATH is unset or empty: the usual system directories. */
export const FALLBACK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Single-quotes `s` for any POSIX shell. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The snippet `--shell-init SHELL` prints for shim directory `dir` (absolute). */
export function shellInitSnippet(shell: Shell, dir: string): string {
  return [
    '# cached-exec: shim directory first on PATH, once (evaluating this again changes nothing).',
    '# Uninstall: delete the line that evaluates this from your rc file, then run: cached-exec --shims-remove',
    `__cx_shims=${shQuote(dir)}`,
    'case ":${PATH-}:" in',
    '  *":${__cx_shims}:"*) ;;',
    `  *) PATH="\${__cx_shims}:\${PATH:-${FALLBACK_PATH}}"; export PATH ;;`,
    'esac',
    'unset __cx_shims',
    shell === 'zsh' ? 'rehash' : 'hash -r 2>/dev/null || true',
  ].join('\n');
}

function isShell(s: string): s is Shell {
  return (SHELLS as readonly string[]).includes(s);
}

/**
 * `--shell-init [SHELL] [[--dir] DIR]`: SHELL defaults to bash (the code is
 * the same for every shell but zsh's rehash); DIR (an operand with a '/') or
 * --system chooses the shim directory as for the --shims-* commands.
 */
export function shellInit(ctx: Context): number {
  const { dir, names } = splitDirOperand(ctx);
  if (names.length > 1) throw new CxError('usage', `--shell-init takes one SHELL, got '${names.join(' ')}'`, { command: '--shell-init' });
  const shell = names[0] ?? 'bash';
  if (!isShell(shell)) {
    throw new CxError('usage', `--shell-init knows ${SHELLS.join(', ')}, not '${shell}'`, { command: '--shell-init', reason: shell });
  }
  ctx.out.line(shellInitSnippet(shell, path.resolve(dir ?? shimsDir(ctx.env, ctx.modifiers.has('--system')))));
  return 0;
}
