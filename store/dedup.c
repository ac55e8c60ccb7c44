/*
 * The dedup state of a stream, built on the first append that carries an
 * ID: the ID tables of its sealed segments (rebuilt from their bytes when
 * missing) behind one Bloom filter, and a set of the IDs of the segments
 * not sealed yet.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

/* Calls FN for every line of segment G, with the line's stream offset. */
static int scan_lines(struct store_tenant *t, struct stream *s, struct seg *g,
		      int (*fn)(void *arg, const char *line, size_t len,
				uint64_t off),
		      void *arg)
{
	size_t cap = 1u << 20, have = 0;
	uint64_t pos = 0;	/* segment offset of buf[0] */
	char *buf = malloc(cap);
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	while (pos + have < g->length && !rc) {
		size_t want = cap - have, start = 0;
		ssize_t n;
		char *nl;

		if (want > g->length - pos - have)
			want = (size_t)(g->length - pos - have);
		n = store_seg_read(t, s, buf + have, want, g->offset + pos + have);
		if (n <= 0) {
			rc = n < 0 ? (int)n : -EIO;
			break;
		}
		have += (size_t)n;
		while (!rc && (nl = memchr(buf + start, '\n', have - start))) {
			size_t len = (size_t)(nl - (buf + start));

			rc = fn(arg, buf + start, len, g->offset + pos + start);
			start += len + 1;
		}
		if (!start && have == cap) {
			char *v = realloc(buf, cap * 2);	/* a huge line */

			if (!v) {
				rc = -ENOMEM;
				break;
			}
			buf = v;
			cap *= 2;
		}
		memmove(buf, buf + start, have - start);
		pos += start;
		have -= start;
	}
	free(buf);
	return rc;
}

struct collect {
	struct ids_scratch *sc;
	struct idset *set;
};

static int collect_id(void *arg, const char *line, size_t len, uint64_t off)
{
	struct collect *c = arg;
	const char *id;
	size_t idlen;
	int rc = store_ids_extract(c->sc, line, len, &id, &idlen);

	if (rc <= 0)
		return rc;
	return store_idset_add(c->set, store_ids_hash(id, idlen), off);
}

static int collect_ids(struct store_tenant *t, struct stream *s,
		       struct seg *g, struct idset *set)
{
	struct ids_scratch sc;
	struct collect c = { .sc = &sc, .set = set };
	int rc;

	store_ids_scratch_init(&sc, t->id_field);
	rc = scan_lines(t, s, g, collect_id, &c);
	store_ids_scratch_release(&sc);
	return rc;
}

/* A sealed segment's table, rebuilt from its bytes when the file is
 * missing or damaged (it is derived data). */
static int load_table(struct store_tenant *t, struct stream *s, struct seg *g)
{
	uint64_t *pairs = NULL;
	struct idset set;
	char name[64];
	size_t n;
	int rc;

	if (g->ids.map)
		return 0;
	store_seg_name(name, sizeof(name), g->id, ".ids");
	if (!store_idtable_open(t->segfd, name, t->id_field, &g->ids))
		return 0;
	store_idset_init(&set);
	rc = collect_ids(t, s, g, &set);
	if (!rc)
		rc = store_idset_pairs(&set, 0, UINT64_MAX, &pairs, &n);
	if (!rc)
		rc = store_idtable_write(t->segfd, name, t->id_field, pairs, n);
	free(pairs);
	store_idset_release(&set);
	return rc ? rc : store_idtable_open(t->segfd, name, t->id_field, &g->ids);
}

int store_filter_build(struct stream *s)
{
	uint64_t total = 0;
	struct bloom b;
	int rc;

	for (size_t i = 0; i < s->nsegs; i++)
		total += s->segs[i]->ids.count;
	rc = store_bloom_init(&b, total * 2);
	if (rc)
		return rc;
	for (size_t i = 0; i < s->nsegs; i++) {
		const struct idtable *tab = &s->segs[i]->ids;

		for (uint64_t j = 0; j < tab->count; j++)
			store_bloom_add(&b, tab->pairs[2 * j]);
	}
	store_bloom_release(&s->sealed_filter);
	s->sealed_filter = b;
	return 0;
}

/* Sealed segments' IDs go to the filter from their tables; those of the
 * segments not sealed yet (closing, active) to the active set. */
int store_dedup_load(struct store_tenant *t, struct stream *s)
{
	size_t unsealed = store_seg_first_unsealed(s);
	int rc = 0;

	store_stream_ids_release(s);
	for (size_t i = 0; i < unsealed && !rc; i++)
		if (s->segs[i]->has_ids)
			rc = load_table(t, s, s->segs[i]);
	if (!rc)
		rc = store_filter_build(s);
	for (size_t i = unsealed; i < s->nsegs && !rc; i++)
		if (s->segs[i]->has_ids)
			rc = collect_ids(t, s, s->segs[i], &s->active_ids);
	if (rc) {
		store_stream_ids_release(s);
		return rc;
	}
	s->ids_loaded = true;
	return 0;
}
