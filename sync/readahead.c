/*
 * readahead.c: which segments fetch.c fetches ahead of a reader.
 *
 * Readahead follows each stream's reader (struct fetch_ra): once a reader
 * waits for a segment, the READAHEAD segments after it are queued (as
 * requests nobody waits for, which fetch.c sends only when the wire is
 * free of waited-for GETs); the window moves when the reader waits again,
 * when the last GET of a segment it waits for ends, and when its first
 * read of a segment fetched ahead comes (sync_fetch_reached()), so that
 * the wire never waits for the reader.  A window whose reader stopped goes
 * after RA_IDLE_NS, noticed by a fetch worker every RA_POLL_NS.  Windows
 * are kept only while the cache (cache_size) has room for them.
 *
 * Locking: s->fetch_ra, every window on it and s->fetch_ra_due are
 * protected by s->lock; store calls are made without it.
 */
#include <stdlib.h>

#include "sync.h"
#include "sync_int.h"

#define READAHEAD 4		/* segments fetched ahead of a reader */
#define RA_POLL_NS 1000000000LL	/* how often windows are looked at */
#define RA_IDLE_NS 5000000000LL	/* readahead ends when its reader stops */

/* Readahead of one stream: which segment its reader is in.  On
 * s->fetch_ra, protected by s->lock. */
struct fetch_ra {
	struct fetch_ra *next;
	struct store_tenant *t;
	uint64_t stream;
	uint64_t pos;		/* stream offset of the reader's segment */
	int64_t moved_ns;	/* CLOCK_MONOTONIC: pos last moved */
};

static struct fetch_ra *ra_find(struct sync *s, struct store_tenant *t,
				uint64_t stream)
{
	struct fetch_ra *ra;

	SYNC_ASSERT_HELD(&s->lock);
	for (ra = s->fetch_ra; ra; ra = ra->next)
		if (ra->t == t && ra->stream == stream)
			break;
	return ra;
}

static void ra_drop(struct sync *s, struct fetch_ra *ra)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (struct fetch_ra **p = &s->fetch_ra; *p; p = &(*p)->next)
		if (*p == ra) {
			*p = ra->next;
			free(ra);
			return;
		}
}

/* A reader of SEG's stream is in SEG, with s->lock: its window starts
 * there, or moves there. */
void sync_ra_reader_at(struct sync *s, struct store_tenant *t,
		       const struct store_segment *seg)
{
	struct fetch_ra *ra;

	SYNC_ASSERT_HELD(&s->lock);
	ra = ra_find(s, t, seg->stream);
	if (!ra && (ra = calloc(1, sizeof(*ra)))) {
		ra->t = t;
		ra->stream = seg->stream;
		ra->pos = seg->offset;
		ra->next = s->fetch_ra;
		s->fetch_ra = ra;
		if (!s->fetch_ra_due)
			s->fetch_ra_due = sync_clock(CLOCK_MONOTONIC) + RA_POLL_NS;
	}
	if (ra && seg->offset >= ra->pos) {
		ra->pos = seg->offset;
		ra->moved_ns = sync_clock(CLOCK_MONOTONIC);
	}
}

/* Queues the evicted segments among the READAHEAD after RA's reader, when
 * the cache has room for them.  Returns false when RA is over: nothing
 * evicted is left after the reader, or it has not moved for RA_IDLE_NS.
 * With s->lock; SV lists the stream's segments. */
static bool ra_window(struct sync *s, struct fetch_ra *ra,
		      const struct sync_seg_vec *sv)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	unsigned ahead = 0;
	bool evicted = false, room = true;

	SYNC_ASSERT_HELD(&s->lock);
	for (size_t i = 0; i < sv->n; i++) {
		const struct store_segment *g = &sv->v[i];

		if (g->offset <= ra->pos)
			continue;
		if (g->state != STORE_SEG_EVICTED) {
			ahead++;
			continue;
		}
		evicted = true;
		if (ahead++ >= READAHEAD || !room ||
		    sync_fetch_find(s, ra->t, g->seg))
			continue;
		room = !s->cfg.cache_size ||
		       (READAHEAD + 2) * g->length <= s->cfg.cache_size;
		if (room && !sync_fetch_add(s, ra->t, g, false))
			room = false;
	}
	return evicted && room && now - ra->moved_ns < RA_IDLE_NS;
}

/* Lists the segments of T's stream STREAM (a store call: without s->lock)
 * and moves its readahead window, if it has one. */
void sync_ra_step(struct sync *s, struct store_tenant *t, uint64_t stream)
{
	struct sync_seg_vec sv = { 0 };
	int rc = store_stream_segments(t, stream, sync_seg_collect, &sv);
	struct fetch_ra *ra;

	sync_mutex_lock(&s->lock);
	ra = ra_find(s, t, stream);
	if (ra && (rc || s->stop || !ra_window(s, ra, &sv)))
		ra_drop(s, ra);
	sync_mutex_unlock(&s->lock);
	free(sv.v);
}

/* Every RA_POLL_NS while streams are read ahead, with s->lock (dropped
 * meanwhile): windows whose reader stopped go. */
void sync_ra_poll(struct sync *s)
{
	struct ra_key {
		struct store_tenant *t;
		uint64_t stream;
	} *v;
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	size_t n = 0;

	SYNC_ASSERT_HELD(&s->lock);
	if (!s->fetch_ra) {
		s->fetch_ra_due = 0;
		return;
	}
	if (now < s->fetch_ra_due)
		return;
	s->fetch_ra_due = now + RA_POLL_NS;
	for (struct fetch_ra *ra = s->fetch_ra; ra; ra = ra->next)
		n++;
	v = calloc(n, sizeof(*v));
	if (!v)
		return;
	n = 0;
	for (struct fetch_ra *ra = s->fetch_ra; ra; ra = ra->next)
		v[n++] = (struct ra_key){ .t = ra->t, .stream = ra->stream };
	sync_mutex_unlock(&s->lock);
	for (size_t i = 0; i < n; i++)
		sync_ra_step(s, v[i].t, v[i].stream);
	free(v);
	sync_mutex_lock(&s->lock);
}

void sync_ra_clear(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	while (s->fetch_ra)
		ra_drop(s, s->fetch_ra);
}
