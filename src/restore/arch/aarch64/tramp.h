/*
 * The trampoline's parameter block (aarch64): filled by jump.c, read by the
 * assembly in trampoline.c by fixed offsets, hence the static asserts. The
 * trampoline runs from an anonymous page after the launcher's own image is
 * gone, so it may use nothing but registers and this block. The same fields
 * as x86_64's but the post-init registers (not ported: cpu.c refuses
 * post-init images).
 */
#ifndef CACHED_EXEC_TRAMP_H
#define CACHED_EXEC_TRAMP_H

#include "restore.h"

/* A post-init image's XSAVE area is x86_64's; bounded as there, never loaded here. */
#define MAX_XSTATE (64 * 1024)

/* One disposition to install: the signal, then the kernel's struct sigaction. */
struct tramp_sig {
	uint64_t signo;
	struct ksigaction act;
};

struct tramp_params {
	uint64_t unmap_addr;
	uint64_t unmap_len;
	struct prctl_mm_map mm;
	int64_t exe_fd;
	uint64_t entry;
	uint64_t rtld_fini;
	uint64_t sp;
	uint64_t cold_path;
	uint64_t cold_argv;
	uint64_t cold_envp;
	/* Post-init (not on aarch64 yet): jump.c fills these only for an image cpu.c let through. */
	uint64_t resume;
	int64_t resume_fd;
	int64_t umask;
	uint64_t all_signals;
	uint64_t sigmask;
	uint64_t nsigs;
	struct tramp_sig sigs[CX_NSIG];
	char path[CX_PATH_MAX];
	/* The trampoline's own stack: the launcher's is unmapped on the way (top of this block). */
	uint64_t scratch_sp;
	/* The launcher's own stack (start.c): unmapped once nothing can fail any more. */
	uint64_t lstack_addr, lstack_len;
	/* The program reads /proc/self/exe: no retry without exe_fd, a cold exec instead. */
	uint64_t exe_required;
	/* The launcher's file capability: as on x86_64 (arch/x86_64/tramp.h). */
	uint64_t caps_raise;
	struct cap_header_k cap_hdr;
	struct cap_data_k cap_raised[2];
	struct cap_data_k cap_none[2];
	/* Post-init: the kernel's stack of this process, unmapped (x86_64 only for now). */
	uint64_t kstack_addr, kstack_len;
};
/* trampoline.c addresses these fields by offset (ldr/str take them as immediates). */
#define TP_SCRATCH_SP 6880
#define TP_LSTACK_ADDR 6888
#define TP_LSTACK_LEN 6896
#define TP_EXE_REQUIRED 6904
#define TP_CAPS_RAISE 6912
#define TP_CAP_HDR 6920
#define TP_CAP_RAISED 6928
#define TP_CAP_NONE 6952
#define TP_KSTACK_ADDR 6976
#define TP_KSTACK_LEN 6984
_Static_assert(offsetof(struct tramp_params, mm) == 16, "tramp mm");
_Static_assert(offsetof(struct tramp_params, mm) + offsetof(struct prctl_mm_map, exe_fd) == 116, "tramp exe_fd");
_Static_assert(offsetof(struct tramp_params, exe_fd) == 120, "tramp fd");
_Static_assert(offsetof(struct tramp_params, entry) == 128, "tramp entry");
_Static_assert(offsetof(struct tramp_params, rtld_fini) == 136, "tramp rtld_fini");
_Static_assert(offsetof(struct tramp_params, sp) == 144, "tramp sp");
_Static_assert(offsetof(struct tramp_params, cold_path) == 152, "tramp cold path");
_Static_assert(offsetof(struct tramp_params, cold_argv) == 160, "tramp cold argv");
_Static_assert(offsetof(struct tramp_params, cold_envp) == 168, "tramp cold envp");
_Static_assert(offsetof(struct tramp_params, resume) == 176, "tramp resume");
_Static_assert(offsetof(struct tramp_params, scratch_sp) == TP_SCRATCH_SP, "tramp scratch sp");
_Static_assert(offsetof(struct tramp_params, lstack_addr) == TP_LSTACK_ADDR, "tramp launcher stack");
_Static_assert(offsetof(struct tramp_params, lstack_len) == TP_LSTACK_LEN, "tramp launcher stack length");
_Static_assert(offsetof(struct tramp_params, exe_required) == TP_EXE_REQUIRED, "tramp exe required");
_Static_assert(offsetof(struct tramp_params, caps_raise) == TP_CAPS_RAISE, "tramp caps raise");
_Static_assert(offsetof(struct tramp_params, cap_hdr) == TP_CAP_HDR, "tramp cap header");
_Static_assert(offsetof(struct tramp_params, cap_raised) == TP_CAP_RAISED, "tramp caps raised");
_Static_assert(offsetof(struct tramp_params, cap_none) == TP_CAP_NONE, "tramp caps none");
_Static_assert(offsetof(struct tramp_params, kstack_addr) == TP_KSTACK_ADDR, "tramp kernel stack");
_Static_assert(offsetof(struct tramp_params, kstack_len) == TP_KSTACK_LEN, "tramp kernel stack length");

extern const char cx_tramp_begin[], cx_tramp_end[];

/* trampoline.c: the registers of a post-init image (unreachable here: cpu.c refuses them). */
void cx_arch_resume_params(const struct image *im, struct tramp_params *p, unsigned char *code);

/*
 * Into the trampoline's copy: the code was written through the data side, so
 * the instruction cache must be made to see it first (the arm64 cache is not
 * coherent for that: clean each data line to the point of unification,
 * invalidate each instruction line, then the barriers). Line sizes from
 * CTR_EL0, which Linux lets user space read.
 */
static inline __attribute__((always_inline, noreturn)) void cx_tramp_enter(struct tramp_params *p, unsigned char *code,
									      uint64_t len)
{
	uint64_t ctr;
	__asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
	const uint64_t dline = 4ull << ((ctr >> 16) & 15), iline = 4ull << (ctr & 15);
	const uint64_t start = (uint64_t)code, end = start + len;
	for (uint64_t a = start & ~(dline - 1); a < end; a += dline)
		__asm__ volatile("dc cvau, %0" : : "r"(a) : "memory");
	__asm__ volatile("dsb ish" : : : "memory");
	for (uint64_t a = start & ~(iline - 1); a < end; a += iline)
		__asm__ volatile("ic ivau, %0" : : "r"(a) : "memory");
	__asm__ volatile("dsb ish\n\tisb" : : : "memory");
	register struct tramp_params *x0 __asm__("x0") = p;
	__asm__ volatile("br %1" : : "r"(x0), "r"(code) : "memory");
	__builtin_unreachable();
}

#endif
