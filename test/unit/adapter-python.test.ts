/**
 * shell/cached_exec_resume.py, the python adapter of the resume protocol: a
 * resumed run (context on the resume fd; start environment and context
 * differing in argv and environment) and a cold direct run (no resume fd)
 * must each look like `python3 app.py ...` (or -c / -m) run plainly with the
 * context's environment in the context's cwd: same stdout, stderr, exit
 * status and signal. Forms the adapter cannot reproduce run the real python.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESUME_MAGIC, TEST_RESUME_FD, runResumed, type ResumeContext, type RunResult } from '../helpers/resume.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ADAPTER = path.join(ROOT, 'shell', 'cached_exec_resume.py');
const PATH_ENV = '/usr/local/bin:/usr/bin:/bin';
const PRELOAD = 'json,decimal';
type Env = Record<string, string>;

let tmp = '';
let work = ''; // the caller's cwd (physical)
let startEnv: Env = {};
let ctxEnv: Env = {};

/**
 * First line of the test programs: "cx:True" when the run was resumed (json
 * preloaded), "cx:False" in a real python. Stripped before comparing.
 */
const MARK = 'print("cx:%s" % ("json" in __import__("sys").modules), flush=True)\n';

const SCRIPTS: Record<string, string> = {
  'args.py': [
    'import sys, os',
    'print(sys.argv, __name__, __file__, sys.path[0], sys.orig_argv)',
    'print(list(globals()), __loader__.__class__.__name__, __spec__, __builtins__)',
    'print(sys.modules["__main__"] is sys.modules[__name__], sys.flags)',
    'print(sorted(os.listdir("/proc/self/fd")), "CACHED_EXEC_RESUME_FD" in os.environ)',
    '',
  ].join('\n'),
  'env.py': 'import os, subprocess\nprint(sorted(os.environ.items()))\nsubprocess.run("env | sort", shell=True)\n',
  'pid.py': 'import os\nprint(os.getcwd(), os.getpid(), os.getppid())\n',
  'tb.py': 'import json\n\ndef f(x):\n    return 1 / x\n\nprint("before")\nf(0)\n',
  'exit.py': 'import sys, atexit\natexit.register(lambda: print("atexit", "__file__" in globals()))\nprint("bye")\nsys.exit(3)\n',
  'main.py': [
    'import threading, subprocess, multiprocessing, pickle, sys',
    'class Point:',
    '    def __init__(self, x): self.x = x',
    'def square(n): return n * n',
    'if __name__ == "__main__":',
    '    out = []',
    '    t = threading.Thread(target=lambda: out.append(sum(range(1000))))',
    '    t.start(); t.join(); print(out, threading.main_thread().native_id == __import__("os").getpid())',
    '    subprocess.run(["echo", "x"])',
    '    with multiprocessing.Pool(2) as p: print(p.map(square, range(5)))',
    '    print(pickle.loads(pickle.dumps(Point(4))).x, type(Point(1)))',
    '',
  ].join('\n'),
  'interleave.py': [
    'import sys, atexit, warnings',
    'atexit.register(lambda: print("atexit-err", file=sys.stderr))',
    'print("out1"); print("err1", file=sys.stderr); print("out2")',
    'warnings.warn("past the stack", stacklevel=2)',
    'warnings.warn("deprecated", DeprecationWarning)',
    'raise ValueError("boom")',
    '',
  ].join('\n'),
  'stdin.py': 'import sys\nprint(sys.stdin.readline().strip().upper(), sys.stdin.isatty(), sys.stdout.line_buffering)\nprint(sys.stdin.read())\n',
  'rnd.py': 'import random\nprint(random.random(), random.randrange(10**9))\n',
  'syntax.py': 'print("x")\nif then\n',
  'shadow/decimal.py': 'LOCAL = "the local decimal.py"\n',
  'app.py': 'import decimal\nprint(getattr(decimal, "LOCAL", "stdlib decimal"))\n',
  'mod.py': 'import sys\nprint(sys.argv, __name__, __file__, sys.path[0], __spec__.name)\n',
};
SCRIPTS['shadow/app.py'] = SCRIPTS['app.py']!;

/** Spawns `argv` (argv[0] as given, found on PATH) in `cwd` with exactly `env`. */
function run(argv: string[], env: Env, cwd: string, input = '', merge = false): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // 2>&1 through sh: stdout and stderr on one pipe show the order of the writes.
    const [cmd, args] = merge ? ['/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', ...argv]] : [argv[0]!, argv.slice(1)];
    const child = spawn(cmd, args as string[], { argv0: merge ? 'sh' : argv[0]!, env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ stdout, stderr, status, signal }));
  });
}

interface Opts {
  input?: string;
  env?: Env;
  seed?: string;
  preload?: string;
  /** stdout and stderr on one pipe. */
  merge?: boolean;
  /** The caller's cwd (default: work). */
  cwd?: string;
  /** The resumed process's own cwd when it is not the context's. */
  processCwd?: string;
  /** The adapter must run the real python (default: it must not, for programs printing MARK). */
  cold?: boolean;
  /** Applied to stdout and stderr of every run. */
  norm?: (s: string) => string;
}

type Marked = RunResult & { mark?: boolean };

/** The plain reference, a resumed run and a cold direct run of `argv`, MARK lines taken out. */
async function runAll(argv: string[], o: Opts = {}): Promise<Record<'reference' | 'resumed' | 'coldDirect', Marked>> {
  const env = o.env ?? ctxEnv;
  const words = [ADAPTER, '--preload', o.preload ?? PRELOAD, '--'];
  const cwd = o.cwd ?? work;
  const ctx: ResumeContext = { argv, env, cwd, ...(o.seed ? { seed: o.seed } : {}) };
  const input = o.input ?? '';
  const runs = await Promise.all([
    run(argv, env, cwd, input, o.merge),
    o.merge
      ? runResumed('/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', 'python3', ...words], startEnv, ctx, { input })
      : runResumed('python3', words, startEnv, ctx, { input, ...(o.processCwd ? { cwd: o.processCwd } : {}) }),
    run([argv[0] ?? 'python3', ...words, ...argv], env, cwd, input, o.merge),
  ]);
  const [reference, resumed, coldDirect] = runs.map((r): Marked => {
    const m = /^cx:(True|False)\n/m.exec(r.stdout);
    const stdout = m ? r.stdout.slice(0, m.index) + r.stdout.slice(m.index + m[0].length) : r.stdout;
    const out = o.norm ? { ...r, stdout: o.norm(stdout), stderr: o.norm(r.stderr) } : { ...r, stdout };
    return m ? { ...out, mark: m[1] === 'True' } : out;
  });
  return { reference: reference!, resumed: resumed!, coldDirect: coldDirect! };
}

/** Every variant behaves like the plain reference, resumed or cold as expected; returns the reference. */
async function expectSame(argv: string[], o: Opts = {}): Promise<RunResult> {
  const { reference, ...variants } = await runAll(argv, o);
  const { mark, ...ref } = reference;
  expect(mark).not.toBe(true);
  for (const [variant, r] of Object.entries(variants)) {
    const { mark: resumed, ...rest } = r;
    expect({ variant, ...rest }).toEqual({ variant, ...ref });
    if (mark !== undefined) expect({ variant, resumed }).toEqual({ variant, resumed: !o.cold });
  }
  return ref;
}

beforeAll(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'cx-adapter-py-')));
  work = path.join(tmp, 'work');
  for (const d of ['shadow', 'sub']) fs.mkdirSync(path.join(work, d), { recursive: true });
  for (const [name, text] of Object.entries(SCRIPTS)) fs.writeFileSync(path.join(work, name), name.includes('decimal') ? text : MARK + text);
  fs.symlinkSync(path.join(work, 'args.py'), path.join(tmp, 'link.py'));
  fs.mkdirSync(path.join(tmp, 'home'));
  // The snapshot's environment differs from the caller's: changed, added and removed variables.
  startEnv = { PATH: PATH_ENV, HOME: path.join(tmp, 'home'), LC_ALL: 'C', SHLVL: '1', GONE: 'gone', CHANGED: 'old' };
  ctxEnv = { PATH: PATH_ENV, HOME: path.join(tmp, 'home'), LC_ALL: 'C', SHLVL: '3', PWD: work, CHANGED: 'new', ADDED: 'a b=c' };
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('python adapter: scripts run as `python3 app.py` would', () => {
  it('sets sys.argv, __name__, __file__, sys.path[0], __main__ and leaves no extra fd', async () => {
    const r = await expectSame(['python3', 'args.py', 'a', 'b c', '']);
    expect(r.stdout).toContain(`['args.py', 'a', 'b c', ''] __main__ ${work}/args.py ${work} ['python3', 'args.py', 'a', 'b c', '']\n`);
    expect(r.stdout).toMatch(/\['0', '1', '2', [^\]]*\] False\n$/); // as plain python's (the runner may leak one)
    expect(r.stdout).not.toContain(`'${TEST_RESUME_FD}'`);
    await expectSame(['python3', './sub/../args.py', 'x']); // __file__ is cwd + '/' + the path as given
    const viaLink = await expectSame(['python3', '../link.py']); // sys.path[0]: the real directory
    expect(viaLink.stdout).toContain(`${work}/../link.py ${work} `);
    await expectSame(['python3', '--', 'args.py', '-x']);
  });

  it('applies the caller environment: changed, added and removed variables', async () => {
    const r = await expectSame(['python3', 'env.py']);
    expect(r.stdout).toContain("('ADDED', 'a b=c'), ('CHANGED', 'new')");
    expect(r.stdout).toContain('ADDED=a b=c\nCHANGED=new\n');
    expect(r.stdout).not.toContain('GONE');
  });

  it('runs in the caller process: its pid, parent and cwd', async () => {
    const mask = (s: string): string => s.replace(/ \d+ /, ' <PID> ');
    const r = await expectSame(['python3', 'pid.py'], { norm: mask });
    expect(r.stdout).toBe(`${work} <PID> ${process.pid}\n`);
    const { resumed } = await runAll(['python3', 'pid.py']);
    expect(resumed.stdout).toMatch(new RegExp(`^${work} \\d+ ${process.pid}\\n$`));
  });

  it('prints an uncaught exception’s traceback as python does, status 1', async () => {
    const r = await expectSame(['python3', 'tb.py']);
    expect(r.stderr).toBe(['Traceback (most recent call last):',
      `  File "${work}/tb.py", line 8, in <module>`, '    f(0)',
      `  File "${work}/tb.py", line 5, in f`, '    return 1 / x', '           ~~^~~',
      'ZeroDivisionError: division by zero', ''].join('\n'));
    expect(r).toMatchObject({ stdout: 'before\n', status: 1 });
    const syn = await expectSame(['python3', 'syntax.py']);
    expect(syn).toMatchObject({ stdout: '', stderr: expect.stringContaining("SyntaxError: expected ':'"), status: 1 });
  });

  it('exits with sys.exit codes and messages, runs atexit once, dies by SIGINT on KeyboardInterrupt', async () => {
    expect(await expectSame(['python3', 'exit.py'])).toMatchObject({ stdout: 'bye\natexit True\n', status: 3 });
    expect(await expectSame(['python3', '-c', MARK + 'import sys; sys.exit("fatal: something")']))
      .toMatchObject({ stderr: 'fatal: something\n', status: 1 });
    expect(await expectSame(['python3', '-c', 'raise SystemExit']).then((r) => r.status)).toBe(0);
    const ki = await expectSame(['python3', '-c', MARK + 'print("a")\nraise KeyboardInterrupt']);
    expect(ki).toMatchObject({ stdout: 'a\n', status: null, signal: 'SIGINT' });
    expect(ki.stderr).toContain('KeyboardInterrupt');
  });

  it('runs threads, subprocesses, multiprocessing and pickles classes of __main__', async () => {
    const r = await expectSame(['python3', 'main.py']);
    // stdout is a pipe, so block-buffered: the child's "x" comes first.
    expect(r.stdout).toBe("x\n[499500] True\n[0, 1, 4, 9, 16]\n4 <class '__main__.Point'>\n");
  });

  it('buffers and orders stdout, stderr, warnings and atexit output as python does', async () => {
    const r = await expectSame(['python3', 'interleave.py'], { merge: true });
    expect(r.stdout).toMatch(/^err1\nsys:1: UserWarning: past the stack\n.*DeprecationWarning: deprecated\n.*out1\nout2\nTraceback/s);
    expect(r.stdout).toMatch(/ValueError: boom\natexit-err\n$/);
    await expectSame(['python3', '-u', 'interleave.py'], { merge: true });
    // -c and -m flush stdout only at exit, after the traceback and atexit output.
    const c = await expectSame(['python3', '-c', MARK + SCRIPTS['interleave.py']!], { merge: true });
    expect(c.stdout).toMatch(/ValueError: boom\natexit-err\nout1\nout2\n$/);
    await expectSame(['python3', '-uc', MARK + SCRIPTS['interleave.py']!], { merge: true });
  });

  it('reads the caller’s stdin through a stdio set up for the real descriptors', async () => {
    const r = await expectSame(['python3', 'stdin.py'], { input: 'first line\nrest\n' });
    expect(r.stdout).toBe('FIRST LINE False False\nrest\n\n');
  });
});

describe('python adapter: -c and -m', () => {
  it('-c: sys.argv, sys.path[0] and the __main__ python makes', async () => {
    const r = await expectSame(['python3', '-c', `${MARK}import sys; print(sys.argv, repr(sys.path[0]), __name__, list(globals()))`, 'x', '-y']);
    expect(r.stdout).toBe("['-c', 'x', '-y'] '' __main__ ['__name__', '__doc__', '__package__', '__loader__', '__spec__', '__annotations__', '__builtins__', 'sys']\n");
    await expectSame(['python3', '-c', `${MARK}import json, decimal; print(json.dumps([1]), decimal.Decimal("1.10") + 1)`]);
    await expectSame(['python3', '-c', `${MARK}def f(): 1/0\nf()`]);
  });

  it('-m: runs the module through runpy (json.tool on stdin, errors, a missing module)', async () => {
    const m = await expectSame(['python3', '-m', 'mod', 'a']);
    expect(m.stdout).toBe(`['${work}/mod.py', 'a'] __main__ ${work}/mod.py ${work} mod\n`);
    const r = await expectSame(['python3', '-m', 'json.tool'], { input: '{"a": [1, 2]}' });
    expect(r.stdout).toBe('{\n    "a": [\n        1,\n        2\n    ]\n}\n');
    expect((await expectSame(['python3', '-m', 'json.tool'], { input: '{"a":' })).status).toBe(1);
    expect((await expectSame(['python3', '-m', 'no_such_module'])).stderr).toContain('No module named no_such_module');
    await expectSame(['python3', '-m', 'json.tool', '--sort-keys', '/nonexistent']);
  });
});

describe('python adapter: state that must be fresh', () => {
  it('reseeds random from the seed: restores with different seeds differ', async () => {
    const ctx = (seed: string): ResumeContext => ({ argv: ['python3', 'rnd.py'], env: ctxEnv, cwd: work, seed });
    const words = [ADAPTER, '--preload', 'json,random', '--'];
    const [a, b, c] = await Promise.all(['0'.repeat(32), '1'.repeat(32), '0'.repeat(32)]
      .map((seed) => runResumed('python3', words, startEnv, ctx(seed))));
    expect(a!.stdout).toMatch(/^cx:True\n0\.\d+ \d+\n$/);
    expect(a!.stdout).not.toBe(b!.stdout);
    expect(a!.stdout).toBe(c!.stdout);
  });
});

describe('python adapter: --init', () => {
  it('keeps what the init set unless the caller changed it; a failing init runs the real python', async () => {
    const init = path.join(tmp, 'init.py');
    // (A restore is in the caller's cwd whatever the init did; here the cold direct run goes back to it.)
    fs.writeFileSync(init, 'import os, json\nos.environ["INITVAR"] = "from init"\nos.environ["CHANGED"] = "by init"\n');
    fs.writeFileSync(`${init}.cd`, 'import os, json\nos.environ["INITVAR"] = "from init"\nos.environ["CHANGED"] = "by init"\nos.chdir("/")\n');
    const argv = ['python3', '-c', 'import os; print(os.getcwd(), sorted(os.environ.items()))'];
    const words = [ADAPTER, '--preload', 'decimal', '--init', init, '--'];
    const resumed = await runResumed('python3', words, startEnv, { argv, env: ctxEnv, cwd: work });
    const cold = await run(['python3', ...words.map((w) => (w === init ? `${init}.cd` : w)), ...argv], ctxEnv, work);
    expect(resumed).toEqual({ ...cold, stdout: expect.stringContaining(`${work} [('ADDED', 'a b=c'), ('CHANGED', 'new'), `) });
    expect(resumed.stdout).toContain("('INITVAR', 'from init')");
    expect(resumed.stdout).not.toContain('GONE');
    // The cold run of an init that keeps the caller's value: the init's wins.
    expect((await run(['python3', ...words, ...argv], { ...ctxEnv, CHANGED: 'old' }, work)).stdout).toContain("('CHANGED', 'by init')");
    fs.writeFileSync(init, 'raise RuntimeError("broken init")\n');
    expect(await run(['python3', ...words, ...argv], ctxEnv, work)).toEqual(await run(argv, ctxEnv, work));
  });
});

describe('python adapter: cold fallback and protocol errors', () => {
  it('runs options it cannot reproduce with the real python', async () => {
    const cold = { cold: true };
    expect((await expectSame(['python3', '-O', '-c', `${MARK}import sys; print(__debug__, sys.flags.optimize)`], cold)).stdout)
      .toBe('False 1\n');
    await expectSame(['python3', '-B', 'args.py'], cold);
    await expectSame(['python3', '-X', 'dev', '-c', `${MARK}import sys; print(sys.flags.dev_mode)`], cold);
    await expectSame(['python3', '-'], { ...cold, input: `${MARK}import sys; print(sys.argv)\n` });
    await expectSame(['python3', 'no-such-script.py']);
    await expectSame(['python3', 'shadow']); // a directory: python looks for __main__.py
  });

  it('falls back when the script directory shadows a preloaded module', async () => {
    expect((await expectSame(['python3', 'shadow/app.py'], { cold: true })).stdout).toBe('the local decimal.py\n');
    // The same program elsewhere is resumed; a -c in that directory is not.
    expect((await expectSame(['python3', 'app.py'])).stdout).toBe('stdlib decimal\n');
    const c = `${MARK}import decimal; print(decimal.__file__)`;
    const shadow = path.join(work, 'shadow');
    expect((await expectSame(['python3', '-c', c], { cwd: shadow, cold: true })).stdout).toBe(`${shadow}/decimal.py\n`);
    await expectSame(['python3', '-c', c]);
  });

  it('falls back when the caller changes a variable python reads at startup', async () => {
    for (const env of [{ ...ctxEnv, PYTHONHASHSEED: '7' }, { ...ctxEnv, LC_ALL: 'C.UTF-8' }]) {
      const { reference, resumed, coldDirect } = await runAll(['python3', 'app.py'], { env });
      expect(resumed).toEqual(reference);
      expect(coldDirect).toEqual({ ...reference, mark: true }); // no difference from its own start
    }
  });

  it('falls back in the context’s cwd when the process is elsewhere', async () => {
    const { reference, resumed } = await runAll(['python3', 'pid.py'], { processCwd: tmp });
    expect(resumed.stdout.split(' ')[0]).toBe(work);
    expect(resumed.stderr).toBe(reference.stderr);
  });

  it('exits 125 with one line on a bad context', async () => {
    const r = await new Promise<RunResult>((resolve, reject) => {
      const stdio: ('pipe' | 'ignore')[] = ['ignore', 'pipe', 'pipe'];
      while (stdio.length < TEST_RESUME_FD) stdio.push('ignore');
      stdio.push('pipe');
      const child = spawn('python3', [ADAPTER, '--preload', PRELOAD, '--'],
        { env: { ...startEnv, CACHED_EXEC_RESUME_FD: String(TEST_RESUME_FD) }, cwd: work, stdio });
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      const fd = (child.stdio as unknown[])[TEST_RESUME_FD] as NodeJS.WritableStream;
      fd.on('error', () => undefined);
      fd.end(Buffer.from(`${RESUME_MAGIC.replace('1', '9')}\x001\x00python3\x000\x00/\x00${'0'.repeat(32)}\x00`));
      child.on('error', reject);
      child.on('close', (status, signal) => resolve({ stdout, stderr, status, signal }));
    });
    expect(r).toEqual({ stdout: '', stderr: 'cached-exec: bad resume context\n', status: 125, signal: null });
  });
});
