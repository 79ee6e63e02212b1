/**
 * Programs on PATH that are shell scripts standing in for the real program:
 * the shims of version managers (pyenv's `python3` is `#!/usr/bin/env bash`
 * ending in `exec pyenv exec python3 "$@"`). The launcher restores a #!
 * script's interpreter (env, bash), never the program the script goes on to
 * start, so a user who warms `python3` through such a shim caches the wrong
 * thing, and a post-init image of it cannot be taken at all. This module
 * recognises them so that --warm and --explain can say so and name the real
 * program.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readShebang } from '../common/resolve.js';

/** Version managers whose shims are scripts, and how each names the real program. */
const MANAGERS: readonly { name: string; marker: RegExp }[] = [
  { name: 'pyenv', marker: /\bpyenv\b/ },
  { name: 'rbenv', marker: /\brbenv\b/ },
  { name: 'nodenv', marker: /\bnodenv\b/ },
  { name: 'goenv', marker: /\bgoenv\b/ },
  { name: 'asdf', marker: /\basdf\b/ },
];

export interface ScriptShim {
  /** The script the name resolved to. */
  script: string;
  /** Its #! line's interpreter (and argument), e.g. "/usr/bin/env bash". */
  interpreter: string;
  /** The version manager whose shim it is, when recognised. */
  manager: string | null;
  /** A shell command that prints the real program's path, e.g. "pyenv which python3", or null. */
  which: string | null;
}

/** A #! script standing for program `name`; null for an ELF file or a file the launcher would not treat as a script. */
export function scriptShim(file: string, name: string): ScriptShim | null {
  const sb = readShebang(file);
  if (!sb) return null;
  let head = '';
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(4096);
      head = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch { /* the shebang was readable: keep what we have */ }
  const manager = MANAGERS.find((m) => m.marker.test(head))?.name ?? null;
  const base = path.basename(name);
  return {
    script: file,
    interpreter: `${sb.interpreter}${sb.arg ? ` ${sb.arg}` : ''}`,
    manager,
    which: manager ? `${manager} which ${base}` : null,
  };
}

/**
 * One sentence for a refused or useless warm of `name` through shim `s`: what
 * it is and what to run instead. `warmArgs` are the options to repeat
 * (e.g. "--after-init --preload json").
 */
export function shimAdvice(name: string, s: ScriptShim, warmArgs: string): string {
  const what = s.manager ? `${s.manager}'s shell-script shim` : 'a shell script';
  const opts = warmArgs ? `${warmArgs} ` : '';
  const head = `${name} is ${s.script}, ${what} (#!${s.interpreter}), not the program itself: a snapshot would take ` +
    `${path.basename(s.interpreter.split(' ')[0] as string)}, not what the script starts.`;
  if (!s.which) return `${head} Warm the program it starts instead, by its path (cached-exec --warm ${opts}/path/to/it), and run it by that path`;
  const real = `"$(${s.which})"`;
  return `${head} Use the real program: cached-exec --warm ${opts}${real}, and run it by that path (cached-exec ${opts}${real} ARGS)`;
}
