/*
 * The floor: a static program without libc that exits at once. Its start-up
 * time is what the kernel charges for exec + exit alone; no restore can get a
 * program running faster than this.
 *
 *   cc -nostdlib -static -O2 -o build/bench/exit-floor benchmarks/exit.c
 */
__asm__(".globl _start\n"
	"_start:\n"
	"	mov $60, %eax\n" /* exit */
	"	xor %edi, %edi\n"
	"	syscall\n");
