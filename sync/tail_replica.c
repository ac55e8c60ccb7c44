/*
 * tail_replica.c: an analysis host's side of tail pieces (docs/FORMAT.md,
 * "Readers").  After a stream's sealed segments, the manifest lists its
 * tail: shares of piece objects, in stream order.  Those past the local
 * end are fetched (a piece once per tenant pass, checked against the
 * length and XXH3 the manifest gives, as segments are), and appended to
 * the local stream with store_replica_tail_append(), which wakes
 * followers.  When the writer's segment is published sealed, the local
 * tail segment of that origin takes what it lacks from the segment object
 * (a ranged GET) and then the segment's checksum, which must match its
 * bytes: the switch adds no byte twice and changes none.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

void sync_piece_cache_release(struct piece_cache *pc)
{
	for (size_t i = 0; i < pc->n; i++) {
		sync_piece_release(&pc->v[i]);
		backend_buf_release(&pc->bufs[i]);
	}
	free(pc->v);
	free(pc->bufs);
	*pc = (struct piece_cache){ 0 };
}

/* Checks each row of B against its slice of BYTES. */
static int rows_check(const char *bytes, const struct store_batch *b, size_t n)
{
	uint64_t at = 0;

	for (size_t i = 0; i < n; i++) {
		if (XXH3_64bits(bytes + at, b[i].length) != b[i].hash)
			return -EIO;
		at += b[i].length;
	}
	return 0;
}

/* KEY's object whole into BUF, checked against MP's length and XXH3: as a
 * segment's fetch, a failed or damaged transfer is tried again, up to
 * cfg.fetch_attempts times in all, after a short backoff; then -EIO (or
 * the remote's error).  The sync thread waits meanwhile: at most a few
 * seconds. */
static int piece_fetch(struct sync *s, const char *key,
		       const struct manifest_piece *mp, struct backend_buf *buf)
{
	int64_t backoff = s->cfg.backoff_min_ns;
	unsigned tries = s->cfg.fetch_attempts ? s->cfg.fetch_attempts : 1;
	int rc = -EIO;

	for (unsigned i = 0; i < tries && !sync_stopping(s); i++) {
		if (i) {
			struct timespec ts = { .tv_sec = backoff / 1000000000,
					       .tv_nsec = backoff % 1000000000 };

			nanosleep(&ts, NULL);
			backoff *= 2;
		}
		buf->len = 0;
		rc = backend_get(s->b, key, 0, BACKEND_TO_END, buf);
		if (!rc && (buf->len != mp->length ||
			    XXH3_64bits(buf->data, buf->len) != mp->checksum))
			rc = -EIO;
		if (!rc || (rc != -EIO && !backend_err_retryable(rc)))
			break;
	}
	return rc;
}

/* Piece SEQ of M: from PC, or fetched, checked and decoded into it. */
static int piece_get(struct sync *s, const char *tprefix,
		     const struct manifest *m, uint64_t seq,
		     struct piece_cache *pc, const struct piece **out,
		     char *what, size_t wlen)
{
	const struct manifest_piece *mp = sync_manifest_piece(m, seq);
	struct backend_buf buf = { .max = 256u << 20 };
	struct piece p;
	char *key;
	void *v, *b;
	int rc;

	for (size_t i = 0; i < pc->n; i++)
		if (pc->v[i].seq == seq) {
			*out = &pc->v[i];
			return 0;
		}
	if (!mp)
		return -EIO;
	key = sync_piece_key(tprefix, mp->seq, mp->checksum);
	if (!key)
		return -ENOMEM;
	snprintf(what, wlen, "get %s", key);
	rc = piece_fetch(s, key, mp, &buf);
	if (!rc)
		rc = sync_piece_decode(&buf, &p);
	free(key);
	if (rc) {
		backend_buf_release(&buf);
		return rc;
	}
	v = reallocarray(pc->v, pc->n + 1, sizeof(*pc->v));
	if (v)
		pc->v = v;
	b = v ? reallocarray(pc->bufs, pc->n + 1, sizeof(*pc->bufs)) : NULL;
	if (b)
		pc->bufs = b;
	if (!v || !b) {
		sync_piece_release(&p);
		backend_buf_release(&buf);
		return -ENOMEM;
	}
	pc->v[pc->n] = p;
	pc->bufs[pc->n] = buf;	/* the piece's bytes point into it */
	*out = &pc->v[pc->n++];
	return 0;
}

/* P's chunk of remote stream RID that TL lists. */
static const struct piece_chunk *chunk_of(const struct piece *p, uint64_t rid,
					  const struct manifest_tail *tl)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct piece_chunk *c = &p->chunks[i];

		if (c->stream == rid && c->tail.seg == tl->seg &&
		    c->tail.offset == tl->offset && c->tail.length == tl->length &&
		    c->tail.first_version == tl->first_version &&
		    c->tail.count == tl->count)
			return c;
	}
	return NULL;
}

int sync_tail_chunk(struct sync *s, const char *tprefix,
		    const struct manifest *m, uint64_t rid,
		    const struct manifest_tail *tl, struct piece_cache *pc,
		    const struct piece_chunk **out, char *what, size_t wlen)
{
	const struct piece_chunk *c;
	const struct piece *p;
	int rc = piece_get(s, tprefix, m, tl->piece, pc, &p, what, wlen);

	if (rc)
		return rc;
	c = chunk_of(p, rid, tl);
	if (!c || rows_check(c->bytes, c->rows, c->nrows))
		return -EIO;
	*out = c;
	return 0;
}

/* The last segment of local stream LID into *LAST; false when none. */
static bool last_segment(struct store_tenant *t, uint64_t lid,
			 struct store_segment *last)
{
	struct sync_seg_vec sv = { 0 };
	bool found = false;

	if (!store_stream_segments(t, lid, sync_seg_collect, &sv) && sv.n) {
		qsort(sv.v, sv.n, sizeof(*sv.v), sync_seg_cmp);
		*last = sv.v[sv.n - 1];
		found = true;
	}
	free(sv.v);
	return found;
}

int sync_replica_tails(struct sync *s, struct store_tenant *t,
		       const char *tprefix, uint64_t lid,
		       const struct manifest *m, const struct manifest_stream *r,
		       struct piece_cache *pc, char *what, size_t wlen)
{
	struct store_segment last;
	struct store_attr a;
	int rc = store_stream_stat(t, lid, &a);

	for (size_t i = 0; !rc && i < r->ntails; i++) {
		const struct manifest_tail *tl = &r->tails[i];
		const struct piece_chunk *c;
		bool grows;

		if (tl->offset + tl->length <= a.size)
			continue;	/* have it */
		if (tl->offset != a.size)
			break;		/* not ours to split: the sealed
					 * segment brings it */
		grows = last_segment(t, lid, &last) && last.tail &&
			last.origin == tl->seg;
		if (!grows && tl->offset != tl->seg_offset)
			break;		/* the same */
		rc = sync_tail_chunk(s, tprefix, m, r->id, tl, pc, &c, what,
				     wlen);
		if (rc == -ENOENT)
			return 0;	/* replaced: a newer manifest says how */
		if (rc)
			break;
		snprintf(what, wlen, "append tail of %s/%s", store_tenant_name(t),
			 r->name);
		rc = store_replica_tail_append(t, lid, tl->seg, tl->seg_created_ns,
					       c->bytes, c->tail.length, c->rows,
					       c->nrows);
		a.size += tl->length;
		a.version += tl->count;
	}
	return rc;
}

/* The local tail segment of LID whose origin is ORIGIN into *OUT. */
static bool tail_of(struct store_tenant *t, uint64_t lid, uint64_t origin,
		    struct store_segment *out)
{
	struct sync_seg_vec sv = { 0 };
	bool found = false;

	if (store_stream_segments(t, lid, sync_seg_collect, &sv))
		return false;
	for (size_t i = 0; !found && i < sv.n; i++)
		if (sv.v[i].tail && sv.v[i].origin == origin) {
			*out = sv.v[i];
			found = true;
		}
	free(sv.v);
	return found;
}

/* Appends to LID the rest of segment SEG past its tail segment LT: the
 * rows of its event index from there, and their bytes (a ranged GET). */
static int tail_complete(struct sync *s, struct store_tenant *t,
			 const char *tprefix, uint64_t lid,
			 const struct store_segment *seg,
			 const struct store_segment *lt, char *what, size_t wlen)
{
	uint64_t from = lt->offset + lt->length, len = seg->offset + seg->length - from;
	struct backend_buf idx = { .max = 256u << 20 }, bytes = { .max = len + 1 };
	char *ikey = sync_segment_key(tprefix, seg->origin, seg->checksum, true);
	char *key = sync_segment_key(tprefix, seg->origin, seg->checksum, false);
	struct store_batch *b = NULL;
	size_t n = 0, skip = 0;
	int rc = ikey && key ? 0 : -ENOMEM;

	if (!rc) {
		snprintf(what, wlen, "get %s", ikey);
		rc = backend_get(s->b, ikey, 0, BACKEND_TO_END, &idx);
	}
	if (!rc)
		rc = sync_index_decode(&idx, seg->origin, &b, &n);
	while (!rc && skip < n && b[skip].offset < from)
		skip++;
	if (!rc && (skip == n || b[skip].offset != from))
		rc = -EIO;	/* the tail did not end at a row */
	if (!rc) {
		snprintf(what, wlen, "get %s", key);
		rc = backend_get(s->b, key, from - seg->offset, len, &bytes);
	}
	if (!rc && bytes.len != len)
		rc = -EIO;
	if (!rc)
		rc = rows_check(bytes.data, b + skip, n - skip);
	if (!rc) {
		snprintf(what, wlen, "append %s to %s", key, store_tenant_name(t));
		rc = store_replica_tail_append(t, lid, seg->origin, seg->created_ns,
					       bytes.data, len, b + skip, n - skip);
	}
	free(b);
	free(ikey);
	free(key);
	backend_buf_release(&idx);
	backend_buf_release(&bytes);
	return rc;
}

int sync_replica_tail_seal(struct sync *s, struct store_tenant *t,
			   const char *tprefix, uint64_t lid,
			   const struct store_segment *seg,
			   struct store_attr *a, char *what, size_t wlen)
{
	struct store_segment lt;
	int rc = 0;

	if (!tail_of(t, lid, seg->origin, &lt))
		return a->size >= seg->offset + seg->length ? 0 : -EIO;
	if (lt.offset != seg->offset || lt.length > seg->length)
		rc = -EIO;
	if (!rc && lt.length < seg->length)
		rc = tail_complete(s, t, tprefix, lid, seg, &lt, what, wlen);
	if (!rc) {
		snprintf(what, wlen, "seal tail of %s", store_tenant_name(t));
		rc = store_replica_tail_seal(t, lid, seg);
	}
	if (rc == -EIO || rc == -EINVAL) {
		/* Bytes that are not the segment's: never served as such.  The
		 * stream starts afresh at the next pass. */
		sync_log(LOG_ERR, "replica: %s: tail of segment %llu does not match "
			 "the sealed segment; the stream is fetched again",
			 store_tenant_name(t), (unsigned long long)seg->origin);
		if (store_stream_remove(t, lid))
			sync_log(LOG_ERR, "replica: %s: the stream could not be removed",
				 store_tenant_name(t));
		rc = -EIO;
	}
	if (!rc) {
		a->size = seg->offset + seg->length;
		a->version = seg->first_version + seg->count - 1;
	}
	return rc;
}
