/**
 * takeSnapshot: the snapshotter's one entry point (the CLI loads this module
 * lazily, see src/cli/snapshotter.ts). A post-link image (postlink.ts: the
 * program stopped at its ELF entry point) or, with afterInit, a post-init
 * image (postinit.ts: stopped at the checkpoint of the resume protocol).
 * Every doubt is a refusal (refusal.ts); no tracee outlives the call.
 */
import type { SnapshotOptions, SnapshotOutcome } from './api.js';
import { postLinkModel } from './postlink.js';
import { postInitModel } from './postinit.js';
import { SnapshotRefusal } from './refusal.js';
import type { ImageModel } from '../image/format.js';
import { FileFlag, StateFlag } from '../image/schema.js';
import { checkProgram } from './elf.js';
import { imageNamesExe } from './exe-reads.js';

export { snapshotEnv } from './env.js';

/** CX_STATE_READS_EXE when the program's code names /proc/self/exe (exe-reads.ts). */
function markReadsExe(image: ImageModel, notes: string[]): void {
  const exe = image.files.find((f) => f.flags & FileFlag.EXE);
  const found = imageNamesExe(image.files, exe ? checkProgram(exe.path).interpreter : null);
  if (!found) return;
  image.state.flags |= StateFlag.READS_EXE;
  notes.push(`${found.file} names ${found.what}: restored only where /proc/self/exe can be made the program (CAP_CHECKPOINT_RESTORE), else cold`);
}

export function takeSnapshot(opts: SnapshotOptions): SnapshotOutcome {
  const t0 = Date.now();
  const a = opts.afterInit;
  try {
    const { image, notes } = a
      ? postInitModel({
        exePath: opts.exePath, argv0: opts.argv[0] ?? opts.exePath, words: a.words, kind: a.kind, env: opts.env,
        launcher: opts.launcher, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
        ...(opts.limits ? { limits: opts.limits } : {}),
      })
      : postLinkModel(opts);
    markReadsExe(image, notes);
    return { ok: true, image, ms: Date.now() - t0, notes };
  } catch (e) {
    const ms = Date.now() - t0;
    if (e instanceof SnapshotRefusal) return { ok: false, reason: e.code, detail: e.detail, ms };
    return { ok: false, reason: 'internal', detail: (e as Error).message.split('\n')[0] ?? 'unknown error', ms };
  }
}

