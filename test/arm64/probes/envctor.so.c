/*
 * libenvctor.so: a library whose constructor, before its program's entry
 * point, looks a variable up and reads the clock. On aarch64 that runs the
 * tracer's getenv breakpoints (brk #0 on the entry, the return through x30)
 * and its answer to the vdso's __kernel_clock_gettime (x0, x1, back to x30);
 * the image then depends on CX_PROBE_VAR and holds a CLOCK slot, which each
 * restore fills with its own time.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char value[64] = "(unset)";
static long seconds;

__attribute__((constructor)) static void init(void)
{
	/* A copy: a pointer into the environment would point into the old stack. */
	const char *v = getenv("CX_PROBE_VAR");
	if (v)
		strncpy(value, v, sizeof value - 1);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	seconds = ts.tv_sec;
}

const char *envctor_value(void) { return value; }
long envctor_seconds(void) { return seconds; }
