/*
 * Whether a run may restore at all (bypass rules), where its cache is, and
 * the key that names its image: the same bytes as src/cache/key.ts. Then the
 * layers are tried in order: the user's cache, the read-only system layer.
 */
#include "launcher.h"


enum cx_outcome bypass_reason(struct launch *L)
{
	if (is_true_env_value(cx_getenv(L->envp, "CACHED_EXEC_DISABLE")))
		return CX_BYPASS_DISABLED;
	for (char **e = L->envp; *e; e++) {
		const char *v = *e;
		if (cx_startswith(v, "LD_") || cx_startswith(v, "GLIBC_TUNABLES=") || cx_startswith(v, "MALLOC_"))
			return CX_BYPASS_LOADER_ENV;
	}
	if (secure_by_ids(L->auxv) || (L->st.st_mode & (S_ISUID | S_ISGID)))
		return CX_BYPASS_SECURE;
	return CX_HIT;
}

/*
 * AT_SECURE because the caller's ids differ (a setuid caller), as opposed to
 * the launcher's own file capability (cached-exec --install-capability),
 * which the program never gets: the restore drops it, an exec loses it.
 */
int secure_by_ids(const uint64_t *auxv)
{
	if (!cx_auxv_get(auxv, AT_SECURE))
		return 0;
	return cx_auxv_get(auxv, AT_UID) != cx_auxv_get(auxv, AT_EUID) ||
	       cx_auxv_get(auxv, AT_GID) != cx_auxv_get(auxv, AT_EGID);
}

int cache_dir(struct launch *L)
{
	struct cx_buf b = { L->cache_dir, 0, sizeof L->cache_dir, 0 };
	const char *d = cx_getenv(L->envp, "CACHED_EXEC_DIR");
	if (d && d[0]) {
		cx_buf_str(&b, d);
	} else if ((d = cx_getenv(L->envp, "XDG_CACHE_HOME")) && d[0]) {
		cx_buf_str(&b, d);
		cx_buf_str(&b, "/cached-exec");
	} else if ((d = cx_getenv(L->envp, "HOME")) && d[0]) {
		cx_buf_str(&b, d);
		cx_buf_str(&b, "/.cache/cached-exec");
	} else {
		return -1;
	}
	return b.overflow ? -1 : 0;
}

static void put32(unsigned char *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }

/*
 * src/cache/key.ts groupsHash(): the effective gid and the supplementary
 * groups in the kernel's order. An image holds what its snapshot could read:
 * a user removed from a group must not get it back from an image.
 */
uint32_t cx_launch_cpu_id(struct launch *L)
{
	if (!L->cpu_id)
		L->cpu_id = cx_arch_cpu_id(L->auxv);
	return L->cpu_id;
}

static uint64_t groups_hash(struct launch *L)
{
	static uint32_t buf[2 + 65536];
	if (L->groups_hash)
		return L->groups_hash;
	long n = sys_getgroups(65536, buf + 2);
	if (n < 0)
		n = 0;
	buf[0] = (uint32_t)cx_auxv_get(L->auxv, AT_EGID); /* the kernel's, at exec: one syscall less */
	buf[1] = (uint32_t)n;
	L->groups_hash = cx_hash64(buf, 8 + 4 * (size_t)n, CX_FNV_OFFSET);
	return L->groups_hash;
}

/*
 * Same bytes as src/cache/key.ts keyBytes(), for the owner `euid`, under
 * `dir`; `system`: the read-only layer, whose images serve every user alike
 * (no groups in their key). With L->variant, the key of the variant image
 * for this environment (env.c).
 */
int compute_key(struct launch *L, const char *dir, uint32_t euid, int system)
{
	unsigned char buf[56 + 3 * CX_PATH_MAX + CX_SPEC_MAX + 24];
	size_t n = 56;
	if (!L->uts.release[0] && sys_uname(&L->uts) < 0)
		return -1;
	L->path_env = cx_getenv(L->envp, "PATH");
	if (!L->path_env)
		L->path_env = "";
	L->key_euid = euid;
	put32(buf + 0, CX_FORMAT_VERSION);
	put32(buf + 4, euid);
	put64(buf + 8, L->st.st_dev);
	put64(buf + 16, L->st.st_ino);
	put64(buf + 24, (uint64_t)L->st.st_size);
	put64(buf + 32, L->st.st_mtime_sec);
	put64(buf + 40, L->st.st_ctime_sec);
	put32(buf + 48, (uint32_t)L->st.st_mtime_nsec);
	put32(buf + 52, (uint32_t)L->st.st_ctime_nsec);
	const char *strs[3] = { L->path, L->path_env, L->uts.release };
	for (int i = 0; i < 3; i++) {
		size_t len = cx_strlen(strs[i]) + 1;
		if (n + len > sizeof buf)
			return -1;
		__builtin_memcpy(buf + n, strs[i], len);
		n += len;
	}
	if (L->after_init) {
		/* A post-init image: what ran before the checkpoint (the environment is the image's to check). */
		size_t len = cx_strlen(L->init_spec) + 1;
		if (n + len > sizeof buf)
			return -1;
		__builtin_memcpy(buf + n, L->init_spec, len);
		n += len;
	}
	if (n + 24 > sizeof buf)
		return -1;
	L->key_groups = system ? 0 : groups_hash(L);
	put64(buf + n, L->key_groups);
	n += 8;
	/*
	 * The CPU the image is for: its libraries chose code by this CPU's
	 * features (IFUNCs, ld.so's xsave path). In the key, not only checked, so
	 * machines of other CPUs that share one cache (an NFS home, a VM moved to
	 * another host) each get and keep their own image instead of a cold run.
	 */
	put64(buf + n, cx_launch_cpu_id(L));
	n += 8;
	if (L->variant) {
		put64(buf + n, L->variant);
		n += 8;
	}
	L->key_hash = cx_hash64(buf, n, CX_FNV_OFFSET);
	struct cx_buf r = { L->image_rel, 0, sizeof L->image_rel, 0 };
	cx_buf_str(&r, "images/");
	cx_buf_hex16(&r, L->key_hash);
	cx_buf_str(&r, ".img");
	if (!L->variant)
		L->primary_hash = L->key_hash;
	/* The full path only names the image in messages and --internal-key: every open goes through the dir fd. */
	struct cx_buf b = { L->image, 0, sizeof L->image, 0 };
	cx_buf_str(&b, dir);
	cx_buf_str(&b, "/");
	cx_buf_str(&b, L->image_rel);
	return b.overflow || r.overflow ? -1 : 0;
}

/*
 * One layer: its primary image for the key, and when that one was taken for
 * another environment (CX_FAIL_ENV, env.c), the variant image for this one.
 * Returns only when it did not restore; a missing variant leaves the
 * primary's reason (and its key, which statistics and the queue name).
 */
static enum cx_outcome try_layer(struct launch *L, int dirfd, const char *dir, uint32_t euid, int system)
{
	L->variant = 0;
	L->system_layer = system;
	L->layer_fd = dirfd;
	if (compute_key(L, dir, euid, system))
		return CX_BYPASS_NO_CACHE_DIR;
	enum cx_outcome o = cx_restore(L);
	if (o != CX_FAIL_ENV || compute_key(L, dir, euid, system))
		return o;
	enum cx_outcome v = cx_restore(L);
	if (v != CX_MISS)
		return v;
	L->key_hash = L->primary_hash;
	return o;
}

/*
 * The user's cache first, then the read-only system layer (filled by root at
 * firmware build or first boot, keyed for uid 0, trusted only when root owns
 * the image). On a miss in both, L describes the user's key for the queue.
 */
enum cx_outcome restore_layers(struct launch *L)
{
	/* At boot there may be no HOME, hence no user cache: the system layer still serves. */
	int user = cx_user_cache(L, 0);
	enum cx_outcome o = !L->cache_dir[0] ? CX_BYPASS_NO_CACHE_DIR : user == -ENOENT ? CX_MISS : CX_BYPASS_UNTRUSTED_DIR;
	if (user >= 0) {
		o = try_layer(L, user, L->cache_dir, L->euid, 0);
		if (o != CX_MISS)
			return o;
	}
	int sys = cx_system_layer(L);
	if (sys >= 0) {
		enum cx_outcome s = try_layer(L, sys, cx_getenv(L->envp, "CACHED_EXEC_SYSTEM_DIR"), 0, 1);
		/*
		 * A system image that is not this user's to use (root's identity-bound
		 * image, unreadable or refused as such; taken with other resource
		 * limits) or not this machine's (another architecture, page size or
		 * CPU: a layer built elsewhere) is the user's miss: their own image is
		 * queued, as with no system image at all.
		 */
		int not_ours = s == CX_FAIL_IDENTITY || s == CX_FAIL_IMAGE_IO || s == CX_FAIL_OWNER || s == CX_FAIL_ARCH ||
			       s == CX_FAIL_PAGE_SIZE || s == CX_FAIL_CPU || s == CX_FAIL_LIMITS;
		if (s != CX_MISS && s != CX_BYPASS_NO_CACHE_DIR && !not_ours)
			return s;
	}
	/* A miss is queued in the user's cache (when it can be trusted): its primary key, not the system layer's. */
	L->variant = 0;
	L->system_layer = 0;
	if (L->cache_dir[0] && compute_key(L, L->cache_dir, L->euid, 0))
		return CX_BYPASS_NO_CACHE_DIR;
	return o;
}
