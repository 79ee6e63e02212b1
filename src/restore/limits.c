/*
 * Part of step 1: the resource limits the program read before the image was
 * taken (LIMITS section). glibc's early init sizes the default thread stack
 * from RLIMIT_STACK, and an init may read any limit (bash's ulimit, python's
 * resource module) and keep what it derived. A restored program keeps those
 * values, so a caller with another limit would get threads, buffers or
 * answers a cold run would not: a recursion in a thread that a cold run with
 * a 64 MiB limit survives could overflow an 8 MiB stack. Any difference, or a
 * limit that cannot be read, is a cold run.
 */
#include "restore.h"

enum cx_outcome check_limits(const struct image *im, struct launch *L)
{
	enum cx_outcome o = CX_HIT;
	uint32_t read = 0;
	for (uint32_t i = 0; i < im->nlimits; i++) {
		const struct cx_limit *want = LIMIT_AT(im, i);
		struct rlimit_k now;
		if (want->resource >= CX_RLIMIT_COUNT)
			return CX_FAIL_HEADER;
		read |= 1u << want->resource;
		if (sys_prlimit(0, (int)want->resource, 0, &now) != 0 || now.cur != want->soft || now.max != want->hard)
			o = CX_FAIL_LIMITS;
	}
	/* The re-take this run queues must run under its values of every limit the image read (record.c). */
	if (o == CX_FAIL_LIMITS)
		L->limits_read |= read;
	return o;
}
