/**
 * Every corpus program, warmed and then run cold and restored: proof that the
 * restore really happened (the image file is mapped in the restored process;
 * never in a cold one) and a per-program corpus whose cold and restored runs
 * must be indistinguishable. Programs that are not installed get no block.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseImage } from '../../src/image/format.js';
import { unmetDependencies } from '../../src/cache/envdeps.js';
import {
  PROGRAMS, baseEnv, describeWarm, dropDisableVar, installedPrograms, mapsShowImage, maskPid, readMaps,
  removeDir, resolveOnPath, run, runCold, signalWhenBlocked, runRestored, tmpCacheDir, tmpDir, warmAll, LAUNCHER,
  type RunResult, type WarmResult,
} from '../helpers/cx.js';
import { AWKWARD_ARGS, EXIT_CODES, bigEnv, expectSame, expectSameViaShim, type Case } from '../helpers/corpus.js';
import { spawnSync } from 'node:child_process';

const NAMES = ['bash', 'dash', 'perl', 'python3', 'sed', 'mawk', 'gawk', 'ls', 'cat', 'cmake'];
const progs = installedPrograms(NAMES);
const missing = NAMES.filter((n) => !progs.some((p) => p.name === n));

const cacheDir = tmpCacheDir();
const fixtures = tmpDir('cx-fix-');
const env = baseEnv(cacheDir);
/** Every corpus program also runs through a shim (the key holds PATH: warmed again for that PATH). */
const shims = path.join(fixtures, 'shims');
const shimEnv = { ...env, PATH: `${shims}:${env.PATH}` };
let warmed = new Map<string, WarmResult>();
let warmedShim = new Map<string, WarmResult>();

beforeAll(async () => {
  warmed = await warmAll(progs.map((p) => p.name), env);
  const inst = spawnSync(LAUNCHER, ['--shims-install', shims, ...progs.map((p) => p.name)], { env, encoding: 'utf8' });
  expect(inst.status, inst.stderr).toBe(0);
  warmedShim = await warmAll(progs.map((p) => p.name), shimEnv);
}, 300_000);

afterAll(() => {
  removeDir(cacheDir);
  removeDir(fixtures);
});

// --- fixtures -------------------------------------------------------------

const weirdDir = path.join(fixtures, 'weird names');
fs.mkdirSync(weirdDir);
for (const n of ['a b', 'line\nbreak', 'tab\tx', 'ünï', '-dash', '.hidden', 'z']) fs.writeFileSync(path.join(weirdDir, n), n);
const bigText = Array.from({ length: 40_000 }, (_, i) => `line ${i} ${'abc '.repeat(i % 13)}`).join('\n') + '\n';
const binary = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131) & 0xff));
const cmakeScript = path.join(fixtures, 'script.cmake');
fs.writeFileSync(
  cmakeScript,
  [
    'message("argc ${CMAKE_ARGC}")',
    'foreach(i RANGE 3 ${CMAKE_ARGC})',
    '  if(DEFINED CMAKE_ARGV${i})',
    '    message("arg[${CMAKE_ARGV${i}}]")',
    '  endif()',
    'endforeach()',
    'execute_process(COMMAND echo from child OUTPUT_VARIABLE out)',
    'message("child said: ${out}")',
    'string(TIMESTAMP now "%s" UTC)',
    'message("now ${now}")',
    'message(FATAL_ERROR "on purpose")',
  ].join('\n') + '\n',
);

// --- checks ----------------------------------------------------------------

/** Every number in stdout that looks like an epoch time is within 5 s of the harness clock. */
const nearNow = (r: RunResult): void => {
  const now = Date.now() / 1000;
  const nums = (r.stdout.toString().match(/\b1\d{9}(\.\d+)?\b/g) ?? []).map(Number);
  expect(nums.length, `no epoch time in ${r.stdout.toString()}`).toBeGreaterThan(0);
  for (const n of nums) expect(Math.abs(n - now), `time ${n} vs harness ${now}`).toBeLessThan(5);
};
const maskTime: (t: string) => string = (t) => t.replace(/\b1\d{9}(\.\d+)?\b/g, '<TIME>');
const hasPid = (r: RunResult): void => {
  expect(r.stdout.toString()).toContain(String(r.pid));
};
const ppid = String(process.pid);
const hasPpid = (r: RunResult): void => {
  expect(r.stdout.toString()).toContain(ppid);
};

// --- per-program corpus ----------------------------------------------------

const CORPUS: Record<string, Case[]> = {
  bash: [
    { title: '--version', args: ['--version'] },
    { title: 'awkward arguments', args: ['-c', 'printf "[%s]\\n" "$0" "$@"; echo $#', ...AWKWARD_ARGS] },
    { title: 'script on stdin', args: ['-s', 'a b', 'c'], input: 'echo "args: $# [$1] [$2]"; read -r x; echo "read [$x]"\nnext line\n' },
    { title: 'large environment', args: ['-c', 'env | sort; export -p | grep -vc CACHED_EXEC_DISABLE; true'], env: bigEnv(env), normalize: [dropDisableVar] },
    { title: 'vdso time (printf %(%s)T, EPOCHSECONDS)', args: ['-c', 'printf "%(%s)T\\n" -1; echo $EPOCHSECONDS; echo $EPOCHREALTIME; true'], normalize: [maskTime], check: nearNow },
    { title: 'error naming the program', args: ['-c', 'nosuchcmd-xyz; echo status $?; nosuchcmd-xyz'] },
  ],
  dash: [
    { title: 'awkward arguments', args: ['-c', 'for a in "$0" "$@"; do printf "[%s]\\n" "$a"; done; echo $#', ...AWKWARD_ARGS] },
    { title: 'script on stdin', args: ['-s', 'x y'], input: 'echo "[$1]"; read x; echo "[$x]"\ntext here\n' },
    { title: 'large environment', args: ['-c', 'env | sort; true'], env: bigEnv(env), normalize: [dropDisableVar] },
    { title: 'error naming the program', args: ['-c', 'nosuchcmd-xyz; echo status $?; ( ; )'] },
  ],
  perl: [
    { title: '-v', args: ['-v'] },
    { title: 'awkward arguments', args: ['-e', 'print map { "[$_]\\n" } $0, @ARGV', ...AWKWARD_ARGS] },
    { title: 'large environment', args: ['-e', 'print "$_=$ENV{$_}\\n" for sort keys %ENV'], env: bigEnv(env), normalize: [dropDisableVar] },
    { title: 'stdin piped', args: ['-ne', 'print uc if /7/; END { print "$.\\n" }'], input: bigText },
    { title: 'pid and ppid', args: ['-e', 'print "$$ ", getppid(), "\\n"'], normalize: [maskPid], check: (r) => { hasPid(r); hasPpid(r); } },
    { title: 'fork, exec, system, backticks', args: ['-e', 'my $p = fork // die; if (!$p) { exec "echo", "exec in child" } waitpid($p, 0); print "child status $?\\n"; system("echo", "from system"); print `echo backticks`; print "ok\\n"'] },
    { title: 'time (vdso)', args: ['-e', 'print time, "\\n"; require Time::HiRes; printf "%.3f\\n", Time::HiRes::time()'], normalize: [maskTime], check: nearNow },
    { title: 'dlopen: POSIX', args: ['-MPOSIX', '-e', 'print POSIX::floor(2.7), " ", POSIX::strftime("%Y-%m-%d", gmtime(86400 * 365)), " ", POSIX::getpid() == $$ ? "pid ok" : "pid BAD", "\\n"'] },
    { title: 'dlopen: Socket, List::Util, Digest::MD5', args: ['-MSocket', '-MList::Util=sum', '-MDigest::MD5=md5_hex', '-e', 'print sum(1..100), " ", md5_hex("x"), " ", inet_ntoa(inet_aton("127.0.0.1")), "\\n"'] },
    { title: '$^X and $0', args: ['-e', 'print "$^X $0\\n"'] },
    { title: 'die message', args: ['-e', 'warn "warned\\n"; die "died\\n"'] },
    { title: 'syntax error', args: ['-e', 'print ('] },
    { title: 'missing script', args: ['/nonexistent/script.pl'] },
    { title: 'signal to itself', args: ['-e', '$| = 1; print "before\\n"; kill "TERM", $$; sleep 2; print "after\\n"'] },
    { title: 'INT handler', args: ['-e', '$| = 1; $SIG{INT} = sub { print "caught INT\\n"; exit 9 }; kill "INT", $$; sleep 2; print "not reached\\n"'] },
  ],
  python3: [
    { title: '--version', args: ['--version'] },
    { title: 'awkward arguments', args: ['-c', 'import sys\nfor a in sys.argv: print(repr(a))', ...AWKWARD_ARGS] },
    { title: 'sys.executable, prefix, flags', args: ['-c', 'import sys; print(sys.executable, sys.prefix, sys.flags.optimize, sys.path)'] },
    { title: 'large environment', args: ['-c', 'import os\nfor k in sorted(os.environ): print(k, repr(os.environ[k]))'], env: bigEnv(env), normalize: [dropDisableVar] },
    { title: 'stdin piped', args: ['-c', 'import sys; d = sys.stdin.read(); print(len(d), d.count("7"), d[-30:])'], input: bigText },
    { title: 'pid and ppid', args: ['-c', 'import os; print(os.getpid(), os.getppid())'], normalize: [maskPid], check: (r) => { hasPid(r); hasPpid(r); } },
    { title: 'fork and exec of children', args: ['-c', 'import os, subprocess\nprint(subprocess.run(["echo", "from subprocess"], capture_output=True).stdout)\npid = os.fork()\nif pid == 0:\n    os.execvp("echo", ["echo", "exec in child"])\n_, st = os.waitpid(pid, 0)\nprint("child", os.waitstatus_to_exitcode(st))', ] },
    { title: 'threads', args: ['-c', 'import threading\nout = []\nts = [threading.Thread(target=lambda i=i: out.append(i * i)) for i in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint(sorted(out), threading.active_count())'] },
    { title: 'time (vdso): time, time_ns, monotonic vs uptime', args: ['-c', 'import time\nprint(time.time())\nprint(time.time_ns() / 1e9)\nup = float(open("/proc/uptime").read().split()[0])\nprint("boottime agrees with /proc/uptime:", abs(time.clock_gettime(time.CLOCK_BOOTTIME) - up) < 2)\nprint("monotonic advances:", time.monotonic() < time.monotonic() + 1e-9 and time.perf_counter_ns() > 0)'], normalize: [maskTime], check: nearNow },
    { title: 'dlopen: ssl, ctypes', args: ['-c', 'import ssl, ctypes, os\nprint(ssl.OPENSSL_VERSION.split()[0])\nlibc = ctypes.CDLL(None)\nprint(libc.getpid() == os.getpid(), libc.strlen(b"hello"))\nprint(ssl.create_default_context().verify_mode)'] },
    { title: 'traceback', args: ['-c', 'def f():\n    1 / 0\nf()'] },
    { title: 'SystemExit message', args: ['-c', 'raise SystemExit("bye")'] },
    { title: 'missing script', args: ['/nonexistent/script.py'] },
    { title: 'raise(SIGUSR1)', args: ['-c', 'import signal, sys\nprint("before", flush=True)\nsignal.raise_signal(signal.SIGUSR1)\nprint("after")'] },
    { title: 'SIGINT to itself: KeyboardInterrupt', args: ['-c', 'import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(2)'] },
  ],
  sed: [
    { title: '--version', args: ['--version'] },
    { title: 'script with spaces and newline', args: ['-e', 's/line 1/LINE ONE/;s/abc abc/X Y/g', '-e', '$a\\\nlast line'], input: bigText },
    { title: 'awkward file names', args: ['-n', '$=;1p', ...fs.readdirSync(weirdDir).sort().map((n) => path.join(weirdDir, n))] },
    { title: 'stdin piped, -n and =', args: ['-n', '/9$/p;$='], input: bigText },
    { title: 'e command forks a shell', args: ['1e echo from child'], input: 'a\nb\n' },
    { title: 'unknown option names the program', args: ['--bogus'] },
    { title: 'missing file', args: ['p', '/nonexistent/file'] },
    { title: 'bad script', args: ['s/unterminated'] },
    ...EXIT_CODES.map((n): Case => ({ title: `exit code q${n}`, args: [`q${n}`], input: 'x\n' })),
  ],
  mawk: [
    { title: '-W version', args: ['-W', 'version'] },
    { title: 'awkward arguments', args: ['BEGIN { for (i = 0; i < ARGC; i++) printf "[%s]\\n", ARGV[i] }', ...AWKWARD_ARGS] },
    { title: 'large environment (ENVIRON)', args: ['BEGIN { n = 0; for (k in ENVIRON) if (k !~ /CACHED_EXEC_DISABLE/) { n++; s += length(ENVIRON[k]) } print n, s }'], env: bigEnv(env) },
    { title: 'stdin piped', args: ['{ n += NF; if ($2 % 1000 == 0) print } END { print NR, n }'], input: bigText },
    { title: 'system() and pipes to children', args: ['BEGIN { system("echo from system"); "echo from pipe" | getline x; print x; print "to sort b\\nto sort a" | "sort"; close("sort"); print "done" }'] },
    { title: 'syntax error names the program', args: ['BEGIN {'] },
    { title: 'exit 42', args: ['BEGIN { exit 42 }'] },
  ],
  ls: [
    { title: '--version', args: ['--version'] },
    { title: 'ls /', args: ['/'] },
    { title: 'awkward names, -l with owners (NSS)', args: ['-la', '-b', '--time-style=+T', weirdDir] },
    { title: 'arguments with spaces', args: ['-d', weirdDir, path.join(weirdDir, 'a b'), path.join(weirdDir, 'line\nbreak')] },
    { title: 'missing file', args: ['/nonexistent/file'] },
    { title: 'unknown option', args: ['--bogus'] },
  ],
  cat: [
    { title: '--version', args: ['--version'] },
    { title: 'stdin piped (1 MB)', args: [], input: bigText },
    { title: 'binary bytes with -A', args: ['-A'], input: binary },
    { title: 'stdin and files mixed', args: [path.join(weirdDir, 'a b'), '-', path.join(weirdDir, 'z')], input: 'middle\n' },
    { title: 'missing file then a good one', args: ['/nonexistent/file', path.join(weirdDir, 'z')] },
    { title: 'unknown option', args: ['--bogus'] },
  ],
  cmake: [
    { title: '--version', args: ['--version'] },
    { title: '-E echo with awkward arguments', args: ['-E', 'echo', ...AWKWARD_ARGS.filter((a) => !a.startsWith('-'))] },
    { title: '-E environment (large)', args: ['-E', 'environment'], env: bigEnv(env), normalize: [dropDisableVar] },
    { title: '-P script: args, child, time, fatal error', args: ['-P', cmakeScript, 'one arg', 'two\nlines'], normalize: [maskTime] },
    { title: '-E false exit status', args: ['-E', 'false'] },
    { title: 'unknown -E command', args: ['-E', 'no-such-command-xyz'] },
  ],
};
CORPUS.gawk = (CORPUS.mawk ?? []).map((c) => (c.args[0] === '-W' ? { ...c, args: ['--version'] } : c));

// --- suites -------------------------------------------------------------------

describe('corpus programs', () => {
  it('lists which corpus programs are installed', () => {
    expect(progs.length, 'no corpus program installed at all').toBeGreaterThan(0);
    if (missing.length) console.info(`not installed, no suite: ${missing.join(', ')}`);
    expect(PROGRAMS.length).toBeGreaterThanOrEqual(NAMES.length);
  });
});

for (const spec of progs) {
  const name = spec.name;
  describe(name, () => {
    it('--warm writes the image the launcher looks for', () => {
      const w = warmed.get(name);
      expect(w?.exists, describeWarm(w)).toBe(true);
    });

    it('restored run maps the image file; a cold run does not (proof of restore)', async () => {
      const w = warmed.get(name);
      expect(w?.image, describeWarm(w)).toBeTruthy();
      const image = w?.image as string;
      const cold = await runCold(name, spec.mapsArgs, { env });
      expect(cold.status, cold.stderr.toString()).toBe(0);
      // The listing is real (names the program's own file), so its lack of the image means something.
      expect(cold.stdout.toString()).toContain(fs.realpathSync(resolveOnPath(name) as string));
      expect(mapsShowImage(cold.stdout.toString(), image)).toBe(false);
      const restored = await runRestored(name, spec.mapsArgs, { env });
      expect(restored.status, restored.stderr.toString()).toBe(0);
      expect(mapsShowImage(restored.stdout.toString(), image), `restored ${name} does not map ${image}; ${describeWarm(w)}`).toBe(true);
    });

    it('restores with a large environment (and awkward arguments where the program takes them)', async () => {
      const w = warmed.get(name);
      const image = w?.image ?? '(no image)';
      const takesArgs = ['bash', 'dash', 'perl', 'python3'].includes(name);
      const args = [...spec.mapsArgs, ...(takesArgs ? AWKWARD_ARGS : [])];
      const restored = await runRestored(name, args, { env: bigEnv(env) });
      expect(restored.status, restored.stderr.toString()).toBe(0);
      // An image depends only on the variables its libraries' constructors looked up
      // (ENV_DEPS), or on the whole environment when they walked it (key.envHash):
      // it restores exactly when the big environment agrees on those.
      const m = fs.existsSync(image) ? parseImage(fs.readFileSync(image)).model : undefined;
      const served = !!m && !m.key.envHash && unmetDependencies(m.envDeps ?? [], bigEnv(env)).length === 0;
      expect(mapsShowImage(restored.stdout.toString(), image), `${name}: ${describeWarm(w)}`).toBe(served);
    });

    it('restored through a shim: the image (keyed with the shim PATH) is mapped', async () => {
      const w = warmedShim.get(name);
      expect(w?.exists, describeWarm(w)).toBe(true);
      const r = await run(path.join(shims, name), spec.mapsArgs, { env: shimEnv, argv0: name });
      expect(r.status, r.stderr.toString()).toBe(0);
      expect(mapsShowImage(r.stdout.toString(), w?.image as string), `${name} through its shim does not map ${w?.image}`).toBe(true);
    });

    for (const c of CORPUS[name] ?? []) {
      it(`same as cold: ${c.title}`, async () => {
        await expectSame(name, c, env);
      });
      it(`same through a shim: ${c.title}`, async () => {
        await expectSameViaShim(name, c, env, shims);
      });
    }
  });
}

// Programs that block on stdin can be inspected from outside while they run.
const observed = progs.filter((p) => ['cat', 'bash', 'perl', 'python3', 'sed'].includes(p.name));
describe('restored processes seen from outside', () => {
  for (const spec of observed) {
    it(`${spec.name}: /proc/PID/maps shows the image, status shows the same pid and parent`, async () => {
      const w = warmed.get(spec.name);
      const image = w?.image ?? '(no image)';
      const args = spec.name === 'cat' ? [] : spec.name === 'sed' ? ['-u', 's/^/> /'] : spec.name === 'perl' ? ['-e', '$| = 1; print "ready\\n"; <STDIN>'] : spec.name === 'python3' ? ['-c', 'import sys; print("ready", flush=True); sys.stdin.readline()'] : ['-c', 'echo ready; read x; true'];
      let maps = '';
      let status = '';
      const r = await run(LAUNCHER, [spec.name, ...args], {
        env,
        holdStdin: true,
        onSpawn: (child) => {
          if (spec.name === 'cat' || spec.name === 'sed') child.stdin?.write('ready\n');
        },
        onStdout: (soFar, child) => {
          if (maps || !soFar.includes('ready')) return;
          maps = readMaps(child.pid ?? -1);
          status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
          child.stdin?.end();
        },
      });
      expect(r.status).toBe(0);
      expect(status).toMatch(new RegExp(`^Pid:\\s+${r.pid}$`, 'm'));
      expect(status).toMatch(new RegExp(`^PPid:\\s+${process.pid}$`, 'm'));
      expect(mapsShowImage(maps, image), `${spec.name} (pid ${r.pid}) does not map ${image}; ${describeWarm(w)}`).toBe(true);
    });
  }
});

// Exit codes through each interpreter, cold and restored.
const exitProgs: Record<string, (n: number) => string[]> = {
  bash: (n) => ['-c', `exit ${n}`],
  dash: (n) => ['-c', `exit ${n}`],
  perl: (n) => ['-e', `exit ${n}`],
  python3: (n) => ['-c', `import sys; sys.exit(${n})`],
};
for (const spec of progs.filter((p) => p.name in exitProgs)) {
  describe(`${spec.name} exit codes`, () => {
    it(`exit codes ${EXIT_CODES.join(',')} and 256 are the same cold and restored`, async () => {
      for (const n of [...EXIT_CODES, 256]) {
        const args = (exitProgs[spec.name] as (n: number) => string[])(n);
        const cold = await runCold(spec.name, args, { env });
        const restored = await runRestored(spec.name, args, { env });
        expect(restored.status, `${spec.name} exit ${n}`).toBe(cold.status);
        expect(restored.signal).toBe(cold.signal);
        expect(restored.stderr.toString()).toBe(cold.stderr.toString());
        expect(cold.status).toBe(n & 255);
      }
    });
  });
}

// External signals sent by the harness to a restored interpreter.
const sigCases: { prog: string; args: string[]; sig: NodeJS.Signals }[] = [
  { prog: 'perl', args: ['-e', '$| = 1; print "ready\\n"; <STDIN>; print "eof\\n"'], sig: 'SIGTERM' },
  { prog: 'perl', args: ['-e', '$| = 1; $SIG{INT} = sub { print "caught\\n"; exit 4 }; print "ready\\n"; sleep 30'], sig: 'SIGINT' },
  { prog: 'python3', args: ['-c', 'import sys\nprint("ready", flush=True)\nsys.stdin.read()'], sig: 'SIGINT' },
  { prog: 'python3', args: ['-c', 'import sys\nprint("ready", flush=True)\nsys.stdin.read()'], sig: 'SIGTERM' },
];
for (const sc of sigCases.filter((s) => progs.some((p) => p.name === s.prog))) {
  describe(`${sc.prog} external ${sc.sig}`, () => {
    it(`${sc.prog} ${JSON.stringify(sc.args[1]).slice(0, 40)}… gets ${sc.sig} from the harness: same outcome`, async () => {
      const once = async (mode: 'cold' | 'restored'): Promise<RunResult> => {
        let sent = false;
        const f = mode === 'cold' ? runCold : runRestored;
        return f(sc.prog, sc.args, {
          env,
          holdStdin: true,
          onStdout: (soFar, child) => {
            if (!sent && soFar.includes('ready')) {
              sent = true;
              void signalWhenBlocked(child, sc.sig);
            }
          },
        });
      };
      const cold = await once('cold');
      const restored = await once('restored');
      expect({ out: restored.stdout.toString(), err: restored.stderr.toString(), status: restored.status, signal: restored.signal })
        .toEqual({ out: cold.stdout.toString(), err: cold.stderr.toString(), status: cold.status, signal: cold.signal });
      expect(cold.status !== 0 || cold.signal !== null).toBe(true);
    });
  });
}
