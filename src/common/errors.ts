/**
 * The one error type of cached-exec's TypeScript side: the admin CLI, the
 * cache modules and the watcher throw it (it lives below all of them).
 *
 * Like execa's errors, every field is flat and documented so callers (and the
 * `--json` output) can branch on them without parsing messages:
 *
 *   code          stable machine-readable cause (see CxErrorCode)
 *   exitCode      what `cached-exec` exits with when this error ends the command
 *   shortMessage  one line for humans, without the "cached-exec: " prefix
 *   command       the admin command that failed (e.g. "--warm"), if any
 *   program       the program name the user gave, if any
 *   path          the file or directory concerned, if any
 *   reason        a finer cause: a snapshot RefusalCode, an errno code, ...
 *   cause         the underlying error, if any (standard Error.cause)
 *
 * `message` is "cached-exec: " + shortMessage, so an uncaught CxError still
 * reads like the launcher's own messages.
 */

export type CxErrorCode =
  | 'usage' // bad command line (exit 2)
  | 'not-found' // program not found on PATH (exit 127, like a shell)
  | 'not-executable' // found but not executable (exit 126)
  | 'snapshotter-missing' // src/snapshot/snapshot.ts is not built into dist/ yet
  | 'refused' // the snapshotter refused the program
  | 'bad-image' // not an image, or an image that cannot be parsed
  | 'cache-dir' // the cache directory is unusable (not ours, not a directory, ...)
  | 'io' // a file system operation failed
  | 'locked' // a lock could not be taken in time
  | 'internal'; // a bug: please report

export interface CxErrorOptions {
  exitCode?: number;
  command?: string;
  program?: string;
  path?: string;
  reason?: string;
  cause?: unknown;
}

const DEFAULT_EXIT: Record<CxErrorCode, number> = {
  usage: 2,
  'not-found': 127,
  'not-executable': 126,
  'snapshotter-missing': 1,
  refused: 1,
  'bad-image': 1,
  'cache-dir': 1,
  io: 1,
  locked: 1,
  internal: 1,
};

export class CxError extends Error {
  override readonly name = 'CxError';
  readonly code: CxErrorCode;
  readonly exitCode: number;
  readonly shortMessage: string;
  readonly command: string | undefined;
  readonly program: string | undefined;
  readonly path: string | undefined;
  readonly reason: string | undefined;

  constructor(code: CxErrorCode, shortMessage: string, opts: CxErrorOptions = {}) {
    super(`cached-exec: ${shortMessage}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.exitCode = opts.exitCode ?? DEFAULT_EXIT[code];
    this.shortMessage = shortMessage;
    this.command = opts.command;
    this.program = opts.program;
    this.path = opts.path;
    this.reason = opts.reason;
  }

  /** The flat fields, for `--json` output. */
  toJSON(): Record<string, string | number> {
    const out: Record<string, string | number> = { code: this.code, exitCode: this.exitCode, message: this.shortMessage };
    if (this.command !== undefined) out.command = this.command;
    if (this.program !== undefined) out.program = this.program;
    if (this.path !== undefined) out.path = this.path;
    if (this.reason !== undefined) out.reason = this.reason;
    return out;
  }
}

/** Wraps a Node file system error as a CxError('io') naming the path. */
export function ioError(what: string, file: string, e: unknown, opts: CxErrorOptions = {}): CxError {
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  const text = e instanceof Error ? e.message.replace(/^[A-Z]+: /, '') : String(e);
  return new CxError('io', `${what} ${file}: ${errno ? errnoText(errno) : text}`, {
    ...opts, path: file, reason: errno ?? opts.reason, cause: e,
  });
}

function errnoText(code: string): string {
  switch (code) {
    case 'ENOENT': return 'No such file or directory';
    case 'EACCES': return 'Permission denied';
    case 'EPERM': return 'Operation not permitted';
    case 'ENOTDIR': return 'Not a directory';
    case 'EISDIR': return 'Is a directory';
    case 'ENOSPC': return 'No space left on device';
    case 'EROFS': return 'Read-only file system';
    case 'EEXIST': return 'File exists';
    default: return code;
  }
}
