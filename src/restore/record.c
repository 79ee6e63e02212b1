/*
 * Side effects of a run that are not the restore itself: one statistics record
 * per run, and on a miss, queueing the program for a background snapshot.
 *
 * Both must stay cheap (they are on every run's path) and must never change
 * what the program sees: no fd survives into the program, no child of ours is
 * left for the program to reap, no failure here changes the outcome. Both
 * write only below the user's cache directory as cachedir.c verified it:
 * a directory that failed its checks gets no write at all.
 */
#include "launcher.h"
#include "image_format.h"

/*
 * Opens `sub`/`leaf` below the user's cache for writing, creating the cache
 * and the subdirectory on first use. -errno when there is nowhere safe.
 */
static int create_below(const struct launch *L, const char *sub, const char *leaf, int flags)
{
	char rel[64];
	struct cx_buf b = { rel, 0, sizeof rel, 0 };
	int dir = cx_user_cache((struct launch *)L, 1);
	if (dir < 0)
		return dir;
	cx_buf_str(&b, sub);
	cx_buf_str(&b, "/");
	cx_buf_str(&b, leaf);
	if (b.overflow)
		return -EINVAL;
	int fd = cx_open_below(dir, rel, O_WRONLY | O_CREAT | flags, 0600);
	if (fd == -ENOENT) {
		sys_mkdirat(dir, sub, 0700);
		fd = cx_open_below(dir, rel, O_WRONLY | O_CREAT | flags, 0600);
	}
	return fd;
}

uint64_t cx_now_ns(struct launch *L)
{
	if (!L->now_ns) {
		struct timespec_k ts = { 0, 0 };
		sys_clock_gettime(CLOCK_REALTIME, &ts);
		L->now_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	}
	return L->now_ns;
}

void cx_record(const struct launch *L, enum cx_outcome outcome)
{
	int fd = create_below(L, "stats", "runs.log", O_APPEND);
	if (fd < 0)
		return;
	struct cx_stat_record r = {
		.magic = CX_STAT_MAGIC,
		.outcome = (uint32_t)outcome,
		.key_hash = L->key_hash,
		.time_ns = cx_now_ns((struct launch *)L),
		.pid = L->tid ? L->tid : (uint32_t)sys_getpid(), /* a restore already asked */
		.reserved = 0,
	};
	/* One write with O_APPEND: concurrent launchers never interleave or lose records. */
	sys_write(fd, &r, sizeof r);
	sys_close(fd);
}

/* Double fork so the program we exec next never sees a child it did not make. */
static void spawn_warmer(const struct launch *L)
{
	char *argv[4];
	char script[CX_PATH_MAX + 32];
	if (cx_cli_script(script, sizeof script))
		return;
	argv[0] = (char *)"node";
	argv[1] = script;
	argv[2] = (char *)"--drain-queue";
	argv[3] = 0;
	long pid = sys_fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		if (sys_fork() == 0) {
			sys_setsid();
			sys_setpriority(PRIO_PROCESS, 0, 10);
			/*
			 * The caller may read our stdout until EOF (`x=$(cmd)`): a warmer
			 * holding it open would hang the caller. Keep no fd of the caller's.
			 */
			int fd = (int)sys_openat(AT_FDCWD, "/dev/null", O_RDWR, 0);
			if (fd >= 0) {
				sys_dup2(fd, 0);
				sys_dup2(fd, 1);
				sys_dup2(fd, 2);
			}
			sys_close_range(3, ~0u);
			sys_execve(CX_NODE_PATH, argv, L->envp);
		}
		sys_exit_group(0);
	}
	int status;
	sys_wait4((int)pid, &status, 0);
}

/* A running warmer holds the lock and rescans the queue before it exits. */
static void start_warmer_unless_running(const struct launch *L)
{
	int lk = create_below(L, "queue", ".warmer.lock", 0);
	if (lk < 0)
		return;
	long busy = sys_flock(lk, LOCK_EX | LOCK_NB);
	sys_close(lk);
	if (busy != 0)
		return;
	/* Remember when: see the already-queued case in cx_queue_miss. */
	int fd = create_below(L, "queue", ".spawned", O_TRUNC);
	if (fd >= 0) {
		sys_utimensat(fd, 0, 0, 0); /* futimens(fd, now) */
		sys_close(fd);
	}
	spawn_warmer(L);
}

/*
 * A re-take of key K (a stale or other-environment fallback) waits
 * CACHED_EXEC_RETAKE_SECONDS (default 60) after the warmer's last one, which
 * it notes as the mtime of retake/K: an environment that keeps changing
 * cannot keep the warmer busy (the warmer caps the variants kept per key).
 */
static int retake_too_soon(const struct launch *L, int dir, const char *name)
{
	char rel[64];
	struct cx_buf b = { rel, 0, sizeof rel, 0 };
	struct kstat st;
	uint64_t wait = 60;
	const char *v = cx_getenv(L->envp, "CACHED_EXEC_RETAKE_SECONDS");
	if (v && *v) {
		wait = 0;
		for (; *v >= '0' && *v <= '9' && wait < 1000000000; v++)
			wait = wait * 10 + (uint64_t)(*v - '0');
	}
	cx_buf_str(&b, "retake/");
	cx_buf_str(&b, name);
	if (b.overflow || sys_fstatat(dir, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return cx_now_ns((struct launch *)L) < ((uint64_t)st.st_mtime_sec + wait) * 1000000000ull;
}

/* The caller's environment after the entry's lines ("env\n", then NAME=value\0 each): the snapshot runs in it. */
#define QUEUE_ENV_MAX (256 * 1024)
static void write_env(int fd, char **envp)
{
	struct iovec_k iov[64];
	size_t total = 0;
	char **e = envp;
	for (; *e; e++)
		if ((total += cx_strlen(*e) + 1) > QUEUE_ENV_MAX)
			return; /* an enormous environment: the warmer takes its own */
	sys_write(fd, "env\n", 4);
	for (e = envp; *e;) {
		int n = 0;
		for (; *e && n < 64; e++, n++)
			iov[n] = (struct iovec_k){ *e, cx_strlen(*e) + 1 };
		sys_writev(fd, iov, n);
	}
}

/*
 * "limit<TAB>resource<TAB>soft<TAB>hard" lines: this run's stack limit
 * always (glibc sizes thread stacks from it, and gcc raises it for the
 * programs it runs), and every limit the image that failed FAIL_LIMITS had
 * recorded. The warmer takes the snapshot under them (src/snapshot/trace.ts
 * followToExec), so the image serves runs like this one.
 */
static void put_limits(struct cx_buf *e, const struct launch *L)
{
	uint32_t want = L->limits_read | (1u << RLIMIT_STACK);
	for (int r = 0; r < CX_RLIMIT_COUNT; r++) {
		struct rlimit_k now;
		if (!(want & (1u << r)) || sys_prlimit(0, r, 0, &now) != 0)
			continue;
		cx_buf_str(e, "limit\t");
		cx_buf_u64(e, (uint64_t)r, 10);
		cx_buf_str(e, "\t");
		cx_buf_u64(e, now.cur, 10);
		cx_buf_str(e, "\t");
		cx_buf_u64(e, now.max, 10);
		cx_buf_str(e, "\n");
	}
}

/*
 * Queue the key for a snapshot unless it is queued already or was refused,
 * and start a warmer unless one is running. The entry (src/cache/store.ts
 * QueueEntry) holds what the warmer needs to rebuild the key: the program
 * path and PATH; for a post-init image a line "after-init<TAB>init spec"; a
 * line "rotate" when an image exists but is past its age limit, "retake" for
 * a stale or other-environment fallback; then this run's environment. It is
 * named by the primary key and written to a temp name, then linked into
 * place: a reader never sees half of one, and the first request stands.
 */
void cx_queue_miss(const struct launch *L, int flags)
{
	char rel[64], tmprel[96], name[24];
	struct cx_buf nb = { name, 0, sizeof name, 0 };
	struct kstat st;
	if (!L->cache_dir[0] || is_true_env_value(cx_getenv(L->envp, "CACHED_EXEC_NO_WARM")))
		return;
	/* The entry is line-based: an init file whose name holds a newline cannot be queued. */
	for (const char *c = L->after_init ? L->init_spec : ""; *c; c++)
		if (*c == '\n')
			return;
	int dir = cx_user_cache((struct launch *)L, 1);
	if (dir < 0)
		return;
	cx_buf_hex16(&nb, L->primary_hash ? L->primary_hash : L->key_hash);
	struct cx_buf b = { rel, 0, sizeof rel, 0 };
	cx_buf_str(&b, "refused/");
	cx_buf_str(&b, name);
	if (!(flags & CX_QUEUE_ROTATE) && sys_fstatat(dir, rel, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return; /* refused before: retried only after --cleanup clears it */
	if ((flags & CX_QUEUE_RETAKE) && retake_too_soon(L, dir, name))
		return;
	b.len = 0;
	cx_buf_str(&b, "queue/");
	cx_buf_str(&b, name);
	if (sys_fstatat(dir, rel, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		/*
		 * Queued already. Normally a warmer is on it; but one that was killed
		 * leaves its entries behind. Start another if none holds the lock and
		 * no launcher started one in the last two seconds (concurrent misses of
		 * one program must not start a warmer each while the first boots).
		 */
		if (sys_fstatat(dir, "queue/.spawned", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    cx_now_ns((struct launch *)L) < (st.st_mtime_sec + 2) * 1000000000ull)
			return;
		start_warmer_unless_running(L);
		return;
	}
	char tmpname[64];
	struct cx_buf tb = { tmpname, 0, sizeof tmpname, 0 };
	cx_buf_str(&tb, ".");
	cx_buf_str(&tb, name);
	cx_buf_str(&tb, ".");
	cx_buf_hex16(&tb, (uint64_t)sys_getpid());
	cx_buf_str(&tb, ".tmp");
	struct cx_buf t = { tmprel, 0, sizeof tmprel, 0 };
	cx_buf_str(&t, "queue/");
	cx_buf_str(&t, tmpname);
	int fd = create_below(L, "queue", tmpname, O_EXCL);
	if (fd < 0)
		return;
	char entry[2 * CX_PATH_MAX + CX_SPEC_MAX + 32 + CX_RLIMIT_COUNT * 56];
	struct cx_buf e = { entry, 0, sizeof entry, 0 };
	cx_buf_str(&e, L->path);
	cx_buf_put(&e, "\n", 1);
	cx_buf_str(&e, L->path_env);
	cx_buf_put(&e, "\n", 1);
	if (L->after_init) {
		cx_buf_str(&e, "after-init\t");
		cx_buf_str(&e, L->init_spec);
		cx_buf_put(&e, "\n", 1);
	}
	if (flags & CX_QUEUE_ROTATE)
		cx_buf_str(&e, "rotate\n");
	if (flags & CX_QUEUE_RETAKE)
		cx_buf_str(&e, "retake\n");
	put_limits(&e, L);
	sys_write(fd, entry, e.len);
	write_env(fd, L->envp);
	sys_close(fd);
	long linked = sys_linkat(dir, tmprel, dir, rel);
	sys_unlinkat(dir, tmprel);
	if (linked == 0 || linked == -EEXIST)
		start_warmer_unless_running(L);
}
