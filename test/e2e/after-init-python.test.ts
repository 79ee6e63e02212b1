/**
 * Post-init images of python3 (--after-init --preload), end to end: a
 * python3 that already imported a set of modules is restored inside the
 * harness's child with argv, environment and working directory different from
 * the snapshot's, and compared with the cold run (CACHED_EXEC_DISABLE=1, the
 * same adapter run directly) and with a plain `python3 app.py`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LAUNCHER, baseEnv, removeDir, run, tmpCacheDir, tmpDir, type Env, type RunResult } from '../helpers/cx.js';

const cache = tmpCacheDir();
const work = tmpDir('cx-after-init-py-');
const lib = path.join(work, 'lib');
const app = path.join(work, 'app dir');
fs.mkdirSync(lib);
fs.mkdirSync(app);
const mod = path.join(lib, 'cxmod.py');
const writeModule = (v: string): void => fs.writeFileSync(mod, `VERSION = ${JSON.stringify(v)}\n`);
writeModule('one');

const PRELOAD = 'json,decimal,asyncio,cxmod';
const env: Env = baseEnv(cache, { PYTHONPATH: lib, CACHED_EXEC_VARY_ENV: 'FOO' });
const runEnv: Env = { ...env, SHLVL: '3', PWD: app, FOO: 'changed' };

function records(): ReturnType<typeof decodeRunRecords>['records'] {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records : [];
}
// A FAIL_ADAPTER record takes back its run's HIT: the python adapter ran it cold after the restore.
const hits = (): number => records().filter((r) => r.outcome === 'HIT').length - records().filter((r) => r.outcome === 'FAIL_ADAPTER').length;
/** The launcher's outcome for the last run, for assertion messages. */
const lastOutcome = (): string => String(records().at(-1)?.outcome ?? 'none');

/** images/<key>.pages saying FULL for this image (docs/resume-protocol.md): every writable page populated. */
function fullPagesFile(img: string): void {
  const st = fs.statSync(img, { bigint: true });
  const b = Buffer.alloc(64);
  b.writeBigUInt64LE(0x3153454741505843n, 0); // "CXPAGES1"
  [st.dev, st.ino, st.size, st.mtimeNs / 1_000_000_000n, st.mtimeNs % 1_000_000_000n].forEach((v, i) => b.writeBigUInt64LE(v, 8 + 8 * i));
  b.writeUInt32LE(1, 48);
  fs.writeFileSync(img.replace(/\.img$/, '.pages'), b, { mode: 0o600 });
}

const after = (args: string[]): string[] => ['--after-init', '--preload', PRELOAD, 'python3', ...args];

const script = (name: string, body: string): string => {
  const p = path.join(app, name);
  fs.writeFileSync(p, body);
  return p;
};

async function both(args: string[], input?: string): Promise<{ cold: RunResult; restored: RunResult; plain: RunResult }> {
  const common = { cwd: app, ...(input !== undefined ? { input } : {}) };
  const cold = await run(LAUNCHER, after(args), { ...common, env: { ...runEnv, CACHED_EXEC_DISABLE: '1' } });
  const plain = await run('python3', args, { ...common, env: runEnv });
  // A run whose random layout put the launcher's stack or vdso where the image (taken without
  // ASLR) must go is cold by rule (FAIL_COLLISION, map.c check_stack_room: about 1 in 1000
  // here). Such a run must still equal the cold one; then the restore is tried again.
  for (let attempt = 1; ; attempt++) {
    const before = hits();
    const restored = await run(LAUNCHER, after(args), { ...common, env: runEnv });
    if (hits() === before && lastOutcome() === 'FAIL_COLLISION' && attempt < 3) {
      expect(observed(restored)).toEqual(observed(cold));
      continue;
    }
    expect(hits() - before, `restored (${lastOutcome()}): ${restored.stderr.toString()}`).toBe(1);
    return { cold, restored, plain };
  }
}

function observed(r: RunResult): { stdout: string; stderr: string; status: number | null; signal: string | null } {
  const mask = (s: string): string => s.split(String(r.pid)).join('<PID>').replace(/^CACHED_EXEC_DISABLE[= ]1\n/m, '')
    .replace(/\('CACHED_EXEC_DISABLE', '1'\), /, '');
  return { stdout: mask(r.stdout.toString()), stderr: mask(r.stderr.toString()), status: r.status, signal: r.signal };
}

beforeAll(() => {
  const w = spawnSync(LAUNCHER, ['--warm', '--after-init', '--preload', PRELOAD, 'python3'], { env, encoding: 'utf8', timeout: 120_000 });
  expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
}, 120_000);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('python3 restored after its imports, compared with cold and plain runs', () => {
  const cases: { title: string; args: () => string[]; input?: string }[] = [
    { title: 'sys.argv, __name__, __file__, sys.path[0]', args: () => [script('a.py', 'import sys\nprint(sys.argv, __name__, __file__, sys.path[0])\n'), 'x', 'y z'] },
    { title: 'the environment', args: () => [script('env.py', 'import os\nfor k, v in sorted(os.environ.items()): print(k, v)\n')] },
    { title: 'working directory and pid', args: () => [script('cwd.py', 'import os\nprint(os.getcwd(), os.getpid(), os.getppid() > 1)\n')] },
    { title: 'a preloaded module in use', args: () => ['-c', 'import json, decimal, cxmod; print(json.dumps({"v": cxmod.VERSION}), decimal.Decimal("1.10") + 1)'] },
    { title: 'a traceback', args: () => [script('tb.py', 'def f(x):\n    return 1 / x\n\nf(0)\n')] },
    { title: 'exit codes', args: () => [script('exit.py', 'import sys\nprint("bye", flush=True)\nsys.exit(3)\n')] },
    { title: 'sys.exit with a message', args: () => ['-c', 'import sys; sys.exit("fatal: something")'] },
    { title: 'threads and a subprocess', args: () => [script('thr.py', [
      'import threading, subprocess',
      'out = []',
      't = threading.Thread(target=lambda: out.append(sum(range(1000))))',
      't.start(); t.join(); print(out)',
      'print(subprocess.run(["echo", "from a child"], capture_output=True, text=True).stdout.strip())',
      '',
    ].join('\n'))] },
    { title: 'stdin', args: () => ['-c', 'import sys; print(sys.stdin.read().upper())'], input: 'some input\n' },
    // The snapshot raises RLIMIT_STACK for the exec alone (trace.ts farMmapArea): glibc must have read the real one.
    { title: "RLIMIT_STACK and glibc's default thread stack size", args: () => ['-c', [
      'import ctypes, resource',
      'libc = ctypes.CDLL(None)',
      'attr = ctypes.create_string_buffer(256)',
      'size = ctypes.c_size_t()',
      'assert libc.pthread_getattr_default_np(attr) == 0 and libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0',
      'print(resource.getrlimit(resource.RLIMIT_STACK), size.value)',
    ].join('\n')] },
    // The exit's own work, which a restore makes cheaper by copying the image's writable pages up front (map.c).
    { title: 'atexit, weakref.finalize and __del__ at exit', args: () => [script('fin.py', [
      'import atexit, sys, weakref, json',
      'class Noisy:',
      '    def __del__(self): sys.stdout.write("del " + json.dumps(self.tag) + "\\n")',
      'class Obj: pass',
      'kept = Noisy(); kept.tag = [1, 2]',
      'o = Obj(); weakref.finalize(o, print, "finalized")',
      'atexit.register(print, "atexit", len(sys.modules) > 10)',
      'print("main done")',
      '',
    ].join('\n'))] },
  ];
  for (const c of cases) {
    it(c.title, async () => {
      const { cold, restored, plain } = await both(c.args(), c.input);
      expect(observed(restored)).toEqual(observed(cold));
      expect(observed(restored)).toEqual(observed(plain));
    });
  }

  it('a file written without closing it has the same content as cold', async () => {
    const body = 'import sys, json\nf = open(sys.argv[1], "w")\nf.write(json.dumps(list(range(2000))))\nf.write("\\nend\\n")\n';
    const prog = script('unclosed.py', body);
    const out = (name: string): string => path.join(work, name);
    const { cold, restored, plain } = await both([prog, out('x')]).then(async () => ({
      cold: await run(LAUNCHER, after([prog, out('cold')]), { cwd: app, env: { ...runEnv, CACHED_EXEC_DISABLE: '1' } }),
      plain: await run('python3', [prog, out('plain')], { cwd: app, env: runEnv }),
      restored: await run(LAUNCHER, after([prog, out('restored')]), { cwd: app, env: runEnv }),
    }));
    expect([cold.status, plain.status, restored.status]).toEqual([0, 0, 0]);
    const want = fs.readFileSync(out('plain'), 'utf8');
    expect(want.endsWith('end\n')).toBe(true);
    expect(fs.readFileSync(out('cold'), 'utf8')).toBe(want);
    expect(fs.readFileSync(out('restored'), 'utf8')).toBe(want);
  });

  it("with a learned-pages file that says FULL (python's full exit records one), the image's writable pages are private copies before the program runs (MADV_POPULATE_WRITE, Linux >= 5.14)", async () => {
    // Without it the first restore learns (populates nothing) and later ones populate the learned set: test/e2e/learned-pages.test.ts.
    for (const n of fs.readdirSync(path.join(cache, 'images')).filter((x) => x.endsWith('.img'))) {
      fullPagesFile(path.join(cache, 'images', n));
    }
    // Seen from the kernel: smaps of the restored process's writable mappings of the image file.
    const code = [
      'import re, sys',
      'img = anon = size = 0',
      'cur = None',
      'for line in open("/proc/self/smaps"):',
      '    m = re.match(r"[0-9a-f]+-[0-9a-f]+ (\\S+) \\S+ \\S+ \\S+ *(.*)", line)',
      '    if m: cur = m.group(1) == "rw-p" and m.group(2).endswith(".img"); img += cur; continue',
      '    if cur and line.startswith("Size:"): size += int(line.split()[1])',
      '    if cur and line.startswith("Anonymous:"): anon += int(line.split()[1])',
      'print(img, size, anon)',
    ].join('\n');
    const before = hits();
    const r = await run(LAUNCHER, after(['-c', code]), { cwd: app, env: runEnv });
    expect(hits() - before, r.stderr.toString()).toBe(1);
    const [mappings, size, anon] = r.stdout.toString().trim().split(' ').map(Number);
    expect(mappings).toBeGreaterThan(0);
    const [major, minor] = (fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').match(/^(\d+)\.(\d+)/) ?? []).slice(1).map(Number);
    if ((major ?? 0) * 1000 + (minor ?? 0) >= 5014) expect(anon).toBe(size);
    else expect(anon).toBeLessThanOrEqual(size);
  });

  it("the image's mappings lie over 1 TiB below its stack, clear of the launcher's random stack and vdso (the collision rule rarely sends a run cold)", async () => {
    // Without it they sat 128 MiB below the stack, inside the 16 GiB where the kernel puts a random stack: ~1% of numpy restores ran cold.
    const code = [
      'libs, stack = [], 0',
      'for line in open("/proc/self/maps"):',
      '    f = line.split()',
      '    lo, hi = (int(x, 16) for x in f[0].split("-"))',
      '    if f[-1] == "[stack]": stack = hi',
      '    elif f[-1].startswith("/") and ".so" in f[-1]: libs.append(hi)',
      'print(stack - max(libs) > 1 << 40, len(libs) > 3)',
    ].join('\n');
    const { cold, restored } = await both(['-c', code]);
    expect(restored.stdout.toString()).toBe('True True\n');
    expect(restored.status).toBe(0);
    expect(cold.status).toBe(0);
  });

  it('os.getpid() is the real pid; random numbers differ between restores', async () => {
    const args = ['-c', 'import os, random; print(os.getpid(), random.random())'];
    const a = await both(args);
    const b = await both(args);
    const [pidA, rndA] = a.restored.stdout.toString().trim().split(' ');
    const [, rndB] = b.restored.stdout.toString().trim().split(' ');
    expect(Number(pidA)).toBe(a.restored.pid);
    expect(rndA).not.toBe(rndB);
  });
});

describe('editing an imported module', () => {
  it('the next run imports the new content', async () => {
    const args = ['-c', 'import cxmod; print(cxmod.VERSION)'];
    expect((await run(LAUNCHER, after(args), { env: runEnv, cwd: app })).stdout.toString()).toBe('one\n');
    writeModule('two');
    const before = hits();
    expect((await run(LAUNCHER, after(args), { env: runEnv, cwd: app })).stdout.toString()).toBe('two\n');
    expect(hits()).toBe(before);
  });
});
