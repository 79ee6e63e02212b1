#!/usr/bin/env node
/**
 * Builds the native launcher bin/cached-exec with the machine's C compiler.
 * No dependencies, no downloads, no node-gyp: one `cc` invocation producing a
 * freestanding static binary (no libc). Skips the build when the sources, flags
 * and compiler are unchanged; writes the binary atomically (temp + rename) so a
 * concurrent run never execs a half-written launcher.
 *
 *   node scripts/build-native.mjs [--force] [--quiet]
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(root, 'src', 'restore');
const out = path.join(root, 'bin', 'cached-exec');
const stamp = path.join(root, 'build', 'native.stamp');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const log = (msg) => quiet || console.log(`build-native: ${msg}`);

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`build-native: cached-exec supports Linux x86_64 only (this is ${process.platform}/${process.arch})`);
  process.exit(1);
}

const cc = process.env.CC || 'cc';
let ccVersion;
try {
  ccVersion = execFileSync(cc, ['--version'], { encoding: 'utf8' }).split('\n')[0];
} catch {
  console.error(`build-native: no C compiler found (tried "${cc}"). Install one, e.g. "apt-get install gcc", or set CC.`);
  process.exit(1);
}

// The portable steps in src/restore/, the machine's own parts in src/restore/arch/<arch>/.
const archDir = path.join(srcDir, 'arch', 'x86_64');
const listed = (dir, ext) => fs.readdirSync(dir).filter((f) => f.endsWith(ext)).sort().map((f) => path.join(dir, f));
const sources = [...listed(srcDir, '.c'), ...listed(archDir, '.c')];
const headers = [...listed(srcDir, '.h'), ...listed(archDir, '.h')];

const flags = [
  '-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror=implicit-function-declaration',
  // Freestanding: no libc, no startup files, no stack protector (there is no TLS
  // until the restore sets fs_base), no SSE (the jump to the program must leave
  // FPU/SSE state as the kernel made it).
  '-ffreestanding', '-fno-builtin', '-nostdlib', '-static', '-fno-pie', '-no-pie',
  '-fno-stack-protector', '-fno-asynchronous-unwind-tables', '-fno-unwind-tables', '-mgeneral-regs-only',
  '-fcf-protection=none', '-fno-plt', '-fno-stack-clash-protection',
  // Linked far from where programs live (PIE at 0x55.., libraries at 0x7f..,
  // non-PIE at 0x400000) so an image's regions never collide with the launcher.
  '-Wl,-Ttext-segment=0x60000000', '-Wl,--build-id=none', '-Wl,-z,noexecstack', '-Wl,-z,norelro',
  `-DCX_NODE_PATH="${process.execPath}"`,
  `-I${srcDir}`, `-I${archDir}`,
];

const h = createHash('sha256');
h.update(ccVersion).update(JSON.stringify(flags));
for (const f of [...sources, ...headers]) h.update(f).update(fs.readFileSync(f));
const digest = h.digest('hex');

if (!force && fs.existsSync(out) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === digest) {
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
log(`built ${path.relative(root, out)} with ${ccVersion}`);
