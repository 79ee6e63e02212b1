#!/usr/bin/env node
/**
 * cached-exec admin commands. The native launcher (bin/cached-exec) execs
 * `node dist/cli/main.js ARGS` when its first argument starts with '-'; this
 * file only parses, dispatches and turns errors into exit statuses. Each
 * concern lives in its own module under commands/.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type CommandSpec } from './args.js';
import { installCapability, removeCapability } from './commands/capability.js';
import { drainQueue } from './commands/drain-queue.js';
import { explain } from './commands/explain.js';
import { describeFormatCommand, helpText, version } from './commands/info.js';
import { inspect } from './commands/inspect.js';
import { install, uninstall } from './commands/install.js';
import { cleanup, clear, list, maxEntries, maxSize } from './commands/manage.js';
import { shellInit } from './commands/shell-init.js';
import { shimsInstall, shimsList, shimsRemove } from './commands/shims.js';
import { showStats, zeroStatsCommand } from './commands/stats.js';
import { warm } from './commands/warm.js';
import { watchCommand } from './commands/watch.js';
import { makeContext, type Command, type Context } from './context.js';
import { CxError } from '../common/errors.js';
import { printJson, stdio, type Out } from './output.js';

interface Entry extends CommandSpec {
  run: Command;
}

export const COMMANDS: readonly Entry[] = [
  { name: '--warm', arity: 'one-or-more', operand: 'PROG...', json: true, run: warm, modifiers: ['--system'],
    options: ['--after-init', '--preload'],
    summary: 'snapshot PROG now and store its image (prints path and size, or why it was refused); ' +
      'with --system (as root) into the read-only system layer CACHED_EXEC_SYSTEM_DIR; ' +
      'with --after-init[=FILE] [--preload MOD,...] a post-init image (docs/resume-protocol.md)' },
  { name: '--explain', arity: 'one', operand: 'PROG', json: true, run: explain, options: ['--after-init', '--preload'],
    summary: 'key, image path, and whether the next run of PROG restores (and if not, why); ' +
      'with --after-init[=FILE] [--preload MOD,...] for the post-init image' },
  { name: '--inspect', arity: 'one', operand: 'IMAGE|KEY|PROG', json: true, run: inspect, modifiers: ['--system'],
    options: ['--after-init', '--preload'],
    summary: 'dump an image: header, key, files, regions, slots, state, vdso; given by its file, its key from --list ' +
      '(or the first digits of it), or a program (the image its next run uses; --after-init[=FILE] [--preload LIST] for the post-init one)' },
  { name: '--show-stats', aliases: ['-s'], arity: 'none', json: true, run: showStats,
    summary: 'hits, misses, cold fallbacks by reason, snapshots, evictions, size and limits' },
  { name: '--zero-stats', aliases: ['-z'], arity: 'none', json: true, run: zeroStatsCommand,
    summary: 'reset the statistics counters' },
  { name: '--list', arity: 'none', json: true, run: list, modifiers: ['--system'],
    summary: 'images with program, size, age and uses, most recently used first' },
  { name: '--cleanup', aliases: ['-c'], arity: 'none', json: true, run: cleanup, modifiers: ['--dry-run', '--system'],
    summary: 'remove stale or damaged images and leftovers, then evict to the limits' },
  { name: '--clear', aliases: ['-C'], arity: 'none', json: true, run: clear, modifiers: ['--system'],
    summary: 'remove every image (statistics and limits stay)' },
  { name: '--max-size', aliases: ['-M'], arity: 'one', operand: 'SIZE', json: true, run: maxSize,
    summary: 'limit the total image size, e.g. 500M, 2G, 1.5GiB (bare number = G; 0 = no limit)' },
  { name: '--max-entries', aliases: ['-F'], arity: 'one', operand: 'COUNT', json: true, run: maxEntries,
    summary: 'limit the number of images (0 = no limit)' },
  { name: '--shims-install', arity: 'any', operand: '[DIR] PROG...', json: true, run: shimsInstall, modifiers: ['--auto', '--system', '--dir'],
    options: ['--after-init'],
    summary: 'symlinks named PROG to the launcher in the shim directory (--auto [N]: the N most-run programs; --after-init: ' +
      'they use post-init images, python #! scripts with learned preloads; ' +
      'DIR, a path with a \'/\', optionally after --dir: another directory than ~/.local/share/cached-exec/shims)' },
  { name: '--shims-remove', arity: 'any', operand: '[DIR] [PROG...]', json: true, run: shimsRemove, modifiers: ['--system', '--dir'],
    summary: 'remove the named shims (all when none is named)' },
  { name: '--shims-list', arity: 'any', operand: '[DIR]', json: true, run: shimsList, modifiers: ['--system', '--dir'],
    summary: 'shims and the programs they run' },
  { name: '--shell-init', arity: 'any', operand: '[SHELL] [DIR]', json: false, run: shellInit, modifiers: ['--system', '--dir'],
    summary: 'print shell code that puts the shim directory first on PATH: eval "$(cached-exec --shell-init bash)"; ' +
      'SHELL is bash (the default), zsh, sh, dash or ksh' },
  { name: '--install', arity: 'optional', operand: '[DIR]', json: true, run: install,
    summary: 'put cached-exec on your PATH: a symlink DIR/cached-exec to this launcher (DIR: ~/.local/bin); ' +
      'idempotent, never replaces a file that is not a link to a cached-exec' },
  { name: '--uninstall', arity: 'optional', operand: '[DIR]', json: true, run: uninstall,
    summary: 'remove that link (only if it is one to a cached-exec)' },
  { name: '--install-capability', arity: 'none', json: true, run: installCapability,
    summary: 'as root: give the launcher cap_checkpoint_restore (permitted only, raised just for the restore) so ' +
      'programs that read /proc/self/exe restore for every user; --remove-capability undoes it' },
  { name: '--remove-capability', arity: 'none', json: true, run: removeCapability,
    summary: 'as root: remove the launcher\'s file capability' },
  { name: '--watch', arity: 'none', json: false, run: watchCommand, modifiers: ['--rewarm'],
    summary: 'daemon: delete images as soon as a library, probed path, PATH entry or package they depend on changes ' +
      '(--rewarm: snapshot them again)' },
  { name: '--describe-format', arity: 'none', json: true, run: describeFormatCommand,
    summary: 'print the image format (generated from the schema)' },
  { name: '--version', aliases: ['-V'], arity: 'none', json: true, run: version, summary: 'print the version' },
  { name: '--help', aliases: ['-h'], arity: 'none', json: false, run: (ctx) => help(ctx), summary: 'print this help' },
  { name: '--drain-queue', arity: 'none', json: true, run: drainQueue, hidden: true,
    summary: 'background warmer: snapshot every queued program, then exit' },
];

function help(ctx: Context): number {
  ctx.out.line(helpText(COMMANDS).trimEnd());
  return 0;
}

/** Runs the CLI for `argv` (without node and script) and returns the exit status. */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, out: Out = stdio): Promise<number> {
  const json = argv.includes('--json');
  try {
    const parsed = parseArgs(argv, COMMANDS);
    const entry = parsed.command as Entry;
    const ctx = makeContext({ out, env, json: parsed.json, operands: parsed.operands, modifiers: parsed.modifiers, options: parsed.options });
    return await entry.run(ctx);
  } catch (e) {
    const err = e instanceof CxError ? e
      : new CxError('internal', `internal error: ${(e as Error)?.stack ?? String(e)}`, { cause: e });
    if (json) printJson(out, { error: err.toJSON() });
    else out.err(err.message);
    return err.exitCode;
  }
}

function isMainModule(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return fs.realpathSync(script) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMainModule()) {
  // stdout may be a pipe closed early (`| head`): that is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
  });
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
