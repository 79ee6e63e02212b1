/*
 * The floor: a static program without libc that exits at once. Its start-up
 * time is what the kernel charges for exec + exit alone; no restore can get a
 * program running faster than this.
 *
 *   cc -nostdlib -static -O2 -o build/bench/exit-floor benchmarks/exit.c
 *
 * For the arm64 test guest it is cross-built on the host
 * (scripts/arm64/lib/cross.mjs): the guest has no compiler.
 */
#if defined(__x86_64__)
__asm__(".globl _start\n"
	"_start:\n"
	"	mov $60, %eax\n" /* exit */
	"	xor %edi, %edi\n"
	"	syscall\n");
#elif defined(__aarch64__)
__asm__(".globl _start\n"
	"_start:\n"
	"	mov x8, #93\n" /* exit */
	"	mov x0, #0\n"
	"	svc #0\n");
#else
#error "exit.c: no floor program for this architecture"
#endif
