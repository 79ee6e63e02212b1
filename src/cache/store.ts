/**
 * The per-user cache directory, as the TypeScript side sees and changes it.
 *
 *   <dir>                     0700, owned by the user (checked; fixed when ours)
 *     images/<key16>.img      images, 0600, written by temp file + rename
 *     images/.<name>.<pid>.<ms>.tmp   a writer's temp file (a killed writer's is removed by --cleanup)
 *     stats/runs.log          one 32-byte record per launcher run (native, O_APPEND)
 *     stats/events.log        one JSON line per TS-side event (snapshot, refusal, eviction, ...)
 *     stats/counters.json     the logs folded into totals (see stats.ts)
 *     queue/<key16>           pending background snapshots (native, or writeQueueEntry): see QueueEntry
 *     queue/.warmer.lock      flock held by the running background warmer
 *     retake/<key16>          the background warmer's per-key record: mtime = its last re-take of the key
 *                             (the launcher queues no other before CACHED_EXEC_RETAKE_SECONDS), lines = the key's variant images
 *     refused/<key16>         the snapshotter refused this key: "reason\ndetail\n"
 *     locks/<name>.lock       TS lock files (lock.ts): one snapshot per key, stats folding
 *     config.json             bounds (config.ts)
 *
 * The launcher uses the directory only when its path is absolute and it is a
 * real directory (not a symlink) owned by the user and not group/other
 * writable, and reads images only when they are regular files owned by the
 * user and not group/other writable; this module creates nothing else, and
 * refuses to write into a directory the launcher would not trust.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CxError, ioError } from '../common/errors.js';
import { parseImage, problemWithData, writeFileAtomic, type ImageKey, type ImageLimit, type ParsedImage } from '../image/format.js';
import { HEADER, sizeOf } from '../image/schema.js';
import { decodeStruct } from '../image/codec.js';
import { IMAGE_NAME_RE, cacheDir, cacheDirOrigin, keyHash } from './key.js';

export type SubDir = 'images' | 'stats' | 'queue' | 'refused' | 'locks' | 'retake';

export interface ImageEntry {
  /** Key hash: 16 hex digits. */
  hash: string;
  path: string;
  size: number;
  /** When the image was written (file mtime). */
  mtimeMs: number;
  uid: number;
  mode: number;
}

/**
 * A pending snapshot, queue/<key16> (the primary key: a re-take decides itself
 * whether the new image replaces the primary or becomes a variant):
 *
 *   PATH-OF-PROGRAM \n PATH \n
 *   [after-init \t SPEC \n]   a post-init image
 *   [rotate \n]               an image exists but is past its age limit: replace it
 *   [retake \n]               a run fell back cold from an image that went stale or was taken for
 *                             another environment or other limits: the warmer notes the time (retake/<key16>)
 *   [limit \t R \t SOFT \t HARD \n ...] resource limits of the run (RLIMIT_STACK, and those an
 *                             image it fell back from had read): the snapshot starts with them
 *   [env \n NAME=value \0 ...] the caller's environment, to the end of the file: the snapshot
 *                             runs in it, so the image serves that caller (absent: the warmer's own)
 *
 * Written to a temp name and linked into place, so a reader never sees half of one.
 */
export interface QueueEntry {
  hash: string;
  path: string;
  exePath: string;
  pathEnv: string;
  rotate: boolean;
  retake: boolean;
  mtimeMs: number;
  /** Post-init images: the key's init spec (a line "after-init\t<spec>"). */
  initSpec?: string;
  /** The environment to snapshot in. */
  env?: string[];
  /** Resource limits the snapshot starts with (absent: the warmer's own). */
  limits?: ImageLimit[];
}

export type NewQueueEntry = Pick<QueueEntry, 'exePath' | 'pathEnv'> & Partial<Pick<QueueEntry, 'rotate' | 'retake' | 'initSpec' | 'env' | 'limits'>>;

/** The bytes of a queue entry (the launcher writes the same: src/restore/record.c). */
export function queueEntryBytes(q: NewQueueEntry): Buffer {
  let head = `${q.exePath}\n${q.pathEnv}\n`;
  if (q.initSpec) head += `after-init\t${q.initSpec}\n`;
  if (q.rotate) head += 'rotate\n';
  if (q.retake) head += 'retake\n';
  for (const l of q.limits ?? []) head += `limit\t${l.resource}\t${l.soft}\t${l.hard}\n`;
  if (!q.env) return Buffer.from(head, 'utf8');
  return Buffer.concat([Buffer.from(`${head}env\n`, 'utf8'), ...q.env.map((e) => Buffer.from(`${e}\0`, 'utf8'))]);
}

/** Parses a queue entry's bytes (null when it has no program line). */
export function parseQueueEntry(data: Buffer): Omit<QueueEntry, 'hash' | 'path' | 'mtimeMs'> | null {
  const lines: string[] = [];
  let at = 0;
  let env: string[] | undefined;
  while (at < data.length) {
    const nl = data.indexOf(0x0a, at);
    const line = data.toString('utf8', at, nl < 0 ? data.length : nl);
    at = nl < 0 ? data.length : nl + 1;
    if (lines.length >= 2 && line === 'env') {
      const text = data.toString('utf8', at);
      env = text ? text.replace(/\0$/, '').split('\0').filter((e) => e.includes('=')) : [];
      break;
    }
    lines.push(line);
  }
  const [exePath = '', pathEnv = '', ...rest] = lines;
  if (!exePath) return null;
  const spec = rest.find((l) => l.startsWith('after-init\t'));
  const limits = rest.map(parseLimitLine).filter((l): l is ImageLimit => l !== null);
  return {
    exePath, pathEnv, rotate: rest.includes('rotate'), retake: rest.includes('retake'),
    ...(spec ? { initSpec: spec.slice('after-init\t'.length) } : {}), ...(env ? { env } : {}),
    ...(limits.length ? { limits } : {}),
  };
}

/** "limit\tR\tSOFT\tHARD" (decimal; R < 16), or null for any other or malformed line. */
function parseLimitLine(line: string): ImageLimit | null {
  const m = /^limit\t(\d{1,2})\t(\d{1,20})\t(\d{1,20})$/.exec(line);
  if (!m) return null;
  const [resource, soft, hard] = [Number(m[1]), BigInt(m[2] as string), BigInt(m[3] as string)];
  const max = 0xffff_ffff_ffff_ffffn;
  return resource < 16 && soft <= max && hard <= max ? { resource, soft, hard } : null;
}

export interface RefusedEntry {
  hash: string;
  path: string;
  reason: string;
  detail: string;
  mtimeMs: number;
}

export interface TempEntry {
  path: string;
  size: number;
  mtimeMs: number;
  /** pid of the writer, from the name, if it has one. */
  pid: number | null;
}

export interface DirState {
  dir: string;
  exists: boolean;
  /** Why the launcher would not use this directory, or null. */
  problem: string | null;
}

const euidNow = (): number => (process.geteuid ? process.geteuid() : 0);

export class Store {
  readonly dir: string;
  /** The owner images and directories must have. */
  readonly euid: number;
  /**
   * A shared, read-only layer (CACHED_EXEC_SYSTEM_DIR): root-owned, directories
   * 0755 and images 0644 so every user's launcher can read them, except
   * identity-bound images (0600: only root may even open them); still never
   * writable by group or others.
   */
  readonly shared: boolean;

  constructor(dir: string, euid: number = euidNow(), opts: { shared?: boolean } = {}) {
    this.dir = dir;
    this.euid = euid;
    this.shared = opts.shared ?? false;
  }

  private get dirMode(): number {
    return this.shared ? 0o755 : 0o700;
  }

  /** Images others may read: only shared ones that do not depend on who took them. */
  private fileMode(identityBound: boolean): number {
    return this.shared && !identityBound ? 0o644 : 0o600;
  }

  /** The user's cache, by the same rule as the launcher (CACHED_EXEC_DIR, XDG_CACHE_HOME, HOME). */
  static forEnv(env: NodeJS.ProcessEnv = process.env): Store {
    return new Store(cacheDir(env));
  }

  /**
   * The user's cache for an admin command: forEnv(), checked first with
   * assertUsable() so that a cache directory the launcher cannot use is an
   * error, not an empty cache.
   */
  static checkedForEnv(env: NodeJS.ProcessEnv = process.env): Store {
    const { dir, from } = cacheDirOrigin(env);
    const store = new Store(dir);
    store.assertUsable(from);
    return store;
  }

  /**
   * Throws CxError('cache-dir') when the launcher would not use this
   * directory (src/restore/cachedir.c: cx_open_trusted_dir): a relative path
   * (each run happens in another cwd), a symlink, something that is not a
   * directory, a directory owned by someone else or writable by group or
   * others. Each run would be cold, so an admin command says so instead. A directory that does not exist yet is
   * fine (it is an empty cache, created on the first write). `from` names the
   * setting that chose the directory.
   */
  assertUsable(from: string): void {
    // "CACHED_EXEC_DIR=x is ..." when the variable names the directory itself, else "the cache directory x (from HOME=y) is ...".
    const what = from.endsWith(`=${this.dir}`) ? from : `the cache directory ${this.dir} (from ${from})`;
    if (!path.isAbsolute(this.dir)) {
      throw new CxError('cache-dir', `${what} is a relative path: set an absolute one ` +
        '(the launcher runs every program cold with a relative cache directory)', { path: this.dir, reason: 'relative' });
    }
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code === 'ENOTDIR') {
        throw new CxError('cache-dir', `${what} cannot be a directory: a part of its path is a file`,
          { path: this.dir, reason: 'not-a-directory' });
      }
      throw ioError('cannot use the cache directory', this.dir, e);
    }
    if (st.isSymbolicLink()) {
      throw new CxError('cache-dir', `${what} is a symbolic link: the launcher does not follow one there (every run would be ` +
        `cold): use the directory it points to (${safeRealpath(this.dir)})`, { path: this.dir, reason: 'symlink' });
    }
    if (!st.isDirectory()) {
      throw new CxError('cache-dir', `${what} is not a directory: ` +
        'set CACHED_EXEC_DIR to a directory (or to a path that does not exist yet)', { path: this.dir, reason: 'not-a-directory' });
    }
    if (st.uid !== this.euid) {
      throw new CxError('cache-dir', `${what} is owned by uid ${st.uid}, not by you ` +
        `(uid ${this.euid}): the launcher does not use it`, { path: this.dir, reason: 'owner' });
    }
    if (st.mode & 0o022) {
      throw new CxError('cache-dir', `${what} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): ` +
        `the launcher does not use it; make it private: chmod ${this.dirMode.toString(8)} ${this.dir}`, { path: this.dir, reason: 'mode' });
    }
  }

  sub(name: SubDir): string {
    return path.join(this.dir, name);
  }

  imagePath(key: ImageKey): string {
    return this.imagePathForHash(keyHash(key));
  }

  imagePathForHash(hash: string): string {
    return path.join(this.dir, 'images', `${hash}.img`);
  }

  // -------------------------------------------------------------------------
  // Directory

  /** Inspects the directory without creating anything (the launcher's rule: cachedir.c). */
  state(): DirState {
    if (!path.isAbsolute(this.dir)) return { dir: this.dir, exists: false, problem: 'not an absolute path' };
    let st: fs.Stats;
    try {
      st = fs.lstatSync(this.dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { dir: this.dir, exists: false, problem: code === 'ENOENT' ? null : `cannot stat: ${code ?? String(e)}` };
    }
    return { dir: this.dir, exists: true, problem: dirProblem(st, this.euid) };
  }

  /**
   * Creates the directory (and `subs`) with mode 0700 and checks ownership.
   * A directory of ours with a looser mode is tightened to 0700; one owned by
   * someone else, or not a directory, is an error (never written into).
   */
  ensure(...subs: SubDir[]): void {
    if (!path.isAbsolute(this.dir)) {
      throw new CxError('cache-dir', `${this.dir} is not an absolute path: the launcher would not use it`, { path: this.dir, reason: 'relative' });
    }
    this.ensureDir(this.dir, true);
    for (const s of subs) this.ensureDir(this.sub(s), false);
  }

  private ensureDir(dir: string, parents: boolean): void {
    try {
      fs.mkdirSync(dir, { recursive: parents, mode: this.dirMode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError('cannot create cache directory', dir, e);
    }
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch (e) {
      throw ioError('cannot stat cache directory', dir, e);
    }
    // The launcher opens it with O_NOFOLLOW: a symlink (whoever made it) is never followed.
    if (st.isSymbolicLink()) {
      throw new CxError('cache-dir', `${dir} is a symlink: the launcher does not follow it (point CACHED_EXEC_DIR at the real directory)`,
        { path: dir, reason: 'symlink' });
    }
    if (!st.isDirectory()) throw new CxError('cache-dir', `${dir} is not a directory`, { path: dir });
    if (st.uid !== this.euid) {
      throw new CxError('cache-dir', `${dir} is owned by uid ${st.uid}, not by you (uid ${this.euid}): not using it`,
        { path: dir, reason: 'owner' });
    }
    if ((st.mode & 0o777) !== this.dirMode) {
      try {
        fs.chmodSync(dir, this.dirMode);
      } catch (e) {
        throw ioError('cannot make cache directory private', dir, e);
      }
    }
  }

  // -------------------------------------------------------------------------
  // Images

  /**
   * Writes an image atomically (temp file + fsync + rename), mode 0600 (0644
   * when shared and not identity-bound: an image that read what others cannot
   * read, or asked who runs it, is never readable by others).
   */
  writeImage(key: ImageKey, data: Buffer, opts: { identityBound?: boolean } = {}): { path: string; size: number } {
    this.ensure('images');
    const file = this.imagePath(key);
    const mode = this.fileMode(!!opts.identityBound);
    try {
      writeFileAtomic(file, data, mode);
      // The umask may have taken bits a shared layer needs (readers are other users).
      if (this.shared) fs.chmodSync(file, mode);
    } catch (e) {
      throw ioError('cannot write image', file, e);
    }
    return { path: file, size: data.length };
  }

  /** All image files (names that are key hashes), in no particular order. */
  listImages(): ImageEntry[] {
    const dir = this.sub('images');
    const out: ImageEntry[] = [];
    for (const name of readdirOrEmpty(dir)) {
      const m = IMAGE_NAME_RE.exec(name);
      if (!m) continue;
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        if (!st.isFile()) continue;
        out.push({ hash: m[1] as string, path: p, size: st.size, mtimeMs: st.mtimeMs, uid: st.uid, mode: st.mode });
      } catch { /* vanished while listing */ }
    }
    return out;
  }

  /** Removes one image (and the pages learned on it: src/restore/pages.c); false when it was not there. */
  removeImage(hash: string): boolean {
    fs.rmSync(path.join(this.sub('images'), `${hash}.pages`), { force: true });
    try {
      fs.unlinkSync(this.imagePathForHash(hash));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw ioError('cannot remove image', this.imagePathForHash(hash), e);
    }
  }

  /** Temp files left by image writers (writeFileAtomic) in images/. */
  listTemp(): TempEntry[] {
    const dir = this.sub('images');
    const out: TempEntry[] = [];
    for (const name of readdirOrEmpty(dir)) {
      if (!name.startsWith('.') || !name.endsWith('.tmp')) continue;
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        const pid = /\.(\d+)\.\d+\.tmp$/.exec(name)?.[1];
        out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs, pid: pid ? Number(pid) : null });
      } catch { /* vanished */ }
    }
    return out;
  }

  // -------------------------------------------------------------------------
  // Queue (written by the launcher) and refusals

  listQueue(): QueueEntry[] {
    const dir = this.sub('queue');
    const out: QueueEntry[] = [];
    for (const name of readdirOrEmpty(dir)) {
      if (!/^[0-9a-f]{16}$/.test(name)) continue;
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        if (!st.isFile()) continue;
        const q = parseQueueEntry(readRegular(p));
        if (q) out.push({ hash: name, path: p, mtimeMs: st.mtimeMs, ...q });
      } catch { /* vanished */ }
    }
    return out.sort((a, b) => a.mtimeMs - b.mtimeMs);
  }

  /** Temp files of queue writers (the launcher's and queue()'s), for --cleanup. */
  listQueueTemp(): TempEntry[] {
    const dir = this.sub('queue');
    const out: TempEntry[] = [];
    for (const name of readdirOrEmpty(dir)) {
      if (!/^\.[0-9a-f]{16}\..*\.tmp$/.test(name)) continue;
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs, pid: null });
      } catch { /* vanished */ }
    }
    return out;
  }

  removeQueued(hash: string): void {
    fs.rmSync(path.join(this.sub('queue'), hash), { force: true });
  }

  /** Queues a snapshot of `hash` unless one is queued already (false then). */
  queue(hash: string, q: NewQueueEntry): boolean {
    this.ensure('queue');
    const final = path.join(this.sub('queue'), hash);
    const tmp = path.join(this.sub('queue'), `.${hash}.${process.pid}.${Date.now()}.tmp`);
    fs.writeFileSync(tmp, queueEntryBytes(q), { mode: 0o600, flag: 'wx' });
    try {
      fs.linkSync(tmp, final); // fails when queued already: the first request stands
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  // -------------------------------------------------------------------------
  // Re-takes and variants (retake/<key16>, kept by the warmer)

  private retakePath(primary: string): string {
    return path.join(this.sub('retake'), primary);
  }

  /** The variant images recorded for a primary key. */
  variants(primary: string): string[] {
    try {
      return fs.readFileSync(this.retakePath(primary), 'utf8').split('\n').filter((l) => /^[0-9a-f]{16}$/.test(l));
    } catch {
      return [];
    }
  }

  /** Keys with a re-take record, and the record's mtime. */
  listRetake(): { hash: string; mtimeMs: number }[] {
    const out: { hash: string; mtimeMs: number }[] = [];
    for (const name of readdirOrEmpty(this.sub('retake'))) {
      if (!/^[0-9a-f]{16}$/.test(name)) continue;
      try {
        out.push({ hash: name, mtimeMs: fs.lstatSync(this.retakePath(name)).mtimeMs });
      } catch { /* vanished */ }
    }
    return out;
  }

  removeRetake(primary: string): void {
    fs.rmSync(this.retakePath(primary), { force: true });
  }

  /** Rewrites the record of a key's variants (its mtime moves: a re-take just happened when `retaken`). */
  setVariants(primary: string, variants: string[], retaken: boolean): void {
    this.ensure('retake');
    const p = this.retakePath(primary);
    let mtime: Date | undefined;
    if (!retaken) {
      try {
        mtime = fs.statSync(p).mtime;
      } catch {
        mtime = new Date(0); // no re-take yet: nothing to rate-limit
      }
    }
    writeFileAtomic(p, Buffer.from(variants.map((v) => `${v}\n`).join('')), 0o600);
    if (mtime) fs.utimesSync(p, mtime, mtime);
  }

  /** Remembers a refusal so the launcher stops queueing this key (until --cleanup clears it). */
  markRefused(hash: string, reason: string, detail: string): void {
    this.ensure('refused');
    const p = path.join(this.sub('refused'), hash);
    writeFileAtomic(p, Buffer.from(`${reason}\n${detail.replace(/\n/g, ' ')}\n`), 0o600);
  }

  refused(hash: string): RefusedEntry | null {
    const p = path.join(this.sub('refused'), hash);
    try {
      const st = fs.lstatSync(p);
      const [reason = '', detail = ''] = readRegular(p).toString('utf8').split('\n');
      return { hash, path: p, reason, detail, mtimeMs: st.mtimeMs };
    } catch {
      return null;
    }
  }

  listRefused(): RefusedEntry[] {
    return readdirOrEmpty(this.sub('refused'))
      .filter((n) => /^[0-9a-f]{16}$/.test(n))
      .map((n) => this.refused(n))
      .filter((r): r is RefusedEntry => r !== null);
  }

  clearRefused(hash: string): void {
    fs.rmSync(path.join(this.sub('refused'), hash), { force: true });
  }

  lockPath(name: string): string {
    return path.join(this.sub('locks'), `${name}.lock`);
  }
}

function safeRealpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return 'a missing target';
  }
}

/** Why the launcher would refuse a cache directory with this lstat, or null. */
export function dirProblem(st: fs.Stats, euid: number): string | null {
  if (st.isSymbolicLink()) return 'a symlink (the launcher does not follow it)';
  if (!st.isDirectory()) return 'not a directory';
  if (st.uid !== euid) return `owned by uid ${st.uid}, not ${euid}`;
  if (st.mode & 0o022) return `writable by group or others (mode ${(st.mode & 0o777).toString(8)})`;
  return null;
}

/**
 * Opens a file of the cache the way the launcher does (cachedir.c:
 * cx_open_below): never through a last symlink, never blocking on a FIFO or
 * device planted there, and only a regular file. Throws ENOENT, ELOOP, or
 * EINVAL (not a regular file) as a NodeJS.ErrnoException.
 */
export function openRegular(file: string, flags: number = fs.constants.O_RDONLY, mode = 0o600): number {
  const fd = fs.openSync(file, flags | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, mode);
  let regular = false;
  try {
    regular = fs.fstatSync(fd).isFile();
  } finally {
    if (!regular) fs.closeSync(fd);
  }
  if (!regular) throw Object.assign(new Error(`${file}: not a regular file`), { code: 'EINVAL', path: file });
  return fd;
}

/** The whole of a regular file of the cache (openRegular's rules). */
export function readRegular(file: string): Buffer {
  const fd = openRegular(file);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw ioError('cannot list', dir, e);
  }
}

/**
 * Whether an image's region data still matches the checksum its metadata
 * recorded (the INTEGRITY section; images without one are not checked).
 * Reads the data in chunks: a python image is tens of megabytes.
 */
export function verifyImageData(file: string, parsed: ParsedImage): boolean {
  const integrity = parsed.model.integrity;
  if (!integrity) return true;
  const fd = openRegular(file);
  try {
    const parts: Buffer[] = [];
    let off = Number(parsed.header.data_offset);
    for (;;) {
      const chunk = Buffer.alloc(1 << 20);
      const n = fs.readSync(fd, chunk, 0, chunk.length, off);
      if (n <= 0) break;
      parts.push(n === chunk.length ? chunk : chunk.subarray(0, n));
      off += n;
    }
    return !problemWithData(integrity, parts);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads and parses only an image's metadata (header, section table, sections),
 * not its page data: enough for --list, --explain and --cleanup on big images.
 * Throws CxError('bad-image') for a file that is not an image.
 */
export function readImageMeta(file: string): { parsed: ParsedImage; fileSize: number } {
  let fd: number;
  try {
    fd = openRegular(file);
  } catch (e) {
    throw ioError('cannot open', file, e);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    const head = Buffer.alloc(sizeOf(HEADER));
    if (fs.readSync(fd, head, 0, head.length, 0) < head.length) {
      throw new CxError('bad-image', `${file}: too short to be an image`, { path: file, reason: 'truncated' });
    }
    const h = decodeStruct(HEADER, head, 0);
    const metaSize = Number(h.meta_size);
    if (!Number.isSafeInteger(metaSize) || metaSize < head.length || metaSize > fileSize || metaSize > 256 * 1024 * 1024) {
      // Let parseImage report a bad magic first; else it is a truncated or corrupt header.
      try {
        parseImage(head);
      } catch (e) {
        throw new CxError('bad-image', `${file}: ${(e as Error).message}`, { path: file, reason: 'header', cause: e });
      }
      throw new CxError('bad-image', `${file}: metadata size ${metaSize} does not fit the file (${fileSize} bytes)`,
        { path: file, reason: 'truncated' });
    }
    const meta = Buffer.alloc(metaSize);
    fs.readSync(fd, meta, 0, metaSize, 0);
    try {
      const parsed = parseImage(meta);
      // parseImage compared file_size with the metadata length; compare with the file instead.
      parsed.problems = parsed.problems.filter((p) => !p.startsWith('file size '));
      if (h.file_size !== BigInt(fileSize)) parsed.problems.push(`file size ${fileSize} != recorded ${h.file_size}`);
      return { parsed, fileSize };
    } catch (e) {
      if (e instanceof CxError) throw e;
      throw new CxError('bad-image', `${file}: ${(e as Error).message}`, { path: file, reason: 'header', cause: e });
    }
  } finally {
    fs.closeSync(fd);
  }
}
