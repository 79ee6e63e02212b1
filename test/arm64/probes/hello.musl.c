/* A dynamically linked musl program: its interpreter is musl's libc itself. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	const char *home = getenv("HOME");
	printf("hello from musl: argc %d, HOME %s\n", argc, home ? home : "(unset)");
	return argc > 1 ? atoi(argv[1]) : 0;
}
