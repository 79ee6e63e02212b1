/*
 * A program that speaks the resume protocol (docs/resume-protocol.md) itself
 * and proves that a post-init restore gives it back every register it had
 * at the checkpoint read: the read is an svc issued from assembly with known
 * values in x7 (which arm64's ptrace shows as 0 at syscall stops), x16 and
 * x17 (intra-call scratch, live across the svc here), v0-v31 (all 128 bits)
 * and the NZCV flags; after it returns, they are compared with what was put
 * in. Built without pointer authentication (no paciasp: the pragma), since
 * a frame signed with the snapshot's keys cannot be restored (pacret.dyn.c).
 *
 * Prints "regs ok" (or the first register that differs), then its argv as
 * the context gives it (argv[0] dropped: the caller's name for it varies),
 * the working directory, and exits with argc. A cold run (no
 * CACHED_EXEC_RESUME_FD) prints the same from its own argv.
 */
#pragma GCC target("branch-protection=none")
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NV 64 /* v0-v31, two words each */
/* in/out: v0-v31, then nzcv, x7, x16, x17 */
#define NW (NV + 4)
long checkpoint_read(long fd, void *buf, const uint64_t *in, uint64_t *out);
__asm__(".text\n"
	".globl checkpoint_read\n"
	".type checkpoint_read, %function\n"
	"checkpoint_read:\n"
	"	stp x29, x30, [sp, #-80]!\n"
	"	mov x29, sp\n"
	"	stp d8, d9, [sp, #16]\n" /* callee-saved: v8-v15's low halves */
	"	stp d10, d11, [sp, #32]\n"
	"	stp d12, d13, [sp, #48]\n"
	"	stp d14, d15, [sp, #64]\n"
	"	mov x9, x2\n"
	"	mov x10, x3\n"
	"	ldp q0, q1, [x9, #0]\n"
	"	ldp q2, q3, [x9, #32]\n"
	"	ldp q4, q5, [x9, #64]\n"
	"	ldp q6, q7, [x9, #96]\n"
	"	ldp q8, q9, [x9, #128]\n"
	"	ldp q10, q11, [x9, #160]\n"
	"	ldp q12, q13, [x9, #192]\n"
	"	ldp q14, q15, [x9, #224]\n"
	"	ldp q16, q17, [x9, #256]\n"
	"	ldp q18, q19, [x9, #288]\n"
	"	ldp q20, q21, [x9, #320]\n"
	"	ldp q22, q23, [x9, #352]\n"
	"	ldp q24, q25, [x9, #384]\n"
	"	ldp q26, q27, [x9, #416]\n"
	"	ldp q28, q29, [x9, #448]\n"
	"	ldp q30, q31, [x9, #480]\n"
	"	ldr x11, [x9, #512]\n"
	"	msr nzcv, x11\n"
	"	ldr x7, [x9, #520]\n"
	"	ldr x16, [x9, #528]\n"
	"	ldr x17, [x9, #536]\n"
	"	mov x2, #1\n"
	"	mov x8, #63\n" /* read(fd, buf, 1): the checkpoint */
	"	svc #0\n"
	"	mrs x11, nzcv\n"
	"	str x11, [x10, #512]\n"
	"	str x7, [x10, #520]\n"
	"	str x16, [x10, #528]\n"
	"	str x17, [x10, #536]\n"
	"	stp q0, q1, [x10, #0]\n"
	"	stp q2, q3, [x10, #32]\n"
	"	stp q4, q5, [x10, #64]\n"
	"	stp q6, q7, [x10, #96]\n"
	"	stp q8, q9, [x10, #128]\n"
	"	stp q10, q11, [x10, #160]\n"
	"	stp q12, q13, [x10, #192]\n"
	"	stp q14, q15, [x10, #224]\n"
	"	stp q16, q17, [x10, #256]\n"
	"	stp q18, q19, [x10, #288]\n"
	"	stp q20, q21, [x10, #320]\n"
	"	stp q22, q23, [x10, #352]\n"
	"	stp q24, q25, [x10, #384]\n"
	"	stp q26, q27, [x10, #416]\n"
	"	stp q28, q29, [x10, #448]\n"
	"	stp q30, q31, [x10, #480]\n"
	"	ldp d8, d9, [sp, #16]\n"
	"	ldp d10, d11, [sp, #32]\n"
	"	ldp d12, d13, [sp, #48]\n"
	"	ldp d14, d15, [sp, #64]\n"
	"	ldp x29, x30, [sp], #80\n"
	"	ret\n"
	".size checkpoint_read, .-checkpoint_read\n");

static const char *const names[4] = { "nzcv", "x7", "x16", "x17" };

int main(int argc, char **argv)
{
	static uint64_t in[NW], out[NW];
	static char ctx[1 << 16];
	for (int i = 0; i < NV; i++)
		in[i] = 0x0123456789abcdefull * (uint64_t)(i + 1) ^ ((uint64_t)i << 56);
	in[NV] = 0xa0000000; /* N and C */
	in[NV + 1] = 0x7777777777777777ull;
	in[NV + 2] = 0x1616161616161616ull;
	in[NV + 3] = 0x1717171717171717ull;
	const char *fdenv = getenv("CACHED_EXEC_RESUME_FD");
	char **args = argv + 1;
	int nargs = argc - 1;
	char cwd[4096] = "";
	const char *bad = NULL;
	if (fdenv) {
		int fd = atoi(fdenv);
		long n = checkpoint_read(fd, ctx, in, out);
		if (n != 1)
			return 100;
		for (int i = 0; i < NW && !bad; i++)
			if (in[i] != out[i])
				bad = i < NV ? "v" : names[i - NV];
		while (n < (long)sizeof ctx - 1) {
			long r = read(fd, ctx + n, sizeof ctx - 1 - n);
			if (r <= 0)
				break;
			n += r;
		}
		close(fd);
		unsetenv("CACHED_EXEC_RESUME_FD");
		/* magic, argc, argv..., envc, env..., cwd, seed */
		static char *f[4096];
		int nf = 0;
		for (char *p = ctx; p < ctx + n && nf < 4096; p += strlen(p) + 1)
			f[nf++] = p;
		if (nf < 2 || strcmp(f[0], "cached-exec-resume 1"))
			return 101;
		nargs = atoi(f[1]) - 1;
		args = f + 3;
		int envc = atoi(f[2 + nargs + 1]);
		snprintf(cwd, sizeof cwd, "%s", f[2 + nargs + 2 + envc]);
	} else if (!getcwd(cwd, sizeof cwd)) {
		return 102;
	}
	printf("regs %s%s\n", bad ? "differ: " : "ok", bad ? bad : "");
	for (int i = 0; i < nargs; i++)
		printf("[%s]\n", args[i]);
	printf("cwd %s\n", cwd);
	return nargs;
}
