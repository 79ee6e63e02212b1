/**
 * Cross-compiling for the guest on the host with Debian's
 * gcc-aarch64-linux-gnu: glibc programs static (they run before and apart
 * from the guest's own libraries), musl programs dynamic against musl-dev's
 * arm64 files (the same specs musl-gcc uses on x86_64, pointed at them).
 */
import { execFileSync } from 'node:child_process';
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
 * Compiles each test/arm64/probes/*.c (NAME.c static glibc, NAME.musl.c
 * dynamic musl) into the cache; returns { NAME: path }.
 */
export function buildProbes(ctx) {
  const src = path.join(ctx.root, 'test', 'arm64', 'probes');
  const ver = ccVersion();
  const out = {};
  for (const f of fs.readdirSync(src).filter((x) => x.endsWith('.c')).sort()) {
    const musl = f.endsWith('.musl.c');
    const name = f.replace(/(\.musl)?\.c$/, '');
    const flags = musl
      ? ['-specs', muslSpecs(ctx), '-O2', '-Wall', '-mbranch-protection=standard']
      : ['-static', '-O2', '-Wall', '-mbranch-protection=standard'];
    const bin = path.join(ctx.cache, 'probes', `${name}-${sha(fs.readFileSync(path.join(src, f)), ver, flags)}`);
    if (!fs.existsSync(bin)) {
      fs.mkdirSync(path.dirname(bin), { recursive: true });
      const tmp = `${bin}.${process.pid}.tmp`;
      execFileSync(CC, [...flags, '-o', tmp, path.join(src, f)], { stdio: ['ignore', 'inherit', 'inherit'] });
      fs.renameSync(tmp, bin);
    }
    out[name] = bin;
  }
  return out;
}
