/**
 * What a post-init snapshot refuses, each with its reason: an init whose
 * effects a restore could not reproduce (output, a working directory, a child
 * still running, a descriptor left open, a thread, a timer, stdin). Each case
 * is a real bash or python3 run to its checkpoint under the real tracer, and
 * each refusal is then a cold run of the same command with the same output.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { LAUNCHER, baseEnv, removeDir, tmpCacheDir, tmpDir } from '../helpers/cx.js';

const cache = tmpCacheDir();
const work = tmpDir('cx-postinit-refusals-');
const env = baseEnv(cache);

afterAll(() => {
  removeDir(cache);
  removeDir(work);
});

function warm(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(LAUNCHER, ['--warm', ...args], { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const bashInit = (name: string, body: string): string => {
  const p = path.join(work, name);
  fs.writeFileSync(p, body);
  return p;
};

describe('post-init snapshots refuse what a restore could not reproduce', () => {
  const cases: [string, string, RegExp][] = [
    // The CLI runs the init again to say what it printed, in its own words, before what the snapshot saw.
    ['output', 'echo hello from the init\n', /\(init-output\): the init writes to stdout: hello from the init \(the snapshot stopped at: .*wrote to its stdout "hello from the init\\n"/],
    ['a working directory', 'cd /tmp\n', /changed the working directory/],
    ['a child that prints', 'ls /no-such-dir-cx\n', /or a child of it printed "ls: cannot access/],
    ['a child still running', 'sleep 30 &\n', /children.*still exist at the checkpoint/],
    ['a descriptor left open', 'exec 7</etc/hostname\n', /open-fds.*fd 7 \(\/etc\/hostname\)/],
    ['a redirected stdout', 'exec >/dev/null\n', /left fd 1 redirected/],
    ['reading stdin', 'read line\n', /read its standard input/],
  ];
  for (const [what, body, reason] of cases) {
    it(`refuses an init with ${what}`, () => {
      const r = warm([`--after-init=${bashInit(`${what.replace(/\W+/g, '-')}.sh`, body)}`, 'bash']);
      expect(r.status, r.out).toBe(1);
      expect(r.out).toMatch(reason);
    });
  }

  it('refuses a python init that starts a thread, and says why', () => {
    const init = bashInit('thread.py', 'import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n');
    const r = warm([`--after-init=${init}`, 'python3']);
    expect(r.status, r.out).toBe(1);
    expect(r.out).toMatch(/threads.*2 threads at the checkpoint/);
  });

  it('refuses a python init that arms a timer', () => {
    const init = bashInit('timer.py', 'import signal\nsignal.setitimer(signal.ITIMER_REAL, 100)\n');
    const r = warm([`--after-init=${init}`, 'python3']);
    expect(r.status, r.out).toBe(1);
    expect(r.out).toMatch(/armed a timer/);
  });

  it('takes an init that redirects only for a moment, runs children (which read the clock and rdtsc) to completion and reads files', () => {
    const r = warm([`--after-init=${bashInit('fine.sh', 'x=$(cat /etc/hostname); echo "$x" >/dev/null; ls / >/dev/null 2>&1; ( : $EPOCHREALTIME )\n')}`, 'bash']);
    expect(r.status, r.out).toBe(0);
  });

  it('a refused init still runs, cold, with its output', () => {
    const init = bashInit('output2.sh', 'echo init says hi\n');
    expect(warm([`--after-init=${init}`, 'bash']).status).toBe(1);
    const r = spawnSync(LAUNCHER, [`--after-init=${init}`, 'bash', '-c', 'echo script'], { env, encoding: 'utf8' });
    expect(r.stdout).toBe('init says hi\nscript\n');
    expect(r.status).toBe(0);
  });
});
