/**
 * The lookup key. The native launcher computes the same bytes on every run
 * (src/restore/launcher.c: compute_key); test vectors prove both agree.
 *
 * Key record (little-endian, 56 bytes), then NUL-terminated strings:
 *   u32 format_version, u32 euid, u64 dev, u64 ino, u64 size,
 *   i64 mtime_sec, i64 ctime_sec, u32 mtime_nsec, u32 ctime_nsec,
 *   exe_path "\0" PATH "\0" kernel_release "\0"
 * then for a post-init image init_spec "\0"; then u64 groups_hash
 * (groupsHash(): 0 in the system layer), u64 cpu_id (the launcher's
 * cx_arch_cpu_id: machines of other CPUs sharing one cache each keep their
 * own image); and for a variant image (one that
 * serves another environment than the primary image of the same key,
 * src/cache/envdeps.ts) the u64 selector. The environment itself is not part
 * of the lookup key: an image lists the variables it depends on, and the
 * restorer compares those (a variable nobody read never causes a miss).
 * The image also stores these fields; the restorer compares them exactly, so
 * a hash collision can only ever cost a cold run.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FORMAT_VERSION, hash64 } from '../image/schema.js';
import type { ImageKey } from '../image/format.js';
import { hostCpuId } from '../image/machine.js';

export function keyBytes(k: ImageKey): Buffer {
  const rec = Buffer.alloc(48);
  rec.writeUInt32LE(FORMAT_VERSION, 0);
  rec.writeUInt32LE(k.euid >>> 0, 4);
  rec.writeBigUInt64LE(BigInt.asUintN(64, k.exeDev), 8);
  rec.writeBigUInt64LE(BigInt.asUintN(64, k.exeIno), 16);
  rec.writeBigUInt64LE(BigInt.asUintN(64, k.exeSize), 24);
  rec.writeBigInt64LE(k.exeMtimeSec, 32);
  rec.writeBigInt64LE(k.exeCtimeSec, 40);
  // nsec fields follow in a second 8-byte group so the record stays 8-aligned.
  const ns = Buffer.alloc(8);
  ns.writeUInt32LE(k.exeMtimeNsec >>> 0, 0);
  ns.writeUInt32LE(k.exeCtimeNsec >>> 0, 4);
  const strs = Buffer.from(`${k.exePath}\0${k.pathEnv}\0${k.kernelRelease}\0`, 'utf8');
  const groups = Buffer.alloc(8);
  groups.writeBigUInt64LE(k.groupsHash ?? 0n);
  const parts = [rec.subarray(0, 48), ns, strs];
  if (k.initSpec) parts.push(Buffer.from(`${k.initSpec}\0`, 'utf8'));
  parts.push(groups);
  const cpu = Buffer.alloc(8);
  cpu.writeBigUInt64LE(BigInt((k.cpuId ?? hostCpuId()) >>> 0));
  parts.push(cpu);
  if (k.variant) {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(k.variant);
    parts.push(v);
  }
  return Buffer.concat(parts);
}

/**
 * Who the user is for file access, besides the uid: the effective gid and the
 * supplementary groups in the kernel's (sorted) order, as /proc/self/status
 * lists them and getgroups(2) returns them to the launcher. An image holds
 * what its snapshot could read; a user removed from a group must not get it
 * back from an image, so another set of groups is another key.
 * cx_hash64 of u32 egid, u32 count, u32 gid... (launcher.c: groups_hash).
 */
export function groupsHash(egid: number = process.getegid ? process.getegid() : 0, groups: number[] = kernelGroups()): bigint {
  const buf = Buffer.alloc(8 + 4 * groups.length);
  buf.writeUInt32LE(egid >>> 0, 0);
  buf.writeUInt32LE(groups.length, 4);
  groups.forEach((g, i) => buf.writeUInt32LE(g >>> 0, 8 + 4 * i));
  return hash64(buf);
}

/** Supplementary groups of this process in the kernel's order (process.getgroups() adds the egid). */
function kernelGroups(): number[] {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('Groups:')) ?? '';
  return line.slice('Groups:'.length).trim().split(/\s+/).filter(Boolean).map(Number);
}

export function keyHash(k: ImageKey): string {
  return hash64(keyBytes(k)).toString(16).padStart(16, '0');
}

/** Same rule as the launcher: CACHED_EXEC_DIR, else env-paths' cache dir. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return cacheDirOrigin(env).dir;
}

/** cacheDir() and the variable that chose it, for error messages. */
export function cacheDirOrigin(env: NodeJS.ProcessEnv = process.env): { dir: string; from: string } {
  if (env.CACHED_EXEC_DIR) return { dir: env.CACHED_EXEC_DIR, from: `CACHED_EXEC_DIR=${env.CACHED_EXEC_DIR}` };
  // env-paths('cached-exec', {suffix: ''}).cache on Linux; spelled out here so the
  // C side (which has no env-paths) visibly follows the same rule.
  if (env.XDG_CACHE_HOME) return { dir: path.join(env.XDG_CACHE_HOME, 'cached-exec'), from: `XDG_CACHE_HOME=${env.XDG_CACHE_HOME}` };
  if (env.HOME) return { dir: path.join(env.HOME, '.cache', 'cached-exec'), from: `HOME=${env.HOME}` };
  return { dir: path.join(os.homedir(), '.cache', 'cached-exec'), from: 'your home directory' };
}

export function imagePath(dir: string, k: ImageKey): string {
  return path.join(dir, 'images', `${keyHash(k)}.img`);
}

/** Builds the key for a resolved program as this process would see it. */
export function keyFor(exePath: string, env: NodeJS.ProcessEnv = process.env): ImageKey {
  return keyFromStat(exePath, fs.statSync(exePath, { bigint: true }), env);
}

/**
 * The launcher's rule exactly (launcher.c: cache_dir): CACHED_EXEC_DIR, else
 * $XDG_CACHE_HOME/cached-exec, else $HOME/.cache/cached-exec, each only when
 * non-empty; null when the launcher has no cache directory at all (it then
 * runs cold and records nothing). cacheDir() instead falls back to the
 * password database's home, which suits commands that must write somewhere.
 */
export function launcherCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.CACHED_EXEC_DIR) return env.CACHED_EXEC_DIR;
  if (env.XDG_CACHE_HOME) return path.join(env.XDG_CACHE_HOME, 'cached-exec');
  if (env.HOME) return path.join(env.HOME, '.cache', 'cached-exec');
  return null;
}

/** keyFor() from a stat already taken (no second stat that could race). */
export function keyFromStat(
  exePath: string,
  st: fs.BigIntStats,
  env: NodeJS.ProcessEnv = process.env,
  euid: number = process.geteuid ? process.geteuid() : 0,
  /** groupsHash() of the user; 0n for the system layer, which serves every user alike. */
  groups: bigint = groupsHash(),
): ImageKey {
  return {
    euid,
    groupsHash: groups,
    exePath,
    exeDev: st.dev,
    exeIno: st.ino,
    exeSize: st.size,
    exeMtimeSec: st.mtimeNs / 1_000_000_000n,
    exeMtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
    exeCtimeSec: st.ctimeNs / 1_000_000_000n,
    exeCtimeNsec: Number(st.ctimeNs % 1_000_000_000n),
    pathEnv: env.PATH ?? '',
    kernelRelease: os.release(),
    cpuId: hostCpuId(),
  };
}

/** Image file names are the key hash: 16 lowercase hex digits + ".img". */
export const IMAGE_NAME_RE = /^([0-9a-f]{16})\.img$/;

/**
 * cx_env_hash: the environment as a run sees it, independent of order: the
 * sum of cx_hash64 of every "NAME=value" string except "_=..." (which shells
 * set to each command's own path). Same bytes in launcher.c: env_hash().
 */
export function envHash(env: NodeJS.ProcessEnv): bigint {
  let sum = 0n;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || k === '_') continue;
    sum = (sum + hash64(Buffer.from(`${k}=${v}`, 'utf8'))) & 0xffffffffffffffffn;
  }
  return sum === 0n ? 1n : sum;
}
