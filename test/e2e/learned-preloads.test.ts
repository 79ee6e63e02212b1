/**
 * Learned preloads (python's --after-init without --preload): a run through
 * the adapter records what it imported, the next snapshot imports that, and
 * restores behave as cold runs and plain python do. Uses the python3 on the
 * system PATH (/usr/bin/python3 on Debian), whatever CI has; the modules are
 * the standard library's and the suite's own (PYTHONPATH).
 *
 * Restores are proven from outside: the launcher's run records (HIT), and
 * strace's list of execve calls (a restore execs nothing but the launcher).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { readLearned, learnedFile } from '../../src/resume/learned.js';
import { LAUNCHER, SYSTEM_PATH, baseEnv, removeDir, run, tmpCacheDir, tmpDir, type Env, type RunResult } from '../helpers/cx.js';

const cache = tmpCacheDir();
const work = tmpDir('cx-learned-');
const lib = path.join(work, 'lib');
const bin = path.join(work, 'bin');
const here = path.join(work, 'cwd');
for (const d of [lib, bin, here]) fs.mkdirSync(d);
const PY = spawnSync('sh', ['-c', 'command -v python3'], { env: { PATH: SYSTEM_PATH }, encoding: 'utf8' }).stdout.trim();
const PY_REAL = fs.realpathSync(PY);
const env: Env = baseEnv(cache, { PYTHONPATH: lib, PATH: `${bin}:${SYSTEM_PATH}` });
const SNAPSHOT_MS = 900_000;

// cxa probes the loopback addresses as urllib3 does at import (HAS_IPV6): a bind to port 0, closed again.
fs.writeFileSync(path.join(lib, 'cxa.py'), [
  'import socket',
  'def probe(family, host):',
  '    s = None',
  '    try:',
  '        s = socket.socket(family)',
  '        s.bind((host, 0))',
  '        return True',
  '    except Exception:',
  '        return False',
  '    finally:',
  '        if s: s.close()',
  'HAS = (probe(socket.AF_INET, "127.0.0.1"), probe(socket.AF_INET6, "::1"))',
  'A = "module a"',
  '',
].join('\n'));
fs.writeFileSync(path.join(lib, 'cxnoisy.py'), 'print("noisy at import")\nN = 1\n');
fs.mkdirSync(path.join(lib, 'cxmain'));
fs.writeFileSync(path.join(lib, 'cxmain', '__init__.py'), '');
fs.writeFileSync(path.join(lib, 'cxmain', '__main__.py'),
  'import sys, json\nprint("main", json.dumps(sys.argv[1:]), __name__, sys.path[0] == __import__("os").getcwd())\n');

function records(): ReturnType<typeof decodeRunRecords>['records'] {
  const log = path.join(cache, 'stats', 'runs.log');
  return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records : [];
}
// A FAIL_ADAPTER record takes back its run's HIT: the python adapter ran it cold after the restore.
const hits = (): number => records().filter((r) => r.outcome === 'HIT').length - records().filter((r) => r.outcome === 'FAIL_ADAPTER').length;
const lastOutcome = (): string => String(records().at(-1)?.outcome ?? 'none');

function writeScript(name: string, body: string): string {
  const p = path.join(bin, name);
  fs.writeFileSync(p, `#!${PY}\n${body}`);
  fs.chmodSync(p, 0o755);
  return p;
}

function warm(program: string, e: Env = env): { status: number | null; text: string } {
  const w = spawnSync(LAUNCHER, ['--warm', '--after-init', program], { env: e, cwd: here, encoding: 'utf8', timeout: SNAPSHOT_MS });
  return { status: w.status, text: `${w.stdout}${w.stderr}` };
}

function observed(r: RunResult): { stdout: string; stderr: string; status: number | null; signal: string | null } {
  return { stdout: r.stdout.toString(), stderr: r.stderr.toString(), status: r.status, signal: r.signal };
}

/** A run through the launcher that must be a restore (one more HIT). */
async function restored(args: string[], cwd = here, e: Env = env): Promise<RunResult> {
  const before = hits();
  const r = await run(LAUNCHER, args, { env: e, cwd });
  expect(hits() - before, `restored (${lastOutcome()}): ${r.stderr.toString()}`).toBe(1);
  return r;
}

/** execve calls of a run, seen by strace from outside. */
function execves(args: string[], cwd = here): string[] {
  const log = path.join(work, `strace.${process.pid}.log`);
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', log, ...args], { env, cwd, encoding: 'utf8' });
  expect(r.status, r.stderr).not.toBeNull();
  const lines = fs.readFileSync(log, 'utf8').split('\n').filter((l) => /execve\(/.test(l) && !/ENOENT/.test(l));
  fs.rmSync(log, { force: true });
  return lines.map((l) => /execve\("([^"]*)"/.exec(l)?.[1] ?? l);
}

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('a #! script run with --after-init', () => {
  const out = path.join(work, 'unclosed.txt');
  const app = writeScript('cxapp', [
    'import sys, json, cxa',
    `f = open(${JSON.stringify(out)}, "w")`,
    'f.write(json.dumps({"argv": sys.argv, "a": cxa.A}) + "\\n")  # never closed: python flushes it at exit',
    'print(sys.argv[0] == __file__, __file__, sys.path[0], __name__, json.dumps(sys.argv[1:]))',
    'if sys.argv[1:] == ["more"]:',
    '    import fractions',
    '    print(fractions.Fraction(1, 3))',
    'if sys.argv[1:] == ["boom"]:',
    '    def f(x):',
    '        return 1 / x',
    '    f(0)',
    'sys.exit(int(sys.argv[1]) if sys.argv[1:2] and sys.argv[1].isdigit() else 0)',
    '',
  ].join('\n'));

  it('learns its imports on a cold run, restores with them, and behaves as plain python', async () => {
    const first = await run(LAUNCHER, ['--after-init', app, '3'], { env, cwd: here });
    expect(first.status).toBe(3);
    const learned = readLearned(learnedFile(cache, `script:${app}`, PY_REAL));
    expect(learned?.plus.map((p) => p.name)).toEqual(expect.arrayContaining(['json', 'cxa']));
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    // Nothing was dropped: cxa's loopback probe is no side effect.
    expect([...(readLearned(learnedFile(cache, `script:${app}`, PY_REAL))?.dropped.keys() ?? [])]).toEqual([]);
    for (const args of [['3'], ['x y', 'z'], ['boom'], []]) {
      const plain = await run(app, args, { env, cwd: here });
      const plainFile = fs.readFileSync(out, 'utf8');
      const r = await restored(['--after-init', app, ...args]);
      expect(observed(r)).toEqual(observed(plain));
      expect(fs.readFileSync(out, 'utf8')).toBe(plainFile);
    }
  }, SNAPSHOT_MS);

  it('a restore execs nothing but the launcher (strace); a cold run execs python', () => {
    const restoredExecs = execves([LAUNCHER, '--after-init', app, '1']);
    expect(restoredExecs).toEqual([LAUNCHER]);
    const cold = execves(['env', 'CACHED_EXEC_DISABLE=1', LAUNCHER, '--after-init', app, '1']);
    expect(cold).toContain(PY);
  });

  it('through a post-init shim: the same as plain, argv[0] the path the shim found', async () => {
    const shims = path.join(work, 'shims');
    const inst = spawnSync(LAUNCHER, ['--shims-install', '--after-init', shims, 'cxapp'], { env, encoding: 'utf8' });
    expect(inst.status, inst.stderr).toBe(0);
    const list = spawnSync(LAUNCHER, ['--shims-list', shims], { env, encoding: 'utf8' });
    expect(list.stdout).toMatch(/cxapp .*post-init/);
    // PATH is part of the key: the shim's runs have their own image.
    const shimEnv = { ...env, PATH: `${shims}:${env.PATH}` };
    const w = warm('cxapp', shimEnv);
    expect(w.status, w.text).toBe(0);
    for (const args of [['2'], ['boom']]) {
      const plain = await run('cxapp', args, { env, cwd: here });
      const before = hits();
      const r = await run('cxapp', args, { env: shimEnv, cwd: here });
      expect(hits() - before, `restored (${lastOutcome()}): ${r.stderr.toString()}`).toBe(1);
      expect(observed(r)).toEqual(observed(plain));
    }
    const shimExecs = spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', path.join(work, 'shim.strace'), 'cxapp', '1'],
      { env: shimEnv, cwd: here, encoding: 'utf8' });
    expect(shimExecs.status).toBe(1);
    const lines = fs.readFileSync(path.join(work, 'shim.strace'), 'utf8').split('\n').filter((l) => /execve\("/.test(l) && !/ENOENT/.test(l));
    expect(lines.map((l) => /execve\("([^"]*)"/.exec(l)?.[1])).toEqual([path.join(shims, 'cxapp')]);
  }, SNAPSHOT_MS);

  it('imports that change between runs: a restored run that imports more adds it, and the next snapshot preloads it', async () => {
    const plain = await run(app, ['more'], { env, cwd: here });
    const r = await restored(['--after-init', app, 'more']);
    expect(observed(r)).toEqual(observed(plain));
    const names = readLearned(learnedFile(cache, `script:${app}`, PY_REAL))?.plus.map((p) => p.name) ?? [];
    expect(names).toContain('fractions');
    // The learned file is a dependency of the image: stale now, cold once.
    const before = hits();
    const cold = await run(LAUNCHER, ['--after-init', app, 'more'], { env, cwd: here });
    expect(hits()).toBe(before);
    expect(observed(cold)).toEqual(observed(plain));
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    expect(observed(await restored(['--after-init', app, 'more']))).toEqual(observed(plain));
  }, SNAPSHOT_MS);

  it('an edited script runs cold once, is learned again and restores the new imports', async () => {
    writeScript('cxapp', 'import decimal\nprint("edited", decimal.Decimal("1.10") + 1)\n');
    const before = hits();
    const cold = await run(LAUNCHER, ['--after-init', app], { env, cwd: here });
    expect(cold.stdout.toString()).toBe('edited 2.10\n');
    expect(hits()).toBe(before);
    expect(lastOutcome()).toBe('FAIL_STALE_FILE');
    const learned = readLearned(learnedFile(cache, `script:${app}`, PY_REAL));
    const names = learned?.plus.map((p) => p.name) ?? [];
    expect(names).toContain('decimal');
    expect(names).not.toContain('cxa');
    await new Promise((r) => setTimeout(r, 50));
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    const r = await restored(['--after-init', app]);
    expect(observed(r)).toEqual(observed(cold));
  }, SNAPSHOT_MS);
});

describe('a "#!/usr/bin/env python3" script', () => {
  it('runs through the python found on PATH, learned and restored as plain', async () => {
    const app = path.join(bin, 'cxenvapp');
    fs.writeFileSync(app, '#!/usr/bin/env python3\nimport sys, json\nprint(json.dumps(sys.argv[1:]), sys.argv[0], sys.executable)\n');
    fs.chmodSync(app, 0o755);
    const plain = await run(app, ['e'], { env, cwd: here });
    const first = await run(LAUNCHER, ['--after-init', app, 'e'], { env, cwd: here });
    expect(observed(first)).toEqual(observed(plain));
    expect(readLearned(learnedFile(cache, `script:${app}`, PY_REAL))?.plus.map((p) => p.name)).toContain('json');
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    expect(observed(await restored(['--after-init', app, 'e']))).toEqual(observed(plain));
  }, SNAPSHOT_MS);
});

describe('the end of a restored run (python\'s teardown is skipped only where it would do nothing)', () => {
  it('atexit, weakref.finalize, a suspended generator, __del__, an open file, exit codes: as plain python', async () => {
    const out = path.join(work, 'fx.out');
    const app = writeScript('cxexit', [
      'import sys, json, atexit, weakref',
      'm = sys.argv[1] if len(sys.argv) > 1 else ""',
      'print("start", m)',
      'if m == "atexit": atexit.register(lambda: print("atexit ran"))',
      'if m == "finalize":',
      '    class O: pass',
      '    o = O()',
      '    weakref.finalize(o, print, "finalized")',
      'if m == "gen":',
      '    def g():',
      '        try:',
      '            yield 1',
      '        finally:',
      '            print("gen finally")',
      '    G = g(); next(G)',
      'if m == "del":',
      '    class D:',
      '        def __del__(self): print("del ran")',
      '    d = D()',
      `if m == "file": f = open(${JSON.stringify(out)}, "w"); f.write("data\\n")`,
      'if m == "exit3": sys.exit(3)',
      'if m == "exitmsg": sys.exit("bye msg")',
      'if m == "partial": sys.stdout.write("no newline")',
      '',
    ].join('\n'));
    await run(LAUNCHER, ['--after-init', app], { env, cwd: here });
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    for (const m of ['', 'atexit', 'finalize', 'gen', 'del', 'file', 'exit3', 'exitmsg', 'partial']) {
      fs.rmSync(out, { force: true });
      const plain = await run(app, [m], { env, cwd: here });
      const plainFile = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null;
      fs.rmSync(out, { force: true });
      const r = await restored(['--after-init', app, m]);
      expect(observed(r), m).toEqual(observed(plain));
      expect(fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null, m).toBe(plainFile);
    }
  }, SNAPSHOT_MS);
});

describe('a module whose import the snapshot refuses', () => {
  it('is dropped (found by bisection), --explain says why, and the output keeps cold order', async () => {
    const app = writeScript('cxnoisyapp', 'print("before")\nimport json, cxnoisy, cxa\nprint("after", json.dumps(cxnoisy.N), cxa.A)\n');
    const plain = await run(app, [], { env, cwd: here });
    expect(plain.stdout.toString()).toBe('before\nnoisy at import\nafter 1 module a\n');
    const first = await run(LAUNCHER, ['--after-init', app], { env, cwd: here });
    expect(observed(first)).toEqual(observed(plain));
    const w = warm(app);
    expect(w.status, w.text).toBe(0);
    const learned = readLearned(learnedFile(cache, `script:${app}`, PY_REAL));
    expect([...(learned?.dropped.keys() ?? [])]).toEqual(['cxnoisy']);
    expect(learned?.dropped.get('cxnoisy')).toMatch(/noisy at import/);
    const ex = spawnSync(LAUNCHER, ['--explain', '--after-init', app], { env, cwd: here, encoding: 'utf8' });
    expect(ex.status, ex.stdout + ex.stderr).toBe(0);
    expect(ex.stdout).toMatch(/dropped +cxnoisy: .*noisy at import/);
    const r = await restored(['--after-init', app]);
    expect(observed(r)).toEqual(observed(plain));
  }, SNAPSHOT_MS);
});

describe('-m modules and shadowing by a file in the cwd', () => {
  const args = ['--after-init', 'python3', '-m', 'cxmain', 'a b', 'c'];
  it('learns a -m module, restores it, and a json.py in the cwd makes the run cold and right', async () => {
    // python3 -m: no script to --warm; the miss queues the snapshot and the warmer takes it.
    const queued = { ...env };
    delete queued.CACHED_EXEC_NO_WARM;
    const plain = await run('python3', args.slice(2), { env, cwd: here });
    const first = await run(LAUNCHER, args, { env: queued, cwd: here });
    expect(observed(first)).toEqual(observed(plain));
    const names = readLearned(learnedFile(cache, 'module:cxmain', PY_REAL))?.plus.map((p) => p.name) ?? [];
    expect(names).toEqual(expect.arrayContaining(['json', 'cxmain']));
    const key = spawnSync(LAUNCHER, ['--internal-key', ...args], { env, cwd: here, encoding: 'utf8' }).stdout.split(' ')[1]?.trim() ?? '';
    const deadline = Date.now() + SNAPSHOT_MS - 60_000;
    while (!fs.existsSync(key) && Date.now() < deadline) {
      // A too-new refusal (the learned file was just written) is not remembered: the next miss queues it again.
      await new Promise((r) => setTimeout(r, 3000));
      const queue = path.join(cache, 'queue');
      if (!fs.existsSync(key) && !(fs.existsSync(queue) && fs.readdirSync(queue).some((n) => !n.startsWith('.')))) {
        await run(LAUNCHER, args, { env: queued, cwd: here });
      }
    }
    expect(fs.existsSync(key), `no image ${key}; refused: ${fs.existsSync(path.join(cache, 'refused')) ? fs.readdirSync(path.join(cache, 'refused')).join(',') : '-'}`).toBe(true);
    const r = await restored(args);
    expect(observed(r)).toEqual(observed(plain));

    // A json.py in the cwd: python -m puts the cwd first on sys.path, so a plain run imports it.
    const shadow = path.join(work, 'shadow');
    fs.mkdirSync(shadow);
    fs.writeFileSync(path.join(shadow, 'json.py'), 'def dumps(x):\n    return "shadowed json"\n');
    const plainShadow = await run('python3', args.slice(2), { env, cwd: shadow });
    expect(plainShadow.stdout.toString()).toMatch(/shadowed json/);
    const s = await run(LAUNCHER, args, { env, cwd: shadow });
    expect(observed(s)).toEqual(observed(plainShadow));
  }, SNAPSHOT_MS);
});
