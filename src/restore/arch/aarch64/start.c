/*
 * Process entry (aarch64). As on x86_64 (arch/x86_64/start.c says why), the
 * launcher runs on its own stack at CX_LAUNCHER_STACK, mapped here before any
 * C code, and calls cx_main(&argc, own); if the mapping fails it runs on the
 * kernel's stack with own = 0 and only ever execs the program cold.
 * CX_LAUNCHER_STACK is 512 KiB-aligned: a mapping there is whole pages for
 * 4K, 16K and 64K kernels alike.
 */
#include "launcher.h"

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x19, sp\n" /* &argc, kept in a callee-saved register across the syscall */
	"	mov x8, #222\n" /* mmap(CX_LAUNCHER_STACK, CX_LAUNCHER_STACK_SIZE, RW, PRIVATE|ANONYMOUS|NORESERVE|FIXED_NOREPLACE, -1, 0) */
	"	ldr x0, =" CX_STR(CX_LAUNCHER_STACK) "\n"
	"	ldr x1, =" CX_STR(CX_LAUNCHER_STACK_SIZE) "\n"
	"	mov x2, #3\n"
	"	ldr x3, =0x104022\n"
	"	mov x4, #-1\n"
	"	mov x5, #0\n"
	"	svc #0\n"
	"	mov x1, #0\n"
	"	ldr x9, =" CX_STR(CX_LAUNCHER_STACK) "\n"
	"	cmp x0, x9\n"
	"	b.ne 1f\n"
	"	ldr x10, =" CX_STR(CX_LAUNCHER_STACK_SIZE) "\n"
	"	add x9, x0, x10\n"
	"	mov sp, x9\n" /* the mapping's top: 16-aligned */
	"	mov x1, #1\n"
	"1:	mov x0, x19\n" /* the kernel's sp is 16-aligned at entry on arm64: nothing to align on the fallback */
	"	bl cx_main\n"
	"	brk #0\n"
	"	.ltorg\n");

_Static_assert((0x100000 | 0x4000 | 0x20 | 0x2) == 0x104022, "MAP_FIXED_NOREPLACE|MAP_NORESERVE|MAP_ANONYMOUS|MAP_PRIVATE");
_Static_assert(CX_LAUNCHER_STACK % 0x80000 == 0 && CX_LAUNCHER_STACK_SIZE % 0x10000 == 0, "whole 64K pages");

/*
 * --internal-tsc-probe: can a read of the counter (cntvct_el0, readable at
 * EL0 without a syscall) be trapped here? PR_SET_TSC exists for arm64 from
 * Linux 6.12 (the probes: EINVAL on 6.1). Killed by SIGSEGV: it works; exit
 * 0: it does not, and the snapshotter uses its third run (src/snapshot/clock.ts).
 */
__attribute__((noreturn)) void cx_arch_counter_trap_probe(void)
{
	uint64_t v;
	sys_prctl(26 /* PR_SET_TSC */, 2 /* PR_TSC_SIGSEGV */, 0, 0, 0);
	__asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
	(void)v;
	sys_exit_group(0);
}
