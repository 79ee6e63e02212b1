/**
 * Programs the end-to-end suite and the benchmarks exercise, and how each one
 * can be made to show its own /proc/self/maps.
 *
 * The maps listing is how tests and benchmarks prove a restore really happened
 * without trusting the tool's word: a restored process has its DATA regions
 * mapped MAP_PRIVATE from the image file, so the image path appears in its maps
 * (and `ls -l /proc/self/map_files/` shows it as a link target); a cold process
 * never maps the image. Pure data plus PATH resolution: no dependencies, shared
 * by test/helpers and the benchmark harness (main.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ProgramSpec {
  /** Name as given on the command line (resolved through PATH). */
  name: string;
  /** Arguments that make the program print its own /proc/self/maps (or map_files links). */
  mapsArgs: string[];
  /** A quick, deterministic invocation used for start-up timing. */
  benchArgs: string[];
  /** Label for tables. */
  label: string;
}

/**
 * `bash -c 'cmd'` with one simple command execs cmd in place: the shells end
 * their list with `; true` so the shell itself stays the process whose maps
 * are printed.
 */
export const PROGRAMS: readonly ProgramSpec[] = [
  { name: 'bash', mapsArgs: ['-c', 'cat /proc/$$/maps; true'], benchArgs: ['-c', 'true'], label: 'bash -c true' },
  { name: 'dash', mapsArgs: ['-c', 'cat /proc/$$/maps; true'], benchArgs: ['-c', 'true'], label: 'dash -c true' },
  {
    name: 'perl',
    mapsArgs: ['-e', 'open my $f, "<", "/proc/self/maps" or die "maps: $!"; print <$f>;'],
    benchArgs: ['-e', '1'],
    label: 'perl -e 1',
  },
  {
    name: 'python3',
    mapsArgs: ['-c', 'import sys; sys.stdout.write(open("/proc/self/maps").read())'],
    benchArgs: ['-c', 'pass'],
    label: 'python3 -c pass',
  },
  { name: 'sed', mapsArgs: ['-n', 'p', '/proc/self/maps'], benchArgs: ['q'], label: 'sed q' },
  { name: 'mawk', mapsArgs: ['{ print }', '/proc/self/maps'], benchArgs: ['BEGIN{}'], label: "mawk 'BEGIN{}'" },
  { name: 'gawk', mapsArgs: ['{ print }', '/proc/self/maps'], benchArgs: ['BEGIN{}'], label: "gawk 'BEGIN{}'" },
  { name: 'ls', mapsArgs: ['-l', '/proc/self/map_files/'], benchArgs: ['/'], label: 'ls /' },
  { name: 'cat', mapsArgs: ['/proc/self/maps'], benchArgs: ['/dev/null'], label: 'cat /dev/null' },
  { name: 'cmake', mapsArgs: ['-E', 'env', 'sh', '-c', 'cat /proc/$PPID/maps'], benchArgs: ['--version'], label: 'cmake --version' },
  { name: 'gdb', mapsArgs: ['--batch', '-ex', 'shell cat /proc/$PPID/maps'], benchArgs: ['--batch'], label: 'gdb --batch' },
];

export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function isElfExecutable(file: string): boolean {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || (st.mode & 0o111) === 0) return false;
    const fd = fs.openSync(file, 'r');
    try {
      const b = Buffer.alloc(4);
      fs.readSync(fd, b, 0, 4, 0);
      return b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

/**
 * First executable regular file named `name` on `searchPath`, like execvp,
 * or null. With `elfOnly`, a script found first (a pyenv shim) makes it
 * return null instead of looking further: callers that want the same program
 * as the launcher's PATH lookup must not skip ahead.
 */
export function resolveOnPath(name: string, searchPath = SYSTEM_PATH, elfOnly = true): string | null {
  if (name.includes('/')) return isElfExecutable(name) || !elfOnly ? name : null;
  for (const dir of searchPath.split(':')) {
    const cand = path.join(dir || '.', name);
    let st: fs.Stats;
    try {
      st = fs.statSync(cand);
    } catch {
      continue;
    }
    if (!st.isFile() || (st.mode & 0o111) === 0) continue;
    if (elfOnly && !isElfExecutable(cand)) return null;
    return cand;
  }
  return null;
}

/** The program specs whose program is installed (dynamic ELF on SYSTEM_PATH). */
export function installedPrograms(names?: readonly string[]): ProgramSpec[] {
  return PROGRAMS.filter((p) => (!names || names.includes(p.name)) && resolveOnPath(p.name) !== null);
}

export function programSpec(name: string): ProgramSpec {
  const p = PROGRAMS.find((x) => x.name === name);
  if (!p) throw new Error(`no program spec for ${name}`);
  return p;
}
