/**
 * A filesystem with 1-second timestamps for the "too new" suite: ext4 made
 * with 128-byte inodes (no room for nanoseconds), loop-mounted. Needs root,
 * mkfs.ext4 and a loop device.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface CoarseFs {
  mnt: string;
  unmount: () => void;
}

export function canMountCoarseFs(): boolean {
  return process.geteuid?.() === 0 && spawnSync('mkfs.ext4', ['-V']).status === 0 && fs.existsSync('/dev/loop-control');
}

/** Makes and mounts a 16 MiB ext4 with 128-byte inodes below `work`; throws with the tools' messages. */
export function mountCoarseFs(work: string): CoarseFs {
  const img = path.join(work, 'ext4-128.img');
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt, { recursive: true });
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 * 1024 * 1024);
  const sh = (cmd: string, args: string[]): void => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  };
  sh('mkfs.ext4', ['-q', '-F', '-I', '128', img]);
  sh('mount', ['-o', 'loop', img, mnt]);
  fs.chmodSync(mnt, 0o755);
  return {
    mnt,
    unmount: () => {
      spawnSync('umount', [mnt]);
    },
  };
}

/** Waits for the next second to begin (plus `slackMs`): what follows happens early in one second. */
export async function startOfSecond(slackMs = 20): Promise<number> {
  const wait = 1000 - (Date.now() % 1000) + slackMs;
  await new Promise((r) => setTimeout(r, wait));
  return Math.floor(Date.now() / 1000);
}

/** Overwrites `bytes` at offset 0 of `file` in place, like `dd conv=notrunc`: same inode, same size. */
export function rewriteInPlace(file: string, bytes: Buffer, offset = 0): void {
  const r = spawnSync('dd', [`of=${file}`, 'conv=notrunc', 'status=none', `seek=${offset}`, 'bs=1'], { input: bytes });
  if (r.status !== 0) throw new Error(`dd: ${r.stderr.toString()}`);
}
