/**
 * What the launcher will do on the next `cached-exec PROG`, worked out in
 * TypeScript by the launcher's own rules, in its order (launcher.c: run):
 * resolve, cache dir, bypass rules, user image, system layer, then for a
 * `#!` script its interpreter. Used by --explain.
 */
import * as path from 'node:path';
import { checkImage, type OutcomeName, type Verdict } from '../cache/check.js';
import { keyFromStat, keyHash, launcherCacheDir } from '../cache/key.js';
import { Store, dirProblem } from '../cache/store.js';
import type { ImageKey } from '../image/format.js';
import { initSpec } from '../resume/spec.js';
import { describeDependency } from '../cache/envdeps.js';
import { readShebang, resolveProgram } from '../common/resolve.js';
import * as fs from 'node:fs';
import { exeSettable } from './capability.js';
import { LAUNCHER } from '../common/package.js';
import { prlimit } from '../sys/libc.js';

export interface Attempt {
  layer: 'user' | 'system';
  /** A variant image: looked for because the primary image of the key serves another environment. */
  variant?: boolean;
  program: string;
  key: string;
  image: string;
  outcome: OutcomeName;
  detail: string;
}

export interface Prediction {
  /** As given. */
  program: string;
  /** post-link, or post-init with what runs before the checkpoint. */
  imageKind: string;
  /** The path the launcher resolves it to (and keys on). */
  resolved: string;
  /** For a #! script: the interpreter the launcher restores instead. */
  interpreter: { path: string; arg: string | null } | null;
  cacheDir: string | null;
  /** The decisive outcome, as a CX_OUTCOME_* name (what the statistics will count). */
  outcome: OutcomeName;
  restores: boolean;
  detail: string;
  /** Restores but the image is past CACHED_EXEC_MAX_AGE: the run queues a re-snapshot. */
  rotate: boolean;
  /** The key and image of the decisive attempt (null when no key was computed). */
  key: string | null;
  image: string | null;
  layer: 'user' | 'system' | null;
  /** Every image the launcher would look at, in order. */
  attempts: Attempt[];
  /** Background warming state of the user key. */
  queued: boolean;
  refused: { reason: string; detail: string } | null;
  /** What to do about it, for humans. */
  hint: string | null;
  /**
   * The decisive image's tie to the environment: each variable it depends on
   * with what the snapshot saw and whether this environment matches, and
   * whether it is bound to the whole environment. Null without an image.
   */
  environment: { deps: string[]; whole: boolean } | null;
}

const euidNow = (): number => (process.geteuid ? process.geteuid() : 0);

const isTrue = (v: string | undefined): boolean => v !== undefined && v !== '' && v !== '0';

/** The launcher's bypass rules (launcher.c: bypass_reason) for this environment and program. */
export function bypassReason(env: NodeJS.ProcessEnv, st: fs.BigIntStats): { outcome: OutcomeName; detail: string } | null {
  if (isTrue(env.CACHED_EXEC_DISABLE)) {
    return { outcome: 'BYPASS_DISABLED', detail: `CACHED_EXEC_DISABLE=${env.CACHED_EXEC_DISABLE} is set` };
  }
  const loader = Object.keys(env).filter((k) => env[k] !== undefined &&
    (k.startsWith('LD_') || k === 'GLIBC_TUNABLES' || k.startsWith('MALLOC_')));
  if (loader.length) {
    return { outcome: 'BYPASS_LOADER_ENV', detail: `${loader.sort().join(', ')} in the environment changes what the loader does` };
  }
  if (st.mode & 0o6000n) return { outcome: 'BYPASS_SECURE', detail: 'setuid/setgid program: never cached' };
  return null;
}

export function predictRun(program: string, env: NodeJS.ProcessEnv = process.env, euid = euidNow(),
  afterInit?: { words: string[] }): Prediction {
  const r = resolveProgram(program, env);
  const dir = launcherCacheDir(env);
  const base: Prediction = {
    program, imageKind: 'post-link', resolved: r.path, interpreter: null, cacheDir: dir, outcome: 'MISS', restores: false, detail: '',
    rotate: false, key: null, image: null, layer: null, attempts: [], queued: false, refused: null, hint: null, environment: null,
  };
  if (dir === null) {
    return { ...base, outcome: 'BYPASS_NO_CACHE_DIR', detail: 'no CACHED_EXEC_DIR, XDG_CACHE_HOME or HOME: every run is cold',
      hint: 'set CACHED_EXEC_DIR or HOME' };
  }
  const user = new Store(dir, euid);
  // cachedir.c: an untrusted user cache is neither read nor written; the system layer still serves.
  const userProblem = user.state().problem;
  base.imageKind = afterInit ? `post-init (after ${afterInit.words.length ? afterInit.words.join(' ') : 'the program\'s own init'})` : 'post-link';
  const withInit = (k: ImageKey): ImageKey => (afterInit ? { ...k, initSpec: initSpec(afterInit.words) } : k);

  /** One layer, as the launcher's key step does it: the primary image, then the variant for this environment. */
  let exeState: ReturnType<typeof exeSettable> | undefined;
  const settable = (): ReturnType<typeof exeSettable> => (exeState ??= exeSettable(LAUNCHER));
  const tryLayer = (layer: 'user' | 'system', dir: string, key: ImageKey, owner: number, exe: string): { v: Verdict; a: Attempt } => {
    const hash = keyHash(key);
    const image = path.join(dir, 'images', `${hash}.img`);
    // The launcher's limits are this process's (node keeps the ones it was started with).
    const checks = { env, runEuid: euid, verifyData: true, exeSettable: settable(), limits: (r: number) => prlimit(0, r) };
    const v = checkImage(image, { key, owner, ...checks });
    if (layer === 'system' && v.outcome === 'FAIL_IMAGE_IO' && v.detail.endsWith('EACCES') && euid !== 0) {
      v.detail += ' (root\'s own image: it depends on who took it, so it is 0600 and serves root only)';
    }
    const a: Attempt = { layer, program: exe, key: hash, image, outcome: v.outcome, detail: v.detail };
    base.attempts.push(a);
    const selector = v.outcome === 'FAIL_ENV' ? v.env?.selector : undefined;
    if (selector === undefined) return { v, a };
    const vkey = { ...key, variant: selector };
    const vhash = keyHash(vkey);
    const vimage = path.join(dir, 'images', `${vhash}.img`);
    const vv = checkImage(vimage, { key: vkey, owner, ...checks });
    const va: Attempt = { layer, variant: true, program: exe, key: vhash, image: vimage, outcome: vv.outcome, detail: vv.detail };
    base.attempts.push(va);
    // No variant yet: the run is cold because of the primary image's dependencies.
    return vv.outcome === 'MISS' ? { v, a } : { v: vv, a: va };
  };

  const layers = (exe: string, st: fs.BigIntStats): { v: Verdict; a: Attempt } => {
    const uv = userProblem
      ? undefined
      : tryLayer('user', user.dir, withInit(keyFromStat(exe, st, env, euid)), euid, exe);
    const ukey = keyHash(withInit(keyFromStat(exe, st, env, euid)));
    const { v, a } = uv ?? ((): { v: Verdict; a: Attempt } => {
      const image = user.imagePathForHash(ukey);
      const bv: Verdict = { outcome: 'BYPASS_UNTRUSTED_DIR', detail: `the cache directory ${dir} is ${userProblem}: not read, nothing written`, rotate: false };
      const ba: Attempt = { layer: 'user', program: exe, key: ukey, image, outcome: bv.outcome, detail: bv.detail };
      base.attempts.push(ba);
      return { v: bv, a: ba };
    })();
    const sysDir = env.CACHED_EXEC_SYSTEM_DIR;
    if ((v.outcome !== 'MISS' && !userProblem) || !sysDir) return { v, a };
    const sysProblem = systemDirProblem(sysDir);
    if (sysProblem) {
      const skey = keyHash(withInit(keyFromStat(exe, st, env, 0, 0n)));
      const sa: Attempt = { layer: 'system', program: exe, key: skey, image: path.join(sysDir, 'images', `${skey}.img`), outcome: 'MISS',
        detail: `the system layer ${sysDir} is not used: ${sysProblem}` };
      base.attempts.push(sa);
      return { v, a };
    }
    const s = tryLayer('system', sysDir, withInit(keyFromStat(exe, st, env, 0, 0n)), 0, exe);
    // As key.c: a system image that is not this user's to use (or not this machine's) leaves the user's own miss (which is queued).
    const notOurs = ['FAIL_IDENTITY', 'FAIL_IMAGE_IO', 'FAIL_OWNER', 'FAIL_ARCH', 'FAIL_PAGE_SIZE', 'FAIL_CPU', 'FAIL_LIMITS'].includes(s.v.outcome);
    return s.v.outcome !== 'MISS' && !notOurs ? s : { v, a };
  };

  const bypass = bypassReason(env, r.stat);
  if (bypass) return finish(base, user, bypass.outcome, bypass.detail, null, null, program, env);
  let { v, a } = layers(r.path, r.stat);
  if (v.outcome === 'MISS' && !afterInit) {
    const sb = readShebang(r.path);
    if (sb) {
      base.interpreter = { path: sb.interpreter, arg: sb.arg };
      const b2 = bypassReason(env, sb.stat);
      if (b2) return finish(base, user, b2.outcome, b2.detail, null, null, program, env);
      ({ v, a } = layers(sb.interpreter, sb.stat));
    }
  }
  return finish(base, user, v.outcome, v.detail, v, a, program, env);
}

/** Why the launcher would not use a system layer (cachedir.c: root's, absolute, a directory, not a symlink, not writable by others), or null. */
function systemDirProblem(dir: string): string | null {
  if (!path.isAbsolute(dir)) return 'not an absolute path';
  try {
    return dirProblem(fs.lstatSync(dir), 0);
  } catch (e) {
    return `cannot stat it (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
}

/** Refusals that no change of the user's can undo: the program's kind or rights. */
const PERMANENT_REFUSALS = new Set(['not-elf', 'static-binary', 'foreign-arch', 'unported-arch', 'privileged']);

function finish(p: Prediction, user: Store, outcome: OutcomeName, detail: string, v: Verdict | null, a: Attempt | null,
  program: string, env: NodeJS.ProcessEnv): Prediction {
  p.outcome = outcome;
  p.detail = detail;
  p.restores = outcome === 'HIT';
  p.rotate = v?.rotate ?? false;
  if (v?.env) {
    p.environment = { deps: v.env.deps.map((d) => describeDependency(d, env)), whole: v.env.whole };
  }
  if (a) {
    p.key = a.key;
    p.image = a.image;
    p.layer = a.layer;
  }
  // The queue and refusals are by the primary key (a re-take places the image itself).
  const userKey = p.attempts.filter((x) => x.layer === 'user' && !x.variant).at(-1)?.key;
  if (userKey) {
    p.queued = user.listQueue().some((q) => q.hash === userKey);
    const ref = user.refused(userKey);
    p.refused = ref ? { reason: ref.reason, detail: ref.detail } : null;
  }
  const warm = `cached-exec --warm ${p.interpreter ? p.interpreter.path : program}`;
  if (outcome === 'MISS') {
    p.hint = p.refused ? (PERMANENT_REFUSALS.has(p.refused.reason)
      ? `it cannot be snapshotted (${p.refused.reason}, see 'refused'): its runs stay cold`
      : `remove the cause named under 'refused', then '${warm}' tries again (--cleanup also forgets refusals after a day)`)
      : p.queued ? 'queued: a background warmer will take the snapshot' : `run '${warm}' (or run it once: the miss queues a snapshot)`;
  } else if (outcome === 'FAIL_ENV') {
    p.hint = p.queued ? 'queued: the background warmer takes an image for this environment (a variant beside the existing one)'
      : `the image was taken for another environment: a run queues an image for this one (at most one re-take of a key per CACHED_EXEC_RETAKE_SECONDS), or run '${warm}'`;
  } else if (outcome === 'FAIL_STALE_FILE' || outcome === 'FAIL_NEGATIVE_DEP' || outcome === 'FAIL_KEY') {
    p.hint = `the image is stale: '${warm}' re-takes it, '--cleanup' removes it`;
  } else if (outcome === 'FAIL_EXE') {
    p.hint = 'the program runs cold (always correct); root can let it restore for every user: cached-exec --install-capability';
  } else if (outcome === 'FAIL_OWNER') {
    p.hint = 'images must be owned by you and not writable by group or others';
  } else if (outcome === 'FAIL_CHECKSUM' && detail.includes('--cleanup')) {
    p.hint = `the image's data is damaged: 'cached-exec --cleanup' removes it, '${warm}' re-takes it`;
  } else if (outcome === 'FAIL_IDENTITY' || (outcome === 'FAIL_IMAGE_IO' && detail.includes('serves root only'))) {
    p.hint = `the system layer's image is root's own; '${warm}' takes one for you in your cache (tried first)`;
  } else if (outcome === 'FAIL_ARCH' || outcome === 'FAIL_PAGE_SIZE' || outcome === 'FAIL_CPU') {
    p.hint = `an image serves only the architecture, page size and CPU features it was taken on: '${warm}' takes one on this machine ` +
      '(machines sharing a home directory: give each its own CACHED_EXEC_DIR)';
  } else if (outcome === 'FAIL_LIMITS') {
    p.hint = `an image serves the resource limits it was taken with (glibc sizes thread stacks from ulimit -s): '${warm}' in this shell takes one for these; runs with the old limits then run cold`;
  } else if (outcome === 'BYPASS_UNTRUSTED_DIR') {
    p.hint = 'the cache directory must be an absolute path to a real directory (not a symlink) owned by you, mode 0700';
  } else if (outcome.startsWith('FAIL_')) {
    p.hint = `the image is damaged or from another version: '${warm}' re-takes it`;
  } else if (outcome === 'BYPASS_LOADER_ENV') {
    p.hint = 'such runs are always cold (debugging sessions); unset those variables to use the cache';
  } else if (outcome === 'BYPASS_DISABLED') {
    p.hint = 'unset CACHED_EXEC_DISABLE (or set it to 0)';
  }
  return p;
}
