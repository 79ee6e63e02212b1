/**
 * Statistics: two append-only logs folded into counters by the CLI.
 *
 *  - stats/runs.log, written by the native launcher: one 32-byte
 *    `cx_stat_record` (schema.ts STAT_RECORD) per run with a single O_APPEND
 *    write, so concurrent launchers never interleave or lose records and the
 *    hot path needs no lock and no read.
 *  - stats/events.log, written here: one JSON line per TypeScript-side event
 *    (snapshot taken or refused, eviction, invalidation, clear), also one
 *    O_APPEND write each.
 *
 * Folding reads each log from where the last fold stopped (remembered per
 * file by inode and byte offset in stats/counters.json, written atomically
 * under a lock) and adds what it finds to the totals. Nothing is ever
 * re-counted or skipped: a crashed fold simply left the old counters.json. A
 * log past ROTATE_BYTES is renamed aside after it is folded; a writer that
 * opened it just before the rename still appends to the renamed file, which is
 * folded again on later runs and deleted only once it has been quiet for a
 * minute. See docs/stats.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeStruct } from '../image/codec.js';
import { writeFileAtomic } from '../image/format.js';
import { Outcome, STAT_RECORD, sizeOf } from '../image/schema.js';
import { outcomeName } from './check.js';
import { withLock } from './lock.js';
import { openRegular, type Store } from './store.js';

export const RECORD_SIZE = sizeOf(STAT_RECORD);
const STAT_MAGIC = 0x31545343; // CX_STAT_MAGIC, "CST1"
export const ROTATE_BYTES = 8 * 1024 * 1024;
const QUIET_MS = 60_000;

export interface RunRecord {
  outcome: string; // CX_OUTCOME_* name
  key: string; // 16 hex digits; '0000000000000000' when the run never computed one
  timeMs: number;
  pid: number;
}

/** Decodes whole records from a runs.log chunk; `bad` counts records with a wrong magic. */
export function decodeRunRecords(buf: Buffer): { records: RunRecord[]; bad: number; used: number } {
  const records: RunRecord[] = [];
  let bad = 0;
  const whole = buf.length - (buf.length % RECORD_SIZE);
  for (let at = 0; at < whole; at += RECORD_SIZE) {
    const r = decodeStruct(STAT_RECORD, buf, at);
    if (Number(r.magic) !== STAT_MAGIC) {
      bad++;
      continue;
    }
    records.push({
      outcome: outcomeName(Number(r.outcome)),
      key: BigInt(r.key_hash ?? 0).toString(16).padStart(16, '0'),
      timeMs: Number(BigInt(r.time_ns ?? 0) / 1_000_000n),
      pid: Number(r.pid),
    });
  }
  return { records, bad, used: whole };
}

// ---------------------------------------------------------------------------
// Events (TypeScript side)

export type EventName =
  | 'snapshot' // an image was written
  | 'refused' // the snapshotter refused (reason = RefusalCode, or init-failed/init-output when the CLI ran the init to find out)
  | 'evicted' // removed to keep the cache within its bounds
  | 'invalidated' // removed because no run could use it any more (reason says why)
  | 'cleared'; // removed by --clear

export interface CacheEvent {
  /** Time in ms since the epoch. */
  t: number;
  e: EventName;
  key?: string;
  reason?: string;
  bytes?: number;
  ms?: number;
}

/** Appends one event line with a single O_APPEND write; never throws (statistics must not break commands). */
export function appendEvent(store: Store, ev: Omit<CacheEvent, 't'> & { t?: number }): void {
  const line = Buffer.from(`${JSON.stringify({ t: ev.t ?? Date.now(), ...ev })}\n`);
  try {
    store.ensure('stats');
    const fd = openRegular(path.join(store.sub('stats'), 'events.log'), fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT);
    try {
      fs.writeSync(fd, line);
    } finally {
      fs.closeSync(fd);
    }
  } catch { /* a read-only or full cache dir: the command's own result matters more */ }
}

function decodeEvents(buf: Buffer): { events: CacheEvent[]; used: number } {
  const end = buf.lastIndexOf(0x0a) + 1; // only whole lines
  const events: CacheEvent[] = [];
  for (const line of buf.toString('utf8', 0, end).split('\n')) {
    if (!line) continue;
    try {
      const ev = JSON.parse(line) as CacheEvent;
      if (ev && typeof ev.e === 'string') events.push(ev);
    } catch { /* a torn or foreign line: skip it */ }
  }
  return { events, used: end };
}

// ---------------------------------------------------------------------------
// Counters

export interface Counters {
  /** When counting started (creation or --zero-stats), ms since the epoch. */
  since: number;
  /** Launcher runs by CX_OUTCOME_* name. */
  outcomes: Record<string, number>;
  /** TypeScript-side events by name. */
  events: Record<string, number>;
  /** Snapshot refusals by RefusalCode. */
  refusals: Record<string, number>;
  /** Invalidations by reason. */
  invalidations: Record<string, number>;
  /** runs.log records with a bad magic (should stay 0). */
  corrupt: number;
}

/** Per-key use, for --list and LRU order. Survives --zero-stats. */
export interface Usage {
  uses: number;
  lastUse: number;
  misses: number;
  fallbacks: number;
}

interface LogPos {
  ino: number;
  offset: number;
}

export interface StatsState {
  version: 1;
  counters: Counters;
  usage: Record<string, Usage>;
  logs: Record<string, LogPos>;
}

const emptyCounters = (now = Date.now()): Counters =>
  ({ since: now, outcomes: {}, events: {}, refusals: {}, invalidations: {}, corrupt: 0 });

function statePath(store: Store): string {
  return path.join(store.sub('stats'), 'counters.json');
}

export function readState(store: Store): StatsState {
  try {
    const s = JSON.parse(fs.readFileSync(statePath(store), 'utf8')) as StatsState;
    if (s && s.version === 1 && s.counters && s.usage && s.logs) return s;
  } catch { /* none yet, or damaged: start over */ }
  return { version: 1, counters: emptyCounters(), usage: {}, logs: {} };
}

const bump = (o: Record<string, number>, k: string, by = 1): void => {
  o[k] = (o[k] ?? 0) + by;
};

function applyRun(s: StatsState, r: RunRecord): void {
  bump(s.counters.outcomes, r.outcome);
  // The adapter's record follows the same run's HIT (same pid, later in the log):
  // that run is a fallback, not a hit. A HIT cleared by --zero-stats stays uncounted.
  if (r.outcome === 'FAIL_ADAPTER' && (s.counters.outcomes.HIT ?? 0) > 0) bump(s.counters.outcomes, 'HIT', -1);
  if (/^0+$/.test(r.key)) return;
  const u = (s.usage[r.key] ??= { uses: 0, lastUse: 0, misses: 0, fallbacks: 0 });
  if (r.outcome === 'HIT') {
    u.uses++;
    u.lastUse = Math.max(u.lastUse, r.timeMs);
  } else if (r.outcome === 'MISS') {
    u.misses++;
  } else if (r.outcome.startsWith('FAIL_')) {
    u.fallbacks++;
  }
}

function applyEvent(s: StatsState, ev: CacheEvent): void {
  bump(s.counters.events, ev.e);
  if (ev.e === 'refused') bump(s.counters.refusals, ev.reason ?? 'unknown');
  if (ev.e === 'invalidated') bump(s.counters.invalidations, ev.reason ?? 'unknown');
  if ((ev.e === 'evicted' || ev.e === 'invalidated' || ev.e === 'cleared') && ev.key) delete s.usage[ev.key];
}

/** Log files in stats/: the live ones and any rotated ones ("<name>.<ms>.old"). */
function logFiles(dir: string): { name: string; kind: 'runs' | 'events'; live: boolean }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const out: { name: string; kind: 'runs' | 'events'; live: boolean }[] = [];
  for (const n of names.sort()) {
    const m = /^(runs|events)\.log(\.\d+\.old)?$/.exec(n);
    if (m) out.push({ name: n, kind: m[1] as 'runs' | 'events', live: !m[2] });
  }
  return out;
}

/** Reads the unread part of every log into `s`. Returns the files that can be deleted or rotated. */
function foldInto(s: StatsState, dir: string, now: number): { done: string[]; rotate: string[] } {
  const done: string[] = [];
  const rotate: string[] = [];
  const seen: Record<string, LogPos> = {};
  for (const lf of logFiles(dir)) {
    const p = path.join(dir, lf.name);
    let fd: number;
    try {
      fd = openRegular(p); // a FIFO planted as a log must not hang --show-stats
    } catch {
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      // The remembered position belongs to this inode, whatever the file is called now.
      const prev = Object.values(s.logs).find((l) => l.ino === st.ino);
      // A file shorter than the remembered offset is a new file on a reused inode: start over.
      let offset = prev && prev.offset <= st.size ? prev.offset : 0;
      const chunk = 1 << 20;
      while (offset < st.size) {
        const buf = Buffer.alloc(Math.min(chunk, st.size - offset));
        const n = fs.readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        const part = buf.subarray(0, n);
        let used: number;
        if (lf.kind === 'runs') {
          const d = decodeRunRecords(part);
          d.records.forEach((r) => applyRun(s, r));
          s.counters.corrupt += d.bad;
          used = d.used;
        } else {
          const d = decodeEvents(part);
          d.events.forEach((e) => applyEvent(s, e));
          used = d.used;
        }
        if (used === 0) break; // a partial record/line at the end: wait for the rest
        offset += used;
      }
      seen[lf.name] = { ino: st.ino, offset };
      if (!lf.live && offset >= st.size && now - st.mtimeMs > QUIET_MS) done.push(lf.name);
      if (lf.live && offset >= ROTATE_BYTES && offset >= st.size) rotate.push(lf.name);
    } finally {
      fs.closeSync(fd);
    }
  }
  s.logs = seen;
  return { done, rotate };
}

/**
 * Folds the logs into counters.json (under a lock) and returns the result.
 * With `save: false`, or when the directory cannot be written, it only
 * computes (nothing is lost: the next fold starts from the saved positions).
 */
export function foldStats(store: Store, opts: { save?: boolean; zero?: boolean } = {}): StatsState {
  const dir = store.sub('stats');
  const compute = (): StatsState => {
    const s = readState(store);
    const now = Date.now();
    const { done, rotate } = foldInto(s, dir, now);
    if (opts.zero) s.counters = emptyCounters(now);
    if (opts.save === false) return s;
    for (const name of rotate) {
      try {
        fs.renameSync(path.join(dir, name), path.join(dir, `${name}.${now}.old`));
        const pos = s.logs[name];
        if (pos) {
          delete s.logs[name];
          s.logs[`${name}.${now}.old`] = pos;
        }
      } catch { /* next time */ }
    }
    writeFileAtomic(statePath(store), Buffer.from(`${JSON.stringify(s)}\n`), 0o600);
    for (const name of done) {
      fs.rmSync(path.join(dir, name), { force: true });
      delete s.logs[name];
    }
    if (done.length) writeFileAtomic(statePath(store), Buffer.from(`${JSON.stringify(s)}\n`), 0o600);
    return s;
  };
  const computeOnly = (): StatsState => {
    const s = readState(store);
    foldInto(s, dir, Date.now());
    return s;
  };
  if (opts.save === false || (!opts.zero && !fs.existsSync(dir))) return computeOnly();
  try {
    store.ensure('stats', 'locks');
    return withLock(store.lockPath('stats'), compute, { timeoutMs: 5000, staleMs: 60_000 });
  } catch (e) {
    if (opts.zero) throw e;
    return computeOnly(); // read-only or full cache dir: show what is there without saving
  }
}

export const zeroStats = (store: Store): StatsState => foldStats(store, { zero: true });

// ---------------------------------------------------------------------------
// Summaries

const OUTCOME_NAMES = Object.keys(Outcome);

export interface StatsSummary {
  since: number;
  runs: number;
  hits: number;
  misses: number;
  bypassed: number;
  fallbacks: number;
  /** Every CX_OUTCOME_* name with its count (zeros included). */
  outcomes: Record<string, number>;
  snapshots: { taken: number; refused: number; refusals: Record<string, number> };
  evictions: number;
  invalidations: { total: number; reasons: Record<string, number> };
  cleared: number;
  corruptRecords: number;
}

export function summarize(c: Counters): StatsSummary {
  const outcomes: Record<string, number> = {};
  for (const n of OUTCOME_NAMES) outcomes[n] = c.outcomes[n] ?? 0;
  for (const [n, v] of Object.entries(c.outcomes)) if (!(n in outcomes)) outcomes[n] = v; // codes from a newer launcher
  const sum = (pred: (n: string) => boolean): number =>
    Object.entries(outcomes).filter(([n]) => pred(n)).reduce((a, [, v]) => a + v, 0);
  const hits = outcomes.HIT ?? 0;
  const misses = outcomes.MISS ?? 0;
  const bypassed = sum((n) => n.startsWith('BYPASS_'));
  const runs = sum(() => true);
  return {
    since: c.since,
    runs,
    hits,
    misses,
    bypassed,
    fallbacks: runs - hits - misses - bypassed,
    outcomes,
    snapshots: { taken: c.events.snapshot ?? 0, refused: c.events.refused ?? 0, refusals: { ...c.refusals } },
    evictions: c.events.evicted ?? 0,
    invalidations: { total: c.events.invalidated ?? 0, reasons: { ...c.invalidations } },
    cleared: c.events.cleared ?? 0,
    corruptRecords: c.corrupt,
  };
}
