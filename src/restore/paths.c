/*
 * Paths inside the package, derived from /proc/self/exe (the launcher is
 * <pkg>/bin/cached-exec): the CLI script and the shell adapters.
 */
#include "launcher.h"


int cx_cli_script(char *out, size_t cap)
{
	char self[CX_PATH_MAX];
	long n = sys_readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	/* <pkg>/bin/cached-exec -> <pkg>/dist/cli/main.js */
	char *slash = 0;
	for (char *p = self; *p; p++)
		if (*p == '/')
			slash = p;
	if (slash)
		*slash = 0;
	struct cx_buf b = { out, 0, cap, 0 };
	cx_buf_str(&b, self);
	cx_buf_str(&b, "/../dist/cli/main.js");
	return b.overflow ? -1 : 0;
}

/* <pkg>/shell/NAME, <pkg> being /proc/self/exe minus /bin/cached-exec (spec.ts shellDir()). */
int shell_file(char *out, size_t cap, const char *name)
{
	char self[CX_PATH_MAX];
	long n = sys_readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return -1;
	self[n] = 0;
	for (int k = 0; k < 2; k++) {
		char *slash = 0;
		for (char *p = self; *p; p++)
			if (*p == '/')
				slash = p;
		if (!slash)
			return -1;
		*slash = 0;
	}
	struct cx_buf b = { out, 0, cap, 0 };
	cx_buf_str(&b, self);
	cx_buf_str(&b, "/shell/");
	cx_buf_str(&b, name);
	return b.overflow ? -1 : 0;
}
