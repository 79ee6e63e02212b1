/*
 * The trampoline's parameter block (aarch64): filled by jump.c and cpu.c,
 * read by the assembly in trampoline.c by fixed offsets, hence the static
 * asserts. The trampoline runs from an anonymous page after the launcher's
 * own image is gone, so it may use nothing but registers and this block. The
 * same fields as x86_64's but the post-init registers: those are a signal
 * frame (struct a64_rt_sigframe below) that rt_sigreturn loads.
 */
#ifndef CACHED_EXEC_TRAMP_H
#define CACHED_EXEC_TRAMP_H

#include "restore.h"

/* Bound of a post-init image's XSTATE section (here: struct cx_resume_aarch64, checked by cpu.c). */
#define MAX_XSTATE (64 * 1024)

/*
 * The kernel's arm64 signal frame (arch/arm64/include/uapi/asm/sigcontext.h,
 * ucontext.h; arch/arm64/kernel/signal.c struct rt_sigframe): what
 * rt_sigreturn reads at sp. The resume ends with rt_sigreturn over one built
 * here: it sets x0-x30, sp, pc, pstate, the FPSIMD registers and the signal
 * mask in one step, where a branch would need a register of its own (arm64
 * has no memory-indirect jump, and x16/x17 may be live at the svc). CRIU's
 * arm64 restorer ends the same way.
 */
struct a64_sigcontext {
	uint64_t fault_address;
	uint64_t regs[31];
	uint64_t sp, pc, pstate;
	uint64_t pad; /* __reserved is 16-byte aligned */
	unsigned char reserved[4096]; /* records: fpsimd_context, then a zero end record */
};
#define A64_FPSIMD_MAGIC 0x46508001u
struct a64_fpsimd_context {
	uint32_t magic, size; /* struct _aarch64_ctx */
	uint32_t fpsr, fpcr;
	uint64_t vregs[64]; /* v0-v31 */
};
struct a64_ucontext {
	uint64_t uc_flags, uc_link;
	uint64_t ss_sp; /* stack_t uc_stack */
	int32_t ss_flags, ss_pad;
	uint64_t ss_size;
	uint64_t uc_sigmask;
	unsigned char unused[1024 / 8 - 8]; /* glibc's 1024-bit sigset_t */
	uint64_t pad; /* uc_mcontext is 16-byte aligned */
	struct a64_sigcontext mcontext;
};
struct a64_rt_sigframe {
	unsigned char info[128]; /* siginfo: not read by rt_sigreturn */
	struct a64_ucontext uc;
};
_Static_assert(offsetof(struct a64_sigcontext, sp) == 256 && offsetof(struct a64_sigcontext, reserved) == 288, "sigcontext");
_Static_assert(sizeof(struct a64_fpsimd_context) == 528, "fpsimd_context");
_Static_assert(offsetof(struct a64_ucontext, uc_sigmask) == 40 && offsetof(struct a64_ucontext, mcontext) == 176, "ucontext");
_Static_assert(offsetof(struct a64_rt_sigframe, uc) == 128 && sizeof(struct a64_rt_sigframe) == 4688, "rt_sigframe");

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
	/* Post-init images: resume at the checkpoint's syscall instead of the entry point. */
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
	/*
	 * Post-init: the kernel's stack of this process, no longer used (the
	 * program has the image's stack, /proc/PID/cmdline and environ point at
	 * copies in this block): unmapped so the image's stack can grow there.
	 */
	uint64_t kstack_addr, kstack_len;
	/* Post-init: the signal frame rt_sigreturn loads (16-byte aligned, further down this block). */
	uint64_t frame;
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
#define TP_FRAME 6992
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
_Static_assert(offsetof(struct tramp_params, frame) == TP_FRAME, "tramp frame");
_Static_assert(offsetof(struct tramp_params, resume_fd) == 184 && offsetof(struct tramp_params, umask) == 192 &&
		       offsetof(struct tramp_params, all_signals) == 200 && offsetof(struct tramp_params, sigmask) == 208 &&
		       offsetof(struct tramp_params, nsigs) == 216 && offsetof(struct tramp_params, sigs) == 224,
	       "tramp post-init fields");
_Static_assert(sizeof(struct tramp_sig) == 40 && offsetof(struct tramp_sig, act) == 8, "tramp sig entry");

extern const char cx_tramp_begin[], cx_tramp_end[];

/* cpu.c: the signal frame of a post-init image. */
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
