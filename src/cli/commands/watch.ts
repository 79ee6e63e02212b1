/**
 * --watch [--rewarm]: runs the invalidation watcher in the foreground until
 * SIGINT/SIGTERM (a service manager runs it; see shell/cached-exec-watch.service).
 */
import { InvalidationWatcher } from '../../invalidate/watcher.js';
import type { Context } from '../context.js';

export async function watchCommand(ctx: Context): Promise<number> {
  const store = ctx.store();
  const w = new InvalidationWatcher({
    store,
    rewarm: ctx.modifiers.has('--rewarm'),
    env: ctx.env,
    log: (line) => ctx.out.line(`${new Date().toISOString()} ${line}`),
  });
  await w.start();
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await w.close();
  ctx.out.line(`stopped after ${w.invalidated} invalidation(s)`);
  return 0;
}
