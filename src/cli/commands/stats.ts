/** --show-stats and --zero-stats (ccache style). */
import { readConfig } from '../../cache/config.js';
import { foldStats, summarize, zeroStats, type StatsSummary } from '../../cache/stats.js';
import type { Context } from '../context.js';
import { formatBytes, formatTime, keyValues, printJson, table } from '../output.js';

/** Row labels of the cold reasons, for every CX_OUTCOME_* but HIT and MISS (a unit test checks none is missing). */
export const LABELS: Record<string, string> = {
  BYPASS_DISABLED: 'CACHED_EXEC_DISABLE set',
  BYPASS_LOADER_ENV: 'loader variables (LD_*, ...)',
  BYPASS_SECURE: 'privileged program',
  BYPASS_NO_CACHE_DIR: 'no cache directory',
  FAIL_IMAGE_IO: 'image unreadable',
  FAIL_HEADER: 'bad image header',
  FAIL_OWNER: 'image owner or mode',
  FAIL_CHECKSUM: 'image checksum',
  FAIL_TRUNCATED: 'image truncated',
  FAIL_KEY: 'key mismatch',
  FAIL_STALE_FILE: 'library/file changed',
  FAIL_NEGATIVE_DEP: 'probed path appeared',
  FAIL_VDSO: 'vdso move failed',
  FAIL_COLLISION: 'address collision',
  FAIL_MAP: 'mapping failed',
  FAIL_SLOT: 'slot patch failed',
  FAIL_KERNEL_STATE: 'kernel state refused',
  FAIL_RESUME: 'post-init resume state differs',
  BYPASS_UNTRUSTED_DIR: 'cache dir not yours or unsafe (nothing written)',
  FAIL_EXE: 'reads /proc/self/exe (no capability)',
  BYPASS_STACK_LIMIT: 'stack limit too small to restore',
  FAIL_IDENTITY: "image bound to another user's identity",
  FAIL_ENV: 'taken for another environment',
  FAIL_ARCH: 'image for another architecture',
  FAIL_PAGE_SIZE: 'image for another page size',
  FAIL_CPU: 'image for a CPU with other features',
  FAIL_LIMITS: 'taken with other resource limits',
  FAIL_ADAPTER: 'restored, then the adapter ran it cold',
};

/** Snapshot refusals in plain words (the code stays in --json). */
const REFUSALS: Record<string, string> = {
  'too-new': 'too-new: a dependency changed just before (retried)',
  'future-timestamp': 'future-timestamp: a dependency dated ahead',
  'side-effects': 'side-effects: the init changed files, sockets or processes',
};

export interface ShowStatsJson extends StatsSummary {
  cacheDir: string;
  images: { count: number; bytes: number };
  limits: { maxSize: number; maxEntries: number };
  queued: number;
  refusedKeys: number;
}

export function collectStats(ctx: Context): ShowStatsJson {
  const store = ctx.store();
  const state = foldStats(store);
  const images = store.listImages();
  return {
    cacheDir: store.dir,
    ...summarize(state.counters),
    images: { count: images.length, bytes: images.reduce((a, i) => a + i.size, 0) },
    limits: readConfig(store.dir),
    queued: store.listQueue().length,
    refusedKeys: store.listRefused().length,
  };
}

const pct = (n: number, of: number): string => (of ? `${((100 * n) / of).toFixed(1)} %` : '');

export function statsText(s: ShowStatsJson): string[] {
  const rows: string[][] = [];
  const row = (label: string, n: number | string, extra = ''): void => {
    rows.push([label, String(n), extra]);
  };
  row('Runs', s.runs);
  row('  Hits (restored)', s.hits, pct(s.hits, s.runs));
  row('  Misses (no image)', s.misses, pct(s.misses, s.runs));
  row('  Bypassed (cold by rule)', s.bypassed, pct(s.bypassed, s.runs));
  for (const [n, v] of Object.entries(s.outcomes)) if (n.startsWith('BYPASS_') && v) row(`    ${LABELS[n] ?? n}`, v);
  row('  Cold fallbacks', s.fallbacks, pct(s.fallbacks, s.runs));
  for (const [n, v] of Object.entries(s.outcomes)) {
    if (v && n !== 'HIT' && n !== 'MISS' && !n.startsWith('BYPASS_')) row(`    ${LABELS[n] ?? n}`, v);
  }
  row('Snapshots taken', s.snapshots.taken);
  row('Snapshots refused', s.snapshots.refused);
  for (const [n, v] of Object.entries(s.snapshots.refusals)) row(`  ${REFUSALS[n] ?? n}`, v);
  row('Evictions', s.evictions);
  row('Invalidations', s.invalidations.total);
  for (const [n, v] of Object.entries(s.invalidations.reasons)) row(`  ${n}`, v);
  if (s.cleared) row('Removed by --clear', s.cleared);
  row('Images', s.images.count, s.limits.maxEntries ? `limit ${s.limits.maxEntries}` : 'no limit');
  row('Cache size', formatBytes(s.images.bytes), s.limits.maxSize ? `limit ${formatBytes(s.limits.maxSize)}` : 'no limit');
  if (s.queued) row('Queued for snapshot', s.queued);
  if (s.refusedKeys) row('Programs refused', s.refusedKeys);
  if (s.corruptRecords) row('Damaged log records', s.corruptRecords);
  const labelWidth = Math.max(...rows.map((r) => (r[0] as string).length));
  return [
    ...keyValues([['Cache directory', s.cacheDir], ['Stats since', formatTime(s.since)]]).map((l) => l.replace(/^(\S+(?: \S+)*)( +)/, (_m, a: string) => a.padEnd(labelWidth + 2))),
    ...table(rows),
  ];
}

export function showStats(ctx: Context): number {
  const s = collectStats(ctx);
  if (ctx.json) printJson(ctx.out, s);
  else ctx.out.line(statsText(s).join('\n'));
  return 0;
}

export function zeroStatsCommand(ctx: Context): number {
  const state = zeroStats(ctx.store());
  if (ctx.json) printJson(ctx.out, { zeroed: true, since: state.counters.since });
  else ctx.out.line('Statistics zeroed');
  return 0;
}
