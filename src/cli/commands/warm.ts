/**
 * --warm PROG...: take snapshots now, synchronously, and write the images
 * where the launcher will look for them. Also the engine of the background
 * warmer (--drain-queue).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkImage } from '../../cache/check.js';
import { groupsHash, keyFromStat, keyHash } from '../../cache/key.js';
import { tryLock } from '../../cache/lock.js';
import { enforceBounds } from '../../cache/maintain.js';
import { appendEvent, foldStats } from '../../cache/stats.js';
import type { Store } from '../../cache/store.js';
import { serializeImage, type ImageKey, type ImageLimit } from '../../image/format.js';
import { prlimit } from '../../sys/libc.js';
import { StateFlag } from '../../image/schema.js';
import type { RefusalCode } from '../../snapshot/api.js';
import { CxError } from '../../common/errors.js';
import { afterInitFromOptions, afterInitOptionText } from '../after-init.js';
import type { Context } from '../context.js';
import { formatBytes, printJson } from '../output.js';
import { LAUNCHER } from '../../common/package.js';
import { readShebang, resolveProgram } from '../../common/resolve.js';
import { loadSnapshotter, type TakeSnapshot } from '../snapshotter.js';
import { initSpec, kindOfWords } from '../../resume/spec.js';
import { dropLearned, learnTarget, learnedFile, preloadsOf, readLearned } from '../../resume/learned.js';
import { DIAGNOSABLE, initFailure } from '../init-diagnosis.js';
import { scriptShim, shimAdvice } from '../script-shim.js';

/**
 * Variant images one key may have (images for other environments than its
 * primary image's): beyond this the least recently used one goes, so an
 * environment that keeps changing cannot fill the cache.
 */
export const MAX_VARIANTS = 8;

export interface WarmResult {
  program: string;
  ok: boolean;
  resolved?: string;
  key?: string;
  image?: string;
  size?: number;
  ms?: number;
  notes?: string[];
  /** Images evicted to stay within the bounds after writing this one. */
  evicted?: string[];
  /** Refusal or error. */
  reason?: RefusalCode | string;
  detail?: string;
  /** When `ok` is false because of an error rather than a refusal. */
  error?: Record<string, string | number>;
  /** Another process had just written a valid image for this key (--drain-queue only). */
  skipped?: boolean;
  /** The image depends on who took it (served to key.euid only; 0600 in the system layer). */
  identityBound?: boolean;
  /** The image serves another environment than the key's primary image: written as a variant of it. */
  variant?: boolean;
}

export interface WarmOptions {
  /** Gets the snapshotter; called only once a program resolved (a typo is reported even without one). */
  snapshotter: () => Promise<TakeSnapshot>;
  store: Store;
  env: NodeJS.ProcessEnv;
  launcher?: string;
  timeoutMs?: number;
  /** Keep a valid image (for this environment) another process wrote while we waited for the key's lock. */
  skipIfValid?: boolean;
  /** A re-take the launcher asked for (a stale or other-environment fallback): noted for its rate limit. */
  retake?: boolean;
  /** A post-init image: the adapter words (src/resume/spec.ts), as --after-init/--preload or a queue entry give them. */
  afterInit?: { words: string[] };
  /** Resource limits of the run that queued it: the snapshot starts with them (absent: this process's). */
  limits?: ImageLimit[];
  /** How long to wait before the one retry of a `too-new` refusal (default 2100 ms: past a 2-second timestamp step). */
  tooNewDelayMs?: number;
}

/**
 * Refusals that are about this moment, not the program: a dependency changed
 * too recently to trust its timestamps. Never remembered as refused; retried
 * once after a short wait, and the next miss queues the program again.
 */
export const TRANSIENT_REFUSALS: ReadonlySet<string> = new Set(['too-new']);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function sameIdentity(a: ImageKey, b: ImageKey): boolean {
  return a.exeDev === b.exeDev && a.exeIno === b.exeIno && a.exeSize === b.exeSize &&
    a.exeMtimeSec === b.exeMtimeSec && a.exeMtimeNsec === b.exeMtimeNsec &&
    a.exeCtimeSec === b.exeCtimeSec && a.exeCtimeNsec === b.exeCtimeNsec;
}

/** Snapshots one program and stores its image. Throws CxError for resolution and I/O errors. */
export async function warmOne(program: string, o: WarmOptions): Promise<WarmResult> {
  let r = resolveProgram(program, o.env, o.launcher ?? LAUNCHER);
  const notes: string[] = [];
  const shim = scriptShim(r.path, program);
  // A #! script has no image of its own: the launcher restores its interpreter, so warm that.
  const sb = o.afterInit ? null : readShebang(r.path, o.launcher ?? LAUNCHER);
  if (sb) {
    notes.push(`${r.path} is a #! script: warmed its interpreter ${sb.interpreter}`);
    // A version manager's shim: the interpreter (env, bash) is not what the user meant to cache.
    if (shim?.manager) notes.push(shimAdvice(program, shim, ''));
    r = { name: program, path: sb.interpreter, stat: sb.stat };
  }
  const key = keyFromStat(r.path, r.stat, o.env, o.store.euid, o.store.shared ? 0n : groupsHash());
  if (o.afterInit) key.initSpec = initSpec(o.afterInit.words);
  // The primary key: the lock, the queue entry and a refusal are by it, whichever image this becomes.
  const hash = keyHash(key);
  const base: WarmResult = { program, ok: false, resolved: r.path, key: hash, notes };
  if (o.afterInit && shim) {
    // A post-init image needs the interpreter itself: a script that execs it never reaches the checkpoint.
    const detail = shimAdvice(program, shim, afterInitOptionText(o.afterInit.words));
    try {
      o.store.markRefused(hash, 'not-elf', detail);
    } catch { /* only retried */ }
    appendEvent(o.store, { e: 'refused', key: hash, reason: 'not-elf', ms: 0 });
    return { ...base, reason: 'not-elf', detail };
  }

  // One snapshot per key at a time; a killed holder's lock is recovered (lock.ts).
  o.store.ensure('images', 'locks');
  const lock = tryLock(o.store.lockPath(`snapshot-${hash}`), { timeoutMs: (o.timeoutMs ?? 10_000) + 30_000, staleMs: 10 * 60_000 });
  if (!lock) throw new CxError('locked', `${program}: another snapshot of it is still running`, { program, command: '--warm' });
  try {
    if (o.skipIfValid) {
      const image = servingImage(o.store, key, o.env, runLimits(o.limits));
      if (image) return { ...base, ok: true, image, skipped: true };
    }
    const take = await o.snapshotter();
    const t0 = performance.now();
    // limit: learned preloads, only the first `limit` (the adapter reads CACHED_EXEC_PRELOAD_LIMIT; per-run, never keyed).
    const snapshot = async (limit?: number): Promise<Awaited<ReturnType<TakeSnapshot>>> => {
      try {
        return await take({
          exePath: path.resolve(r.path),
          argv: [sb ? sb.interpreter : program],
          env: limit === undefined ? o.env : { ...o.env, CACHED_EXEC_PRELOAD_LIMIT: String(limit) },
          ...(o.afterInit ? { afterInit: { words: o.afterInit.words, kind: kindOfWords(o.afterInit.words) } } : {}),
          launcher: o.launcher ?? LAUNCHER,
          ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
          ...(o.limits ? { limits: o.limits } : {}),
        });
      } catch (e) {
        throw new CxError('internal', `${program}: the snapshotter failed: ${(e as Error).message ?? String(e)}`,
          { program, command: '--warm', cause: e });
      }
    };
    let outcome = await snapshot();
    if (!outcome.ok && TRANSIENT_REFUSALS.has(outcome.reason)) {
      appendEvent(o.store, { e: 'refused', key: hash, reason: outcome.reason, ms: Math.round(outcome.ms) });
      notes.push(`retried: ${outcome.detail}`);
      await sleep(o.tooNewDelayMs ?? 2100);
      outcome = await snapshot();
    }
    const learn = o.afterInit ? learnTarget(o.afterInit.words) : undefined;
    if (!outcome.ok && !TRANSIENT_REFUSALS.has(outcome.reason) && learn && !o.store.shared) {
      outcome = await dropRefusedPreloads(learnedFile(o.store.dir, learn, r.path), snapshot, outcome, notes);
      // The learned file was just rewritten: its timestamps need their step to pass.
      if (!outcome.ok && TRANSIENT_REFUSALS.has(outcome.reason)) {
        await sleep(o.tooNewDelayMs ?? 2100);
        outcome = await snapshot();
      }
    }
    const ms = Math.round(outcome.ms ?? performance.now() - t0);
    if (!outcome.ok) {
      // A post-init refusal is most often the init itself failing (a missing module, an
      // error in the rc file): run it once cold to say so in its own words.
      const failure = o.afterInit && DIAGNOSABLE.has(outcome.reason)
        ? initFailure(r.path, program, o.afterInit.words, o.env) : null;
      const detail = failure ? `${failure.text} (the snapshot stopped at: ${outcome.detail})` : outcome.detail;
      const reason = failure ? failure.reason : outcome.reason;
      if (!TRANSIENT_REFUSALS.has(reason)) {
        try {
          o.store.markRefused(hash, reason, detail);
        } catch { /* a refusal we cannot remember is only retried */ }
      }
      appendEvent(o.store, { e: 'refused', key: hash, reason, ms });
      return { ...base, ms, reason, detail };
    }
    const model = outcome.image;
    // The program must be the file we keyed: a change during the snapshot would
    // make an image for one file under the key of another.
    if (!sameIdentity(model.key, key)) {
      throw new CxError('internal', `${program}: ${r.path} changed while it was being snapshotted; try again`,
        { program, path: r.path, command: '--warm', reason: 'changed' });
    }
    // The key exactly as the launcher computes it (its path string, PATH, euid, kernel).
    // A binding to the whole environment stays with the image.
    model.key = model.key.envHash ? { ...key, envHash: model.key.envHash } : { ...key };
    // A shared layer is readable by every user: no environment of root's goes there.
    if (o.store.shared) delete model.snapshotEnv;
    // The primary image of the key, unless the one there is sound and serves another
    // environment: then a variant, named by what this environment gives for its dependencies.
    const primary = checkImage(o.store.imagePathForHash(hash), { key, owner: o.store.euid, env: o.env, maxAgeSec: 0 });
    const selector = primary.outcome === 'FAIL_ENV' ? primary.env?.selector : undefined;
    if (selector !== undefined) model.key.variant = selector;
    const target = keyHash(model.key);
    const data = serializeImage(model);
    const identityBound = (model.state.flags & StateFlag.IDENTITY_BOUND) !== 0;
    const written = o.store.writeImage(model.key, data, { identityBound });
    o.store.clearRefused(hash);
    o.store.removeQueued(hash);
    const evictedVariants = recordVariant(o.store, hash, target, !!o.retake);
    appendEvent(o.store, { e: 'snapshot', key: target, bytes: written.size, ms });
    const plan = enforceBounds(o.store, new Set([target]));
    return {
      ...base, ok: true, key: target, image: written.path, size: written.size, ms, notes: [...notes, ...outcome.notes],
      evicted: [...evictedVariants, ...plan.evict.map((e) => e.hash)], identityBound, ...(target !== hash ? { variant: true } : {}),
    };
  } finally {
    lock.release();
  }
}

type Outcome = Awaited<ReturnType<TakeSnapshot>>;

/** Rounds of dropRefusedPreloads: each finds one module (a few snapshots per round). */
const MAX_DROPS = 4;

/**
 * A snapshot with learned preloads was refused: if it passes with none, find
 * the first preload whose import makes it fail (bisection over how many are
 * imported: the adapter imports the first N), mark it dropped in the learned
 * file with the refusal, and take the snapshot again; at most MAX_DROPS
 * modules. A refusal that remains with no preload at all is the program's,
 * returned as it was.
 */
async function dropRefusedPreloads(file: string, snapshot: (limit?: number) => Promise<Outcome>, first: Outcome,
  notes: string[]): Promise<Outcome> {
  let outcome = first;
  for (let round = 0; round < MAX_DROPS && !outcome.ok && !TRANSIENT_REFUSALS.has(outcome.reason); round++) {
    const learned = readLearned(file);
    const list = learned ? preloadsOf(learned) : [];
    if (!list.length) return outcome;
    const none = await snapshot(0);
    if (!none.ok) return outcome;
    // Invariant: the first `good` pass, the first `bad` fail (with `why`).
    let good = 0;
    let bad = list.length;
    let why: Outcome = outcome;
    while (bad - good > 1) {
      const mid = (good + bad) >> 1;
      const o = await snapshot(mid);
      if (o.ok) good = mid;
      else if (TRANSIENT_REFUSALS.has(o.reason)) return outcome;
      else {
        bad = mid;
        why = o;
      }
    }
    const culprit = list[bad - 1] as string;
    const reason = why.ok ? 'refused' : `${why.reason}: ${why.detail}`;
    if (!dropLearned(file, culprit, reason)) return outcome;
    notes.push(`learned preload ${culprit} dropped (${reason})`);
    outcome = await snapshot();
  }
  return outcome;
}

/** The image that would serve a run of `key` in `env` (the primary, or its variant for that environment), or null. */
export function servingImage(store: Store, key: ImageKey, env: NodeJS.ProcessEnv,
  limits?: (resource: number) => { soft: bigint; hard: bigint }): string | null {
  const primary = store.imagePathForHash(keyHash(key));
  const v = checkImage(primary, { key, owner: store.euid, env, maxAgeSec: 0, ...(limits ? { limits } : {}) });
  if (v.outcome === 'HIT') return primary;
  if (v.outcome !== 'FAIL_ENV' || v.env?.selector === undefined) return null;
  const vkey = { ...key, variant: v.env.selector };
  const variant = store.imagePathForHash(keyHash(vkey));
  return checkImage(variant, { key: vkey, owner: store.euid, env, maxAgeSec: 0, ...(limits ? { limits } : {}) }).outcome === 'HIT' ? variant : null;
}

/** A run's limits as checkImage asks for them: the queued ones, else this process's (which the snapshot inherits). */
export function runLimits(queued: readonly ImageLimit[] = []): (resource: number) => { soft: bigint; hard: bigint } {
  return (resource) => queued.find((l) => l.resource === resource) ?? prlimit(0, resource);
}

/**
 * Notes a new variant of `primary` (retake/<primary>) and removes the least
 * recently used ones beyond MAX_VARIANTS; returns the removed keys. A re-take
 * also moves the record's time, which the launcher's rate limit reads.
 */
function recordVariant(store: Store, primary: string, written: string, retake: boolean): string[] {
  const known = store.variants(primary).filter((h) => h !== written && h !== primary && fs.existsSync(store.imagePathForHash(h)));
  if (written !== primary) known.push(written);
  const removed: string[] = [];
  if (known.length > MAX_VARIANTS) {
    const usage = foldStats(store, { save: false }).usage;
    const lastUse = (h: string): number => {
      let t = usage[h]?.lastUse ?? 0;
      try {
        t = Math.max(t, fs.statSync(store.imagePathForHash(h)).mtimeMs);
      } catch { /* gone */ }
      return t;
    };
    const old = known.filter((h) => h !== written).sort((a, b) => lastUse(a) - lastUse(b)).slice(0, known.length - MAX_VARIANTS);
    for (const h of old) {
      let bytes = 0;
      try {
        bytes = fs.statSync(store.imagePathForHash(h)).size;
      } catch { /* gone */ }
      if (store.removeImage(h)) appendEvent(store, { e: 'evicted', key: h, bytes, reason: 'variants' });
      removed.push(h);
    }
  }
  if (written !== primary || retake || removed.length) store.setVariants(primary, known.filter((h) => !removed.includes(h)), retake);
  return removed;
}

export async function warm(ctx: Context): Promise<number> {
  const store = ctx.store();
  const results: WarmResult[] = [];
  for (const program of ctx.operands) {
    let res: WarmResult;
    try {
      const afterInit = afterInitFromOptions(ctx, program);
      res = await warmOne(afterInit?.program ?? program, { snapshotter: () => loadSnapshotter(), store, env: ctx.env, ...(afterInit ? { afterInit } : {}) });
    } catch (e) {
      if (!(e instanceof CxError)) throw e;
      res = { program, ok: false, reason: e.code, detail: e.shortMessage, error: e.toJSON() };
      if (e.code === 'cache-dir' || e.code === 'snapshotter-missing') {
        // Nothing else can succeed either.
        if (!ctx.json) throw e;
        results.push(res);
        break;
      }
    }
    results.push(res);
    if (ctx.json) continue;
    if (res.ok) {
      ctx.out.line(`${program}: ${res.image} (${formatBytes(res.size ?? 0)}, ${res.ms} ms)`);
      for (const n of res.notes ?? []) {
        if (n.includes('#! script') || n.includes('shell-script shim') || n.startsWith('identity-bound') || n.startsWith('retried')) ctx.out.line(`  ${n}`);
      }
      if (res.evicted?.length) ctx.out.line(`  evicted ${res.evicted.length} least recently used image(s) to stay within the size limit`);
    } else if (res.error) {
      ctx.out.err(`cached-exec: ${res.detail}`);
    } else {
      ctx.out.err(`cached-exec: ${program}: snapshot refused (${res.reason}): ${res.detail}`);
    }
  }
  if (ctx.json) printJson(ctx.out, { results });
  return results.every((r) => r.ok) ? 0 : 1;
}
