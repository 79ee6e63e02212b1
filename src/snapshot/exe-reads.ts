/**
 * Does a program look at /proc/self/exe? A restored process runs in the
 * launcher's process, and /proc/self/exe names the launcher unless the
 * restore can point it at the program (PR_SET_MM_MAP's exe_fd, which needs
 * CAP_CHECKPOINT_RESTORE). perl's $^X, node's process.execPath, libuv's
 * uv_exepath read it; such a program would run the launcher where it means to
 * run itself. The image then carries CX_STATE_READS_EXE and the launcher
 * restores it only where it can set exe_fd, else runs it cold (FAIL_EXE).
 *
 * Decided from the code the program can run: the program and every file its
 * image maps, other than the loader (whose own uses, for $ORIGIN, happen
 * before the entry point, under the snapshot's trace), are searched for the
 * string "/proc/self/exe" or a "/proc/%d/exe"-style format. Each file is
 * read once per process and the answer cached by its identity. A program that
 * builds the path piece by piece, or whose code that reads it is loaded
 * later by dlopen, is not seen: a limit the README states.
 */
import * as fs from 'node:fs';
import type { ImageFile } from '../image/format.js';
import { FileKind } from '../image/schema.js';

/** Bytes read at a time (exported for the test that puts a match across two reads). */
export const CHUNK = 4 << 20;
const SELF = Buffer.from('/proc/self/exe');
const PROC = Buffer.from('/proc/%');
/** What follows "/proc/%" in a format that prints a pid: flags, width, length modifiers, a conversion. */
const PID_FORMAT = /^\/proc\/%[-+ #0-9.]*(hh|h|ll|l|j|z|t)?[diu]\/exe/;
/** Longest match kept across chunk boundaries. */
const OVERLAP = 64;

const cache = new Map<string, string | null>();

const identity = (st: fs.BigIntStats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;

/** The first way `file` names /proc/self/exe ("/proc/self/exe" or the format found), or null. */
export function fileNamesExe(file: string): string | null {
  const fd = fs.openSync(file, 'r');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    const id = identity(st);
    const known = cache.get(id);
    if (known !== undefined) return known;
    const found = scan(fd);
    cache.set(id, found);
    return found;
  } finally {
    fs.closeSync(fd);
  }
}

let scratch: Buffer | undefined;

function scan(fd: number): string | null {
  const buf = (scratch ??= Buffer.alloc(CHUNK + OVERLAP));
  let keep = 0;
  for (let pos = 0; ;) {
    const n = fs.readSync(fd, buf, keep, CHUNK, pos);
    if (n <= 0) return null;
    pos += n;
    const view = buf.subarray(0, keep + n);
    if (view.indexOf(SELF) >= 0) return '/proc/self/exe';
    for (let at = view.indexOf(PROC); at >= 0; at = view.indexOf(PROC, at + 1)) {
      const m = PID_FORMAT.exec(view.toString('latin1', at, Math.min(view.length, at + OVERLAP)));
      if (m) return m[0];
    }
    // The tail may hold the start of a match: carry it over to the next chunk.
    keep = Math.min(OVERLAP, view.length);
    view.copy(buf, 0, view.length - keep);
  }
}

/**
 * Whether an image's code names /proc/self/exe: the program and the files it
 * maps, the loader (`interpreter`, the program's PT_INTERP) left out. Returns
 * the first file found and what it contains.
 */
export function imageNamesExe(files: readonly ImageFile[], interpreter: string | null): { file: string; what: string } | null {
  let loader: fs.BigIntStats | null = null;
  try {
    if (interpreter) loader = fs.statSync(interpreter, { bigint: true });
  } catch { /* no loader to leave out */ }
  for (const f of files) {
    if (f.kind !== FileKind.MAPPED) continue;
    if (loader && f.dev === loader.dev && f.ino === loader.ino) continue;
    let what: string | null;
    try {
      what = fileNamesExe(f.path);
    } catch (e) {
      // Unknown is treated as yes: at worst the program runs cold where exe_fd cannot be set.
      what = `unreadable (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
    }
    if (what) return { file: f.path, what };
  }
  return null;
}
