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
  /** What else selects the image besides the program: the PATH it was taken for... */
  pathEnv: string | null;
  /** ...the init that ran before a post-init image's checkpoint ("after-init --init FILE"), null for post-link... */
  init: string | null;
  /**
   * ...and the environment: the key's env hash (hex) when the image serves one
   * whole environment only (constructors that walked it, an init that ran other
   * programs), else null...
   */
  envHash: string | null;
  /** ...the number of variables it depends on (ENV_DEPS; --explain lists them)... */
  envDeps: number;
  /** ...and whether it is a variant: an image for another environment than the key's primary image. */
  variant: boolean;
}

export function listEntries(ctx: Context): ListEntry[] {
  const store = ctx.store();
  const usage = foldStats(store).usage;
  return withUsage(store.listImages(), usage).map((im) => {
    let program: string | null = null;
    let created = im.mtimeMs;
    let regions: number | null = null;
    let valid = false;
    let pathEnv: string | null = null;
    let init: string | null = null;
    let envHash: string | null = null;
    let envDeps = 0;
    let variant = false;
    try {
      const { parsed } = readImageMeta(im.path);
      const k = parsed.model.key;
      program = k.exePath;
      pathEnv = k.pathEnv;
      init = k.initSpec ? describeInitSpec(k.initSpec) : null;
      envHash = k.envHash ? k.envHash.toString(16).padStart(16, '0') : null;
      envDeps = parsed.model.envDeps?.length ?? 0;
      variant = !!k.variant;
      created = Number(parsed.model.createdNs / 1_000_000n) || im.mtimeMs;
      regions = parsed.model.regions.length;
      valid = parsed.problems.length === 0;
    } catch { /* listed as damaged */ }
    return {
      key: im.hash, program, image: im.path, size: im.size, created, lastUsed: im.lastUsed, uses: im.uses, regions, valid,
      pathEnv, init, envHash, envDeps, variant,
    };
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
  // Rows for one program differ by PATH (part of every key), init or environment: show
  // those compactly. PATHs get letters explained below the table.
  const paths = [...new Set(entries.map((e) => e.pathEnv).filter((p): p is string => p !== null))];
  const letter = (p: string | null): string => (p === null ? '-' : pathLabel(paths.indexOf(p)));
  const anyInit = entries.some((e) => e.init);
  const anyEnv = entries.some((e) => e.envHash || e.envDeps || e.variant);
  const envCell = (e: ListEntry): string => {
    const what = e.envHash ? `whole ${e.envHash.slice(0, 6)}` : e.envDeps ? `${e.envDeps} var${e.envDeps === 1 ? '' : 's'}` : '-';
    return e.variant ? `variant, ${what}` : what;
  };
  ctx.out.line(table(entries.map((e) => [
    e.program ?? '(damaged image)',
    ...(anyInit ? [e.init ?? '-'] : []),
    letter(e.pathEnv),
    ...(anyEnv ? [envCell(e)] : []),
    formatBytes(e.size), formatAge(now - e.created), String(e.uses),
    e.uses ? `${formatAge(now - e.lastUsed)} ago` : 'never', e.key,
  ]), ['program', ...(anyInit ? ['init'] : []), 'PATH', ...(anyEnv ? ['env'] : []), 'size', 'age', 'uses', 'last use', 'key']).join('\n'));
  const total = entries.reduce((a, e) => a + e.size, 0);
  ctx.out.line(`${entries.length} image(s), ${formatBytes(total)}`);
  for (const [i, p] of paths.entries()) ctx.out.line(`PATH ${pathLabel(i)}: ${p === '' ? '(unset)' : p}`);
  if (anyEnv) {
    ctx.out.line('env: what the image depends on of the environment: N vars (the variables its program or init read), ' +
      'whole (one whole environment: it was read without lookups, or an init ran other programs); variant: an image for ' +
      'another environment beside the key\'s first; --explain PROG says whether yours matches');
  }
  return 0;
}

/** A, B, ..., Z, AA, AB, ... */
function pathLabel(i: number): string {
  return (i >= 26 ? pathLabel(Math.floor(i / 26) - 1) : '') + String.fromCharCode(65 + (i % 26));
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
