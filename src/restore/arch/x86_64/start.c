/*
 * Process entry (x86_64): the kernel's initial stack pointer goes to
 * cx_main as &argc, and CX_STACK_GAP bytes below the kernel's frame are left
 * untouched (stack.c may grow the frame into them).
 */
#include "launcher.h"

_Static_assert(CX_STACK_GAP == 16384, "_start reserves CX_STACK_GAP");

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	/* Leave CX_STACK_GAP untouched below the kernel's frame: stack.c may grow it. */
	"	sub $16384, %rsp\n"
	"	and $-16, %rsp\n"
	"	call cx_main\n"
	"	hlt\n");

/*
 * --internal-tsc-probe: does PR_TSC_SIGSEGV work here? Some hypervisors
 * ignore CR4.TSD: rdtsc then runs on and the snapshotter cannot answer it
 * (src/snapshot/clock.ts). Killed by SIGSEGV: it works; exit 0: it does not.
 */
__attribute__((noreturn)) void cx_arch_counter_trap_probe(void)
{
	uint32_t lo, hi;
	sys_prctl(26 /* PR_SET_TSC */, 2 /* PR_TSC_SIGSEGV */, 0, 0, 0);
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	(void)lo, (void)hi;
	sys_exit_group(0);
}
