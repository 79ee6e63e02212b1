/**
 * The native launcher's side of post-init images (--after-init), without
 * the snapshotter:
 *  - its key equals src/cache/key.ts keyHash() for the init spec and the
 *    resume environment hash of src/resume/spec.ts;
 *  - its command for a cold run is spec.ts afterInitArgv(), and requests it
 *    cannot serve run the plain program with a one-line error;
 *  - a hand-made post-init image whose "program" is a few instructions
 *    starting with the checkpoint's `syscall` is restored for real: the
 *    context arrives on the resume fd, registers, FPU state, dispositions,
 *    mask, umask, id slots and stack room are the image's;
 *  - what the caller's process must be like (XCR0, no ignored or blocked
 *    signal, no fd on the resume fd) is checked, and every doubt is a cold
 *    run recorded as FAIL_RESUME that leaks no resume fd.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyFor, keyHash } from '../../src/cache/key.js';
import { decodeRunRecords } from '../../src/cache/stats.js';
import { parseQueueEntry, queueEntryBytes } from '../../src/cache/store.js';
import { RLIMIT_STACK, prlimit } from '../../src/sys/libc.js';
import { serializeImage, type ImageKey, type ImageModel } from '../../src/image/format.js';
import { Ident, Prot, RegionFlag, SlotKind, Src, VdsoKind } from '../../src/image/schema.js';
import { adapterKind, adapterWords, afterInitArgv, initSpec, resumeEnvHash, RESUME_MAGIC } from '../../src/resume/spec.js';
import { LAUNCHER, cc, haveCc, removeDir, tmpDir, type Env } from '../helpers/cx.js';

const work = tmpDir('cx-after-init-');
afterAll(() => removeDir(work));

/** Files named like programs (the adapter is chosen by name); the key only stats them. */
const bin = path.join(work, 'bin');
fs.mkdirSync(bin);
const ARGS_SCRIPT = '#!/bin/sh\nif [ -e /dev/fd/100 ]; then echo "fd 100 open"; fi\nfor a; do printf \'<%s>\' "$a"; done\necho\n';
for (const name of ['bash', 'python3', 'python3.11', 'python', 'mytool']) {
  fs.writeFileSync(path.join(bin, name), ARGS_SCRIPT, { mode: 0o755 });
}

function baseEnv(cache: string, extra: Env = {}): Env {
  return { PATH: `${bin}:/usr/bin:/bin`, HOME: work, LC_ALL: 'C', CACHED_EXEC_DIR: cache, CACHED_EXEC_NO_WARM: '1', ...extra };
}

function launcherKey(args: string[], env: Env, cwd = work): { status: number | null; hash?: string; stderr: string } {
  const r = spawnSync(LAUNCHER, ['--internal-key', ...args], { env, cwd, encoding: 'utf8' });
  const m = /^([0-9a-f]{16}) (.+)$/m.exec(r.stdout);
  return m ? { status: r.status, hash: m[1], stderr: r.stderr } : { status: r.status, stderr: r.stderr };
}

interface Request {
  prog: string;
  file?: string;
  preload?: string;
}

/** The key the TypeScript side (warm, the queue's warmer) computes for the same request. */
function tsKey(q: Request, env: Env, cwd = work): string {
  const key = keyFor(path.join(bin, q.prog), env);
  const words = adapterWords(adapterKind(q.prog), {
    ...(q.file ? { initFile: path.resolve(cwd, q.file) } : {}),
    ...(q.preload ? { preload: q.preload } : {}),
  });
  key.initSpec = initSpec(words);
  return keyHash(key);
}

const optionsOf = (q: Request): string[] => [
  q.file ? `--after-init=${q.file}` : '--after-init',
  ...(q.preload ? ['--preload', q.preload] : []),
];

describe('the launcher computes the key src/cache/key.ts does', () => {
  const cache = path.join(work, 'cache-key');
  const env = baseEnv(cache, { FOO: 'bar' });
  const requests: Request[] = [
    { prog: 'bash' },
    { prog: 'bash', file: path.join(work, 'rc.sh') },
    { prog: 'bash', file: 'sub/../rc.sh' }, // made absolute like path.resolve
    { prog: 'python3' },
    { prog: 'python3.11', preload: 'json,numpy' },
    { prog: 'python', preload: 'json', file: './init.py' },
    { prog: 'python3', file: '/x//y/./z/../init.py' },
    { prog: 'mytool' },
  ];

  for (const q of requests) {
    it(`${q.prog} ${optionsOf(q).join(' ')}`, () => {
      const c = launcherKey([...optionsOf(q), q.prog], env);
      expect(c.status, c.stderr).toBe(0);
      expect(c.hash).toBe(tsKey(q, env));
    });
  }

  it('takes the options in any order, --preload=LIST inline, and "--" before PROG', () => {
    const q: Request = { prog: 'python3', file: 'init.py', preload: 'json' };
    const want = tsKey(q, env);
    for (const args of [
      ['--preload', 'json', '--after-init=init.py', 'python3'],
      ['--preload=json', '--after-init=init.py', '--', 'python3'],
      ['--after-init=init.py', '--preload=json', 'python3', 'a', 'b'],
    ]) {
      expect(launcherKey(args, env).hash, args.join(' ')).toBe(want);
    }
  });

  it('differs from the post-link key, and between init specs', () => {
    const plain = launcherKey(['bash'], env).hash;
    const after = launcherKey(['--after-init', 'bash'], env).hash;
    const withFile = launcherKey(['--after-init=rc.sh', 'bash'], env).hash;
    expect(new Set([plain, after, withFile]).size).toBe(3);
  });

  it('holds no environment: the image lists what its init depends on, and the restore compares that', () => {
    const args = ['--after-init', 'bash'];
    const base = launcherKey(args, env).hash;
    const others: Env[] = [
      { FOO: 'baz' }, { FOO: 'bar', NEW: '1' }, { FOO: 'bar', TERM_ID: '42' },
      { FOO: 'bar', _: '/usr/bin/x', PWD: '/somewhere', OLDPWD: '/else', SHLVL: '7', CACHED_EXEC_ANYTHING: '1' },
    ];
    for (const extra of others) {
      const other = baseEnv(cache, extra);
      expect(launcherKey(args, other).hash, JSON.stringify(extra)).toBe(base);
      expect(tsKey({ prog: 'bash' }, other)).toBe(base);
    }
  });

  it('refuses what needs an adapter for a program without one, and --preload without python', () => {
    for (const args of [['--after-init=rc.sh', 'mytool'], ['--after-init', '--preload', 'x', 'mytool'], ['--after-init', '--preload', 'x', 'bash']]) {
      const r = launcherKey(args, env);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^cached-exec: --(after-init=FILE and --preload need bash or python|preload needs python)\n$/);
    }
  });
});

// ---------------------------------------------------------------------------
// Cold runs: the adapter's command, from a copy of the package whose shell/
// holds stand-in adapters (the launcher finds shell/ next to its bin/).

const pkg = path.join(work, 'pkg');
const pkgLauncher = path.join(pkg, 'bin', 'cached-exec');
const bashAdapter = path.join(pkg, 'shell', 'cached-exec-resume.bash');
const pyAdapter = path.join(pkg, 'shell', 'cached_exec_resume.py');

function runPkg(args: string[], env: Env, cwd = work): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(pkgLauncher, args, { env, cwd, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const shown = (argv: string[]): string => `${argv.map((a) => `<${a}>`).join('')}\n`;

describe('a miss runs the adapter command cold', () => {
  const cache = path.join(work, 'cache-cold');
  const env = baseEnv(cache);

  beforeAll(() => {
    fs.mkdirSync(path.dirname(pkgLauncher), { recursive: true });
    fs.mkdirSync(path.dirname(bashAdapter), { recursive: true });
    fs.copyFileSync(LAUNCHER, pkgLauncher);
    fs.chmodSync(pkgLauncher, 0o755);
    fs.writeFileSync(bashAdapter, '# stand-in\n');
    fs.writeFileSync(pyAdapter, '# stand-in\n');
  });

  it('bash: -c \'. "$0"\' ADAPTER [--init FILE] -- ARGV', () => {
    const user = ['bash', '-c', 'echo "$0" "$@"', 'n', 'a b'];
    let r = runPkg(['--after-init', ...user], env);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(shown(afterInitArgv(adapterWords('bash', {}, path.dirname(bashAdapter)), user).slice(1)));
    r = runPkg(['--after-init=rc.sh', ...user], env);
    expect(r.stdout).toBe(shown(['-c', '. "$0"', bashAdapter, '--init', path.join(work, 'rc.sh'), '--', ...user]));
  });

  it('python: ADAPTER [--preload LIST] [--init FILE] -- ARGV', () => {
    const user = ['python3', '-c', 'pass', 'x'];
    const r = runPkg(['--preload', 'json,os', '--after-init=init.py', ...user], env);
    expect(r.stdout).toBe(shown([pyAdapter, '--preload', 'json,os', '--init', path.join(work, 'init.py'), '--', ...user]));
  });

  it('a program that speaks the protocol itself: its own argv', () => {
    expect(runPkg(['--after-init', 'mytool', 'a', '-b'], env).stdout).toBe(shown(['a', '-b']));
  });

  it('bypasses (CACHED_EXEC_DISABLE) run the adapter command too', () => {
    const r = runPkg(['--after-init', 'bash', 's.sh'], { ...env, CACHED_EXEC_DISABLE: '1' });
    expect(r.stdout).toBe(shown(['-c', '. "$0"', bashAdapter, '--', 'bash', 's.sh']));
  });

  it('FILE or LIST with a program without adapter: one line, and the plain program cold', () => {
    let r = runPkg(['--after-init=rc.sh', 'mytool', 'a'], env);
    expect(r.stderr).toBe('cached-exec: --after-init=FILE and --preload need bash or python\n');
    expect(r.stdout).toBe(shown(['a']));
    r = runPkg(['--after-init', '--preload=x', 'bash', 'a'], env);
    expect(r.stderr).toBe('cached-exec: --preload needs python\n');
    expect(r.stdout).toBe(shown(['a']));
  });

  it('a missing adapter: one line, and the plain program cold', () => {
    fs.renameSync(pyAdapter, `${pyAdapter}.away`);
    try {
      const r = runPkg(['--after-init', 'python3', '-c', 'pass'], env);
      expect(r.stderr).toBe(`cached-exec: ${pyAdapter}: missing: running the program without --after-init\n`);
      expect(r.stdout).toBe(shown(['-c', 'pass']));
    } finally {
      fs.renameSync(`${pyAdapter}.away`, pyAdapter);
    }
  });

  it('queues the miss with its init spec for the warmer', () => {
    const qenv = { ...env };
    delete qenv.CACHED_EXEC_NO_WARM; // the warmer it starts finds no dist/ in this package copy and exits
    const r = runPkg(['--after-init=rc.sh', 'bash', 'x'], qenv);
    expect(r.status).toBe(0);
    const key = launcherKeyOf(pkgLauncher, ['--after-init=rc.sh', 'bash'], qenv);
    const raw = fs.readFileSync(path.join(cache, 'queue', key));
    const spec = initSpec(['-c', '. "$0"', bashAdapter, '--init', path.join(work, 'rc.sh')]);
    // This run's stack limit: the snapshot starts with it (glibc sizes thread stacks from it).
    const stack = prlimit(0, RLIMIT_STACK);
    const limitLine = `limit\t${RLIMIT_STACK}\t${stack.soft}\t${stack.hard}\n`;
    expect(raw.toString('latin1')).toMatch(new RegExp(`^${escapeRe(`${path.join(bin, 'bash')}\n${qenv.PATH}\nafter-init\t${spec}\n${limitLine}env\n`)}`));
    // The caller's environment follows, NUL-terminated entries: the snapshot runs in it.
    const entry = parseQueueEntry(raw);
    expect(entry?.initSpec).toBe(spec);
    expect(entry?.retake).toBe(false);
    expect(entry?.limits).toEqual([{ resource: RLIMIT_STACK, soft: stack.soft, hard: stack.hard }]);
    expect(new Set(entry?.env)).toEqual(new Set(Object.entries(qenv).map(([k, v]) => `${k}=${v}`)));
    const outcomes = decodeRunRecords(fs.readFileSync(path.join(cache, 'stats', 'runs.log'))).records.map((x) => x.outcome);
    expect(outcomes).toContain('MISS');
  });
});

describe('queue entries: resource limit lines', () => {
  it('round-trip; malformed or out-of-range ones are ignored', () => {
    const limits = [{ resource: 3, soft: 67_108_864n, hard: 0xffff_ffff_ffff_ffffn }, { resource: 7, soft: 1024n, hard: 4096n }];
    const bytes = queueEntryBytes({ exePath: '/usr/bin/as', pathEnv: '/usr/bin', retake: true, limits, env: ['A=1'] });
    expect(parseQueueEntry(bytes)).toEqual({ exePath: '/usr/bin/as', pathEnv: '/usr/bin', rotate: false, retake: true, limits, env: ['A=1'] });
    const bad = Buffer.from('/usr/bin/as\n/usr/bin\nlimit\t16\t1\t1\nlimit\t3\t18446744073709551616\t1\nlimit\t3\tx\t1\nlimit 3 1 1\n');
    expect(parseQueueEntry(bad)).toEqual({ exePath: '/usr/bin/as', pathEnv: '/usr/bin', rotate: false, retake: false });
  });
});

function launcherKeyOf(launcher: string, args: string[], env: Env): string {
  const r = spawnSync(launcher, ['--internal-key', ...args], { env, cwd: work, encoding: 'utf8' });
  const m = /^([0-9a-f]{16}) /.exec(r.stdout);
  if (!m) throw new Error(`--internal-key ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return m[1] as string;
}

// ---------------------------------------------------------------------------
// A hand-made post-init image, restored for real.

/*
 * The "program": stopped at `syscall` = read(100, buf, n), as the snapshot
 * would have it. After the read it records, at r15 (the data page): xmm0,
 * r12, the blocked mask, umask(0)'s old value, getpid(), a word written
 * 1 MiB below the stack pointer (the stack's growth room), then sends itself
 * SIGUSR1 (ignored by its disposition), writes those 72 bytes (the last 16
 * are the id slots at r15+56) and the context it read, and exits 0.
 */
const HELPER_C = String.raw`#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
extern const unsigned char code_begin[], code_end[];
__asm__(".text\ncode_begin:\n"
	"syscall\n"
	"mov %rax, %rbx\n"
	"mov $3, %eax\n mov $100, %edi\n syscall\n"
	"movdqu %xmm0, 0(%r15)\n"
	"mov %r12, 16(%r15)\n"
	"mov $14, %eax\n xor %edi, %edi\n xor %esi, %esi\n lea 24(%r15), %rdx\n mov $8, %r10d\n syscall\n"
	"mov $95, %eax\n xor %edi, %edi\n syscall\n mov %rax, 32(%r15)\n"
	"mov $39, %eax\n syscall\n mov %rax, 40(%r15)\n"
	"movq $7, -0x100000(%rsp)\n mov -0x100000(%rsp), %rax\n mov %rax, 48(%r15)\n"
	"mov $39, %eax\n syscall\n mov %rax, %rdi\n mov $10, %esi\n mov $62, %eax\n syscall\n"
	"mov $1, %eax\n mov $1, %edi\n mov %r15, %rsi\n mov $72, %edx\n syscall\n"
	"mov $1, %eax\n mov $1, %edi\n lea 0x1000(%r15), %rsi\n mov %rbx, %rdx\n syscall\n"
	"mov $231, %eax\n xor %edi, %edi\n syscall\n"
	"code_end:\n");
int main(int argc, char **argv)
{
	if (argc > 2 && !strcmp(argv[1], "block")) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR2);
		sigprocmask(SIG_BLOCK, &s, 0);
		execv(argv[2], argv + 2);
		return 127;
	}
	if (argc > 2 && !strcmp(argv[1], "ignore")) {
		signal(SIGINT, SIG_IGN);
		execv(argv[2], argv + 2);
		return 127;
	}
	if (argc > 2 && !strcmp(argv[1], "ignore-libc")) {
		/* What glibc's posix_spawn gives every child: its internal signals ignored. */
		syscall(SYS_rt_sigaction, 32, &(struct { void *h; unsigned long f; void *r; unsigned long m; }){ SIG_IGN, 0x04000000, 0, 0 }, 0, 8);
		syscall(SYS_rt_sigaction, 33, &(struct { void *h; unsigned long f; void *r; unsigned long m; }){ SIG_IGN, 0x04000000, 0, 0 }, 0, 8);
		execv(argv[2], argv + 2);
		return 127;
	}
	unsigned a, b, c, d, lo, hi;
	__cpuid_count(0xd, 0, a, b, c, d);
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	printf("%llu %u ", ((unsigned long long)hi << 32) | lo, b);
	for (const unsigned char *p = code_begin; p < code_end; p++)
		printf("%02x", *p);
	printf("\n");
	return 0;
}
`;

const CODE = 0x200000000n;
const DATA = CODE + 0x1000n;
const BUF = DATA + 0x1000n;
const BUF_LEN = 0x8000n;
const STACK = 0x300000000n;
const STACK_LEN = 0x10000n;
const R12 = 0x1122334455667788n;
const XMM0 = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const UMASK = 0o027;
const SIGUSR1 = 10;
const SIGUSR2 = 12;

/** The kernel's special mappings, relative to [vdso], as the snapshot records them. */
function vdsoParts(): ImageModel['vdso'] {
  const kinds: Record<string, number> = { '[vvar]': VdsoKind.VVAR, '[vvar_vclock]': VdsoKind.VVAR_VCLOCK, '[vdso]': VdsoKind.VDSO };
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.split(/\s+/))
    .filter((f) => f[5] && f[5] in kinds).map((f) => {
      const [lo, hi] = (f[0] as string).split('-').map((x) => BigInt(`0x${x}`)) as [bigint, bigint];
      return { start: lo, end: hi, kind: kinds[f[5] as string] as number };
    });
  const vdso = maps.find((m) => m.kind === VdsoKind.VDSO);
  if (!vdso) throw new Error('no [vdso] in /proc/self/maps');
  return maps.map((m) => ({ offset: m.start - vdso.start, size: m.end - m.start, kind: m.kind }));
}

interface Cpu {
  xcr0: bigint;
  xsaveSize: number;
  code: Buffer;
}

function xstateOf(cpu: Cpu): Buffer {
  const x = Buffer.alloc(Math.max(576, cpu.xsaveSize));
  x.writeUInt16LE(0x37f, 0); // FCW as after finit
  x.writeUInt32LE(0x1f80, 24); // MXCSR
  x.writeUInt32LE(0xffff, 28);
  XMM0.copy(x, 160);
  x.writeBigUInt64LE(cpu.xcr0, 464); // what ptrace puts there
  x.writeBigUInt64LE(3n, 512); // XSTATE_BV: x87 and SSE from here, the rest in its init state
  return x;
}

function postInitModel(cpu: Cpu, key: ImageKey, o: { xfeatures?: bigint; rip?: bigint; pidTextSize?: number } = {}): ImageModel {
  const code = Buffer.alloc(0x1000);
  cpu.code.copy(code);
  const data = Buffer.alloc(0x1000, 0xee);
  return {
    createdNs: BigInt(Date.now()) * 1_000_000n,
    key,
    files: [],
    regions: [
      { addr: CODE, len: 0x1000n, prot: Prot.READ | Prot.EXEC, source: Src.DATA, file: 0, offset: 0n, flags: 0, data: code },
      { addr: DATA, len: 0x1000n, prot: Prot.READ | Prot.WRITE, source: Src.DATA, file: 0, offset: 0n, flags: RegionFlag.PATCHED, data },
      { addr: BUF, len: BUF_LEN, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: 0 },
      { addr: STACK, len: STACK_LEN, prot: Prot.READ | Prot.WRITE, source: Src.ZERO, file: 0, offset: 0n, flags: RegionFlag.STACK },
    ],
    slots: [
      { addr: DATA + 56n, kind: SlotKind.PROCESS_ID, width: 4, arg: BigInt(Ident.PID) },
      { addr: DATA + 60n, kind: SlotKind.TID, width: 4, arg: 0n },
      { addr: DATA + 64n, kind: SlotKind.PROCESS_ID_TEXT, width: 8, arg: BigInt(Ident.PPID | ((o.pidTextSize ?? 8) << 8)) },
    ],
    state: {
      entry: 0n, rtldFini: 0n, fsBase: 0n, tidAddress: 0n, robustHead: 0n, robustLen: 0n, rseqArea: 0n, rseqLen: 0, rseqSig: 0,
      startCode: CODE, endCode: CODE + 0x1000n, startData: DATA, endData: DATA + 0x1000n, startBrk: BUF + BUF_LEN, brk: BUF + BUF_LEN,
      vdsoBase: 0x7e0000000000n, atPhdr: 0n, atPhnum: 0n, atEntry: 0n, atBase: 0n, flags: 0, comm: 'cxtest',
    },
    vdso: vdsoParts(),
    resume: {
      regs: {
        r15: DATA, r14: 0n, r13: 0n, r12: R12, rbp: 0n, rbx: 0n, r11: 0x246n, r10: 0n, r9: 0n, r8: 0n, rax: -38n & 0xffffffffffffffffn,
        rcx: CODE + 2n, rdx: BUF_LEN, rsi: BUF, rdi: 100n, orig_rax: 0n, rip: o.rip ?? CODE + 2n, eflags: 0x246n,
        rsp: STACK + STACK_LEN - 0x100n, gs_base: 0n,
      },
      xfeatures: o.xfeatures ?? cpu.xcr0,
      xstate: xstateOf(cpu),
      sigmask: 1n << BigInt(SIGUSR2 - 1),
      ignoredAtStart: 0n,
      stackReserve: 8n * 1024n * 1024n,
      resumeFd: 100,
      umask: UMASK,
      sigactions: [{ signo: SIGUSR1, handler: 1n, flags: 0n, restorer: 0n, mask: 0n }],
    },
  };
}

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
  pid: number;
}

/** Runs `file args`, optionally with fd 100 open (a pipe), and collects everything. */
function runIt(file: string, args: string[], env: Env, cwd: string, opts: { fd100?: boolean } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
    if (opts.fd100) {
      while (stdio.length < 100) stdio.push('ignore');
      stdio.push('pipe');
    }
    const child = spawn(file, args, { env, cwd, stdio });
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout: Buffer.concat(out), stderr: err, pid: child.pid ?? 0 }));
  });
}

const describeCc = haveCc() ? describe : describe.skip;

describeCc('a post-init image restores into the read it was stopped at', () => {
  const cache = path.join(work, 'cache-restore');
  const cwd = path.join(work, 'a dir');
  const prog = path.join(bin, 'mytool');
  const env = baseEnv(cache, { FOO: 'bar baz', EMPTY: '' });
  const helper = path.join(work, 'helper');
  let cpu: Cpu;
  let key: ImageKey;
  let image: string;

  const write = (model: ImageModel, file = image): void => {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, serializeImage(model), { mode: 0o600 });
  };
  const outcomes = (): string[] => {
    const log = path.join(cache, 'stats', 'runs.log');
    return fs.existsSync(log) ? decodeRunRecords(fs.readFileSync(log)).records.map((r) => r.outcome) : [];
  };
  const lastOutcome = (): string | undefined => outcomes().at(-1);
  /** The plain program's output: it ran cold, with its own argv and no fd 100. */
  const cold = (args: string[]): string => shown(args);

  beforeAll(() => {
    fs.mkdirSync(cwd);
    fs.mkdirSync(cache, { mode: 0o700 });
    fs.writeFileSync(`${helper}.c`, HELPER_C);
    cc(['-O2', '-o', helper, `${helper}.c`]);
    const [xcr0, size, code] = spawnSync(helper, [], { encoding: 'utf8' }).stdout.trim().split(' ') as [string, string, string];
    cpu = { xcr0: BigInt(xcr0), xsaveSize: Number(size), code: Buffer.from(code, 'hex') };
    expect(cpu.code.subarray(0, 2).toString('hex')).toBe('0f05');
    key = keyFor(prog, env);
    key.initSpec = initSpec([]);
    key.envHash = resumeEnvHash(env);
    image = path.join(cache, 'images', `${keyHash(key)}.img`);
    expect(launcherKey(['--after-init', 'mytool'], env).hash).toBe(keyHash(key));
  });

  it('delivers the context and the process state the image holds', async () => {
    write(postInitModel(cpu, key));
    const r = await runIt(LAUNCHER, ['--after-init', 'mytool', 'a', 'b c', ''], env, cwd);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(lastOutcome()).toBe('HIT');
    const t = r.stdout.subarray(0, 72);
    expect(t.subarray(0, 16).equals(XMM0)).toBe(true); // xrstor
    expect(t.readBigUInt64LE(16)).toBe(R12); // general registers
    expect(t.readBigUInt64LE(24)).toBe(1n << BigInt(SIGUSR2 - 1)); // blocked mask
    expect(Number(t.readBigUInt64LE(32))).toBe(UMASK);
    expect(Number(t.readBigUInt64LE(40))).toBe(r.pid); // the caller's process
    expect(t.readBigUInt64LE(48)).toBe(7n); // growth room below the stack
    expect(t.readUInt32LE(56)).toBe(r.pid); // PROCESS_ID slot
    expect(t.readUInt32LE(60)).toBe(r.pid); // TID slot
    const text = t.subarray(64, 72);
    expect(text.subarray(0, text.indexOf(0)).toString()).toBe(String(process.pid)); // PROCESS_ID_TEXT: the parent, decimal
    const fields = r.stdout.subarray(72).toString().split('\0');
    expect(fields.pop()).toBe(''); // NUL-terminated
    const envStrings = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    // The optional fields after the seed: the statistics record an adapter appends when it runs the program cold after all.
    expect(fields.pop()).toBe(`cached-exec-stats=${path.join(fs.realpathSync(cache), 'stats', 'runs.log')}`);
    const amend = /^cached-exec-amend=([0-9a-f]{64})$/.exec(fields.pop() as string);
    expect(amend).not.toBeNull();
    const rec = decodeRunRecords(Buffer.from(amend?.[1] ?? '', 'hex')).records;
    expect(rec.map((x) => [x.outcome, x.pid])).toEqual([['FAIL_ADAPTER', r.pid]]);
    const seed = fields.pop() as string;
    expect(seed).toMatch(/^[0-9a-f]{32}$/);
    expect(fields).toEqual([RESUME_MAGIC, '4', 'mytool', 'a', 'b c', '', String(envStrings.length), ...envStrings, fs.realpathSync(cwd)]);
  });

  it('restores for a caller that ignores only the C library\'s signals 32 and 33 (glibc posix_spawn children)', async () => {
    write(postInitModel(cpu, key));
    const r = await runIt(helper, ['ignore-libc', LAUNCHER, '--after-init', 'mytool', 'a'], env, cwd);
    expect(r.status).toBe(0);
    expect(lastOutcome()).toBe('HIT');
  });

  it('a dry run goes as far as the jump', () => {
    write(postInitModel(cpu, key));
    const r = spawnSync(LAUNCHER, ['--internal-restore-dry', '--after-init', 'mytool'], { env, cwd, encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^restore_ns=\d+ regions=4 files=0 slots=3 post_init=1 sigactions=1 xstate=\d+ kstack=\d+\n$/);
    // The process's kernel stack is unmapped before the program runs (its own stack grows there): at least the
    // kernel's 128 KiB initial expansion of it.
    expect(Number(/kstack=(\d+)/.exec(r.stderr)?.[1])).toBeGreaterThanOrEqual(128 * 1024);
  });

  const failures: [string, () => ImageModel, (args: string[]) => Promise<Run>, string, string?][] = [
    ['another XCR0', () => postInitModel(cpu, key, { xfeatures: cpu.xcr0 ^ 2n }), (a) => runIt(LAUNCHER, a, env, cwd), 'FAIL_RESUME'],
    ['a caller that ignores SIGINT', () => postInitModel(cpu, key), (a) => runIt(helper, ['ignore', LAUNCHER, ...a], env, cwd), 'FAIL_RESUME'],
    ['a caller that blocks a signal', () => postInitModel(cpu, key), (a) => runIt(helper, ['block', LAUNCHER, ...a], env, cwd), 'FAIL_RESUME'],
    // The caller's own fd 100 is the cold program's to inherit.
    ['a caller with fd 100 open', () => postInitModel(cpu, key), (a) => runIt(LAUNCHER, a, env, cwd, { fd100: true }), 'FAIL_RESUME', 'fd 100 open\n'],
    // Found after the context is on fd 100 and the memory is mapped: the cold program must not get the fd.
    ['no syscall instruction before rip', () => postInitModel(cpu, key, { rip: CODE + 4n }), (a) => runIt(LAUNCHER, a, env, cwd), 'FAIL_RESUME'],
    ['a pid text field too small for the id', () => postInitModel(cpu, key, { pidTextSize: 2 }), (a) => runIt(LAUNCHER, a, env, cwd), 'FAIL_SLOT'],
  ];
  for (const [what, model, runner, outcome, before = ''] of failures) {
    it(`runs cold with ${what}`, async () => {
      write(model());
      const r = await runner(['--after-init', 'mytool', 'x', 'y']);
      expect(r.stderr).toBe('');
      expect(r.stdout.toString()).toBe(before + cold(['x', 'y']));
      expect(lastOutcome()).toBe(outcome);
    });
  }

  it('the trampoline\'s own cold exec (PR_SET_MM_MAP refused) leaves no resume fd behind', async () => {
    const m = postInitModel(cpu, key);
    m.state.startBrk = m.state.brk + 0x1000n; // start_brk > brk: the kernel refuses the map
    write(m);
    const r = await runIt(LAUNCHER, ['--after-init', 'mytool', 'x'], env, cwd);
    expect(r.stderr).toBe('');
    expect(r.stdout.toString()).toBe(cold(['x']));
    expect(lastOutcome()).toBe('HIT'); // recorded before the jump, as for post-link images
  });

  it('never serves a plain run from a post-init image, nor an --after-init run from a post-link one', async () => {
    const plainKey = keyFor(prog, env);
    const plainImage = path.join(cache, 'images', `${keyHash(plainKey)}.img`);
    write(postInitModel(cpu, key), plainImage);
    let r = await runIt(LAUNCHER, ['mytool', 'p'], env, cwd);
    expect(r.stdout.toString()).toBe(cold(['p']));
    expect(lastOutcome()).toBe('FAIL_KEY');
    fs.rmSync(plainImage);

    const postLink = postInitModel(cpu, key);
    delete postLink.resume;
    postLink.key = { ...key, initSpec: '' };
    write(postLink);
    r = await runIt(LAUNCHER, ['--after-init', 'mytool', 'q'], env, cwd);
    expect(r.stdout.toString()).toBe(cold(['q']));
    expect(lastOutcome()).toBe('FAIL_KEY');
  });

  it('--internal-inspect shows the post-init fields', () => {
    write(postInitModel(cpu, key));
    const out = spawnSync(LAUNCHER, ['--internal-inspect', image], { encoding: 'utf8' }).stdout;
    expect(out).toContain('key.init_spec=after-init\n');
    expect(out).toContain(`resume.rip=${CODE + 2n}\n`);
    expect(out).toContain('resume.sigactions=1\nxstate.length=');
    expect(out).toContain(`sigaction[0].signo=${SIGUSR1}\n`);
  });
});

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
