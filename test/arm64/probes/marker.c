/*
 * marker [maps]: prints the marker string in its .data, its argc and argv[1],
 * and exits 40 + argc when it has arguments (0 without: timeit counts a
 * non-zero status as a failed run); with "maps" also its own /proc/self/maps. Its file
 * says "CX-MARKER:cold"; test/arm64/marker-image.mjs writes a post-link image
 * of it whose data page says "CX-MARKER:rstd", so the output tells a restore
 * from a cold run, and the maps show where the page came from.
 */
#include <stdio.h>
#include <string.h>

char cx_marker[32] = "CX-MARKER:cold";

int main(int argc, char **argv)
{
	printf("%s argc=%d argv1=%s\n", cx_marker, argc, argc > 1 ? argv[1] : "-");
	if (argc > 1 && strcmp(argv[1], "maps") == 0) {
		FILE *f = fopen("/proc/self/maps", "r");
		char line[512];
		while (f && fgets(line, sizeof line, f))
			fputs(line, stdout);
	}
	return argc > 1 ? 40 + argc : 0;
}
