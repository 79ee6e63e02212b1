/** What machine the figures come from: printed at the top of every result. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';

export interface Machine {
  date: string;
  kernel: string;
  glibc: string;
  cpu: string;
  cores: number;
  memGiB: number;
  node: string;
  cc: string;
  hyperfine: string;
  commit: string;
  virt: string;
}

function first(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd });
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : '';
}

export function machine(root: string, cc: string | null): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) cpu = m[1].trim();
  } catch { /* keep os.cpus() */ }
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const glibc = report?.header?.glibcVersionRuntime ?? (first('getconf', ['GNU_LIBC_VERSION']) || 'unknown');
  const dirty = first('git', ['status', '--porcelain', '--untracked-files=no'], root) ? ' (with local changes)' : '';
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    glibc,
    cpu,
    cores: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    cc: cc ?? 'none',
    hyperfine: first('hyperfine', ['--version']) || 'not installed',
    commit: (first('git', ['rev-parse', '--short', 'HEAD'], root) || 'unknown') + dirty,
    virt: first('systemd-detect-virt', []) || 'unknown',
  };
}
