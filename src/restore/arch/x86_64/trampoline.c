/*
 * The trampoline (x86_64): position-independent code copied to an anonymous
 * page and jumped to with %rdi = its parameter block (tramp.h). It unmaps the
 * launcher, sets the mm fields with PR_SET_MM_MAP, and enters the program:
 * at its entry point with rsp = &argc and rdx = rtld_fini, or, for a post-init
 * image, at the checkpoint's syscall instruction with every register, the
 * signal state and the FPU state as saved.
 */
#include "tramp.h"

__asm__(".text\n"
	".balign 16\n"
	".globl cx_tramp_begin\n"
	".globl cx_tramp_end\n"
	".globl cx_tramp_target\n"
	"cx_tramp_begin:\n"
	"	mov %rdi, %r12\n"
	"	mov 7032(%r12), %rsp\n" /* the scratch stack: the launcher's goes away below */
	"	cmpq $0, 7064(%r12)\n"
	"	je 0f\n"
	"	mov $126, %eax\n" /* capset(&hdr, raised): CAP_CHECKPOINT_RESTORE effective for the prctl only */
	"	lea 7072(%r12), %rdi\n"
	"	lea 7080(%r12), %rsi\n"
	"	syscall\n"
	/* munmap(launcher): the kernel refuses a new exe_fd while the old exe is mapped. */
	"0:	mov $11, %eax\n"
	"	mov 0(%r12), %rdi\n"
	"	mov 8(%r12), %rsi\n"
	"	syscall\n"
	/* prctl(PR_SET_MM, PR_SET_MM_MAP, &mm, sizeof mm, 0) */
	"1:	mov $157, %eax\n"
	"	mov $35, %edi\n"
	"	mov $14, %esi\n"
	"	lea 16(%r12), %rdx\n"
	"	mov $104, %r10d\n"
	"	xor %r8d, %r8d\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jz 2f\n"
	/*
	 * Without CAP_CHECKPOINT_RESTORE exe_fd is refused: keep the launcher as
	 * exe, unless the program reads /proc/self/exe (then cold).
	 */
	"	cmpl $-1, 116(%r12)\n"
	"	je 9f\n"
	"	cmpq $0, 7056(%r12)\n"
	"	jne 9f\n"
	"	movl $-1, 116(%r12)\n"
	"	jmp 1b\n"
	"2:	cmpq $0, 7064(%r12)\n"
	"	je 4f\n"
	"	mov $126, %eax\n" /* capset(&hdr, none): the program gets what an exec would give it */
	"	lea 7072(%r12), %rdi\n"
	"	lea 7104(%r12), %rsi\n"
	"	syscall\n"
	"	test %rax, %rax\n"
	"	jnz 9f\n"
	"	mov $157, %eax\n" /* prctl(PR_SET_DUMPABLE, 1): a file capability made the process undumpable */
	"	mov $4, %edi\n"
	"	mov $1, %esi\n"
	"	xor %edx, %edx\n"
	"	xor %r10d, %r10d\n"
	"	xor %r8d, %r8d\n"
	"	syscall\n"
	"4:	mov 120(%r12), %rdi\n"
	"	test %rdi, %rdi\n"
	"	js 3f\n"
	"	mov $3, %eax\n"
	"	syscall\n"
	"3:	mov 7048(%r12), %rsi\n" /* munmap(the launcher's own stack) */
	"	test %rsi, %rsi\n"
	"	jz 3f\n"
	"	mov $11, %eax\n"
	"	mov 7040(%r12), %rdi\n"
	"	syscall\n"
	"3:	mov 7136(%r12), %rsi\n" /* post-init: munmap(the kernel's stack of this process) */
	"	test %rsi, %rsi\n"
	"	jz 3f\n"
	"	mov $11, %eax\n"
	"	mov 7128(%r12), %rdi\n"
	"	syscall\n"
	"3:	cmpq $0, 176(%r12)\n"
	"	jne 5f\n"
	"	mov 128(%r12), %rcx\n"
	"	mov 136(%r12), %rdx\n"
	"	mov 144(%r12), %rsp\n"
	"	xor %eax, %eax\n"
	"	xor %ebx, %ebx\n"
	"	xor %esi, %esi\n"
	"	xor %edi, %edi\n"
	"	xor %ebp, %ebp\n"
	"	xor %r8d, %r8d\n"
	"	xor %r9d, %r9d\n"
	"	xor %r10d, %r10d\n"
	"	xor %r11d, %r11d\n"
	"	xor %r13d, %r13d\n"
	"	xor %r14d, %r14d\n"
	"	xor %r15d, %r15d\n"
	"	xor %r12d, %r12d\n"
	"	jmp *%rcx\n"
	/*
	 * Post-init. Nothing below can fail, so only now does state that
	 * survives an exec change: the resume fd loses close-on-exec, the
	 * program's dispositions, umask and mask go in (all signals blocked
	 * meanwhile, so no handler of the program runs on this stack half-way).
	 */
	"5:	mov $72, %eax\n" /* fcntl(resume_fd, F_SETFD, 0) */
	"	mov 184(%r12), %rdi\n"
	"	mov $2, %esi\n"
	"	xor %edx, %edx\n"
	"	syscall\n"
	"	mov $14, %eax\n" /* rt_sigprocmask(SIG_SETMASK, &all_signals, 0, 8) */
	"	mov $2, %edi\n"
	"	lea 200(%r12), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	lea 376(%r12), %rbx\n"
	"	mov 216(%r12), %r13\n"
	"6:	test %r13, %r13\n"
	"	jz 7f\n"
	"	mov $13, %eax\n" /* rt_sigaction(signo, &act, 0, 8) */
	"	mov 0(%rbx), %rdi\n"
	"	lea 8(%rbx), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	"	add $40, %rbx\n"
	"	dec %r13\n"
	"	jmp 6b\n"
	"7:	mov 192(%r12), %rdi\n"
	"	test %rdi, %rdi\n"
	"	js 8f\n"
	"	mov $95, %eax\n" /* umask */
	"	syscall\n"
	"8:	mov $14, %eax\n" /* rt_sigprocmask(SIG_SETMASK, &sigmask, 0, 8) */
	"	mov $2, %edi\n"
	"	lea 208(%r12), %rsi\n"
	"	xor %edx, %edx\n"
	"	mov $8, %r10d\n"
	"	syscall\n"
	/* FPU, SSE, AVX... as saved; from here on no instruction may touch them. */
	"	mov 224(%r12), %rbx\n"
	"	mov 232(%r12), %eax\n"
	"	mov 236(%r12), %edx\n"
	"	xrstor64 (%rbx)\n"
	/* Flags through the scratch stack, the last use of it; mov leaves them alone. */
	"	pushq 240(%r12)\n"
	"	popfq\n"
	"	mov 248(%r12), %r15\n"
	"	mov 256(%r12), %r14\n"
	"	mov 264(%r12), %r13\n"
	"	mov 280(%r12), %rbp\n"
	"	mov 288(%r12), %rbx\n"
	"	mov 296(%r12), %r11\n"
	"	mov 304(%r12), %r10\n"
	"	mov 312(%r12), %r9\n"
	"	mov 320(%r12), %r8\n"
	"	mov 328(%r12), %rax\n"
	"	mov 336(%r12), %rcx\n"
	"	mov 344(%r12), %rdx\n"
	"	mov 352(%r12), %rsi\n"
	"	mov 360(%r12), %rdi\n"
	"	mov 368(%r12), %rsp\n"
	"	mov 272(%r12), %r12\n" /* the base register last */
	/* To the syscall instruction: read(resume_fd, buf, n) again, with the snapshot's registers. */
	"	jmp *cx_tramp_target(%rip)\n"
	"	.balign 8\n"
	"cx_tramp_target:\n"
	"	.quad 0\n"
	/*
	 * The launcher is gone, so the cold exec must happen here (its stack, with
	 * the argv, is still mapped). An exec of an ordinary program drops a raised
	 * capability and restores dumpable by itself.
	 */
	"9:	mov $59, %eax\n"
	"	mov 152(%r12), %rdi\n"
	"	mov 160(%r12), %rsi\n"
	"	mov 168(%r12), %rdx\n"
	"	syscall\n"
	"	mov $231, %eax\n"
	"	mov $127, %edi\n"
	"	syscall\n"
	"	hlt\n"
	"cx_tramp_end:\n");
