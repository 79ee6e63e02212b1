/**
 * bash and dash in depth, cold vs restored: awkward argv, a large environment,
 * `env -i`, scripts on stdin, fork/exec of children, pids, signals (traps,
 * `kill -TERM $$`, SIGINT/SIGTERM sent by the harness), error messages. Every
 * environment variant also proves that the restored run really restored.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAUNCHER, baseEnv, describeWarm, dropDisableVar, installedPrograms, mapsShowImage, maskPid, removeDir, runCold, runRestored,
  signalWhenBlocked, tmpCacheDir, tmpDir, warmAll, type Env, type RunResult, type WarmResult,
} from '../helpers/cx.js';
import { AWKWARD_ARGS, bigEnv, expectSame, expectSameViaShim, type Case } from '../helpers/corpus.js';
import { spawnSync } from 'node:child_process';

const shells = installedPrograms(['bash', 'dash']);
const cacheDir = tmpCacheDir();
const work = tmpDir('cx-shells-');
const env = baseEnv(cacheDir);
/** `env -i`: nothing but the tool's own variables (PATH unset: the default search path applies). */
const emptyEnv: Env = { CACHED_EXEC_DIR: cacheDir, CACHED_EXEC_NO_WARM: '1' };
const big = bigEnv(env);
let warmed = new Map<string, WarmResult>();
let warmedEmpty = new Map<string, WarmResult>();
/** The corpus also runs through shims (the key holds PATH: warmed for the shim PATH too). */
const shims = path.join(work, 'shims');

beforeAll(async () => {
  warmed = await warmAll(shells.map((s) => s.name), env);
  warmedEmpty = await warmAll(shells.map((s) => s.name), emptyEnv);
  const inst = spawnSync(LAUNCHER, ['--shims-install', shims, ...shells.map((s) => s.name)], { env, encoding: 'utf8' });
  expect(inst.status, inst.stderr).toBe(0);
  await warmAll(shells.map((s) => s.name), { ...env, PATH: `${shims}:${env.PATH}` });
}, 300_000);

afterAll(() => {
  removeDir(cacheDir);
  removeDir(work);
});

const spaced = path.join(work, 'dir with spaces');
fs.mkdirSync(spaced);
const longScript = Array.from({ length: 2000 }, (_, i) => `x${i % 50}=$((${i} * 3)); [ $((${i} % 400)) -eq 0 ] && echo "at ${i}: $x${i % 50}"`).join('\n') + '\necho end\n';

function pidLine(r: RunResult): string {
  return r.stdout.toString().split('\n')[0] ?? '';
}

/** Cases shared by both shells (POSIX sh syntax). */
function posixCases(): Case[] {
  return [
    { title: 'awkward arguments', args: ['-c', 'for a in "$0" "$@"; do printf "[%s]\\n" "$a"; done; echo "$#"', 'name with space', ...AWKWARD_ARGS] },
    { title: 'many arguments (3000)', args: ['-c', 'echo $#; echo "$1" "$3000"', 'zero', ...Array.from({ length: 3000 }, (_, i) => `arg${i + 1}`)] },
    { title: 'large environment', args: ['-c', 'env | sort; echo "$CX_BIG_NEWLINE"; echo ${#CX_BIG_HUGE}; true'], env: big, normalize: [dropDisableVar] },
    { title: 'env -i', args: ['-c', 'echo "PATH=$PATH"; env | sort; pwd; true'], env: emptyEnv, normalize: [dropDisableVar] },
    { title: 'script on stdin (-s, 2000 lines)', args: ['-s', 'one', 'two words'], input: 'echo "[$1] [$2] $#"\n' + longScript },
    { title: 'stdin piped to children', args: ['-c', 'read first; echo "first=$first"; cat | tr a-z A-Z | sort | head -3'], input: 'hello\nbanana\napple\ncherry\ndate\n' },
    { title: 'fork and exec of children', args: ['-c', [
      'for i in 1 2 3; do /bin/echo "child $i"; done',
      '( echo "subshell"; exit 3 ); echo "subshell status $?"',
      'x=$(echo command substitution); echo "$x"',
      'sleep 0.01 & wait $!; echo "background status $?"',
      'sh -c "exit 5"; echo "nested status $?"',
      'echo piped | sed "s/piped/through sed/" | cat',
      '( exec echo "exec in subshell" )',
      'true',
    ].join('\n')] },
    { title: 'cwd with spaces', args: ['-c', 'pwd; cd .. && pwd; ls; true'], cwd: spaced },
    { title: 'umask, ulimit, traps listing', args: ['-c', 'umask; ulimit -n; trap "echo bye" EXIT; trap; true'] },
    { title: 'kill -TERM $$', args: ['-c', 'echo before; kill -TERM $$; echo after'] },
    { title: 'kill -USR1 $$', args: ['-c', 'echo before; kill -USR1 $$; echo after'] },
    { title: 'trap INT then kill -INT $$', args: ['-c', 'trap "echo trapped INT; exit 3" INT; echo before; kill -INT $$; echo after'] },
    { title: 'trap TERM, EXIT', args: ['-c', 'trap "echo exit trap" EXIT; trap "echo trapped TERM; exit 4" TERM; kill -TERM $$; echo after'] },
    { title: 'error: command not found', args: ['-c', 'nosuchcmd-xyz; echo "status $?"; nosuchcmd-xyz'] },
    { title: 'error: not executable', args: ['-c', `${work}; echo "status $?"`] },
    { title: 'error: syntax', args: ['-c', 'if then fi'] },
    { title: 'error: missing script file', args: ['/nonexistent/script.sh'] },
    { title: 'error: bad option', args: ['-Z'] },
    { title: 'exit status of the last child', args: ['-c', 'sh -c "exit 77"'] },
  ];
}

function bashCases(): Case[] {
  return [
    { title: '--version', args: ['--version'] },
    { title: 'BASH variables, shopt, set -o', args: ['-c', 'echo "$0|$BASH|$BASH_VERSION|$MACHTYPE|$SHLVL|$BASH_SUBSHELL"; shopt; set -o; true'] },
    { title: 'BASH_ARGV0, arrays, ${@:2}', args: ['-c', 'echo "$BASH_ARGV0"; a=("$@"); echo "${#a[@]} ${a[1]} ${@:2:1}"; declare -p a', 'name', 'x y', 'z\nw'] },
    { title: 'process substitution and coproc', args: ['-c', 'diff <(printf "a\\nb\\n") <(printf "a\\nc\\n"); echo "diff $?"; coproc cat; echo hi >&"${COPROC[1]}"; read -r l <&"${COPROC[0]}"; echo "coproc said $l"; true'] },
    { title: 'error: bad long option', args: ['--bogus-option'] },
    { title: 'vdso time: printf %()T, EPOCHSECONDS, date', args: ['-c', 'a=$EPOCHSECONDS; b=$(date +%s); printf "%(%s)T\\n" -1 | wc -c; echo $(( b - a <= 2 && a - b <= 2 ))'] },
    { title: '$SECONDS starts at 0', args: ['-c', 'echo $SECONDS; true'] },
  ];
}

const casesFor = (name: string): Case[] => [...posixCases(), ...(name === 'bash' ? bashCases() : [])];

for (const spec of shells) {
  const sh = spec.name;
  describe(sh, () => {
    it('is warmed for the normal and the empty (env -i) environment', () => {
      expect(warmed.get(sh)?.exists, describeWarm(warmed.get(sh))).toBe(true);
      expect(warmedEmpty.get(sh)?.exists, describeWarm(warmedEmpty.get(sh))).toBe(true);
    });

    // Every shape of argv/env/stdin/cwd the corpus uses must restore, not quietly fall back.
    const many = Array.from({ length: 3000 }, (_, i) => `arg${i + 1}`);
    const shapes: { label: string; env: Env; warm: () => WarmResult | undefined; extra?: string[]; input?: string; cwd?: string }[] = [
      { label: 'a normal environment', env, warm: () => warmed.get(sh) },
      { label: 'a large environment', env: big, warm: () => warmed.get(sh) },
      { label: 'env -i', env: emptyEnv, warm: () => warmedEmpty.get(sh) },
      { label: 'awkward arguments', env, warm: () => warmed.get(sh), extra: ['zero', ...AWKWARD_ARGS] },
      { label: '3000 arguments', env, warm: () => warmed.get(sh), extra: ['zero', ...many] },
      { label: 'a large environment and awkward arguments', env: big, warm: () => warmed.get(sh), extra: ['zero', ...AWKWARD_ARGS] },
      { label: 'stdin piped', env, warm: () => warmed.get(sh), input: 'some input\n' },
      { label: 'a cwd with spaces', env, warm: () => warmed.get(sh), cwd: spaced },
    ];
    for (const x of shapes) {
      it(`restores (maps show the image) with ${x.label}`, async () => {
        const image = x.warm()?.image ?? '(no image)';
        const args = [...spec.mapsArgs, ...(x.extra ?? [])];
        const opts = { env: x.env, input: x.input, cwd: x.cwd };
        const cold = await runCold(sh, args, opts);
        const restored = await runRestored(sh, args, opts);
        expect(cold.status).toBe(0);
        expect(cold.stdout.toString()).toContain('[stack]');
        expect(restored.status, restored.stderr.toString()).toBe(0);
        expect(mapsShowImage(cold.stdout.toString(), image)).toBe(false);
        expect(mapsShowImage(restored.stdout.toString(), image), `restored ${sh} does not map ${image}; ${describeWarm(x.warm())}`).toBe(true);
      });
    }

    for (const c of casesFor(sh)) {
      it(`same as cold: ${c.title}`, async () => {
        await expectSame(sh, { ...c, cwd: c.cwd ?? work }, env);
      });
      it(`same through a shim: ${c.title}`, async () => {
        await expectSameViaShim(sh, { ...c, cwd: c.cwd ?? work }, env, shims);
      });
    }

    it('$$ (and $BASHPID, $PPID) are the pid the harness spawned and its own pid', async () => {
      const script = sh === 'bash'
        ? 'echo "$$ $BASHPID $PPID"; grep -E "^(Pid|PPid):" /proc/$$/status | tr -s "\\t" " "; ( [ "$BASHPID" != "$$" ] && echo "subshell has its own BASHPID" ); [ "$(sh -c \'echo $PPID\')" = "$$" ] && echo "children see $$ as parent"; true'
        : 'echo "$$ $$ $PPID"; grep -E "^(Pid|PPid):" /proc/$$/status | tr -s "\\t" " "; [ "$(sh -c \'echo $PPID\')" = "$$" ] && echo "children see $$ as parent"; true';
      for (const mode of ['cold', 'restored'] as const) {
        const r = await (mode === 'cold' ? runCold : runRestored)(sh, ['-c', script], { env });
        expect(r.status, r.stderr.toString()).toBe(0);
        expect(pidLine(r), mode).toBe(`${r.pid} ${r.pid} ${process.pid}`);
        expect(r.stdout.toString()).toContain(`Pid: ${r.pid}\nPPid: ${process.pid}\n`);
        expect(r.stdout.toString()).toContain('children see');
      }
      const cold = await runCold(sh, ['-c', script], { env });
      const restored = await runRestored(sh, ['-c', script], { env });
      expect(maskPid(restored.stdout.toString(), restored)).toBe(maskPid(cold.stdout.toString(), cold));
    });

    const external: { title: string; script: string; sig: NodeJS.Signals }[] = [
      { title: 'SIGINT while reading, no trap', script: 'echo ready; read x; echo after', sig: 'SIGINT' },
      { title: 'SIGTERM while reading, no trap', script: 'echo ready; read x; echo after', sig: 'SIGTERM' },
      { title: 'SIGINT with trap INT', script: 'trap "echo trapped INT; exit 7" INT; echo ready; read x; echo after', sig: 'SIGINT' },
      { title: 'SIGTERM with trap TERM', script: 'trap "echo trapped TERM; exit 8" TERM; echo ready; read x; echo after', sig: 'SIGTERM' },
      { title: 'SIGINT while a child runs', script: 'echo ready; cat; echo "cat status $?"', sig: 'SIGINT' },
    ];
    for (const x of external) {
      it(`external ${x.title}: same output, status and signal`, async () => {
        const once = (f: typeof runCold): Promise<RunResult> => {
          let sent = false;
          return f(sh, ['-c', x.script], {
            env,
            holdStdin: true,
            onStdout: (soFar, child) => {
              if (!sent && soFar.includes('ready')) {
                sent = true;
                void signalWhenBlocked(child, x.sig).then(() => setTimeout(() => child.stdin?.end(), 200));
              }
            },
          });
        };
        const cold = await once(runCold);
        const restored = await once(runRestored);
        expect(cold.timedOut || restored.timedOut).toBe(false);
        expect({ out: restored.stdout.toString(), err: restored.stderr.toString(), status: restored.status, signal: restored.signal })
          .toEqual({ out: cold.stdout.toString(), err: cold.stderr.toString(), status: cold.status, signal: cold.signal });
      });
    }
  });
}
