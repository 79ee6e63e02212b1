/**
 * What a post-init snapshot refuses, each with its reason: an init whose
 * effects a restore could not reproduce (output, a working directory, a child
 * still running, a descriptor left open, a thread, a timer, stdin). Each case
 * is a real bash or python3 run to its checkpoint under the real tracer, and
 * each refusal is then a cold run of the same command with the same output.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import * as net from 'node:net';
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

/** `--warm` in a child process without blocking this one (a server here must keep accepting). */
function warmAsync(args: string[]): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(LAUNCHER, ['--warm', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', (status) => resolve({ status, out }));
  });
}

describe('an init with side effects outside its memory is refused, naming the file and the syscall', () => {
  const file = (name: string, body = 'old\n'): string => {
    const p = path.join(work, name);
    fs.writeFileSync(p, body);
    return p;
  };

  it('appends to a log: refused; cold runs append every time', () => {
    const log = file('init.log', '');
    const init = bashInit('append.sh', `echo started >> ${log}\n`);
    const r = warm([`--after-init=${init}`, 'bash']);
    expect(r.status, r.out).toBe(1);
    expect(r.out).toContain(`snapshot refused (side-effects): the init: openat ${log}: opened for writing`);
    const before = fs.readFileSync(log, 'utf8').split('\n').length;
    for (let i = 0; i < 2; i++) {
      const c = spawnSync(LAUNCHER, [`--after-init=${init}`, 'bash', '-c', 'echo ran'], { env, encoding: 'utf8' });
      expect(c.stdout).toBe('ran\n');
    }
    expect(fs.readFileSync(log, 'utf8').split('\n').length).toBe(before + 2);
  });

  const cases: [string, (p: string) => string, RegExp][] = [
    ['rewrites a file (a child)', (p) => `date +%N > ${p}\n`, /a child of the init \(pid \d+, [^)]*\): openat .*rw-target-1: opened for writing/],
    ['truncates a file', (p) => `: > ${p}\n`, /the init: openat .*rw-target-2: opened for writing/],
    ['renames a file back and forth', (p) => `mv ${p} ${p}.x; mv ${p}.x ${p}\n`, /a child of the init \(pid \d+, \/usr\/bin\/mv\): renameat2? .*rw-target-3 to .*rw-target-3\.x: renamed/],
    ['chmods a file', (p) => `chmod 640 ${p}\n`, /\/usr\/bin\/chmod\): fchmodat .*rw-target-4: owner or mode changed/],
    ['sets a file\'s times', (p) => `touch ${p}\n`, /\/usr\/bin\/touch\): (utimensat|openat) .*rw-target-5/],
    ['replaces a symlink', (p) => `ln -sf /etc/hostname ${p}\n`, /\/usr\/bin\/ln\): (symlinkat|renameat2?|unlinkat) /],
    ['removes and makes a directory', (p) => `rm -f ${p}; mkdir ${p}.d 2>/dev/null; rmdir ${p}.d; mkdir ${p}.d\n`, /(unlinkat|rmdir) .*rw-target-7.*removed/],
  ];
  cases.forEach(([what, body, reason], i) => {
    it(`${what}: refused`, () => {
      const target = file(`rw-target-${i + 1}`);
      const r = warm([`--after-init=${bashInit(`effect-${i + 1}.sh`, body(target))}`, 'bash']);
      expect(r.status, r.out).toBe(1);
      expect(r.out).toMatch(/snapshot refused \(side-effects\)/);
      expect(r.out).toMatch(reason);
    });
  });

  it('connects a socket: refused', async () => {
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const init = bashInit('socket.sh', `exec 3<>/dev/tcp/127.0.0.1/${port}; exec 3>&-\n`);
      const r = await warmAsync([`--after-init=${init}`, 'bash']);
      expect(r.status, r.out).toBe(1);
      expect(r.out).toContain(`the init: connect 127.0.0.1:${port}: a socket outside the process`);
    } finally {
      server.close();
    }
  });

  it('signals another process: refused (probing it with signal 0 is fine)', () => {
    const victim = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const ok = warm([`--after-init=${bashInit('probe-kill.sh', `kill -0 ${victim.pid}\n`)}`, 'bash']);
      expect(ok.status, ok.out).toBe(0);
      const r = warm([`--after-init=${bashInit('kill.sh', `kill -CONT ${victim.pid}\n`)}`, 'bash']);
      expect(r.status, r.out).toBe(1);
      expect(r.out).toContain(`the init: kill: signal 18 to process ${victim.pid}`);
    } finally {
      victim.kill('SIGKILL');
    }
  });

  it('a temporary file made and removed again, and mkdir -p of what exists, are no side effects', () => {
    const dir = path.join(work, 'exists');
    fs.mkdirSync(dir, { recursive: true });
    const init = bashInit('tmpfile.sh', `echo x > ${work}/scratch; read -r y < ${work}/scratch; rm -f ${work}/scratch\n` +
      `mkdir -p ${dir}; t=${work}/tdir; mkdir $t; : > $t/a; rm -rf $t\n`);
    const r = warm([`--after-init=${init}`, 'bash']);
    expect(r.status, r.out).toBe(0);
    expect(fs.existsSync(path.join(work, 'scratch'))).toBe(false);
  });

  it('python writing its bytecode cache on a first import is taken (the pair runs again); writing every time is refused', () => {
    const lib = path.join(work, 'pylib');
    fs.mkdirSync(lib, { recursive: true });
    fs.writeFileSync(path.join(lib, 'cxfreshmod.py'), 'VALUE = 42\n');
    const init = bashInit('fresh.py', `import sys\nsys.path.insert(0, ${JSON.stringify(lib)})\nimport cxfreshmod\n`);
    expect(fs.existsSync(path.join(lib, '__pycache__'))).toBe(false);
    const r = warm([`--after-init=${init}`, 'python3']);
    expect(r.status, r.out).toBe(0);
    expect(fs.readdirSync(path.join(lib, '__pycache__')).some((n) => n.startsWith('cxfreshmod.'))).toBe(true);
    const out = spawnSync(LAUNCHER, [`--after-init=${init}`, 'python3', '-c', 'import cxfreshmod; print(cxfreshmod.VALUE)'], { env, encoding: 'utf8' });
    expect(out.stdout).toBe('42\n');

    const log = file('py.log', '');
    const writer = bashInit('writes.py', `open(${JSON.stringify(log)}, 'a').write('x')\n`);
    const w = warm([`--after-init=${writer}`, 'python3']);
    expect(w.status, w.out).toBe(1);
    expect(w.out).toContain(`snapshot refused (side-effects): the init: openat ${log}: opened for writing`);
  });
});
