/*
 * A dynamically linked glibc program using libenvctor.so (envctor.so.c):
 * prints what the library's constructor saw of CX_PROBE_VAR and whether the
 * time it took is this run's (within 3 s: "fresh") or older ("stale", what
 * a restore that kept the snapshot's time would show). Exits with argv[1].
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

const char *envctor_value(void);
long envctor_seconds(void);

int main(int argc, char **argv)
{
	long age = (long)time(NULL) - envctor_seconds();
	printf("CX_PROBE_VAR=%s clock %s argc=%d\n", envctor_value(), age >= 0 && age <= 3 ? "fresh" : "stale", argc);
	return argc > 1 ? atoi(argv[1]) : 0;
}
