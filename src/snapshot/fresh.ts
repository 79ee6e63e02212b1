/**
 * Dependencies too new to trust (ccache's "file too new" rule).
 *
 * A restore notices a changed dependency by its identity: size, inode and
 * the mtime and ctime the kernel stamps with its coarse clock, truncated to
 * what the filesystem stores. Two changes within one such step leave the
 * same timestamps: a file rewritten in place (`dd conv=notrunc`, same size)
 * in the second it was last written, on ext4 with 128-byte inodes (1-second
 * timestamps) or FAT (2 seconds), keeps its identity, and an image taken
 * between the two writes would restore the old content forever.
 *
 * So every dependency's mtime and ctime must be older than the snapshot's
 * start by the step of its timestamps plus one clock tick (the coarse clock
 * lags the real one by up to a tick): then any write after the start gets
 * a later timestamp. The step is 2 s when both timestamps have zero
 * nanoseconds (a 1- or 2-second filesystem: ext4 -I 128, ext3, FAT, many
 * network mounts), else the coarse clock's tick, from
 * clock_getres(CLOCK_REALTIME_COARSE). A file that is too new refuses the
 * snapshot with `too-new`, which is not remembered: the warmer retries
 * after a short wait, the next miss queues it again.
 */
import type { ImageFile } from '../image/format.js';
import { FileKind } from '../image/schema.js';
import { coarseClockResolutionNs } from '../sys/libc.js';
import { SnapshotRefusal } from './refusal.js';

const SECOND = 1_000_000_000n;
/** 1-second filesystems and FAT's 2-second mtime: both stamp zero nanoseconds. */
const COARSE_FS_STEP = 2n * SECOND;
/** Further in the future than any race: a file dated ahead (clock skew, an archive), not a write. */
const FUTURE = 60n * SECOND;

let tick: bigint | undefined;

/** The coarse clock's tick; 10 ms (HZ=100, the slowest common tick) if it cannot be asked. */
export function clockTickNs(): bigint {
  if (tick === undefined) {
    try {
      tick = coarseClockResolutionNs();
    } catch {
      tick = 10_000_000n;
    }
    if (tick <= 0n) tick = 10_000_000n;
  }
  return tick;
}

const ns = (sec: bigint, nsec: number): bigint => sec * SECOND + BigInt(nsec);

/** How far before `startNs` a file's timestamps must be to be trusted. */
export function trustMargin(f: Pick<ImageFile, 'mtimeNsec' | 'ctimeNsec'>, tickNs: bigint = clockTickNs()): bigint {
  return (f.mtimeNsec === 0 && f.ctimeNsec === 0 ? COARSE_FS_STEP : tickNs) + tickNs;
}

/**
 * Refuses (`too-new`, or `future-timestamp` for a file dated more than a
 * minute ahead) when a dependency changed too close to the snapshot's start.
 * Files whose identity the restore checks (MAPPED, READ, listed directories)
 * count; ABSENT and ACCESS entries have no timestamps to trust.
 */
export function checkNotTooNew(files: readonly ImageFile[], startNs: bigint, tickNs: bigint = clockTickNs()): void {
  for (const f of files) {
    if (f.kind !== FileKind.MAPPED && f.kind !== FileKind.READ) continue;
    const latest = [ns(f.mtimeSec, f.mtimeNsec), ns(f.ctimeSec, f.ctimeNsec)].reduce((a, b) => (a > b ? a : b));
    const margin = trustMargin(f, tickNs);
    if (latest + margin <= startNs) continue;
    const ago = Number(startNs - latest) / 1e9;
    if (latest > startNs + FUTURE) {
      throw new SnapshotRefusal('future-timestamp', `${f.path} is dated ${(-ago).toFixed(0)} s in the future: a change to it could keep its timestamps`);
    }
    throw new SnapshotRefusal('too-new', `${f.path} changed ${ago >= 0 ? `${ago.toFixed(3)} s before` : `${(-ago).toFixed(3)} s after`} the snapshot started ` +
      `(its timestamps have ${margin >= SECOND ? 'whole seconds' : `${Number(margin - tickNs) / 1e6} ms steps`}): a second change could keep them; taken again later`);
  }
}
