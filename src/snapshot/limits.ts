/**
 * The resource limits an image records (its LIMITS section): what the
 * program read before the image was taken, which the launcher compares with
 * the restoring process's own (src/restore/limits.c).
 */
import { describeLimit, type ImageFile, type ImageLimit } from '../image/format.js';
import { FileKind } from '../image/schema.js';
import { mayCreateThreads } from './elfsym.js';
import { SnapshotRefusal } from './refusal.js';
import type { LoaderState } from './trace.js';

const RLIMIT_STACK = 3;

/**
 * The image's LIMITS: each resource the program read, as first read (it could
 * not set one: the tracers refuse that), in resource order. The launcher
 * compares them with its own (limits.c).
 *
 * One read is left out when `threadsUseDefault` is false: the C library's
 * own, the first RLIMIT_STACK read and before the entry point (glibc's early
 * init, before any constructor), whose only product is the default stack size
 * of threads created without one. A program none of whose mapped files can
 * create a thread or load code that could (elfsym.ts mayCreateThreads) never
 * uses it, so other stack limits restore it exactly: gcc raises the limit for
 * the programs it runs (as, ld), and they must not run cold for it. Any
 * other read, of any limit, is kept.
 */
export function limitsOf(loader: LoaderState, threadsUseDefault = true): ImageLimit[] {
  const seen = new Map<number, ImageLimit>();
  const first = loader.limitsRead[0];
  const libcRead = !threadsUseDefault && first && first.resource === RLIMIT_STACK && !first.afterEntry ? first : undefined;
  for (const l of loader.limitsRead) {
    if (l === libcRead) continue;
    if (l.resource < 0 || l.resource >= RLIMIT_COUNT) throw new SnapshotRefusal('internal', `read of unknown resource limit ${l.resource}`);
    if (!seen.has(l.resource)) seen.set(l.resource, { resource: l.resource, soft: l.cur, hard: l.max });
  }
  return [...seen.values()].sort((x, y) => x.resource - y.resource);
}
/** The --warm note for an image's LIMITS, or null when it has none. */
export function describeLimits(limits: readonly ImageLimit[], when: string): string | null {
  if (!limits.length) return null;
  return `resource limits read ${when} (soft/hard): ${limits.map(describeLimit).join(', ')}: the image serves runs with the same limits (others run cold)`;
}

/** RLIM_NLIMITS (the launcher's CX_RLIMIT_COUNT). */
const RLIMIT_COUNT = 16;

/**
 * The LIMITS of an image whose run read `loader.limitsRead`, with `files`
 * mapped. glibc's own stack-limit read is left out when no mapped file can
 * start a thread (limitsOf); with musl (the loader is the C library) nothing
 * is, since musl reads no limit itself: a read is the program's.
 */
export function imageLimits(loader: LoaderState, files: readonly ImageFile[], loaderIsLibc: boolean): ImageLimit[] {
  if (!loader.limitsRead.length) return [];
  const mapped = files.filter((f) => f.kind === FileKind.MAPPED).map((f) => f.path);
  return limitsOf(loader, loaderIsLibc || mayCreateThreads(mapped));
}
