/**
 * --install-capability / --remove-capability (root only): the optional file
 * capability that lets the launcher make /proc/self/exe name a restored
 * program for users other than root (see ../capability.ts for what is
 * written and how the launcher uses it).
 *
 * Without it, images of programs that read /proc/self/exe (CX_STATE_READS_EXE:
 * perl, node, cmake...) run cold for non-root users (FAIL_EXE), which is
 * always correct. With it, they restore and /proc/self/exe is right. The cost:
 * a file capability on a binary of the package (written into its inode: a
 * rebuild or reinstall writes a new file without it; run the command again),
 * and a caller's ambient capabilities are cleared by the kernel when it execs
 * a file that has file capabilities.
 */
import * as fs from 'node:fs';
import { removeXattr, setXattr, SysError } from '../../sys/libc.js';
import {
  CAP_XATTR, describeFileCaps, isLauncherCap, launcherCapValue, mountOptions, readFileCaps,
} from '../capability.js';
import type { Context } from '../context.js';
import { CxError } from '../../common/errors.js';
import { printJson } from '../output.js';
import { LAUNCHER } from '../../common/package.js';

function needRoot(command: string): void {
  if ((process.geteuid?.() ?? 0) !== 0) {
    throw new CxError('usage', `${command} writes a file capability on the launcher: run it as root`, { command });
  }
}

function sysError(what: string, file: string, e: unknown): CxError {
  const errno = e instanceof SysError ? e.errno : 0;
  const text = errno === 95 ? 'the file system does not support extended attributes'
    : errno === 1 ? 'not permitted (CAP_SETFCAP is needed)' : (e as Error).message;
  return new CxError('io', `cannot ${what} ${file}: ${text}`, { path: file, reason: errno ? `errno ${errno}` : 'error', cause: e });
}

/** The launcher binary itself (not a symlink to it): a capability lives in the inode. */
function launcherFile(): string {
  const real = fs.realpathSync(LAUNCHER);
  const st = fs.statSync(real);
  if (!st.isFile()) throw new CxError('io', `${real} is not a regular file`, { path: real });
  // A capability on a file others can replace or write would be theirs to use.
  if (st.uid !== 0 || st.mode & 0o022) {
    throw new CxError('io', `${real} must be owned by root and writable by root only before it gets a capability ` +
      `(now uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)})`, { path: real, reason: 'owner' });
  }
  return real;
}

export function installCapability(ctx: Context): number {
  needRoot('--install-capability');
  const file = launcherFile();
  const before = readFileCaps(file);
  if (before && !isLauncherCap(before)) {
    throw new CxError('io', `${file} already has other file capabilities (${describeFileCaps(before)}): left alone`, { path: file });
  }
  if (!before) {
    try {
      setXattr(file, CAP_XATTR, launcherCapValue());
    } catch (e) {
      throw sysError(`set ${CAP_XATTR} on`, file, e);
    }
  }
  // Read back what the kernel stored (it may convert the revision) and check it is exactly ours.
  const after = readFileCaps(file);
  if (!isLauncherCap(after)) {
    throw new CxError('io', `${file}: ${CAP_XATTR} reads back as ${after ? describeFileCaps(after) : 'nothing'}`, { path: file });
  }
  const nosuid = mountOptions(file).includes('nosuid');
  const result = { launcher: file, capability: describeFileCaps(after as NonNullable<typeof after>), changed: !before, nosuid };
  if (ctx.json) printJson(ctx.out, result);
  else {
    ctx.out.line(`${file}: ${result.capability}${before ? ' (already)' : ''}`);
    ctx.out.line('programs that read /proc/self/exe (perl, node, cmake...) now restore for every user, with /proc/self/exe naming them;');
    ctx.out.line('the launcher raises the capability only for the restore and drops every capability before the program runs.');
    ctx.out.line('A rebuild or reinstall of the launcher drops it: run --install-capability again. Undo: cached-exec --remove-capability');
  }
  if (nosuid) ctx.out.err(`cached-exec: ${file} is on a nosuid mount: the kernel ignores file capabilities there`);
  return 0;
}

export function removeCapability(ctx: Context): number {
  needRoot('--remove-capability');
  const file = fs.realpathSync(LAUNCHER);
  const before = readFileCaps(file);
  if (before && !isLauncherCap(before)) {
    throw new CxError('io', `${file} has file capabilities cached-exec did not write (${describeFileCaps(before)}): left alone`, { path: file });
  }
  let removed: boolean;
  try {
    removed = removeXattr(file, CAP_XATTR);
  } catch (e) {
    throw sysError(`remove ${CAP_XATTR} from`, file, e);
  }
  if (readFileCaps(file)) throw new CxError('io', `${file}: ${CAP_XATTR} is still there`, { path: file });
  if (ctx.json) printJson(ctx.out, { launcher: file, removed });
  else ctx.out.line(removed ? `${file}: capability removed (non-root users' programs that read /proc/self/exe run cold again)`
    : `${file} had no capability`);
  return 0;
}
