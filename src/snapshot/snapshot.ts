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

export { snapshotEnv } from './env.js';

export function takeSnapshot(opts: SnapshotOptions): SnapshotOutcome {
  const t0 = Date.now();
  const a = opts.afterInit;
  try {
    const { image, notes } = a
      ? postInitModel({
        exePath: opts.exePath, argv0: opts.argv[0] ?? opts.exePath, words: a.words, kind: a.kind, env: opts.env,
        launcher: opts.launcher, ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      })
      : postLinkModel(opts);
    return { ok: true, image, ms: Date.now() - t0, notes };
  } catch (e) {
    const ms = Date.now() - t0;
    if (e instanceof SnapshotRefusal) return { ok: false, reason: e.code, detail: e.detail, ms };
    return { ok: false, reason: 'internal', detail: (e as Error).message.split('\n')[0] ?? 'unknown error', ms };
  }
}

