/**
 * Why a post-init snapshot was refused, in the init's own words. The
 * snapshotter sees a write or an exit at the system-call level ("the init
 * wrote to its stderr"); what the user needs is the message itself (python's
 * ModuleNotFoundError for a --preload typo, the rc file's error). The cold
 * path of the adapters hides such failures on purpose (a cold run falls back
 * to the plain program), so the init is run once more as the snapshot runs it.
 */
import { spawnSync, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import { RESUME_FD, RESUME_FD_ENV, afterInitArgv, kindOfWords } from '../resume/spec.js';

/** Refusals that an init which fails or prints on its own explains (not the program's kind or rights). */
export const DIAGNOSABLE = new Set<string>(['exited-before-entry', 'unsupported-syscall', 'timeout', 'unexplained-difference', 'internal']);

/**
 * Runs the init once more the way the snapshot runs it (the adapter with the
 * resume fd set, so that a failing init fails instead of falling back to a
 * cold run), with an empty context (/dev/null on the resume fd: the adapter
 * then stops with "bad resume context"), and returns what went wrong in the
 * init's own words, e.g. "the init fails (exit 1): ModuleNotFoundError: No
 * module named 'x'", or null when it ran cleanly and silently (the refusal
 * then has another cause).
 */
export function initFailure(exe: string, program: string, words: string[], env: NodeJS.ProcessEnv): { reason: string; text: string } | null {
  if (kindOfWords(words) === 'generic') return null;
  const argv = afterInitArgv(words, [program]);
  let devNull: number;
  try {
    devNull = fs.openSync('/dev/null', 'r');
  } catch {
    return null;
  }
  try {
    const stdio: StdioOptions = ['ignore', 'pipe', 'pipe'];
    for (let fd = 3; fd < RESUME_FD; fd++) stdio.push('ignore');
    stdio.push(devNull);
    const r = spawnSync(exe, argv.slice(1), {
      argv0: argv[0], env: { ...env, [RESUME_FD_ENV]: String(RESUME_FD) }, stdio, encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL',
    });
    if (r.error) return null;
    const lines = (t: string | null): string[] => (t ?? '').split('\n').map((l) => l.trim()).filter((l) => l && l !== 'cached-exec: bad resume context');
    const err = lines(r.stderr);
    const out = lines(r.stdout);
    const own = (ls: string[], pick: 'first' | 'last'): string => (ls.length ? `: ${pick === 'last' ? ls.at(-1) : ls[0]}` : '');
    if (r.signal) return { reason: 'init-failed', text: `the init was killed by ${r.signal}${own(err, 'last')}` };
    // 125: the adapter reached the checkpoint and found the empty context, i.e. the init itself succeeded.
    if (r.status !== 0 && r.status !== 125) return { reason: 'init-failed', text: `the init fails (exit ${r.status})${own(err, 'last')}` };
    if (err.length) return { reason: 'init-output', text: `the init writes to stderr${own(err, 'last')}` };
    if (out.length) return { reason: 'init-output', text: `the init writes to stdout${own(out, 'first')}` };
    return null;
  } finally {
    fs.closeSync(devNull);
  }
}
