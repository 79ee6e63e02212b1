/*
 * What a restore must know about the x86_64 CPU and its registers: whether a
 * post-init image's XSAVE state can be loaded here, the instruction a resumed
 * thread re-enters, the thread pointer (%fs), and the registers the
 * trampoline loads.
 */
#include "tramp.h"

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/*
 * The CPU an image's code was chosen for. glibc's IFUNC resolvers (memcpy,
 * strlen: AVX2, AVX-512, ERMS...) and ld.so's own choices (the lazy-binding
 * trampoline: xsavec or xsave) ran before the snapshot and their answers are
 * in the image: restored on a CPU without those instructions, the program
 * would die of SIGILL. A cache on a home shared by machines, or a VM moved to
 * another host, meets that. The leaves glibc's cpu_features reads: 1 (family,
 * model, stepping; SSE to AVX, FMA, OSXSAVE; not EBX, which holds the APIC
 * id of the core we run on), 7.0 (AVX2, AVX-512, BMI, ERMS, FSRM), 0xd.1
 * (XSAVEC), 0x80000001 (LZCNT, ...). A leaf beyond the CPU's maximum returns
 * another leaf's values, the same on every run of one CPU: fine for an id.
 * Four cpuid instructions, each a VM exit under a hypervisor (~2 us here).
 */
uint32_t cx_arch_cpu_id(const uint64_t *auxv)
{
	(void)auxv;
	uint32_t v[9], r[4];
	cpuid(1, 0, r);
	v[0] = r[0], v[1] = r[2], v[2] = r[3];
	cpuid(7, 0, r);
	v[3] = r[1], v[4] = r[2], v[5] = r[3];
	cpuid(0xd, 1, r);
	v[6] = r[0];
	cpuid(0x80000001u, 0, r);
	v[7] = r[2], v[8] = r[3];
	return (uint32_t)cx_hash64(v, sizeof v, CX_FNV_OFFSET) | 1u; /* never 0 */
}

/*
 * The trampoline loads the saved FPU/SSE/AVX state with xrstor, past the
 * point of no return, so everything xrstor would fault on is ruled out here:
 * another XCR0 (a CPU or kernel with other features), a non-standard XSAVE
 * header, reserved MXCSR bits, components outside XCR0, and AMX tile data
 * (usable only after a permission request this process never made).
 */
enum cx_outcome cx_arch_check_resume_cpu(const struct image *im)
{
	const struct cx_resume *r = im->resume;
	const unsigned char *x = im->xstate;
	uint32_t c[4], lo, hi, mxcsr;
	uint64_t bv;
	cpuid(1, 0, c);
	if (!(c[2] & (1u << 27))) /* OSXSAVE: without it xgetbv and xrstor fault */
		return CX_FAIL_RESUME;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if (((uint64_t)hi << 32 | lo) != r->xfeatures)
		return CX_FAIL_RESUME;
	cpuid(0xd, 0, c); /* ebx: the XSAVE area size for the features XCR0 enables */
	if (r->xstate_size < 576 || r->xstate_size != im->xstate_len || r->xstate_size < c[1] ||
	    r->xstate_size > MAX_XSTATE)
		return CX_FAIL_RESUME;
	__builtin_memcpy(&mxcsr, x + 24, 4);
	__builtin_memcpy(&bv, x + 512, 8);
	if ((mxcsr >> 16) || (bv & ~r->xfeatures) || (bv & XFEATURE_TILEDATA))
		return CX_FAIL_RESUME;
	for (int i = 520; i < 576; i++) /* standard format: XCOMP_BV and the reserved header bytes are zero */
		if (x[i])
			return CX_FAIL_RESUME;
	return CX_HIT;
}

/* Post-init: what the trampoline jumps to is the syscall instruction (0f 05) the thread stopped after. */
enum cx_outcome cx_arch_check_resume_insn(const struct image *im)
{
	const volatile unsigned char *p = (const unsigned char *)(im->resume->rip - 2);
	return p[0] == 0x0f && p[1] == 0x05 ? CX_HIT : CX_FAIL_RESUME;
}

/*
 * The thread is to issue read(resume_fd, buf, n) again, from the 2-byte
 * syscall instruction before rip, on a stack the image maps.
 */
enum cx_outcome cx_arch_check_resume_regs(const struct image *im)
{
	const struct cx_resume *r = im->resume;
	const struct cx_region *a, *b;
	if (r->orig_rax != __NR_read || r->rdi != r->resume_fd || r->rip < 2)
		return CX_FAIL_RESUME;
	a = region_at(im, r->rip - 2, 1);
	b = region_at(im, r->rip - 1, 1);
	if (!a || !b || !(a->prot & CX_PROT_READ) || !(b->prot & CX_PROT_READ) || !region_at(im, r->rsp, 8))
		return CX_FAIL_RESUME;
	return CX_HIT;
}

uint64_t cx_arch_resume_sp(const struct image *im) { return im->resume->rsp; }

/* The XSAVE area, copied 64-byte aligned (xrstor needs it). */
uint64_t cx_arch_resume_room(const struct image *im) { return im->resume->xstate_size + 64; }

long cx_arch_set_thread_pointer(uint64_t tp) { return sys_arch_prctl(ARCH_SET_FS, tp); }

void cx_arch_resume_params(const struct image *im, struct tramp_params *p, unsigned char *code)
{
	const struct cx_resume *r = im->resume;
	unsigned char *x = (unsigned char *)(((uint64_t)(p + 1) + 63) & ~63ull);
	__builtin_memcpy(x, im->xstate, r->xstate_size);
	p->xstate = (uint64_t)x;
	p->rfbm = r->xfeatures & ~XFEATURE_TILEDATA; /* never in use (check_cpu): it stays in its init state */
	p->rflags = r->eflags & ~0x100ull; /* no trap flag */
	const uint64_t regs[16] = { r->r15, r->r14, r->r13, r->r12, r->rbp, r->rbx, r->r11, r->r10,
				    r->r9, r->r8, r->orig_rax, r->rcx, r->rdx, r->rsi, r->rdi, r->rsp };
	for (int i = 0; i < 16; i++)
		p->regs[i] = regs[i];
	uint64_t target = r->rip - 2;
	__builtin_memcpy(code + (cx_tramp_target - cx_tramp_begin), &target, 8);
}
