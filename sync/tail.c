/*
 * tail.c: a writer's flush (CONTRACT §7, docs/FORMAT.md "Tail pieces").
 * Every `flush`, the bytes the tenant's streams took past what its
 * published manifest holds (sealed segments, then earlier tails) go up in
 * ONE piece object, whatever the number of streams, and the manifest that
 * follows lists each stream's share as its "tail".  A tenant where nothing
 * grew ships nothing.  Once a segment is uploaded whole, the manifest lists
 * it instead of its tails, and the pieces no manifest names any more are
 * deleted cfg.piece_keep_ns later (a reader that read the previous
 * manifest may still be fetching them; FORMAT.md says why a minute).
 *
 * All of it runs on the sync thread, with its tenant state.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

/* A piece stops taking rows past this many bytes; the rest goes with the
 * next flush (a writer back after an outage ships its backlog in steps). */
#define PIECE_MAX_BYTES (32u << 20)

static const struct manifest_stream *stream_of(const struct manifest *m,
					       uint64_t id)
{
	for (size_t i = 0; i < m->nstreams; i++)
		if (m->streams[i].id == id)
			return &m->streams[i];
	return NULL;
}

/* Where MS's published bytes end: its tails' end, else its segments'. */
static uint64_t shipped_end(const struct manifest_stream *ms)
{
	const struct manifest_tail *tl = ms->ntails ? &ms->tails[ms->ntails - 1]
						    : NULL;

	return tl ? tl->offset + tl->length : ms->size;
}

struct grown {
	const struct manifest *published;
	bool any;
};

static int grown_check(void *arg, const char *name,
		       const struct store_attr *a)
{
	struct grown *g = arg;
	const struct manifest_stream *ms = stream_of(g->published, a->id);

	(void)name;
	if (a->size > (ms ? shipped_end(ms) : 0)) {
		g->any = true;
		return 1;	/* one is enough */
	}
	return 0;
}

bool sync_tail_due(struct sync *s, struct store_tenant *t,
		   struct tenant_state *ts, bool force)
{
	struct grown g = { .published = &ts->published };

	if (s->cfg.flush_ns <= 0 || s->cfg.replica)
		return false;
	if (!force &&
	    sync_clock(CLOCK_MONOTONIC) - ts->flushed_ns < s->cfg.flush_ns)
		return false;
	if (store_stream_list(t, 0, grown_check, &g) < 0)
		return true;	/* let the flush find out */
	return g.any;
}

/* ---- the manifest's tails ---- */

static int tail_push(struct manifest_stream *ms, const struct manifest_tail *tl)
{
	struct manifest_tail *v = reallocarray(ms->tails, ms->ntails + 1,
					       sizeof(*v));

	if (!v)
		return -ENOMEM;
	ms->tails = v;
	v[ms->ntails++] = *tl;
	return 0;
}

static int piece_push(struct manifest *m, const struct manifest_piece *pc)
{
	struct manifest_piece *v;

	if (sync_manifest_piece(m, pc->seq))
		return 0;
	v = reallocarray(m->pieces, m->npieces + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	m->pieces = v;
	v[m->npieces++] = *pc;
	return 0;
}

/* PM's tails that continue MS's segments without a gap, into MS. */
static int carry_stream(const struct manifest *prev,
			const struct manifest_stream *pm, struct manifest *m,
			struct manifest_stream *ms)
{
	uint64_t end = ms->size;
	int rc = 0;

	for (size_t i = 0; !rc && i < pm->ntails; i++) {
		const struct manifest_tail *tl = &pm->tails[i];
		const struct manifest_piece *pc = sync_manifest_piece(prev,
								       tl->piece);

		if (tl->offset + tl->length <= ms->size)
			continue;	/* its segment is up now */
		if (tl->offset != end || !pc)
			break;
		rc = tail_push(ms, tl);
		if (!rc)
			rc = piece_push(m, pc);
		end += tl->length;
	}
	return rc;
}

int sync_tail_carry(const struct manifest *prev, struct manifest *m)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < m->nstreams; i++) {
		const struct manifest_stream *pm = stream_of(prev,
							     m->streams[i].id);

		if (pm)
			rc = carry_stream(prev, pm, m, &m->streams[i]);
	}
	return rc;
}

/* ---- building a piece ---- */

/* What a piece may still take. */
struct budget {
	uint64_t left;		/* bytes */
	bool cut;		/* some row did not fit: more to ship */
};

struct rows_from {
	uint64_t from;		/* stream offset: rows before it are shipped */
	struct budget *budget;
	struct store_batch *v;
	size_t n, alloc;
	uint64_t length;
};

static int rows_collect(void *arg, const struct store_batch *b)
{
	struct rows_from *r = arg;

	if (b->offset < r->from)
		return 0;
	if (r->n && r->length + b->length > r->budget->left) {
		r->budget->cut = true;
		return 1;	/* enough for this piece */
	}
	if (STORE_ARRAY_RESERVE(r->v, r->alloc, r->n + 1, 64))
		return -ENOMEM;
	r->v[r->n++] = *b;
	r->length += b->length;
	return 0;
}

/* The bytes of rows R of segment G of T into *OUT (malloc'd), each row
 * checked against its hash: what goes up is what readers were served. */
static int chunk_bytes(struct store_tenant *t, const struct store_segment *g,
		       const struct rows_from *r, char **out)
{
	char *path = store_segment_path(t, g->seg), *buf = malloc(r->length ? r->length : 1);
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	int rc = !path || !buf ? -ENOMEM : fd < 0 ? -errno : 0;
	uint64_t at = 0;

	if (!rc)
		rc = store_pread_all(fd, buf, r->length, r->v[0].offset - g->offset);
	for (size_t i = 0; !rc && i < r->n; i++) {
		if (XXH3_64bits(buf + at, r->v[i].length) != r->v[i].hash)
			rc = -EIO;
		at += r->v[i].length;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	if (rc)
		free(buf);
	else
		*out = buf;
	return rc;
}

/* Adds to P the rows of segment G (of stream MS) from *END on, as much as
 * BUDGET allows; moves both. */
static int chunk_add(struct store_tenant *t, struct piece *p,
		     const struct manifest_stream *ms,
		     const struct store_segment *g, uint64_t *end,
		     struct budget *budget)
{
	struct rows_from r = { .from = *end, .budget = budget };
	struct piece_chunk c = { .stream = ms->id };
	int rc = store_segment_batches(t, g->seg, rows_collect, &r);

	if (rc > 0)
		rc = 0;
	if (!rc && r.n && r.v[0].offset != *end)
		rc = -EIO;	/* not at a row boundary: should not happen */
	if (rc || !r.n) {
		free(r.v);
		return rc;
	}
	rc = chunk_bytes(t, g, &r, &c.bytes);
	if (!rc)
		rc = STORE_ARRAY_RESERVE(p->chunks, p->alloc, p->n + 1, 16);
	if (rc) {
		free(c.bytes);
		free(r.v);
		return rc;
	}
	c.rows = r.v;
	c.nrows = r.n;
	c.tail = (struct manifest_tail){
		.piece = p->seq, .seg = g->seg, .seg_offset = g->offset,
		.seg_created_ns = g->created_ns,
		.first_version = r.v[0].first_version, .offset = *end,
		.length = r.length };
	for (size_t i = 0; i < r.n; i++)
		c.tail.count += r.v[i].count;
	p->chunks[p->n++] = c;
	*end += r.length;
	budget->left -= r.length < budget->left ? r.length : budget->left;
	budget->cut |= !budget->left;
	return 0;
}

/* Adds to P what stream MS of T holds past its published end. */
static int stream_add(struct store_tenant *t, struct piece *p,
		      const struct manifest_stream *ms, struct budget *budget)
{
	struct sync_seg_vec sv = { 0 };
	uint64_t end = shipped_end(ms);
	struct store_attr a;
	int rc;

	if (ms->frozen)
		return 0;	/* publishes nothing more (lost.c) */
	rc = store_stream_stat(t, ms->id, &a);
	if (rc || a.size <= end)
		return rc == -ENOENT ? 0 : rc;
	rc = store_stream_segments(t, ms->id, sync_seg_collect, &sv);
	if (!rc && sv.n)
		qsort(sv.v, sv.n, sizeof(*sv.v), sync_seg_cmp);
	for (size_t i = 0; !rc && i < sv.n && !budget->cut; i++) {
		const struct store_segment *g = &sv.v[i];

		if (g->offset + g->length <= end)
			continue;
		if (g->offset > end || g->state == STORE_SEG_EVICTED)
			break;	/* cannot continue the chain from here */
		rc = chunk_add(t, p, ms, g, &end, budget);
	}
	free(sv.v);
	return rc == -ENOENT ? 0 : rc;	/* the stream went meanwhile */
}

/* The seq after every piece M and TS's manifest name. */
static uint64_t next_seq(const struct manifest *m, const struct tenant_state *ts)
{
	uint64_t seq = 0;

	for (size_t i = 0; i < m->npieces; i++)
		if (m->pieces[i].seq > seq)
			seq = m->pieces[i].seq;
	for (size_t i = 0; i < ts->published.npieces; i++)
		if (ts->published.pieces[i].seq > seq)
			seq = ts->published.pieces[i].seq;
	return seq + 1;
}

/* Puts P as a piece object of TPREFIX; *PC (OUT) as the manifest lists it. */
static int piece_put(struct sync *s, const struct piece *p, const char *tprefix,
		     struct manifest_piece *pc, char *what, size_t wlen)
{
	struct backend_buf buf = { .max = (size_t)PIECE_MAX_BYTES * 2 };
	char *key = NULL;
	int rc = sync_piece_encode(p, &buf);

	if (!rc) {
		*pc = (struct manifest_piece){
			.seq = p->seq, .length = buf.len,
			.checksum = XXH3_64bits(buf.data, buf.len),
			.generation = p->generation,
			.created_ns = sync_clock(CLOCK_REALTIME) };
		key = sync_piece_key(tprefix, pc->seq, pc->checksum);
		rc = key ? 0 : -ENOMEM;
	}
	if (!rc) {
		snprintf(what, wlen, "put %s", key);
		rc = backend_put_buf(s->b, key, buf.data, buf.len);
		if (!rc)
			sync_lost_note_put(s, key, buf.len);
	}
	free(key);
	backend_buf_release(&buf);
	return rc;
}

/* One piece of what T's streams took past M's tails, put and added to M;
 * *MORE (OUT): it was cut at PIECE_MAX_BYTES. */
static int ship_one(struct sync *s, struct store_tenant *t,
		    struct tenant_state *ts, const char *tprefix,
		    struct manifest *m, bool *more, char *what, size_t wlen)
{
	struct piece p = { .seq = next_seq(m, ts),
			   .generation = ts->generation, .owns_bytes = true };
	struct budget budget = { .left = PIECE_MAX_BYTES };
	struct manifest_piece pc;
	int rc = 0;

	snprintf(what, wlen, "tail of %s", store_tenant_name(t));
	for (size_t i = 0; !rc && i < m->nstreams && !budget.cut; i++)
		rc = stream_add(t, &p, &m->streams[i], &budget);
	*more = budget.cut && p.n;
	if (!rc && p.n)
		rc = piece_put(s, &p, tprefix, &pc, what, wlen);
	if (!rc && p.n) {
		rc = piece_push(m, &pc);
		sync_mutex_lock(&s->lock);
		s->status.tail_pieces++;
		s->status.tail_pieces_bytes += pc.length;
		s->status.last_flush_ns = pc.created_ns;
		sync_mutex_unlock(&s->lock);
	}
	for (size_t i = 0; !rc && i < p.n; i++) {
		struct manifest_stream *ms = (struct manifest_stream *)
			stream_of(m, p.chunks[i].stream);

		rc = tail_push(ms, &p.chunks[i].tail);
	}
	sync_piece_release(&p);
	return rc;
}

int sync_tail_ship(struct sync *s, struct store_tenant *t,
		   struct tenant_state *ts, const char *tprefix,
		   struct manifest *m, bool all, char *what, size_t wlen)
{
	bool more;
	int rc;

	do
		rc = ship_one(s, t, ts, tprefix, m, &more, what, wlen);
	while (!rc && all && more && !sync_stopping(s));
	return rc;
}

/* ---- retiring pieces ---- */

static bool piece_named(const struct manifest *m,
			const struct manifest_piece *pc)
{
	const struct manifest_piece *cur = sync_manifest_piece(m, pc->seq);

	return cur && cur->checksum == pc->checksum;
}

int sync_tail_retire(struct sync *s, struct tenant_state *ts,
		     const struct manifest *old, const struct manifest *cur,
		     const char *tprefix)
{
	int64_t due = sync_clock(CLOCK_MONOTONIC) + s->cfg.piece_keep_ns;

	for (size_t i = 0; i < old->npieces; i++) {
		const struct manifest_piece *pc = &old->pieces[i];
		struct tail_stale *v;
		char *key;

		if (piece_named(cur, pc))
			continue;
		key = sync_piece_key(tprefix, pc->seq, pc->checksum);
		v = key ? reallocarray(ts->tail_stale, ts->ntail_stale + 1,
				       sizeof(*v)) : NULL;
		if (!v) {
			free(key);
			return -ENOMEM;
		}
		ts->tail_stale = v;
		v[ts->ntail_stale++] = (struct tail_stale){ .key = key,
							    .due_ns = due };
	}
	return 0;
}

int sync_tail_delete_due(struct sync *s, struct tenant_state *ts, bool all,
			 char *what, size_t wlen)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	size_t kept = 0;
	int rc = 0;

	for (size_t i = 0; i < ts->ntail_stale; i++) {
		struct tail_stale *st = &ts->tail_stale[i];
		int r = 0;

		if (!s->cfg.nodelete && !rc && (all || st->due_ns <= now)) {
			snprintf(what, wlen, "delete %s", st->key);
			r = backend_del(s->b, st->key);
			if (r == -ENOENT)
				r = 0;
			rc = r;
		} else if (!s->cfg.nodelete) {
			r = 1;	/* not yet, or after a failure: kept */
		}
		if (r)
			ts->tail_stale[kept++] = *st;
		else
			free(st->key);
	}
	ts->ntail_stale = kept;
	return rc;
}

void sync_tail_release(struct tenant_state *ts)
{
	for (size_t i = 0; i < ts->ntail_stale; i++)
		free(ts->tail_stale[i].key);
	free(ts->tail_stale);
	ts->tail_stale = NULL;
	ts->ntail_stale = 0;
}

/* ---- what the status says ---- */

/* Drops TENANT's marks, with s->lock. */
static void marks_drop(struct sync *s, const char *tenant)
{
	size_t kept = 0;

	for (size_t i = 0; i < s->nmarks; i++) {
		if (!strcmp(s->marks[i].tenant, tenant)) {
			free(s->marks[i].tenant);
			continue;
		}
		s->marks[kept++] = s->marks[i];
	}
	s->nmarks = kept;
}

int sync_tail_note(struct sync *s, struct tenant_state *ts)
{
	const struct manifest *m = &ts->published;
	uint64_t bytes = 0, n = 0;
	struct tail_mark *v;
	int rc = 0;

	for (size_t i = 0; i < m->nstreams; i++)
		if (m->streams[i].ntails) {
			bytes += shipped_end(&m->streams[i]) - m->streams[i].size;
			n++;
		}
	sync_mutex_lock(&s->lock);
	marks_drop(s, ts->name);
	s->status.tail_bytes += bytes - ts->tail_bytes;
	ts->tail_bytes = bytes;
	v = n ? reallocarray(s->marks, s->nmarks + n, sizeof(*v)) : NULL;
	if (v)
		s->marks = v;
	else if (n)
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < m->nstreams; i++) {
		const struct manifest_stream *ms = &m->streams[i];
		const struct manifest_tail *tl;
		char *name;

		if (!ms->ntails)
			continue;
		tl = &ms->tails[ms->ntails - 1];
		name = strdup(ts->name);
		if (!name) {
			rc = -ENOMEM;
			break;
		}
		s->marks[s->nmarks++] = (struct tail_mark){
			.tenant = name, .stream = ms->id,
			.version = tl->first_version + tl->count - 1 };
	}
	sync_mutex_unlock(&s->lock);
	return rc;
}

uint64_t sync_tail_mark(struct sync *s, const char *tenant, uint64_t stream)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (size_t i = 0; i < s->nmarks; i++)
		if (s->marks[i].stream == stream &&
		    !strcmp(s->marks[i].tenant, tenant))
			return s->marks[i].version;
	return 0;
}

void sync_tail_marks_release(struct sync *s)
{
	for (size_t i = 0; i < s->nmarks; i++)
		free(s->marks[i].tenant);
	free(s->marks);
	s->marks = NULL;
	s->nmarks = 0;
}
