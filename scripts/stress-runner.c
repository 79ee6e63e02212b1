/*
 * stress-runner: runs one command many times and checks every run.
 *
 *   stress-runner RUNS NORAND_EVERY EXPECT_STATUS EXPECT_STDOUT -- PATH ARGV...
 *
 * Each run: fork; in the child, stdout and stderr go to pipes and, on every
 * NORAND_EVERY-th run (0 = never), personality(ADDR_NO_RANDOMIZE) is set
 * first, as `setarch -R` does: the launcher's own stack and vdso then land
 * where an image taken without ASLR (every post-init image) has its
 * mappings, which forces the restore's collision paths. The parent reads both
 * pipes to EOF, waits, and compares: stdout must equal EXPECT_STDOUT, stderr
 * must be empty, the exit status must be EXPECT_STATUS. The environment is
 * passed on unchanged.
 *
 * Prints one JSON object: runs, ok, crashes (killed by a signal, by signal),
 * wrong_status, wrong_output, and the first few failures.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_OUT 4096
#define MAX_EXAMPLES 5

struct example {
	long run;
	int norand;
	int status;
	char out[160];
	char err[160];
};

/* Reads both pipes to EOF into out/err (truncated at MAX_OUT, lengths keep counting). */
static void drain(int fo, int fe, char *out, size_t *no, char *err, size_t *ne)
{
	int open_o = 1, open_e = 1;
	char buf[4096];
	while (open_o || open_e) {
		fd_set set;
		FD_ZERO(&set);
		if (open_o)
			FD_SET(fo, &set);
		if (open_e)
			FD_SET(fe, &set);
		if (select((fo > fe ? fo : fe) + 1, &set, NULL, NULL, NULL) < 0) {
			if (errno == EINTR)
				continue;
			perror("select");
			exit(2);
		}
		int fds[2] = { fo, fe };
		for (int i = 0; i < 2; i++) {
			if (!FD_ISSET(fds[i], &set))
				continue;
			ssize_t n = read(fds[i], buf, sizeof buf);
			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				if (i == 0)
					open_o = 0;
				else
					open_e = 0;
				continue;
			}
			char *dst = i == 0 ? out : err;
			size_t *len = i == 0 ? no : ne;
			size_t room = *len < MAX_OUT ? MAX_OUT - *len : 0;
			memcpy(dst + *len, buf, (size_t)n < room ? (size_t)n : room);
			*len += (size_t)n;
		}
	}
}

static void printable(char *dst, size_t cap, const char *src, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < n && i < MAX_OUT && j + 5 < cap; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c == '"' || c == '\\')
			dst[j++] = '\\', dst[j++] = (char)c;
		else if (c == '\n')
			dst[j++] = '\\', dst[j++] = 'n';
		else if (c < 32 || c > 126)
			dst[j++] = '?';
		else
			dst[j++] = (char)c;
	}
	dst[j] = 0;
}

int main(int argc, char **argv)
{
	if (argc < 7 || strcmp(argv[5], "--") != 0) {
		fprintf(stderr, "usage: stress-runner RUNS NORAND_EVERY EXPECT_STATUS EXPECT_STDOUT -- PATH ARGV...\n");
		return 2;
	}
	long runs = atol(argv[1]);
	long norand_every = atol(argv[2]);
	int want_status = atoi(argv[3]);
	const char *want_out = argv[4];
	size_t want_len = strlen(want_out);
	char *path = argv[6];
	char **cargv = argv + 7;
	long ok = 0, crashes = 0, wrong_status = 0, wrong_output = 0, norand_runs = 0;
	long by_signal[65] = { 0 };
	struct example ex[MAX_EXAMPLES];
	int nex = 0;
	static char out[MAX_OUT], err[MAX_OUT];

	for (long r = 0; r < runs; r++) {
		int po[2], pe[2];
		int norand = norand_every > 0 && r % norand_every == 0;
		norand_runs += norand;
		if (pipe(po) || pipe(pe)) {
			perror("pipe");
			return 2;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			dup2(po[1], 1);
			dup2(pe[1], 2);
			close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
			if (norand && personality(ADDR_NO_RANDOMIZE) < 0)
				_exit(125);
			execv(path, cargv);
			_exit(127);
		}
		close(po[1]);
		close(pe[1]);
		size_t no = 0, ne = 0;
		drain(po[0], pe[0], out, &no, err, &ne);
		close(po[0]);
		close(pe[0]);
		int st;
		while (waitpid(pid, &st, 0) < 0) {
			if (errno != EINTR) {
				perror("waitpid");
				return 2;
			}
		}
		int bad = 0;
		if (WIFSIGNALED(st)) {
			crashes++;
			by_signal[WTERMSIG(st) & 63]++;
			bad = 1;
		} else if (WEXITSTATUS(st) != want_status) {
			wrong_status++;
			bad = 1;
		} else if (no != want_len || memcmp(out, want_out, want_len) != 0 || ne != 0) {
			wrong_output++;
			bad = 1;
		} else {
			ok++;
		}
		if (bad && nex < MAX_EXAMPLES) {
			struct example *e = &ex[nex++];
			e->run = r;
			e->norand = norand;
			e->status = WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
			printable(e->out, sizeof e->out, out, no);
			printable(e->err, sizeof e->err, err, ne);
		}
	}
	printf("{\"runs\":%ld,\"norand_runs\":%ld,\"ok\":%ld,\"crashes\":%ld,\"wrong_status\":%ld,\"wrong_output\":%ld,\"by_signal\":{",
	       runs, norand_runs, ok, crashes, wrong_status, wrong_output);
	int first = 1;
	for (int s = 1; s < 65; s++) {
		if (!by_signal[s])
			continue;
		printf("%s\"%d\":%ld", first ? "" : ",", s, by_signal[s]);
		first = 0;
	}
	printf("},\"examples\":[");
	for (int i = 0; i < nex; i++)
		printf("%s{\"run\":%ld,\"norand\":%d,\"status\":%d,\"stdout\":\"%s\",\"stderr\":\"%s\"}", i ? "," : "", ex[i].run, ex[i].norand,
		       ex[i].status, ex[i].out, ex[i].err);
	printf("]}\n");
	return 0;
}
