/** --list, --clear, --cleanup, --max-size, --max-entries. */
import { describeInitSpec } from '../../resume/spec.js';
import { parseCount, parseSize, readConfig, writeConfig } from '../../cache/config.js';
import { cleanup as runCleanup, clearCache, enforceBounds, withUsage } from '../../cache/maintain.js';
import { foldStats } from '../../cache/stats.js';
import { readImageMeta } from '../../cache/store.js';
import { CxError } from '../../common/errors.js';
import type { Context } from '../context.js';
import { formatAge, formatBytes, printJson, table } from '../output.js';

export interface ListEntry {
  key: string;
  program: string | null;
  image: string;
  size: number;
  /** ms since the epoch; from the image header (snapshot time), else the file. */
  created: number;
  lastUsed: number;
  uses: number;
  regions: number | null;
  valid: boolean;
}

export function listEntries(ctx: Context): ListEntry[] {
  const store = ctx.store();
  const usage = foldStats(store).usage;
  return withUsage(store.listImages(), usage).map((im) => {
    let program: string | null = null;
    let created = im.mtimeMs;
    let regions: number | null = null;
    let valid = false;
    try {
      const { parsed } = readImageMeta(im.path);
      const k = parsed.model.key;
      program = k.initSpec ? `${k.exePath} [${describeInitSpec(k.initSpec)}]` : k.exePath;
      created = Number(parsed.model.createdNs / 1_000_000n) || im.mtimeMs;
      regions = parsed.model.regions.length;
      valid = parsed.problems.length === 0;
    } catch { /* listed as damaged */ }
    return { key: im.hash, program, image: im.path, size: im.size, created, lastUsed: im.lastUsed, uses: im.uses, regions, valid };
  }).sort((a, b) => b.lastUsed - a.lastUsed || a.key.localeCompare(b.key));
}

export function list(ctx: Context): number {
  const entries = listEntries(ctx);
  if (ctx.json) {
    printJson(ctx.out, { cacheDir: ctx.store().dir, images: entries });
    return 0;
  }
  if (!entries.length) {
    ctx.out.line(`no images in ${ctx.store().dir}`);
    return 0;
  }
  const now = Date.now();
  ctx.out.line(table(entries.map((e) => [
    e.program ?? '(damaged image)', formatBytes(e.size), formatAge(now - e.created), String(e.uses),
    e.uses ? `${formatAge(now - e.lastUsed)} ago` : 'never', e.key,
  ]), ['program', 'size', 'age', 'uses', 'last use', 'key']).join('\n'));
  const total = entries.reduce((a, e) => a + e.size, 0);
  ctx.out.line(`${entries.length} image(s), ${formatBytes(total)}`);
  return 0;
}

export function clear(ctx: Context): number {
  const rep = clearCache(ctx.store());
  if (ctx.json) printJson(ctx.out, rep);
  else ctx.out.line(`Removed ${rep.images} image(s) (${formatBytes(rep.bytes)}), ${rep.queued} queued snapshot(s), ${rep.refusals} refusal(s)`);
  return 0;
}

export function cleanup(ctx: Context): number {
  const store = ctx.store();
  if (!store.state().exists) {
    if (ctx.json) printJson(ctx.out, { cacheDir: store.dir, exists: false });
    else ctx.out.line(`nothing to clean: ${store.dir} does not exist`);
    return 0;
  }
  const dry = ctx.modifiers.has('--dry-run');
  const rep = runCleanup(store, { dryRun: dry });
  if (ctx.json) {
    printJson(ctx.out, { dryRun: dry, ...rep });
    return 0;
  }
  const verb = dry ? 'would remove' : 'removed';
  for (const i of rep.invalidated) ctx.out.line(`${verb} ${i.path}: ${i.reason}: ${i.detail}`);
  for (const e of rep.evicted) ctx.out.line(`${dry ? 'would evict' : 'evicted'} ${e.path} (least recently used)`);
  if (rep.tempRemoved.length) ctx.out.line(`${verb} ${rep.tempRemoved.length} temporary file(s) of interrupted writes`);
  if (rep.locksRecovered.length) ctx.out.line(`${verb} ${rep.locksRecovered.length} stale lock(s)`);
  if (rep.refusalsCleared.length) ctx.out.line(`${dry ? 'would forget' : 'forgot'} ${rep.refusalsCleared.length} refusal(s) older than a day (they will be tried again)`);
  ctx.out.line(`${rep.images} image(s), ${formatBytes(rep.bytes)} left; ${formatBytes(rep.bytesFreed)} freed`);
  return 0;
}

function setLimit(ctx: Context, field: 'maxSize' | 'maxEntries', value: number): number {
  const store = ctx.store();
  store.ensure();
  const cfg = { ...readConfig(store.dir), [field]: value };
  writeConfig(store.dir, cfg);
  const plan = enforceBounds(store, new Set(), cfg);
  if (ctx.json) {
    printJson(ctx.out, { ...cfg, evicted: plan.evict.map((e) => e.hash) });
    return 0;
  }
  const shown = field === 'maxSize' ? (value ? formatBytes(value) : 'unlimited') : (value ? String(value) : 'unlimited');
  ctx.out.line(`Set ${field === 'maxSize' ? 'cache size limit' : 'image count limit'} to ${shown}`);
  if (plan.evict.length) ctx.out.line(`Evicted ${plan.evict.length} least recently used image(s)`);
  return 0;
}

export function maxSize(ctx: Context): number {
  const text = ctx.operands[0];
  if (text === undefined) throw new CxError('usage', '--max-size needs a SIZE', { command: '--max-size' });
  return setLimit(ctx, 'maxSize', parseSize(text));
}

export function maxEntries(ctx: Context): number {
  const text = ctx.operands[0];
  if (text === undefined) throw new CxError('usage', '--max-entries needs a COUNT', { command: '--max-entries' });
  return setLimit(ctx, 'maxEntries', parseCount(text));
}
