/**
 * shell/cached-exec-resume.bash, the bash adapter of the resume protocol:
 * a resumed run (context on the resume fd, start environment and context
 * differing in argv, environment and cwd), the launcher's `bash -c '. "$0"'`
 * form and the plain script form, and a cold direct run (no resume fd) must
 * each look like the real thing: `bash script.sh` in the context's cwd and
 * environment, or `BASH_ENV=init bash script.sh` when the script uses what
 * the init left. Same stdout, stderr, exit status and signal.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESUME_MAGIC, runResumed, type ResumeContext, type RunResult } from '../helpers/resume.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ADAPTER = path.join(ROOT, 'shell', 'cached-exec-resume.bash');
const PATH_ENV = '/usr/local/bin:/usr/bin:/bin';
type Env = Record<string, string>;

let tmp = '';
let work = ''; // the caller's cwd (physical)
let link = ''; // a symlink to it: the caller's logical PWD
let init = '';
let startEnv: Env = {};
let ctxEnv: Env = {};

const SCRIPTS: Record<string, string> = {
  'args.sh': 'echo "_=$_ ?=$? #=$#"; printf "[%s]" "$0" "$@"; echo\n. ./fds.inc\n',
  // Descriptors other than 0-2 (and 255, bash's own on a script): none, the resume fd closed.
  'fds.inc': 'for f in /proc/$$/fd/*; do case ${f##*/} in 0 | 1 | 2 | 255) ;; *) echo "extra fd ${f##*/}" ;; esac; done\n',
  'env.sh': 'env | sort\n',
  'dirs.sh': 'echo "PWD=$PWD OLDPWD=${OLDPWD-unset} SHLVL=$SHLVL"; pwd; pwd -P; declare -p OLDPWD; echo "$BASH"\n',
  'vars.sh': 'compgen -v | grep -v -e "^PIPESTATUS$" -e "^BASH_ENV$"; declare -F; alias; echo "[${BASH_EXECUTION_STRING-unset}]"\n',
  'trap.sh': 'trap \'echo "exit trap $?"\' EXIT\ntrap \'echo got-usr1\' USR1\nkill -USR1 $$\necho after\nexit 3\n',
  'exit130.sh': 'echo bye\nexit 130\n',
  'errexit.sh': 'set -e\necho one\nfalse\necho two\n',
  'syntax.sh': 'echo one\nif then fi\necho two\n',
  'missing.sh': 'echo before\nnosuch-command arg\necho "rc=$?"\ncd /nonexistent-dir\n',
  'sub.sh': '(echo "sub $BASH_SUBSHELL"; exit 4); echo "rc=$?"; x=$(echo cs; exit 2); echo "$x $?"; { echo group; }\n',
  'jobs.sh': 'sleep 0.05 & p=$!\n(exit 7) & wait $!; echo "w=$?"\nwait $p; echo "p=$?"; jobs; echo done\n',
  'stdin.sh': 'read -r line; echo "got $line"; cat\n',
  'term.sh': 'echo before\nkill -TERM $$\necho after\n',
  'opts.sh': 'echo "$SHELLOPTS"\nfalse | true; echo "pipe=$?"\necho "$unset_var"\necho not-reached\n',
  'uses-init.sh': 'initfn a b; echo "INITVAR=$INITVAR"; hello; env | sort | grep -E "^(INITVAR|ADDED|CHANGED|GONE)="\n',
  'xtrace.sh': 'echo a\nf() { echo "in f"; }\nf x\ny=$(echo sub)\n',
  'random.sh': 'echo $RANDOM $RANDOM\n',
  '-dash.sh': 'echo "$0 ${BASH_SOURCE[0]} $*"\n',
};

/** Spawns bash (argv[0] as given) in `cwd` with exactly `env`. */
function run(argv0: string, args: string[], env: Env, cwd: string, input = ''): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/bash', args, { argv0, env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
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

/** The adapter with `raw` on the resume fd (for contexts encodeContext cannot make). */
function runRaw(raw: Buffer): Promise<RunResult> {
  return runResumed('bash', ['-c', '. "$0"', ADAPTER, '--init', init, '--'], startEnv, raw, { cwd: work });
}

interface Opts {
  /** Source the init (the reference then is BASH_ENV=init bash ...). */
  withInit?: boolean;
  /** The reference is plain bash even withInit (forms that run cold, without the init). */
  plainReference?: boolean;
  /** Another init file than the default one. */
  initFile?: string;
  input?: string;
  env?: Env;
  seed?: string;
  /** Applied to stdout and stderr of every run. */
  norm?: (s: string) => string;
}

const dropBashEnv = (s: string): string => s.split('\n').filter((l) => !l.startsWith('BASH_ENV=')).join('\n');

/** Cold reference, resumed (launcher form and script form) and cold-direct runs of `argv`. */
async function runAll(argv: string[], o: Opts = {}): Promise<Record<string, RunResult>> {
  const env = o.env ?? ctxEnv;
  const words = o.withInit ? ['--init', o.initFile ?? init] : [];
  const ctx: ResumeContext = { argv, env, cwd: work, ...(o.seed ? { seed: o.seed } : {}) };
  const refEnv = o.withInit && !o.plainReference ? { ...env, BASH_ENV: o.initFile ?? init } : env;
  const runs = await Promise.all([
    run(argv[0] ?? '', argv.slice(1), refEnv, work, o.input),
    runResumed('bash', ['-c', '. "$0"', ADAPTER, ...words, '--'], startEnv, ctx, { input: o.input ?? '' }),
    runResumed('bash', [ADAPTER, ...words, '--'], startEnv, ctx, { input: o.input ?? '' }),
    run(argv[0] ?? '', ['-c', '. "$0"', ADAPTER, ...words, '--', ...argv], env, work, o.input),
  ]);
  const norm = (r: RunResult): RunResult => {
    let { stdout, stderr } = r;
    if (o.withInit) stdout = dropBashEnv(stdout);
    if (o.norm) [stdout, stderr] = [o.norm(stdout), o.norm(stderr)];
    return { ...r, stdout, stderr };
  };
  const [reference, resumed, resumedScriptForm, coldDirect] = runs.map(norm) as RunResult[];
  return { reference: reference!, resumed: resumed!, resumedScriptForm: resumedScriptForm!, coldDirect: coldDirect! };
}

/** Every variant behaves like the reference; returns the reference. */
async function expectSame(argv: string[], o: Opts = {}): Promise<RunResult> {
  const { reference, ...variants } = await runAll(argv, o);
  for (const [name, r] of Object.entries(variants)) expect({ variant: name, ...r }).toEqual({ variant: name, ...reference });
  return reference!;
}

beforeAll(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'cx-adapter-bash-')));
  work = path.join(tmp, 'work');
  const start = path.join(tmp, 'start');
  fs.mkdirSync(work);
  fs.mkdirSync(start);
  link = path.join(tmp, 'link');
  fs.symlinkSync(work, link);
  for (const [name, text] of Object.entries(SCRIPTS)) fs.writeFileSync(path.join(work, name), text);
  init = path.join(tmp, 'init.bash');
  fs.writeFileSync(init, [
    'initfn() { echo "initfn $*"; }',
    'export INITVAR="from init"',
    'shopt -s expand_aliases',
    "alias hello='echo hello from alias'",
    'return 0',
    'echo not-reached',
    '',
  ].join('\n'));
  const home = path.join(tmp, 'home');
  fs.mkdirSync(home);
  // The snapshot's environment and cwd differ from the caller's in every per-run way and more.
  startEnv = { PATH: PATH_ENV, HOME: home, LC_ALL: 'C', SHLVL: '1', PWD: start, GONE: 'gone', CHANGED: 'old' };
  ctxEnv = { PATH: PATH_ENV, HOME: home, LC_ALL: 'C', SHLVL: '3', PWD: link, OLDPWD: tmp, CHANGED: 'new', ADDED: 'a b=c' };
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('bash adapter: scripts run as `bash script.sh` would', () => {
  it('gives $0, the arguments, $_ and $? of a cold start', async () => {
    await expectSame(['bash', '--', '-dash.sh', '-x']);
    const r = await expectSame(['bash', 'args.sh', 'a', 'b c', '']);
    expect(r.stdout.startsWith('_=bash ?=0 #=3\n[args.sh][a][b c][]\n')).toBe(true);
  });

  it('applies the caller environment: changed, added and removed variables, SHLVL, PWD, OLDPWD', async () => {
    const r = await expectSame(['bash', 'env.sh']);
    expect(r.stdout).toContain('ADDED=a b=c\nCHANGED=new\n');
    expect(r.stdout).not.toContain('GONE=');
    expect(r.stdout).toContain(`PWD=${link}\nSHLVL=4\n`);
  });

  it('sets PWD, OLDPWD, SHLVL and $BASH as bash does at startup', async () => {
    const r = await expectSame(['bash', 'dirs.sh']);
    expect(r.stdout).toBe(`PWD=${link} OLDPWD=${tmp} SHLVL=4\n${link}\n${work}\ndeclare -x OLDPWD="${tmp}"\n/usr/bin/bash\n`);
    // An inherited PWD that is not the cwd, an OLDPWD that is no directory, odd SHLVLs.
    for (const [shlvl, pwd, oldpwd] of [['x', '/', '/nonexistent'], ['999', work, ''], ['-7', `${link}//`, tmp]] as const) {
      await expectSame(['bash', 'dirs.sh'], { env: { ...ctxEnv, SHLVL: shlvl, PWD: pwd, OLDPWD: oldpwd } });
    }
    const noVars: Env = { ...ctxEnv };
    delete noVars.SHLVL;
    delete noVars.PWD;
    delete noVars.OLDPWD;
    await expectSame(['bash', 'dirs.sh'], { env: noVars });
  });

  it('leaves no adapter variable, function or alias behind', async () => {
    const r = await expectSame(['bash', 'vars.sh']);
    expect(r.stdout).not.toContain('__cx');
    const withInit = await expectSame(['bash', 'vars.sh'], { withInit: true });
    expect(withInit.stdout).toContain("alias hello='echo hello from alias'");
  });

  it('runs traps, EXIT traps and exit codes', async () => {
    const r = await expectSame(['bash', 'trap.sh']);
    expect(r).toMatchObject({ stdout: 'got-usr1\nafter\nexit trap 3\n', status: 3 });
    expect((await expectSame(['bash', 'exit130.sh'])).status).toBe(130);
    expect((await expectSame(['bash', 'args.sh'])).status).toBe(0);
  });

  it('stops at a set -e failure and at a syntax error, with bash’s message', async () => {
    expect(await expectSame(['bash', 'errexit.sh'])).toMatchObject({ stdout: 'one\n', status: 1 });
    const syn = await expectSame(['bash', 'syntax.sh']);
    expect(syn).toMatchObject({ stdout: 'one\n', status: 2 });
    expect(syn.stderr).toContain("syntax.sh: line 2: syntax error near unexpected token `then'");
  });

  it('reports a missing command and a failed cd like bash', async () => {
    const r = await expectSame(['bash', 'missing.sh']);
    expect(r.stderr).toBe('missing.sh: line 2: nosuch-command: command not found\n' +
      'missing.sh: line 4: cd: /nonexistent-dir: No such file or directory\n');
    expect(r.status).toBe(1);
  });

  it('runs subshells, command substitutions, background jobs and wait', async () => {
    expect((await expectSame(['bash', 'sub.sh'])).stdout).toBe('sub 1\nrc=4\ncs 2\ngroup\n');
    expect((await expectSame(['bash', 'jobs.sh'])).stdout).toBe('w=7\np=0\ndone\n');
  });

  it('reads the caller’s stdin', async () => {
    expect((await expectSame(['bash', 'stdin.sh'], { input: 'first\nsecond\nthird\n' })).stdout)
      .toBe('got first\nsecond\nthird\n');
  });

  it('dies by the signal the script sends itself', async () => {
    expect(await expectSame(['bash', 'term.sh'])).toMatchObject({ stdout: 'before\n', status: null, signal: 'SIGTERM' });
  });

  it('applies -e, -u, -o pipefail, combined flags and -O', async () => {
    for (const opts of [['-e'], ['-o', 'pipefail'], ['-euo', 'pipefail'], ['+B', '-C'], ['-O', 'extglob', '-f', '-o', 'noclobber']]) {
      await expectSame(['bash', ...opts, 'opts.sh']);
    }
    // An unbound variable ends the script with bash's message; the status is
    // 1 for `bash script`, but 127 under `bash -c` (run_one_command's
    // FORCE_EOF), so in the launcher's `bash -c '. "$0"'` form too (documented).
    for (const opts of [['-u'], ['-uo', 'pipefail']]) {
      const { reference, resumed, resumedScriptForm, coldDirect } = await runAll(['bash', ...opts, 'opts.sh']);
      expect(reference!.stderr).toBe('opts.sh: line 3: unset_var: unbound variable\n');
      expect(reference!.status).toBe(1);
      expect(resumedScriptForm).toEqual(reference);
      for (const r of [resumed, coldDirect]) expect(r).toEqual({ ...reference, status: 127 });
    }
  });

  it('traces with -x and echoes with -v (the PS4 character repeats once per source level)', async () => {
    const plus = (s: string): string => s.replace(/^\++ /gm, '+ ');
    const x = await expectSame(['bash', '-x', 'xtrace.sh'], { norm: plus });
    expect(x.stderr).toBe("+ echo a\n+ f x\n+ echo 'in f'\n+ echo sub\n+ y=sub\n");
    // No descriptor left behind by the tracing arrangement (stdout only: the
    // trace of the loop over fds shows bash's fd 255, which only some forms have).
    const { reference, ...variants } = await runAll(['bash', '-x', 'args.sh', 'q']);
    for (const r of Object.values(variants)) expect(r.stdout).toBe(reference!.stdout);
    await expectSame(['bash', '-v', 'xtrace.sh']);
  });

  it('keeps what the init left: functions, exported variables, aliases', async () => {
    const r = await expectSame(['bash', 'uses-init.sh', 'x'], { withInit: true });
    expect(r.stdout).toBe('initfn a b\nINITVAR=from init\nhello from alias\nADDED=a b=c\nCHANGED=new\nINITVAR=from init\n');
    // Except the cwd: a restored process is in the caller's, so a cold run is too.
    const cdInit = path.join(tmp, 'cd-init.bash');
    fs.writeFileSync(cdInit, 'cd /\n');
    await expectSame(['bash', 'dirs.sh'], { withInit: true, initFile: cdInit, plainReference: true });
  });
});

describe('bash adapter: -c', () => {
  it('sets $0 from NAME or argv[0], the arguments and BASH_EXECUTION_STRING', async () => {
    const cmd = 'echo "_=$_"; printf "[%s]" "$0" "$@"; echo; echo "$BASH_EXECUTION_STRING"';
    expect((await expectSame(['bash', '-c', cmd, 'name', 'x', 'y z'])).stdout).toBe(`_=bash\n[name][x][y z]\n${cmd}\n`);
    expect((await expectSame(['bash', '-c', cmd])).stdout).toBe(`_=bash\n[bash]\n${cmd}\n`);
    await expectSame(['bash', '-e', '-c', 'echo a; false; echo b']);
    await expectSame(['bash', '-c', 'trap "echo bye" EXIT; read -r x; echo "$x"; kill -TERM $$'], { input: 'in\n' });
    await expectSame(['bash', '-xc', 'f() { echo "$1"; }; f "$0"', '-n'], { norm: (t) => t.replace(/^\++ /gm, '+ ') });
    await expectSame(['bash', '-c', 'initfn q; hello; exit 5'], { withInit: true });
  });

  it('names the adapter in error messages (documented difference)', async () => {
    const { reference, resumed } = await runAll(['bash', '-c', 'nosuch-command']);
    expect(reference!.stderr).toMatch(/^bash: (line 1: )?nosuch-command: command not found\n$/);
    expect(resumed!.status).toBe(reference!.status);
    expect(resumed!.stderr).toMatch(/cached-exec-resume\.bash: line \d+: nosuch-command: command not found\n$/);
  });
});

describe('bash adapter: cold fallback and protocol errors', () => {
  it('runs forms it does not reproduce (-i, -s, no script, a missing script) with the real bash, without the init', async () => {
    const cold = { withInit: true, plainReference: true };
    const r = await expectSame(['bash', '-s', 'p', 'q'], { ...cold, input: 'printf "[%s]" "$@"; env | sort\n' });
    expect(r.stdout).toMatch(/^\[p\]\[q\]ADDED=a b=c\n/);
    expect(r.stdout).toContain('SHLVL=4\n');
    expect(r.stdout).not.toContain('INITVAR');
    // Interactive shells are refused with one line of reason, then run as plain bash would.
    const { reference, ...variants } = await runAll(['bash', '-i', '-c', 'echo "[$-]"; env | sort'], cold);
    const why = 'cached-exec: interactive and login shells are not resumed after an init (their terminal, job control and readline state belong to the session that starts them): running bash cold, without the init\n';
    for (const [name, r] of Object.entries(variants)) {
      expect({ variant: name, ...r }).toEqual({ variant: name, ...reference, stderr: why + reference!.stderr });
    }
    await expectSame(['bash'], { ...cold, input: 'echo "from stdin $#"; env | sort\n' });
    const missing = await expectSame(['bash', 'no-such-script.sh'], cold);
    expect(missing).toMatchObject({ stderr: 'bash: no-such-script.sh: No such file or directory\n', status: 127 });
    await expectSame(['bash', '--norc', 'args.sh'], cold);
    await expectSame(['sh', 'args.sh', 'a'], cold);
    await expectSame(['bash', '-c'], cold);
    await expectSame(['bash', '-n', 'args.sh'], cold);
    await expectSame(['bash', '-x', '-O', 'no-such-option', 'args.sh'], cold);
    await expectSame(['bash', 'dirs.sh'], { ...cold, env: { ...ctxEnv, SHLVL: '999', BASH_ENV: '/dev/null' } });
  });

  it('reseeds RANDOM from the seed', async () => {
    const ctx = (seed: string): ResumeContext => ({ argv: ['bash', 'random.sh'], env: ctxEnv, cwd: work, seed });
    const words = ['-c', '. "$0"', ADAPTER, '--init', init, '--'];
    const [a, b, c] = await Promise.all(['0'.repeat(32), '1'.repeat(32), '0'.repeat(32)]
      .map((seed) => runResumed('bash', words, startEnv, ctx(seed))));
    expect(a!.stdout).toMatch(/^\d+ \d+\n$/);
    expect(a!.stdout).not.toBe(b!.stdout);
    expect(a!.stdout).toBe(c!.stdout);
  });

  it('exits 125 with one line on a bad context', async () => {
    const bad = [
      Buffer.from('not-the-magic\0'),
      Buffer.from(''),
      Buffer.from(`${RESUME_MAGIC}\x002\0bash\0`),
      Buffer.from(`${RESUME_MAGIC}\x001\0bash\x000\0/\0not-a-seed\0`),
    ];
    for (const raw of bad) {
      expect(await runRaw(raw)).toEqual({ stdout: '', stderr: 'cached-exec: bad resume context\n', status: 125, signal: null });
    }
  });
});
