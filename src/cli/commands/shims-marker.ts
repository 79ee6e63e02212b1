/**
 * The self-locating marker of a shim, and why it was set.
 *
 * A shim is a symlink to <pkg>/bin/cached-exec, or to
 * <pkg>/bin/cached-exec-selfpath (a symlink to cached-exec that
 * scripts/build-native.mjs makes) for a program that finds its installation
 * through argv[0] (snapshot/selflocate.ts decides, by running it). The launcher
 * reads the marker from the shim: a caller's bare-name argv[0] that leads
 * through PATH to a marked shim becomes the real program's path, so gcc finds
 * cc1 next to itself rather than next to the launcher; every other program
 * gets argv[0] exactly as the caller passed it.
 *
 * What the probe saw is kept beside the shims in .cached-exec-probes.json
 * (written atomically), so --shims-list can say why; the marker itself is the
 * only thing the launcher reads.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LAUNCHER } from '../../common/package.js';
import { ioError } from '../../common/errors.js';

export const SELFPATH_NAME = 'cached-exec-selfpath';
/** <pkg>/bin/cached-exec-selfpath: the launcher, under the name that marks a shim self-locating. */
export const SELFPATH_LAUNCHER = path.join(path.dirname(LAUNCHER), SELFPATH_NAME);
export const PROBES_FILE = '.cached-exec-probes.json';

export interface ProbeRecord {
  /** The program probed, and its identity then: a changed program may decide otherwise. */
  program: string;
  dev: string;
  ino: string;
  mtimeNs: string;
  selfLocating: boolean;
  /** The path under the decoy installation the program looked at (with the call), when it did. */
  evidence: { syscall: string; path: string } | null;
  /** How the probe run ended. */
  stop: string;
  ms: number;
}

export const AFTERINIT_NAME = 'cached-exec-afterinit';
/**
 * <pkg>/bin/cached-exec-afterinit: the launcher, under the name that makes a
 * shim use post-init images (--shims-install --after-init; the launcher's
 * shim_kind). Such a shim also treats argv[0] as self-locating.
 */
export const AFTERINIT_LAUNCHER = path.join(path.dirname(LAUNCHER), AFTERINIT_NAME);

/** The target a shim for a program with this decision points at. */
export const shimTarget = (selfLocating: boolean, afterInit = false): string =>
  (afterInit ? AFTERINIT_LAUNCHER : selfLocating ? SELFPATH_LAUNCHER : LAUNCHER);

/** Whether an existing shim (a symlink) uses post-init images. */
export function isAfterInit(shim: string): boolean {
  try {
    return path.basename(fs.readlinkSync(shim)) === AFTERINIT_NAME;
  } catch {
    return false;
  }
}

/** Makes <pkg>/bin/cached-exec-afterinit when a build did not. */
export function ensureAfterInitLauncher(): void {
  try {
    if (fs.readlinkSync(AFTERINIT_LAUNCHER) === path.basename(LAUNCHER)) return;
  } catch { /* absent or not a symlink: make it */ }
  const tmp = `${AFTERINIT_LAUNCHER}.${process.pid}.tmp`;
  try {
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(path.basename(LAUNCHER), tmp);
    fs.renameSync(tmp, AFTERINIT_LAUNCHER);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw ioError(`create ${AFTERINIT_NAME} (the launcher's name for post-init shims)`, AFTERINIT_LAUNCHER, e);
  }
}

/** Whether an existing shim (a symlink) carries the marker. */
export function isMarked(shim: string): boolean {
  try {
    return path.basename(fs.readlinkSync(shim)) === SELFPATH_NAME;
  } catch {
    return false;
  }
}

/** Makes <pkg>/bin/cached-exec-selfpath when a build did not (an older checkout): a relative symlink, atomically. */
export function ensureSelfpathLauncher(): void {
  try {
    if (fs.readlinkSync(SELFPATH_LAUNCHER) === path.basename(LAUNCHER)) return;
  } catch { /* absent or not a symlink: make it */ }
  const tmp = `${SELFPATH_LAUNCHER}.${process.pid}.tmp`;
  try {
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync(path.basename(LAUNCHER), tmp);
    fs.renameSync(tmp, SELFPATH_LAUNCHER);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw ioError(`create ${SELFPATH_NAME} (the launcher's name for self-locating programs' shims)`, SELFPATH_LAUNCHER, e);
  }
}

export function readProbes(dir: string): Record<string, ProbeRecord> {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dir, PROBES_FILE), 'utf8')) as { shims?: Record<string, ProbeRecord> };
    return v && typeof v.shims === 'object' && v.shims ? v.shims : {};
  } catch {
    return {};
  }
}

/** Replaces the record file (temp + rename); an empty set removes it. */
export function writeProbes(dir: string, shims: Record<string, ProbeRecord>): void {
  const file = path.join(dir, PROBES_FILE);
  if (!Object.keys(shims).length) {
    fs.rmSync(file, { force: true });
    return;
  }
  const tmp = path.join(dir, `.${PROBES_FILE}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, `${JSON.stringify({ version: 1, shims }, null, 2)}\n`, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw ioError('record the self-locating probes', file, e);
  }
}

/** Whether the record still describes the program at `program` (same file, unchanged). */
export function recordCurrent(r: ProbeRecord | undefined, program: string | null): boolean {
  if (!r || !program || r.program !== program) return false;
  try {
    const st = fs.statSync(program, { bigint: true });
    return String(st.dev) === r.dev && String(st.ino) === r.ino && String(st.mtimeNs) === r.mtimeNs;
  } catch {
    return false;
  }
}

/** The evidence path relative to the decoy installation, e.g. "<install>/lib/gcc/x86_64-linux-gnu/12/specs". */
export function evidenceText(r: ProbeRecord): string {
  if (!r.evidence) return '';
  const m = /\/decoy(\/.*)$/.exec(r.evidence.path);
  return `${r.evidence.syscall}(${m ? `<install>${m[1]}` : r.evidence.path})`;
}

/**
 * The shim a bare name reaches first on `env`'s PATH, if that first hit is a
 * shim of this launcher (what the launcher itself looks at for argv[0]).
 */
export function shimOnPath(name: string, env: NodeJS.ProcessEnv): { shim: string; marked: boolean } | null {
  if (name.includes('/')) return null;
  let self: fs.Stats;
  try {
    self = fs.statSync(LAUNCHER);
  } catch {
    return null;
  }
  for (const dir of (env.PATH ?? '/bin:/usr/bin').split(':')) {
    const cand = path.resolve(dir || '.', name);
    let st: fs.Stats;
    try {
      st = fs.statSync(cand);
    } catch {
      continue;
    }
    if (st.dev !== self.dev || st.ino !== self.ino) return null;
    return { shim: cand, marked: isMarked(cand) };
  }
  return null;
}

/** One line for humans: what the shim does with argv[0], and why. */
export function markerText(r: ProbeRecord | undefined, marked: boolean): string {
  if (marked) {
    return `self-locating: argv[0] becomes the program's path${r?.selfLocating ? ` (probe: ${evidenceText(r)}, around the file its argv[0] led to)` : ''}`;
  }
  if (!r) return 'argv[0] as the caller passed it (not probed)';
  return `argv[0] as the caller passed it (probe: ${r.stop === 'evidence' ? 'no look around its own path' : `no look around its own path before ${r.stop}`})`;
}
