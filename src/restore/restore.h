/*
 * What the restore steps share: the image as read from disk, the fds of the
 * files it maps, and one prototype per step. Each step lives in its own file,
 * in the order restore.c runs them (ARCHITECTURE.md explains why the order
 * matters): image.c (read and check), resume.c (post-init checks and context),
 * files.c (dependencies), map.c (vdso and regions), patch.c (slots, auxv),
 * jump.c (kernel state, trampoline), with the machine-specific parts in
 * arch/<arch>/.
 */
#ifndef CACHED_EXEC_RESTORE_H
#define CACHED_EXEC_RESTORE_H

#include "launcher.h"
#include "image_format.h"
#define META_BUF (64 * 1024)
/* Environment dependencies: the snapshotter lists at most 200 (src/snapshot/lookups.ts MAX_ENV_DEPS). */
#define MAX_ENV_DEPS 256
/* File entries: READ and ABSENT ones cost a stat and no fd (python with numpy reads ~2000). */
#define MAX_FILES 16384
/* MAPPED files are held open until their regions are mapped. */
#define MAX_MAPPED 1024

extern char __ehdr_start[];
extern char _end[];

struct image {
	int fd;
	struct kstat st;
	unsigned char *meta;
	uint64_t meta_size;
	struct cx_header *h;
	const struct cx_key *key;
	const char *strings;
	uint64_t strings_len;
	const unsigned char *files, *regions, *slots, *vdso;
	uint32_t nfiles, nregions, nslots, nvdso;
	uint32_t file_es, region_es, slot_es, vdso_es;
	const struct cx_state *state;
	/* Post-init images only. */
	const struct cx_resume *resume;
	const unsigned char *sigs, *xstate;
	uint32_t nsigs, sig_es;
	uint64_t xstate_len;
	/* The environment variables it depends on (env.c). */
	const unsigned char *envdeps;
	uint32_t nenvdeps, envdep_es;
	/* The resource limits the program read (limits.c). */
	const unsigned char *limits;
	uint32_t nlimits, limit_es;
	/* Which writable pages the restore copies at once (pages.c): every one, none, or the learned ranges. */
	enum { CX_POP_ALL, CX_POP_NONE, CX_POP_RANGES } pop;
	const struct cx_pages_range *ranges;
	uint32_t nranges;
	int pages_record; /* the context asks the adapter to record what this run wrote */
	int pages_claim; /* a learning run: 1 claims the file, 2 replaces a stale one (claim_pages) */
	uint32_t pages_runs;
	char pages_rel[40]; /* "images/<key>.pages" */
};

/* The fds of MAPPED files, the only files held open, by ascending file index. */
struct file_fds {
	uint32_t n;
	uint32_t file[MAX_MAPPED];
	int fd[MAX_MAPPED];
};

/* A learned-pages file (pages.c), read whole onto the stack: at most CX_PAGES_MAX ranges. */
#define CX_PAGES_MAX 1024
struct cx_pages_range {
	uint64_t addr, len;
};
struct cx_pages_file {
	struct cx_pages_header {
		uint64_t magic;
		uint64_t dev, ino, size, mtime_sec, mtime_nsec; /* the image it was learned on */
		uint32_t flags, runs, nranges, reserved;
	} h;
	struct cx_pages_range r[CX_PAGES_MAX];
};

#define FILE_AT(im, i) ((const struct cx_file *)((im)->files + (uint64_t)(i) * (im)->file_es))
#define REGION_AT(im, i) ((const struct cx_region *)((im)->regions + (uint64_t)(i) * (im)->region_es))
#define SLOT_AT(im, i) ((const struct cx_slot *)((im)->slots + (uint64_t)(i) * (im)->slot_es))
#define VDSO_AT(im, i) ((const struct cx_vdso_part *)((im)->vdso + (uint64_t)(i) * (im)->vdso_es))
#define SIG_AT(im, i) ((const struct cx_sigaction *)((im)->sigs + (uint64_t)(i) * (im)->sig_es))

static inline int mmap_failed(long r) { return r < 0 && r > -4096; }

/* image.c: step 1, read and check the image. */
const char *image_str(const struct image *im, uint32_t off);
enum cx_outcome read_meta(struct image *im, int dirfd, const char *file, uint64_t *buf);
enum cx_outcome check_owner(const struct image *im, uint32_t euid);
enum cx_outcome check_header(struct image *im, uint64_t page_size, uint32_t cpu_id);
enum cx_outcome find_sections(struct image *im);
enum cx_outcome check_key(const struct image *im, const struct launch *L);
/* env.c: the rest of the key step, the environment the image depends on (sets L->variant on CX_FAIL_ENV). */
enum cx_outcome check_env(const struct image *im, struct launch *L);
void check_age(const struct image *im, struct launch *L);
/* limits.c: the resource limits the program read must be this process's. */
#define LIMIT_AT(im, i) ((const struct cx_limit *)((im)->limits + (uint64_t)(i) * (im)->limit_es))
enum cx_outcome check_limits(const struct image *im, struct launch *L);
const struct cx_region *region_at(const struct image *im, uint64_t addr, uint64_t len);

/* resume.c: post-init images, before anything is mapped. */
enum cx_outcome prepare_resume(struct image *im, struct launch *L, int *resume_fd);

/* pages.c: which writable pages a post-init restore populates (learned from the adapter). */
void load_pages(struct image *im, const struct launch *L, struct cx_pages_file *buf);
void pages_field(const struct image *im, const struct launch *L, char *out, size_t size);
void claim_pages(struct image *im, const struct launch *L);
void populate_learned(const struct image *im);

/* files.c: step 2, every dependency is still the file it was. */
int fd_of(const struct file_fds *fds, uint32_t file);
enum cx_outcome check_files(const struct image *im, struct file_fds *fds, int *exe_fd);
void close_files(struct file_fds *fds, int keep, int extra);

/* map.c: steps 3-4, the vdso moved and every region mapped. */
int map_prot(const struct cx_region *r);
enum cx_outcome move_vdso(const struct image *im, const uint64_t *auxv);
enum cx_outcome map_regions(const struct image *im, const struct file_fds *fds);
enum cx_outcome map_stack(const struct image *im);
enum cx_outcome check_stack_room(const struct image *im, struct launch *L);

/* patch.c: steps 5-7, slots, protections, auxv. */
enum cx_outcome check_slots(const struct image *im, struct launch *L);
enum cx_outcome patch_slots(const struct image *im, struct launch *L);
enum cx_outcome protect_regions(const struct image *im);
void patch_auxv(const struct image *im, const struct launch *L, uint64_t *auxv);

/* jump.c: steps 8-9, kernel state and the trampoline; returns only on failure. */
enum cx_outcome set_kernel_state(const struct image *im);
int exe_settable(struct launch *L);
struct tramp_block {
	uint64_t base, params_len, strings_len;
};
enum cx_outcome tramp_alloc(const struct image *im, struct launch *L, struct tramp_block *t);
enum cx_outcome jump(const struct image *im, struct launch *L, int exe_fd, const struct tramp_block *t);

/* arch/<arch>/: what differs between machines. */
enum cx_outcome cx_arch_check_resume_cpu(const struct image *im);
enum cx_outcome cx_arch_check_resume_insn(const struct image *im);
/* Post-init: the registers say read(resume_fd) from a syscall instruction the image maps, on a stack it maps. */
enum cx_outcome cx_arch_check_resume_regs(const struct image *im);
/* Post-init: the stack pointer at the checkpoint, and the bytes the trampoline's block needs for the CPU state. */
uint64_t cx_arch_resume_sp(const struct image *im);
uint64_t cx_arch_resume_room(const struct image *im);
long cx_arch_set_thread_pointer(uint64_t tp);

#endif
