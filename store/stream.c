/*
 * Streams of a tenant: the in-memory registry (an id-sorted array for
 * lookups by id and readdir cookies, a hash by name).  The namespace
 * operations that change it are in names.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

/* ---- registry ---- */

static size_t name_bucket(const struct store_tenant *t, const char *name)
{
	return XXH3_64bits(name, strlen(name)) & t->namemask;
}

size_t store_stream_lower_bound(const struct store_tenant *t, uint64_t id)
{
	size_t lo = 0, hi = t->nstreams;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->streams[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct stream *store_stream_find(struct store_tenant *t, uint64_t id)
{
	size_t i = store_stream_lower_bound(t, id);

	return i < t->nstreams && t->streams[i]->id == id ? t->streams[i] : NULL;
}

struct stream *store_stream_by_name(struct store_tenant *t, const char *name)
{
	struct stream *s;

	if (!t->names)
		return NULL;
	for (s = t->names[name_bucket(t, name)]; s; s = s->name_next)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static void name_link(struct store_tenant *t, struct stream *s)
{
	size_t b = name_bucket(t, s->name);

	s->name_next = t->names[b];
	t->names[b] = s;
}

static void name_unlink(struct store_tenant *t, struct stream *s)
{
	struct stream **pp = &t->names[name_bucket(t, s->name)];

	while (*pp && *pp != s)
		pp = &(*pp)->name_next;
	if (*pp)
		*pp = s->name_next;
}

void store_stream_set_name(struct store_tenant *t, struct stream *s, char *name)
{
	name_unlink(t, s);
	s->name = name;
	name_link(t, s);
}

static int names_grow(struct store_tenant *t)
{
	size_t nbuckets = t->names ? (t->namemask + 1) * 2 : 256;
	struct stream **old = t->names;

	t->names = calloc(nbuckets, sizeof(*t->names));
	if (!t->names) {
		t->names = old;
		return -ENOMEM;
	}
	t->namemask = nbuckets - 1;
	for (size_t i = 0; i < t->nstreams; i++)
		name_link(t, t->streams[i]);
	free(old);
	return 0;
}

int store_stream_attach(struct store_tenant *t, struct stream *s)
{
	size_t i;

	if (STORE_ARRAY_RESERVE(t->streams, t->streamcap, t->nstreams + 1, 64))
		return -ENOMEM;
	if (!t->names || t->nstreams + 1 > t->namemask + 1) {
		int rc = names_grow(t);

		if (rc)
			return rc;
	}
	i = store_stream_lower_bound(t, s->id);
	memmove(&t->streams[i + 1], &t->streams[i],
		(t->nstreams - i) * sizeof(*t->streams));
	t->streams[i] = s;
	t->nstreams++;
	name_link(t, s);
	return 0;
}

void store_stream_detach(struct store_tenant *t, struct stream *s)
{
	size_t i = store_stream_lower_bound(t, s->id);

	if (i < t->nstreams && t->streams[i] == s) {
		memmove(&t->streams[i], &t->streams[i + 1],
			(t->nstreams - i - 1) * sizeof(*t->streams));
		t->nstreams--;
	}
	name_unlink(t, s);
}

void store_stream_restore(struct stream *s, const struct stream *old)
{
	s->version = old->version;
	s->size = old->size;
	s->last_ns = old->last_ns;
	s->mtime = old->mtime;
	s->ctime = old->ctime;
}

void store_stream_ids_release(struct stream *s)
{
	store_idset_release(&s->active_ids);
	store_bloom_release(&s->sealed_filter);
	for (size_t i = 0; i < s->nsegs; i++)
		store_idtable_release(&s->segs[i]->ids);
	s->ids_loaded = false;
}

void store_stream_free(struct store_tenant *t, struct stream *s)
{
	if (!s)
		return;
	store_stream_ids_release(s);
	for (size_t i = 0; i < s->nsegs; i++)
		store_seg_free(t, s->segs[i]);
	free(s->segs);
	free(s->name);
	free(s);
}

