/*
 * What sync/ needs beyond segment states: the event index of a sealed
 * segment (shipped beside it to the remote), and, on analysis hosts,
 * extending a local replica of a stream with a segment that lives on the
 * remote.  A replica segment starts evicted; the first read fetches it
 * through the fetch hook.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "store_int.h"

struct batch_list {
	struct store_tenant *t;
	struct stream *s;
	struct store_batch *v;
	size_t n, cap;
	uint64_t end_version;	/* first version past the segment */
};

static int list_push(struct batch_list *l, const struct store_batch *b)
{
	int rc = STORE_ARRAY_RESERVE(l->v, l->cap, l->n + 1, 64);

	if (rc)
		return rc;
	l->v[l->n++] = *b;
	return 0;
}

/* A merged row travels as the batches it holds, each with the hash of its
 * own bytes: what the remote's event index has always listed. */
struct merged {
	struct batch_list *l;
	const char *bytes;	/* the row's */
	uint64_t offset;	/* where they start in the stream */
};

static int push_sub(void *arg, const struct sub_batch *b)
{
	struct merged *m = arg;

	return list_push(m->l, &(struct store_batch){
		.first_version = b->first_version,
		.offset = b->offset,
		.length = b->length,
		.time_ns = b->time_ns,
		.hash = XXH3_64bits(m->bytes + (b->offset - m->offset), b->length),
	});
}

static int push_merged(struct batch_list *l, const struct index_batch *b)
{
	char *buf = malloc(b->length);
	struct merged m = { .l = l, .bytes = buf, .offset = b->offset };
	ssize_t got = buf ? store_seg_read(l->t, l->s, buf, b->length, b->offset)
			  : -ENOMEM;
	int rc = got == (ssize_t)b->length ? 0 : got < 0 ? (int)got : -EIO;

	if (!rc)
		rc = store_subs_walk(b, push_sub, &m);
	free(buf);
	return rc < 0 ? rc : 0;
}

static int batch_push(void *arg, const struct index_batch *b)
{
	struct batch_list *l = arg;

	if (b->first_version >= l->end_version)
		return 1;	/* past the segment: stop */
	if (b->subs)
		return push_merged(l, b);
	return list_push(l, &(struct store_batch){
		.first_version = b->first_version,
		.offset = b->offset,
		.length = b->length,
		.time_ns = b->time_ns,
		.hash = b->hash,
	});
}

int store_segment_batches(struct store_tenant *t, uint64_t seg,
			  int (*fn)(void *arg, const struct store_batch *b),
			  void *arg)
{
	struct batch_list l = { .t = t };
	struct stream *s;
	struct seg *g;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	rc = g ? store_journal_flush(t) : -ENOENT;
	if (!rc) {
		l.s = s;
		l.end_version = g->first_version + g->count;
		rc = store_index_batch_scan(t, s->id, g->first_version,
					    batch_push, &l);
	}
	pthread_rwlock_unlock(&t->lock);
	/* a batch's count is the distance to the next one's first version */
	for (size_t i = 0; i < l.n; i++)
		l.v[i].count = (i + 1 < l.n ? l.v[i + 1].first_version
					   : l.end_version) - l.v[i].first_version;
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = fn(arg, &l.v[i]);
	free(l.v);
	return rc;
}

/* Do SEG and its batches continue stream S without a gap? */
static bool replica_fits(const struct stream *s, const struct store_segment *seg,
			 const struct store_batch *b, size_t n)
{
	uint64_t version = seg->first_version, offset = seg->offset;

	if (seg->first_version != s->version + 1 || seg->offset != s->size ||
	    !n || !seg->count || !seg->length)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (b[i].first_version != version || b[i].offset != offset ||
		    !b[i].count || !b[i].length)
			return false;
		version += b[i].count;
		offset += b[i].length;
	}
	return version == seg->first_version + seg->count &&
	       offset == seg->offset + seg->length;
}

/* The rows of segment G (already pushed on S) and its batches. */
static int replica_rows(struct store_tenant *t, struct stream *s,
			const struct store_batch *b, size_t n)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < n; i++)
		rc = store_index_batch_insert(t, s->id, &b[i], NULL, 0);
	if (!rc)
		rc = store_journal_stream_update(t, s);
	return rc;
}

int store_replica_add(struct store_tenant *t, uint64_t id,
		      const struct store_segment *seg,
		      const struct store_batch *batches, size_t n)
{
	struct seg *g = calloc(1, sizeof(*g));
	struct stream *s, old;
	uint64_t size = 0;
	int rc;

	if (!g)
		return -ENOMEM;
	g->fd = -1;
	g->origin = seg->origin ? seg->origin : seg->seg;
	g->first_version = seg->first_version;
	g->offset = seg->offset;
	g->length = g->synced = seg->length;
	g->count = seg->count;
	g->checksum = seg->checksum;
	g->created_ns = seg->created_ns;
	g->state = STORE_SEG_EVICTED;
	if (seg->keep_id) {
		g->id = g->origin;
		g->has_ids = true;	/* unknown: rebuilt from the bytes */
	}

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (store_seg_active(s))
		rc = -EBUSY;	/* a replica is never appended to here */
	else if (!replica_fits(s, seg, batches, n))
		rc = -EINVAL;
	else
		rc = store_journal_begin(t);
	if (!rc)
		rc = store_index_segment_insert(t, s->id, g);	/* gives g->id */
	if (!rc)
		/* before the commit: nothing fails after it */
		rc = store_seg_push(t, s, g);
	if (rc) {
		if (s)
			store_index_rollback(t);
		goto out;
	}
	old = *s;
	s->version += seg->count;
	s->size += seg->length;
	s->last_ns = batches[n - 1].time_ns;
	s->mtime = s->ctime = store_ts(s->last_ns);
	rc = replica_rows(t, s, batches, n);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (rc) {
		store_stream_restore(s, &old);
		store_seg_pop(t, s);
		goto out;
	}
	size = s->size;
	g = NULL;
out:
	pthread_rwlock_unlock(&t->lock);
	free(g);
	if (!rc && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, size);
	return rc;
}
