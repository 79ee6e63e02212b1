/**
 * The environment an image depends on, compared with a run's: the reference
 * for the launcher's check (src/restore: the key step, check_env_deps) and
 * the rule that names variant images.
 *
 * An image lists the variables its constructors or its init looked up (and
 * those an adapter cannot apply), each with what the snapshot saw (ENV_DEPS,
 * cx_env_dep). A run restores the image only when its environment gives the
 * same for every one; any other variable may differ. When one differs, the
 * run looks for a *variant* image of the same key: its name is the lookup
 * key with a selector appended, the hash of what this run gives for the
 * primary image's dependencies. The warmer writes variants under that name,
 * so alternating environments (two LANGs, two terminals) both restore.
 *
 * The comparison uses the bytes of the values as they are (the launcher sees
 * the raw environment; Node decodes values as UTF-8, so a value that is not
 * valid UTF-8 may be judged differently here than by the launcher, which is
 * the one that decides).
 */
import { EnvDepFlag, hash64 } from '../image/schema.js';
import type { ImageEnvDep, ImageKey } from '../image/format.js';
import { envHash } from './key.js';
import { resumeEnvHash } from '../resume/spec.js';

/** What an exact dependency records: 0 for a variable that is not set, else cx_hash64 of the value, never 0. */
export function valueHash(value: string | undefined): bigint {
  if (value === undefined) return 0n;
  const h = hash64(Buffer.from(value, 'utf8'));
  return h === 0n ? 1n : h;
}

/** What a run's environment gives for one dependency (compared with dep.valueHash). */
export function observed(dep: ImageEnvDep, env: NodeJS.ProcessEnv): bigint {
  if (dep.flags & EnvDepFlag.PREFIX) {
    let sum = 0n;
    for (const [k, v] of Object.entries(env)) {
      if (v !== undefined && k.startsWith(dep.name)) sum = (sum + hash64(Buffer.from(`${k}=${v}`, 'utf8'))) & 0xffffffffffffffffn;
    }
    return sum;
  }
  const v = env[dep.name];
  if (dep.flags & EnvDepFlag.ANY_VALUE) return v === undefined ? 0n : 1n;
  return valueHash(v);
}

/** A dependency as the snapshot's environment gives it. */
export function dependency(name: string, env: NodeJS.ProcessEnv, form: 'value' | 'presence' | 'prefix' = 'value'): ImageEnvDep {
  const flags = form === 'prefix' ? EnvDepFlag.PREFIX : form === 'presence' ? EnvDepFlag.ANY_VALUE : 0;
  const dep: ImageEnvDep = { name, flags, valueHash: 0n };
  dep.valueHash = observed(dep, env);
  if (form !== 'prefix' && env[name] !== undefined) dep.flags |= EnvDepFlag.PRESENT;
  return dep;
}

/** The whole-environment sum a run gives for an image bound to it (key.envHash). */
export function observedEnvHash(key: Pick<ImageKey, 'initSpec'>, env: NodeJS.ProcessEnv): bigint {
  return key.initSpec ? resumeEnvHash(env) : envHash(env);
}

/** The dependencies a run's environment does not satisfy (empty: the image serves it). */
export function unmetDependencies(deps: readonly ImageEnvDep[], env: NodeJS.ProcessEnv): ImageEnvDep[] {
  return deps.filter((d) => observed(d, env) !== d.valueHash);
}

/**
 * The selector of the variant image that would serve this environment, from
 * the primary image's key and dependencies: cx_hash64 over the observed
 * values as little-endian u64 words (the whole-environment sum first, when
 * the image has one), never 0.
 */
export function variantSelector(primary: Pick<ImageKey, 'initSpec' | 'envHash'>, deps: readonly ImageEnvDep[], env: NodeJS.ProcessEnv): bigint {
  const words = [...(primary.envHash ? [observedEnvHash(primary, env)] : []), ...deps.map((d) => observed(d, env))];
  const buf = Buffer.alloc(words.length * 8);
  words.forEach((w, i) => buf.writeBigUInt64LE(w, i * 8));
  const h = hash64(buf);
  return h === 0n ? 1n : h;
}

/** One line per dependency for --explain and --inspect: name, what the snapshot saw, whether `env` gives the same. */
export function describeDependency(d: ImageEnvDep, env?: NodeJS.ProcessEnv): string {
  const what = d.flags & EnvDepFlag.PREFIX ? `every variable named ${d.name}*`
    : d.flags & EnvDepFlag.ANY_VALUE ? `${d.name} (${d.valueHash ? 'set' : 'not set'}, any value)`
      : `${d.name} (${d.valueHash ? 'set' : 'not set'})`;
  if (!env) return what;
  const now = observed(d, env);
  if (now === d.valueHash) return `${what}: matches`;
  if (d.flags & EnvDepFlag.PREFIX) return `${what}: differs`;
  if (!d.valueHash) return `${what}: differs (set in this environment)`;
  return `${what}: differs (${now ? 'another value' : 'not set'} in this environment)`;
}

/**
 * What an image keeps of its snapshot's environment for a re-take
 * (SNAPSHOT_ENV): with the whole environment bound, all of it; else only the
 * values of the variables it depends on (the rest did not matter to it).
 * Nothing else of the environment goes into an image.
 */
export function retakeEntries(deps: readonly ImageEnvDep[], env: NodeJS.ProcessEnv, whole: boolean): string[] {
  const all = Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined);
  const kept = whole ? all : all.filter(([k]) => deps.some((d) => (d.flags & EnvDepFlag.PREFIX ? k.startsWith(d.name) : k === d.name)));
  return kept.map(([k, v]) => `${k}=${v}`);
}

/**
 * The environment a re-take of an image runs in: the one it kept when it is
 * bound to the whole environment, else `base` with every variable it depends
 * on as the snapshot had it (set to the kept value, or removed).
 */
export function retakeEnvironment(m: { key: Pick<ImageKey, 'envHash'>; envDeps?: readonly ImageEnvDep[]; snapshotEnv?: readonly string[] },
  base: NodeJS.ProcessEnv): string[] | undefined {
  if (!m.snapshotEnv) return undefined;
  if (m.key.envHash) return [...m.snapshotEnv];
  const deps = m.envDeps ?? [];
  const out = Object.entries(base).filter((e): e is [string, string] => e[1] !== undefined)
    .filter(([k]) => !deps.some((d) => (d.flags & EnvDepFlag.PREFIX ? k.startsWith(d.name) : k === d.name)))
    .map(([k, v]) => `${k}=${v}`);
  return [...out, ...m.snapshotEnv];
}
