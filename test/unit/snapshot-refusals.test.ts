/**
 * What the snapshotter refuses, and what it accepts, on small real programs
 * built here: one library constructor doing one thing each (constructors of
 * shared libraries run before the entry point; the main program's own run
 * after it, inside the restored process, so they are no concern). Real
 * ptrace, no mocks. After every case no tracee may be left behind.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ImageModel } from '../../src/image/format.js';
import { FileKind, SlotKind } from '../../src/image/schema.js';
import type { SnapshotOutcome } from '../../src/snapshot/api.js';
import { takeSnapshot } from '../../src/snapshot/snapshot.js';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: os.homedir(), LC_ALL: 'C' };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-snap-refusals-'));

beforeAll(() => {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--quiet']);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Processes whose parent is this test process (a tracee that outlived its snapshot). */
function ourChildren(): string[] {
  const out: string[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === process.pid) out.push(`${p} ${stat.slice(0, stat.lastIndexOf(')') + 1)}`);
    } catch {
      /* gone */
    }
  }
  return out;
}
afterEach(() => {
  expect(ourChildren()).toEqual([]);
});

function snap(exe: string, timeoutMs?: number): SnapshotOutcome {
  return takeSnapshot({ exePath: exe, argv: [exe], env, launcher, ...(timeoutMs ? { timeoutMs } : {}) });
}
const reason = (r: SnapshotOutcome): string => (r.ok ? 'ok' : `${r.reason}: ${r.detail}`);
const code = (r: SnapshotOutcome): string => (r.ok ? 'ok' : r.reason);
function image(r: SnapshotOutcome): ImageModel {
  if (!r.ok) throw new Error(`refused: ${r.reason}: ${r.detail}`);
  return r.image;
}
const count = (m: ImageModel, kind: number): number => m.slots.filter((s) => s.kind === kind).length;

let serial = 0;
/** A program linked against one library whose constructor has `body` (given the constructor's argc/argv/envp). */
function withLibConstructor(body: string, opts: { includes?: string; cflags?: string[]; ldflags?: string[] } = {}): string {
  const name = `c${serial++}`;
  const src = path.join(dir, `${name}.c`);
  fs.writeFileSync(src, `${opts.includes ?? ''}
#include <stdlib.h>
__attribute__((constructor)) static void cx_test_init(int argc, char **argv, char **envp) {
  (void)argc; (void)argv; (void)envp;
  ${body}
}
`);
  execFileSync('cc', ['-O1', '-shared', '-fPIC', '-o', path.join(dir, `lib${name}.so`), src, ...(opts.cflags ?? [])]);
  const main = path.join(dir, `${name}-main.c`);
  fs.writeFileSync(main, 'int main(void) { return 0; }\n');
  const exe = path.join(dir, `${name}-prog`);
  execFileSync('cc', ['-O1', '-o', exe, main, `-L${dir}`, '-Wl,--no-as-needed', `-l${name}`, ...(opts.ldflags ?? [`-Wl,-rpath,${dir}`])]);
  letAge();
  return exe;
}

/**
 * The snapshot refuses a dependency written within a few clock ticks of its
 * start (fresh.ts: "too new"); a fixture snapshotted in-process right after
 * the compiler wrote it waits that long first.
 */
function letAge(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
}

describe('the program file', () => {
  it('a static glibc program has nothing for the loader to save', () => {
    fs.writeFileSync(path.join(dir, 'hello.c'), '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n');
    execFileSync('cc', ['-O1', '-static', '-o', path.join(dir, 'hello-static'), path.join(dir, 'hello.c')]);
    expect(code(snap(path.join(dir, 'hello-static')))).toBe('static-binary');
  });

  it('busybox, when present, is static too', () => {
    if (!fs.existsSync('/bin/busybox')) return;
    const r = snap('/bin/busybox');
    expect(['static-binary', 'ok']).toContain(code(r)); // a distribution may link it dynamically
  });

  it('a script without #! is not ELF', () => {
    const f = path.join(dir, 'script');
    fs.writeFileSync(f, 'echo hi\n', { mode: 0o755 });
    expect(code(snap(f))).toBe('not-elf');
  });

  it('a program for another machine is foreign', () => {
    const f = path.join(dir, 'foreign');
    const elf = fs.readFileSync('/bin/true');
    elf.writeUInt16LE(183 /* EM_AARCH64 */, 18);
    fs.writeFileSync(f, elf, { mode: 0o755 });
    expect(code(snap(f))).toBe('foreign-arch');
  });

  it('a missing program', () => {
    expect(code(snap(path.join(dir, 'no-such-program')))).toBe('not-found');
  });

  it('setuid and setgid programs are privileged', () => {
    for (const [name, mode] of [['suid', 0o4755], ['sgid', 0o2755]] as const) {
      const f = path.join(dir, name);
      fs.copyFileSync('/bin/true', f);
      fs.chmodSync(f, mode);
      expect(code(snap(f))).toBe('privileged');
    }
  });

  it('a program with file capabilities is privileged', () => {
    const f = path.join(dir, 'withcaps');
    fs.copyFileSync('/bin/true', f);
    try {
      execFileSync('setcap', ['cap_net_bind_service+ep', f], { stdio: 'ignore' });
    } catch {
      return; // no setcap or no xattr support here: nothing to test
    }
    expect(code(snap(f))).toBe('privileged');
  });
});

describe('library constructors that leave nothing behind', () => {
  it('plain computation is fine', () => {
    const exe = withLibConstructor('static volatile int v; v = 42;');
    const m = image(snap(exe));
    expect(count(m, SlotKind.ARGC)).toBe(2);
    expect(m.files.some((f) => f.kind === FileKind.MAPPED && f.path.endsWith('.so'))).toBe(true);
  });

  it('a copy of the pid becomes a TID slot', () => {
    const exe = withLibConstructor('extern int cached_pid; cached_pid = getpid();', {
      includes: '#include <unistd.h>\nint cached_pid;',
    });
    const m = image(snap(exe));
    expect(count(m, SlotKind.TID)).toBe(2); // the thread block's and ours
  });

  it('a copy of argc becomes an ARGC slot, a copy of argv an ARGV slot', () => {
    const exe = withLibConstructor('saved_argc = argc; saved_argv = argv;', { includes: 'int saved_argc; char **saved_argv;' });
    const m = image(snap(exe));
    expect(count(m, SlotKind.ARGC)).toBe(3);
    expect(count(m, SlotKind.ARGV)).toBe(3);
  });

  it('a read-only shared mapping of a file is a file region', () => {
    const data = path.join(dir, 'shared-data');
    fs.writeFileSync(data, Buffer.alloc(8192, 7));
    const exe = withLibConstructor(`int fd = open("${data}", O_RDONLY); ro = mmap(0, 8192, PROT_READ, MAP_SHARED, fd, 0); close(fd);`, {
      includes: '#include <fcntl.h>\n#include <sys/mman.h>\n#include <unistd.h>\nvoid *ro;',
    });
    const m = image(snap(exe));
    expect(m.files.find((f) => f.path === data)?.kind).toBe(FileKind.MAPPED);
  });

  it('a key taken verbatim from getrandom is kept (like malloc\'s tcache key) and noted', () => {
    const exe = withLibConstructor('getrandom(&key, sizeof key, 0);', { includes: '#include <sys/random.h>\nunsigned long key;' });
    const r = snap(exe);
    expect(r.ok ? r.notes.join('\n') : reason(r)).toMatch(/getrandom output kept verbatim/);
  });

  it('a probe of a missing file is a negative dependency', () => {
    const exe = withLibConstructor('');
    const m = image(snap(exe));
    expect(m.files.some((f) => f.kind === FileKind.ABSENT)).toBe(true);
    expect(m.files.some((f) => f.kind === FileKind.READ && f.path === '/etc/ld.so.cache')).toBe(true);
  });
});

describe('library constructors that refuse the snapshot', () => {
  const cases: [string, string, string, string][] = [
    // [what, includes, body, expected code]
    ['starts a thread', '#include <pthread.h>\n#include <unistd.h>\nstatic void *spin(void *a) { (void)a; for (;;) pause(); return 0; }',
      'pthread_t t; pthread_create(&t, 0, spin, 0);', 'unsupported-syscall'],
    ['forks', '#include <unistd.h>', 'if (fork() == 0) _exit(0);', 'unsupported-syscall'],
    ['keeps a file open', '#include <fcntl.h>', 'open("/etc/hostname", O_RDONLY);', 'open-fds'],
    ['installs a signal handler', '#include <signal.h>\nstatic void on(int s) { (void)s; }', 'signal(SIGUSR1, on);', 'unsupported-syscall'],
    ['blocks a signal', '#include <signal.h>', 'sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR1); sigprocmask(SIG_BLOCK, &s, 0);', 'unsupported-syscall'],
    ['writes to stderr', '#include <unistd.h>', 'write(2, "hello\\n", 6);', 'unsupported-syscall'],
    ['asks whether stdout is a terminal', '#include <unistd.h>', 'extern int tty; tty = isatty(1);', 'unsupported-syscall'],
    ['keeps the time read through the vdso', '#include <time.h>', 'extern long started; started = (long)time(0);', 'clock-slot'],
    ['keeps a monotonic clock\'s nanoseconds', '#include <time.h>', 'struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); extern long started; started = ts.tv_nsec;', 'clock-slot'],
    ['derives a value from the time', '#include <time.h>', 'extern long started; started = (long)time(0) / 3600 * 7 + 1;', 'unexplained-difference'],
    ['reads a process CPU clock', '#include <time.h>', 'struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); extern long started; started = ts.tv_nsec;', 'unsupported-syscall'],
    ['reads the time stamp counter', '#include <x86intrin.h>', 'extern long started; started = (long)__rdtsc();', 'unsupported-syscall'],
    ['reads the working directory', '#include <unistd.h>', 'static char buf[4096]; getcwd(buf, sizeof buf);', 'unsupported-syscall'],
    ['reads its own /proc files', '#include <stdio.h>', 'FILE *f = fopen("/proc/self/maps", "r"); if (f) fclose(f);', 'unsupported-syscall'],
    ['opens a file for writing', '#include <fcntl.h>\n#include <unistd.h>', `int fd = open("${dir}/written", O_WRONLY | O_CREAT, 0644); if (fd >= 0) close(fd);`, 'unsupported-syscall'],
    ['sets a resource limit', '#include <sys/resource.h>', 'struct rlimit r; getrlimit(RLIMIT_NOFILE, &r); setrlimit(RLIMIT_NOFILE, &r);', 'unsupported-syscall'],
    ['maps shared writable memory', '#include <sys/mman.h>', 'extern void *shm; shm = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);', 'shared-writable-mapping'],
    ['copies an environment variable', '#include <string.h>', 'extern char env_copy[256]; const char *h = getenv("HOME"); if (h) strncpy(env_copy, h, 255);', 'keyed:HOME'],
    ['only looks whether a variable is set', '', 'extern int tty; tty = getenv("CX_NOT_SET_ANYWHERE") != 0;', 'keyed:CX_NOT_SET_ANYWHERE'],
    ['looks a variable up with secure_getenv', '', 'extern int tty; tty = secure_getenv("CX_SECURE_ONE") != 0;', 'keyed:CX_SECURE_ONE'],
    ['reads the environment without getenv', '', 'extern int tty; for (char **e = envp; *e; e++) tty += (*e)[0];', 'env-bound'],
    ['keeps a pointer to an environment string without reading it', '', 'extern const char *home; home = envp[0];', 'unexplained-stack-pointer'],
    ['counts the environment', '', 'extern int tty; for (char **e = envp; *e; e++) tty++;', 'unexplained-difference'],
    ['exits', '#include <unistd.h>', '_exit(3);', 'exited-before-entry'],
    ['seeds a generator from getrandom', '#include <sys/random.h>',
      'unsigned long s = 0; getrandom(&s, sizeof s, 0); extern unsigned long state; state = s * 6364136223846793005UL + 1442695040888963407UL;',
      'unexplained-difference'],
  ];
  const globals = 'int tty; long started; void *shm; char env_copy[256]; const char *home; unsigned long state;';
  for (const [what, includes, body, want] of cases) {
    it(`${what}: ${want}`, () => {
      const exe = withLibConstructor(body, { includes: `${includes}\n${globals}`, cflags: ['-pthread'] });
      const r = snap(exe);
      if (want === 'env-bound') {
        // Not refused: the image is bound to the snapshot's exact environment (key.envHash).
        expect(code(r), reason(r)).toBe('ok');
        expect(r.ok ? r.image.key.envHash ?? 0n : 0n).not.toBe(0n);
        return;
      }
      if (want === 'clock-slot') {
        // Not refused: the kept reading is a CLOCK slot, which every restore fills with its own time.
        expect(code(r), reason(r)).toBe('ok');
        expect(r.ok ? r.image.slots.filter((s) => s.kind === SlotKind.CLOCK).length : 0).toBe(1);
        return;
      }
      if (want.startsWith('keyed:')) {
        // Not refused, not bound to the whole environment: keyed on the variable looked up (getenv traced).
        expect(code(r), reason(r)).toBe('ok');
        if (!r.ok) return;
        expect(r.image.key.envHash ?? 0n).toBe(0n);
        expect(r.image.envDeps?.map((d) => d.name)).toEqual([want.slice('keyed:'.length)]);
        return;
      }
      expect(code(r), reason(r)).toBe(want);
      if (!r.ok) expect(r.detail).not.toMatch(/\n/);
    });
  }

  it('a library found through a relative run path depends on the working directory', () => {
    const exe = withLibConstructor('', { ldflags: ['-Wl,-rpath,relative/lib:' + dir] });
    const r = snap(exe);
    expect(code(r), reason(r)).toBe('unsupported-syscall');
    expect(r.ok ? '' : r.detail).toMatch(/working directory/);
  });

  it('a constructor that never returns times out, and its process is gone', () => {
    const exe = withLibConstructor('for (;;) __asm__ volatile("");');
    const t0 = Date.now();
    const r = snap(exe, 1500);
    expect(code(r)).toBe('timeout');
    // It gives up instead of hanging: bounded generously, since both cores may be busy (a timing is not the point).
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  it('a constructor blocked in a syscall times out too', () => {
    const exe = withLibConstructor('static int word; syscall(SYS_futex, &word, 0 /* FUTEX_WAIT */, 0, 0, 0, 0);', {
      includes: '#include <unistd.h>\n#include <sys/syscall.h>',
    });
    const r = snap(exe, 1500);
    expect(code(r)).toBe('timeout');
  });
});
