/**
 * Debian's arm64 packages for the guest, through the host's own apt: the
 * dependency closure of a package list (first alternative of each "a | b",
 * virtual names through what already provides them), downloaded once into the
 * cache (a .deb's file name carries its version, so a new version is a new file).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ARCH = 'arm64';

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** Makes arm64 packages visible to apt on the host (root only; done once). */
export function ensureForeignArch(log) {
  const archs = run('dpkg', ['--print-foreign-architectures']).split('\n');
  let known = false;
  try {
    known = /Candidate: [^(]/.test(run('apt-cache', ['policy', `libc6:${ARCH}`]));
  } catch { /* not known yet */ }
  if (archs.includes(ARCH) && known) return;
  if (process.getuid() !== 0) {
    throw new Error(`apt does not know ${ARCH} packages; as root run: dpkg --add-architecture ${ARCH} && apt-get update`);
  }
  if (!archs.includes(ARCH)) {
    log(`dpkg --add-architecture ${ARCH}`);
    run('dpkg', ['--add-architecture', ARCH]);
  }
  log('apt-get update (for the arm64 package lists)');
  run('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Installs missing host tools from Debian (root only). */
export function ensureHostPackages(pkgs, log) {
  const missing = pkgs.filter((p) => {
    try {
      return !/^install ok installed/m.test(run('dpkg-query', ['-W', '-f=${Status}\n', p]));
    } catch {
      return true;
    }
  });
  if (!missing.length) return;
  if (process.getuid() !== 0) throw new Error(`missing host packages: ${missing.join(' ')} (apt-get install them as root)`);
  log(`apt-get install ${missing.join(' ')}`);
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** Parses `apt-cache show` stanzas into { name: {version, filename, deps: [[alt...]...], provides} }. */
function parseStanzas(text) {
  const out = {};
  for (const stanza of text.split(/\n\n+/)) {
    const fields = {};
    let last = null;
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line) && last) fields[last] += `\n${line}`;
      else {
        const m = /^([\w-]+):\s?(.*)$/.exec(line);
        if (m) fields[(last = m[1])] = m[2];
      }
    }
    if (!fields.Package) continue;
    const deps = [fields['Pre-Depends'], fields.Depends].filter(Boolean).join(', ');
    out[fields.Package] = {
      version: fields.Version,
      filename: fields.Filename ? path.basename(fields.Filename) : null,
      arch: fields.Architecture,
      deps: deps ? deps.split(',').map((g) => g.split('|').map((a) => a.trim().split(/[\s(:]/)[0]).filter(Boolean)) : [],
      provides: (fields.Provides || '').split(',').map((p) => p.trim().split(/[\s(]/)[0]).filter(Boolean),
    };
  }
  return out;
}

function show(names) {
  // One call per round: apt-cache show prints the candidate of each name it knows.
  let text;
  try {
    text = run('apt-cache', ['show', '--no-all-versions', ...names.map((n) => `${n}:${ARCH}`)]);
  } catch {
    // A purely virtual name makes apt-cache fail for the whole call: ask one by one.
    if (names.length === 1) return {};
    return Object.assign({}, ...names.map((n) => show([n])));
  }
  return parseStanzas(text);
}

function providers(name) {
  try {
    const text = run('apt-cache', ['showpkg', `${name}:${ARCH}`]);
    const rp = text.split('Reverse Provides:')[1] || '';
    return rp.split('\n').map((l) => l.trim().split(/[\s:]/)[0]).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * The closure of `wanted` (package names), never entering `deny` (packages a
 * guest without maintainer scripts does not need: debconf, init systems...).
 * Returns [{name, version, filename}] sorted by name.
 */
export function resolve(wanted, deny = []) {
  const chosen = new Map();
  const provided = new Map(); // virtual name -> package providing it
  const denied = new Set(deny);
  let queue = [...new Set(wanted)];
  while (queue.length) {
    const info = show(queue);
    const next = [];
    for (const name of queue) {
      if (chosen.has(name)) continue;
      const p = info[name];
      if (!p) {
        if (provided.has(name)) continue;
        const prov = providers(name).filter((x) => !denied.has(x));
        if (!prov.length) throw new Error(`arm64 package ${name}: not found and nothing provides it`);
        next.push(prov[0]);
        provided.set(name, prov[0]);
        continue;
      }
      chosen.set(name, p);
      for (const pv of p.provides) provided.set(pv, name);
    }
    for (const name of queue) {
      const p = chosen.get(name);
      if (!p) continue;
      for (const group of p.deps) {
        if (group.some((a) => chosen.has(a) || provided.has(a) || next.includes(a))) continue;
        // A group naming a denied package is one we leave out on purpose ("debconf | debconf-2.0").
        if (group.some((a) => denied.has(a))) continue;
        next.push(group[0]);
      }
    }
    queue = [...new Set(next)].filter((n) => !chosen.has(n));
  }
  return [...chosen.entries()].map(([name, p]) => ({ name, version: p.version, filename: p.filename }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Downloads each .deb into dir unless present; returns their paths. */
export function download(pkgs, dir, log) {
  fs.mkdirSync(dir, { recursive: true });
  const missing = pkgs.filter((p) => !fs.existsSync(path.join(dir, p.filename)));
  if (missing.length) {
    log(`apt-get download: ${missing.length} arm64 packages`);
    // apt's sandbox user cannot write into root's cache; download into a
    // world-writable temp dir, then move (same filesystem as dir).
    const tmp = fs.mkdtempSync(path.join(dir, '.dl-'));
    fs.chmodSync(tmp, 0o777);
    try {
      run('apt-get', ['download', '-qq', ...missing.map((p) => `${p.name}:${ARCH}=${p.version}`)], { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
      for (const p of missing) {
        // apt names the file NAME_EPOCH%3aVERSION_ARCH.deb where the pool has no epoch.
        const got = fs.readdirSync(tmp).find((f) => f.startsWith(`${p.name}_`) && f.endsWith(`_${ARCH}.deb`));
        if (!got) throw new Error(`apt-get download did not produce ${p.filename}`);
        fs.renameSync(path.join(tmp, got), path.join(dir, p.filename));
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return pkgs.map((p) => path.join(dir, p.filename));
}

/** Extracts a .deb's files into root, keeping root's merged-/usr symlinks (/bin -> usr/bin). */
export function extract(deb, root) {
  execFileSync('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"', 'sh', deb, root], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}
