/*
 * What a restore must know about the aarch64 CPU: the thread pointer
 * (tpidr_el0, set with msr: no syscall, as the loaders do it) and, for a
 * post-init image, its registers (the XSTATE section: struct
 * cx_resume_aarch64), checked here before the launcher changes anything and
 * turned into the signal frame the trampoline's rt_sigreturn loads.
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

#define PR_SVE_GET_VL 51
#define PR_SVE_VL_LEN_MASK 0xffff
#define SVC0 0xd4000001u
/* PSTATE bits a restore keeps: the condition flags NZCV and SSBS; the rest is the kernel's (EL0t, DAIF clear). */
#define PSTATE_KEPT (0xf0000000ull | (1ull << 12))

static const struct cx_resume_aarch64 *state(const struct image *im)
{
	return (const struct cx_resume_aarch64 *)im->xstate;
}

/*
 * The CPU state the image needs: an XSTATE section of the right size, and
 * the SVE vector length the init ran with. At the checkpoint's syscall the
 * kernel had dropped SVE state beyond the FPSIMD view, so the FPSIMD
 * registers are all there is to load; but code the init chose or sized by
 * the vector length (a vector-length-agnostic loop's saved counters) must
 * see the same length, so this thread's (a fresh exec's default, which
 * prctl could have changed only through PR_SVE_SET_VL: the init may not
 * call it) must equal it. No SVE (EINVAL) is length 0 on both sides.
 */
enum cx_outcome cx_arch_check_resume_cpu(const struct image *im)
{
	const struct cx_resume *r = im->resume;
	if (r->xstate_size != sizeof(struct cx_resume_aarch64) || im->xstate_len != r->xstate_size || r->xfeatures)
		return CX_FAIL_RESUME;
	long vl = sys_prctl(PR_SVE_GET_VL, 0, 0, 0, 0);
	uint32_t own = vl < 0 ? 0 : (uint32_t)(vl & PR_SVE_VL_LEN_MASK);
	if (own != state(im)->sve_vl || state(im)->reserved)
		return CX_FAIL_RESUME;
	return CX_HIT;
}

/*
 * read(resume_fd, buf, n) from the svc #0 just before pc: x8 the number, x0
 * the fd, the svc in a readable region of the image, sp in the image.
 */
enum cx_outcome cx_arch_check_resume_regs(const struct image *im)
{
	const struct cx_resume_aarch64 *a = state(im);
	const struct cx_region *code;
	if (a->x[8] != __NR_read || a->x[0] != im->resume->resume_fd || a->pc < 4 || (a->pc & 3) || (a->sp & 15))
		return CX_FAIL_RESUME;
	code = region_at(im, a->pc - 4, 4);
	if (!code || !(code->prot & CX_PROT_READ) || !region_at(im, a->sp, 8))
		return CX_FAIL_RESUME;
	return CX_HIT;
}

/* Post-init: what the signal frame returns to is the svc #0 the thread stopped after. */
enum cx_outcome cx_arch_check_resume_insn(const struct image *im)
{
	const volatile uint32_t *p = (const uint32_t *)(state(im)->pc - 4);
	return *p == SVC0 ? CX_HIT : CX_FAIL_RESUME;
}

uint64_t cx_arch_resume_sp(const struct image *im) { return state(im)->sp; }

/* The signal frame, 16-byte aligned (rt_sigreturn refuses another sp). */
uint64_t cx_arch_resume_room(const struct image *im)
{
	(void)im;
	return sizeof(struct a64_rt_sigframe) + 16;
}

long cx_arch_set_thread_pointer(uint64_t tp)
{
	__asm__ volatile("msr tpidr_el0, %0" : : "r"(tp) : "memory");
	return 0;
}

/*
 * The frame rt_sigreturn loads (tramp.h): every register as the program had
 * it at the svc, pc on the svc so the read is issued again, the FPSIMD
 * registers in an fpsimd_context record, then the end record; the signal
 * mask is the program's (rt_sigreturn sets it as it returns, so no handler
 * runs on the trampoline's stack before); no alternate signal stack (the
 * init may not set one).
 */
void cx_arch_resume_params(const struct image *im, struct tramp_params *p, unsigned char *code)
{
	(void)code;
	const struct cx_resume_aarch64 *a = state(im);
	struct a64_rt_sigframe *f = (struct a64_rt_sigframe *)(((uint64_t)(p + 1) + 15) & ~15ull);
	__builtin_memset(f, 0, sizeof *f);
	f->uc.ss_flags = 2; /* SS_DISABLE */
	f->uc.uc_sigmask = im->resume->sigmask;
	struct a64_sigcontext *sc = &f->uc.mcontext;
	for (int i = 0; i < 31; i++)
		sc->regs[i] = a->x[i];
	sc->sp = a->sp;
	sc->pc = a->pc - 4;
	sc->pstate = a->pstate & PSTATE_KEPT;
	struct a64_fpsimd_context *fp = (struct a64_fpsimd_context *)sc->reserved;
	fp->magic = A64_FPSIMD_MAGIC;
	fp->size = sizeof *fp;
	fp->fpsr = a->fpsr;
	fp->fpcr = a->fpcr;
	for (int i = 0; i < 64; i++)
		fp->vregs[i] = a->v[i];
	/* The end record (magic 0, size 0) follows: already zero. */
	p->frame = (uint64_t)f;
}
