/**
 * Clock reads through the vdso before the entry point (src/snapshot/vdso-clock.ts),
 * end to end with the real launcher:
 *  - gdb and the glib programs (gio, gdbus, gapplication), whose glib keeps
 *    the time its slice allocator started (`g_get_real_time() / 1000`, 4
 *    bytes), restore with output, stderr and exit status identical to cold;
 *    one execve (strace), the image mapped (/proc/PID/maps), and the kept
 *    word holds this run's time, not the snapshot's;
 *  - private libraries whose constructors keep a reading: verbatim copies
 *    (ms, s, timespec, timeval, realtime and monotonic, 4 and 8 bytes) are
 *    restored with the restoring process's own time (so a restored run prints
 *    what a cold one prints); a value computed from the time (a seed, a
 *    duration), or a process CPU clock, is refused and the program runs cold;
 *    a reading that left no trace restores;
 *  - the same as an unprivileged user.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import {
  LAUNCHER, baseEnv, cc, haveCc, mapsShowImage, observable, procState, readMaps, removeDir, resolveOnPath, runCold, runRestored,
  tmpCacheDir, tmpDir, waitFor, type Env, type RunResult,
} from '../helpers/cx.js';
import { NOBODY, NOGROUP, canSwitchUser, ownedDir, runAs, userEnv, userPackage } from '../helpers/users.js';

const work = tmpDir('cx-vdso-clock-');
const cache = tmpCacheDir();
const env = baseEnv(cache);
afterAll(() => {
  removeDir(work);
  removeDir(cache);
});

function cx(args: string[], e: Env = env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LAUNCHER, args, { env: e, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function lastOutcome(dir: string): string {
  const log = path.join(dir, 'stats', 'runs.log');
  return fs.existsSync(log) ? String(decodeRunRecords(fs.readFileSync(log)).records.at(-1)?.outcome ?? 'none') : 'none';
}

/** The image path the launcher uses for PROG. */
function imageOf(prog: string, e: Env = env): string {
  const r = spawnSync(LAUNCHER, ['--internal-key', prog], { env: e, encoding: 'utf8' });
  return r.stdout.trim().split(' ')[1] ?? '';
}

/** The CLOCK slots `--inspect` lists: address and width. */
function clockSlots(image: string): { addr: bigint; width: number }[] {
  return cx(['--inspect', image]).stdout.split('\n')
    .map((l) => /^\s*\d+\s+0x([0-9a-f]+)\s+CLOCK\s+(\d+)\s/.exec(l))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ addr: BigInt(`0x${m[1]}`), width: Number(m[2]) }));
}

/**
 * execve calls of the launcher's own process under strace -f: 1 when restored
 * (the launcher's), 2 when it ran the program cold. Children the program
 * starts (gdb runs `iconv -l`) exec in other pids.
 */
function execveCount(args: string[]): number {
  const out = path.join(work, `strace-${process.hrtime.bigint()}`);
  spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', out, LAUNCHER, ...args], { env, stdio: 'ignore', timeout: 120_000 });
  const lines = fs.readFileSync(out, 'utf8').split('\n').filter((l) => /execve\(/.test(l));
  const first = lines[0]?.split(/\s+/)[0];
  return lines.filter((l) => l.split(/\s+/)[0] === first).length;
}

const haveStrace = spawnSync('strace', ['-V']).status === 0;
const installed = (names: string[]): string[] => names.filter((n) => resolveOnPath(n) !== null);
const glibPrograms = installed(['gio', 'gdbus', 'gapplication']);
const haveGdb = installed(['gdb']).length === 1;

async function expectSameAsCold(prog: string, args: string[]): Promise<RunResult> {
  const cold = await runCold(prog, args, { env, cwd: work, timeoutMs: 60_000 });
  const restored = await runRestored(prog, args, { env, cwd: work, timeoutMs: 60_000 });
  expect(observable(restored), `${prog} ${args.join(' ')}`).toEqual(observable(cold));
  expect(lastOutcome(cache), `${prog} ${args.join(' ')} was not restored`).toBe('HIT');
  return restored;
}

describe('gdb and glib programs restore (glib keeps its slice allocator\'s start time)', () => {
  beforeAll(() => {
    for (const p of [...installed(['gdb']), ...glibPrograms]) {
      const w = cx(['--warm', p]);
      expect(w.status, `--warm ${p}: ${w.stderr}`).toBe(0);
    }
  }, 240_000);

  it.runIf(haveGdb)('gdb --batch: same output, stderr and status as cold; one execve; the image mapped', async () => {
    await expectSameAsCold('gdb', ['--batch']);
    await expectSameAsCold('gdb', ['--batch', '-ex', 'print 6*7', '-ex', 'info line nosuchfunction']);
    if (haveStrace) expect(execveCount(['gdb', '--batch'])).toBe(1);
    // gdb's own shell command prints its parent's (gdb's) maps.
    const r = await runRestored('gdb', ['--batch', '-ex', 'shell cat /proc/$PPID/maps'], { env, cwd: work, timeoutMs: 60_000 });
    expect(mapsShowImage(r.stdout.toString(), imageOf('gdb')), 'gdb was not restored').toBe(true);
  }, 180_000);

  for (const p of glibPrograms) {
    it(`${p} help: same output, stderr and status as cold; one execve`, async () => {
      await expectSameAsCold(p, ['help']);
      await expectSameAsCold(p, ['version']);
      if (haveStrace) expect(execveCount([p, 'help'])).toBe(1);
    }, 120_000);
  }

  it.runIf(glibPrograms.includes('gio'))('a restored gio maps its image and holds its own start time, not the snapshot\'s', async () => {
    const image = imageOf('gio');
    const slots = clockSlots(image);
    expect(slots, 'glib\'s kept clock reading is a CLOCK slot').toHaveLength(1);
    await new Promise((r) => setTimeout(r, 3000)); // a stale value would now be 3 s old
    const dir = fs.mkdtempSync(path.join(work, 'watched-'));
    let pid = -1;
    const started = Date.now(); // the snapshot's stamp is 3 s older than this, a restored run's is newer
    const done = runRestored('gio', ['monitor', dir], {
      env, cwd: work, timeoutMs: 60_000,
      onSpawn: (child) => {
        pid = child.pid ?? -1;
      },
    });
    // gio monitor blocks (state S, waiting for events): read its maps and the kept word from outside then.
    // Earlier, the launcher may still be mapping the image's regions.
    const slot = slots[0] as { addr: bigint };
    let kept: number | undefined;
    const readKept = (): boolean => {
      if (procState(pid) !== 'S' || !mapsShowImage(readMaps(pid), image)) return false;
      try {
        const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
        try {
          const b = Buffer.alloc(4);
          if (fs.readSync(fd, b, 0, 4, Number(slot.addr)) !== 4) return false;
          kept = b.readUInt32LE(0);
        } finally {
          fs.closeSync(fd);
        }
        return true;
      } catch {
        return false;
      }
    };
    expect(await waitFor(readKept, 20_000), 'gio monitor was not restored').toBe(true);
    const maps = readMaps(pid);
    // glib keeps ms in 32 bits: compare modulo 2^32 (the clock's ms resolution allows a step of slack).
    const sinceStart = ((kept as number) - Number(BigInt(started - 5) % 2n ** 32n) + 2 ** 32) % 2 ** 32;
    process.kill(pid, 'SIGTERM');
    await done;
    expect(mapsShowImage(maps, image)).toBe(true);
    expect(sinceStart, 'glib\'s stamp is this run\'s time in ms, not the snapshot\'s').toBeLessThan(2 ** 31);
  }, 120_000);
});

// ---------------------------------------------------------------------------

const lib = path.join(work, 'lib');

/** The program: prints what main() finds of the constructor's readings, then (with "maps") its maps. */
const MAIN = `#include <stdio.h>
#include <string.h>
const char *cx_report(void);
int main(int argc, char **argv) {
  printf("%s\\n", cx_report());
  if (argc > 1 && strcmp(argv[1], "maps") == 0) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) fputs(line, stdout);
  }
  return 0;
}
`;

/** Every reading kept verbatim: a restore must put its own time there, so main() finds them all fresh. */
const KEEP = `#include <sys/time.h>
#include <time.h>
long long cx_ms;            /* gettimeofday in ms, 8 bytes */
unsigned cx_ms32;           /* the same truncated to 4 bytes, as glib keeps it */
time_t cx_sec;              /* time() */
struct timespec cx_real, cx_mono;
struct timeval cx_tv;
static long long ms(struct timespec t) { return t.tv_sec * 1000LL + t.tv_nsec / 1000000; }
__attribute__((constructor)) static void init(void) {
  struct timeval tv;
  gettimeofday(&tv, 0);
  cx_ms = tv.tv_sec * 1000LL + tv.tv_usec / 1000;
  cx_ms32 = (unsigned)cx_ms;
  cx_sec = time(0);
  clock_gettime(CLOCK_REALTIME, &cx_real);
  clock_gettime(CLOCK_MONOTONIC, &cx_mono);
  gettimeofday(&cx_tv, 0);
}
const char *cx_report(void) {
  struct timespec now, mono;
  clock_gettime(CLOCK_REALTIME, &now);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  long long n = ms(now), tv = cx_tv.tv_sec * 1000LL + cx_tv.tv_usec / 1000;
  int fresh = n - cx_ms < 2000 && n - cx_ms >= 0 && (unsigned)n - cx_ms32 < 2000u && now.tv_sec - cx_sec < 3
    && n - ms(cx_real) < 2000 && ms(mono) - ms(cx_mono) < 2000 && n - tv < 2000 && cx_real.tv_nsec < 1000000000;
  return fresh ? "fresh" : "stale";
}
`;

/** A value computed from the time (a seed): no restore can recompute it. */
const SEED = `#include <time.h>
unsigned cx_seed;
__attribute__((constructor)) static void init(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  cx_seed = (unsigned)t.tv_sec * 2654435761u ^ (unsigned)t.tv_nsec;
}
const char *cx_report(void) { return cx_seed ? "seeded" : "zero"; }
`;

/** A duration measured between two readings (a calibration): the runs' clocks run at different paces. */
const ELAPSED = `#include <time.h>
long long cx_elapsed_ns;
__attribute__((constructor)) static void init(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  clock_gettime(CLOCK_MONOTONIC, &b);
  cx_elapsed_ns = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}
const char *cx_report(void) { return cx_elapsed_ns >= 0 ? "measured" : "?"; }
`;

/** The CPU time the process used so far: a restore cannot give it back. */
const CPU = `#include <time.h>
long long cx_cpu_ns;
__attribute__((constructor)) static void init(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  cx_cpu_ns = t.tv_sec * 1000000000LL + t.tv_nsec;
}
const char *cx_report(void) { return cx_cpu_ns >= 0 ? "cpu" : "?"; }
`;

/** Reads the clock and keeps nothing of it. */
const NO_TRACE = `#include <sys/time.h>
int cx_sane = 1;
__attribute__((constructor)) static void init(void) {
  struct timeval tv;
  gettimeofday(&tv, 0);
  if (tv.tv_sec < 0) cx_sane = 0;
}
const char *cx_report(void) { return cx_sane ? "sane" : "insane"; }
`;

function build(name: string, source: string): string {
  fs.writeFileSync(path.join(lib, `${name}.c`), source);
  cc(['-O1', '-shared', '-fPIC', '-o', path.join(lib, `libcx${name}.so`), path.join(lib, `${name}.c`)]);
  const prog = path.join(lib, `${name}-prog`);
  cc(['-O1', '-o', prog, path.join(lib, 'main.c'), `-L${lib}`, `-lcx${name}`, `-Wl,-rpath,${lib}`]);
  return prog;
}

describe.runIf(haveCc())('a private library whose constructor reads the clock', () => {
  const progs: Record<string, string> = {};
  beforeAll(() => {
    fs.mkdirSync(lib);
    fs.writeFileSync(path.join(lib, 'main.c'), MAIN);
    for (const [name, src] of Object.entries({ keep: KEEP, seed: SEED, elapsed: ELAPSED, cpu: CPU, notrace: NO_TRACE })) progs[name] = build(name, src);
  });

  it('verbatim readings (realtime, monotonic; ms, s, timespec, timeval; 4 and 8 bytes) restore with this run\'s time', async () => {
    const prog = progs.keep as string;
    const w = cx(['--warm', prog]);
    expect(w.status, w.stderr).toBe(0);
    expect(clockSlots(imageOf(prog)).length).toBeGreaterThanOrEqual(8);
    await new Promise((r) => setTimeout(r, 3000)); // the snapshot's readings are 3 s old now
    const cold = await runCold(prog, [], { env, cwd: work });
    const restored = await runRestored(prog, [], { env, cwd: work });
    expect(cold.stdout.toString()).toBe('fresh\n');
    expect(observable(restored)).toEqual(observable(cold));
    expect(lastOutcome(cache)).toBe('HIT');
    const withMaps = await runRestored(prog, ['maps'], { env, cwd: work });
    expect(withMaps.stdout.toString().split('\n')[0]).toBe('fresh');
    expect(mapsShowImage(withMaps.stdout.toString(), imageOf(prog)), 'not restored').toBe(true);
  }, 120_000);

  it('a value computed from the time (a seed) is refused, and the program runs cold, correctly', async () => {
    const prog = progs.seed as string;
    const w = cx(['--warm', prog]);
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/refused \(unexplained-difference\)/);
    expect(fs.existsSync(imageOf(prog))).toBe(false);
    const r = await runRestored(prog, ['maps'], { env, cwd: work });
    expect(r.stdout.toString().split('\n')[0]).toBe('seeded');
    expect(mapsShowImage(r.stdout.toString(), imageOf(prog))).toBe(false);
  }, 120_000);

  it('a duration measured between two readings is refused', () => {
    const w = cx(['--warm', progs.elapsed as string]);
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/refused \(unexplained-difference\)/);
  }, 120_000);

  it('a process CPU clock read is refused', () => {
    const w = cx(['--warm', progs.cpu as string]);
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/refused \(unsupported-syscall\).*CPU-time clock/);
  }, 120_000);

  it('a reading that left no trace restores, with no clock slot', async () => {
    const prog = progs.notrace as string;
    const w = cx(['--warm', prog]);
    expect(w.status, w.stderr).toBe(0);
    expect(clockSlots(imageOf(prog))).toEqual([]);
    const r = await runRestored(prog, ['maps'], { env, cwd: work });
    expect(r.stdout.toString().split('\n')[0]).toBe('sane');
    expect(mapsShowImage(r.stdout.toString(), imageOf(prog))).toBe(true);
  }, 120_000);
});

// ---------------------------------------------------------------------------

describe.runIf(canSwitchUser() && haveCc() && glibPrograms.includes('gio'))('as an unprivileged user', () => {
  it('nobody warms and restores gio and the kept-clock program, same as cold', async () => {
    const dir = tmpDir('cx-vdso-clock-user-');
    try {
      const pkg = userPackage(dir);
      const home = ownedDir(path.join(dir, 'home'), NOBODY, NOGROUP, 0o755);
      const userCache = ownedDir(path.join(dir, 'cache'), NOBODY, NOGROUP);
      const e = userEnv(userCache, home);
      const as = (args: string[], extra: Env = {}): Promise<RunResult> => runAs({}, pkg.launcher, args, { env: { ...e, ...extra }, cwd: home, timeoutMs: 120_000 });
      fs.chmodSync(work, 0o755);
      fs.chmodSync(lib, 0o755);
      for (const [prog, args] of [['gio', ['help']], [path.join(lib, 'keep-prog'), []]] as const) {
        const w = await as(['--warm', prog]);
        expect(w.status, w.stderr.toString()).toBe(0);
        const cold = await as([prog, ...args], { CACHED_EXEC_DISABLE: '1' });
        const restored = await as([prog, ...args]);
        expect(observable(restored)).toEqual(observable(cold));
        expect(lastOutcome(userCache), `${prog} was not restored for nobody`).toBe('HIT');
      }
    } finally {
      removeDir(dir);
    }
  }, 240_000);
});
