/**
 * The resume protocol's context (docs/resume-protocol.md) for tests: encode
 * one, and run an adapter as a restored process would see it — with
 * CACHED_EXEC_RESUME_FD naming a pipe that already holds the context, then
 * end of file. No memory is restored here: this checks what the adapter does
 * with a context; the engine's suites check the restore itself.
 */
import { spawn } from 'node:child_process';

export const RESUME_MAGIC = 'cached-exec-resume 1';
export const TEST_RESUME_FD = 100;

export interface ResumeContext {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** 32 hex digits; random when omitted. */
  seed?: string;
}

export function encodeContext(c: ResumeContext): Buffer {
  const seed = c.seed ?? [...Array(32)].map(() => Math.floor(Math.random() * 16).toString(16)).join('');
  const env = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
  const fields = [RESUME_MAGIC, String(c.argv.length), ...c.argv, String(env.length), ...env, c.cwd, seed];
  return Buffer.from(fields.map((s) => `${s}\0`).join(''));
}

export interface RunResult {
  stdout: string;
  stderr: string;
  status: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Runs `cmd args` (the adapter, as the snapshot starts it) with the given
 * start environment plus CACHED_EXEC_RESUME_FD, feeds the context on that fd,
 * and waits. `cwd` is the process's working directory (the caller's).
 */
export function runResumed(cmd: string, args: string[], startEnv: Record<string, string>, ctx: ResumeContext | Buffer,
  opts: { cwd?: string; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  // A Buffer is sent as it is: for contexts encodeContext cannot make (protocol errors).
  const bytes = Buffer.isBuffer(ctx) ? ctx : encodeContext(ctx);
  const cwd = opts.cwd ?? (Buffer.isBuffer(ctx) ? undefined : ctx.cwd);
  return new Promise((resolve, reject) => {
    const stdio: ('pipe' | 'ignore')[] = ['pipe', 'pipe', 'pipe'];
    while (stdio.length < TEST_RESUME_FD) stdio.push('ignore');
    stdio.push('pipe');
    const child = spawn(cmd, args, {
      env: { ...startEnv, CACHED_EXEC_RESUME_FD: String(TEST_RESUME_FD) },
      cwd,
      stdio,
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const resumeFd = (child.stdio as unknown as (NodeJS.WritableStream | null)[])[TEST_RESUME_FD] ?? null;
    if (!resumeFd) {
      reject(new Error('no pipe at the resume fd'));
      return;
    }
    resumeFd.on('error', () => undefined);
    resumeFd.end(bytes);
    child.stdin?.end(opts.input ?? '');
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, status, signal });
    });
  });
}
