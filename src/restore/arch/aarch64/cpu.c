/*
 * What a restore must know about the aarch64 CPU: the thread pointer
 * (tpidr_el0, set with msr: no syscall, as the loaders do it) and the
 * post-init checks. Post-init images are not ported to aarch64 yet: their
 * RESUME section holds x86_64 registers and an XSAVE area, so every
 * post-init image is refused here (CX_FAIL_RESUME: a cold run) before the
 * launcher changes anything.
 */
#include "tramp.h"

/*
 * The CPU an image's code was chosen for: glibc's IFUNC resolvers on aarch64
 * choose by the kernel's hwcaps (SVE, MOPS, ...), which it hands every
 * program in the auxv.
 */
uint32_t cx_arch_cpu_id(const uint64_t *auxv)
{
	uint64_t v[2] = { cx_auxv_get(auxv, AT_HWCAP), cx_auxv_get(auxv, AT_HWCAP2) };
	return (uint32_t)cx_hash64(v, sizeof v, CX_FNV_OFFSET) | 1u; /* never 0 */
}

enum cx_outcome cx_arch_check_resume_cpu(const struct image *im)
{
	(void)im;
	return CX_FAIL_RESUME;
}

enum cx_outcome cx_arch_check_resume_insn(const struct image *im)
{
	(void)im;
	return CX_FAIL_RESUME;
}

long cx_arch_set_thread_pointer(uint64_t tp)
{
	__asm__ volatile("msr tpidr_el0, %0" : : "r"(tp) : "memory");
	return 0;
}

void cx_arch_resume_params(const struct image *im, struct tramp_params *p, unsigned char *code)
{
	/* Unreachable: cx_arch_check_resume_cpu refused the image. */
	(void)im, (void)p, (void)code;
}
