/**
 * The end of a restored python run (shell/cached_exec_resume.py _fast_exit):
 * python's teardown is skipped only when it would do nothing anyone sees, and
 * what it would do first still happens. Each case compares the restored run
 * with a plain `python3 script` (stdout, stderr, status); whether the teardown
 * ran is read from outside: python's teardown puts SIGINT's handler back
 * (rt_sigaction(SIGINT, SIG_DFL)), which strace sees after the program's last
 * write, and a skipped one does not.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords, foldStats, summarize } from '../../src/cache/stats.js';
import { Store } from '../../src/cache/store.js';
import { LAUNCHER, baseEnv, removeDir, run, tmpCacheDir, tmpDir, type Env, type RunResult } from '../helpers/cx.js';

const PY = '/usr/bin/python3';
const cache = tmpCacheDir();
const work = tmpDir('cx-python-exit-');
const lib = path.join(work, 'lib');
fs.mkdirSync(lib);

// What real tools' imports leave behind: _abc's caches (weak references with a
// C callback), a threading.local, a logging handler holding the stderr it found,
// certifi's context manager entered at import and exited by atexit, a module
// keeping the sys.stdout it found.
fs.writeFileSync(path.join(lib, 'cxexit.py'), [
  'import atexit, collections.abc, contextlib, logging, pathlib, sys, threading',
  'isinstance([], collections.abc.Hashable)',
  'LOCAL = threading.local()',
  'LOCAL.x = 1',
  "LOG = logging.getLogger('cxexit')",
  'LOG.addHandler(logging.StreamHandler())',
  '@contextlib.contextmanager',
  'def _as_path():',
  '    yield pathlib.Path(__file__)',
  '_CTX = _as_path()',
  'PATH = _CTX.__enter__()',
  'atexit.register(lambda: _CTX.__exit__(None, None, None))',
  'SAVED_STDOUT = sys.stdout',
  '',
].join('\n'));
// An object on a reference cycle whose __del__ writes: plain python's last collection finalizes it.
fs.writeFileSync(path.join(lib, 'cxcycle.py'), [
  'import os',
  'class Cyclic:',
  '    def __del__(self, _write=os.write):',
  "        _write(1, b'cyclic finalized\\n')",
  'KEPT = Cyclic()',
  'KEPT.me = KEPT',
  '',
].join('\n'));

const env: Env = baseEnv(cache, { PYTHONPATH: lib });
const after = (preload: string, args: string[]): string[] => ['--after-init', '--preload', preload, PY, ...args];

const script = (name: string, body: string[]): string => {
  const p = path.join(work, name);
  fs.writeFileSync(p, body.join('\n') + '\n');
  return p;
};

/** Restores that stayed restored: a FAIL_ADAPTER record takes back its run's HIT (the adapter ran it cold). */
const hits = (): number => {
  const log = path.join(cache, 'stats', 'runs.log');
  const records = fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records : [];
  return records.filter((r) => r.outcome === 'HIT').length - records.filter((r) => r.outcome === 'FAIL_ADAPTER').length;
};

const observed = (r: RunResult): { stdout: string; stderr: string; status: number | null; signal: string | null } =>
  ({ stdout: r.stdout.toString(), stderr: r.stderr.toString(), status: r.status, signal: r.signal });

/** A restored run under strace: whether python's teardown ran (it resets SIGINT), and the program's own output. */
function tracedRestore(preload: string, prog: string): { teardown: boolean; stdout: string } {
  const before = hits();
  const r = spawnSync('strace', ['-f', '-qq', '-e', 'trace=rt_sigaction', '-e', 'signal=none', '-o', path.join(work, 'trace'),
    LAUNCHER, ...after(preload, [prog])], { cwd: work, env, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(hits() - before, 'the traced run restored').toBe(1);
  const trace = fs.readFileSync(path.join(work, 'trace'), 'utf8');
  return { teardown: /rt_sigaction\(SIGINT, \{sa_handler=SIG_DFL/.test(trace), stdout: r.stdout };
}

async function compare(preload: string, prog: string): Promise<RunResult> {
  const plain = await run(PY, [prog], { cwd: work, env });
  const before = hits();
  const restored = await run(LAUNCHER, after(preload, [prog]), { cwd: work, env });
  expect(hits() - before, restored.stderr.toString()).toBe(1);
  expect(observed(restored)).toEqual(observed(plain));
  return restored;
}

const haveStrace = spawnSync('strace', ['-V']).status === 0;

beforeAll(() => {
  for (const preload of ['cxexit', 'cxexit,cxcycle']) {
    const w = spawnSync(LAUNCHER, ['--warm', '--after-init', '--preload', preload, PY], { env, encoding: 'utf8', timeout: 180_000 });
    expect(w.status, `${w.stdout}${w.stderr}`).toBe(0);
  }
}, 400_000);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('the end of a restored python run', () => {
  it('strace is here (the teardown is read from its trace)', () => {
    expect(haveStrace).toBe(true);
  });

  const common = [
    'import atexit, collections.abc, sys, threading, cxexit',
    'print(isinstance({}, collections.abc.Mapping), cxexit.PATH.name)',
    "cxexit.LOG.warning('logged through the handler the import made')",
    "threading._register_atexit(print, 'threading atexit')",
    "atexit.register(print, 'atexit')",
    "cxexit.SAVED_STDOUT.write('through the stream a module kept, no newline')",
  ];

  it('skips the teardown after what tools leave (abc caches, thread locals, logging, certifi), with every exit action done', async () => {
    const prog = script('fast.py', common);
    const r = await compare('cxexit', prog);
    expect(r.stdout.toString()).toContain('through the stream a module kept, no newlinethreading atexit\natexit\n');
    expect(tracedRestore('cxexit', prog).teardown).toBe(false);
  });

  it('runs the teardown when an object the init made is on a reference cycle with __del__ (plain python finalizes it)', async () => {
    const prog = script('cycle.py', [...common, 'import cxcycle']);
    const r = await compare('cxexit,cxcycle', prog);
    expect(r.stdout.toString()).toContain('cyclic finalized\n');
    expect(tracedRestore('cxexit,cxcycle', prog).teardown).toBe(true);
  });

  it('runs the teardown when the program added an audit hook (teardown calls it)', async () => {
    const prog = script('audit.py', [
      ...common,
      'import os',
      'def hook(event, args, _write=os.write):',
      "    if event.startswith('cpython.'):  # cpython.PyInterpreterState_Clear, at teardown",
      "        _write(1, b'audit hook at teardown\\n')",
      'sys.addaudithook(hook)',
    ]);
    const r = await compare('cxexit', prog);
    expect(r.stdout.toString()).toContain('audit hook at teardown\n');
    expect(tracedRestore('cxexit', prog).teardown).toBe(true);
  });

  it('runs the teardown when the program left a file open (its buffer is flushed then)', async () => {
    const out = path.join(work, 'open.txt');
    const prog = script('open.py', [...common, `f = open(${JSON.stringify(out)}, 'w')`, "f.write('tail without close')"]);
    await compare('cxexit', prog);
    expect(fs.readFileSync(out, 'utf8')).toBe('tail without close');
    expect(tracedRestore('cxexit', prog).teardown).toBe(true);
  });
});

describe('a restore that the adapter then runs cold', () => {
  it('is counted as a fallback, not a hit: the adapter appends the record the launcher prepared', async () => {
    // A cxexit.py in the cwd shadows the preloaded module for `python3 -c` (the cwd is sys.path[0]).
    const shadow = path.join(work, 'shadow');
    fs.mkdirSync(shadow, { recursive: true });
    fs.writeFileSync(path.join(shadow, 'cxexit.py'), 'print("the shadowing module")\n');
    const args = ['-c', 'import cxexit'];
    const plain = await run(PY, args, { cwd: shadow, env });
    expect(plain.stdout.toString()).toBe('the shadowing module\n');
    const log = path.join(cache, 'stats', 'runs.log');
    const before = decodeRunRecords(fs.readFileSync(log)).records.length;
    const counted = summarize(foldStats(new Store(cache)).counters);
    const r = await run(LAUNCHER, after('cxexit', args), { cwd: shadow, env });
    expect(observed(r)).toEqual(observed(plain));
    const added = decodeRunRecords(fs.readFileSync(log)).records.slice(before);
    expect(added.map((x) => x.outcome)).toEqual(['HIT', 'FAIL_ADAPTER']);
    expect(added[1]?.pid).toBe(added[0]?.pid);
    expect(added[1]?.key).toBe(added[0]?.key);
    const s = summarize(foldStats(new Store(cache)).counters);
    expect(s.outcomes.FAIL_ADAPTER).toBe((counted.outcomes.FAIL_ADAPTER ?? 0) + 1);
    expect([s.hits, s.fallbacks, s.runs]).toEqual([counted.hits, counted.fallbacks + 1, counted.runs + 1]);
  });
});
