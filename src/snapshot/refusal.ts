/** The one error type of the snapshotter: a refusal with a stable code. */
import type { RefusalCode } from './api.js';

export class SnapshotRefusal extends Error {
  constructor(
    /** Stable code, counted by statistics. */
    readonly code: RefusalCode,
    /** One line naming what was found (module + offset, syscall, ...). */
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'SnapshotRefusal';
  }
}
