/**
 * The environments of the snapshot runs.
 *
 * The loader's own variables are removed (a caller that sets them bypasses
 * the cache, so an image never needs them) and LD_BIND_NOW=1 is added, so every
 * relocation is resolved in the image instead of lazily in each restored run.
 */
export const LOADER_VARS = /^(LD_|GLIBC_TUNABLES$|MALLOC_)/;

export function snapshotEnv(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || LOADER_VARS.test(k)) continue;
    out.push(`${k}=${v}`);
  }
  out.push('LD_BIND_NOW=1');
  return out;
}

/**
 * The differential run B: every value longer (but LD_BIND_NOW's and those of
 * the names in `keep`, which A's constructors looked up: the image is keyed
 * on them) and one more variable, so envp and every string on B's stack move
 * and a copy of any of them shows up as a difference.
 */
export function perturbedEnv(envp: string[], keep: ReadonlySet<string> = new Set()): string[] {
  const kept = (e: string): boolean => e.startsWith('LD_BIND_NOW=') || keep.has(e.slice(0, Math.max(0, e.indexOf('='))));
  return [...envp.map((e) => (kept(e) ? e : `${e}_`)), 'CX_DIFFERENTIAL_RUN=b'];
}

