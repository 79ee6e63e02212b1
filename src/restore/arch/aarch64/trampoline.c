/*
 * The trampoline (aarch64): position-independent code copied to an anonymous
 * page and entered with x0 = its parameter block (tramp.h cx_tramp_enter).
 * It unmaps the launcher, sets the mm fields with PR_SET_MM_MAP, and enters
 * the program: at its entry point with sp = &argc and x0 = rtld_fini (the
 * arm64 ELF entry convention), or, for a post-init image, at the svc of the
 * checkpoint read with every register, the FPSIMD state and the signal mask
 * as saved, through rt_sigreturn over the frame cpu.c built. x19 holds the
 * block throughout (svc keeps every register but x0). No literal pools: the
 * copy must not refer back to the launcher, so constants are immediates
 * (offsets above 4095 through x9).
 */
#include "tramp.h"

#define T_STR_(x) #x
#define T_STR(x) T_STR_(x)

__asm__(".text\n"
	".balign 16\n"
	".globl cx_tramp_begin\n"
	".globl cx_tramp_end\n"
	"cx_tramp_begin:\n"
	"	mov x19, x0\n"
	"	mov x9, #" T_STR(TP_SCRATCH_SP) "\n"
	"	ldr x9, [x19, x9]\n"
	"	mov sp, x9\n" /* the scratch stack: the launcher's goes away below */
	"	mov x9, #" T_STR(TP_CAPS_RAISE) "\n"
	"	ldr x9, [x19, x9]\n"
	"	cbz x9, 0f\n"
	"	mov x8, #91\n" /* capset(&hdr, raised): CAP_CHECKPOINT_RESTORE effective for the prctl only */
	"	mov x9, #" T_STR(TP_CAP_HDR) "\n"
	"	add x0, x19, x9\n"
	"	mov x9, #" T_STR(TP_CAP_RAISED) "\n"
	"	add x1, x19, x9\n"
	"	svc #0\n"
	/* munmap(launcher): the kernel refuses a new exe_fd while the old exe is mapped. */
	"0:	mov x8, #215\n"
	"	ldr x0, [x19, #0]\n"
	"	ldr x1, [x19, #8]\n"
	"	svc #0\n"
	/* prctl(PR_SET_MM, PR_SET_MM_MAP, &mm, sizeof mm, 0) */
	"1:	mov x8, #167\n"
	"	mov x0, #35\n"
	"	mov x1, #14\n"
	"	add x2, x19, #16\n"
	"	mov x3, #104\n"
	"	mov x4, #0\n"
	"	svc #0\n"
	"	cbz x0, 2f\n"
	/*
	 * Without CAP_CHECKPOINT_RESTORE exe_fd is refused: keep the launcher as
	 * exe, unless the program reads /proc/self/exe (then cold).
	 */
	"	ldr w9, [x19, #116]\n"
	"	cmn w9, #1\n"
	"	b.eq 9f\n"
	"	mov x9, #" T_STR(TP_EXE_REQUIRED) "\n"
	"	ldr x9, [x19, x9]\n"
	"	cbnz x9, 9f\n"
	"	mov w9, #-1\n"
	"	str w9, [x19, #116]\n"
	"	b 1b\n"
	"2:	mov x9, #" T_STR(TP_CAPS_RAISE) "\n"
	"	ldr x9, [x19, x9]\n"
	"	cbz x9, 4f\n"
	"	mov x8, #91\n" /* capset(&hdr, none): the program gets what an exec would give it */
	"	mov x9, #" T_STR(TP_CAP_HDR) "\n"
	"	add x0, x19, x9\n"
	"	mov x9, #" T_STR(TP_CAP_NONE) "\n"
	"	add x1, x19, x9\n"
	"	svc #0\n"
	"	cbnz x0, 9f\n"
	"	mov x8, #167\n" /* prctl(PR_SET_DUMPABLE, 1): a file capability made the process undumpable */
	"	mov x0, #4\n"
	"	mov x1, #1\n"
	"	mov x2, #0\n"
	"	mov x3, #0\n"
	"	mov x4, #0\n"
	"	svc #0\n"
	"4:	ldr x0, [x19, #120]\n" /* close(exe_fd) */
	"	tbnz x0, #63, 3f\n"
	"	mov x8, #57\n"
	"	svc #0\n"
	"3:	mov x9, #" T_STR(TP_LSTACK_LEN) "\n" /* munmap(the launcher's own stack) */
	"	ldr x1, [x19, x9]\n"
	"	cbz x1, 3f\n"
	"	mov x9, #" T_STR(TP_LSTACK_ADDR) "\n"
	"	ldr x0, [x19, x9]\n"
	"	mov x8, #215\n"
	"	svc #0\n"
	"3:	mov x9, #" T_STR(TP_KSTACK_LEN) "\n" /* post-init: munmap(the kernel's stack of this process) */
	"	ldr x1, [x19, x9]\n"
	"	cbz x1, 3f\n"
	"	mov x9, #" T_STR(TP_KSTACK_ADDR) "\n"
	"	ldr x0, [x19, x9]\n"
	"	mov x8, #215\n"
	"	svc #0\n"
	"3:	ldr x9, [x19, #176]\n"
	"	cbnz x9, 5f\n"
	"	ldr x9, [x19, #128]\n" /* entry */
	"	ldr x0, [x19, #136]\n" /* rtld_fini */
	"	ldr x10, [x19, #144]\n"
	"	mov sp, x10\n" /* &argc */
	"	mov x1, #0\n"
	"	mov x2, #0\n"
	"	mov x3, #0\n"
	"	mov x4, #0\n"
	"	mov x5, #0\n"
	"	mov x6, #0\n"
	"	mov x7, #0\n"
	"	mov x8, #0\n"
	"	mov x10, #0\n"
	"	mov x11, #0\n"
	"	mov x12, #0\n"
	"	mov x13, #0\n"
	"	mov x14, #0\n"
	"	mov x15, #0\n"
	"	mov x16, #0\n"
	"	mov x17, #0\n"
	"	mov x18, #0\n"
	"	mov x19, #0\n"
	"	mov x20, #0\n"
	"	mov x21, #0\n"
	"	mov x22, #0\n"
	"	mov x23, #0\n"
	"	mov x24, #0\n"
	"	mov x25, #0\n"
	"	mov x26, #0\n"
	"	mov x27, #0\n"
	"	mov x28, #0\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	br x9\n"
	/*
	 * Post-init. Nothing below can fail, so only now does state that
	 * survives an exec change: the resume fd loses close-on-exec, the
	 * program's dispositions and umask go in (all signals blocked meanwhile,
	 * so no handler of the program runs on this stack half-way), and
	 * rt_sigreturn loads the registers, FPSIMD state and the program's mask
	 * at once.
	 */
	"5:	mov x8, #25\n" /* fcntl(resume_fd, F_SETFD, 0) */
	"	ldr x0, [x19, #184]\n"
	"	mov x1, #2\n"
	"	mov x2, #0\n"
	"	svc #0\n"
	"	mov x8, #135\n" /* rt_sigprocmask(SIG_SETMASK, &all_signals, 0, 8) */
	"	mov x0, #2\n"
	"	add x1, x19, #200\n"
	"	mov x2, #0\n"
	"	mov x3, #8\n"
	"	svc #0\n"
	"	add x20, x19, #224\n"
	"	ldr x21, [x19, #216]\n"
	"6:	cbz x21, 7f\n"
	"	mov x8, #134\n" /* rt_sigaction(signo, &act, 0, 8) */
	"	ldr x0, [x20]\n"
	"	add x1, x20, #8\n"
	"	mov x2, #0\n"
	"	mov x3, #8\n"
	"	svc #0\n"
	"	add x20, x20, #40\n"
	"	sub x21, x21, #1\n"
	"	b 6b\n"
	"7:	ldr x0, [x19, #192]\n"
	"	tbnz x0, #63, 8f\n"
	"	mov x8, #166\n" /* umask */
	"	svc #0\n"
	/* rt_sigreturn(): sp at the frame; it returns to the svc with everything loaded. */
	"8:	mov x9, #" T_STR(TP_FRAME) "\n"
	"	ldr x9, [x19, x9]\n"
	"	mov sp, x9\n"
	"	mov x8, #139\n"
	"	svc #0\n"
	"	brk #0\n" /* not reached: a frame the kernel refused is a SIGSEGV */
	/*
	 * The launcher is gone, so the cold exec must happen here (its stack, with
	 * the argv, is still mapped). An exec of an ordinary program drops a raised
	 * capability and restores dumpable by itself.
	 */
	"9:	mov x8, #221\n"
	"	ldr x0, [x19, #152]\n"
	"	ldr x1, [x19, #160]\n"
	"	ldr x2, [x19, #168]\n"
	"	svc #0\n"
	"	mov x8, #94\n"
	"	mov x0, #127\n"
	"	svc #0\n"
	"	brk #0\n"
	"cx_tramp_end:\n");
