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
 * _start leaves a gap below the kernel's frame (CX_STACK_GAP) that nothing of
 * the launcher uses, so a frame that grows downwards has room.
 */
#include "launcher.h"

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
	if (words > 65536)
		return -1;
	uint64_t *end = aux_end;
	uint64_t *new_sp = (uint64_t *)(((uint64_t)(end - words)) & ~15ull);
	if ((uint64_t)new_sp < (uint64_t)L->sp - CX_STACK_GAP)
		return -1; /* would run into the launcher's own frames */

	uint64_t tmp[words + 2];
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
