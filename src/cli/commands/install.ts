/**
 * --install [DIR] / --uninstall [DIR]: put `cached-exec` on the user's PATH
 * as a symlink DIR/cached-exec -> this package's bin/cached-exec (DIR
 * defaults to ~/.local/bin, which Debian's and most distributions' ~/.profile
 * put on PATH when it exists). The launcher finds its Node half from
 * /proc/self/exe, i.e. through the link, so the checkout stays where it is.
 *
 * Idempotent: a link that already leads to this launcher is left alone; a
 * stale one (a symlink to some other or missing `.../cached-exec`: an older
 * checkout, a moved install) is replaced atomically (temp symlink + rename);
 * anything else at DIR/cached-exec (a file, a directory, a symlink elsewhere)
 * is never touched: an error says so. --uninstall removes only a link to a
 * cached-exec launcher.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CxError, ioError } from '../../common/errors.js';
import { LAUNCHER } from '../../common/package.js';
import type { Context } from '../context.js';
import { printJson } from '../output.js';
import { shimState } from './shims.js';

const NAME = 'cached-exec';

/** DIR: the operand, else ~/.local/bin. */
function installDir(ctx: Context): string {
  const given = ctx.operands[0];
  if (given !== undefined) return path.resolve(given);
  if (!ctx.env.HOME || !path.isAbsolute(ctx.env.HOME)) {
    throw new CxError('usage', '--install needs a DIR when HOME is unset or relative', { command: '--install' });
  }
  return path.join(ctx.env.HOME, '.local', 'bin');
}

function onPath(dir: string, env: NodeJS.ProcessEnv): boolean {
  return (env.PATH ?? '').split(':').some((p) => p !== '' && path.resolve(p) === dir);
}

export function install(ctx: Context): number {
  const dir = installDir(ctx);
  const link = path.join(dir, NAME);
  const state = shimState(link);
  if (state === 'foreign') {
    throw new CxError('io', `${link} exists and is not a link to a cached-exec launcher: not replacing it ` +
      '(remove it yourself, or give another DIR)', { command: '--install', path: link, reason: 'EEXIST' });
  }
  if (state !== 'ours') {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw ioError('cannot create', dir, e, { command: '--install' });
    }
    const tmp = path.join(dir, `.${NAME}.${process.pid}.tmp`);
    try {
      fs.rmSync(tmp, { force: true });
      fs.symlinkSync(LAUNCHER, tmp);
      fs.renameSync(tmp, link);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw ioError('cannot create', link, e, { command: '--install' });
    }
  }
  const inPath = onPath(dir, ctx.env);
  if (ctx.json) {
    printJson(ctx.out, { link, target: LAUNCHER, created: state !== 'ours', replacedStale: state === 'stale', onPath: inPath });
    return 0;
  }
  ctx.out.line(state === 'ours' ? `${link} -> ${LAUNCHER} (already installed)`
    : `${link} -> ${LAUNCHER}${state === 'stale' ? ' (replaced a stale link)' : ''}`);
  if (!inPath) {
    ctx.out.line(`${dir} is not on your PATH: add this line to your shell's rc file (e.g. ~/.bashrc), then start a new shell:`);
    ctx.out.line(`  export PATH="${dir}:$PATH"`);
  }
  return 0;
}

export function uninstall(ctx: Context): number {
  const dir = installDir(ctx);
  const link = path.join(dir, NAME);
  const state = shimState(link);
  if (state === 'foreign') {
    throw new CxError('io', `${link} is not a link to a cached-exec launcher: not removing it`, { command: '--uninstall', path: link });
  }
  if (state !== 'absent') {
    try {
      fs.unlinkSync(link);
    } catch (e) {
      throw ioError('cannot remove', link, e, { command: '--uninstall' });
    }
  }
  if (ctx.json) printJson(ctx.out, { link, removed: state !== 'absent' });
  else ctx.out.line(state === 'absent' ? `${link} was not there` : `removed ${link}`);
  return 0;
}
