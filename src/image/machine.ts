/**
 * The machine an image belongs to: its architecture (ELF e_machine) and page
 * size. The writer records both in the header; the launcher (check_header)
 * and check.ts refuse an image whose values are not this machine's, with
 * FAIL_ARCH or FAIL_PAGE_SIZE: the run is cold.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { LAUNCHER } from '../common/package.js';
import { ARCH_AARCH64, ARCH_X86_64 } from './schema.js';

/** e_machine → the name users know (uname -m). */
const ARCH_NAMES: Readonly<Record<number, string>> = { [ARCH_X86_64]: 'x86_64', [ARCH_AARCH64]: 'aarch64' };

export function archName(machine: number): string {
  return ARCH_NAMES[machine] ?? `e_machine ${machine}`;
}

/**
 * This process's architecture as an ELF e_machine. Node runs natively on the
 * machine it snapshots (the tracee is its own child), so its process.arch is
 * the program's. Unknown architectures get 0, which no image matches.
 */
export function hostMachine(): number {
  switch (process.arch) {
    case 'x64': return ARCH_X86_64;
    case 'arm64': return ARCH_AARCH64;
    default: return 0;
  }
}

let pageSizeCache: number | undefined;

/**
 * AT_PAGESZ from /proc/self/auxv (4096 when it cannot be read). The kernel
 * gives every process the same value, so this is also the traced program's.
 */
export function systemPageSize(): number {
  if (pageSizeCache === undefined) {
    pageSizeCache = 4096;
    try {
      const a = fs.readFileSync('/proc/self/auxv');
      for (let i = 0; i + 16 <= a.length; i += 16) {
        const type = a.readBigUInt64LE(i);
        if (type === 0n) break;
        if (type === 6n /* AT_PAGESZ */) pageSizeCache = Number(a.readBigUInt64LE(i + 8));
      }
    } catch { /* not Linux-like: keep the default */ }
  }
  return pageSizeCache;
}

let cpuIdCache: number | undefined;

/**
 * This machine's CPU id as the launcher computes it (cx_arch_cpu_id: cpuid
 * leaves on x86_64, the hwcaps on aarch64), asked once per process. An image
 * records it, and the launcher restores only on a CPU with the same id
 * (FAIL_CPU): the C library chose code for the CPU it ran on. 0, which no
 * machine has, when the launcher cannot say: such an image never restores.
 */
export function hostCpuId(launcher: string = LAUNCHER): number {
  if (cpuIdCache === undefined) {
    const r = spawnSync(launcher, ['--internal-cpu-id'], { encoding: 'utf8', timeout: 30_000 });
    const m = r.status === 0 ? /^([0-9a-f]{8})\n$/.exec(r.stdout) : null;
    cpuIdCache = m ? parseInt(m[1] as string, 16) : 0;
  }
  return cpuIdCache;
}

