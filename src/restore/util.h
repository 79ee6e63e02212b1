/*
 * Tiny freestanding helpers shared by the launcher and the restorer.
 * No libc exists in this process: these are the only string and output routines.
 */
#ifndef CACHED_EXEC_UTIL_H
#define CACHED_EXEC_UTIL_H

#include "sys.h"

#define CX_PATH_MAX 4096
/*
 * The page size, from AT_PAGESZ (cx_main sets it before anything else runs):
 * 4 KiB on x86_64, 4, 16 or 64 KiB on aarch64 kernels. Every alignment and
 * unmap length in the launcher uses it; a constant would be wrong on a 16K
 * kernel. 4096 until set, which is only the case for --inspect's tools.
 */
extern uint64_t cx_page_size;
#define CX_PAGE cx_page_size

static inline size_t cx_strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

static inline int cx_streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static inline int cx_startswith(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static inline const char *cx_basename(const char *p)
{
	const char *b = p;
	for (; *p; p++)
		if (*p == '/')
			b = p + 1;
	return b;
}

/* Value of NAME in envp, or 0. */
static inline const char *cx_getenv(char **envp, const char *name)
{
	size_t n = cx_strlen(name);
	for (; *envp; envp++) {
		const char *e = *envp;
		size_t i = 0;
		while (i < n && e[i] == name[i])
			i++;
		if (i == n && e[i] == '=')
			return e + n + 1;
	}
	return 0;
}

static inline uint64_t cx_auxv_get(const uint64_t *auxv, uint64_t type)
{
	for (; auxv[0] != AT_NULL; auxv += 2)
		if (auxv[0] == type)
			return auxv[1];
	return 0;
}

/* Bounded string builder: appends, always NUL-terminates, records overflow. */
struct cx_buf {
	char *p;
	size_t len, cap;
	int overflow;
};

static inline void cx_buf_put(struct cx_buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (b->len + 1 >= b->cap) {
			b->overflow = 1;
			break;
		}
		b->p[b->len++] = s[i];
	}
	if (b->cap)
		b->p[b->len] = 0;
}

static inline void cx_buf_str(struct cx_buf *b, const char *s) { cx_buf_put(b, s, cx_strlen(s)); }

/* A PATH element [dir, end) joined with name, as execvp does: an empty element is the cwd ("."). */
static inline void cx_buf_path_entry(struct cx_buf *b, const char *dir, const char *end, const char *name)
{
	if (end == dir)
		cx_buf_str(b, ".");
	else
		cx_buf_put(b, dir, (size_t)(end - dir));
	cx_buf_str(b, "/");
	cx_buf_str(b, name);
}

static inline void cx_buf_u64(struct cx_buf *b, uint64_t v, int base)
{
	char tmp[24];
	int i = 24;
	do {
		unsigned d = (unsigned)(v % (uint64_t)base);
		tmp[--i] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= (uint64_t)base;
	} while (v);
	cx_buf_put(b, tmp + i, (size_t)(24 - i));
}

static inline void cx_buf_hex16(struct cx_buf *b, uint64_t v)
{
	char tmp[16];
	for (int i = 15; i >= 0; i--, v >>= 4)
		tmp[i] = "0123456789abcdef"[v & 15];
	cx_buf_put(b, tmp, 16);
}

static inline void cx_write_all(int fd, const char *s, size_t n)
{
	while (n) {
		long w = sys_write(fd, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* "cached-exec: A: B\n" on stderr, written at once so lines do not interleave. */
static inline void cx_error(const char *a, const char *b)
{
	char line[512];
	struct cx_buf o = { line, 0, sizeof line, 0 };
	cx_buf_str(&o, "cached-exec: ");
	cx_buf_str(&o, a);
	if (b) {
		cx_buf_str(&o, ": ");
		cx_buf_str(&o, b);
	}
	cx_buf_str(&o, "\n");
	cx_write_all(2, line, o.len);
}

/* cx_hash64: FNV-1a over little-endian 64-bit words, then tail bytes (schema.ts: hash64). */
#define CX_FNV_OFFSET 0xcbf29ce484222325ull
#define CX_FNV_PRIME 0x100000001b3ull
static inline uint64_t cx_hash64(const void *data, size_t n, uint64_t h)
{
	const unsigned char *p = data;
	size_t words = n / 8;
	for (size_t i = 0; i < words; i++) {
		uint64_t w;
		__builtin_memcpy(&w, p + i * 8, 8);
		h = (h ^ w) * CX_FNV_PRIME;
	}
	for (size_t i = words * 8; i < n; i++)
		h = (h ^ p[i]) * CX_FNV_PRIME;
	return h;
}

#endif
