/**
 * The launcher's optional file capability, and whether a restore can make
 * /proc/self/exe name the program.
 *
 * PR_SET_MM_MAP sets a new exe_fd only with CAP_CHECKPOINT_RESTORE (or
 * CAP_SYS_ADMIN) in the effective set. Root has both. For everyone else,
 * `cached-exec --install-capability` (root, once) gives the launcher binary
 * cap_checkpoint_restore in its *permitted* set only, as the
 * security.capability attribute (struct vfs_cap_data, VFS_CAP_REVISION_2,
 * effective bit clear): the launcher raises it for the one prctl and drops
 * every capability before the program runs (src/restore/arch/x86_64/
 * trampoline.c). This module writes and reads that attribute and tells,
 * from this process's own capability state, what the launcher will be able
 * to do for the same user (jump.c exe_settable does the same with capget).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getXattr } from '../sys/libc.js';

export const CAP_XATTR = 'security.capability';
export const CAP_SYS_ADMIN = 21;
export const CAP_CHECKPOINT_RESTORE = 40;
const VFS_CAP_REVISION_MASK = 0xff000000;
const VFS_CAP_REVISION_2 = 0x02000000;
const VFS_CAP_REVISION_3 = 0x03000000;
const VFS_CAP_FLAGS_EFFECTIVE = 0x000001;

export interface FileCaps {
  revision: number;
  /** Permitted and inheritable sets as 64-bit masks; effective: the one flag file capabilities have. */
  permitted: bigint;
  inheritable: bigint;
  effective: boolean;
  /** VFS_CAP_REVISION_3: the namespace root the capability applies to. */
  rootid?: number;
}

/** The attribute value that grants exactly cap_checkpoint_restore, permitted only. */
export function launcherCapValue(): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(VFS_CAP_REVISION_2, 0);
  // data[0] covers capabilities 0-31, data[1] 32-63: {permitted, inheritable} each.
  b.writeUInt32LE(1 << (CAP_CHECKPOINT_RESTORE - 32), 12);
  return b;
}

export function decodeFileCaps(v: Buffer): FileCaps | null {
  if (v.length < 20) return null;
  const magic = v.readUInt32LE(0);
  const revision = (magic & VFS_CAP_REVISION_MASK) >>> 0;
  if (revision !== VFS_CAP_REVISION_2 && revision !== VFS_CAP_REVISION_3) return null;
  const word = (off: number): bigint => BigInt(v.readUInt32LE(off));
  const caps: FileCaps = {
    revision: revision >>> 24,
    permitted: word(4) | (word(12) << 32n),
    inheritable: word(8) | (word(16) << 32n),
    effective: (magic & VFS_CAP_FLAGS_EFFECTIVE) !== 0,
  };
  if (revision === VFS_CAP_REVISION_3 && v.length >= 24) caps.rootid = v.readUInt32LE(20);
  return caps;
}

/** getcap(8)'s spelling of what the launcher gets: "cap_checkpoint_restore=p". */
export function describeFileCaps(c: FileCaps): string {
  const names: Record<number, string> = { [CAP_CHECKPOINT_RESTORE]: 'cap_checkpoint_restore', [CAP_SYS_ADMIN]: 'cap_sys_admin' };
  const bits = (m: bigint): string[] => [...Array(64).keys()].filter((i) => (m >> BigInt(i)) & 1n).map((i) => names[i] ?? `cap_${i}`);
  const p = bits(c.permitted);
  const i = bits(c.inheritable);
  const parts: string[] = [];
  if (p.length) parts.push(`${p.join(',')}=${c.effective ? 'e' : ''}p`);
  if (i.length) parts.push(`${i.join(',')}+i`);
  return parts.join(' ') || '(empty)';
}

/** Whether `caps` is exactly what --install-capability writes. */
export function isLauncherCap(caps: FileCaps | null): boolean {
  return !!caps && caps.permitted === 1n << BigInt(CAP_CHECKPOINT_RESTORE) && caps.inheritable === 0n && !caps.effective;
}

/** The launcher's file capabilities, or null without any. */
export function readFileCaps(file: string): FileCaps | null {
  const v = getXattr(file, CAP_XATTR);
  return v ? decodeFileCaps(v) : null;
}

/** The mount options of the file system holding `file` (from /proc/self/mountinfo, longest mount point). */
export function mountOptions(file: string): string[] {
  const real = fs.realpathSync(file);
  let best = '';
  let opts: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const mnt = (f[4] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (!mnt || !(real === mnt || real.startsWith(mnt.endsWith('/') ? mnt : `${mnt}/`))) continue;
    if (mnt.length >= best.length) {
      best = mnt;
      opts = (f[5] ?? '').split(',');
    }
  }
  return opts;
}

interface ProcCaps { eff: bigint; bnd: bigint; noNewPrivs: boolean }

function ownCaps(): ProcCaps {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const hex = (name: string): bigint => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)`, 'm').exec(status)?.[1] ?? '0'}`);
  return { eff: hex('CapEff'), bnd: hex('CapBnd'), noNewPrivs: /^NoNewPrivs:\s*1/m.test(status) };
}

export interface ExeSettable {
  settable: boolean;
  /** One line: why (or why not). */
  why: string;
}

/**
 * Whether the launcher, run by this user (with this process's capabilities),
 * can make /proc/self/exe name a restored program. Node itself was exec'd by
 * the launcher's CLI path without the launcher's file capability, so its own
 * effective set is the user's.
 */
export function exeSettable(launcher: string): ExeSettable {
  const own = ownCaps();
  const has = (set: bigint, cap: number): boolean => ((set >> BigInt(cap)) & 1n) === 1n;
  if (has(own.eff, CAP_CHECKPOINT_RESTORE) || has(own.eff, CAP_SYS_ADMIN)) {
    return { settable: true, why: 'you hold CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (root)' };
  }
  let caps: FileCaps | null = null;
  try {
    caps = readFileCaps(launcher);
  } catch { /* unreadable: as if none */ }
  if (!caps || !((caps.permitted >> BigInt(CAP_CHECKPOINT_RESTORE)) & 1n)) {
    return { settable: false, why: `${launcher} has no cap_checkpoint_restore (root can add it: cached-exec --install-capability)` };
  }
  if (!has(own.bnd, CAP_CHECKPOINT_RESTORE)) return { settable: false, why: 'CAP_CHECKPOINT_RESTORE is not in your bounding set' };
  if (own.noNewPrivs) return { settable: false, why: 'no_new_privs is set: file capabilities are not granted' };
  if (mountOptions(launcher).includes('nosuid')) {
    return { settable: false, why: `${path.dirname(launcher)} is on a nosuid mount: file capabilities are ignored there` };
  }
  return { settable: true, why: `${launcher} has cap_checkpoint_restore (permitted; raised only for the restore)` };
}
