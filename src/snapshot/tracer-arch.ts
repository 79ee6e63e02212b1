/**
 * Which register module (regs.ts) the tracer uses: the machine's own. Node
 * runs natively on the machine it snapshots (the tracee is its child).
 */
import { ARCH_AARCH64, ARCH_X86_64 } from '../image/schema.js';
import { hostMachine } from '../image/machine.js';
import type { TracerArch } from './regs.js';
import { X86_64 } from './regs-x86_64.js';
import { AARCH64 } from './regs-aarch64.js';

/** The module of the machine this process (and so the traced program) runs on, or undefined when there is none. */
export function hostArch(): TracerArch | undefined {
  switch (hostMachine()) {
    case ARCH_X86_64: return X86_64;
    case ARCH_AARCH64: return AARCH64;
    default: return undefined;
  }
}

/**
 * The tracer's machine. On a machine without a module the snapshotter
 * refuses every program before tracing (elf.ts: unported-arch), so x86_64's
 * stands in only to give the tables a value.
 */
export const ARCH: TracerArch = hostArch() ?? X86_64;
