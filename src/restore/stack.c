/*
 * The program's initial stack.
 *
 * The kernel built argc, argv, envp and auxv for the launcher. The program must
 * find the same structure for itself: argc, its own argv (without "cached-exec",
 * or with the interpreter's argv for a #! script), NULL, envp, NULL, auxv. glibc
 * finds envp as &argv[argc + 1], so the arrays must stay contiguous; the ABI also
 * wants %rsp 16-byte aligned at the entry point. We rebuild the frame so it ends
 * where the kernel's frame ended (the strings above it stay in place), copying
 * through a temporary buffer because the new frame may overlap the old one.
 * The launcher runs on its own stack (start.c), so the kernel's stack below
 * its frame is free; a frame that grows (a #! line's words) grows that stack,
 * which the kernel allows up to RLIMIT_STACK: beyond it, no restore.
 */
#include "launcher.h"

/* The new frame is built here first: old and new frames may overlap. */
#define TMP_WORDS 65536
static uint64_t reshape_tmp[TMP_WORDS + 2];

/*
 * Writing below the kernel's frame grows the stack, which the kernel allows
 * up to RLIMIT_STACK (and a SIGSEGV beyond). The stack ends at the page
 * holding AT_EXECFN's string, the last thing the kernel put there.
 */
static int fits_stack_limit(struct launch *L, const uint64_t *new_sp)
{
	uint64_t lim = cx_stack_limit(L);
	if (!L->kstack_top || !lim)
		return 0;
	uint64_t need = L->kstack_top - ((uint64_t)new_sp & ~(CX_PAGE - 1));
	return lim == RLIM_INFINITY || need + CX_PAGE <= lim;
}

/*
 * The page after AT_EXECFN's string, the last thing the kernel put on its
 * stack: where that stack ends. Read once at start (cx_main), before a
 * restore points AT_EXECFN elsewhere. 0 when there is no AT_EXECFN.
 */
uint64_t cx_kernel_stack_top(const uint64_t *auxv)
{
	const char *execfn = (const char *)cx_auxv_get(auxv, AT_EXECFN);
	return execfn ? ((uint64_t)execfn + cx_strlen(execfn) + 1 + CX_PAGE - 1) & ~(CX_PAGE - 1) : 0;
}

/* RLIMIT_STACK's soft limit (RLIM_INFINITY when unlimited), asked once; 0 when it cannot be read. */
uint64_t cx_stack_limit(struct launch *L)
{
	struct rlimit_k lim;
	if (!L->stack_limit && sys_prlimit(0, RLIMIT_STACK, 0, &lim) == 0)
		L->stack_limit = lim.cur ? lim.cur : 1;
	return L->stack_limit;
}

static void copy_words(uint64_t *d, const uint64_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = s[i];
}

int cx_reshape_stack(struct launch *L, int drop, char *const *insert, int ninsert, int copy_strings)
{
	int argc = L->prog_argc - drop + ninsert;
	char **old_argv = L->prog_argv;
	int envc = 0;
	while (L->envp[envc])
		envc++;
	uint64_t *aux_end = L->auxv;
	while (aux_end[0] != AT_NULL)
		aux_end += 2;
	aux_end += 2;
	size_t auxw = (size_t)(aux_end - L->auxv);
	size_t frame = 1 + (size_t)argc + 1 + (size_t)envc + 1 + auxw;
	size_t strbytes = 0;
	if (copy_strings) {
		for (int i = 0; i < ninsert; i++)
			strbytes += cx_strlen(insert[i]) + 1;
		for (int i = drop; i < L->prog_argc; i++)
			strbytes += cx_strlen(old_argv[i]) + 1;
	}
	size_t words = frame + (strbytes + 7) / 8;
	if (words > TMP_WORDS || !L->own_stack)
		return -1;
	uint64_t *end = aux_end;
	uint64_t *new_sp = (uint64_t *)(((uint64_t)(end - words)) & ~15ull);
	if (!fits_stack_limit(L, new_sp))
		return -1;

	uint64_t *tmp = reshape_tmp;
	size_t at = 0;
	uint64_t str_base = (uint64_t)(new_sp + frame); /* where the copied strings land */
	char *sp_str = (char *)(tmp + frame);
	size_t soff = 0;
	tmp[at++] = (uint64_t)argc;
	for (int i = 0; i < argc; i++) {
		const char *s = i < ninsert ? insert[i] : old_argv[drop + i - ninsert];
		if (copy_strings) {
			size_t n = cx_strlen(s) + 1;
			__builtin_memcpy(sp_str + soff, s, n);
			tmp[at++] = str_base + soff;
			soff += n;
		} else {
			tmp[at++] = (uint64_t)s;
		}
	}
	tmp[at++] = 0;
	for (int i = 0; i < envc; i++)
		tmp[at++] = (uint64_t)L->envp[i];
	tmp[at++] = 0;
	copy_words(tmp + at, L->auxv, auxw);

	copy_words(new_sp, tmp, words);
	L->prog_sp = new_sp;
	L->prog_argc = argc;
	L->prog_argv = (char **)(new_sp + 1);
	L->envp = L->prog_argv + argc + 1;
	L->auxv = (uint64_t *)(L->envp + envc + 1);
	L->argv = 0; /* the launcher's own argv array no longer exists */
	return 0;
}
