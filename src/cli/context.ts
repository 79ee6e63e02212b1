/** What every admin command gets: parsed arguments, output, environment, the store. */
import { Store } from '../cache/store.js';
import type { Out } from './output.js';

export interface Context {
  out: Out;
  env: NodeJS.ProcessEnv;
  json: boolean;
  operands: string[];
  modifiers: Set<string>;
  /** The user's cache (CACHED_EXEC_DIR, XDG_CACHE_HOME, HOME), created lazily by the commands that write. */
  store: () => Store;
}

export type Command = (ctx: Context) => Promise<number> | number;

export function makeContext(partial: Partial<Context> & Pick<Context, 'out'>): Context {
  const env = partial.env ?? process.env;
  let store: Store | undefined;
  return {
    env,
    json: false,
    operands: [],
    modifiers: new Set(),
    store: () => (store ??= Store.forEnv(env)),
    ...partial,
  };
}
