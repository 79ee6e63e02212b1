/**
 * Loads the snapshotter (src/snapshot/snapshot.ts, contract in
 * src/snapshot/api.ts) on first use. It is imported dynamically so that
 * every other admin command works without it (and without koffi loading),
 * and so that a build without it fails with a clear message instead of a
 * module-resolution stack trace.
 */
import type { SnapshotOptions, SnapshotOutcome } from '../snapshot/api.js';
import { CxError } from '../common/errors.js';

export type TakeSnapshot = (opts: SnapshotOptions) => SnapshotOutcome | Promise<SnapshotOutcome>;

// A variable specifier keeps tsc from requiring the module at compile time.
const MODULE = '../snapshot/snapshot.js';

let loaded: TakeSnapshot | undefined;

export async function loadSnapshotter(specifier: string = MODULE): Promise<TakeSnapshot> {
  if (loaded && specifier === MODULE) return loaded;
  let mod: unknown;
  try {
    mod = await import(specifier);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && String((e as Error).message).includes('snapshot')) {
      throw new CxError('snapshotter-missing',
        'the snapshotter is not built into this installation (dist/snapshot/snapshot.js is missing); run "npm run build"',
        { reason: 'module-not-found', cause: e });
    }
    throw new CxError('snapshotter-missing', `the snapshotter failed to load: ${(e as Error).message ?? String(e)}`,
      { reason: code ?? 'load-error', cause: e });
  }
  const fn = (mod as { takeSnapshot?: unknown }).takeSnapshot;
  if (typeof fn !== 'function') {
    throw new CxError('snapshotter-missing', 'the snapshotter module does not export takeSnapshot()', { reason: 'no-export' });
  }
  const take = fn as TakeSnapshot;
  if (specifier === MODULE) loaded = take;
  return take;
}
