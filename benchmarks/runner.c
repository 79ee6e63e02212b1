/*
 * bench-runner: times fork+exec+wait of several commands, interleaved.
 *
 *   bench-runner SPEC ROUNDS WARMUP SEED
 *
 * SPEC is a file of NUL-terminated strings written by src/bench/runner.ts:
 *   ncmds, then per command: path, argc, argv[0..argc), envc, env[0..envc).
 * Every round runs each command once, in an order shuffled per round (so no
 * command always follows the same neighbour); WARMUP rounds are run first and
 * not reported. Each command gets stdin, stdout and stderr on /dev/null.
 *
 * Output, one line per timed run:
 *   cmd round wall_ns exit_status minflt majflt maxrss_kib
 * exit_status is the wait status as the shell prints it (128+sig for a signal).
 * maxrss is the kernel's peak-RSS accounting for the child, which starts from
 * the spawning process's own RSS (the mm the child had before exec): compare
 * against the floor row, not against zero.
 *
 * Timing: CLOCK_MONOTONIC right before posix_spawn (glibc: clone(CLONE_VFORK),
 * no page-table copy) and right after wait4 returns. What is measured is what
 * a shell pays to run the command: exec, loader or restore, the program, exit,
 * and the parent seeing it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct cmd {
	char *path;
	char **argv;
	char **envp;
};

static char *next_str(char **p, char *end)
{
	if (*p >= end) {
		fprintf(stderr, "bench-runner: truncated spec\n");
		exit(2);
	}
	char *s = *p;
	*p += strlen(s) + 1;
	return s;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng;
static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: bench-runner SPEC ROUNDS WARMUP SEED\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 2;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf || read(fd, buf, (size_t)st.st_size) != st.st_size) {
		perror("read spec");
		return 2;
	}
	close(fd);
	buf[st.st_size] = 0;
	char *p = buf, *end = buf + st.st_size;
	int n = atoi(next_str(&p, end));
	if (n <= 0 || n > 1000)
		return 2;
	struct cmd *cmds = calloc((size_t)n, sizeof *cmds);
	for (int i = 0; i < n; i++) {
		cmds[i].path = next_str(&p, end);
		int ac = atoi(next_str(&p, end));
		cmds[i].argv = calloc((size_t)ac + 1, sizeof(char *));
		for (int j = 0; j < ac; j++)
			cmds[i].argv[j] = next_str(&p, end);
		int ec = atoi(next_str(&p, end));
		cmds[i].envp = calloc((size_t)ec + 1, sizeof(char *));
		for (int j = 0; j < ec; j++)
			cmds[i].envp[j] = next_str(&p, end);
	}
	long rounds = atol(argv[2]), warmup = atol(argv[3]);
	rng = strtoull(argv[4], 0, 10) | 1;

	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);

	int *order = calloc((size_t)n, sizeof(int));
	static char line[256];
	setvbuf(stdout, 0, _IOFBF, 1 << 16);
	for (long r = -warmup; r < rounds; r++) {
		for (int i = 0; i < n; i++)
			order[i] = i;
		for (int i = n - 1; i > 0; i--) {
			int j = (int)(xorshift() % (uint64_t)(i + 1));
			int t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
		for (int k = 0; k < n; k++) {
			struct cmd *c = &cmds[order[k]];
			pid_t pid;
			int status = 0;
			struct rusage ru;
			uint64_t t0 = now_ns();
			int e = posix_spawn(&pid, c->path, &fa, 0, c->argv, c->envp);
			if (e) {
				fprintf(stderr, "bench-runner: %s: %s\n", c->path, strerror(e));
				return 1;
			}
			while (wait4(pid, &status, 0, &ru) < 0)
				if (errno != EINTR) {
					perror("wait4");
					return 1;
				}
			uint64_t t1 = now_ns();
			if (r < 0)
				continue;
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			int len = snprintf(line, sizeof line, "%d %ld %llu %d %ld %ld %ld\n", order[k], r,
					   (unsigned long long)(t1 - t0), code, ru.ru_minflt, ru.ru_majflt, ru.ru_maxrss);
			fwrite(line, 1, (size_t)len, stdout);
		}
	}
	fflush(stdout);
	return 0;
}
