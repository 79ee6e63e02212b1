/**
 * Images keyed on what was read, end to end, with real programs and the
 * real launcher:
 *  - cmake, curl, openssl, ssh and wget (those installed) restore from
 *    another directory with an unrelated variable added, as under hyperfine;
 *  - a private library whose constructor looks a variable up: another value
 *    gives the right output at once (cold, FAIL_ENV), the launcher queues a
 *    re-take in that environment, and later runs restore a variant image
 *    while the first one still serves the first environment;
 *  - a constructor that walks environ itself binds the whole environment;
 *  - an --after-init bash and python restore with an unrelated variable and
 *    no CACHED_EXEC_VARY_ENV, run cold (right output) when a variable the
 *    init read differs, and after an edit of a sourced file: one cold run,
 *    then the warmer re-takes the image and a later run restores the new
 *    content without anyone running --warm.
 * Restores are proven from outside (/proc/PID/maps of the process, the
 * launcher's own statistics records).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, baseEnv, haveCc, readMaps, removeDir, resolveOnPath, run, tmpCacheDir, tmpDir, waitFor, type Env } from '../helpers/cx.js';

const work = tmpDir('cx-envkeys-');
const warmDir = path.join(work, 'warm here');
const elsewhere = path.join(work, 'run elsewhere');
fs.mkdirSync(warmDir);
fs.mkdirSync(elsewhere);
afterAll(() => removeDir(work));

/** What hyperfine adds to every run: a variable whose value has a random length. */
const hyperfine = (): Env => ({ HYPERFINE_RANDOMIZED_ENVIRONMENT_OFFSET: 'X'.repeat(Math.floor(Math.random() * 4096)) });

function records(cache: string): ReturnType<typeof decodeRunRecords>['records'] {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records : [];
}
const lastOutcome = (cache: string): string => String(records(cache).at(-1)?.outcome ?? 'none');
/** True when the listing maps any image of `cache` (a primary or a variant). */
const mapsAnImage = (listing: string, cache: string): boolean => listing.includes(path.join(cache, 'images') + '/');

function cx(args: string[], env: Env, cwd = warmDir): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LAUNCHER, args, { env, cwd, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------

/**
 * How each network program is seen restored: it connects to a local server
 * that accepts and says nothing, and while it waits there its maps are read.
 */
const NET_PROGRAMS: { name: string; args: (port: number) => string[] }[] = [
  { name: 'curl', args: (p) => ['-s', '--max-time', '20', `http://127.0.0.1:${p}/`] },
  { name: 'wget', args: (p) => ['-q', '-O', '-', '--tries=1', '--timeout=20', `http://127.0.0.1:${p}/`] },
  { name: 'openssl', args: (p) => ['s_client', '-connect', `127.0.0.1:${p}`] },
  { name: 'ssh', args: (p) => ['-p', String(p), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=20', '127.0.0.1'] },
];
const installed = (name: string): boolean => resolveOnPath(name) !== null;

/** Runs `name args` through the launcher until it connects; returns its maps then. */
async function mapsWhileConnected(name: string, args: (port: number) => string[], env: Env, cwd: string): Promise<{ maps: string; pid: number }> {
  let pid = -1;
  let maps = '';
  const server = net.createServer((sock) => {
    maps = readMaps(pid);
    sock.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    await new Promise<void>((resolve) => {
      const child = spawn(LAUNCHER, [name, ...args(port)], { env, cwd, stdio: ['pipe', 'ignore', 'ignore'] });
      pid = child.pid ?? -1;
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    server.close();
  }
  return { maps, pid };
}

describe('real programs whose libraries look variables up restore from another directory with an unrelated variable', () => {
  const cache = tmpCacheDir();
  afterAll(() => removeDir(cache));
  const env = baseEnv(cache, { PWD: warmDir });
  const runEnv = (): Env => ({ ...env, PWD: elsewhere, OLDPWD: warmDir, SOMETHING_UNRELATED: String(Math.random()), ...hyperfine() });

  for (const p of NET_PROGRAMS) {
    it.runIf(installed(p.name))(`${p.name}`, async () => {
      const w = cx(['--warm', p.name], env);
      expect(w.status, w.stderr).toBe(0);
      const explain = cx(['--explain', p.name], runEnv(), elsewhere);
      expect(explain.stdout).toMatch(/next run +restores/);
      const { maps } = await mapsWhileConnected(p.name, p.args, runEnv(), elsewhere);
      expect(maps, `${p.name}: connected without its maps being read`).not.toBe('');
      expect(mapsAnImage(maps, cache), `${p.name} was not restored (${lastOutcome(cache)})`).toBe(true);
    });
  }

  it.runIf(installed('cmake'))('cmake', async () => {
    const w = cx(['--warm', 'cmake'], env);
    expect(w.status, w.stderr).toBe(0);
    const r = await run(LAUNCHER, ['cmake', '-E', 'env', 'sh', '-c', 'cat /proc/$PPID/maps'], { env: runEnv(), cwd: elsewhere });
    expect(r.status, r.stderr.toString()).toBe(0);
    expect(mapsAnImage(r.stdout.toString(), cache), `cmake was not restored (${lastOutcome(cache)})`).toBe(true);
    // What it depends on is what its libraries looked up, none of them set here.
    const explain = cx(['--explain', 'cmake'], runEnv(), elsewhere).stdout;
    expect(explain).toMatch(/depends on +OPENSSL_ia32cap \(not set\): matches/);
    expect(explain).not.toMatch(/SOMETHING_UNRELATED|HYPERFINE|PWD/);
  });
});

// ---------------------------------------------------------------------------

describe.runIf(haveCc())('a private library whose constructor looks a variable up', () => {
  const cache = tmpCacheDir();
  afterAll(() => removeDir(cache));
  const lib = path.join(work, 'lib');
  fs.mkdirSync(lib);
  let prog = '';
  let walker = '';
  beforeAll(() => {
    // The constructor keeps what it saw: a restore must show the caller's value, or run cold.
    fs.writeFileSync(path.join(lib, 'mode.c'), `#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
char cx_mode[64] = "none";
char cx_secure[64] = "none";
__attribute__((constructor)) static void init(void) {
  const char *m = getenv("CX_TEST_MODE");
  if (m) strncpy(cx_mode, m, 63);
  const char *s = secure_getenv("CX_TEST_SECURE");
  if (s) strncpy(cx_secure, s, 63);
}
`);
    fs.writeFileSync(path.join(lib, 'walk.c'), `#include <string.h>
extern char **environ;
int cx_count;
__attribute__((constructor)) static void init(void) {
  for (char **e = environ; *e; e++) if (strncmp(*e, "CX_", 3) == 0) cx_count++;
}
`);
    fs.writeFileSync(path.join(lib, 'main.c'), `#include <stdio.h>
#include <string.h>
extern char cx_mode[64], cx_secure[64];
int main(int argc, char **argv) {
  printf("mode=%s secure=%s\\n", cx_mode, cx_secure);
  if (argc > 1 && strcmp(argv[1], "maps") == 0) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) fputs(line, stdout);
  }
  return 0;
}
`);
    fs.writeFileSync(path.join(lib, 'wmain.c'), `#include <stdio.h>
extern int cx_count;
int main(void) { printf("count=%d\\n", cx_count); return 0; }
`);
    execFileSync('cc', ['-O1', '-shared', '-fPIC', '-o', path.join(lib, 'libcxmode.so'), path.join(lib, 'mode.c')]);
    execFileSync('cc', ['-O1', '-shared', '-fPIC', '-o', path.join(lib, 'libcxwalk.so'), path.join(lib, 'walk.c')]);
    prog = path.join(lib, 'mode-prog');
    walker = path.join(lib, 'walk-prog');
    execFileSync('cc', ['-O1', '-o', prog, path.join(lib, 'main.c'), `-L${lib}`, '-lcxmode', `-Wl,-rpath,${lib}`]);
    execFileSync('cc', ['-O1', '-o', walker, path.join(lib, 'wmain.c'), `-L${lib}`, '-Wl,--no-as-needed', '-lcxwalk', `-Wl,-rpath,${lib}`]);
  });
  const env = baseEnv(cache);

  it('is keyed on the variables looked up (getenv and secure_getenv), not on the rest', () => {
    const w = cx(['--warm', prog], env);
    expect(w.status, w.stderr).toBe(0);
    const r = cx([prog, 'maps'], { ...env, UNRELATED: 'x', ...hyperfine() }, elsewhere);
    expect(r.stdout.split('\n')[0]).toBe('mode=none secure=none');
    expect(mapsAnImage(r.stdout, cache), `not restored (${lastOutcome(cache)})`).toBe(true);
    const explain = cx(['--explain', prog], env).stdout;
    expect(explain).toMatch(/depends on +CX_TEST_MODE \(not set\): matches/);
    expect(explain).toMatch(/depends on +CX_TEST_SECURE \(not set\): matches/);
  });

  it('another value of one gives the right output at once (cold), and never the image', () => {
    for (const [mode, secure] of [['fast', undefined], [undefined, 'yes'], ['', undefined]] as const) {
      const e: Env = { ...env, ...(mode !== undefined ? { CX_TEST_MODE: mode } : {}), ...(secure ? { CX_TEST_SECURE: secure } : {}) };
      const r = cx([prog, 'maps'], e);
      expect(r.stdout.split('\n')[0]).toBe(`mode=${mode === undefined ? 'none' : mode} secure=${secure ?? 'none'}`);
      expect(mapsAnImage(r.stdout, cache)).toBe(false);
      expect(lastOutcome(cache)).toBe('FAIL_ENV');
    }
    expect(cx(['--explain', prog], { ...env, CX_TEST_MODE: 'fast' }).stdout).toMatch(/CX_TEST_MODE \(not set\): differs \(set in this environment\)/);
  });

  it('the warmer takes a variant for the other environment; both environments then restore', async () => {
    const warmEnv: Env = { ...env, CACHED_EXEC_RETAKE_SECONDS: '0' };
    delete warmEnv.CACHED_EXEC_NO_WARM;
    const fast: Env = { ...warmEnv, CX_TEST_MODE: 'fast' };
    expect(cx([prog], fast).stdout).toBe('mode=fast secure=none\n'); // cold: FAIL_ENV, queues a re-take
    const restoredFast = (): boolean => {
      const r = cx([prog, 'maps'], { ...env, CX_TEST_MODE: 'fast' });
      return r.stdout.startsWith('mode=fast secure=none\n') && mapsAnImage(r.stdout, cache);
    };
    expect(await waitFor(restoredFast, 60_000), `no variant restored (${lastOutcome(cache)})`).toBe(true);
    const images = fs.readdirSync(path.join(cache, 'images')).filter((f) => f.endsWith('.img'));
    expect(images).toHaveLength(2);
    // The first environment still restores its own image.
    const r = cx([prog, 'maps'], env);
    expect(r.stdout.split('\n')[0]).toBe('mode=none secure=none');
    expect(mapsAnImage(r.stdout, cache)).toBe(true);
    expect(cx(['--explain', prog], { ...env, CX_TEST_MODE: 'fast' }).stdout).toMatch(/looked at +user variant .*: HIT/);
  });

  it('re-takes of one key are rate-limited (CACHED_EXEC_RETAKE_SECONDS)', () => {
    const queue = path.join(cache, 'queue');
    const limited: Env = { ...env, CACHED_EXEC_RETAKE_SECONDS: '3600' };
    delete limited.CACHED_EXEC_NO_WARM;
    // The warmer just re-took this key (the test before): another environment within the hour queues nothing.
    expect(cx([prog], { ...limited, CX_TEST_MODE: 'slow' }).stdout).toBe('mode=slow secure=none\n');
    expect(lastOutcome(cache)).toBe('FAIL_ENV');
    expect(fs.existsSync(queue) ? fs.readdirSync(queue).filter((f) => !f.startsWith('.')) : []).toEqual([]);
  });

  it('a constructor that walks environ itself binds the whole environment: another one runs cold, correctly', () => {
    const w = cx(['--warm', walker], env);
    expect(w.status, w.stderr).toBe(0);
    const image = /^image +(\/\S+)/m.exec(cx(['--explain', walker], env).stdout)?.[1] ?? '';
    expect(cx(['--inspect', image], env).stdout).toMatch(/environment +the whole environment/);
    expect(cx([walker], env).stdout).toBe('count=0\n');
    expect(lastOutcome(cache)).toBe('HIT');
    expect(cx([walker], { ...env, CX_MORE: '1' }).stdout).toBe('count=1\n');
    expect(lastOutcome(cache)).toBe('FAIL_ENV');
  });
});

// ---------------------------------------------------------------------------

describe('post-init images keyed on what the init read', () => {
  const cache = tmpCacheDir();
  afterAll(() => removeDir(cache));
  const home = path.join(work, 'home');
  fs.mkdirSync(home);
  const rc = path.join(home, 'rc.sh');
  const lib = path.join(home, 'lib.sh');
  const writeInit = (version: string): void => {
    fs.writeFileSync(lib, `lib_version() { echo "lib ${version}"; }\n`);
    // RC_MODE is set by the init over the caller's value: cold runs always see "rc".
    fs.writeFileSync(rc, `. "${lib}"\ngreeting="hello \${GREETING_NAME:-world}"\n[ -n "$RC_DEBUG" ] && rc_debug=on\nRC_MODE=rc\n`);
  };
  writeInit('one');
  const env = baseEnv(cache, { HOME: home, GREETING_NAME: 'alice', RC_MODE: 'snapshot' });
  const after = [`--after-init=${rc}`, 'bash', '-c', 'echo "$greeting ${rc_debug:-off} $RC_MODE $(lib_version) $1" $$', 'name', 'arg'];
  const body = (out: string): string => out.replace(/ \d+\n$/, '\n');

  it('warms, then restores from another directory with an unrelated variable and no CACHED_EXEC_VARY_ENV', async () => {
    const w = cx(['--warm', `--after-init=${rc}`, 'bash'], env);
    expect(w.status, w.stderr).toBe(0);
    const before = records(cache).length;
    const r = await run(LAUNCHER, after, { env: { ...env, PWD: elsewhere, UNRELATED: 'x', ...hyperfine() }, cwd: elsewhere });
    expect(r.stdout.toString()).toBe(`hello alice off rc lib one arg ${r.pid}\n`);
    expect(records(cache).slice(before).map((x) => x.outcome)).toEqual(['HIT']);
    const explain = cx(['--explain', `--after-init=${rc}`, 'bash'], { ...env, UNRELATED: 'x' }).stdout;
    expect(explain).toMatch(/depends on +GREETING_NAME \(set\): matches/);
    expect(explain).toMatch(/depends on +RC_DEBUG \(not set\): matches/);
  });

  it('a variable the init read or assigned, changed or set, gives the cold output (right), not the image', () => {
    // (A restore would apply the caller's RC_MODE over the init's assignment.)
    for (const [e, want] of [[{ GREETING_NAME: 'bob' }, 'hello bob off'], [{ RC_DEBUG: '1' }, 'hello alice on'], [{ RC_MODE: 'caller' }, 'hello alice off']] as const) {
      const r = cx(after, { ...env, ...e });
      expect(body(r.stdout)).toBe(`${want} rc lib one arg\n`);
      expect(lastOutcome(cache)).toBe('FAIL_ENV');
    }
    expect(cx(['--explain', `--after-init=${rc}`, 'bash'], env).stdout).toMatch(/depends on +RC_MODE \(set\): matches/);
  });

  it('an edit of a sourced file: one cold run with the new content, then the warmer re-takes it and runs restore it', async () => {
    const warmEnv: Env = { ...env, CACHED_EXEC_RETAKE_SECONDS: '0' };
    delete warmEnv.CACHED_EXEC_NO_WARM;
    await new Promise((r) => setTimeout(r, 1100)); // a new mtime even on coarse timestamps
    writeInit('two');
    const first = cx(after, warmEnv);
    expect(body(first.stdout)).toBe('hello alice off rc lib two arg\n');
    expect(lastOutcome(cache)).toBe('FAIL_STALE_FILE');
    const restoredTwo = (): boolean => {
      const n = records(cache).length;
      const r = cx(after, env);
      return body(r.stdout) === 'hello alice off rc lib two arg\n' && records(cache).slice(n).some((x) => x.outcome === 'HIT');
    };
    expect(await waitFor(restoredTwo, 60_000), `not restored after the re-take (${lastOutcome(cache)})`).toBe(true);
  });
});

describe('a post-init python image keyed on the os.environ reads of its init', () => {
  const cache = tmpCacheDir();
  afterAll(() => removeDir(cache));
  const init = path.join(work, 'init.py');
  fs.writeFileSync(init, 'import os\nmode = os.environ.get("APP_MODE", "dev")\nverbose = "APP_VERBOSE" in os.environ\n');
  const env = baseEnv(cache, { APP_MODE: 'prod' });
  const py = resolveOnPath('python3');
  const args = [`--after-init=${init}`, 'python3', '-c', 'print("ok")'];

  it.runIf(py !== null)('restores with an unrelated variable; a read variable changed runs cold', () => {
    const w = cx(['--warm', `--after-init=${init}`, 'python3'], env);
    expect(w.status, w.stderr).toBe(0);
    const explain = cx(['--explain', `--after-init=${init}`, 'python3'], { ...env, UNRELATED: '1' }).stdout;
    expect(explain).toMatch(/next run +restores/);
    expect(explain).toMatch(/depends on +APP_MODE \(set\): matches/);
    expect(explain).toMatch(/depends on +APP_VERBOSE \(not set\): matches/);
    expect(explain).toMatch(/depends on +every variable named PYTHON\*/);
    const n = records(cache).length;
    expect(cx(args, { ...env, UNRELATED: '1', ...hyperfine() }).stdout).toBe('ok\n');
    expect(records(cache).slice(n).map((x) => x.outcome)).toEqual(['HIT']);
    expect(cx(args, { ...env, APP_MODE: 'test' }).stdout).toBe('ok\n');
    expect(lastOutcome(cache)).toBe('FAIL_ENV');
    expect(cx(['--explain', `--after-init=${init}`, 'python3'], { ...env, APP_VERBOSE: '' }).stdout).toMatch(/APP_VERBOSE \(not set\): differs/);
  });
});
