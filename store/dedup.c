/*
 * The dedup state of a stream, built on the first append that carries an
 * ID: the ID tables of its sealed segments (rebuilt from their bytes when
 * missing) behind one Bloom filter, and a set of the IDs of the segments
 * not sealed yet.  Also the IDs of a sealed segment for the remote's
 * event-ID table object (store_segment_ids()), and tables made from such
 * objects, which hold the IDs themselves (store_segment_ids_install()).
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

/* Where scan_lines() reads a segment's bytes: N at stream offset OFF into
 * BUF; the count read, 0 at the end, or -errno. */
typedef ssize_t (*seg_reader)(void *ctx, char *buf, size_t n, uint64_t off);

struct seg_in_store {
	struct store_tenant *t;
	struct stream *s;
};

static ssize_t read_store(void *ctx, char *buf, size_t n, uint64_t off)
{
	struct seg_in_store *in = ctx;

	return store_seg_read(in->t, in->s, buf, n, off);
}

/* Calls FN for every line of the LENGTH bytes at stream offset OFFSET
 * that RD gives, with the line's stream offset. */
static int scan_lines(seg_reader rd, void *ctx, uint64_t offset,
		      uint64_t length,
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
	while (pos + have < length && !rc) {
		size_t want = cap - have, start = 0;
		ssize_t n;
		char *nl;

		if (want > length - pos - have)
			want = (size_t)(length - pos - have);
		n = rd(ctx, buf + have, want, offset + pos + have);
		if (n <= 0) {
			rc = n < 0 ? (int)n : -EIO;
			break;
		}
		have += (size_t)n;
		while (!rc && (nl = memchr(buf + start, '\n', have - start))) {
			size_t len = (size_t)(nl - (buf + start));

			rc = fn(arg, buf + start, len, offset + pos + start);
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
	struct seg_in_store in = { .t = t, .s = s };
	int rc;

	store_ids_scratch_init(&sc, t->id_field);
	rc = scan_lines(read_store, &in, g->offset, g->length, collect_id, &c);
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
	/* Evicted (a writer that continued another's history): its table
	 * from the remote first, which needs none of its bytes. */
	if (g->state == STORE_SEG_EVICTED && !g->ids_asked &&
	    (rc = store_seg_want_ids(t, g->id)))
		return rc;
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

/* ---- a sealed segment's IDs for the remote, and tables from it ---- */

struct seg_in_fd {
	int fd;
	uint64_t offset;	/* stream offset of the file's byte 0 */
};

static ssize_t read_fd(void *ctx, char *buf, size_t n, uint64_t off)
{
	struct seg_in_fd *in = ctx;
	ssize_t got = pread(in->fd, buf, n, (off_t)(off - in->offset));

	return got < 0 ? -errno : got;
}

struct list_ids {
	struct ids_scratch sc;
	int (*fn)(void *arg, uint64_t hash, uint64_t offset, const char *id,
		  size_t len);
	void *arg;
};

static int list_id(void *arg, const char *line, size_t len, uint64_t off)
{
	struct list_ids *l = arg;
	const char *id;
	size_t idlen;
	int rc = store_ids_extract(&l->sc, line, len, &id, &idlen);

	if (rc <= 0)
		return rc;
	return l->fn(l->arg, store_ids_hash(id, idlen), off, id, idlen);
}

int store_segment_ids(struct store_tenant *t, const struct store_segment *seg,
		      int fd, int (*fn)(void *arg, uint64_t hash,
					uint64_t offset, const char *id,
					size_t len),
		      void *arg, uint64_t *field_hash)
{
	struct seg_in_fd in = { .fd = fd, .offset = seg->offset };
	struct list_ids l = { .fn = fn, .arg = arg };
	char field[STORE_ID_FIELD_MAX + 1];
	int rc;

	pthread_rwlock_rdlock(&t->lock);
	memcpy(field, t->id_field, sizeof(field));
	pthread_rwlock_unlock(&t->lock);
	*field_hash = XXH3_64bits(field, strlen(field));
	store_ids_scratch_init(&l.sc, field);
	rc = scan_lines(read_fd, &in, seg->offset, seg->length, list_id, &l);
	store_ids_scratch_release(&l.sc);
	return rc;
}

/* Whether the table (PAIRS, ENDS, N, IDLEN) adds up and lies within G. */
static bool table_fits(const struct seg *g, const uint64_t *pairs,
		       const uint64_t *ends, size_t n, size_t idlen)
{
	uint64_t prev = 0;

	for (size_t i = 0; i < n; i++) {
		if (ends[i] < prev || pairs[2 * i + 1] < g->offset ||
		    pairs[2 * i + 1] >= g->offset + g->length ||
		    (i && (pairs[2 * i] < pairs[2 * i - 2] ||
			   (pairs[2 * i] == pairs[2 * i - 2] &&
			    pairs[2 * i + 1] <= pairs[2 * i - 1]))))
			return false;
		prev = ends[i];
	}
	return prev == idlen;
}

int store_segment_ids_install(struct store_tenant *t, uint64_t seg,
			      uint64_t field_hash, const uint64_t *pairs,
			      const uint64_t *ends, size_t n, const char *ids,
			      size_t idlen)
{
	struct stream *s = NULL;
	struct seg *g;
	char name[64];
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	g = t->removed ? NULL : store_seg_find(t, seg, &s);
	if (!g)
		rc = -ENOENT;
	else if (field_hash != XXH3_64bits(t->id_field, strlen(t->id_field)))
		rc = -ESTALE;
	else if (!table_fits(g, pairs, ends, n, idlen))
		rc = -EINVAL;
	else
		rc = 0;
	if (!rc) {
		store_seg_name(name, sizeof(name), g->id, ".ids");
		rc = store_idtable_write_ids(t->segfd, name, field_hash, pairs,
					     ends, n, ids, idlen);
	}
	/* Loaded already: mapped at the next ID. */
	if (!rc && s->ids_loaded)
		store_stream_ids_release(s);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}
