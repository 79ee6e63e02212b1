/**
 * Loaders that are their program's C library (musl: `/lib/ld-musl-x86_64.so.1`
 * is a symlink to musl's `libc.so`, one file mapped once), as opposed to
 * glibc's separate `ld.so` and `libc.so.6`.
 *
 * What differs before the entry point, and what the snapshot does about it:
 *  - Such a loader reads its own variables (musl: `LD_LIBRARY_PATH`,
 *    `LD_PRELOAD`) right after setting up the thread pointer and the tid
 *    address and before any further syscall, and needs no path syscall at all
 *    for a program that only needs the C library. The environment trap is
 *    armed at the first syscall after `set_tid_address` (trace.ts), or at a
 *    path syscall if one comes first, as for glibc.
 *  - It keeps no pointer to argc (glibc's `__libc_stack_end`): the entry
 *    point gets `sp` and the C library's start code finds everything from it.
 *    The image then has no `ARGC_ADDR` slot, and none is required.
 *  - It jumps to the entry point with whatever its last code left in `rdx`
 *    (musl: a dead stack address), where glibc's loader passes `_dl_fini` for
 *    the program to register with `atexit`. The C library's start code,
 *    which is the loader's own, ignores it: the image records 0, what the
 *    kernel passes a static program.
 *  - No library constructor runs before the entry point: musl runs them from
 *    `__libc_start_main`, called by the program's `_start`, in the restored
 *    process. So does the rest of `__init_libc` (`__environ`, `libc.auxv`,
 *    `__progname`, the stack protector guard from `AT_RANDOM`).
 *
 * Detected from the interpreter file, not by name: it defines
 * `__libc_start_main`, the C library's start routine that every program's
 * `crt1` calls (glibc's `ld.so` does not; `libc.so.6` does).
 */
import { definedFunctions } from './elfsym.js';

const LIBC_START = new Set(['__libc_start_main']);

/**
 * Whether the program interpreter `interp` (PT_INTERP) is also the C library.
 * Read at every snapshot (one symbol table): a daemon must not remember a file
 * that an upgrade may replace.
 */
export function loaderIsLibc(interp: string): boolean {
  return definedFunctions(interp, LIBC_START).length > 0;
}
