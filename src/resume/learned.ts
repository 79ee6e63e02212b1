/**
 * Learned preloads of the python adapter (`--learn TARGET` in the adapter
 * words): what runs of one script or `-m` module imported, kept in
 * `<cache>/learned/<hash>`, a text file the adapter reads at the init (and
 * every run extends) and the warmer edits when a module's import cannot be
 * snapshotted (shell/cached_exec_resume.py, class _Learned, is the other
 * side of this format):
 *
 *     cached-exec-learned 1
 *     target script:/abs/app.py          (or module:NAME)
 *     script DEV INO SIZE MTIME_NS CTIME_NS   ("script -" for a module)
 *     + NAME ORIGIN                      imported by a run, in import order
 *     - NAME REASON                      dropped: the snapshot refused its import
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hash64 } from '../image/schema.js';

export const LEARNED_MAGIC = 'cached-exec-learned 1';

export interface Learned {
  target: string;
  ident: string;
  plus: { name: string; origin: string }[];
  dropped: Map<string, string>;
}

/** The TARGET of a `--learn TARGET` in adapter words, if any. */
export function learnTarget(words: readonly string[]): string | undefined {
  const i = words.indexOf('--learn');
  return i >= 0 ? words[i + 1] : undefined;
}

/** learned/<this>: the adapter's _learned_name(), hash64 of "TARGET\0realpath(python)". */
export function learnedFileName(target: string, python: string): string {
  let real = python;
  try {
    real = fs.realpathSync(python);
  } catch { /* as python would: the path itself */ }
  return hash64(Buffer.from(`${target}\0${real}`, 'utf8')).toString(16).padStart(16, '0');
}

export function learnedFile(cacheDir: string, target: string, python: string): string {
  return path.join(cacheDir, 'learned', learnedFileName(target, python));
}

export function parseLearned(text: string): Learned | null {
  const lines = text.split('\n');
  if (lines.length < 3 || lines[0] !== LEARNED_MAGIC || !lines[1]?.startsWith('target ') || !lines[2]?.startsWith('script ')) return null;
  const l: Learned = { target: lines[1].slice(7), ident: lines[2].slice(7), plus: [], dropped: new Map() };
  for (const line of lines.slice(3)) {
    const rest = line.slice(2);
    const sp = rest.indexOf(' ');
    const name = sp < 0 ? rest : rest.slice(0, sp);
    const value = sp < 0 ? '' : rest.slice(sp + 1);
    if (!name) continue;
    if (line.startsWith('+ ')) l.plus.push({ name, origin: value });
    else if (line.startsWith('- ')) l.dropped.set(name, value);
  }
  return l;
}

/** The learned file, or null when absent, unreadable or not one (a file of another user's is not read). */
export function readLearned(file: string): Learned | null {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || (process.geteuid && st.uid !== process.geteuid()) || (st.mode & 0o022)) return null;
      return parseLearned(fs.readFileSync(fd, 'utf8'));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
}

/** What the init imports: the learned modules but the dropped ones. */
export function preloadsOf(l: Learned): string[] {
  return l.plus.filter((p) => !l.dropped.has(p.name)).map((p) => p.name);
}

export function formatLearned(l: Learned): string {
  const out = [LEARNED_MAGIC, `target ${l.target}`, `script ${l.ident}`,
    ...l.plus.map((p) => `+ ${p.name} ${p.origin}`),
    ...[...l.dropped].map(([n, r]) => `- ${n} ${r.replace(/[\r\n]+/g, ' ')}`)];
  return `${out.join('\n')}\n`;
}

/** Marks `name` dropped with `reason` (temp file + rename, 0600); false when the file is gone or changed its target. */
export function dropLearned(file: string, name: string, reason: string): boolean {
  const l = readLearned(file);
  if (!l) return false;
  l.dropped.set(name, reason);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, formatLearned(l), { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
    return true;
  } catch {
    fs.rmSync(tmp, { force: true });
    return false;
  }
}
