#ifndef CACHED_EXEC_LAUNCHER_H
#define CACHED_EXEC_LAUNCHER_H

#include "sys.h"
#include "util.h"
#include "image_format.h"

/* What a run did; values come from the schema (CX_OUTCOME_*) and are counted in stats. */
enum cx_outcome {
	CX_HIT = CX_OUTCOME_HIT,
	CX_MISS = CX_OUTCOME_MISS,
	CX_BYPASS_DISABLED = CX_OUTCOME_BYPASS_DISABLED,
	CX_BYPASS_LOADER_ENV = CX_OUTCOME_BYPASS_LOADER_ENV,
	CX_BYPASS_SECURE = CX_OUTCOME_BYPASS_SECURE,
	CX_BYPASS_NO_CACHE_DIR = CX_OUTCOME_BYPASS_NO_CACHE_DIR,
	CX_FAIL_IMAGE_IO = CX_OUTCOME_FAIL_IMAGE_IO,
	CX_FAIL_HEADER = CX_OUTCOME_FAIL_HEADER,
	CX_FAIL_OWNER = CX_OUTCOME_FAIL_OWNER,
	CX_FAIL_CHECKSUM = CX_OUTCOME_FAIL_CHECKSUM,
	CX_FAIL_TRUNCATED = CX_OUTCOME_FAIL_TRUNCATED,
	CX_FAIL_KEY = CX_OUTCOME_FAIL_KEY,
	CX_FAIL_STALE_FILE = CX_OUTCOME_FAIL_STALE_FILE,
	CX_FAIL_NEGATIVE_DEP = CX_OUTCOME_FAIL_NEGATIVE_DEP,
	CX_FAIL_VDSO = CX_OUTCOME_FAIL_VDSO,
	CX_FAIL_COLLISION = CX_OUTCOME_FAIL_COLLISION,
	CX_FAIL_MAP = CX_OUTCOME_FAIL_MAP,
	CX_FAIL_SLOT = CX_OUTCOME_FAIL_SLOT,
	CX_FAIL_KERNEL_STATE = CX_OUTCOME_FAIL_KERNEL_STATE,
	CX_FAIL_RESUME = CX_OUTCOME_FAIL_RESUME,
	CX_FAIL_ENV = CX_OUTCOME_FAIL_ENV,
	CX_BYPASS_UNTRUSTED_DIR = CX_OUTCOME_BYPASS_UNTRUSTED_DIR,
	CX_FAIL_EXE = CX_OUTCOME_FAIL_EXE,
	CX_BYPASS_STACK_LIMIT = CX_OUTCOME_BYPASS_STACK_LIMIT,
	CX_FAIL_IDENTITY = CX_OUTCOME_FAIL_IDENTITY,
	CX_FAIL_ARCH = CX_OUTCOME_FAIL_ARCH,
	CX_FAIL_PAGE_SIZE = CX_OUTCOME_FAIL_PAGE_SIZE,
	CX_FAIL_CPU = CX_OUTCOME_FAIL_CPU,
	CX_FAIL_LIMITS = CX_OUTCOME_FAIL_LIMITS,
};

/* What PR_SET_MM_MAP's exe_fd needs (jump.c exe_settable). */
enum { CX_CAPS_NONE, CX_CAPS_EFFECTIVE, CX_CAPS_RAISE };

/* An init spec: "after-init" and the adapter words, 0x1f-separated (src/resume/spec.ts initSpec). */
#define CX_SPEC_MAX (3 * CX_PATH_MAX)
/* RLIM_NLIMITS: the LIMITS section has at most one record per resource. */
#define CX_RLIMIT_COUNT 16
#define CX_MAX_WORDS 8

struct launch {
	int argc; /* launcher's argc */
	char **argv; /* launcher's argv */
	char **envp;
	uint64_t *auxv;
	uint64_t *sp; /* &argc on the kernel's initial stack */

	/* The program's view: argv it must see, argc and the stack word before argv. */
	int prog_argc;
	char **prog_argv;
	uint64_t *prog_sp;

	const char *name; /* what to resolve */
	const char *shim; /* masquerade: the shim this run came through (AT_EXECFN, or the #! line's path) */
	const char *execfn; /* the program's AT_EXECFN once a restore placed it (jump.c tramp_alloc) */
	struct kstat st; /* identity of the program */
	uint64_t self_dev, self_ino;
	int self_known;
	int execfn_not_self; /* run as a #! interpreter: AT_EXECFN is the script */

	int cache_fd, sys_fd; /* cachedir.c: CX_FD_UNKNOWN until opened, then an fd or -errno */
	int layer_fd; /* the directory the current key's image is in */
	char image_rel[32]; /* "images/<key>.img", below layer_fd */
	uint64_t key_hash;
	uint32_t euid;
	uint32_t key_euid; /* owner the image must have: euid, or 0 for the system layer */
	uint64_t groups_hash; /* groups_hash() once asked (never 0 then) */
	uint32_t cpu_id; /* cx_launch_cpu_id() once asked (never 0 then: cx_arch_cpu_id sets bit 0) */
	uint64_t key_groups; /* what the key holds: groups_hash, or 0 in the system layer */
	const char *path_env;
	int own_stack; /* running on CX_LAUNCHER_STACK, not the kernel's stack (start.c) */
	uint64_t kstack_top; /* cx_kernel_stack_top() at start */
	uint64_t stack_limit; /* cx_stack_limit(): 0 until asked */
	int caps_known, caps; /* exe_settable(): CX_CAPS_* */
	int dry_run; /* --internal-restore-dry: stop before the jump */
	int no_restore; /* the stack could not be rebuilt: cold only */
	int rotate; /* restored, but the image is past its age limit: queue a re-snapshot */
	uint64_t variant; /* env.c: the selector of the variant image for this environment (0: the primary) */
	uint64_t primary_hash; /* the key without a variant: what queue entries and refusals are named by */
	int env_dependent; /* the image looked at depends on the environment or is post-init: its fallback queues a re-take */
	uint32_t limits_read; /* FAIL_LIMITS: bit r for each resource limit the image recorded (its re-take runs with this run's) */
	int system_layer; /* the key and outcome are the read-only system layer's (root's to re-take) */
	uint64_t now_ns; /* CLOCK_REALTIME, read once */
	uint32_t tid; /* gettid(), once asked */
	uint64_t dry_t0; /* CLOCK_MONOTONIC when a dry run started */
	struct utsname_k uts;

	/*
	 * --after-init: only a post-init image (docs/resume-protocol.md) serves
	 * this run. prog_argv is then the adapter's command (what a cold run
	 * execs); user_argv is the argv the user gave the program, which a
	 * restore hands over in the resume context.
	 */
	int after_init;
	int pages_learnable; /* the python adapter: it records the pages a restored run wrote (pages.c) */
	int user_argc;
	char **user_argv;
	uint32_t ids[4]; /* CX_IDENT_*: pid, ppid, pgid, sid, once asked */
	int ids_known;
	const char *kinded_shim; /* shim_kind(): the shim last asked about, and its kind */
	int shim_kind;

	/* Big buffers last: cx_main zeroes only what comes before (page faults). */
	char path[CX_PATH_MAX]; /* resolved program */
	char cache_dir[CX_PATH_MAX];
	char image[CX_PATH_MAX];
	char first_shim[CX_PATH_MAX]; /* resolve(): the first PATH candidate that was the launcher, or "" */
	/* --after-init only. Words live here, not in .rodata: the trampoline's cold exec runs after the launcher is unmapped. */
	char init_spec[CX_SPEC_MAX];
	char adapter[CX_PATH_MAX];
	char init_file[CX_PATH_MAX];
	char word_text[64];
	char learn_target[CX_PATH_MAX + 16]; /* "script:/ABS" or "module:NAME" (learned preloads) */
	char script_line[256]; /* a python #! script's first line: the interpreter's path lives here */
	char script_path[CX_PATH_MAX];
};

/* cachedir.c: trusted directories and the files below them. */
#define CX_FD_UNKNOWN (-100000)
int cx_open_trusted_dir(const char *path, uint32_t owner);
int cx_user_cache(struct launch *L, int create);
int cx_system_layer(struct launch *L);
int cx_open_below(int dirfd, const char *rel, int flags, int mode);
void cx_close_dirs(struct launch *L);

/* launcher.c */
__attribute__((noreturn)) void cx_cold_exec(struct launch *L);

/* resolve.c: PATH lookup like execvp (0, or the exit status 126/127 after a message), #! scripts. */
const char *cx_errno_text(long e);
int is_self(struct launch *L, const struct kstat *st);
int resolve(struct launch *L);
int shebang(struct launch *L, char *script, size_t cap);
int shebang_line(struct launch *L, char line[256], char **interp, char **arg, struct kstat *ist);
enum { CX_SHIM_PLAIN, CX_SHIM_SELFPATH, CX_SHIM_AFTERINIT };
int shim_kind(struct launch *L, const char *shim);
int argv0_names_launcher(struct launch *L, const char *argv0, const char *shim);

/* key.c: bypass rules, the cache directory, the key, and the layers tried in order. */
enum cx_outcome bypass_reason(struct launch *L);
int secure_by_ids(const uint64_t *auxv);
int cache_dir(struct launch *L);
int compute_key(struct launch *L, const char *dir, uint32_t euid, int system);
enum cx_outcome restore_layers(struct launch *L);

/* after_init.c: --after-init options and the adapter's command. */
struct after_init_req {
	int seen;
	const char *file; /* --after-init=FILE: made absolute; empty means none (as in the CLI) */
	const char *preload; /* --preload LIST */
};
int is_after_init_option(const char *a);
int parse_after_init(const struct launch *L, int i, struct after_init_req *q);
int after_init_command(struct launch *L, const struct after_init_req *q, char **argv2, int need_adapter);
uint64_t resume_env_hash(char **envp);
int after_init_python_script(struct launch *L, char **uargv);

/* restore.c: returns only on failure, with the reason. */
enum cx_outcome cx_restore(struct launch *L);
/* inspect.c: --internal-inspect IMAGE, the C reader's view of an image. */
int cx_inspect(const char *image, uint32_t cpu_id);

/*
 * The launcher's own stack (arch/<arch>/start.c), below its text (linked at
 * 0x60000000 by scripts/build-native.mjs): programs never live there.
 */
#define CX_LAUNCHER_STACK 0x5ff80000
#define CX_LAUNCHER_STACK_SIZE 0x80000
#define CX_STR_(x) #x
#define CX_STR(x) CX_STR_(x)

/* stack.c: rebuild the initial stack for the program (drop launcher args, insert #! argv). */
int cx_reshape_stack(struct launch *L, int drop, char *const *insert, int ninsert, int copy_strings);
uint64_t cx_kernel_stack_top(const uint64_t *auxv);
uint64_t cx_stack_limit(struct launch *L);

/* record.c */
void cx_record(const struct launch *L, enum cx_outcome outcome);
/*
 * Queue this key for a (re-)snapshot, in this run's environment. CX_QUEUE_ROTATE
 * asks the warmer to replace an existing image; CX_QUEUE_RETAKE is a stale or
 * other-environment fallback (at most one per key per CACHED_EXEC_RETAKE_SECONDS).
 */
#define CX_QUEUE_ROTATE 1
#define CX_QUEUE_RETAKE 2
void cx_queue_miss(const struct launch *L, int flags);
uint64_t cx_now_ns(struct launch *L);

/* paths.c: <pkg>/dist/cli/main.js and <pkg>/shell/NAME from /proc/self/exe; 0 on success. */
int cx_cli_script(char *out, size_t cap);
int shell_file(char *out, size_t cap, const char *name);

/* arch/<arch>/start.c */
__attribute__((noreturn)) void cx_arch_counter_trap_probe(void);

/* arch/<arch>/cpu.c: a fingerprint of the CPU features code is chosen by (IFUNC resolvers, ld.so's own choices). */
uint32_t cx_arch_cpu_id(const uint64_t *auxv);
/* key.c: cx_arch_cpu_id of this run, asked once (cpuid traps to the hypervisor: microseconds each). */
uint32_t cx_launch_cpu_id(struct launch *L);

#ifndef CX_NODE_PATH
#define CX_NODE_PATH "/usr/bin/node"
#endif

static inline int is_true_env_value(const char *v) { return v && v[0] && !(v[0] == '0' && v[1] == 0); }

#endif
