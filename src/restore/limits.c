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

enum cx_outcome check_limits(const struct image *im)
{
	for (uint32_t i = 0; i < im->nlimits; i++) {
		const struct cx_limit *want = LIMIT_AT(im, i);
		struct rlimit_k now;
		if (want->resource >= CX_RLIMIT_COUNT)
			return CX_FAIL_HEADER;
		if (sys_prlimit(0, (int)want->resource, 0, &now) != 0)
			return CX_FAIL_LIMITS;
		if (now.cur != want->soft || now.max != want->hard)
			return CX_FAIL_LIMITS;
	}
	return CX_HIT;
}
