/*
 * Process entry (x86_64). The launcher does not run on the kernel's stack:
 * it maps its own at CX_LAUNCHER_STACK (just below its text, where programs
 * never live) and calls cx_main(&argc, own). Why:
 *  - the kernel's stack stays as the kernel built it, so stack.c can rebuild
 *    the program's initial frame below the kernel's without running into the
 *    launcher's live frames, and a tiny RLIMIT_STACK (ulimit -s 16) costs the
 *    launcher nothing: it never grows that stack;
 *  - the launcher's frames can never sit where an image wants a region (the
 *    image's addresses were the snapshot's, and the kernel's stack is random);
 *  - the trampoline's cold exec still finds the launcher's data there after
 *    the launcher's own image is unmapped; it unmaps this stack last.
 * If the mapping fails (RLIMIT_DATA, RLIMIT_AS), cx_main runs on the kernel's
 * stack with own = 0 and only ever execs the program cold.
 */
#include "launcher.h"

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %r12\n" /* &argc, kept in a callee-saved register across the syscall */
	"	mov $9, %eax\n" /* mmap(CX_LAUNCHER_STACK, CX_LAUNCHER_STACK_SIZE, RW, PRIVATE|ANONYMOUS|NORESERVE|FIXED_NOREPLACE, -1, 0) */
	"	mov $" CX_STR(CX_LAUNCHER_STACK) ", %rdi\n"
	"	mov $" CX_STR(CX_LAUNCHER_STACK_SIZE) ", %rsi\n"
	"	mov $3, %edx\n"
	"	mov $0x104022, %r10d\n"
	"	mov $-1, %r8\n"
	"	xor %r9d, %r9d\n"
	"	syscall\n"
	"	mov %r12, %rdi\n"
	"	xor %esi, %esi\n"
	"	mov $" CX_STR(CX_LAUNCHER_STACK) ", %rcx\n"
	"	cmp %rcx, %rax\n"
	"	jne 1f\n"
	"	lea " CX_STR(CX_LAUNCHER_STACK_SIZE) "(%rax), %rsp\n"
	"	mov $1, %esi\n"
	"1:	and $-16, %rsp\n"
	"	call cx_main\n"
	"	hlt\n");

_Static_assert((0x100000 | 0x4000 | 0x20 | 0x2) == 0x104022, "MAP_FIXED_NOREPLACE|MAP_NORESERVE|MAP_ANONYMOUS|MAP_PRIVATE");

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
