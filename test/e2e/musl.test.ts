/**
 * Dynamically linked musl programs (Debian's musl-gcc: PT_INTERP
 * /lib/ld-musl-x86_64.so.1, which is musl's libc.so) warm and restore like
 * glibc ones. Every program is built here at test time, warmed, then run
 * directly (cold: no launcher at all) and through the launcher (restored), and
 * the two must agree on stdout, stderr, exit status and signal. Restores are
 * proven from outside: the run's outcome in the statistics log, the image file
 * in the process's own /proc/self/maps and in /proc/PID/maps read by the test,
 * and strace's count of execve calls (one, the launcher's, for a restore).
 *
 * musl-tools is in CI's package list (.ci/run): a machine without musl-gcc
 * fails this file instead of skipping it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import {
  LAUNCHER, baseEnv, describeWarm, launcherKey, mapsShowImage, observable, procState, readMaps, removeDir, run,
  runRestored, tmpCacheDir, tmpDir, waitFor, warm, type Env, type RunResult, type WarmResult,
} from '../helpers/cx.js';
import { NOBODY, copyPackage, giveToNobody, nobodyDir, runAs, type PackageCopy } from '../helpers/unprivileged.js';

const MUSL_LOADER = '/lib/ld-musl-x86_64.so.1';
const cache = tmpCacheDir();
const work = tmpDir('cx-musl-');
const env: Env = baseEnv(cache);

const SOURCES: Record<string, string> = {
  // Prints its own maps on request: the image file must show up there when restored.
  hello: String.raw`
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
	printf("hello from musl, argc=%d\n", argc);
	if (argc > 1 && !strcmp(argv[1], "--maps")) {
		char line[1024]; FILE *m = fopen("/proc/self/maps", "r");
		while (m && fgets(line, sizeof line, m)) fputs(line, stdout);
	}
	return 0;
}`,
  envargv: String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern char **environ;
int main(int argc, char **argv) {
	for (int i = 0; i < argc; i++) printf("argv[%d]=<%s>\n", i, argv[i]);
	const char *v = getenv("CX_MUSL_VALUE");
	printf("CX_MUSL_VALUE=%s\n", v ? v : "(unset)");
	for (char **e = environ; *e; e++) if (!strncmp(*e, "CX_", 3)) printf("env %s\n", *e);
	return argc;
}`,
  // 1 MiB of TLS does not fit musl's builtin thread block: the loader calloc()s
  // another one and sets the thread pointer and tid address a second time.
  bigtls: String.raw`
#include <stdio.h>
#include <string.h>
#include <pthread.h>
static __thread char big[1 << 20];
static __thread long counter = 42;
static void *worker(void *p) { (void)p; big[7] = 9; counter += 5; return (void *)(long)(big[7] + counter); }
int main(int argc, char **argv) {
	(void)argv;
	memset(big, argc, sizeof big);
	long sum = 0;
	for (size_t i = 0; i < sizeof big; i += 4096) sum += big[i];
	pthread_t t; void *r;
	if (pthread_create(&t, 0, worker, 0) || pthread_join(t, &r)) return 99;
	printf("tls sum=%ld counter=%ld thread=%ld main-big7=%d\n", sum, counter, (long)r, big[7]);
	return 0;
}`,
  mallocs: String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
enum { N = 3000 };
static char *p[N];
int main(int argc, char **argv) {
	(void)argv;
	unsigned long sum = 0;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) { size_t sz = (size_t)(i * 7919 % 3000) + 1; p[i] = malloc(sz); memset(p[i], i & 0xff, sz); }
		for (int i = 0; i < N; i += 2) { free(p[i]); p[i] = 0; }
		for (int i = 0; i < N; i += 2) { p[i] = realloc(p[i], 100000 + (size_t)i); p[i][0] = 1; }
		for (int i = 0; i < N; i++) { sum += (unsigned char)p[i][0]; free(p[i]); }
	}
	char *big = malloc(16 << 20);
	memset(big, 3, 16 << 20);
	sum += (unsigned long)big[12345];
	free(big);
	printf("sum=%lu argc=%d\n", sum, argc);
	return 0;
}`,
  dies: String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
int main(int argc, char **argv) {
	fprintf(stderr, "about to %s\n", argc > 1 ? argv[1] : "exit");
	printf("buffered stdout\n");
	if (argc > 1 && !strcmp(argv[1], "abort")) abort();
	if (argc > 1 && !strcmp(argv[1], "term")) { fflush(stdout); raise(SIGTERM); }
	return argc > 2 ? atoi(argv[2]) : 7;
}`,
  // The stack protector guard (x86_64: %fs:0x28), which musl's __init_ssp sets from AT_RANDOM after the entry point.
  canary: String.raw`
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
int main(void) {
	unsigned long guard, want;
	__asm__ ("mov %%fs:0x28, %0" : "=r"(guard));
	memcpy(&want, (void *)getauxval(AT_RANDOM), sizeof want);
	((unsigned char *)&want)[1] = 0;
	printf("guard %016lx from-own-AT_RANDOM=%d\n", guard, guard == want);
	return 0;
}`,
  readin: String.raw`
#include <stdio.h>
#include <ctype.h>
int main(void) {
	int c; unsigned long n = 0, lines = 0;
	while ((c = getchar()) != EOF) { n++; if (c == '\n') lines++; putchar(toupper(c)); }
	fprintf(stderr, "%lu bytes %lu lines\n", n, lines);
	return lines > 255 ? 255 : (int)lines;
}`,
};

const prog = (name: string): string => path.join(work, name);
const warmed = new Map<string, WarmResult>();

function muslGcc(args: readonly string[]): void {
  const r = spawnSync('musl-gcc', args, { encoding: 'utf8' });
  expect(r.error, 'musl-gcc is needed (apt-get install musl-tools; CI installs it)').toBeUndefined();
  expect(r.status, `musl-gcc ${args.join(' ')}: ${r.stderr}`).toBe(0);
}

function build(name: string, source: string, extra: readonly string[] = []): string {
  const src = path.join(work, `${name}.c`);
  fs.writeFileSync(src, source);
  muslGcc(['-O1', '-o', prog(name), src, ...extra]);
  return prog(name);
}

function outcomes(): string[] {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.map((r) => r.outcome) : [];
}

/** The outcome of the one launcher run `f` makes. */
async function outcomeOf<T>(f: () => Promise<T>): Promise<{ result: T; outcome: string | undefined }> {
  const before = outcomes().length;
  const result = await f();
  const after = outcomes();
  expect(after.length, 'one launcher run, one record').toBe(before + 1);
  return { result, outcome: after[after.length - 1] };
}

function imageOf(name: string): string {
  const w = warmed.get(name);
  expect(w?.exists, describeWarm(w)).toBe(true);
  return w?.image as string;
}

/**
 * A run meant to restore. One whose random stack met the image's addresses
 * (FAIL_COLLISION, about 1 run in 10,000: cold and right) is run once more, so
 * the assertions are about restores.
 */
async function restoring<T>(f: () => Promise<T>): Promise<{ result: T; outcome: string | undefined }> {
  const first = await outcomeOf(f);
  return first.outcome === 'FAIL_COLLISION' ? outcomeOf(f) : first;
}

/** The same program run directly (no launcher: the real cold run) and restored through the launcher. */
async function coldAndRestored(name: string, args: string[], input?: string, runEnv: Env = env): Promise<{ cold: RunResult; restored: RunResult }> {
  const opts = { env: runEnv, ...(input !== undefined ? { input } : {}) };
  const cold = await run(prog(name), args, opts);
  const { result: restored, outcome } = await restoring(() => runRestored(prog(name), args, opts));
  expect(outcome, `${name} ${args.join(' ')} was not restored; ${describeWarm(warmed.get(name))}`).toBe('HIT');
  return { cold, restored };
}

/** Successful execve calls of `cmd` and its children, from strace -f. */
function execsUnderStrace(cmd: string[], runEnv: Env): string[] {
  const log = path.join(work, `strace.${process.hrtime.bigint()}`);
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', log, ...cmd], { env: runEnv, encoding: 'utf8', timeout: 60_000 });
  expect(r.error, 'strace is needed (CI installs it)').toBeUndefined();
  const lines = fs.readFileSync(log, 'utf8').split('\n');
  fs.rmSync(log, { force: true });
  return lines.filter((l) => /execve\(/.test(l) && / = 0$/.test(l)).map((l) => (/execve\("([^"]*)"/.exec(l) as RegExpExecArray)[1] as string);
}

beforeAll(async () => {
  expect(fs.existsSync(MUSL_LOADER), `${MUSL_LOADER} (package musl) is needed`).toBe(true);
  for (const [name, source] of Object.entries(SOURCES)) build(name, source, name === 'bigtls' ? ['-pthread'] : []);
  // Two at a time: the machine has two cores shared with other work.
  const names = Object.keys(SOURCES);
  for (let i = 0; i < names.length; i += 2) {
    const ws = await Promise.all(names.slice(i, i + 2).map((n) => warm(prog(n), env)));
    ws.forEach((w, j) => warmed.set(names[i + j] as string, w));
  }
}, 300_000);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('musl programs warm and restore', () => {
  it('every program is warmed into an image', () => {
    for (const name of Object.keys(SOURCES)) {
      const w = warmed.get(name);
      expect(w?.status, describeWarm(w)).toBe(0);
      expect(w?.exists, describeWarm(w)).toBe(true);
    }
  });

  it('the image holds what a musl loader leaves: no robust list, no rseq, no rtld_fini, the libc file, a dead-stack slot', () => {
    const r = spawnSync(LAUNCHER, ['--inspect', imageOf('hello'), '--json'], { env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const im = JSON.parse(r.stdout) as {
      state: { flags: string[]; rtldFini: string };
      files: { path: string; kind: string }[];
      slots: { kind: string }[];
    };
    expect(im.state.flags).toEqual(expect.arrayContaining(['HAVE_FS_BASE', 'HAVE_TID_ADDRESS']));
    expect(im.state.flags).not.toEqual(expect.arrayContaining(['HAVE_ROBUST_LIST'])); // musl registers none
    expect(im.state.flags).not.toEqual(expect.arrayContaining(['HAVE_RSEQ']));
    expect(im.state.rtldFini).toBe('0x0'); // the kernel's value: musl's loader leaves a dead stack address in rdx
    expect(im.files.some((f) => f.path === MUSL_LOADER && f.kind === 'MAPPED')).toBe(true);
    const kinds = im.slots.map((s) => s.kind);
    expect(kinds).toContain('BELOW_ARGC'); // musl's saved_addends
    expect(kinds).toContain('TID');
    expect(kinds).not.toContain('ARGC_ADDR'); // musl keeps no pointer to argc
    expect(kinds).not.toContain('CANARY'); // set later by __init_libc, in the restored process
  });

  it('hello: same output and status; the image file is in its own /proc/self/maps, not in a cold run\'s', async () => {
    const image = imageOf('hello');
    const { cold, restored } = await coldAndRestored('hello', ['--maps']);
    expect(restored.status).toBe(0);
    expect(mapsShowImage(restored.stdout.toString(), image)).toBe(true);
    expect(mapsShowImage(cold.stdout.toString(), image)).toBe(false);
    // Both list musl's libc mapped, and the restored heap as [heap].
    expect(restored.stdout.toString()).toMatch(/x86_64-linux-musl\/libc\.so/);
    expect(restored.stdout.toString()).toMatch(/\[heap\]/);
    const { cold: c2, restored: r2 } = await coldAndRestored('hello', ['a', 'b']);
    expect(observable(r2)).toEqual(observable(c2));
    expect(r2.stdout.toString()).toBe('hello from musl, argc=3\n');
  });

  it('argv and the environment are the caller\'s, not the snapshot\'s', async () => {
    const args = ['one', 'two words', '', '--flag=x', 'é'];
    for (const value of ['first', 'a much longer value than the first one', undefined]) {
      const runEnv: Env = { ...env, CX_OTHER: 'other' };
      if (value !== undefined) runEnv.CX_MUSL_VALUE = value;
      const { cold, restored } = await coldAndRestored('envargv', args, undefined, runEnv);
      expect(observable(restored)).toEqual(observable(cold));
      expect(restored.status).toBe(6);
      expect(restored.stdout.toString()).toContain(`CX_MUSL_VALUE=${value ?? '(unset)'}\n`);
      expect(restored.stdout.toString()).toContain('env CX_OTHER=other\n');
    }
  });

  it('a program whose TLS needs a second thread block (1 MiB) restores, threads included', async () => {
    // Both thread blocks hold the tid (musl's builtin one, then the calloc()ed one the thread pointer moved to).
    const r = spawnSync(LAUNCHER, ['--inspect', imageOf('bigtls'), '--json'], { env, encoding: 'utf8' });
    const im = JSON.parse(r.stdout) as { slots: { kind: string }[] };
    expect(im.slots.filter((s) => s.kind === 'TID').length).toBe(2);
    for (const args of [[], ['x', 'y']]) {
      const { cold, restored } = await coldAndRestored('bigtls', args);
      expect(observable(restored)).toEqual(observable(cold));
      expect(restored.status).toBe(0);
    }
  });

  it('the stack guard is this process\'s own: set by musl after the entry point from the restored process\'s AT_RANDOM', async () => {
    const guards = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const { result, outcome } = await restoring(() => runRestored(prog('canary'), [], { env }));
      expect(outcome).toBe('HIT');
      const m = /^guard ([0-9a-f]{16}) from-own-AT_RANDOM=1\n$/.exec(result.stdout.toString());
      expect(m, result.stdout.toString()).not.toBeNull();
      guards.add((m as RegExpExecArray)[1] as string);
    }
    expect(guards.size).toBe(3);
  });

  it('heavy malloc/realloc/free (brk and mmap) gives the same result', async () => {
    const { cold, restored } = await coldAndRestored('mallocs', ['z']);
    expect(observable(restored)).toEqual(observable(cold));
    expect(restored.stdout.toString()).toMatch(/^sum=\d+ argc=2\n$/);
  });

  it('a musl library\'s constructor runs in the restored process (musl runs none before the entry point) and sees the caller\'s environment', async () => {
    const src = path.join(work, 'ctor.c');
    fs.writeFileSync(src, String.raw`
#include <stdio.h>
#include <stdlib.h>
const char *ctor_seen = "not run";
__attribute__((constructor)) static void init(void) {
	const char *v = getenv("CX_CTOR");
	ctor_seen = v ? v : "(unset)";
	fputs("constructor ran\n", stderr);
}`);
    muslGcc(['-shared', '-fPIC', '-o', path.join(work, 'libctor.so'), src]);
    const user = build('usector', 'extern const char *ctor_seen;\nint puts(const char *);\nint main(void) { puts(ctor_seen); return 0; }\n',
      [`-L${work}`, '-lctor', `-Wl,-rpath,${work}`]);
    const w = await warm(user, { ...env, CX_CTOR: 'at-snapshot' });
    warmed.set('usector', w);
    expect(w.exists, describeWarm(w)).toBe(true);
    for (const value of ['caller', undefined]) {
      const runEnv: Env = value === undefined ? env : { ...env, CX_CTOR: value };
      const { cold, restored } = await coldAndRestored('usector', [], undefined, runEnv);
      expect(observable(restored)).toEqual(observable(cold));
      expect(restored.stdout.toString()).toBe(`${value ?? '(unset)'}\n`);
      expect(restored.stderr.toString()).toBe('constructor ran\n');
    }
  });

  it('dlopen after a restore: musl\'s loader state (its library list, TLS for new modules) is live in the restored process', async () => {
    const libsrc = path.join(work, 'tlslib.c');
    fs.writeFileSync(libsrc, '__thread int tl = 5;\nstatic int inited;\n__attribute__((constructor)) static void c(void) { inited = 1; }\nint f(int x) { tl += x; return tl * 10 + inited; }\n');
    const lib = path.join(work, 'libtls.so');
    muslGcc(['-shared', '-fPIC', '-o', lib, libsrc]);
    const dl = build('dl', String.raw`
#include <stdio.h>
#include <dlfcn.h>
#include <pthread.h>
static int (*fp)(int);
static void *th(void *a) { (void)a; return (void *)(long)fp(1); }
int main(int argc, char **argv) {
	(void)argc;
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) { printf("dlopen: %s\n", dlerror()); return 1; }
	fp = (int (*)(int))dlsym(h, "f");
	Dl_info di;
	if (!dladdr((void *)fp, &di)) return 2;
	pthread_t t; void *r;
	if (pthread_create(&t, 0, th, 0) || pthread_join(t, &r)) return 3;
	printf("f=%d thread=%ld in=%s\n", fp(2), (long)r, di.dli_fname);
	return 0;
}`);
    const w = await warm(dl, env);
    warmed.set('dl', w);
    expect(w.exists, describeWarm(w)).toBe(true);
    const { cold, restored } = await coldAndRestored('dl', [lib]);
    expect(observable(restored)).toEqual(observable(cold));
    expect(restored.stdout.toString()).toBe(`f=71 thread=61 in=${lib}\n`);
  });

  it('exit statuses and deaths by signal are the same as cold', async () => {
    for (const [args, status, signal] of [[[], 7, null], [['exit', '42'], 42, null], [['abort'], null, 'SIGABRT'], [['term'], null, 'SIGTERM']] as const) {
      const { cold, restored } = await coldAndRestored('dies', [...args]);
      expect(observable(restored)).toEqual(observable(cold));
      expect(restored.status).toBe(status);
      expect(restored.signal).toBe(signal);
    }
  });

  it('stdin is the caller\'s', async () => {
    const input = 'first line\nsecond\nthird, no newline';
    const { cold, restored } = await coldAndRestored('readin', [], input);
    expect(observable(restored)).toEqual(observable(cold));
    expect(restored.stdout.toString()).toBe(input.toUpperCase());
    expect(restored.status).toBe(2);
  });

  it('proof from outside: a restored process maps the image while it waits on stdin; a cold one does not', async () => {
    const image = imageOf('readin');
    const mapsWhileBlocked = async (file: string, args: string[]): Promise<{ maps: string; r: RunResult }> => {
      let maps = '';
      const r = await run(file, args, {
        env, holdStdin: true,
        onSpawn: (child) => {
          void waitFor(() => procState(child.pid ?? -1) === 'S', 15_000).then(() => {
            maps = readMaps(child.pid ?? -1);
            child.stdin?.end('x\n');
          });
        },
      });
      return { maps, r };
    };
    const { result: restored, outcome } = await restoring(() => mapsWhileBlocked(LAUNCHER, [prog('readin')]));
    expect(outcome).toBe('HIT');
    expect(restored.r.stdout.toString()).toBe('X\n');
    expect(mapsShowImage(restored.maps, image), restored.maps).toBe(true);
    expect(restored.maps).toMatch(/x86_64-linux-musl\/libc\.so/);
    expect(restored.maps).not.toMatch(/bin\/cached-exec/); // the launcher unmapped itself
    const cold = await mapsWhileBlocked(prog('readin'), []);
    expect(cold.r.stdout.toString()).toBe('X\n');
    expect(mapsShowImage(cold.maps, image)).toBe(false);
  });

  it('malloc\'s secret (copied from AT_RANDOM bytes 8-15 before the entry point) is each restored process\'s own', async () => {
    const r = spawnSync(LAUNCHER, ['--inspect', imageOf('readin'), '--json'], { env, encoding: 'utf8' });
    const slots = (JSON.parse(r.stdout) as { slots: { kind: string; addr: string }[] }).slots.filter((x) => x.kind === 'RANDOM_COPY');
    expect(slots.length).toBe(2); // mallocng's ctx.secret and its first metadata area's check word
    const secrets: string[] = [];
    for (let i = 0; i < 2; i++) {
      let seen: { own: string; copies: string[] } | undefined;
      const { result: run1, outcome } = await restoring(() => run(LAUNCHER, [prog('readin')], {
        env, holdStdin: true,
        onSpawn: (child) => {
          void waitFor(() => procState(child.pid ?? -1) === 'S', 15_000).then(() => {
            const pid = child.pid ?? -1;
            const auxv = fs.readFileSync(`/proc/${pid}/auxv`);
            let random = 0n;
            for (let at = 0; at + 16 <= auxv.length; at += 16) if (auxv.readBigUInt64LE(at) === 25n) random = auxv.readBigUInt64LE(at + 8);
            const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
            const word = (addr: bigint): string => {
              const b = Buffer.alloc(8);
              fs.readSync(fd, b, 0, 8, Number(addr));
              return b.toString('hex');
            };
            seen = { own: word(random + 8n), copies: slots.map((x) => word(BigInt(x.addr))) };
            fs.closeSync(fd);
            child.stdin?.end('');
          });
        },
      }));
      expect(outcome).toBe('HIT');
      expect(run1.status).toBe(0);
      expect(seen, 'the restored process was not seen blocked').toBeDefined();
      expect(seen?.copies).toEqual([seen?.own, seen?.own]);
      secrets.push(seen?.own as string);
    }
    expect(secrets[0]).not.toBe(secrets[1]);
  });

  it('strace: a restore execs only the launcher; a cold run through it execs the program too', () => {
    let restored = execsUnderStrace([LAUNCHER, prog('hello')], env);
    if (outcomes().at(-1) === 'FAIL_COLLISION') restored = execsUnderStrace([LAUNCHER, prog('hello')], env); // see restoring()
    expect(outcomes().at(-1)).toBe('HIT');
    expect(restored).toEqual([LAUNCHER]);
    const cold = execsUnderStrace([LAUNCHER, prog('hello')], { ...env, CACHED_EXEC_DISABLE: '1' });
    expect(cold).toEqual([LAUNCHER, prog('hello')]);
  });
});

describe('as an unprivileged user', () => {
  let pkg: PackageCopy | undefined;
  let home: string | undefined;
  afterAll(() => {
    removeDir(pkg?.root);
    removeDir(home);
  });

  it('nobody warms and restores a musl program with a copy of the package and its own cache', () => {
    pkg = copyPackage();
    home = nobodyDir('cx-musl-nobody-');
    fs.chmodSync(home, 0o755); // the program in it must be executable by nobody
    const cacheDir = path.join(home, 'cache');
    fs.mkdirSync(cacheDir, { mode: 0o700 });
    const p = path.join(home, 'envargv');
    fs.copyFileSync(prog('envargv'), p);
    fs.chmodSync(p, 0o755);
    giveToNobody(home);
    expect(fs.statSync(cacheDir).uid).toBe(NOBODY.uid);
    const userEnv: Env = { ...baseEnv(cacheDir), HOME: home, CX_MUSL_VALUE: 'nobody' };
    const w = runAs('nobody', pkg.launcher, ['--warm', p], { env: userEnv });
    expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
    const cold = runAs('nobody', p, ['x y'], { env: userEnv });
    const restored = runAs('nobody', pkg.launcher, [p, 'x y'], { env: userEnv });
    expect(restored).toEqual(cold);
    expect(restored.stdout).toContain('CX_MUSL_VALUE=nobody\n');
    const log = fs.readFileSync(path.join(cacheDir, 'stats', 'runs.log'));
    expect(decodeRunRecords(log).records.map((r) => r.outcome)).toEqual(['HIT']);
  });
});

describe('fallbacks are cold and right', () => {
  it('LD_PRELOAD and LD_LIBRARY_PATH bypass the image (musl\'s loader reads both)', async () => {
    const lib = path.join(work, 'libpre.so');
    const src = path.join(work, 'pre.c');
    fs.writeFileSync(src, '#include <stdio.h>\n__attribute__((constructor)) static void hi(void) { fputs("preloaded\\n", stderr); }\n');
    muslGcc(['-shared', '-fPIC', '-o', lib, src]);
    const preEnv = { ...env, LD_PRELOAD: lib };
    const cold = await run(prog('hello'), [], { env: preEnv });
    expect(cold.stderr.toString()).toBe('preloaded\n');
    const { result, outcome } = await outcomeOf(() => runRestored(prog('hello'), [], { env: preEnv }));
    expect(outcome).toBe('BYPASS_LOADER_ENV');
    expect(observable(result)).toEqual(observable(cold));
    const { outcome: o2 } = await outcomeOf(() => runRestored(prog('hello'), [], { env: { ...env, LD_LIBRARY_PATH: work } }));
    expect(o2).toBe('BYPASS_LOADER_ENV');
  });

  it('a changed C library (the loader file) makes the image stale: cold and right', async () => {
    // A private copy of musl's libc as the program's interpreter, so the test can replace it.
    const libdir = tmpDir('cx-musl-libc-');
    try {
      const loader = path.join(libdir, 'ld-musl.so');
      fs.copyFileSync(fs.realpathSync(MUSL_LOADER), loader);
      fs.chmodSync(loader, 0o755);
      const own = build('ownlibc', SOURCES.hello as string, [`-Wl,--dynamic-linker=${loader}`]);
      // A dependency must be older than the snapshot's start by the timestamps' step (too-new).
      const past = new Date(Date.now() - 60_000);
      fs.utimesSync(loader, past, past);
      const w = await warm(own, env);
      expect(w.exists, describeWarm(w)).toBe(true);
      const cold = await run(own, ['a'], { env });
      const hit = await restoring(() => runRestored(own, ['a'], { env }));
      expect(hit.outcome).toBe('HIT');
      expect(observable(hit.result)).toEqual(observable(cold));
      // Replaced as a package manager does: a new file renamed over the old one.
      fs.copyFileSync(loader, `${loader}.new`);
      fs.renameSync(`${loader}.new`, loader);
      const stale = await outcomeOf(() => runRestored(own, ['a'], { env }));
      expect(stale.outcome).toBe('FAIL_STALE_FILE');
      expect(observable(stale.result)).toEqual(observable(cold));
      const explain = spawnSync(LAUNCHER, ['--explain', own], { env, encoding: 'utf8' });
      expect(explain.status).not.toBe(0);
      expect(explain.stdout + explain.stderr).toContain(loader);
    } finally {
      removeDir(libdir);
    }
  });
});

describe('post-init (--after-init) with musl', () => {
  it('a musl program that speaks the resume protocol restores after its init, like cold', async () => {
    const config = path.join(work, 'tool.conf');
    fs.writeFileSync(config, 'hello from the config\n');
    const past = new Date(Date.now() - 60_000);
    fs.utimesSync(config, past, past);
    const tool = build('tool', String.raw`
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static long table[4096];
static char greeting[64];
static int own_pid;
static char ctx[1 << 16];
int main(int argc, char **argv) {
	FILE *f = fopen("${config}", "r");
	if (!f || !fgets(greeting, sizeof greeting, f)) return 9;
	fclose(f);
	greeting[strcspn(greeting, "\n")] = 0;
	for (int i = 0; i < 4096; i++) table[i] = (long)i * i % 1000003;
	char *heap = malloc(100000); memset(heap, 1, 100000);
	own_pid = getpid();
	char **args = argv;
	int nargs = argc;
	const char *fdv = getenv("CACHED_EXEC_RESUME_FD");
	if (fdv) {
		int fd = atoi(fdv);
		long n = 0, r;
		while ((r = read(fd, ctx + n, sizeof ctx - 1 - (size_t)n)) > 0) n += r;
		close(fd);
		if (r < 0 || strcmp(ctx, "cached-exec-resume 1")) return 125;
		char *p = ctx + strlen(ctx) + 1;
		nargs = atoi(p);
		p += strlen(p) + 1;
		args = calloc((size_t)nargs + 1, sizeof *args);
		for (int i = 0; i < nargs; i++) { args[i] = p; p += strlen(p) + 1; }
	}
	printf("%s:", greeting);
	for (int i = 1; i < nargs; i++) printf(" [%s]", args[i]);
	printf(" table=%ld heap=%d pid-ok=%d\n", table[4095], heap[99999], own_pid == getpid());
	return nargs;
}`);
    const w = spawnSync(LAUNCHER, ['--warm', '--after-init', tool], { env, encoding: 'utf8', timeout: 120_000 });
    expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
    const args = ['--after-init', tool, 'one', 'two words', ''];
    const cold = await run(LAUNCHER, args, { env: { ...env, CACHED_EXEC_DISABLE: '1' } });
    const { result, outcome } = await restoring(() => run(LAUNCHER, args, { env }));
    expect(outcome).toBe('HIT');
    expect(observable(result)).toEqual(observable(cold));
    expect(result.stdout.toString()).toBe('hello from the config: [one] [two words] [] table=768977 heap=1 pid-ok=1\n');
    expect(result.status).toBe(4);
  });

  it('a musl program that does not speak it is refused with the reason, and its runs are cold and right', async () => {
    const w = spawnSync(LAUNCHER, ['--warm', '--after-init', prog('hello')], { env, encoding: 'utf8', timeout: 120_000 });
    expect(w.status).toBe(1);
    expect(w.stderr).toMatch(/snapshot refused \(unsupported-syscall\): the init wrote to fd 1/);
    const cold = await run(prog('hello'), ['x'], { env });
    const { result, outcome } = await outcomeOf(() => run(LAUNCHER, ['--after-init', prog('hello'), 'x'], { env }));
    expect(outcome).toBe('MISS');
    expect(observable(result)).toEqual(observable(cold));
    expect(launcherKey(prog('hello'), env)).not.toBeNull();
  });
});
