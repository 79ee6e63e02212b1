/**
 * Building blocks for corpus suites: a case is one command line run cold and
 * restored; the two runs must agree exactly on stdout, stderr, exit status and
 * terminating signal (after the named normalisations, which only ever hide
 * values that legitimately differ between two processes, such as the pid).
 */
import { expect } from 'vitest';
import * as path from 'node:path';
import { isMarked } from '../../src/cli/commands/shims-marker.js';
import {
  observable, resolveOnPath, run, runCold, runRestored, type Env, type Normalize, type RunOptions, type RunResult,
} from './cx.js';

export interface Case {
  title: string;
  args: string[];
  input?: string | Buffer;
  env?: Env;
  cwd?: string;
  normalize?: Normalize[];
  /** Extra checks on each run (both cold and restored). */
  check?: (r: RunResult, mode: 'cold' | 'restored') => void;
}

/** Arguments that break naive argv handling. */
export const AWKWARD_ARGS = [
  'plain',
  'with space',
  '  leading and trailing  ',
  'line1\nline2\n',
  '',
  'tab\there',
  "quote ' and \" and \\ backslash",
  '$HOME `not expanded` $(nor this)',
  '*',
  '-n',
  '--',
  'ünïcödé ✓',
  'x'.repeat(5000),
];

/** Hundreds of variables with long values (about 600 KB), deterministic. */
export function bigEnv(base: Env): Env {
  const env: Env = { ...base };
  for (let i = 0; i < 400; i++) {
    const n = String(i).padStart(3, '0');
    const len = 50 + ((i * 7919) % 2500);
    let v = '';
    while (v.length < len) v += `v${n}-${v.length} =;:'"\\ `;
    env[`CX_BIG_${n}`] = v.slice(0, len);
  }
  env.CX_BIG_NEWLINE = 'first\nsecond\nthird';
  env.CX_BIG_EMPTY = '';
  env.CX_BIG_HUGE = 'H'.repeat(100_000);
  return env;
}

export async function runBoth(prog: string, c: Case, env: Env): Promise<{ cold: RunResult; restored: RunResult }> {
  const opts: RunOptions = { env: c.env ?? env, input: c.input, cwd: c.cwd };
  const cold = await runCold(prog, c.args, opts);
  const restored = await runRestored(prog, c.args, opts);
  return { cold, restored };
}

/** Runs a case cold and restored and asserts they are indistinguishable. */
export async function expectSame(prog: string, c: Case, env: Env): Promise<{ cold: RunResult; restored: RunResult }> {
  const { cold, restored } = await runBoth(prog, c, env);
  expect(cold.timedOut, 'cold run timed out').toBe(false);
  expect(restored.timedOut, 'restored run timed out').toBe(false);
  const norm = c.normalize ?? [];
  expect(observable(restored, ...norm), `${prog} ${c.title}: restored differs from cold`).toEqual(
    observable(cold, ...norm),
  );
  c.check?.(cold, 'cold');
  c.check?.(restored, 'restored');
  return { cold, restored };
}

/**
 * A case through a shim, as a shell runs a program found on PATH: execve of
 * <shims>/PROG with argv[0] PROG and the shim directory first on PATH (a case
 * without PATH: the shim's path exec'd directly, as `env -i /path/shim` does),
 * against the real program exec'd directly with the same environment and the
 * argv[0] the launcher's contract gives it: the caller's, or the program's path
 * when its shim is marked self-locating (README, "Masquerade"). They must agree.
 */
export async function expectSameViaShim(prog: string, c: Case, env: Env, shims: string): Promise<{ plain: RunResult; shimmed: RunResult }> {
  const base: Env = { ...(c.env ?? env) };
  delete base.CACHED_EXEC_DISABLE;
  const shimEnv: Env = base.PATH === undefined ? base : { ...base, PATH: `${shims}:${base.PATH}` };
  const real = resolveOnPath(prog, base.PATH ?? '/bin:/usr/bin', false) ?? prog;
  const argv0 = base.PATH !== undefined && isMarked(path.join(shims, prog)) ? real : prog;
  const plain = await run(real, c.args, { env: shimEnv, input: c.input, cwd: c.cwd, argv0 });
  const shimmed = await run(path.join(shims, prog), c.args, { env: shimEnv, input: c.input, cwd: c.cwd, argv0: prog });
  expect(plain.timedOut, 'plain run timed out').toBe(false);
  expect(shimmed.timedOut, 'run through the shim timed out').toBe(false);
  const norm = c.normalize ?? [];
  expect(observable(shimmed, ...norm), `${prog} ${c.title}: through a shim differs from the program exec'd directly`).toEqual(observable(plain, ...norm));
  c.check?.(plain, 'cold');
  c.check?.(shimmed, 'restored');
  return { plain, shimmed };
}

/** Exit codes sampled over 0..255 (and one that wraps). */
export const EXIT_CODES = [0, 1, 2, 3, 42, 100, 126, 127, 128, 129, 200, 254, 255];
