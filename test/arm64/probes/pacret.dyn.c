/*
 * A program that speaks the resume protocol and is built with return
 * address signing (-mbranch-protection=standard: paciasp/autiasp): at the
 * checkpoint read, the frames of main and wait_for_context hold return
 * addresses signed with this exec's PAC keys. A restore runs with the
 * launcher's keys, so such an image must be refused (postinit.ts
 * refuseSignedReturnAddresses) and every run be cold. Prints its arguments
 * (from the context when restored) and exits with their count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char ctx[1 << 16];

__attribute__((noinline)) static long wait_for_context(int fd)
{
	long n = 0, r;
	while ((r = read(fd, ctx + n, sizeof ctx - 1 - n)) > 0)
		n += r;
	return n;
}

int main(int argc, char **argv)
{
	const char *fdenv = getenv("CACHED_EXEC_RESUME_FD");
	char **args = argv + 1;
	int nargs = argc - 1;
	if (fdenv) {
		int fd = atoi(fdenv);
		long n = wait_for_context(fd);
		close(fd);
		static char *f[4096];
		int nf = 0;
		for (char *p = ctx; p < ctx + n && nf < 4096; p += strlen(p) + 1)
			f[nf++] = p;
		if (nf < 2)
			return 101;
		nargs = atoi(f[1]) - 1;
		args = f + 3;
	}
	for (int i = 0; i < nargs; i++)
		printf("[%s]\n", args[i]);
	return nargs;
}
