#ifndef CACHED_EXEC_LAUNCHER_H
#define CACHED_EXEC_LAUNCHER_H

#include "sys.h"
#include "util.h"

/* Why a run was not restored; the numbers are stable (statistics use them). */
enum cx_outcome {
	CX_HIT = 0,
	CX_MISS = 1, /* no image for this key */
	CX_BYPASS_DISABLED = 2, /* CACHED_EXEC_DISABLE */
	CX_BYPASS_LOADER_ENV = 3, /* LD_*, GLIBC_TUNABLES, MALLOC_* */
	CX_BYPASS_SECURE = 4, /* AT_SECURE, setuid/setgid program */
	CX_BYPASS_NO_CACHE_DIR = 5,
	CX_FAIL_IMAGE_IO = 6, /* open/read/short image */
	CX_FAIL_HEADER = 7, /* magic, version, abi hash, arch, page size, sections */
	CX_FAIL_OWNER = 8, /* not ours or writable by others */
	CX_FAIL_CHECKSUM = 9,
	CX_FAIL_TRUNCATED = 10, /* file size differs from header */
	CX_FAIL_KEY = 11, /* key fields differ (hash collision) */
	CX_FAIL_STALE_FILE = 12, /* a library or loader file changed */
	CX_FAIL_NEGATIVE_DEP = 13, /* a probed path now exists */
	CX_FAIL_VDSO = 14, /* vdso/vvar could not be moved */
	CX_FAIL_COLLISION = 15, /* address range taken in this process */
	CX_FAIL_MAP = 16, /* other mmap/mprotect failure */
	CX_FAIL_SLOT = 17, /* a slot could not be computed (argc too small...) */
	CX_FAIL_KERNEL_STATE = 18, /* arch_prctl/set_robust_list/rseq failed */
	CX_OUTCOME_COUNT = 19
};

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
	char path[CX_PATH_MAX]; /* resolved program */
	struct kstat st; /* identity of the program */
	uint64_t self_dev, self_ino;
	int self_known;

	char cache_dir[CX_PATH_MAX];
	char image[CX_PATH_MAX];
	uint64_t key_hash;
	struct utsname_k uts;
	uint32_t euid;
	const char *path_env;
	int dry_run; /* --internal-restore-dry: stop before the jump */
};

/* restore.c: returns only on failure, with the reason. */
enum cx_outcome cx_restore(struct launch *L);
/* restore.c: --internal-inspect IMAGE, the C reader's view of an image. */
int cx_inspect(const char *image);

__attribute__((noreturn)) void cx_cold_exec(struct launch *L);

#endif
