/*
 * The trampoline's parameter block (x86_64): filled by jump.c and the resume
 * code, read by the assembly in trampoline.c by fixed offsets, hence the
 * static asserts. The trampoline runs from an anonymous page after the
 * launcher's own image is gone, so it may use nothing but registers and this
 * block.
 */
#ifndef CACHED_EXEC_TRAMP_H
#define CACHED_EXEC_TRAMP_H

#include "restore.h"

/* The XSAVE area of a post-init image (AVX-512 needs 2.7 KiB, AMX 11 KiB). */
#define MAX_XSTATE (64 * 1024)
#define XFEATURE_TILEDATA (1ull << 18)

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
	int64_t umask; /* -1: the caller's stays */
	uint64_t all_signals;
	uint64_t sigmask;
	uint64_t nsigs;
	uint64_t xstate; /* 64-byte aligned copy of the XSAVE area, further down this block */
	uint64_t rfbm; /* xrstor's requested-feature bitmap (edx:eax) */
	uint64_t rflags;
	/* In this order: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi rsp. */
	uint64_t regs[16];
	struct tramp_sig sigs[CX_NSIG];
	char path[CX_PATH_MAX];
	/* The trampoline's own stack: the launcher's is unmapped on the way (top of this block). */
	uint64_t scratch_sp;
	/* The launcher's own stack (start.c): unmapped once nothing can fail any more. */
	uint64_t lstack_addr, lstack_len;
	/* The program reads /proc/self/exe: no retry without exe_fd, a cold exec instead. */
	uint64_t exe_required;
	/*
	 * The launcher's file capability (cached-exec --install-capability):
	 * CAP_CHECKPOINT_RESTORE permitted, raised only around PR_SET_MM_MAP,
	 * then every capability dropped and the dumpable flag back, as an exec
	 * of an ordinary program would leave them.
	 */
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
};
/* The assembly below addresses these fields by offset. */
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
_Static_assert(offsetof(struct tramp_params, resume_fd) == 184, "tramp resume fd");
_Static_assert(offsetof(struct tramp_params, umask) == 192, "tramp umask");
_Static_assert(offsetof(struct tramp_params, all_signals) == 200, "tramp all signals");
_Static_assert(offsetof(struct tramp_params, sigmask) == 208, "tramp sigmask");
_Static_assert(offsetof(struct tramp_params, nsigs) == 216, "tramp nsigs");
_Static_assert(offsetof(struct tramp_params, xstate) == 224, "tramp xstate");
_Static_assert(offsetof(struct tramp_params, rfbm) == 232, "tramp rfbm");
_Static_assert(offsetof(struct tramp_params, rflags) == 240, "tramp rflags");
_Static_assert(offsetof(struct tramp_params, regs) == 248, "tramp regs");
_Static_assert(offsetof(struct tramp_params, sigs) == 376, "tramp sigs");
_Static_assert(sizeof(struct tramp_sig) == 40 && offsetof(struct tramp_sig, act) == 8, "tramp sig entry");
_Static_assert(offsetof(struct tramp_params, scratch_sp) == 7032, "tramp scratch sp");
_Static_assert(offsetof(struct tramp_params, lstack_addr) == 7040, "tramp launcher stack");
_Static_assert(offsetof(struct tramp_params, lstack_len) == 7048, "tramp launcher stack length");
_Static_assert(offsetof(struct tramp_params, exe_required) == 7056, "tramp exe required");
_Static_assert(offsetof(struct tramp_params, caps_raise) == 7064, "tramp caps raise");
_Static_assert(offsetof(struct tramp_params, cap_hdr) == 7072, "tramp cap header");
_Static_assert(offsetof(struct tramp_params, cap_raised) == 7080, "tramp caps raised");
_Static_assert(offsetof(struct tramp_params, cap_none) == 7104, "tramp caps none");
_Static_assert(offsetof(struct tramp_params, kstack_addr) == 7128, "tramp kernel stack");
_Static_assert(offsetof(struct tramp_params, kstack_len) == 7136, "tramp kernel stack length");
enum { R_R15, R_R14, R_R13, R_R12, R_RBP, R_RBX, R_R11, R_R10, R_R9, R_R8, R_RAX, R_RCX, R_RDX, R_RSI, R_RDI, R_RSP };
_Static_assert(R_RSP == 15 && R_R12 == 3, "regs order the assembly loads");


extern const char cx_tramp_begin[], cx_tramp_end[], cx_tramp_target[];

/* trampoline.c: the registers, FPU state and resume target of a post-init image. */
void cx_arch_resume_params(const struct image *im, struct tramp_params *p, unsigned char *code);

/* Into the trampoline's copy, %rdi = its parameter block (x86 keeps instruction fetches coherent with stores). */
static inline __attribute__((always_inline, noreturn)) void cx_tramp_enter(struct tramp_params *p, unsigned char *code,
									      uint64_t len)
{
	(void)len;
	__asm__ volatile("jmp *%1" : : "D"(p), "r"(code) : "memory");
	__builtin_unreachable();
}

#endif
