/**
 * Public contract of the snapshotter (implemented in src/snapshot/snapshot.ts).
 * The CLI and the cache call only this.
 */
import type { ImageLimit, ImageModel } from '../image/format.js';
import type { AdapterKind } from '../resume/spec.js';

/** Stable refusal codes; statistics count them by name. */
export type RefusalCode =
  | 'not-found' // program missing or not executable
  | 'not-elf' // not an ELF file (script without #!, data)
  | 'static-binary' // no PT_INTERP: nothing for the loader to save
  | 'foreign-arch' // not an ELF file of this machine's architecture
  | 'unported-arch' // no snapshotter for this machine's architecture (post-init images: x86_64 only)
  | 'privileged' // setuid/setgid or file capabilities
  | 'exited-before-entry' // the program died or exec failed before its entry point
  | 'threads' // more than one thread at the entry point
  | 'children' // a child process was created before the entry point
  | 'open-fds' // files other than 0-2 left open by constructors
  | 'shared-writable-mapping' // MAP_SHARED writable memory cannot be captured
  | 'unsupported-syscall' // a constructor created kernel state a restore cannot recreate
  | 'unexplained-stack-pointer' // a pointer into the old stack that is not a known slot
  | 'unexplained-difference' // the differential run changed a word that is not argc/pid/pointer
  | 'reads-environment' // a constructor read an environment variable: a restore would not see the caller's
  | 'layout-mismatch' // the differential runs mapped different things
  | 'timeout' // did not reach the entry point in time
  | 'too-new' // a dependency changed during the snapshot or too close to its start to trust its timestamps (not remembered: retried)
  | 'future-timestamp' // a dependency is dated more than a minute ahead: its timestamps prove nothing
  | 'side-effects' // a post-init image's init (or a child) changed something outside its memory: a restore would not
  | 'internal'; // bug or unexpected kernel answer: never restore on doubt

export interface SnapshotOptions {
  /** Resolved absolute path of the program. */
  exePath: string;
  /** argv for the snapshot run (argv[0] first). Only the layout matters. */
  argv: string[];
  /** Caller's environment; the key uses its PATH. Loader variables are removed. */
  env: NodeJS.ProcessEnv;
  /** Absolute path of the native launcher (bin/cached-exec), used as the traced child. */
  launcher: string;
  /** Give up after this many milliseconds (default 10000; 60000 for post-init images). */
  timeoutMs?: number;
  /**
   * A post-init image (src/snapshot/postinit.ts): the adapter words
   * (src/resume/spec.ts adapterWords) and which adapter they are.
   */
  afterInit?: { words: string[]; kind: AdapterKind };
  /**
   * Resource limits the program is started with (the run that queued the
   * image: its LIMITS must match that run's); others are the snapshotter's own.
   */
  limits?: readonly ImageLimit[];
}

export type SnapshotOutcome =
  | { ok: true; image: ImageModel; ms: number; notes: string[] }
  | { ok: false; reason: RefusalCode; detail: string; ms: number };
