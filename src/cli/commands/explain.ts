/**
 * --explain PROG: the key, the image path, and whether the next run restores
 * and if not why. Exit status 0 when it would restore, 1 when it would run
 * cold, 126/127 when PROG cannot be run at all (like the launcher).
 */
import { launcherCacheDir } from '../../cache/key.js';
import { Store } from '../../cache/store.js';
import { predictRun } from '../predict.js';
import { scriptShim, shimAdvice } from '../script-shim.js';
import { afterInitFromOptions } from '../after-init.js';
import type { Context } from '../context.js';
import { keyValues, printJson } from '../output.js';
import { markerText, readProbes, shimOnPath } from './shims-marker.js';
import * as path from 'node:path';
import { learnTarget, learnedFile, preloadsOf, readLearned } from '../../resume/learned.js';

/** What the next run does, for every CX_OUTCOME_* (a unit test checks none is missing). */
export const OUTCOME_TEXT: Record<string, string> = {
  HIT: 'restores from the image',
  MISS: 'cold: no image yet',
  BYPASS_DISABLED: 'cold: cached-exec is disabled',
  BYPASS_LOADER_ENV: 'cold: loader variables in the environment',
  BYPASS_SECURE: 'cold: privileged program',
  BYPASS_NO_CACHE_DIR: 'cold: no cache directory',
  FAIL_IMAGE_IO: 'cold: the image cannot be read',
  FAIL_HEADER: 'cold: bad image header',
  FAIL_OWNER: 'cold: image not owned by you or writable by others',
  FAIL_CHECKSUM: 'cold: image checksum mismatch',
  FAIL_TRUNCATED: 'cold: image truncated',
  FAIL_KEY: 'cold: key mismatch',
  FAIL_STALE_FILE: 'cold: a library or loader file changed since the snapshot',
  FAIL_NEGATIVE_DEP: 'cold: a path the loader found missing now exists',
  FAIL_VDSO: 'cold: vdso layout unusable',
  FAIL_COLLISION: 'cold: an address range of the image is taken in this process',
  FAIL_MAP: 'cold: mapping the image failed',
  FAIL_SLOT: 'cold: a slot cannot be patched',
  FAIL_KERNEL_STATE: 'cold: the kernel refused the per-thread state (fs base, robust list, rseq)',
  FAIL_RESUME: 'cold: this process cannot take the post-init image (signal dispositions, resume fd, CPU state)',
  BYPASS_UNTRUSTED_DIR: 'cold: the cache directory is not safely yours (owner, mode, symlink or not a directory); nothing is written there',
  FAIL_EXE: 'cold: the program reads /proc/self/exe and this process cannot make it name the program',
  BYPASS_STACK_LIMIT: 'cold: the stack limit (ulimit -s) is too small to rebuild the program\'s stack',
  FAIL_IDENTITY: 'cold: the image depends on the identity of the user who took it (another user here)',
  FAIL_ENV: 'cold: a variable the image depends on differs in this environment, and no image for this one exists yet',
  FAIL_ARCH: 'cold: the image was taken on another architecture',
  FAIL_PAGE_SIZE: 'cold: the image was taken on a kernel with another page size',
  FAIL_CPU: 'cold: the image was taken on a CPU with other features (its libraries chose code for that CPU)',
  FAIL_LIMITS: 'cold: the program read resource limits (ulimit) before the image was taken, and this run\'s differ',
  FAIL_ADAPTER: 'cold: restored, then the adapter found the run differs from the image (shadowing module, sensitive variable) and ran the program cold',
};

/** Learned preloads (--learn in the adapter words): how many, and each module dropped with why. */
function learnedRows(words: string[], python: string, cacheDir: string | null | undefined): [string, string][] {
  const target = learnTarget(words);
  if (!target || !cacheDir) return [];
  const file = learnedFile(cacheDir, target, python);
  const l = readLearned(file);
  if (!l) return [['learned', `nothing yet for ${target} (${file}): a run through the adapter records its imports`]];
  const rows: [string, string][] = [['learned', `${preloadsOf(l).length} modules preloaded for ${target} (${file})`]];
  for (const [name, why] of l.dropped) rows.push(['dropped', `${name}: ${why}`]);
  return rows;
}

export function explain(ctx: Context): number {
  const prog = ctx.operands[0] as string;
  // A cache directory the launcher cannot use is an error here as for every admin command
  // (none at all is a prediction: every run is cold).
  if (launcherCacheDir(ctx.env) !== null) Store.checkedForEnv(ctx.env);
  const afterInit = afterInitFromOptions(ctx, prog);
  const p = predictRun(afterInit?.program ?? prog, ctx.env, undefined, afterInit);
  if (afterInit && p.hint) {
    // The hint's --warm must take the same image: with the same options.
    const opts = [...ctx.options].map(([k, v]) => (v ? `${k}=${v}` : k)).join(' ');
    p.hint = p.hint.split('cached-exec --warm ').join(`cached-exec --warm ${opts} `);
    if (afterInit.program) p.hint = p.hint.split(afterInit.program).join(prog);
  }
  const shim = shimOnPath(prog, ctx.env);
  const shimInfo = shim ? { ...shim, argv0: markerText(readProbes(path.dirname(shim.shim))[prog], shim.marked) } : null;
  if (ctx.json) {
    printJson(ctx.out, { ...p, shim: shimInfo });
  } else {
    const pairs: [string, string][] = [['program', p.program], ['resolved', p.resolved], ['image kind', p.imageKind]];
    if (p.interpreter) pairs.push(['interpreter', `${p.interpreter.path}${p.interpreter.arg ? ` ${p.interpreter.arg}` : ''} (a #! script: its interpreter is what gets restored)`]);
    if (shimInfo) pairs.push(['shim', `${shimInfo.shim} (first on PATH): ${shimInfo.argv0}`]);
    pairs.push(['cache dir', p.cacheDir ?? '(none)']);
    if (p.key) pairs.push(['key', p.key]);
    if (p.image) pairs.push(['image', `${p.image}${p.layer === 'system' ? ' (system layer)' : ''}`]);
    pairs.push(['next run', `${OUTCOME_TEXT[p.outcome] ?? p.outcome}${p.rotate ? ' (then re-taken: past CACHED_EXEC_MAX_AGE)' : ''}`]);
    pairs.push(['why', `${p.outcome}: ${p.detail}`]);
    if (p.environment) {
      const e = p.environment;
      if (e.whole) {
        pairs.push(['environment', p.imageKind.startsWith('post-init')
          ? 'the whole environment but the per-run variables (_, PWD, OLDPWD, SHLVL, CACHED_EXEC_*, CACHED_EXEC_VARY_ENV names): the init ran other programs or listed variables'
          : 'the whole environment but _ (library constructors read it without getenv)']);
      }
      else if (!e.deps.length) pairs.push(['environment', 'no variable: any environment restores']);
      for (const d of e.deps) pairs.push(['depends on', d]);
    }
    if (p.attempts.length > 1) {
      // A system image passed over (root's own, not this user's) says why; the verdict below is the user's.
      for (const a of p.attempts) {
        const why = a.layer === 'system' && a.outcome !== 'MISS' && a.outcome !== p.outcome && a.detail ? ` (${a.outcome}: ${a.detail})` : '';
        pairs.push(['looked at', `${a.layer}${a.variant ? ' variant' : ''} ${a.image}: ${a.outcome}${why}`]);
      }
    }
    if (afterInit) pairs.push(...learnedRows(afterInit.words, p.resolved, p.cacheDir));
    if (p.refused) pairs.push(['refused', `${p.refused.reason}${p.refused.detail ? `: ${p.refused.detail}` : ''}`]);
    else if (p.queued) pairs.push(['queued', 'yes']);
    if (p.hint) pairs.push(['hint', p.hint]);
    // A version manager's shim restores as its interpreter (env, bash), not as what it starts.
    const shim = p.interpreter && !afterInit ? scriptShim(p.resolved, prog) : null;
    if (shim?.manager) pairs.push(['note', shimAdvice(prog, shim, '')]);
    ctx.out.line(keyValues(pairs).join('\n'));
  }
  return p.restores ? 0 : 1;
}
