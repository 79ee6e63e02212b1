/*
 * The restorer: maps an image into this process and jumps to the program's
 * entry point as if the kernel had just exec'd it and ld.so had just finished;
 * or, for a post-init image, back into the read(resume_fd, ...) the program
 * was stopped at, with the caller's context waiting on that fd.
 *
 * One step per function, in the order ARCHITECTURE.md explains. Each step
 * returns CX_HIT to continue or the reason to give up; giving up at any point is
 * safe because the caller then execs the program cold, which throws away
 * everything mapped here. The only step that cannot be undone by exec is the
 * last one (the trampoline unmaps the launcher), and it carries its own cold
 * exec for that reason.
 */
#include "restore.h"

enum cx_outcome cx_restore(struct launch *L)
{
	uint64_t buf[META_BUF / 8];
	struct cx_pages_file pages;
	struct file_fds fds;
	int exe_fd = -1, files_open = 0, resume_fd = -1;
	struct image im;
	struct tramp_block tramp;
	enum cx_outcome o;
	__builtin_memset(&im, 0, sizeof im);
	im.fd = -1;
	fds.n = 0;

	if ((o = read_meta(&im, L->layer_fd, L->image_rel, buf)) != CX_HIT)
		goto out;
	if ((o = check_owner(&im, L->key_euid)) != CX_HIT)
		goto out;
	if ((o = check_header(&im, cx_auxv_get(L->auxv, AT_PAGESZ), cx_launch_cpu_id(L))) != CX_HIT)
		goto out;
	if ((o = find_sections(&im)) != CX_HIT)
		goto out;
	if ((o = check_key(&im, L)) != CX_HIT)
		goto out;
	/*
	 * An image that depends on who took it (identity queries, files others
	 * cannot read) serves that user only: a system-layer image taken by root
	 * is not another user's.
	 */
	if ((im.state->flags & CX_STATE_IDENTITY_BOUND) && im.key->euid != L->euid) {
		o = CX_FAIL_IDENTITY;
		goto out;
	}
	if ((o = check_env(&im, L)) != CX_HIT)
		goto out;
	if ((o = check_limits(&im, L)) != CX_HIT)
		goto out;
	check_age(&im, L);
	/* A program that reads /proc/self/exe would find the launcher there: only where it can be set. */
	if ((im.state->flags & CX_STATE_READS_EXE) && !exe_settable(L)) {
		o = CX_FAIL_EXE;
		goto out;
	}
	if ((o = check_slots(&im, L)) != CX_HIT)
		goto out;
	/* Before the context, which may ask the adapter to record the pages this run writes. */
	load_pages(&im, L, &pages);
	if (im.resume && (o = prepare_resume(&im, L, &resume_fd)) != CX_HIT)
		goto out;
	files_open = 1;
	if ((o = check_files(&im, &fds, &exe_fd)) != CX_HIT)
		goto out;
	if ((o = check_stack_room(&im, L)) != CX_HIT)
		goto out;
	claim_pages(&im, L);
	/* Past this point the address space changes: only a cold exec can follow a failure. */
	if ((o = move_vdso(&im, L->auxv)) != CX_HIT)
		goto out;
	if ((o = map_regions(&im, &fds)) != CX_HIT)
		goto out;
	if (im.resume && (o = map_stack(&im)) != CX_HIT)
		goto out;
	if ((o = tramp_alloc(&im, L, &tramp)) != CX_HIT)
		goto out;
	close_files(&fds, exe_fd, im.fd);
	im.fd = -1;
	if (im.resume && (o = cx_arch_check_resume_insn(&im)) != CX_HIT)
		goto out;
	if ((o = patch_slots(&im, L)) != CX_HIT)
		goto out;
	if ((o = protect_regions(&im)) != CX_HIT)
		goto out;
	patch_auxv(&im, L, L->auxv);
	if ((o = set_kernel_state(&im)) != CX_HIT)
		goto out;
	o = jump(&im, L, exe_fd, &tramp);
out:
	/* Nothing may leak into the cold-exec'd program: close every fd opened here. */
	if (files_open) {
		close_files(&fds, -1, im.fd);
	} else if (im.fd >= 0) {
		sys_close(im.fd);
	}
	if (resume_fd >= 0)
		sys_close(resume_fd);
	return o;
}
