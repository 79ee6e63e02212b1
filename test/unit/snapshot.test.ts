/**
 * The snapshotter on real programs with real ptrace: what it finds, what it
 * refuses, and that nothing of the snapshot run's environment lands in the
 * image.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseImage, serializeImage, type ImageModel } from '../../src/image/format.js';
import { RegionFlag, SlotKind, Src, constName } from '../../src/image/schema.js';
import { takeSnapshot } from '../../src/snapshot/snapshot.js';

const root = path.resolve(import.meta.dirname, '../..');
const launcher = path.join(root, 'bin', 'cached-exec');
const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: os.homedir(), LC_ALL: 'C' };

const programs = ['/usr/bin/bash', '/usr/bin/dash', '/usr/bin/perl', '/usr/bin/sed', '/usr/bin/mawk', '/usr/bin/ls',
  '/usr/bin/cat', '/usr/bin/cmake', '/usr/bin/python3'].filter((p) => fs.existsSync(p));

function snap(exe: string, extraEnv: Record<string, string> = {}): ImageModel {
  const r = takeSnapshot({ exePath: exe, argv: [exe], env: { ...env, ...extraEnv }, launcher });
  if (!r.ok) throw new Error(`${exe} refused: ${r.reason}: ${r.detail}`);
  return r.image;
}

function kinds(m: ImageModel): Map<string, number> {
  const k = new Map<string, number>();
  for (const s of m.slots) k.set(constName('CX_SLOT_', s.kind), (k.get(constName('CX_SLOT_', s.kind)) ?? 0) + 1);
  return k;
}

describe('snapshots of real programs', () => {
  it('builds the launcher', () => {
    execFileSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--quiet']);
  });

  for (const exe of programs) {
    it(`${path.basename(exe)}: slots, regions and files are what a restore needs`, () => {
      const m = snap(exe);
      const k = kinds(m);
      // The words every glibc program has at its entry point (DESIGN.md, facts measured).
      for (const want of ['ARGC_ADDR', 'ARGV', 'ENVP', 'AUXV', 'ARGC', 'TID', 'CANARY']) {
        expect(k.get(want), `${want} in ${[...k]}`).toBeGreaterThan(0);
      }
      expect(k.get('ARGC')).toBe(2); // ld.so's and libc's copies, found only by the differential run
      expect((k.get('ARGV_STR') ?? 0) + (k.get('ARGV_BASENAME') ?? 0)).toBeGreaterThan(0);
      let prevEnd = 0n;
      for (const r of m.regions) {
        expect(r.addr % 4096n).toBe(0n);
        expect(r.len % 4096n).toBe(0n);
        expect(r.addr >= prevEnd).toBe(true);
        prevEnd = r.addr + r.len;
        if (r.source === Src.DATA) expect(r.data?.length).toBe(Number(r.len));
      }
      for (const s of m.slots) {
        const r = m.regions.find((x) => s.addr >= x.addr && s.addr < x.addr + x.len);
        expect(r?.source).toBe(Src.DATA);
        expect((r?.flags ?? 0) & RegionFlag.PATCHED).toBe(RegionFlag.PATCHED);
      }
      const exeFile = m.files.find((f) => f.path === exe);
      expect(exeFile?.flags).toBe(1);
      expect(m.state.entry).toBe(m.state.atEntry);
      expect(m.vdso.some((v) => v.offset === 0n)).toBe(true);
      const back = parseImage(serializeImage(m));
      expect(back.problems).toEqual([]);
      expect(back.model.slots.length).toBe(m.slots.length);
    });
  }

  it('keeps the snapshot environment out of the image', () => {
    const secret = `s3cr3t-${process.pid}-${Date.now()}`;
    const m = snap('/usr/bin/bash', { CX_SECRET_TEST: secret, ANOTHER: `x${secret}y` });
    const bytes = serializeImage(m);
    expect(bytes.includes(Buffer.from(secret))).toBe(false);
    expect(m.slots.every((s) => s.kind !== SlotKind.EXECFN || s.arg === 0n)).toBe(true);
  });
});

describe('refusals', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cx-snap-'));

  it('a static binary: nothing for the loader to save', () => {
    const src = path.join(dir, 'exit.c');
    fs.writeFileSync(src, 'void _start(void){ __asm__ volatile("mov $60,%eax; xor %edi,%edi; syscall"); }\n');
    const exe = path.join(dir, 'exit-static');
    execFileSync('cc', ['-O2', '-nostdlib', '-static', '-o', exe, src]);
    const r = takeSnapshot({ exePath: exe, argv: [exe], env, launcher });
    expect(r.ok ? 'ok' : r.reason).toBe('static-binary');
  });

  it('a script without #! is not ELF', () => {
    const f = path.join(dir, 'script');
    fs.writeFileSync(f, 'echo hi\n', { mode: 0o755 });
    const r = takeSnapshot({ exePath: f, argv: [f], env, launcher });
    expect(r.ok ? 'ok' : r.reason).toBe('not-elf');
  });

  /**
   * Constructors of shared libraries run before the entry point (the main
   * program's own run after it, inside the restored process, so they are no
   * concern): each case builds a library whose constructor does one thing.
   */
  function withLibConstructor(name: string, body: string, extraFlags: string[] = []): string {
    const lib = path.join(dir, `lib${name}.so`);
    fs.writeFileSync(path.join(dir, `${name}.c`), body);
    execFileSync('cc', ['-O2', '-shared', '-fPIC', '-o', lib, path.join(dir, `${name}.c`), ...extraFlags]);
    fs.writeFileSync(path.join(dir, `${name}-main.c`), 'int main(void) { return 0; }\n');
    const exe = path.join(dir, `${name}-prog`);
    execFileSync('cc', ['-O2', '-o', exe, path.join(dir, `${name}-main.c`), `-L${dir}`, '-Wl,--no-as-needed', `-l${name}`, `-Wl,-rpath,${dir}`]);
    return exe;
  }
  const reason = (exe: string): string => {
    const r = takeSnapshot({ exePath: exe, argv: [exe], env, launcher });
    return r.ok ? 'ok' : r.reason;
  };

  it('a library whose constructor does nothing special is fine', () => {
    const exe = withLibConstructor('plain', 'int plain_value = 42;\n__attribute__((constructor)) static void init(void) { plain_value++; }\n');
    expect(reason(exe)).toBe('ok');
  });

  it('a library constructor that starts a thread', () => {
    const exe = withLibConstructor('thr', `#include <pthread.h>
#include <unistd.h>
static void *spin(void *a) { (void)a; for (;;) pause(); return 0; }
__attribute__((constructor)) static void start(void) { pthread_t t; pthread_create(&t, 0, spin, 0); }
`, ['-pthread']);
    expect(reason(exe)).toMatch(/^(unsupported-syscall|threads)$/);
  });

  it('a library constructor that keeps a file open', () => {
    const exe = withLibConstructor('fd', `#include <fcntl.h>
__attribute__((constructor)) static void keep(void) { open("/etc/hostname", O_RDONLY); }
`);
    expect(reason(exe)).toBe('open-fds');
  });

  it('a library constructor that copies an environment variable', () => {
    const exe = withLibConstructor('envcopy', `#include <stdlib.h>
#include <string.h>
char env_copy[256];
__attribute__((constructor)) static void grab(void) { const char *h = getenv("HOME"); if (h) strncpy(env_copy, h, 255); }
`);
    expect(reason(exe)).toBe('unexplained-difference');
  });

  it('a library constructor that installs a signal handler', () => {
    const exe = withLibConstructor('sig', `#include <signal.h>
static void on(int s) { (void)s; }
__attribute__((constructor)) static void install(void) { signal(SIGUSR1, on); }
`);
    expect(reason(exe)).toBe('unsupported-syscall');
  });
});
