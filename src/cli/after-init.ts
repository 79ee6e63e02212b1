/**
 * --after-init[=FILE] and --preload LIST for the admin commands (--warm,
 * --explain): the adapter words the launcher would use for PROG.
 */
import * as path from 'node:path';
import { adapterKind, adapterWords } from '../resume/spec.js';
import { CxError } from '../common/errors.js';
import type { Context } from './context.js';

/** undefined when no --after-init was given. */
export function afterInitFromOptions(ctx: Context, program: string): { words: string[] } | undefined {
  const init = ctx.options.get('--after-init');
  const preload = ctx.options.get('--preload');
  if (init === undefined) {
    if (preload !== undefined) throw new CxError('usage', '--preload needs --after-init', { reason: '--preload' });
    return undefined;
  }
  const kind = adapterKind(program);
  if (kind === 'generic' && (init || preload)) {
    throw new CxError('usage', '--after-init=FILE and --preload need bash or python', { reason: '--after-init' });
  }
  if (preload !== undefined && kind !== 'python') throw new CxError('usage', '--preload needs python', { reason: '--preload' });
  const initFile = init ? path.resolve(init) : undefined;
  return { words: adapterWords(kind, { ...(initFile ? { initFile } : {}), ...(preload ? { preload } : {}) }) };
}
