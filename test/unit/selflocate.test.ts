/**
 * The self-locating probe (src/snapshot/selflocate.ts) on real programs with
 * real ptrace: gcc and python3 look around the file their argv[0] leads to,
 * shells and coreutils do not; small C programs built here show each way a
 * probe run ends (evidence, exit, a syscall off the allow-list, the deadline)
 * and that nothing the program does outside its process gets done.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeSelfLocating } from '../../src/snapshot/selflocate.js';
import { LAUNCHER, ROOT, SYSTEM_PATH, cc, removeDir, tmpDir } from '../helpers/cx.js';

const env = { PATH: SYSTEM_PATH, HOME: os.homedir(), LC_ALL: 'C' };
const which = (name: string): string => execFileSync('sh', ['-c', `command -v ${name}`], { env, encoding: 'utf8' }).trim();
const probe = (name: string, exePath = which(name), limits: { cpuMs?: number; timeoutMs?: number } = {}): ReturnType<typeof probeSelfLocating> =>
  probeSelfLocating({ launcher: LAUNCHER, exePath, name, env, ...limits });

let work: string;
const leftovers = (): string[] => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('cx-selflocate-'));
let before: string[];

/** A C program built in `work`, named `name`. */
function program(name: string, body: string): string {
  const src = path.join(work, `${name}.c`);
  fs.writeFileSync(src, `#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
int main(int argc, char **argv) { (void)argc; (void)argv;
${body}
}
`);
  const exe = path.join(work, name);
  cc(['-O1', '-o', exe, src]);
  return exe;
}

beforeAll(() => {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-native.mjs'), '--quiet']);
  work = tmpDir('cx-selflocate-test-');
  before = leftovers();
});
afterAll(() => removeDir(work));

describe('real programs', () => {
  for (const name of ['gcc', 'cc', 'g++']) {
    it(`${name}: self-locating (looks for its lib/gcc next to the file argv[0] led to)`, () => {
      const r = probe(name);
      expect(r.selfLocating, JSON.stringify(r)).toBe(true);
      expect(r.evidence?.path).toMatch(/\/decoy\/lib\/gcc\//);
    });
  }

  it('python3: self-locating (its prefix is found from the executable\'s path)', () => {
    const r = probe('python3', fs.realpathSync('/usr/bin/python3'));
    expect(r.selfLocating, JSON.stringify(r)).toBe(true);
    expect(r.evidence?.path).toMatch(/\/decoy\//);
  });

  for (const name of ['bash', 'dash', 'sed', 'ls', 'perl']) {
    it(`${name}: not self-locating, and the run ended by itself or at a syscall, not at the deadline`, () => {
      const r = probe(name);
      expect(r.selfLocating, JSON.stringify(r)).toBe(false);
      expect(r.evidence).toBeNull();
      expect(r.stop).toMatch(/^(exit \d+|syscall )/);
      expect(r.syscalls).toBeGreaterThan(10); // it really ran: the loader alone makes dozens
    });
  }
});

describe('how a probe run ends', () => {
  it('a program that searches PATH for argv[0] and looks next to where it leads: evidence', () => {
    const exe = program('finds-itself', String.raw`
      char *p = getenv("PATH"), buf[PATH_MAX], real[PATH_MAX];
      for (char *d = strtok(p, ":"); d; d = strtok(0, ":")) {
        snprintf(buf, sizeof buf, "%s/%s", d, argv[0]);
        if (access(buf, X_OK) == 0 && realpath(buf, real)) {
          *strrchr(real, '/') = 0;
          strcat(real, "/../share/finds-itself/data");
          struct stat st; return stat(real, &st) == 0;
        }
      }
      return 2;`);
    const r = probe('finds-itself', exe);
    expect(r).toMatchObject({ selfLocating: true, stop: 'evidence', evidence: { syscall: expect.stringMatching(/stat/) } });
    expect(r.evidence?.path).toMatch(/\/decoy\/share\/finds-itself\/data$/);
  });

  it('a program that only prints argv[0]: runs to its exit', () => {
    const exe = program('prints-name', 'printf("%s\\n", argv[0]); fprintf(stderr, "%s: usage\\n", argv[0]); return 3;');
    expect(probe('prints-name', exe)).toMatchObject({ selfLocating: false, stop: 'exit 3' });
  });

  it('a syscall with effects outside the process stops the run before it happens', () => {
    const marker = path.join(work, 'created-by-probe');
    const exe = program('makes-dir', `mkdir("${marker}", 0700); return 0;`);
    const r = probe('makes-dir', exe);
    expect(r).toMatchObject({ selfLocating: false, stop: expect.stringMatching(/^syscall mkdir/) });
    expect(fs.existsSync(marker)).toBe(false);
    const file = path.join(work, 'written-by-probe');
    const w = program('writes-file', `FILE *f = fopen("${file}", "w"); if (f) fputs("x", f); return 0;`);
    expect(probe('writes-file', w).stop).toMatch(/^syscall open(at)? \(opens .*written-by-probe for writing\)/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('a program that runs on and on: stopped when it used its CPU time, killed', () => {
    for (const [name, body] of [['spins', 'for (;;) getpid();'], ['spins-quietly', 'for (volatile long i = 0;; i++) ;']]) {
      const r = probe(name, program(name, body), { cpuMs: 300 });
      expect(r).toMatchObject({ selfLocating: false, stop: expect.stringMatching(/^(deadline|20000 syscalls)$/) });
      expect(execFileSync('sh', ['-c', `pgrep -x ${name} || true`], { encoding: 'utf8' }).trim()).toBe('');
    }
  });

  it('a program blocked where nothing comes: stopped at the wall-clock deadline', () => {
    const fifo = path.join(work, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const r = probe('waits', program('waits', `FILE *f = fopen("${fifo}", "r"); return f != 0;`), { timeoutMs: 500 });
    expect(r).toMatchObject({ selfLocating: false, stop: 'deadline' });
  });

  it('a program that cannot be started: an error (no probe is not a "no"), nothing left running', () => {
    const exe = path.join(work, 'not-elf');
    fs.writeFileSync(exe, 'garbage', { mode: 0o755 });
    expect(() => probe('not-elf', exe)).toThrow(/could not start .*not-elf under ptrace \(the helper exited with 127\)/);
  });

  it('leaves no temporary tree behind', () => {
    expect(leftovers().filter((n) => !before.includes(n))).toEqual([]);
  });
});
