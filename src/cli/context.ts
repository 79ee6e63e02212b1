/** What every admin command gets: parsed arguments, output, environment, the store. */
import { Store } from '../cache/store.js';
import { CxError } from '../common/errors.js';
import type { Out } from './output.js';

export interface Context {
  out: Out;
  env: NodeJS.ProcessEnv;
  json: boolean;
  operands: string[];
  modifiers: Set<string>;
  /** Valued options (--after-init[=FILE], --preload LIST). */
  options: Map<string, string>;
  /**
   * The user's cache (CACHED_EXEC_DIR, XDG_CACHE_HOME, HOME), created lazily by
   * the commands that write; an unusable one (relative, a file, another
   * user's) throws CxError('cache-dir') on first use.
   */
  store: () => Store;
}

export type Command = (ctx: Context) => Promise<number> | number;

/**
 * The read-only system layer (CACHED_EXEC_SYSTEM_DIR) that root fills at
 * firmware build or first boot: images keyed for uid 0, owned by root,
 * readable by all (the launcher tries it after the user's cache).
 */
export function systemStore(env: NodeJS.ProcessEnv): Store {
  const dir = env.CACHED_EXEC_SYSTEM_DIR;
  if (!dir) throw new CxError('usage', '--system needs CACHED_EXEC_SYSTEM_DIR to name the system image directory', { reason: '--system' });
  if ((process.geteuid?.() ?? 0) !== 0) {
    throw new CxError('cache-dir', `the system layer ${dir} is root's: run this as root`, { path: dir, reason: 'owner' });
  }
  const store = new Store(dir, 0, { shared: true });
  store.assertUsable(`CACHED_EXEC_SYSTEM_DIR=${dir}`);
  return store;
}

export function makeContext(partial: Partial<Context> & Pick<Context, 'out'>): Context {
  const env = partial.env ?? process.env;
  const modifiers = partial.modifiers ?? new Set<string>();
  let store: Store | undefined;
  return {
    env,
    json: false,
    operands: [],
    modifiers,
    options: new Map(),
    store: () => (store ??= modifiers.has('--system') ? systemStore(env) : Store.checkedForEnv(env)),
    ...partial,
  };
}
