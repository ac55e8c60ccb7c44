/*
 * util.c: small helpers of the sync thread's files: string vectors.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_int.h"

/* ---- little-endian integers of the binary objects ---- */

void sync_put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t sync_get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* ---- string vectors ---- */

int sync_strvec_push(struct sync_strvec *sv, const char *str)
{
	if (STORE_ARRAY_RESERVE(sv->v, sv->alloc, sv->n + 1, 16))
		return -ENOMEM;
	if (!(sv->v[sv->n] = strdup(str)))
		return -ENOMEM;
	sv->n++;
	return 0;
}

int sync_strvec_collect(void *arg, const char *name)
{
	return sync_strvec_push(arg, name);
}

void sync_strvec_release(struct sync_strvec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	*sv = (struct sync_strvec){ 0 };
}
