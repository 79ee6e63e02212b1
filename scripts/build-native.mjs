#!/usr/bin/env node
/**
 * Builds the native launcher bin/cached-exec with the machine's C compiler.
 * No dependencies, no downloads, no node-gyp: one `cc` invocation producing a
 * freestanding static binary (no libc). Skips the build when the sources, flags
 * and compiler are unchanged; writes the binary atomically (temp + rename) so a
 * concurrent run never execs a half-written launcher.
 *
 *   node scripts/build-native.mjs [--force] [--quiet]
 *   node scripts/build-native.mjs --target aarch64 [--force] [--quiet]
 *
 * --target aarch64 cross-compiles for the arm64 test guest (scripts/arm64/)
 * with $CC_AARCH64 (default aarch64-linux-gnu-gcc, Debian's
 * gcc-aarch64-linux-gnu) into build/aarch64/cached-exec; the launcher it
 * starts node from is $CX_NODE_PATH_AARCH64 (default /usr/local/bin/node, where
 * the guest has it). The host build is unchanged by it.
 *
 * Without a C compiler, an existing bin/cached-exec built for this machine
 * (e.g. the cross-built one the arm64 guest gets) is kept with a one-line
 * notice and the build succeeds; without one it fails as before.
 */
import { execFileSync } from 'node:child_process';
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(root, 'src', 'restore');
// Shims of programs that find their installation through argv[0] point here (src/cli/commands/shims-marker.ts).
const selfpath = path.join(root, 'bin', 'cached-exec-selfpath');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const log = (msg) => quiet || console.log(`build-native: ${msg}`);
const targetArg = process.argv.indexOf('--target');
const target = targetArg > 0 ? process.argv[targetArg + 1] : 'host';

/*
 * The flags only that architecture has. x86_64: no SSE (the jump to the
 * program must leave FPU/SSE state as the kernel made it); no CET
 * endbr64/shadow-stack setup. aarch64: no FP/SIMD registers (the same reason);
 * no PAC/BTI instructions: the launcher has no GNU property note, so the
 * kernel guards none of its pages.
 */
const ARCH_FLAGS = {
  x86_64: ['-mgeneral-regs-only', '-fcf-protection=none'],
  aarch64: ['-mgeneral-regs-only', '-mbranch-protection=none'],
};
/* ELF e_machine of each architecture: an existing launcher is kept only if it is this machine's. */
const ELF_MACHINE = { x86_64: 62, aarch64: 183 };

/** The e_machine of an ELF file, or null (absent, unreadable, not ELF). */
function elfMachine(file) {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const b = Buffer.alloc(20);
      if (fs.readSync(fd, b, 0, 20, 0) < 20 || b.readUInt32BE(0) !== 0x7f454c46) return null;
      return b.readUInt16LE(18);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return null;
  }
}

/* Node's name of the machine -> ours. On aarch64 the launcher runs programs cold or from
 * hand-made images only (the snapshotter is not ported: --warm says unported-arch). */
const HOST_ARCH = { x64: 'x86_64', arm64: 'aarch64' }[process.arch];

/*
 * Per target: compiler, output, and node's path. The host keeps exactly the
 * flags and stamp it always had.
 */
const TARGETS = {
  host: {
    arch: HOST_ARCH,
    cc: process.env.CC || 'cc',
    out: path.join(root, 'bin', 'cached-exec'),
    stamp: path.join(root, 'build', 'native.stamp'),
    archFlags: ARCH_FLAGS[HOST_ARCH] ?? [],
    nodePath: process.execPath,
  },
  aarch64: {
    arch: 'aarch64',
    cc: process.env.CC_AARCH64 || 'aarch64-linux-gnu-gcc',
    out: path.join(root, 'build', 'aarch64', 'cached-exec'),
    stamp: path.join(root, 'build', 'aarch64', 'native.stamp'),
    archFlags: ARCH_FLAGS.aarch64,
    nodePath: process.env.CX_NODE_PATH_AARCH64 || '/usr/local/bin/node',
  },
};
const T = TARGETS[target];
if (!T) {
  console.error(`build-native: unknown --target "${target}" (known: aarch64)`);
  process.exit(1);
}
const out = T.out;
const stamp = T.stamp;

if (target === 'host' && (process.platform !== 'linux' || !HOST_ARCH)) {
  console.error(`build-native: cached-exec supports Linux on x86_64 and aarch64 (this is ${process.platform}/${process.arch})`);
  process.exit(1);
}

const cc = T.cc;
let ccVersion;
try {
  ccVersion = execFileSync(cc, ['--version'], { encoding: 'utf8' }).split('\n')[0];
} catch {
  // A machine without a compiler (the arm64 test guest, a device) that already has a
  // launcher for its own architecture, e.g. cross-built on another machine
  // (`--target aarch64`): keep it rather than fail the whole build, and say so.
  if (target === 'host' && elfMachine(out) === ELF_MACHINE[T.arch]) {
    linkSelfpath();
    console.error(`build-native: no C compiler ("${cc}"): keeping the existing ${path.relative(root, out)} (${T.arch}, built earlier or on another machine; not rebuilt from src/restore/)`);
    process.exit(0);
  }
  console.error(`build-native: no C compiler found (tried "${cc}"). Install one, e.g. "apt-get install gcc", or set CC.`);
  process.exit(1);
}

// The portable steps in src/restore/, the machine's own parts in src/restore/arch/<arch>/.
const archDir = path.join(srcDir, 'arch', T.arch);
if (!fs.existsSync(archDir)) {
  console.error(`build-native: no ${path.relative(root, archDir)}: the launcher has not been ported to ${T.arch}`);
  process.exit(1);
}
const listed = (dir, ext) => fs.readdirSync(dir).filter((f) => f.endsWith(ext)).sort().map((f) => path.join(dir, f));
const sources = [...listed(srcDir, '.c'), ...listed(archDir, '.c')];
const headers = [...listed(srcDir, '.h'), ...listed(archDir, '.h')];

const flags = [
  '-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror=implicit-function-declaration',
  // Freestanding: no libc, no startup files, no stack protector (there is no TLS
  // until the restore sets the thread pointer); per-target flags in TARGETS.
  '-ffreestanding', '-fno-builtin', '-nostdlib', '-static', '-fno-pie', '-no-pie',
  '-fno-stack-protector', '-fno-asynchronous-unwind-tables', '-fno-unwind-tables', ...T.archFlags,
  '-fno-plt', '-fno-stack-clash-protection',
  // Linked far from where programs live (PIE at 0x55.., libraries at 0x7f..,
  // non-PIE at 0x400000) so an image's regions never collide with the launcher.
  '-Wl,-Ttext-segment=0x60000000', '-Wl,--build-id=none', '-Wl,-z,noexecstack', '-Wl,-z,norelro',
  `-DCX_NODE_PATH="${T.nodePath}"`,
  `-I${srcDir}`, `-I${archDir}`,
];

const h = createHash('sha256');
h.update(ccVersion).update(JSON.stringify(flags));
for (const f of [...sources, ...headers]) h.update(f).update(fs.readFileSync(f));
const digest = h.digest('hex');

/**
 * bin/cached-exec-selfpath and bin/cached-exec-afterinit -> cached-exec
 * (relative, so a moved package keeps them), made atomically: shims of
 * self-locating programs and post-init shims point through them.
 */
function linkSelfpath() {
  for (const link of [selfpath, path.join(root, 'bin', 'cached-exec-afterinit')]) {
    try {
      if (fs.readlinkSync(link) === 'cached-exec') continue;
    } catch { /* absent or not a symlink */ }
    const tmp = `${link}.${process.pid}.tmp`;
    fs.rmSync(tmp, { force: true });
    fs.symlinkSync('cached-exec', tmp);
    fs.renameSync(tmp, link);
  }
}

if (!force && fs.existsSync(out) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === digest) {
  linkSelfpath();
  log('up to date');
  process.exit(0);
}

fs.mkdirSync(path.dirname(out), { recursive: true });
fs.mkdirSync(path.dirname(stamp), { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
try {
  execFileSync(cc, [...flags, '-o', tmp, ...sources], { stdio: ['ignore', 'inherit', 'inherit'] });
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, out);
} catch {
  fs.rmSync(tmp, { force: true });
  console.error('build-native: compiling the launcher failed (see the compiler output above)');
  process.exit(1);
}
fs.writeFileSync(stamp, digest);
linkSelfpath();
log(`built ${path.relative(root, out)} with ${ccVersion}`);
