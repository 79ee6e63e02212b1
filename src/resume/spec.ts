/**
 * Post-init images: which adapter runs a program's initialisation, the
 * command line that runs it, and the part of the key that names it.
 *
 * The native launcher builds the same command and the same key bytes
 * (src/restore/launcher.c: after_init_command, compute_key); the tests check
 * both agree. docs/resume-protocol.md describes the protocol itself.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hash64 } from '../image/schema.js';

/** The descriptor the context arrives on, at snapshot and at restore. */
export const RESUME_FD = 100;
export const RESUME_FD_ENV = 'CACHED_EXEC_RESUME_FD';
export const RESUME_MAGIC = 'cached-exec-resume 1';
/** Words of an init spec are joined with this byte (never part of a path or module name we accept). */
const SPEC_SEP = '\x1f';

export type AdapterKind = 'bash' | 'python' | 'generic';

export interface AfterInitRequest {
  /** --after-init=FILE, made absolute. */
  initFile?: string;
  /** --preload MOD,... (python). */
  preload?: string;
  /** Learned preloads (python): "script:/ABS" or "module:NAME" (src/resume/learned.ts). */
  learn?: string;
}

/** shell/ of this package, resolved like the launcher resolves it from /proc/self/exe. */
function shellDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url)); // dist/resume or src/resume
  return path.join(fs.realpathSync(path.join(here, '..', '..')), 'shell');
}

/** By the name the program was invoked as (basename), as the launcher decides. */
export function adapterKind(name: string): AdapterKind {
  const base = path.basename(name);
  if (base === 'bash') return 'bash';
  if (/^python(3(\.\d+)?)?$/.test(base)) return 'python';
  return 'generic';
}

/**
 * The words between the program and "--": the adapter script and its init
 * arguments. Empty for a program that speaks the protocol itself.
 */
export function adapterWords(kind: AdapterKind, req: AfterInitRequest, dir = shellDir()): string[] {
  const words: string[] = [];
  if (kind === 'bash') {
    // Sourced from -c, not run as a script: bash keeps a script open on fd 255
    // while it runs, and the checkpoint allows no descriptor but 0-2 and the
    // resume fd; "." reads the whole file and closes it. $0 is the adapter.
    words.push('-c', '. "$0"', path.join(dir, 'cached-exec-resume.bash'));
    if (req.initFile) words.push('--init', req.initFile);
  } else if (kind === 'python') {
    words.push(path.join(dir, 'cached_exec_resume.py'));
    if (req.preload) words.push('--preload', req.preload);
    else if (req.learn && !req.initFile) words.push('--learn', req.learn);
    if (req.initFile) words.push('--init', req.initFile);
  }
  return words;
}

/** Which adapter a list of adapter words runs. */
export function kindOfWords(words: string[]): AdapterKind {
  if (words.some((w) => w.endsWith('/cached-exec-resume.bash'))) return 'bash';
  if (words.some((w) => w.endsWith('/cached_exec_resume.py'))) return 'python';
  return 'generic';
}

/** The key's init spec: "after-init" then the adapter words, SPEC_SEP-separated. */
export function initSpec(words: string[]): string {
  return ['after-init', ...words].join(SPEC_SEP);
}

export function wordsOfSpec(spec: string): string[] {
  const parts = spec.split(SPEC_SEP);
  if (parts[0] !== 'after-init') throw new Error(`not an init spec: ${JSON.stringify(spec)}`);
  return parts.slice(1);
}

/**
 * argv of a post-init run: the program's argv[0], the adapter words, and for
 * adapters "--" and the user's argv (argv[0] included). The snapshot passes
 * no user argv: it arrives with the context.
 */
export function afterInitArgv(words: string[], userArgv: string[]): string[] {
  if (!words.length) return userArgv;
  return [userArgv[0] ?? '', ...words, '--', ...userArgv];
}

/** For listings: "after-init" and what the adapter runs before the checkpoint (its words after the adapter file). */
export function describeInitSpec(spec: string): string {
  const words = wordsOfSpec(spec);
  const adapter = words.findIndex((w) => w.endsWith('/cached-exec-resume.bash') || w.endsWith('/cached_exec_resume.py'));
  const rest = adapter >= 0 ? words.slice(adapter + 1) : words;
  return rest.length ? `after-init ${rest.join(' ')}` : 'after-init';
}

/** Variables that may differ between the snapshot and a restore: the adapter applies them. */
const PER_RUN = new Set(['_', 'PWD', 'OLDPWD', 'SHLVL']);

/** A variable a post-init image never depends on (the adapter applies it on every run; CACHED_EXEC_VARY_ENV adds names). */
export function isPerRunVariable(name: string, env: NodeJS.ProcessEnv): boolean {
  if (PER_RUN.has(name) || name.startsWith('CACHED_EXEC_')) return true;
  const vary = env.CACHED_EXEC_VARY_ENV;
  return !!vary && vary.split(',').includes(name);
}

/**
 * The environment a post-init image is for: the order-free sum of
 * cx_hash64("NAME=value") over every variable that is not per-run (never 0).
 */
export function resumeEnvHash(env: NodeJS.ProcessEnv): bigint {
  let sum = 0n;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined || isPerRunVariable(k, env)) continue;
    sum = (sum + hash64(Buffer.from(`${k}=${v}`, 'utf8'))) & 0xffffffffffffffffn;
  }
  return sum === 0n ? 1n : sum;
}
