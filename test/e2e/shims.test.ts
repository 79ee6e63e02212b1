/**
 * Shims as a user installs them (--shims-install, --shims-list,
 * --shims-remove, --auto from the statistics, --shell-init), a shell script
 * corpus run with and without them (same output and status; every external
 * command of the shimmed run really restored, counted from the launcher's own
 * records in stats/runs.log, not from anything the tool says), the ways a
 * shim could find itself (shim directory twice on PATH, two shim directories,
 * programs that are symlinks to the launcher, a missing program), and the
 * boot path: system layer, system shims and shell/boot-rc.sh without HOME.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { LOCK_EX, LOCK_NB, flock } from '../../src/sys/libc.js';
import { LAUNCHER, ROOT, SYSTEM_PATH, baseEnv, launcherKey, removeDir, tmpCacheDir, tmpDir, type Env } from '../helpers/cx.js';

const PROGS = ['sed', 'grep', 'cut', 'tr', 'sort', 'uniq', 'wc', 'head', 'cat', 'basename', 'env', 'seq'];

const CORPUS = String.raw`
set -u
set +m
echo "pipeline: $(printf 'b\na\nc\na\n' | sort | uniq -c | tr -s ' ' | sed 's/^ //' | tr '\n' ';')"
echo "subshell: $( (echo one; echo two) | wc -l | tr -d ' ')"
x=$(echo "a:b:c" | cut -d: -f2); echo "substitution: $x"
echo "nested: $(echo "$(echo inner | tr a-z A-Z)" | wc -c | tr -d ' ')"
echo "grep status: $(echo abc | grep -q zzz; echo $?)"
echo "command -v: $(command -v sed | sed 's|.*/||')"
type cut | sed 's|/.*/||'
hash sort 2>/dev/null; echo "hash: $?"
seq 1 5 | head -n 3 | tr '\n' ' '; echo
env X_TEST=1 sh -c 'echo "env child: $X_TEST"'
basename /a/b/c.txt .txt
echo "argv: $0 $#"
(exit 7); echo "status: $?"
sh -c 'exec cat /dev/null'; echo "exec: $?"
printf 'q\np\n' | (exec sort -r)
printf 'z\ny\n' | sort & wait $!; echo "background: $?"
if grep -q nothing /dev/null; then echo yes; else echo "if: $?"; fi
cut -d: -f1 /nonexistent-cx-file 2>&1 | sed 's/^[^:]*: //'
cat <<'HERE' | grep -c line
line one
line two
HERE
echo done
`;

let cache: string;
let shims: string;
let work: string;
let env: Env;

interface Res { status: number | null; stdout: string; stderr: string }

function cx(args: string[], e: Env = env): Res {
  const r = spawnSync(LAUNCHER, args, { env: e, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runIn(file: string, args: string[], e: Env, opts: { cwd?: string } = {}): Res & { timedOut: boolean } {
  const r = spawnSync(file, args, { env: e, encoding: 'utf8', timeout: 10_000, cwd: opts.cwd });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, timedOut: r.error !== undefined };
}

function records(dir = cache): ReturnType<typeof decodeRunRecords>['records'] {
  const log = path.join(dir, 'stats', 'runs.log');
  if (!fs.existsSync(log)) return [];
  return decodeRunRecords(fs.readFileSync(log)).records;
}
const hits = (dir = cache): number => records(dir).filter((r) => r.outcome === 'HIT').length;

/** The shims in a directory (the probes' record, .cached-exec-probes.json, is not one). */
const shimNames = (dir: string): string[] => fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort();

/** Runs of shimmed programs in CORPUS, counted by tracing a cold run's execs. */
function countExternal(shell: string): number {
  const trace = path.join(work, `trace-${Date.now()}`);
  const st = spawnSync('strace', ['-f', '-qq', '-e', 'trace=execve', '-o', trace, shell, '-c', CORPUS, 'corpus', 'x', 'y'], { env });
  expect(st.error, 'strace is needed to count the execs of a cold run').toBeUndefined();
  // Concurrent pipeline members split a call into "unfinished" and "resumed" lines:
  // count calls by their first line, naming the program's resolved file.
  const real = new Set(PROGS.map((p) => execFileSync('sh', ['-c', `command -v ${p}`], { env, encoding: 'utf8' }).trim()));
  const calls = fs.readFileSync(trace, 'utf8').split('\n').map((l) => /execve\("([^"]+)"/.exec(l)?.[1]);
  return calls.filter((c) => c !== undefined && real.has(c)).length;
}

beforeAll(() => {
  cache = tmpCacheDir();
  work = tmpDir('cx-shims-');
  shims = path.join(work, 'shims');
  env = baseEnv(cache, { CACHED_EXEC_SHIMS_DIR: shims, HOME: work });
});

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

describe('shim management', () => {
  it('--shims-install makes symlinks to the launcher, idempotently', () => {
    const r = cx(['--shims-install', ...PROGS]);
    expect(r.status, r.stderr).toBe(0);
    for (const p of PROGS) {
      expect(fs.readlinkSync(path.join(shims, p))).toBe(LAUNCHER);
    }
    const again = cx(['--shims-install', '--json', ...PROGS]);
    expect(again.status).toBe(0);
    const j = JSON.parse(again.stdout) as { shims: { name: string; created: boolean }[] };
    expect(j.shims.map((s) => s.created)).toEqual(PROGS.map(() => false));
  });

  it('refuses names with a slash, option-like names and the launcher\'s own name', () => {
    expect(cx(['--shims-install', 'a/b', 'c/d']).status).toBe(2);
    expect(cx(['--shims-install', 'cached-exec']).status).toBe(2);
    expect(cx(['--shims-install', '--', '-x']).status).toBe(2);
    expect(fs.existsSync(path.join(shims, 'cached-exec'))).toBe(false);
  });

  it('--shims-list names the real programs, not the shims, and where the directory is on PATH', () => {
    const r = cx(['--shims-list', '--json']);
    const j = JSON.parse(r.stdout) as { dir: string; onPath: boolean; first: boolean; shims: { name: string; program: string }[] };
    expect(j.dir).toBe(shims);
    expect(j.shims.map((s) => s.name)).toEqual([...PROGS].sort());
    expect(j.shims.find((s) => s.name === 'sed')?.program).toMatch(/^\/(usr\/)?bin\/sed$/);
    expect(j.onPath).toBe(false);
    const first = JSON.parse(cx(['--shims-list', '--json'], { ...env, PATH: `${shims}:${SYSTEM_PATH}` }).stdout) as typeof j;
    expect([first.onPath, first.first]).toEqual([true, true]);
    expect(first.shims.find((s) => s.name === 'sed')?.program).toBe(j.shims.find((s) => s.name === 'sed')?.program);
    const text = cx(['--shims-list'], { ...env, PATH: `${shims}:${SYSTEM_PATH}` });
    expect(text.stdout).toMatch(/^sed +\/\S*\/sed +argv\[0\] as the caller passed it \(probe: /m);
    expect(text.stdout).toContain(`${shims} is first on PATH`);
  });

  it('another directory as an operand or after --dir; --shims-remove empties and removes it', () => {
    const other = path.join(work, 'other shims');
    expect(cx(['--shims-install', other, 'sed', 'cut']).status).toBe(0);
    expect(cx(['--shims-install', 'tr', '--dir', other]).status).toBe(0);
    expect(shimNames(other)).toEqual(['cut', 'sed', 'tr']);
    const list = JSON.parse(cx(['--shims-list', '--json', '--dir', other]).stdout) as { dir: string; shims: unknown[] };
    expect([list.dir, list.shims.length]).toEqual([other, 3]);
    const rm = cx(['--shims-remove', other, 'sed']);
    expect(rm.status, rm.stderr).toBe(0);
    expect(shimNames(other)).toEqual(['cut', 'tr']);
    expect(cx(['--shims-remove', '--dir', other]).status).toBe(0);
    expect(fs.existsSync(other)).toBe(false);
    expect(cx(['--shims-install', '--dir', 'relative-without-slash', 'sed']).status).toBe(2);
    // The default directory was not touched.
    expect(shimNames(shims)).toEqual([...PROGS].sort());
  });

  it('replaces a stale shim (a symlink to another cached-exec), leaves anything else alone', () => {
    const d = path.join(work, 'stale');
    fs.mkdirSync(d);
    fs.symlinkSync('/old/checkout/bin/cached-exec', path.join(d, 'sed'));
    fs.writeFileSync(path.join(d, 'cut'), '#!/bin/sh\necho mine\n', { mode: 0o755 });
    fs.symlinkSync('/usr/bin/tr', path.join(d, 'tr'));
    const list = JSON.parse(cx(['--shims-list', '--json', d]).stdout) as { shims: { name: string; stale: boolean }[] };
    expect(list.shims).toEqual([expect.objectContaining({ name: 'sed', stale: true })]);
    expect(cx(['--shims-install', d, 'sed']).status).toBe(0);
    expect(fs.readlinkSync(path.join(d, 'sed'))).toBe(LAUNCHER);
    for (const name of ['cut', 'tr']) {
      const r = cx(['--shims-install', d, name]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('is not a shim of cached-exec');
    }
    const rm = cx(['--shims-remove', d, 'sed', 'cut', 'tr']);
    expect(rm.status).toBe(1);
    expect(fs.readdirSync(d).sort()).toEqual(['cut', 'tr']);
    expect(fs.readFileSync(path.join(d, 'cut'), 'utf8')).toContain('mine');
    expect(cx(['--shims-remove', d]).status).toBe(0); // all shims: none left, the others stay
    expect(fs.readdirSync(d).sort()).toEqual(['cut', 'tr']);
  });

  it('--shell-init evaluated twice puts the shim directory on PATH once, first', () => {
    const script = `eval "$("${LAUNCHER}" --shell-init bash)"; eval "$("${LAUNCHER}" --shell-init bash)"; echo "$PATH"`;
    const out = execFileSync('bash', ['-c', script], { env, encoding: 'utf8' }).trim().split(':');
    expect(out[0]).toBe(shims);
    expect(out.filter((p) => p === shims).length).toBe(1);
    expect(out.slice(1).join(':')).toBe(SYSTEM_PATH);
    const sourced = execFileSync('sh', ['-c', `. "${path.join(ROOT, 'shell/cached-exec.sh')}"; . "${path.join(ROOT, 'shell/cached-exec.sh')}"; echo "$PATH"`],
      { env, encoding: 'utf8' }).trim().split(':');
    expect(sourced[0]).toBe(shims);
    expect(sourced.filter((p) => p === shims).length).toBe(1);
  });
});

describe('the self-locating marker', () => {
  const SELFPATH = path.join(path.dirname(LAUNCHER), 'cached-exec-selfpath');
  let d: string;
  beforeAll(() => {
    d = path.join(work, 'marker shims');
  });

  it('gcc\'s shim points at cached-exec-selfpath (the probe saw it look around its own path), sed\'s at the launcher', () => {
    const r = cx(['--shims-install', d, 'gcc', 'sed', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.readlinkSync(SELFPATH)).toBe('cached-exec'); // made by the build
    expect(fs.readlinkSync(path.join(d, 'gcc'))).toBe(SELFPATH);
    expect(fs.readlinkSync(path.join(d, 'sed'))).toBe(LAUNCHER);
    const j = JSON.parse(r.stdout) as { shims: { name: string; selfLocating: boolean; probe: { evidence: { path: string } | null; stop: string } }[] };
    const gcc = j.shims.find((s) => s.name === 'gcc');
    expect(gcc?.selfLocating).toBe(true);
    expect(gcc?.probe.evidence?.path).toMatch(/\/decoy\/lib\/gcc\//);
    expect(j.shims.find((s) => s.name === 'sed')).toMatchObject({ selfLocating: false, probe: { evidence: null } });
  });

  it('--shims-list shows the marker and why', () => {
    const text = cx(['--shims-list', d]).stdout;
    expect(text).toMatch(/^gcc +\/\S+ +self-locating: argv\[0\] becomes the program's path \(probe: \w+\(<install>\/lib\/gcc\//m);
    expect(text).toMatch(/^sed +\/\S+ +argv\[0\] as the caller passed it/m);
    const j = JSON.parse(cx(['--shims-list', '--json', d]).stdout) as { shims: { name: string; selfLocating: boolean; probeOutdated: boolean }[] };
    expect(j.shims.map((s) => [s.name, s.selfLocating, s.probeOutdated])).toEqual([['gcc', true, false], ['sed', false, false]]);
  });

  it('an existing unmarked shim (made before the probe existed) is marked by running --shims-install again', () => {
    fs.rmSync(path.join(d, 'gcc'));
    fs.symlinkSync(LAUNCHER, path.join(d, 'gcc'));
    fs.rmSync(path.join(d, '.cached-exec-probes.json'));
    expect(cx(['--shims-list', d]).stdout).toMatch(/^gcc .*argv\[0\] as the caller passed it \(not probed\)/m);
    const r = JSON.parse(cx(['--shims-install', d, 'gcc', '--json']).stdout) as { shims: { created: boolean }[] };
    expect(r.shims[0]?.created).toBe(true);
    expect(fs.readlinkSync(path.join(d, 'gcc'))).toBe(SELFPATH);
    // and the other way: a marked shim of a program that is not self-locating loses the marker
    fs.rmSync(path.join(d, 'sed'));
    fs.symlinkSync(SELFPATH, path.join(d, 'sed'));
    expect(cx(['--shims-install', d, 'sed']).status).toBe(0);
    expect(fs.readlinkSync(path.join(d, 'sed'))).toBe(LAUNCHER);
  });

  it('--shims-remove removes the probes\' record with the last shim', () => {
    expect(cx(['--shims-remove', d]).status).toBe(0);
    expect(fs.existsSync(d)).toBe(false);
  });
});

describe('--shims-install --auto', () => {
  let auto: string;
  let autoEnv: Env;
  beforeAll(() => {
    auto = tmpCacheDir();
    autoEnv = { ...baseEnv(auto, { HOME: work }), CACHED_EXEC_SHIMS_DIR: path.join(work, 'auto-shims') };
  });
  afterAll(() => removeDir(auto));

  it('without statistics: says so, installs nothing', () => {
    const r = cx(['--shims-install', '--auto'], autoEnv);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('no statistics');
    expect(fs.existsSync(autoEnv.CACHED_EXEC_SHIMS_DIR as string)).toBe(false);
  });

  it('picks the most-run programs: named by their images, or by their queue entries before any image', async () => {
    expect(cx(['--warm', 'sed', 'cut'], autoEnv).status).toBe(0);
    for (let i = 0; i < 3; i++) expect(cx(['sed', '-n', '1p', '/dev/null'], autoEnv).status).toBe(0);
    expect(cx(['cut', '-c1', '/dev/null'], autoEnv).status).toBe(0);
    // tr has no image: two misses. The launcher queues it (background warming on), while a held
    // warmer lock (what a running warmer holds) keeps it from starting a snapshot of its own.
    // This process holds the flock itself: taken before the runs, nothing to wait for.
    const lock = path.join(auto, 'queue', '.warmer.lock');
    fs.mkdirSync(path.dirname(lock), { recursive: true, mode: 0o700 });
    const lockFd = fs.openSync(lock, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      expect(flock(lockFd, LOCK_EX | LOCK_NB)).toBe(true);
      const queued = { ...autoEnv };
      delete queued.CACHED_EXEC_NO_WARM;
      for (let i = 0; i < 2; i++) expect(cx(['tr', 'a', 'b'], queued).status).toBe(0);
    } finally {
      fs.closeSync(lockFd);
    }
    const trKey = launcherKey('tr', autoEnv)?.hash as string;
    expect(fs.readFileSync(path.join(auto, 'queue', trKey), 'utf8')).toMatch(/^\/\S*\/tr\n/);
    expect(records(auto).map((r) => r.outcome).sort()).toEqual(['HIT', 'HIT', 'HIT', 'HIT', 'MISS', 'MISS']);

    const two = cx(['--shims-install', '--auto', '2', '--json'], autoEnv);
    expect(two.status, two.stderr).toBe(0);
    const j = JSON.parse(two.stdout) as { shims: { name: string; runs: number; program: string }[] };
    expect(j.shims.map((s) => [s.name, s.runs])).toEqual([['sed', 3], ['tr', 2]]);
    expect(shimNames(autoEnv.CACHED_EXEC_SHIMS_DIR as string)).toEqual(['sed', 'tr']);
    const all = JSON.parse(cx(['--shims-install', '--auto', '--json'], autoEnv).stdout) as typeof j;
    expect(all.shims.map((s) => s.name)).toEqual(['sed', 'tr', 'cut']);
    expect(cx(['--shims-install', '--auto', 'x'], autoEnv).status).toBe(2);
  });
});

describe('a shell script corpus with and without shims', () => {
  const shimEnv = (): Env => ({ ...env, PATH: `${shims}:${SYSTEM_PATH}` });

  it('warms through the PATH the script runs with', () => {
    const r = cx(['--warm', ...PROGS, 'sh', 'bash'], shimEnv());
    expect(r.status, r.stderr).toBe(0);
  });

  for (const shell of ['sh', 'bash']) {
    it(`${shell}: identical output and status; every external command restored`, () => {
      const plain = spawnSync(shell, ['-c', CORPUS, 'corpus', 'x', 'y'], { env, encoding: 'utf8' });
      const before = hits();
      const shimmed = spawnSync(shell, ['-c', CORPUS, 'corpus', 'x', 'y'], { env: shimEnv(), encoding: 'utf8' });
      const restored = hits() - before;
      expect(shimmed.stdout).toBe(plain.stdout);
      expect(shimmed.stderr).toBe(plain.stderr);
      expect(shimmed.status).toBe(plain.status);
      expect(plain.stdout).toContain('background: 0\n');
      expect(plain.stdout).toContain('done');
      // Every exec of a shimmed program, as a cold run of the same shell shows them.
      const expected = countExternal(shell);
      expect(expected).toBeGreaterThan(20);
      expect(restored).toBe(expected);
    });
  }

  it('the shim directory twice on PATH, and two shim directories: same output, no loop', () => {
    const second = path.join(work, 'second shims');
    expect(cx(['--shims-install', second, ...PROGS]).status).toBe(0);
    const plain = runIn('bash', ['-c', CORPUS, 'corpus'], env);
    const execs = countExternal('bash');
    for (const p of [`${shims}:${shims}:${SYSTEM_PATH}`, `${second}:${shims}:${SYSTEM_PATH}:${shims}`]) {
      const before = records().length;
      const r = runIn('bash', ['-c', CORPUS, 'corpus'], { ...env, PATH: p });
      expect(r.timedOut).toBe(false);
      expect(r).toEqual(plain);
      // One launcher run per exec: every shim reached the real program in one step.
      expect(records().length - before).toBe(execs);
    }
  });
});

describe('nothing can make a shim find itself', () => {
  let loop: string;
  let loopEnv: Env;
  beforeAll(() => {
    loop = path.join(work, 'loop bin');
    fs.mkdirSync(loop);
    fs.symlinkSync(LAUNCHER, path.join(loop, 'cx-selfref')); // a "program" that is the launcher
    fs.symlinkSync(LAUNCHER, path.join(loop, 'cut'));
    fs.symlinkSync(path.join(shims, 'sed'), path.join(loop, 'sed')); // a symlink to a shim
    fs.writeFileSync(path.join(loop, 'self-script'), `#!${LAUNCHER}\necho never\n`, { mode: 0o755 });
    loopEnv = { ...env, PATH: `${shims}:${loop}:${SYSTEM_PATH}` };
  });

  it('a shim for a program that is not installed: 127 and a shell-like message', () => {
    const i = cx(['--shims-install', 'cx-no-such-program']);
    expect(i.status).toBe(1); // most likely a typo: said, but the shim is made
    expect(i.stderr).toContain('cx-no-such-program: not found on PATH');
    const direct = runIn(path.join(shims, 'cx-no-such-program'), ['x'], loopEnv);
    expect(direct).toEqual({ status: 127, stdout: '', stderr: 'cached-exec: cx-no-such-program: command not found\n', timedOut: false });
    const viaShell = runIn('sh', ['-c', 'cx-no-such-program arg; echo "status $?"'], loopEnv);
    expect(viaShell.stdout).toBe('status 127\n');
    expect(viaShell.stderr).toBe('cached-exec: cx-no-such-program: command not found\n');
    expect(cx(['--shims-remove', 'cx-no-such-program']).status).toBe(0);
  });

  it('programs on PATH that are symlinks to the launcher (or to a shim) are skipped, never run', () => {
    const sed = runIn('bash', ['-c', 'echo abc | sed s/b/X/; echo "$?"'], loopEnv);
    expect(sed).toEqual({ status: 0, stdout: 'aXc\n0\n', stderr: '', timedOut: false });
    const cut = runIn('bash', ['-c', 'echo a:b | cut -d: -f2'], loopEnv);
    expect(cut.stdout).toBe('b\n');
    for (const [file, args] of [
      ['cx-selfref', []], // found on PATH: itself, skipped; nothing else: 127
      [path.join(loop, 'cx-selfref'), []],
      [LAUNCHER, ['cx-selfref']],
      [LAUNCHER, [path.join(loop, 'cx-selfref')]],
    ] as [string, string[]][]) {
      const r = runIn(file, args, loopEnv, { cwd: work });
      expect(r.timedOut, `${file} ${args.join(' ')}`).toBe(false);
      expect(r.status).toBe(127);
      expect(r.stderr).toBe('cached-exec: cx-selfref: command not found\n');
    }
  });

  it('#!/path/cached-exec bash: the launcher as an interpreter runs the named program on the script', () => {
    const script = path.join(loop, 'via-launcher');
    fs.writeFileSync(script, `#!${LAUNCHER} bash\necho "script $0 [$*]"\n`, { mode: 0o755 });
    const r = runIn(script, ['a', 'b c'], loopEnv);
    expect(r).toEqual({ status: 0, stdout: `script ${script} [a b c]\n`, stderr: '', timedOut: false });
  });

  it('a #! script whose interpreter is the launcher ends (no exec loop)', () => {
    const r = runIn(path.join(loop, 'self-script'), [], loopEnv);
    expect(r.timedOut).toBe(false);
    expect(r.stdout).toBe('');
    expect(r.status).toBe(127);
  });
});

describe('scripts through a shim', () => {
  it('a #! script named like a shim restores its interpreter with the kernel\'s argv', () => {
    const bin = path.join(work, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    const script = path.join(bin, 'greet');
    fs.writeFileSync(script, '#!/bin/bash\necho "greet: $0 [$*]"; grep -c "\\.img" /proc/$$/maps\n', { mode: 0o755 });
    const e = { ...env, PATH: `${shims}:${bin}:${SYSTEM_PATH}` };
    // Warming the script warms its interpreter as the #! line names it (/bin/bash), the key the launcher uses.
    expect(cx(['--warm', 'greet'], e).status).toBe(0);
    expect(cx(['--shims-install', 'greet'], e).status).toBe(0);
    const cold = spawnSync('greet', ['a b', 'c'], { env: { ...e, CACHED_EXEC_DISABLE: '1' }, encoding: 'utf8' });
    const hot = spawnSync('greet', ['a b', 'c'], { env: e, encoding: 'utf8' });
    const [coldLine, coldMaps] = cold.stdout.trim().split('\n');
    const [hotLine, hotMaps] = hot.stdout.trim().split('\n');
    expect(hotLine).toBe(coldLine);
    expect(coldLine).toBe(`greet: ${script} [a b c]`);
    expect(Number(coldMaps)).toBe(0);
    expect(Number(hotMaps)).toBeGreaterThan(0); // bash's image is mapped: really restored
    expect(cx(['--shims-remove', 'greet'], e).status).toBe(0);
  });
});

describe.runIf(process.geteuid?.() === 0)('boot: system layer, system shims, shell/boot-rc.sh', () => {
  let sys: string;
  let sysEnv: Env;
  const BOOT_PROGS = ['cat', 'sed', 'grep'];
  beforeAll(() => {
    sys = path.join(work, 'system');
    sysEnv = { ...env, CACHED_EXEC_SYSTEM_DIR: sys, PATH: `${path.join(sys, 'shims')}:${SYSTEM_PATH}` };
  });

  it('--shims-install --system: a root-owned 0755 directory whatever the umask', () => {
    const r = spawnSync('sh', ['-c', `umask 077; exec "${LAUNCHER}" --shims-install --system ${BOOT_PROGS.join(' ')}`],
      { env: sysEnv, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    for (const d of [sys, path.join(sys, 'shims')]) {
      const st = fs.statSync(d);
      expect([st.uid, st.mode & 0o777]).toEqual([0, 0o755]);
    }
    expect(shimNames(path.join(sys, 'shims'))).toEqual([...BOOT_PROGS].sort());
    expect(cx(['--shims-install', '--system', path.join(work, 'x'), 'sed'], sysEnv).status).toBe(2);
  });

  it('at boot (no HOME, no user cache, PATH unset) the rc snippet restores from the system layer', () => {
    const w = cx(['--warm', '--system', ...BOOT_PROGS], sysEnv);
    expect(w.status, w.stderr + w.stdout).toBe(0);
    const rc = `. "${path.join(ROOT, 'shell/boot-rc.sh')}"; . "${path.join(ROOT, 'shell/boot-rc.sh')}"
      echo "$PATH"; echo abc | sed s/b/X/; grep -c "${sys}/images/" /proc/self/maps; cat /proc/self/maps | grep -c "${sys}/images/"`;
    // The images were keyed with the PATH boot-rc.sh builds from an unset PATH.
    const bootPath = `${path.join(sys, 'shims')}:${SYSTEM_PATH}`;
    expect(SYSTEM_PATH).toBe('/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    const r = spawnSync('/bin/sh', ['-c', `unset PATH; ${rc}`], { env: { CACHED_EXEC_SYSTEM_DIR: sys }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const [pathLine, sedOut, grepMaps, catMaps] = r.stdout.trim().split('\n');
    expect(pathLine).toBe(bootPath);
    expect(sedOut).toBe('aXc');
    expect(Number(grepMaps)).toBeGreaterThan(0); // grep's own maps show its image: restored
    expect(Number(catMaps)).toBeGreaterThan(0);
    // The launcher recorded and queued nothing in the read-only layer (--warm logged its snapshots there).
    expect(fs.existsSync(path.join(sys, 'stats', 'runs.log'))).toBe(false);
    expect(fs.existsSync(path.join(sys, 'queue'))).toBe(false);
  });

  it('shims a user could write to are not put on PATH', () => {
    const rc = `. "${path.join(ROOT, 'shell/boot-rc.sh')}"; echo "$PATH"`;
    fs.chmodSync(path.join(sys, 'shims'), 0o775);
    try {
      const r = spawnSync('/bin/sh', ['-c', rc], { env: { CACHED_EXEC_SYSTEM_DIR: sys, PATH: SYSTEM_PATH }, encoding: 'utf8' });
      expect(r.stdout.trim()).toBe(SYSTEM_PATH);
    } finally {
      fs.chmodSync(path.join(sys, 'shims'), 0o755);
    }
  });
});

describe('examples/boot demo', () => {
  it('runs end to end: identical output in every run, every program run of rc.sh restored, a ratio printed', () => {
    const r = spawnSync('sh', [path.join(ROOT, 'examples/boot/run.sh'), '2'],
      // ~30 s on an idle machine, well over 120 s with both cores busy: a deadline, not a timing.
      { env: { PATH: SYSTEM_PATH, HOME: work, TMPDIR: work }, encoding: 'utf8', timeout: 600_000 });
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('output identical in every run');
    const m = /(\d+) program runs restored per rc\.sh run, (\d+) cold/.exec(r.stdout);
    expect(Number(m?.[1])).toBeGreaterThan(500);
    expect(Number(m?.[2])).toBe(0);
    expect(r.stdout).toMatch(/speed-up +\d+\.\d\dx/);
    expect(fs.readdirSync(work).filter((n) => n.startsWith('cx-boot.'))).toEqual([]); // cleaned up
  }, 660_000);
});
