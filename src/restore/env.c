/*
 * Part of the key step: the environment the image depends on, compared with
 * this run's (src/cache/envdeps.ts is the reference, byte for byte).
 *
 * The lookup key holds no environment: a variable nobody read must never
 * cost a restore. The image lists what its constructors or its init looked
 * up (ENV_DEPS: a name and what the snapshot saw), or binds the whole
 * environment (key.env_hash) when something read it without a lookup. When
 * this run differs, the same values give the selector of the variant image
 * for this environment, which the key step then tries.
 */
#include "restore.h"

#define ENV_DEP_AT(im, i) ((const struct cx_env_dep *)((im)->envdeps + (uint64_t)(i) * (im)->envdep_es))

/* The first NAME=value in envp (as getenv finds it): 0 when not set, 1 for any value with any_value, else cx_hash64 of the value (never 0). */
static uint64_t value_of(char **envp, const char *name, int any_value)
{
	for (char **e = envp; *e; e++) {
		const char *p = *e, *n = name;
		while (*n && *p == *n)
			p++, n++;
		if (*n || *p != '=')
			continue;
		if (any_value)
			return 1;
		p++;
		uint64_t h = cx_hash64(p, cx_strlen(p), CX_FNV_OFFSET);
		return h ? h : 1;
	}
	return 0;
}

/* The sum of cx_hash64("NAME=value") over every variable whose name starts with prefix (0: none). */
static uint64_t prefix_sum(char **envp, const char *prefix)
{
	uint64_t sum = 0;
	for (char **e = envp; *e; e++) {
		const char *p = *e, *n = prefix;
		while (*n && *p == *n)
			p++, n++;
		if (*n)
			continue;
		while (*p && *p != '=')
			p++;
		if (*p == '=')
			sum += cx_hash64(*e, cx_strlen(*e), CX_FNV_OFFSET);
	}
	return sum;
}

/* key.ts envHash(): every NAME=value but "_" (the command's own path, set by shells). */
static uint64_t env_sum(char **envp)
{
	uint64_t sum = 0;
	for (char **e = envp; *e; e++)
		if (!((*e)[0] == '_' && (*e)[1] == '='))
			sum += cx_hash64(*e, cx_strlen(*e), CX_FNV_OFFSET);
	return sum ? sum : 1;
}

enum cx_outcome check_env(const struct image *im, struct launch *L)
{
	const struct cx_key *k = im->key;
	/* Whatever fails from here on, a re-take in this run's environment may serve it. */
	L->env_dependent = k->env_hash || im->nenvdeps || im->resume;
	/* envdeps.ts variantSelector(): FNV over the values this run gives, as 8-byte words. */
	uint64_t sel = CX_FNV_OFFSET;
	int differs = 0;
	if (k->env_hash) {
		uint64_t have = im->resume ? resume_env_hash(L->envp) : env_sum(L->envp);
		differs |= have != k->env_hash;
		sel = (sel ^ have) * CX_FNV_PRIME;
	}
	for (uint32_t i = 0; i < im->nenvdeps; i++) {
		const struct cx_env_dep *d = ENV_DEP_AT(im, i);
		const char *name = image_str(im, d->name);
		if (!name || !name[0])
			return CX_FAIL_HEADER;
		uint64_t have = (d->flags & CX_ENVDEP_PREFIX) ? prefix_sum(L->envp, name)
							       : value_of(L->envp, name, d->flags & CX_ENVDEP_ANY_VALUE);
		differs |= have != d->value_hash;
		sel = (sel ^ have) * CX_FNV_PRIME;
	}
	if (!differs)
		return CX_HIT;
	L->variant = sel ? sel : 1;
	return CX_FAIL_ENV;
}
