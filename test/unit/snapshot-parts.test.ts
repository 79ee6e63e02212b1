/**
 * The snapshotter's pieces that need no tracee: the syscall policy, the vdso
 * symbol reader (on this process's own vdso), the layout pairing, region
 * merging and stack-pointer classification.
 */
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EnvDepFlag, RegionFlag, SlotKind, Src } from '../../src/image/schema.js';
import { announcement, initLookups, lookupDependencies } from '../../src/snapshot/lookups.js';
import { acceptLoaderClockWords } from '../../src/snapshot/clock.js';
import type { CapturedMapping, Mapping } from '../../src/snapshot/capture.js';
import { readMaps, sameFileAsMapping } from '../../src/snapshot/capture.js';
import { checkSameContents, translate } from '../../src/snapshot/layout.js';
import { SnapshotRefusal } from '../../src/snapshot/refusal.js';
import { buildRegions } from '../../src/snapshot/regions.js';
import { classifyStackPointer, type StackLayout } from '../../src/snapshot/slots.js';
import { deadStackWords } from '../../src/snapshot/dead-stack.js';
import { heapSpan } from '../../src/snapshot/process-state.js';
import { loaderIsLibc } from '../../src/snapshot/libc-loader.js';
import { NR, checkSyscall } from '../../src/snapshot/syscalls.js';
import { guardedVdsoFunctions } from '../../src/snapshot/vdso.js';

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof SnapshotRefusal) return e.code;
    throw e;
  }
  return 'ok';
}

describe('syscall policy', () => {
  const strings = new Map<bigint, string>([[0x1000n, '/etc/ld.so.cache'], [0x2000n, 'lib/libx.so'], [0x3000n, ''], [0x4000n, '/proc/self/maps']]);
  const read = (a: bigint): string => strings.get(a) ?? '';
  const check = (nr: number, ...args: (bigint | number)[]): string => refusal(() => checkSyscall(nr, args.map(BigInt), read, 4242));
  const AT_FDCWD = -100n & 0xffffffffffffffffn;

  it('allows what the loader does', () => {
    expect(check(NR.openat, AT_FDCWD, 0x1000, 0o2000000 /* O_RDONLY|O_CLOEXEC */)).toBe('ok');
    expect(check(NR.read, 3, 0, 100)).toBe('ok');
    expect(check(NR.mmap, 0, 4096, 1, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0)).toBe('ok');
    expect(check(NR.mmap, 0, 4096, 1, 0x802 /* MAP_PRIVATE|MAP_DENYWRITE */, 3, 0)).toBe('ok');
    expect(check(NR.arch_prctl, 0x1002, 0x7f0000000000)).toBe('ok');
    expect(check(NR.prlimit64, 0, 3, 0, 0x7ffd0000)).toBe('ok');
    expect(check(NR.newfstatat, 3, 0x3000, 0x7ffd0000, 0x1000 /* AT_EMPTY_PATH */)).toBe('ok');
    expect(checkSyscall(NR.access, [0x1000n, 4n], read, 1)).toEqual({ path: '/etc/ld.so.cache', kind: 'probe' });
  });

  it('refuses what a restore would not reproduce', () => {
    expect(check(NR.read, 0, 0, 100)).toBe('unsupported-syscall'); // the caller's stdin
    expect(check(NR.fstat, 1, 0)).toBe('unsupported-syscall');
    expect(check(NR.close, 2)).toBe('unsupported-syscall');
    expect(check(NR.write, 5, 0, 1)).toBe('unsupported-syscall');
    expect(check(NR.ioctl, 1, 0x5401)).toBe('unsupported-syscall');
    expect(check(NR.openat, AT_FDCWD, 0x2000, 0)).toBe('unsupported-syscall'); // relative to the cwd
    expect(check(NR.openat, 7, 0x2000, 0)).toBe('unsupported-syscall'); // relative to a directory fd
    expect(check(NR.openat, AT_FDCWD, 0x1000, 0o101 /* O_WRONLY|O_CREAT */)).toBe('unsupported-syscall');
    expect(check(NR.openat, AT_FDCWD, 0x4000, 0)).toBe('unsupported-syscall');
    expect(check(NR.rt_sigaction, 10, 0x7ffd0000, 0, 8)).toBe('unsupported-syscall');
    expect(check(NR.rt_sigprocmask, 0, 0x7ffd0000, 0, 8)).toBe('unsupported-syscall');
    expect(check(NR.prlimit64, 0, 7, 0x7ffd0000, 0)).toBe('unsupported-syscall');
    expect(check(NR.madvise, 0x7f0000000000, 4096, 10 /* MADV_DONTFORK */)).toBe('unsupported-syscall');
    expect(check(NR.membarrier, 8 /* REGISTER_PRIVATE_EXPEDITED */, 0)).toBe('unsupported-syscall');
    for (const nr of [NR.getcwd, NR.getppid, NR.uname, NR.clock_gettime, NR.gettimeofday, NR.time]) {
      expect(check(nr, 0, 0), `syscall ${nr}`).toBe('unsupported-syscall');
    }
    for (const nr of [56 /* clone */, 57 /* fork */, 58 /* vfork */, 59 /* execve */, 41 /* socket */, 135 /* personality */,
      160 /* setrlimit */, 222 /* timer_create */, 38 /* setitimer */, 317 /* seccomp */]) {
      expect(check(nr, 0, 0), `syscall ${nr}`).toBe('unsupported-syscall');
    }
  });
});

describe('vdso functions', () => {
  it('reads this process\'s own vdso and guards the clock functions, not getcpu', () => {
    const vdso = readMaps(process.pid).find((m) => m.path === '[vdso]') as Mapping;
    const fd = fs.openSync('/proc/self/mem', 'r');
    const image = Buffer.alloc(Number(vdso.end - vdso.start));
    fs.readSync(fd, image, 0, image.length, Number(vdso.start));
    fs.closeSync(fd);
    const fns = guardedVdsoFunctions(image, vdso.start);
    const names = fns.map((f) => f.name);
    for (const n of ['clock_gettime', 'gettimeofday', 'time']) expect(names).toContain(n);
    expect(names).not.toContain('getcpu');
    expect(fns.every((f) => f.addr >= vdso.start && f.addr < vdso.end)).toBe(true);
    expect(new Set(fns.map((f) => f.addr)).size).toBe(fns.length);
  });

  it('refuses an image it cannot read', () => {
    expect(refusal(() => guardedVdsoFunctions(Buffer.alloc(4096), 0x7fff0000n))).toBe('internal');
  });
});

const map = (start: bigint, pages: number, perms: string, p = '', offset = 0n, inode = p.startsWith('/') ? 1 : 0): Mapping =>
  ({ start, end: start + BigInt(pages) * 4096n, perms, offset, dev: '00:00', inode, path: p });

describe('layout pairing', () => {
  const lib = '/usr/lib/x86_64-linux-gnu/libc.so.6';
  const a = [map(0x1000n, 2, 'r--p', lib), map(0x3000n, 1, 'rw-p', lib, 0x2000n), map(0x4000n, 3, 'rw-p'),
    map(0x9000n, 4, 'rw-p'), map(0x20000n, 2, 'rw-p', '[heap]')];
  const c = [map(0x51000n, 2, 'r--p', lib), map(0x53000n, 1, 'rw-p', lib, 0x2000n), map(0x54000n, 3, 'rw-p'),
    map(0x70000n, 2, 'rw-p'), map(0x80000n, 2, 'rw-p'), map(0x90000n, 2, 'rw-p', '[heap]')];

  it('accepts anonymous memory split into other VMAs, not other amounts of it', () => {
    expect(refusal(() => checkSameContents(a, c))).toBe('ok');
    expect(refusal(() => checkSameContents(a, c.slice(0, 4)))).toBe('layout-mismatch');
    expect(refusal(() => checkSameContents(a, [...c, map(0xa0000n, 1, 'r--p', '/etc/other')]))).toBe('layout-mismatch');
  });

  it('translates by file, .bss, heap and thread pointer anchors', () => {
    expect(translate(0x1008n, a, c, 0x9100n, 0x70100n)).toBe(0x51008n);
    expect(translate(0x4010n, a, c, 0x9100n, 0x70100n)).toBe(0x54010n); // .bss after the file mapping
    expect(translate(0x20010n, a, c, 0x9100n, 0x70100n)).toBe(0x90010n);
    expect(translate(0x9200n, a, c, 0x9100n, 0x70100n)).toBe(0x70200n); // thread block
    // Past the real run's VMA holding the thread pointer: no pairing by guess.
    expect(refusal(() => translate(0xc000n, a, c, 0x9100n, 0x70100n))).toBe('layout-mismatch');
  });
});

describe('regions', () => {
  const cap = (m: Mapping, classes: ('file' | 'data' | 'zero')[]): CapturedMapping => {
    const data = new Map<number, Buffer>();
    classes.forEach((c, i) => {
      if (c === 'data') data.set(i, Buffer.alloc(4096, i + 1));
    });
    const prot = (m.perms[0] === 'r' ? 1 : 0) | (m.perms[1] === 'w' ? 2 : 0) | (m.perms[2] === 'x' ? 4 : 0);
    return { ...m, classes, data, prot };
  };
  const files = { files: [], byMappedPath: new Map([['/lib/x.so', 0]]) };

  it('merges continuing sources, stores short zero runs next to data as data, marks patched regions', () => {
    const caps = [
      cap(map(0x10000n, 2, 'r--p', '/lib/x.so', 0n), ['file', 'file']),
      cap(map(0x12000n, 1, 'r-xp', '/lib/x.so', 0x2000n), ['file']),
      cap(map(0x13000n, 3, 'rw-p', '/lib/x.so', 0x3000n), ['data', 'zero', 'data']),
      cap(map(0x16000n, 40, 'rw-p'), Array.from({ length: 40 }, (_, i) => (i === 0 ? 'data' : 'zero'))),
      cap(map(0x40000n, 2, '---p'), ['zero', 'zero']),
    ];
    const slots = [{ addr: 0x15008n, kind: SlotKind.ARGV, width: 8 as const, arg: 0n }];
    const rs = buildRegions(caps, files, slots);
    expect(rs.map((r) => [r.addr, r.len / 4096n, r.source, r.prot, r.flags])).toEqual([
      [0x10000n, 2n, Src.FILE, 1, 0],
      [0x12000n, 1n, Src.FILE, 5, 0],
      [0x13000n, 4n, Src.DATA, 3, RegionFlag.PATCHED], // data, zero, data, then the anonymous page of data
      [0x17000n, 39n, Src.ZERO, 3, 0], // too long to store
      [0x40000n, 2n, Src.ZERO, 0, 0],
    ]);
    expect(rs[2]?.data?.subarray(4096, 8192).every((b) => b === 0)).toBe(true);
  });

  it('refuses a slot outside data', () => {
    const caps = [cap(map(0x10000n, 1, 'r--p', '/lib/x.so', 0n), ['file'])];
    expect(refusal(() => buildRegions(caps, files, [{ addr: 0x10000n, kind: SlotKind.ARGV, width: 8, arg: 0n }]))).toBe('internal');
  });
});

describe('stack pointer classification', () => {
  const s: StackLayout = {
    lo: 0x7ffd0000n, hi: 0x7ffe0000n, argcAddr: 0x7ffd1000n, argc: 2, argvAddr: 0x7ffd1008n,
    argvStrings: [{ addr: 0x7ffdf000n, value: '/usr/bin/prog' }, { addr: 0x7ffdf00en, value: 'arg' }],
    envpAddr: 0x7ffd1020n, envc: 1, envStrings: [{ addr: 0x7ffdf012n, len: 6 }], auxvAddr: 0x7ffd1030n, auxvLen: 64,
    platform: { addr: 0x7ffde000n, len: 7 }, execfn: { addr: 0x7ffdefe0n, len: 14 }, random: 0x7ffde010n,
  };
  const k = (v: bigint): [number, bigint] | null => {
    const c = classifyStackPointer(v, s);
    return c ? [c.kind, c.arg] : null;
  };
  it('names what each pointer points at', () => {
    expect(k(0x7ffd1000n)).toEqual([SlotKind.ARGC_ADDR, 0n]);
    expect(k(0x7ffd1010n)).toEqual([SlotKind.ARGV, 1n]);
    expect(k(0x7ffd1020n)).toEqual([SlotKind.ENVP, 0n]);
    expect(k(0x7ffd1040n)).toEqual([SlotKind.AUXV, 16n]);
    expect(k(0x7ffdf000n)).toEqual([SlotKind.ARGV_STR, 0n]);
    expect(k(0x7ffdf009n)).toEqual([SlotKind.ARGV_BASENAME, 0n]);
    expect(k(0x7ffde002n)).toEqual([SlotKind.PLATFORM, 2n]);
    expect(k(0x7ffde018n)).toEqual([SlotKind.RANDOM, 8n]);
  });
  it('has no name for the environment, frames or the middle of a string', () => {
    expect(k(0x7ffd1028n)).toBeNull(); // envp[1]
    expect(k(0x7ffdf012n)).toBeNull(); // an environment string
    expect(k(0x7ffdf004n)).toBeNull(); // inside argv[0], not its basename
  });
  it('names a pointer below argc (a finished frame) by its distance from argc', () => {
    expect(k(0x7ffd0ec0n)).toEqual([SlotKind.BELOW_ARGC, 0x140n]);
    expect(k(0x7ffd0000n)).toEqual([SlotKind.BELOW_ARGC, 0x1000n]);
    expect(k(0x7ffcfff8n)).toBeNull(); // below the stack mapping: not a stack pointer at all
  });
});

describe('dead stack words (below argc)', () => {
  const stackOf = (argcAddr: bigint): StackLayout => ({
    lo: 0x7ffd0000n, hi: 0x7ffe0000n, argcAddr, argc: 1, argvAddr: argcAddr + 8n, argvStrings: [],
    envpAddr: argcAddr + 24n, envc: 0, envStrings: [], auxvAddr: argcAddr + 32n, auxvLen: 16,
  });
  const page = (words: bigint[]): Buffer => {
    const b = Buffer.alloc(4096);
    words.forEach((w, i) => b.writeBigUInt64LE(w, i * 8));
    return b;
  };
  const run = (argcAddr: bigint, words: bigint[]): { caps: CapturedMapping[]; stack: StackLayout } => ({
    caps: [{ ...map(0x10000n, 1, 'rw-p'), classes: ['data'], data: new Map([[0, page(words)]]), prot: 3 }],
    stack: stackOf(argcAddr),
  });
  const get = (c: CapturedMapping, i: number): Buffer => c.data.get(i) as Buffer;

  it('keeps a pointer that moves with argc, with its distance', () => {
    const a = run(0x7ffd1000n, [5n, 0x7ffd0ec0n]);
    const b = run(0x7ffd1040n, [5n, 0x7ffd0f00n]);
    expect(deadStackWords(a, b, get)).toEqual([{ addr: 0x10008n, below: 0x140n }]);
  });
  it('refuses one that stays put when argc moves (another relation to the stack)', () => {
    const a = run(0x7ffd1000n, [0x7ffd0ec0n]);
    const b = run(0x7ffd1040n, [0x7ffd0ec0n]);
    expect(refusal(() => deadStackWords(a, b, get))).toBe('unexplained-stack-pointer');
  });
});

describe('the heap as one span', () => {
  it('joins touching [heap] parts (musl\'s PROT_NONE guard page), refuses a hole', () => {
    expect(heapSpan([map(0x1000n, 1, 'r--p', '/bin/x'), map(0x20000n, 1, '---p', '[heap]'), map(0x21000n, 1, 'rw-p', '[heap]')]))
      .toEqual({ start: 0x20000n, end: 0x22000n });
    expect(heapSpan([map(0x1000n, 1, 'r--p', '/bin/x')])).toBeUndefined();
    expect(refusal(() => heapSpan([map(0x20000n, 1, '---p', '[heap]'), map(0x22000n, 1, 'rw-p', '[heap]')]))).toBe('internal');
  });
});

describe('loaders that are their C library', () => {
  it('tells musl\'s loader (libc.so) from glibc\'s ld.so by __libc_start_main', () => {
    // musl is installed with musl-tools (CI's apt list): a missing file is a failure here, not a skip.
    expect(fs.existsSync('/lib/ld-musl-x86_64.so.1')).toBe(true);
    expect(loaderIsLibc('/lib/ld-musl-x86_64.so.1')).toBe(true);
    expect(loaderIsLibc('/lib64/ld-linux-x86-64.so.2')).toBe(false);
    expect(loaderIsLibc('/nonexistent/ld.so')).toBe(false);
  });
});

describe('mapped file identity', () => {
  it('compares device and inode the way maps prints them', () => {
    const st = fs.statSync('/bin/sh', { bigint: true });
    const self = readMaps(process.pid).find((m) => m.path.startsWith('/') && m.inode !== 0) as Mapping;
    const selfSt = fs.statSync(self.path, { bigint: true });
    expect(sameFileAsMapping(self, selfSt)).toBe(true);
    expect(sameFileAsMapping({ ...self, inode: Number(st.ino) + 1 }, st)).toBe(false);
  });
});

describe('environment lookups', () => {
  const via = 'test';
  it('reads the resume protocol\'s announcements, and nothing else', () => {
    expect(announcement('/proc/self/fd/100/env/APP_MODE', 100)).toEqual({ name: 'APP_MODE', via: 'announced by the program' });
    expect(announcement('/proc/self/fd/100/env/PYTHON*', 100)).toMatchObject({ name: 'PYTHON', form: 'prefix' });
    expect(announcement('/proc/self/fd/100/env-set/TERM', 100)).toMatchObject({ name: 'TERM', form: 'presence' });
    expect(announcement('/proc/self/fd/100/env/*', 100)).toMatchObject({ name: '*' });
    expect(announcement('/proc/self/fd/100/init', 100)).toMatchObject({ form: 'init' });
    for (const p of ['/proc/self/fd/101/env/X', '/proc/self/fd/100/env/', '/proc/self/fd/100/env/A/B', '/proc/self/fd/100/env/A=B',
      '/proc/self/fd/100/env/A*B', '/proc/self/fd/100/other/X', '/etc/passwd', '/proc/self/fd/100/env-set/A*']) {
      expect(announcement(p, 100), p).toBeNull();
    }
  });

  it('counts assignments only from the init\'s start (an interpreter imports the environment through them)', () => {
    const l = [{ name: 'A', assign: true as const, via }, { name: 'B', via }, { name: '', form: 'init' as const, via }, { name: 'C', assign: true as const, via }];
    expect(initLookups(l).map((x) => x.name)).toEqual(['B', 'C']);
    expect(initLookups([{ name: 'A', assign: true as const, via }]).map((x) => x.name)).toEqual(['A']); // no mark: everything counts
  });

  it('gives each name once, the value over mere presence, covered names under their prefix, no loader variables', () => {
    const env = { A: '1', PYTHONX: '2', LD_BIND_NOW: '1' };
    const deps = lookupDependencies([
      { name: 'A', via, form: 'presence' }, { name: 'A', value: '1', via }, { name: 'B', value: null, via }, { name: 'B', value: null, via },
      { name: 'PYTHONPATH', value: null, via }, { name: 'PYTHON', form: 'prefix', via }, { name: 'LD_BIND_NOW', value: '1', via },
      { name: 'PWD', via },
    ], env, (n) => n === 'PWD');
    expect(deps?.map((d) => [d.name, d.flags])).toEqual([['A', EnvDepFlag.PRESENT], ['B', 0], ['PYTHON', EnvDepFlag.PREFIX]]);
    expect(lookupDependencies([{ name: '*', via }], env)).toBeNull();
    expect(lookupDependencies(Array.from({ length: 201 }, (_, i) => ({ name: `V${i}`, value: null, via })), {})).toBeNull();
    expect(() => lookupDependencies([{ name: 'A', value: 'other', via }], env)).toThrow(SnapshotRefusal);
  });
});

describe('the loader\'s clock words (rdtsc not trappable)', () => {
  const loader = '/lib64/ld-linux-x86-64.so.2';
  const caps = [{ start: 0x1000n, end: 0x2000n, path: loader }, { start: 0x2000n, end: 0x3000n, path: '/lib/libx.so' }] as unknown as CapturedMapping[];
  const detail = (u: { addr: bigint }): string => `0x${u.addr.toString(16)}`;
  it('accepts a word that changed between two runs with the same inputs, in the loader only', () => {
    expect(acceptLoaderClockWords([{ addr: 0x1008n, va: 1, vb: 2 }], new Set([0x1008n]), caps, loader, detail)).toBe(1);
    expect(() => acceptLoaderClockWords([{ addr: 0x2008n, va: 1, vb: 2 }], new Set([0x2008n]), caps, loader, detail)).toThrow(/clock reading/);
    expect(() => acceptLoaderClockWords([{ addr: 0x1010n, va: 1, vb: 2 }], new Set([0x1008n]), caps, loader, detail)).toThrow(SnapshotRefusal);
  });
  it('accepts the high half of a counter reading whose low half changed (it changes once in 2^32 ticks)', () => {
    expect(acceptLoaderClockWords([{ addr: 0x100cn, va: 0, vb: 1 }], new Set([0x1008n]), caps, loader, detail)).toBe(1);
    // Not across two 8-byte words.
    expect(() => acceptLoaderClockWords([{ addr: 0x1010n, va: 0, vb: 1 }], new Set([0x100cn]), caps, loader, detail)).toThrow(SnapshotRefusal);
  });
});
