/**
 * --drain-queue (hidden): the background warmer the launcher starts on a
 * miss (detached, niced, stdio on /dev/null). Takes the warmer lock, snapshots
 * every queued key, and exits when the queue is empty. Each queue entry holds
 * the program path and PATH the launcher keyed on, and the caller's
 * environment: the snapshot runs in it, so the image (primary, or a variant
 * beside a primary taken for another environment) serves that caller. An
 * entry whose program changed since it was queued is dropped (the next run
 * queues the new key).
 */
import { keyFromStat, keyHash } from '../../cache/key.js';
import type { QueueEntry, Store } from '../../cache/store.js';
import { takeWarmerLock } from '../../cache/warmer-lock.js';
import { wordsOfSpec } from '../../resume/spec.js';
import { CxError } from '../../common/errors.js';
import type { Context } from '../context.js';
import { printJson } from '../output.js';
import { resolveProgram } from '../../common/resolve.js';
import { loadSnapshotter, type TakeSnapshot } from '../snapshotter.js';
import { warmOne, type WarmResult } from './warm.js';

export type DrainResult = WarmResult & { queued: string };

export async function drainQueue(ctx: Context): Promise<number> {
  const results = await drain(ctx.store(), ctx.env, loadSnapshotter);
  if (ctx.json) printJson(ctx.out, { results });
  return 0;
}

/** Drains the queue of `store` with the snapshotter `load` gives; returns what happened to each entry. */
export async function drain(store: Store, baseEnv: NodeJS.ProcessEnv, load: () => Promise<TakeSnapshot>): Promise<DrainResult[]> {
  const results: DrainResult[] = [];
  // An entry is one request: the same key queued again after we took it (a
  // new miss once its entry was gone) is new work, the same file is not.
  const attempted = new Set<string>();
  const id = (q: QueueEntry): string => `${q.hash}@${q.mtimeMs}`;
  const pending = (): QueueEntry[] => store.listQueue().filter((q) => !attempted.has(id(q)));

  for (let round = 0; round < 1000 && pending().length; round++) {
    const lock = await takeWarmerLock(store);
    if (!lock) break; // another warmer is at work; it rescans before it exits
    try {
      const take = await load();
      const snapshotter = (): Promise<TakeSnapshot> => Promise.resolve(take);
      for (let batch = pending(); batch.length; batch = pending()) {
        for (const q of batch) {
          attempted.add(id(q));
          const env = q.env ? { ...envObject(q.env), PATH: q.pathEnv } : { ...baseEnv, PATH: q.pathEnv };
          try {
            const r = resolveProgram(q.exePath, env);
            const afterInit = q.initSpec ? { words: wordsOfSpec(q.initSpec) } : undefined;
            const key = keyFromStat(r.path, r.stat, env, store.euid);
            if (q.initSpec) key.initSpec = q.initSpec;
            if (keyHash(key) !== q.hash) {
              store.removeQueued(q.hash);
              results.push({ queued: q.hash, program: q.exePath, ok: false, reason: 'changed', detail: 'program changed since it was queued' });
              continue;
            }
            const res = await warmOne(q.exePath, {
              snapshotter, store, env, skipIfValid: !q.rotate, retake: q.retake, ...(afterInit ? { afterInit } : {}),
              ...(q.limits ? { limits: q.limits } : {}),
            });
            results.push({ queued: q.hash, ...res });
          } catch (e) {
            if (e instanceof CxError && e.code === 'snapshotter-missing') throw e;
            const err = e instanceof CxError ? e : new CxError('internal', String((e as Error).message ?? e), { cause: e });
            results.push({ queued: q.hash, program: q.exePath, ok: false, reason: err.code, detail: err.shortMessage });
            // Do not retry this key on every miss: a refusal file stops the launcher queueing it (until --cleanup).
            if (err.code !== 'locked') {
              try {
                store.markRefused(q.hash, err.code === 'not-found' || err.code === 'not-executable' ? 'not-found' : 'internal', err.shortMessage);
              } catch { /* read-only */ }
            }
          }
          store.removeQueued(q.hash);
        }
      }
    } finally {
      await lock.release();
    }
    // An entry queued while we released the lock saw it held and started no warmer: look again.
  }
  return results;
}

/** NAME=value entries as an environment object (the first of a repeated name wins, as getenv finds it). */
export function envObject(entries: readonly string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const e of entries) {
    const i = e.indexOf('=');
    if (i > 0 && !(e.slice(0, i) in env)) env[e.slice(0, i)] = e.slice(i + 1);
  }
  return env;
}
