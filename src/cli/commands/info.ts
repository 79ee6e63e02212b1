/** --help, --version, --describe-format. */
import { ABI_HASH, CONSTANTS, FORMAT_VERSION, MAGIC, STRUCTS, describeFormat, layout } from '../../image/schema.js';
import type { CommandSpec } from '../args.js';
import type { Context } from '../context.js';
import { hex, printJson } from '../output.js';
import { packageVersion } from '../../common/package.js';

export function version(ctx: Context): number {
  if (ctx.json) {
    printJson(ctx.out, { version: packageVersion(), formatVersion: FORMAT_VERSION, abiHash: hex(ABI_HASH), node: process.version });
  } else {
    ctx.out.line(`cached-exec ${packageVersion()} (image format ${FORMAT_VERSION}, ABI ${hex(ABI_HASH)})`);
  }
  return 0;
}

export function describeFormatCommand(ctx: Context): number {
  if (!ctx.json) {
    ctx.out.line(describeFormat().replace(/\n$/, ''));
    return 0;
  }
  printJson(ctx.out, {
    formatVersion: FORMAT_VERSION,
    magic: hex(MAGIC),
    abiHash: hex(ABI_HASH),
    constants: CONSTANTS.map((g) => ({ prefix: g.prefix, doc: g.doc, values: Object.fromEntries(Object.entries(g.values).map(([k, v]) => [k, Number(v)])) })),
    structs: STRUCTS.map((s) => {
      const l = layout(s);
      return { name: s.name, doc: s.doc, size: l.size, fields: l.fields.map((f) => ({ name: f.name, type: f.type, offset: f.offset, size: f.size, doc: f.doc })) };
    }),
  });
  return 0;
}

export function helpText(specs: readonly CommandSpec[]): string {
  const col = 34;
  const wrap = (text: string, width = 80 - col): string[] => {
    const lines: string[] = [];
    let cur = '';
    for (const w of text.split(' ')) {
      if (cur && cur.length + 1 + w.length > width) {
        lines.push(cur);
        cur = w;
      } else {
        cur = cur ? `${cur} ${w}` : w;
      }
    }
    if (cur) lines.push(cur);
    return lines;
  };
  const cmds = specs.filter((s) => !s.hidden).map((s) => {
    const names = [...(s.aliases ?? []), s.name].join(', ');
    const left = `  ${names}${s.operand ? ` ${s.operand}` : ''}${s.modifiers?.length ? ` [${s.modifiers.join('] [')}]` : ''}`;
    const [first = '', ...rest] = wrap(s.summary);
    const head = left.length < col ? `${left.padEnd(col)}${first}` : `${left}\n${' '.repeat(col)}${first}`;
    return [head, ...rest.map((l) => `${' '.repeat(col)}${l}`)].join('\n');
  });
  return `Usage:
  cached-exec PROG [ARGS...]      run PROG, restored from its image when one exists
  cached-exec -- PROG [ARGS...]   the same, for a PROG whose name starts with '-'
  cached-exec --after-init[=FILE] [--preload MOD,...] PROG [ARGS...]
                                  run PROG resumed after its init (bash: FILE sourced;
                                  python: modules imported), docs/resume-protocol.md
  ln -s /path/to/cached-exec DIR/PROG   a shim: running DIR/PROG runs the real PROG from
                                  further along PATH, restored when possible
  cached-exec OPTION...           administer the cache (below)

Options (all accept --json for machine-readable output where it makes sense):
${cmds.join('\n')}

Environment:
  CACHED_EXEC_DIR           cache directory, an absolute path (default \${XDG_CACHE_HOME:-~/.cache}/cached-exec)
  CACHED_EXEC_DISABLE       set (not 0): every run is cold
  CACHED_EXEC_NO_WARM       set (not 0): a miss starts no background snapshot
  CACHED_EXEC_MAX_AGE       seconds after which an image is re-taken (default 604800; 0 = never)
  CACHED_EXEC_RETAKE_SECONDS  at most one re-take of an image for another environment, or of
                            a stale one, per key in this many seconds (default 60)
  CACHED_EXEC_SYSTEM_DIR    read-only system image layer (root-owned), tried after the user's cache
  CACHED_EXEC_SHIMS_DIR     shim directory of --shims-* and --shell-init
                            (default ~/.local/share/cached-exec/shims)
  CACHED_EXEC_VARY_ENV      post-init images: comma-separated variables that may differ from the
                            snapshot's without selecting another image (applied after the restore)
  CACHED_EXEC_DEBUG_INIT_OUTPUT  set: --warm --after-init shows what the init printed
                            (output during the init is a refusal)
  CACHED_EXEC_PRELOAD_LIMIT internal (the warmer's bisection of learned preloads): the python
                            adapter's init imports only the first N learned modules
  LD_*, GLIBC_TUNABLES, MALLOC_*   present: the run is cold (they change what the loader does)

Exit status of options: 0 success; 1 failure (--warm: some program refused; --explain: the
next run would be cold); 2 bad command line; 126/127 program not executable/not found.
`;
}
