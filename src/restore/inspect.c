/*
 * --internal-inspect IMAGE: the C reader's view, one "name=value" per line,
 * compared field by field against the TypeScript reader in the tests.
 */
#include "restore.h"

struct out {
	char buf[8192];
	struct cx_buf b;
};

static void out_flush(struct out *o)
{
	cx_write_all(1, o->buf, o->b.len);
	o->b.len = 0;
}

static void out_kv(struct out *o, const char *prefix, int idx, const char *name, uint64_t v, const char *s)
{
	if (o->b.len > sizeof o->buf - 512)
		out_flush(o);
	cx_buf_str(&o->b, prefix);
	if (idx >= 0) {
		cx_buf_str(&o->b, "[");
		cx_buf_u64(&o->b, (uint64_t)idx, 10);
		cx_buf_str(&o->b, "]");
	}
	cx_buf_str(&o->b, ".");
	cx_buf_str(&o->b, name);
	cx_buf_str(&o->b, "=");
	if (s)
		cx_buf_str(&o->b, s);
	else
		cx_buf_u64(&o->b, v, 10);
	cx_buf_str(&o->b, "\n");
}

static void inspect_resume(struct out *o, const struct image *im)
{
	const struct cx_resume *r = im->resume;
	static const char *const names[] = { "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10",
					     "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax",
					     "rip", "eflags", "rsp", "gs_base", "xfeatures", "sigmask",
					     "ignored_at_start", "stack_reserve" };
	_Static_assert(offsetof(struct cx_resume, stack_reserve) == 23 * 8, "cx_resume: 24 u64 fields first");
	const uint64_t *words = (const uint64_t *)r;
	for (int i = 0; i < 24; i++)
		out_kv(o, "resume", -1, names[i], words[i], 0);
	out_kv(o, "resume", -1, "xstate_size", r->xstate_size, 0);
	out_kv(o, "resume", -1, "resume_fd", r->resume_fd, 0);
	out_kv(o, "resume", -1, "umask", r->umask, 0);
	out_kv(o, "resume", -1, "flags", r->flags, 0);
	out_kv(o, "resume", -1, "sigactions", im->nsigs, 0);
	out_kv(o, "xstate", -1, "length", im->xstate_len, 0);
	out_kv(o, "xstate", -1, "hash", cx_hash64(im->xstate, im->xstate_len, CX_FNV_OFFSET), 0);
	for (uint32_t i = 0; i < im->nsigs; i++) {
		const struct cx_sigaction *a = SIG_AT(im, i);
		out_kv(o, "sigaction", (int)i, "signo", a->signo, 0);
		out_kv(o, "sigaction", (int)i, "handler", a->handler, 0);
		out_kv(o, "sigaction", (int)i, "flags", a->flags, 0);
		out_kv(o, "sigaction", (int)i, "restorer", a->restorer, 0);
		out_kv(o, "sigaction", (int)i, "mask", a->mask, 0);
	}
}

int cx_inspect(const char *file, uint32_t cpu_id)
{
	uint64_t buf[META_BUF / 8];
	struct image im;
	struct out o;
	__builtin_memset(&im, 0, sizeof im);
	o.b = (struct cx_buf){ o.buf, 0, sizeof o.buf, 0 };
	enum cx_outcome r = read_meta(&im, AT_FDCWD, file, buf);
	if (r == CX_HIT)
		r = check_header(&im, CX_PAGE, cpu_id); /* CX_PAGE: cx_main read it from this process's auxv */
	if (r == CX_HIT)
		r = find_sections(&im);
	out_kv(&o, "check", -1, "outcome", (uint64_t)r, 0);
	if (r != CX_HIT) {
		out_flush(&o);
		return 1;
	}
	const struct cx_header *h = im.h;
	out_kv(&o, "header", -1, "format_version", h->format_version, 0);
	out_kv(&o, "header", -1, "abi_hash", h->abi_hash, 0);
	out_kv(&o, "header", -1, "section_count", h->section_count, 0);
	out_kv(&o, "header", -1, "meta_size", h->meta_size, 0);
	out_kv(&o, "header", -1, "data_offset", h->data_offset, 0);
	out_kv(&o, "header", -1, "file_size", h->file_size, 0);
	out_kv(&o, "header", -1, "checksum", h->checksum, 0);
	out_kv(&o, "header", -1, "created_ns", h->created_ns, 0);
	const struct cx_key *k = im.key;
	out_kv(&o, "key", -1, "euid", k->euid, 0);
	out_kv(&o, "key", -1, "exe_path", 0, image_str(&im, k->exe_path));
	out_kv(&o, "key", -1, "exe_dev", k->exe_dev, 0);
	out_kv(&o, "key", -1, "exe_ino", k->exe_ino, 0);
	out_kv(&o, "key", -1, "exe_size", k->exe_size, 0);
	out_kv(&o, "key", -1, "exe_mtime_sec", (uint64_t)k->exe_mtime_sec, 0);
	out_kv(&o, "key", -1, "exe_mtime_nsec", k->exe_mtime_nsec, 0);
	out_kv(&o, "key", -1, "exe_ctime_sec", (uint64_t)k->exe_ctime_sec, 0);
	out_kv(&o, "key", -1, "exe_ctime_nsec", k->exe_ctime_nsec, 0);
	out_kv(&o, "key", -1, "path_env", 0, image_str(&im, k->path_env));
	out_kv(&o, "key", -1, "kernel_release", 0, image_str(&im, k->kernel_release));
	out_kv(&o, "key", -1, "env_hash", k->env_hash, 0);
	out_kv(&o, "key", -1, "init_spec", 0, image_str(&im, k->init_spec));
	for (uint32_t i = 0; i < im.nfiles; i++) {
		const struct cx_file *f = FILE_AT(&im, i);
		out_kv(&o, "file", (int)i, "path", 0, image_str(&im, f->path));
		out_kv(&o, "file", (int)i, "kind", f->kind, 0);
		out_kv(&o, "file", (int)i, "dev", f->dev, 0);
		out_kv(&o, "file", (int)i, "ino", f->ino, 0);
		out_kv(&o, "file", (int)i, "size", f->size, 0);
		out_kv(&o, "file", (int)i, "mtime_sec", (uint64_t)f->mtime_sec, 0);
		out_kv(&o, "file", (int)i, "mtime_nsec", f->mtime_nsec, 0);
		out_kv(&o, "file", (int)i, "ctime_sec", (uint64_t)f->ctime_sec, 0);
		out_kv(&o, "file", (int)i, "ctime_nsec", f->ctime_nsec, 0);
		out_kv(&o, "file", (int)i, "mode", f->mode, 0);
		out_kv(&o, "file", (int)i, "flags", f->flags, 0);
	}
	for (uint32_t i = 0; i < im.nregions; i++) {
		const struct cx_region *g = REGION_AT(&im, i);
		out_kv(&o, "region", (int)i, "addr", g->addr, 0);
		out_kv(&o, "region", (int)i, "len", g->len, 0);
		out_kv(&o, "region", (int)i, "offset", g->offset, 0);
		out_kv(&o, "region", (int)i, "prot", g->prot, 0);
		out_kv(&o, "region", (int)i, "source", g->source, 0);
		out_kv(&o, "region", (int)i, "file", g->file, 0);
		out_kv(&o, "region", (int)i, "flags", g->flags, 0);
	}
	for (uint32_t i = 0; i < im.nslots; i++) {
		const struct cx_slot *s = SLOT_AT(&im, i);
		out_kv(&o, "slot", (int)i, "addr", s->addr, 0);
		out_kv(&o, "slot", (int)i, "arg", s->arg, 0);
		out_kv(&o, "slot", (int)i, "kind", s->kind, 0);
		out_kv(&o, "slot", (int)i, "width", s->width, 0);
	}
	const struct cx_state *s = im.state;
	out_kv(&o, "state", -1, "entry", s->entry, 0);
	out_kv(&o, "state", -1, "rtld_fini", s->rtld_fini, 0);
	out_kv(&o, "state", -1, "fs_base", s->fs_base, 0);
	out_kv(&o, "state", -1, "tid_address", s->tid_address, 0);
	out_kv(&o, "state", -1, "robust_head", s->robust_head, 0);
	out_kv(&o, "state", -1, "robust_len", s->robust_len, 0);
	out_kv(&o, "state", -1, "rseq_area", s->rseq_area, 0);
	out_kv(&o, "state", -1, "rseq_len", s->rseq_len, 0);
	out_kv(&o, "state", -1, "rseq_sig", s->rseq_sig, 0);
	out_kv(&o, "state", -1, "start_code", s->start_code, 0);
	out_kv(&o, "state", -1, "end_code", s->end_code, 0);
	out_kv(&o, "state", -1, "start_data", s->start_data, 0);
	out_kv(&o, "state", -1, "end_data", s->end_data, 0);
	out_kv(&o, "state", -1, "start_brk", s->start_brk, 0);
	out_kv(&o, "state", -1, "brk", s->brk, 0);
	out_kv(&o, "state", -1, "vdso_base", s->vdso_base, 0);
	out_kv(&o, "state", -1, "at_phdr", s->at_phdr, 0);
	out_kv(&o, "state", -1, "at_phnum", s->at_phnum, 0);
	out_kv(&o, "state", -1, "at_entry", s->at_entry, 0);
	out_kv(&o, "state", -1, "at_base", s->at_base, 0);
	out_kv(&o, "state", -1, "flags", s->flags, 0);
	out_kv(&o, "state", -1, "comm", 0, image_str(&im, s->comm));
	for (uint32_t i = 0; i < im.nvdso; i++) {
		const struct cx_vdso_part *v = VDSO_AT(&im, i);
		out_kv(&o, "vdso", (int)i, "offset", (uint64_t)v->offset, 0);
		out_kv(&o, "vdso", (int)i, "size", v->size, 0);
		out_kv(&o, "vdso", (int)i, "kind", v->kind, 0);
	}
	for (uint32_t i = 0; i < im.nlimits; i++) {
		const struct cx_limit *l = LIMIT_AT(&im, i);
		out_kv(&o, "limit", (int)i, "resource", l->resource, 0);
		out_kv(&o, "limit", (int)i, "soft", l->soft, 0);
		out_kv(&o, "limit", (int)i, "hard", l->hard, 0);
	}
	if (im.resume)
		inspect_resume(&o, &im);
	out_flush(&o);
	return 0;
}
