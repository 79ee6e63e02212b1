/*
 * Steps 5 to 7: the slots get this process's own values (argv, envp, auxv,
 * tid, a fresh stack guard; in a post-init image its ids), patched regions go
 * back to their protection, and the auxv describes the program.
 */
#include "restore.h"

/* Step 5: patch slots with this process's own argv, envp, auxv, tid, guard; */
/* in a post-init image, its thread id and its process ids.                 */

/*
 * A library constructor kept a clock reading (glib's slice allocator stamps
 * its cache with the time in ms): this process's own reading of the same
 * clock, in the form the snapshot found (the caller truncates to the width).
 * Read now, while patching: what a cold start would have read a moment ago.
 */
static enum cx_outcome clock_slot(uint64_t arg, uint64_t *out)
{
	static const uint64_t divisor[] = {
		[CX_CLOCKFORM_NS] = 1, [CX_CLOCKFORM_US] = 1000, [CX_CLOCKFORM_MS] = 1000000,
		[CX_CLOCKFORM_SEC] = 1000000000, [CX_CLOCKFORM_NSEC_OF_SEC] = 1, [CX_CLOCKFORM_USEC_OF_SEC] = 1000,
	};
	uint64_t clk = arg & 0xff, form = (arg >> 8) & 0xff;
	struct timespec_k ts;
	if (arg >> 16 || form >= sizeof divisor / sizeof divisor[0])
		return CX_FAIL_SLOT;
	/* Only the clocks the snapshot answers: CPU-time clocks (2, 3) say nothing a restore could match. */
	if (clk == 2 || clk == 3 || clk == 10 || clk > 11)
		return CX_FAIL_SLOT;
	if (sys_clock_gettime((int)clk, &ts) < 0)
		return CX_FAIL_SLOT;
	uint64_t sec = (uint64_t)ts.tv_sec, nsec = (uint64_t)ts.tv_nsec;
	if (form == CX_CLOCKFORM_NSEC_OF_SEC || form == CX_CLOCKFORM_USEC_OF_SEC)
		*out = nsec / divisor[form];
	else
		*out = (sec * 1000000000u + nsec) / divisor[form];
	return CX_HIT;
}

static enum cx_outcome slot_value(const struct launch *L, const struct cx_slot *s, uint64_t *out)
{
	uint64_t a = s->arg;
	const char *str;
	switch (s->kind) {
	case CX_SLOT_ARGC_ADDR:
		*out = (uint64_t)L->prog_sp;
		return CX_HIT;
	case CX_SLOT_BELOW_ARGC:
		/* Dead stack: the same distance below argc as in a cold run. */
		if (a == 0 || a >= (uint64_t)L->prog_sp)
			return CX_FAIL_SLOT;
		*out = (uint64_t)L->prog_sp - a;
		return CX_HIT;
	case CX_SLOT_ARGV:
		if (a > (uint64_t)L->prog_argc)
			return CX_FAIL_SLOT;
		*out = (uint64_t)&L->prog_argv[a];
		return CX_HIT;
	case CX_SLOT_ENVP:
		*out = (uint64_t)L->envp;
		return CX_HIT;
	case CX_SLOT_AUXV:
		*out = (uint64_t)L->auxv + a;
		return CX_HIT;
	case CX_SLOT_ARGV_STR:
	case CX_SLOT_ARGV_BASENAME:
		if (a >= (uint64_t)L->prog_argc)
			return CX_FAIL_SLOT;
		str = L->prog_argv[a];
		*out = (uint64_t)(s->kind == CX_SLOT_ARGV_STR ? str : cx_basename(str));
		return CX_HIT;
	case CX_SLOT_PLATFORM:
	case CX_SLOT_BASE_PLATFORM:
	case CX_SLOT_EXECFN:
		/* AT_EXECFN: the program's path (tramp_alloc's copy once placed; checked against L->path before). */
		str = s->kind == CX_SLOT_EXECFN ? (L->execfn ? L->execfn : L->path)
		      : (const char *)cx_auxv_get(L->auxv, s->kind == CX_SLOT_PLATFORM ? AT_PLATFORM : AT_BASE_PLATFORM);
		if (!str || a > cx_strlen(str))
			return CX_FAIL_SLOT;
		*out = (uint64_t)str + a;
		return CX_HIT;
	case CX_SLOT_RANDOM: {
		uint64_t r = cx_auxv_get(L->auxv, AT_RANDOM);
		if (!r || a >= 16)
			return CX_FAIL_SLOT;
		*out = r + a;
		return CX_HIT;
	}
	case CX_SLOT_ARGC:
		*out = (uint64_t)L->prog_argc;
		return CX_HIT;
	case CX_SLOT_TID:
		if (!L->tid)
			((struct launch *)L)->tid = (uint32_t)sys_gettid();
		*out = L->tid;
		return CX_HIT;
	case CX_SLOT_RANDOM_COPY: {
		/* A secret the loader copied from AT_RANDOM: this process's own, as a cold run's. */
		uint64_t r = cx_auxv_get(L->auxv, AT_RANDOM), v;
		if (!r || a > 8)
			return CX_FAIL_SLOT;
		__builtin_memcpy(&v, (const void *)(r + a), 8);
		*out = v;
		return CX_HIT;
	}
	case CX_SLOT_CANARY: {
		/* A fresh guard for this process: no frame is live at the entry point. */
		uint64_t r = cx_auxv_get(L->auxv, AT_RANDOM), v;
		if (!r || a >= 64)
			return CX_FAIL_SLOT;
		__builtin_memcpy(&v, (const void *)r, 8);
		*out = v & ~((1ull << a) - 1);
		return CX_HIT;
	}
	case CX_SLOT_CLOCK:
		return clock_slot(a, out);
	default:
		return CX_FAIL_SLOT;
	}
}

/* This process's id of a CX_IDENT_* kind, asked once. */
static uint32_t ident(struct launch *L, uint64_t kind)
{
	if (!L->ids_known) {
		L->ids[CX_IDENT_PID] = (uint32_t)sys_getpid();
		L->ids[CX_IDENT_PPID] = (uint32_t)sys_getppid();
		L->ids[CX_IDENT_PGID] = (uint32_t)sys_getpgid(0);
		L->ids[CX_IDENT_SID] = (uint32_t)sys_getsid(0);
		L->ids_known = 1;
	}
	return L->ids[kind];
}

/* The bytes a slot writes at its address. */
struct slot_bytes {
	unsigned char b[24];
	uint32_t len;
};

/*
 * A post-init image only holds ids: its argv, environment and auxv are the
 * snapshot's own, and the resume context carries the caller's. An id written
 * as text must fit the field the sentinel had (its digits and a NUL).
 */
static enum cx_outcome post_init_slot(struct launch *L, const struct cx_slot *s, struct slot_bytes *out)
{
	uint64_t kind = s->arg & 0xff;
	uint64_t v;
	switch (s->kind) {
	case CX_SLOT_TID:
		if (slot_value(L, s, &v) != CX_HIT)
			return CX_FAIL_SLOT;
		break;
	case CX_SLOT_PROCESS_ID:
		if (kind > CX_IDENT_SID)
			return CX_FAIL_SLOT;
		v = ident(L, kind);
		break;
	case CX_SLOT_PROCESS_ID_TEXT: {
		struct cx_buf b = { (char *)out->b, 0, sizeof out->b, 0 };
		if (kind > CX_IDENT_SID)
			return CX_FAIL_SLOT;
		cx_buf_u64(&b, ident(L, kind), 10);
		out->len = (uint32_t)b.len + 1;
		return out->len <= (s->arg >> 8) ? CX_HIT : CX_FAIL_SLOT;
	}
	default:
		return CX_FAIL_SLOT;
	}
	if (s->width != 4)
		return CX_FAIL_HEADER;
	uint32_t w = (uint32_t)v;
	__builtin_memcpy(out->b, &w, 4);
	out->len = 4;
	return CX_HIT;
}

static enum cx_outcome slot_bytes(const struct image *im, struct launch *L, const struct cx_slot *s,
				  struct slot_bytes *out)
{
	uint64_t v;
	if (im->resume)
		return post_init_slot(L, s, out);
	enum cx_outcome o = slot_value(L, s, &v);
	if (o != CX_HIT)
		return o;
	if (s->width != 8 && s->width != 4)
		return CX_FAIL_HEADER;
	__builtin_memcpy(out->b, &v, s->width); /* little-endian: the low bytes */
	out->len = s->width;
	return CX_HIT;
}

/*
 * Before anything is mapped: every slot has a value for this run, and lies
 * in a region mapped writable (a bad image must not fault the launcher).
 */
enum cx_outcome check_slots(const struct image *im, struct launch *L)
{
	for (uint32_t i = 0; i < im->nslots; i++) {
		const struct cx_slot *s = SLOT_AT(im, i);
		struct slot_bytes b;
		enum cx_outcome o = slot_bytes(im, L, s, &b);
		if (o != CX_HIT)
			return o;
		const struct cx_region *r = region_at(im, s->addr, b.len);
		if (!r || !(map_prot(r) & PROT_WRITE))
			return CX_FAIL_HEADER;
	}
	return CX_HIT;
}

enum cx_outcome patch_slots(const struct image *im, struct launch *L)
{
	for (uint32_t i = 0; i < im->nslots; i++) {
		const struct cx_slot *s = SLOT_AT(im, i);
		struct slot_bytes b;
		enum cx_outcome o = slot_bytes(im, L, s, &b);
		if (o != CX_HIT)
			return o;
		__builtin_memcpy((void *)s->addr, b.b, b.len);
	}
	/* The program's argc goes in the stack word right before its argv (a post-init program has its own stack). */
	if (!im->resume)
		*L->prog_sp = (uint64_t)L->prog_argc;
	return CX_HIT;
}

/* Step 6: relro and other read-only data go back to their protection. */
enum cx_outcome protect_regions(const struct image *im)
{
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		if ((r->flags & CX_REGION_PATCHED) && !(r->prot & CX_PROT_WRITE))
			if (sys_mprotect(r->addr, r->len, (int)(r->prot & 7)) < 0)
				return CX_FAIL_MAP;
	}
	return CX_HIT;
}

/* Step 7: the auxv describes the program, not the launcher. */
void patch_auxv(const struct image *im, const struct launch *L, uint64_t *auxv)
{
	const struct cx_state *s = im->state;
	const uint64_t *start = auxv;
	for (; auxv[0] != AT_NULL; auxv += 2) {
		switch (auxv[0]) {
		case AT_PHDR: auxv[1] = s->at_phdr; break;
		case AT_PHNUM: auxv[1] = s->at_phnum; break;
		case AT_ENTRY: auxv[1] = s->at_entry; break;
		case AT_BASE: auxv[1] = s->at_base; break;
		case AT_SYSINFO_EHDR: auxv[1] = s->vdso_base; break;
		case AT_EXECFN:
			if (L->execfn)
				auxv[1] = (uint64_t)L->execfn;
			break;
		case AT_SECURE:
			/* Set only by the launcher's own file capability, which the program does not get. */
			if (!secure_by_ids(start))
				auxv[1] = 0;
			break;
		}
	}
}
