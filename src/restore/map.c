/*
 * Steps 3 and 4: move this process's vdso/vvar block to where the image
 * expects it, then map every region at its address, refusing to replace
 * anything (MAP_FIXED_NOREPLACE): a collision is a cold run, never a clobber.
 */
#include "restore.h"

enum cx_outcome move_vdso(const struct image *im, const uint64_t *auxv)
{
	uint64_t cur = cx_auxv_get(auxv, AT_SYSINFO_EHDR), old = im->state->vdso_base;
	if (!cur || !old || !im->nvdso)
		return CX_FAIL_VDSO;
	if (cur == old)
		return CX_HIT;
	int64_t lo = 0, hi = 0;
	for (uint32_t i = 0; i < im->nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(im, i);
		if (i == 0 || v->offset < lo)
			lo = v->offset;
		if (i == 0 || v->offset + (int64_t)v->size > hi)
			hi = v->offset + (int64_t)v->size;
	}
	/*
	 * MREMAP_FIXED silently unmaps whatever lies at the target. Reserve the whole
	 * target first with MAP_FIXED_NOREPLACE so a collision fails instead.
	 */
	uint64_t target = old + (uint64_t)lo, len = (uint64_t)(hi - lo);
	long r = sys_mmap(target, len, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (mmap_failed(r) || (uint64_t)r != target) {
		if (!mmap_failed(r))
			sys_munmap((uint64_t)r, len);
		return CX_FAIL_COLLISION;
	}
	for (uint32_t i = 0; i < im->nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(im, i);
		uint64_t to = old + (uint64_t)v->offset;
		r = sys_mremap(cur + (uint64_t)v->offset, v->size, v->size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if ((uint64_t)r != to)
			return CX_FAIL_VDSO;
	}
	return CX_HIT;
}

/* ------------------------------------------------------------------------ */
/* Step 4: map every region at its address, refusing to replace anything.   */

/* Protection a region is mapped with: writable while its slots are patched. */
int map_prot(const struct cx_region *r)
{
	int prot = (int)(r->prot & 7);
	return (r->flags & CX_REGION_PATCHED) ? prot | PROT_WRITE : prot;
}

/* Where a region's bytes come from: fd and offset (-1 for anonymous zero memory). */
static enum cx_outcome region_source(const struct image *im, const struct file_fds *fds, const struct cx_region *r,
				     int *fd, uint64_t *off)
{
	if ((r->addr | r->len) % CX_PAGE || !r->len)
		return CX_FAIL_HEADER;
	switch (r->source) {
	case CX_SRC_FILE:
		if (r->file >= im->nfiles || (*fd = fd_of(fds, r->file)) < 0)
			return CX_FAIL_HEADER;
		*off = r->offset;
		return CX_HIT;
	case CX_SRC_DATA:
		if (r->offset < im->h->data_offset || r->offset > im->h->file_size ||
		    r->len > im->h->file_size - r->offset)
			return CX_FAIL_TRUNCATED;
		*fd = im->fd, *off = r->offset;
		return CX_HIT;
	case CX_SRC_ZERO:
		*fd = -1, *off = 0;
		return CX_HIT;
	default:
		return CX_FAIL_HEADER;
	}
}

/*
 * Post-init: copy the image's writable pages into private memory now, in one
 * call per region (MADV_POPULATE_WRITE, Linux 5.14). The program writes most
 * of them anyway: CPython's exit decrements the refcount of every object the
 * init created, ~4000 copy-on-write faults after numpy, and a fault costs far
 * more than the kernel's loop over the same pages (measured: the restored run
 * 168 -> 58 ms median under load, and no slower when the program exits at
 * once). Advice only: an older kernel (EINVAL) or a memory limit leaves the
 * pages to fault in as before, with the same contents. Called after the
 * group's mprotects: the kernel refuses to populate a read-only mapping for
 * writing. Post-link images stay shared with the page cache (they are small
 * and many run at once: memory matters more than their few faults).
 */
static void prefault_writable(const struct image *im, uint32_t from, uint32_t to)
{
	if (!im->resume || im->pop != CX_POP_ALL)
		return;
	for (uint32_t k = from; k < to; k++) {
		const struct cx_region *r = REGION_AT(im, k);
		if (r->source == CX_SRC_DATA && (map_prot(r) & PROT_WRITE))
			sys_madvise(r->addr, r->len, MADV_POPULATE_WRITE);
	}
}

/*
 * Regions that continue one another in memory and in their source (a
 * library's r--, r-x and r-- segments; relro and data in the image) are mapped
 * by one mmap with the first one's protection, and the others get theirs by
 * mprotect: a library costs two calls instead of three, and never holds a page
 * writable and executable at once. The syscall count is the restore cost of
 * programs with many libraries.
 */
enum cx_outcome map_regions(const struct image *im, const struct file_fds *fds)
{
	uint32_t i = 0;
	while (i < im->nregions) {
		const struct cx_region *first = REGION_AT(im, i);
		int fd, nfd;
		uint64_t off, noff, len = first->len;
		enum cx_outcome o = region_source(im, fds, first, &fd, &off);
		if (o != CX_HIT)
			return o;
		uint32_t j = i + 1;
		if (first->flags & CX_REGION_STACK) {
			i++; /* map_stack's */
			continue;
		}
		for (; j < im->nregions; j++) {
			const struct cx_region *n = REGION_AT(im, j);
			if (n->flags & CX_REGION_STACK)
				break;
			if ((o = region_source(im, fds, n, &nfd, &noff)) != CX_HIT)
				return o;
			if (n->addr != first->addr + len || n->source != first->source || nfd != fd ||
			    (fd >= 0 && noff != off + len))
				break;
			len += n->len;
		}
		int flags = MAP_PRIVATE | MAP_FIXED_NOREPLACE | (fd < 0 ? MAP_ANONYMOUS : 0);
		long m = sys_mmap(first->addr, len, map_prot(first), flags, fd, off);
		if (m == -EEXIST)
			return CX_FAIL_COLLISION;
		if (mmap_failed(m))
			return CX_FAIL_MAP;
		if ((uint64_t)m != first->addr) {
			/* Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and place it elsewhere. */
			sys_munmap((uint64_t)m, len);
			return CX_FAIL_COLLISION;
		}
		for (uint32_t k = i + 1; k < j; k++) {
			const struct cx_region *r = REGION_AT(im, k);
			if (map_prot(r) != map_prot(first) && sys_mprotect(r->addr, r->len, map_prot(r)) < 0)
				return CX_FAIL_MAP;
		}
		prefault_writable(im, i, j);
		i = j;
	}
	populate_learned(im);
	return CX_HIT;
}

/* [lo, hi) of the STACK regions (post-init), which must be contiguous; 0 when none. */
static enum cx_outcome stack_span(const struct image *im, uint64_t *lo, uint64_t *hi)
{
	*lo = *hi = 0;
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		if (!(r->flags & CX_REGION_STACK))
			continue;
		if (*hi && r->addr != *hi)
			return CX_FAIL_HEADER;
		if (!*hi)
			*lo = r->addr;
		*hi = r->addr + r->len;
	}
	return CX_HIT;
}

/*
 * Post-init: the image's stack becomes one MAP_GROWSDOWN mapping holding the
 * captured bytes, so it grows exactly as a cold program's stack would: the
 * kernel applies the caller's RLIMIT_STACK to it, and stops it at the guard
 * gap of the mapping below.
 */
enum cx_outcome map_stack(const struct image *im)
{
	uint64_t lo, hi;
	enum cx_outcome o = stack_span(im, &lo, &hi);
	if (o != CX_HIT || !hi)
		return o == CX_HIT ? CX_FAIL_HEADER : o;
	long m = sys_mmap(lo, hi - lo, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE, -1, 0);
	if (m == -EEXIST)
		return CX_FAIL_COLLISION;
	if (mmap_failed(m))
		return CX_FAIL_MAP;
	if ((uint64_t)m != lo) {
		sys_munmap((uint64_t)m, hi - lo);
		return CX_FAIL_COLLISION;
	}
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		int fd;
		uint64_t off;
		if (!(r->flags & CX_REGION_STACK) || r->source == CX_SRC_ZERO)
			continue;
		if (r->source != CX_SRC_DATA || region_source(im, 0, r, &fd, &off) != CX_HIT)
			return CX_FAIL_HEADER;
		if (sys_pread(fd, (void *)r->addr, r->len, (long)off) != (long)r->len)
			return CX_FAIL_MAP;
	}
	return CX_HIT;
}

/* Whether [lo, hi) and [a, a + len) overlap. */
static int overlaps(uint64_t lo, uint64_t hi, uint64_t a, uint64_t len) { return a < hi && a + len > lo; }

/*
 * Room for the stack to grow, checked before anything is mapped. A cold
 * program's stack can grow to RLIMIT_STACK, and the kernel keeps its mmap
 * area at least 128 MiB (mm/util.c's MIN_GAP) below the stack; an image's
 * regions sit where the snapshot's layout put them, so they might land in
 * that room. Post-link: nothing of the image within max(RLIMIT_STACK,
 * 128 MiB) below this process's stack (4 GiB when unlimited). Post-init: the
 * image brings its own stack; the vdso this process moves must not sit where
 * that stack grows (its kernel stack is unmapped before the program runs).
 */
enum cx_outcome check_stack_room(const struct image *im, struct launch *L)
{
	struct rlimit_k lim = { cx_stack_limit(L), 0 };
	uint64_t top = L->kstack_top;
	if (!top || !lim.cur)
		return CX_FAIL_MAP;
	uint64_t vdso_at = im->state->vdso_base, vlo = 0, vhi = 0;
	for (uint32_t i = 0; i < im->nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(im, i);
		if (i == 0 || vdso_at + (uint64_t)v->offset < vlo)
			vlo = vdso_at + (uint64_t)v->offset;
		if (i == 0 || vdso_at + (uint64_t)v->offset + v->size > vhi)
			vhi = vdso_at + (uint64_t)v->offset + v->size;
	}
	if (!im->resume) {
		uint64_t room = lim.cur == RLIM_INFINITY ? 4ull << 30 : lim.cur;
		if (room < 128ull << 20)
			room = 128ull << 20;
		uint64_t lo = top > room ? top - room : 0;
		for (uint32_t i = 0; i < im->nregions; i++) {
			const struct cx_region *r = REGION_AT(im, i);
			if (overlaps(lo, top, r->addr, r->len))
				return CX_FAIL_COLLISION;
		}
		return overlaps(lo, top, vlo, vhi - vlo) ? CX_FAIL_COLLISION : CX_HIT;
	}
	uint64_t slo, shi, below = 0;
	enum cx_outcome o = stack_span(im, &slo, &shi);
	if (o != CX_HIT || !shi)
		return o == CX_HIT ? CX_FAIL_HEADER : o;
	for (uint32_t i = 0; i < im->nregions; i++) {
		const struct cx_region *r = REGION_AT(im, i);
		if (r->addr + r->len <= slo && r->addr + r->len > below)
			below = r->addr + r->len;
	}
	/* Growth room: RLIMIT_STACK and the kernel's guard gap, or all there is down to the image's next region. */
	uint64_t room = slo - below;
	if (lim.cur != RLIM_INFINITY && lim.cur + (1ull << 20) < room)
		room = lim.cur + (1ull << 20);
	/* This process's kernel stack may lie there: the trampoline unmaps it (jump.c kernel_stack_span). */
	return overlaps(slo - room, shi, vlo, vhi - vlo) ? CX_FAIL_COLLISION : CX_HIT;
}
