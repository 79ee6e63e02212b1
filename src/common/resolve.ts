/**
 * Program resolution exactly as the launcher does it (src/restore/launcher.c:
 * resolve, shebang), so that the CLI computes the same key the hot path will.
 *
 *  - A name with a '/' is used as given (relative stays relative: the key
 *    contains the path string the launcher saw).
 *  - Otherwise each PATH entry in order (empty entry = "."; no PATH =
 *    "/bin:/usr/bin" like glibc's execvp); a candidate that is the launcher
 *    itself (same dev/ino: a shim directory, a symlink to bin/cached-exec) is
 *    skipped; the first regular executable file wins.
 *  - Not found: 127, "command not found"; only non-executable candidates: 126.
 */
import * as fs from 'node:fs';
import { CxError } from './errors.js';
import { LAUNCHER } from './package.js';

export interface Resolved {
  /** The name the user gave. */
  name: string;
  /** The path string the launcher uses (and keys on). */
  path: string;
  stat: fs.BigIntStats;
}

function statOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.statSync(p, { bigint: true });
  } catch {
    return null;
  }
}

let selfId: { dev: bigint; ino: bigint } | null | undefined;

function isLauncher(st: fs.BigIntStats, launcher: string): boolean {
  if (launcher !== LAUNCHER) {
    const l = statOrNull(launcher);
    return !!l && l.dev === st.dev && l.ino === st.ino;
  }
  if (selfId === undefined) {
    const l = statOrNull(LAUNCHER);
    selfId = l ? { dev: l.dev, ino: l.ino } : null;
  }
  return !!selfId && selfId.dev === st.dev && selfId.ino === st.ino;
}

function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Resolves `name` like execvp under `env`'s PATH, skipping the launcher. */
export function resolveProgram(name: string, env: NodeJS.ProcessEnv = process.env, launcher = LAUNCHER): Resolved {
  if (name === '') throw new CxError('not-found', ': No such file or directory', { program: name });
  if (name.includes('/')) {
    try {
      return { name, path: name, stat: fs.statSync(name, { bigint: true }) };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new CxError('not-found', `${name}: No such file or directory`, { program: name, path: name, reason: code });
      }
      throw new CxError('not-executable', `${name}: ${code === 'EACCES' ? 'Permission denied' : 'cannot execute'}`,
        { program: name, path: name, reason: code });
    }
  }
  const searchPath = env.PATH ?? '/bin:/usr/bin';
  let sawNonExecutable = false;
  for (const entry of searchPath.split(':')) {
    const candidate = `${entry === '' ? '.' : entry}/${name}`;
    const st = statOrNull(candidate);
    if (!st || isLauncher(st, launcher)) continue;
    if (st.isFile() && executable(candidate)) return { name, path: candidate, stat: st };
    sawNonExecutable = true;
  }
  if (sawNonExecutable) throw new CxError('not-executable', `${name}: Permission denied`, { program: name });
  throw new CxError('not-found', `${name}: command not found`, { program: name });
}

export interface Shebang {
  /** Absolute interpreter path from the #! line. */
  interpreter: string;
  /** The optional single argument (the rest of the line, trimmed), or null. */
  arg: string | null;
  stat: fs.BigIntStats;
}

/**
 * The interpreter the kernel would run for a `#!` script, by the launcher's
 * rules (binfmt_script: line within the first 255 bytes ending in a newline,
 * absolute interpreter that is a regular file and not the launcher). Null when
 * the launcher would leave the file to the kernel.
 */
export function readShebang(file: string, launcher = LAUNCHER): Shebang | null {
  let head: Buffer;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      head = Buffer.alloc(255);
      head = head.subarray(0, fs.readSync(fd, head, 0, 255, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
  if (head.length < 3 || head[0] !== 0x23 || head[1] !== 0x21) return null;
  const nl = head.indexOf(0x0a);
  if (nl < 0) return null;
  // The C side works on the bytes up to the first NUL.
  let bytes = head.subarray(2, nl);
  const nul = bytes.indexOf(0);
  if (nul >= 0) bytes = bytes.subarray(0, nul);
  const line = bytes.toString('utf8');
  const m = /^[ \t]*([^ \t]*)(?:[ \t]+(.*))?$/s.exec(line);
  const interpreter = m?.[1] ?? '';
  const rest = (m?.[2] ?? '').replace(/^[ \t]+/, '').replace(/[ \t]+$/, '');
  if (!interpreter.startsWith('/')) return null;
  const st = statOrNull(interpreter);
  if (!st || !st.isFile() || isLauncher(st, launcher)) return null;
  return { interpreter, arg: rest === '' ? null : rest, stat: st };
}
