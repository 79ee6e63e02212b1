/**
 * Cross-compiling for the guest on the host with Debian's
 * gcc-aarch64-linux-gnu: glibc programs static (they run before and apart
 * from the guest's own libraries), musl programs dynamic against musl-dev's
 * arm64 files (the same specs musl-gcc uses on x86_64, pointed at them).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as apt from './apt.mjs';
import { aptListsStamp, sha, writeAtomic } from './guest.mjs';

export const CC = process.env.CC_AARCH64 || 'aarch64-linux-gnu-gcc';

function ccVersion() {
  return execFileSync(CC, ['--version'], { encoding: 'utf8' }).split('\n')[0];
}

/** musl-dev and musl for arm64, unpacked in the cache, and a specs file for them. */
function muslSpecs(ctx) {
  // apt-cache is slow: the resolution is cached per state of the apt lists.
  const resolved = path.join(ctx.cache, 'resolved', `musl-dev-${sha(aptListsStamp())}.json`);
  let pkgs;
  if (fs.existsSync(resolved)) pkgs = JSON.parse(fs.readFileSync(resolved, 'utf8'));
  else {
    pkgs = apt.resolve(['musl-dev'], ['gcc-aarch64-linux-gnu']).filter((p) => p.name.startsWith('musl'));
    fs.mkdirSync(path.dirname(resolved), { recursive: true });
    writeAtomic(resolved, JSON.stringify(pkgs));
  }
  const dir = path.join(ctx.cache, 'toolchain', `musl-${sha(pkgs.map((p) => p.filename))}`);
  const specs = path.join(dir, 'musl-gcc.specs');
  if (fs.existsSync(specs)) return specs;
  const debs = apt.download(pkgs, path.join(ctx.cache, 'debs'), ctx.log);
  fs.mkdirSync(dir, { recursive: true });
  for (const d of debs) apt.extract(d, dir);
  const inc = path.join(dir, 'usr/include/aarch64-linux-musl'), lib = path.join(dir, 'usr/lib/aarch64-linux-musl');
  writeAtomic(specs, `%rename cpp_options old_cpp_options

*cpp_options:
-nostdinc -isystem ${inc} -isystem include%s %(old_cpp_options)

*cc1:
%(cc1_cpu) -nostdinc -isystem ${inc} -isystem include%s

*link_libgcc:
-L${lib} -L .%s

*libgcc:
libgcc.a%s %:if-exists(libgcc_eh.a%s)

*startfile:
%{!shared: ${lib}/Scrt1.o} ${lib}/crti.o crtbeginS.o%s

*endfile:
crtendS.o%s ${lib}/crtn.o

*link:
-dynamic-linker /lib/ld-musl-aarch64.so.1 -nostdlib %{shared:-shared} %{static:-static} %{rdynamic:-export-dynamic}
`);
  return specs;
}

/**
 * Compiles each test/arm64/probes/*.c into the cache; returns { NAME: path }
 * (each lands in the guest as /cx-run/bin/NAME):
 *  - NAME.c: a static glibc program;
 *  - NAME.musl.c: a dynamic musl program;
 *  - NAME.so.c: a glibc shared library, libNAME.so;
 *  - NAME.dyn.c: a dynamic glibc program, linked with libNAME.so when
 *    NAME.so.c exists (found at run time in /cx-run/bin through its rpath).
 */
export function buildProbes(ctx) {
  const src = path.join(ctx.root, 'test', 'arm64', 'probes');
  const ver = ccVersion();
  const out = {};
  const kindOf = (f) => (f.endsWith('.musl.c') ? 'musl' : f.endsWith('.so.c') ? 'so' : f.endsWith('.dyn.c') ? 'dyn' : 'static');
  // Libraries first: a dynamic program links with its library.
  const files = fs.readdirSync(src).filter((x) => x.endsWith('.c')).sort((a, b) =>
    Number(kindOf(b) === 'so') - Number(kindOf(a) === 'so') || (a < b ? -1 : a > b ? 1 : 0));
  const libDir = path.join(ctx.cache, 'probes', `lib-${process.pid}`);
  try {
    for (const f of files) {
      const kind = kindOf(f);
      const base = f.replace(/(\.musl|\.so|\.dyn)?\.c$/, '');
      const name = kind === 'so' ? `lib${base}.so` : base;
      const common = ['-O2', '-Wall', '-mbranch-protection=standard'];
      let flags; // before the source
      let link = []; // after it
      if (kind === 'musl') flags = ['-specs', muslSpecs(ctx), ...common];
      else if (kind === 'so') flags = ['-shared', '-fPIC', ...common];
      else if (kind === 'dyn') {
        flags = common;
        if (out[`lib${base}.so`]) link = [`-L${libDir}`, `-l${base}`, '-Wl,-rpath,/cx-run/bin'];
      } else flags = ['-static', ...common];
      // A program linked with a library is rebuilt with it (its bytes are part of the key).
      const lib = link.length ? [fs.readFileSync(out[`lib${base}.so`])] : [];
      const bin = path.join(ctx.cache, 'probes', `${name}-${sha(fs.readFileSync(path.join(src, f)), ver, flags, ...lib)}`);
      if (!fs.existsSync(bin)) {
        fs.mkdirSync(path.dirname(bin), { recursive: true });
        const tmp = `${bin}.${process.pid}.tmp`;
        execFileSync(CC, [...flags, '-o', tmp, path.join(src, f), ...link], { stdio: ['ignore', 'inherit', 'inherit'] });
        fs.renameSync(tmp, bin);
      }
      out[name] = bin;
      if (kind === 'so') {
        fs.mkdirSync(libDir, { recursive: true });
        fs.copyFileSync(bin, path.join(libDir, name));
      }
    }
  } finally {
    fs.rmSync(libDir, { recursive: true, force: true });
  }
  return out;
}

/**
 * The benchmark harness's C helpers for the guest, which has no compiler:
 * benchmarks/runner.c (static glibc) and benchmarks/exit.c (no libc), with a
 * prebuilt.json naming the source digest, compiler and flags of each
 * (benchmarks/harness/runner.ts uses them only if the digest is its source's).
 * Cached by source, compiler and flags; returns { dir, files: [names] } where
 * dir holds runner, exit-floor and prebuilt.json, to be the guest's
 * /cx/build/bench/.
 */
export function buildBenchHelpers(ctx) {
  const ver = ccVersion();
  const helpers = [
    { name: 'runner', src: 'benchmarks/runner.c', flags: ['-O2', '-Wall', '-static'] },
    { name: 'exit-floor', src: 'benchmarks/exit.c', flags: ['-O2', '-nostdlib', '-static'] },
  ];
  const srcs = helpers.map((h) => fs.readFileSync(path.join(ctx.root, h.src)));
  const dir = path.join(ctx.cache, 'probes', `bench-${sha(ver, ...helpers.map((h) => h.flags), ...srcs)}`);
  if (fs.existsSync(path.join(dir, 'prebuilt.json'))) return { dir, files: [...helpers.map((h) => h.name), 'prebuilt.json'] };
  const tmpDir = `${dir}.${process.pid}.tmp`;
  fs.rmSync(tmpDir, { recursive: true, force: true });
  fs.mkdirSync(tmpDir, { recursive: true });
  const list = {};
  helpers.forEach((h, i) => {
    execFileSync(CC, [...h.flags, '-o', path.join(tmpDir, h.name), path.join(ctx.root, h.src)], { stdio: ['ignore', 'inherit', 'inherit'] });
    list[h.name] = { source: h.src, sha256: createHash('sha256').update(srcs[i]).digest('hex'), cc: ver, flags: h.flags };
  });
  fs.writeFileSync(path.join(tmpDir, 'prebuilt.json'), `${JSON.stringify(list, null, 1)}\n`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmpDir, dir);
  return { dir, files: [...helpers.map((h) => h.name), 'prebuilt.json'] };
}
