/**
 * Shared helpers for the end-to-end suites: run the real launcher
 * (bin/cached-exec) cold and restored, warm programs, find the image the
 * launcher would use, and tell from /proc/PID/maps whether a process was
 * really restored. No mocks: every helper spawns real processes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SYSTEM_PATH } from '../../benchmarks/harness/programs.js';

export { SYSTEM_PATH, PROGRAMS, installedPrograms, programSpec, resolveOnPath } from '../../benchmarks/harness/programs.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const LAUNCHER = path.join(ROOT, 'bin', 'cached-exec');

export type Env = Record<string, string>;

// ---------------------------------------------------------------------------
// Temporary directories

/** A fresh private directory (mode 0700, like the real cache dir). */
export function tmpDir(prefix = 'cx-e2e-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A fresh cache directory for one test file; remove it with `removeDir`. */
export function tmpCacheDir(): string {
  const d = tmpDir('cx-cache-');
  fs.chmodSync(d, 0o700);
  return d;
}

export function removeDir(d: string | undefined): void {
  if (d) fs.rmSync(d, { recursive: true, force: true });
}

/**
 * The environment every run of a suite uses unless it says otherwise: a fixed
 * system PATH (the key covers PATH, so warm and run must agree), C locale for
 * stable messages, and the suite's own cache directory. Nothing from the test
 * runner's environment leaks in (no LD_*, no vitest variables), and misses
 * start no background warmer (CACHED_EXEC_NO_WARM).
 */
export function baseEnv(cacheDir: string, extra: Env = {}): Env {
  return {
    PATH: SYSTEM_PATH,
    HOME: os.homedir(),
    LC_ALL: 'C',
    SHLVL: '1',
    CACHED_EXEC_DIR: cacheDir,
    // Suites warm explicitly; no detached background warmer may race them.
    CACHED_EXEC_NO_WARM: '1',
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// Running processes

export interface RunResult {
  stdout: Buffer;
  stderr: Buffer;
  status: number | null;
  signal: NodeJS.Signals | null;
  /** pid of the process the harness spawned (the program's pid, if it is the same process). */
  pid: number;
  ms: number;
  timedOut: boolean;
}

export interface RunOptions {
  env: Env;
  /** Written to stdin (a socketpair), then closed. Without it and holdStdin, stdin is /dev/null. */
  input?: string | Buffer;
  /** Keep stdin open (a pipe) until the process exits: for programs that block on it. */
  holdStdin?: boolean;
  /** argv[0] the process gets (default: the file name as given). */
  argv0?: string;
  cwd?: string;
  timeoutMs?: number;
  /** Called once with the child after spawn, e.g. to send it a signal. */
  onSpawn?: (child: ChildProcess) => void;
  /** Called with the stdout seen so far after each chunk. */
  onStdout?: (soFar: string, child: ChildProcess) => void;
}

export function run(file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(file, args, {
      env: opts.env,
      argv0: opts.argv0,
      cwd: opts.cwd,
      // stdin: /dev/null unless the case feeds or holds it. (Node's 'pipe' is a
      // socketpair, and Debian's bash sources ~/.bashrc when stdin is a socket
      // and SHLVL is unset: baseEnv sets SHLVL for that reason.)
      stdio: [opts.input !== undefined || opts.holdStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 20_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.stdin?.on('error', () => { /* EPIPE when the program does not read its input */ });
    child.stdout?.on('data', (c: Buffer) => {
      out.push(c);
      opts.onStdout?.(Buffer.concat(out).toString('utf8'), child);
    });
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err),
        status,
        signal,
        pid: child.pid ?? -1,
        ms: Number(process.hrtime.bigint() - t0) / 1e6,
        timedOut,
      });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else if (opts.holdStdin) { /* the caller ends it */ }
    opts.onSpawn?.(child);
  });
}

/** `CACHED_EXEC_DISABLE=1 ./bin/cached-exec PROG ARGS`: the reference run. */
export function runCold(prog: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  return run(LAUNCHER, [prog, ...args], { ...opts, env: { ...opts.env, CACHED_EXEC_DISABLE: '1' } });
}

/** `./bin/cached-exec PROG ARGS`: restored when an image exists. */
export function runRestored(prog: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const env = { ...opts.env };
  delete env.CACHED_EXEC_DISABLE;
  return run(LAUNCHER, [prog, ...args], { ...opts, env });
}

/** What must be identical between a cold and a restored run. */
export interface Observable {
  stdout: string;
  stderr: string;
  status: number | null;
  signal: NodeJS.Signals | null;
}

export type Normalize = (text: string, r: RunResult) => string;

/** Drops the CACHED_EXEC_DISABLE=1 line a cold run's environment listing shows. */
export const dropDisableVar: Normalize = (t) =>
  t.split('\n').filter((l) => !l.includes('CACHED_EXEC_DISABLE')).join('\n');

/** Replaces the process's own pid (as the harness saw it) by <PID>. */
export const maskPid: Normalize = (t, r) => t.split(String(r.pid)).join('<PID>');

export function observable(r: RunResult, ...norm: Normalize[]): Observable {
  let stdout = r.stdout.toString('utf8');
  let stderr = r.stderr.toString('utf8');
  for (const n of norm) {
    stdout = n(stdout, r);
    stderr = n(stderr, r);
  }
  return { stdout, stderr, status: r.status, signal: r.signal };
}

// ---------------------------------------------------------------------------
// Images

export interface KeyInfo {
  hash: string;
  image: string;
}

/** The image path the launcher itself computes for PROG under `env` (`--internal-key`). */
export function launcherKey(prog: string, env: Env): KeyInfo | null {
  const r = spawnSync(LAUNCHER, ['--internal-key', prog], { env, encoding: 'utf8' });
  if (r.status !== 0) return null;
  const m = /^([0-9a-f]{16}) (.+)\n?$/.exec(r.stdout);
  return m ? { hash: m[1] as string, image: m[2] as string } : null;
}

export interface WarmResult {
  prog: string;
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** The image path the launcher will look for. */
  image: string | null;
  /** Whether that image exists after warming. */
  exists: boolean;
}

/** `./bin/cached-exec --warm PROG` under `env`, then checks the launcher's image path. */
export function warm(prog: string, env: Env): Promise<WarmResult> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(LAUNCHER, ['--warm', prog], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      const key = launcherKey(prog, env);
      resolve({
        prog,
        status,
        stdout,
        stderr,
        ms: Date.now() - t0,
        image: key?.image ?? null,
        exists: key ? fs.existsSync(key.image) : false,
      });
    });
  });
}

/** Warms several programs, two at a time (the machine has two cores). */
export async function warmAll(progs: readonly string[], env: Env): Promise<Map<string, WarmResult>> {
  const out = new Map<string, WarmResult>();
  const queue = [...progs];
  const worker = async (): Promise<void> => {
    for (let p = queue.shift(); p !== undefined; p = queue.shift()) out.set(p, await warm(p, env));
  };
  await Promise.all([worker(), worker()]);
  return out;
}

/** Explains a failed warm in an assertion message. */
export function describeWarm(w: WarmResult | undefined): string {
  if (!w) return 'not warmed';
  return `--warm ${w.prog}: exit ${w.status}, image ${w.image ?? '(no key)'} ${w.exists ? 'exists' : 'missing'}; ` +
    `stdout: ${w.stdout.trim().slice(0, 300)} stderr: ${w.stderr.trim().slice(0, 300)}`;
}

/** True when a maps (or map_files) listing shows the image file mapped. */
export function mapsShowImage(listing: string, image: string): boolean {
  return listing.split('\n').some((l) => l.trimEnd().endsWith(image) || l.includes(` ${image}`));
}

/** /proc/PID/maps of a live process, or '' once it is gone. */
export function readMaps(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------------------
// Native fixtures

/** Compiles C with the machine's cc; throws with the compiler's message on failure. */
export function cc(args: readonly string[], cwd?: string): void {
  const r = spawnSync(process.env.CC || 'cc', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc ${args.join(' ')} failed:\n${r.stderr}${r.stdout}`);
}

export function haveCc(): boolean {
  return spawnSync(process.env.CC || 'cc', ['--version']).status === 0;
}

/** Scheduler state letter of a process from /proc/PID/stat ('' once gone). */
export function procState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

/**
 * Sends `sig` once the process sleeps in a syscall (state S), so a signal test
 * hits the program in the same place every time, cold or restored.
 */
export async function signalWhenBlocked(child: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  const pid = child.pid ?? -1;
  await waitFor(() => procState(pid) === 'S', 5000);
  child.kill(sig);
}

/** Waits until `pred` is true or `ms` passed. */
export async function waitFor(pred: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return pred();
}

// ---------------------------------------------------------------------------
// A private program and library whose behaviour tests change (invalidation)

/** Builds `dir`/libval.so whose value() returns `value`, renamed into place as a package manager does (a new inode). */
export function buildValueLib(work: string, dir: string, value: number): void {
  const src = path.join(work, `val${value}.c`);
  fs.writeFileSync(src, `int value(void) { return ${value}; }\n`);
  const tmp = path.join(dir, '.libval.so.tmp');
  cc(['-shared', '-fPIC', '-o', tmp, src]);
  fs.renameSync(tmp, path.join(dir, 'libval.so'));
}

/**
 * Builds `work`/prog, linked against libval.so from `linkDir` and found at run
 * time through `rpath` (DT_RPATH, searched in order): prints "value N", then
 * its own maps listing (so a test sees whether it was restored).
 */
export function buildValueProgram(work: string, linkDir: string, rpath: readonly string[]): string {
  const main = path.join(work, 'main.c');
  fs.writeFileSync(main, `#include <stdio.h>
int value(void);
int main(void) {
  char line[512]; FILE *m = fopen("/proc/self/maps", "r");
  printf("value %d\\n", value());
  while (m && fgets(line, sizeof line, m)) fputs(line, stdout);
  return 0;
}
`);
  const prog = path.join(work, 'prog');
  cc(['-o', prog, main, `-L${linkDir}`, '-lval', `-Wl,-rpath,${rpath.join(':')}`, '-Wl,--disable-new-dtags']);
  return prog;
}
