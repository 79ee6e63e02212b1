/*
 * Side effects of a run that are not the restore itself: one statistics record
 * per run, and on a miss, queueing the program for a background snapshot.
 *
 * Both must stay cheap (they are on every run's path) and must never change
 * what the program sees: no fd survives into the program, no child of ours is
 * left for the program to reap, no failure here changes the outcome.
 */
#include "launcher.h"
#include "image_format.h"

static int dir_path(struct cx_buf *b, const struct launch *L, const char *sub, const char *leaf)
{
	b->len = 0;
	b->overflow = 0;
	cx_buf_str(b, L->cache_dir);
	cx_buf_str(b, sub);
	if (leaf)
		cx_buf_str(b, leaf);
	return b->overflow ? -1 : 0;
}

static void mkdirs(const struct launch *L, const char *sub)
{
	char p[CX_PATH_MAX];
	struct cx_buf b = { p, 0, sizeof p, 0 };
	/* Only the cache dir itself and one level below: the parent is the user's. */
	sys_mkdir(L->cache_dir, 0700);
	if (dir_path(&b, L, sub, 0) == 0)
		sys_mkdir(p, 0700);
}

/* Opens `file` (inside the cache subdirectory `sub`) for writing, creating the directories on first use. */
static int create_in(const struct launch *L, const char *sub, const char *file, int extra_flags)
{
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | extra_flags;
	int fd = (int)sys_openat(AT_FDCWD, file, flags, 0600);
	if (fd == -ENOENT) {
		mkdirs(L, sub);
		fd = (int)sys_openat(AT_FDCWD, file, flags, 0600);
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
	char p[CX_PATH_MAX];
	struct cx_buf b = { p, 0, sizeof p, 0 };
	if (!L->cache_dir[0] || dir_path(&b, L, "/stats/runs.log", 0))
		return;
	int fd = create_in(L, "/stats", p, O_APPEND);
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
	char p[CX_PATH_MAX];
	struct cx_buf b = { p, 0, sizeof p, 0 };
	if (dir_path(&b, L, "/queue/.warmer.lock", 0))
		return;
	int lk = (int)sys_openat(AT_FDCWD, p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lk < 0)
		return;
	long busy = sys_flock(lk, LOCK_EX | LOCK_NB);
	sys_close(lk);
	if (busy != 0)
		return;
	/* Remember when: see the already-queued case in cx_queue_miss. */
	if (dir_path(&b, L, "/queue/.spawned", 0) == 0) {
		int fd = create_in(L, "/queue", p, O_TRUNC);
		if (fd >= 0) {
			sys_write(fd, "", 0);
			sys_close(fd);
			sys_utimensat(AT_FDCWD, p, 0, 0);
		}
	}
	spawn_warmer(L);
}

/*
 * A re-take of key K (a stale or other-environment fallback) waits
 * CACHED_EXEC_RETAKE_SECONDS (default 60) after the warmer's last one, which
 * it notes as the mtime of retake/K: an environment that keeps changing
 * cannot keep the warmer busy (the warmer caps the variants kept per key).
 */
static int retake_too_soon(const struct launch *L, const char *name)
{
	char p[CX_PATH_MAX];
	struct cx_buf b = { p, 0, sizeof p, 0 };
	struct kstat st;
	uint64_t wait = 60;
	const char *v = cx_getenv(L->envp, "CACHED_EXEC_RETAKE_SECONDS");
	if (v && *v) {
		wait = 0;
		for (; *v >= '0' && *v <= '9' && wait < 1000000000; v++)
			wait = wait * 10 + (uint64_t)(*v - '0');
	}
	if (dir_path(&b, L, "/retake/", name) || sys_stat(p, &st) < 0)
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
	char p[CX_PATH_MAX], tmp[CX_PATH_MAX], name[24], tmpname[64];
	struct cx_buf b = { p, 0, sizeof p, 0 };
	struct cx_buf t = { tmp, 0, sizeof tmp, 0 };
	struct cx_buf nb = { name, 0, sizeof name, 0 };
	struct cx_buf tb = { tmpname, 0, sizeof tmpname, 0 };
	if (!L->cache_dir[0] || is_true_env_value(cx_getenv(L->envp, "CACHED_EXEC_NO_WARM")))
		return;
	/* The entry is line-based: an init file whose name holds a newline cannot be queued. */
	for (const char *c = L->after_init ? L->init_spec : ""; *c; c++)
		if (*c == '\n')
			return;
	cx_buf_hex16(&nb, L->primary_hash ? L->primary_hash : L->key_hash);
	if (dir_path(&b, L, "/refused/", name))
		return;
	if (!(flags & CX_QUEUE_ROTATE) && sys_faccessat(p, 0) == 0)
		return; /* refused before: retried only after --cleanup clears it */
	if ((flags & CX_QUEUE_RETAKE) && retake_too_soon(L, name))
		return;
	if (dir_path(&b, L, "/queue/", name))
		return;
	if (sys_faccessat(p, 0) == 0) {
		/*
		 * Queued already. Normally a warmer is on it; but one that was killed
		 * leaves its entries behind. Start another if none holds the lock and
		 * no launcher started one in the last two seconds (concurrent misses of
		 * one program must not start a warmer each while the first boots).
		 */
		struct kstat st;
		if (dir_path(&b, L, "/queue/.spawned", 0))
			return;
		if (sys_stat(p, &st) == 0 &&
		    cx_now_ns((struct launch *)L) < (st.st_mtime_sec + 2) * 1000000000ull)
			return;
		start_warmer_unless_running(L);
		return;
	}
	cx_buf_str(&tb, ".");
	cx_buf_str(&tb, name);
	cx_buf_str(&tb, ".");
	cx_buf_hex16(&tb, (uint64_t)sys_getpid());
	cx_buf_str(&tb, ".tmp");
	if (dir_path(&t, L, "/queue/", tmpname))
		return;
	int fd = create_in(L, "/queue", tmp, O_EXCL);
	if (fd < 0)
		return;
	char entry[2 * CX_PATH_MAX + CX_SPEC_MAX + 32];
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
	sys_write(fd, entry, e.len);
	write_env(fd, L->envp);
	sys_close(fd);
	long linked = sys_linkat(tmp, p);
	sys_unlinkat(tmp);
	if (linked == 0 || linked == -EEXIST)
		start_warmer_unless_running(L);
}
