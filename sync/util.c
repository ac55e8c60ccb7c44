/*
 * util.c: small helpers of the sync thread's files: string vectors.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync_int.h"

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
