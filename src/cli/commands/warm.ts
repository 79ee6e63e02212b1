/**
 * --warm PROG...: take snapshots now, synchronously, and write the images
 * where the launcher will look for them. Also the engine of the background
 * warmer (--drain-queue).
 */
import * as path from 'node:path';
import { checkImage } from '../../cache/check.js';
import { groupsHash, keyFromStat, keyHash } from '../../cache/key.js';
import { tryLock } from '../../cache/lock.js';
import { enforceBounds } from '../../cache/maintain.js';
import { appendEvent } from '../../cache/stats.js';
import type { Store } from '../../cache/store.js';
import { serializeImage, type ImageKey } from '../../image/format.js';
import type { RefusalCode } from '../../snapshot/api.js';
import { CxError } from '../../common/errors.js';
import { afterInitFromOptions, afterInitOptionText } from '../after-init.js';
import type { Context } from '../context.js';
import { formatBytes, printJson } from '../output.js';
import { LAUNCHER } from '../../common/package.js';
import { readShebang, resolveProgram } from '../../common/resolve.js';
import { loadSnapshotter, type TakeSnapshot } from '../snapshotter.js';
import { initSpec, kindOfWords, resumeEnvHash } from '../../resume/spec.js';
import { DIAGNOSABLE, initFailure } from '../init-diagnosis.js';
import { scriptShim, shimAdvice } from '../script-shim.js';

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
}

export interface WarmOptions {
  /** Gets the snapshotter; called only once a program resolved (a typo is reported even without one). */
  snapshotter: () => Promise<TakeSnapshot>;
  store: Store;
  env: NodeJS.ProcessEnv;
  launcher?: string;
  timeoutMs?: number;
  /** Keep a valid image another process wrote while we waited for the key's lock. */
  skipIfValid?: boolean;
  /** A post-init image: the adapter words (src/resume/spec.ts), as --after-init/--preload or a queue entry give them. */
  afterInit?: { words: string[] };
}

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
  if (o.afterInit) {
    key.initSpec = initSpec(o.afterInit.words);
    key.envHash = resumeEnvHash(o.env);
  }
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
    const image = o.store.imagePathForHash(hash);
    if (o.skipIfValid && checkImage(image, { key, owner: o.store.euid, maxAgeSec: 0 }).outcome === 'HIT') {
      return { ...base, ok: true, image, skipped: true };
    }
    const take = await o.snapshotter();
    const t0 = performance.now();
    let outcome;
    try {
      outcome = await take({
        exePath: path.resolve(r.path),
        argv: [sb ? sb.interpreter : program],
        env: o.env,
        ...(o.afterInit ? { afterInit: { words: o.afterInit.words, kind: kindOfWords(o.afterInit.words) } } : {}),
        launcher: o.launcher ?? LAUNCHER,
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      });
    } catch (e) {
      throw new CxError('internal', `${program}: the snapshotter failed: ${(e as Error).message ?? String(e)}`,
        { program, command: '--warm', cause: e });
    }
    const ms = Math.round(outcome.ms ?? performance.now() - t0);
    if (!outcome.ok) {
      // A post-init refusal is most often the init itself failing (a missing module, an
      // error in the rc file): run it once cold to say so in its own words.
      const failure = o.afterInit && DIAGNOSABLE.has(outcome.reason)
        ? initFailure(r.path, program, o.afterInit.words, o.env) : null;
      const detail = failure ? `${failure.text} (the snapshot stopped at: ${outcome.detail})` : outcome.detail;
      const reason = failure ? failure.reason : outcome.reason;
      try {
        o.store.markRefused(hash, reason, detail);
      } catch { /* a refusal we cannot remember is only retried */ }
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
    // An environment binding (constructors read the environment) stays with the image.
    model.key = model.key.envHash && !o.afterInit ? { ...key, envHash: model.key.envHash } : key;
    const data = serializeImage(model);
    const written = o.store.writeImage(key, data);
    o.store.clearRefused(hash);
    o.store.removeQueued(hash);
    appendEvent(o.store, { e: 'snapshot', key: hash, bytes: written.size, ms });
    const plan = enforceBounds(o.store, new Set([hash]));
    return {
      ...base, ok: true, image: written.path, size: written.size, ms, notes: [...notes, ...outcome.notes],
      evicted: plan.evict.map((e) => e.hash),
    };
  } finally {
    lock.release();
  }
}

export async function warm(ctx: Context): Promise<number> {
  const store = ctx.store();
  const results: WarmResult[] = [];
  for (const program of ctx.operands) {
    let res: WarmResult;
    try {
      const afterInit = afterInitFromOptions(ctx, program);
      res = await warmOne(program, { snapshotter: () => loadSnapshotter(), store, env: ctx.env, ...(afterInit ? { afterInit } : {}) });
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
      for (const n of res.notes ?? []) if (n.includes('#! script') || n.includes('shell-script shim')) ctx.out.line(`  ${n}`);
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
