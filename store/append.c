/*
 * The append path: framing, event IDs, dedup, the version check, and the
 * commit of one call's events as one batch (segment bytes, then one index
 * transaction).  The work that needs no shared state (splitting a long
 * append, parsing JSON) happens without the tenant lock; a short append
 * whose lines can hold no ID is split under it, taken once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

/* A line that may hold an ID (store_ids_may_be_object): the others are
 * only counted, and never skipped. */
struct event {
	size_t off, len;	/* in the caller's buffer, '\n' included */
	size_t index;		/* among the call's events */
	uint64_t hash;		/* of the ID, when has_id */
	size_t id_off, id_len;	/* the ID's bytes in the call's arena */
	bool has_id;
	bool skip;
};

#define BATCH_INLINE 8	/* events held without an allocation */

struct batch {
	enum store_framing framing;	/* the stream's, when it was split */
	bool want_ids;		/* some line may name an ID: keep them */
	bool scanned;		/* scan holds the buffer's line ends */
	bool split_done;	/* split under the lock already */
	struct lines_scan scan;
	size_t count;		/* events in the caller's buffer */
	struct event *ev;	/* inline, or allocated when it outgrew it */
	size_t nev, cap;
	size_t len;		/* of the caller's buffer */
	size_t consumed;	/* bytes of the caller's buffer used */
	bool add_newline;	/* final partial line: commit it with '\n' */
	char *arena;		/* the IDs, back to back */
	size_t arena_len, arena_cap;
	bool any_id;
	struct event inline_ev[BATCH_INLINE];
};

static void batch_init(struct batch *b)
{
	memset(b, 0, offsetof(struct batch, inline_ev));
	b->ev = b->inline_ev;
	b->cap = BATCH_INLINE;
}

static void batch_release(struct batch *b)
{
	if (b->ev != b->inline_ev)
		free(b->ev);
	free(b->arena);
}

/* Keeps the event just counted, LEN bytes at OFF, which may have an ID.
 * The first array allocated holds the events of the whole buffer if they
 * are not very short: growing it often would copy it each time. */
static int keep_event(struct batch *b, size_t off, size_t len)
{
	if (b->nev == b->cap) {
		size_t ncap = b->cap * 8;
		struct event *v;

		if (b->ev == b->inline_ev && b->len / 64 > ncap)
			ncap = b->len / 64;
		v = malloc(ncap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		memcpy(v, b->ev, b->nev * sizeof(*v));
		if (b->ev != b->inline_ev)
			free(b->ev);
		b->ev = v;
		b->cap = ncap;
	}
	b->ev[b->nev++] = (struct event){
		.off = off, .len = len, .index = b->count - 1 };
	return 0;
}

/* Counts an event of LEN bytes at OFF of BUF (never empty), and keeps it
 * when it may have an ID. */
static inline int push_event(struct batch *b, const char *buf, size_t off,
			     size_t len)
{
	b->count++;
	return b->want_ids && store_ids_may_be_object(buf[off]) ?
	       keep_event(b, off, len) : 0;
}

/* Splits BUF into events when no line may have an ID and none can be
 * longer than max_event (LEN + 1 <= max_event): its scan has them all. */
static void split_counted(struct batch *b, size_t len, bool final)
{
	b->count = b->scan.count;
	b->consumed = b->scan.end;
	if (b->consumed < len && final) {
		b->add_newline = true;
		b->count++;
		b->consumed = len;
	}
}

/* Splits BUF into events.  Lines: every '\n' ends one; a trailing partial
 * line is left for the caller, or committed with a '\n' added when FINAL.
 * Raw: the buffer is one event, which has no ID. */
static int split(struct batch *b, const char *buf, size_t len,
		 enum store_framing framing, bool final, uint32_t max_event)
{
	const char *p = buf, *end = buf + len, *nl;
	int rc;

	b->len = len;
	if (framing == STORE_RAW) {
		b->consumed = len;
		if (len > max_event)
			return -EMSGSIZE;
		b->count = len > 0;
		return 0;
	}
	if (b->scanned && !b->want_ids && len < max_event) {
		split_counted(b, len, final);
		return 0;
	}
	while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
		size_t n = (size_t)(nl + 1 - p);

		if (n > max_event)
			return -EMSGSIZE;
		rc = push_event(b, buf, (size_t)(p - buf), n);
		if (rc)
			return rc;
		p = nl + 1;
	}
	b->consumed = (size_t)(p - buf);
	if (p == end)
		return 0;
	/* the tail, once its '\n' comes, is one byte longer */
	if ((size_t)(end - p) + 1 > max_event)
		return -EMSGSIZE;
	if (!final)
		return 0;
	b->add_newline = true;
	b->consumed = len;
	return push_event(b, buf, (size_t)(p - buf), (size_t)(end - p));
}

/* Adds an ID to the arena.  "" is an ID too: the one byte reserved past
 * the IDs makes the arena exist even when every ID is empty, so that no
 * memcpy or memcmp of a zero-length ID gets a null pointer. */
static int arena_put(struct batch *b, const char *id, size_t len)
{
	int rc = STORE_ARRAY_RESERVE(b->arena, b->arena_cap,
				     b->arena_len + len + 1, 4096);

	if (rc)
		return rc;
	memcpy(b->arena + b->arena_len, id, len);
	b->arena_len += len;
	return 0;
}

/* The length of a line without its '\n' (and what is not JSON anyway). */
static size_t line_body(const char *line, size_t len, bool has_newline)
{
	return has_newline && len && line[len - 1] == '\n' ? len - 1 : len;
}

static int extract_ids(struct batch *b, const char *buf,
		       struct ids_scratch *sc)
{
	int rc = 0;

	for (size_t i = 0; i < b->nev && !rc; i++) {
		struct event *e = &b->ev[i];
		bool last = e->index + 1 == b->count;
		const char *id;
		size_t idlen;

		rc = store_ids_extract(sc, buf + e->off,
				       line_body(buf + e->off, e->len,
						 !(last && b->add_newline)),
				       &id, &idlen);
		if (rc <= 0)
			continue;
		e->has_id = true;
		e->hash = store_ids_hash(id, idlen);
		e->id_off = b->arena_len;
		e->id_len = idlen;
		b->any_id = true;
		rc = arena_put(b, id, idlen);
	}
	return rc;
}

/* Reads the event at stream offset OFF and compares its ID with ID.
 * Returns 1 on a match, 0 if not, -errno when it cannot be read. */
static int confirm(struct store_tenant *t, struct stream *s,
		   struct ids_scratch *sc, uint64_t off, const char *id,
		   size_t idlen)
{
	size_t cap = 4096, have = 0;
	char *buf = NULL, *nl = NULL;
	const char *got;
	size_t gotlen;
	int rc = 0;

	while (!nl) {
		char *v = realloc(buf, cap);
		ssize_t n;

		if (!v) {
			rc = -ENOMEM;
			goto out;
		}
		buf = v;
		n = store_seg_read(t, s, buf + have, cap - have, off + have);
		if (n <= 0) {
			rc = n < 0 ? (int)n : -EIO;
			goto out;
		}
		nl = memchr(buf + have, '\n', (size_t)n);
		have += (size_t)n;
		cap *= 2;
	}
	rc = store_ids_extract(sc, buf, (size_t)(nl - buf), &got, &gotlen);
	if (rc > 0)
		rc = gotlen == idlen && !memcmp(got, id, idlen);
out:
	free(buf);
	return rc;
}

/* Is event E (ID in B's arena) already in stream S?  1, 0 or -errno. */
static int seen_in_stream(struct store_tenant *t, struct stream *s,
			  struct ids_scratch *sc, const struct batch *b,
			  const struct event *e)
{
	const char *id = b->arena + e->id_off;
	size_t pos = 0;
	uint64_t off;
	int rc;

	while (store_idset_next(&s->active_ids, e->hash, &pos, &off))
		if ((rc = confirm(t, s, sc, off, id, e->id_len)))
			return rc;
	if (!store_bloom_maybe(&s->sealed_filter, e->hash))
		return 0;
	for (size_t i = 0; i < s->nsegs; i++) {
		const struct idtable *tab = &s->segs[i]->ids;

		for (uint64_t j = store_idtable_find(tab, e->hash);
		     j < tab->count && tab->pairs[2 * j] == e->hash; j++)
			/* A table that holds its IDs (seeded from the
			 * remote) confirms without the segment's bytes. */
			if ((rc = tab->ends ? store_idtable_id_is(tab, j, id,
								  e->id_len)
					    : confirm(t, s, sc,
						      tab->pairs[2 * j + 1],
						      id, e->id_len)))
				return rc;
	}
	return 0;
}

/* Is event I a repeat of an earlier event of the same call? */
static bool seen_in_call(const struct batch *b, struct idset *call, size_t i)
{
	const struct event *e = &b->ev[i];
	size_t pos = 0;
	uint64_t j;

	while (store_idset_next(call, e->hash, &pos, &j)) {
		const struct event *f = &b->ev[j];

		if (f->id_len == e->id_len &&
		    !memcmp(b->arena + f->id_off, b->arena + e->id_off, e->id_len))
			return true;
	}
	return false;
}

/* Marks the events of B to skip.  T's lock is held for writing. */
static int mark_duplicates(struct store_tenant *t, struct stream *s,
			   struct batch *b)
{
	struct ids_scratch sc;
	struct idset call;
	int rc = 0;

	STORE_ASSERT_WRLOCKED(t);
	if (!s->ids_loaded && (rc = store_dedup_load(t, s)))
		return rc;
	store_ids_scratch_init(&sc, t->id_field);
	store_idset_init(&call);
	for (size_t i = 0; i < b->nev && !rc; i++) {
		struct event *e = &b->ev[i];

		if (!e->has_id)
			continue;
		if (seen_in_call(b, &call, i)) {
			e->skip = true;
			continue;
		}
		rc = seen_in_stream(t, s, &sc, b, e);
		if (rc > 0)
			e->skip = true;
		if (rc >= 0)
			rc = store_idset_add(&call, e->hash, i);
	}
	store_idset_release(&call);
	store_ids_scratch_release(&sc);
	return rc;
}

/* ---- the commit ---- */

/* The bytes to write: the caller's buffer itself when nothing is skipped
 * and nothing added, else a compacted copy (*copy, caller frees). */
static const char *payload(const struct batch *b, const char *buf,
			   size_t *len, uint32_t *count, char **copy)
{
	size_t gone = 0, skipped = 0, n = 0, from = 0;
	bool last_skipped = false;
	char *out;

	for (size_t i = 0; b->any_id && i < b->nev; i++) {
		if (!b->ev[i].skip)
			continue;
		gone += b->ev[i].len;
		skipped++;
		if (b->ev[i].index + 1 == b->count)
			last_skipped = true;
	}
	*count = (uint32_t)(b->count - skipped);
	*len = b->consumed - gone + (b->add_newline && !last_skipped);
	*copy = NULL;
	if (!skipped && !b->add_newline)
		return buf;
	out = malloc(*len ? *len : 1);
	if (!out)
		return NULL;
	/* the bytes around the skipped events */
	for (size_t i = 0; i < b->nev; i++) {
		const struct event *e = &b->ev[i];

		if (!e->skip)
			continue;
		memcpy(out + n, buf + from, e->off - from);
		n += e->off - from;
		from = e->off + e->len;
	}
	memcpy(out + n, buf + from, b->consumed - from);
	n += b->consumed - from;
	if (n < *len)
		out[n] = '\n';
	*copy = out;
	return out;
}

/* A new active segment for S: its row (committed on its own, before any
 * journal record names it) and its file. */
static int new_segment(struct store_tenant *t, struct stream *s,
		       int64_t now, struct seg **out)
{
	struct seg *g = calloc(1, sizeof(*g));
	char name[64];
	int fd, rc;

	if (!g)
		return -ENOMEM;
	g->fd = -1;
	g->first_version = s->version + 1;
	g->offset = s->size;
	g->created_ns = now;
	g->state = STORE_SEG_ACTIVE;
	rc = store_index_segment_insert(t, s->id, g);
	if (rc)
		goto fail;
	store_seg_name(name, sizeof(name), g->id, ".seg");
	fd = openat(t->segfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (t->st->cfg.sync_always && fsync(t->segfd) < 0)) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		store_index_segment_delete(t, g->id);
		goto fail;
	}
	rc = store_seg_push(t, s, g);
	if (rc) {
		close(fd);
		store_index_segment_delete(t, g->id);
		unlinkat(t->segfd, name, 0);
		goto fail;
	}
	store_seg_fd_adopt(t, g, fd);
	store_seg_fd_put(t, g);
	*out = g;
	return 0;
fail:
	store_seg_free(t, g);
	return rc;
}

static void drop_new_segment(struct store_tenant *t, struct stream *s)
{
	struct seg *g = store_seg_pop(t, s);
	char name[64];

	store_index_segment_delete(t, g->id);
	store_seg_name(name, sizeof(name), g->id, ".seg");
	unlinkat(t->segfd, name, 0);
	store_seg_free(t, g);
}

#define WRITE_PIECE (128u << 10)

/* Writes LEN bytes of P at the end of G (its file FD), and *HASH (OUT)
 * their XXH3: a piece at a time, each hashed and copied while in the CPU's
 * cache. */
static int write_hashed(struct store_tenant *t, struct seg *g, int fd,
			const char *p, size_t len, uint64_t *hash)
{
	uint64_t off = g->length;
	XXH3_state_t st;
	int rc = 0;

	if (len <= WRITE_PIECE) {
		*hash = XXH3_64bits(p, len);
		return store_seg_write(t, g, fd, p, len, off);
	}
	XXH3_64bits_reset(&st);
	for (size_t done = 0; done < len && !rc;) {
		size_t n = len - done < WRITE_PIECE ? len - done : WRITE_PIECE;

		XXH3_64bits_update(&st, p + done, n);
		rc = store_pwrite_all(fd, p + done, n, off + done);
		done += n;
	}
	*hash = XXH3_64bits_digest(&st);
	return rc;
}

/* The segment that takes LEN more bytes of S (*OUT): the active one, or
 * a new one (*FRESH) when there is none or LEN would take it past
 * roll_size, which closes it. */
static int segment_for(struct store_tenant *t, struct stream *s, size_t len,
		       int64_t now, struct seg **out, bool *fresh)
{
	struct seg *g = store_seg_active(s);
	int rc;

	*fresh = false;
	if (g && !g->full && g->length &&
	    g->length + len > t->st->cfg.roll_size) {
		rc = store_seg_close(t, s, g);
		if (rc)
			return rc;
	}
	if (g && g->full)
		g = NULL;	/* closed: the sealer's now */
	if (!g) {
		rc = new_segment(t, s, now, &g);
		if (rc)
			return rc;
		*fresh = true;
	}
	*out = g;
	return 0;
}

/* The batch of LEN bytes and COUNT events just written to G, S's active
 * segment, at NOW: memory, where readers see it, follows. */
static void batch_committed(struct store_tenant *t, struct stream *s,
			    struct seg *g, size_t len, uint32_t count,
			    int64_t now)
{
	const struct store_config *cfg = &t->st->cfg;

	g->length += len;
	g->count += count;
	if (cfg->sync_always)
		g->synced = g->length;
	s->version += count;
	s->size += len;
	s->last_ns = now;
	s->mtime = s->ctime = store_ts(now);
	s->row_dirty = true;
	/* full: sealed now rather than when the next append finds it so */
	if (g->length >= cfg->roll_size && store_seg_close(t, s, g))
		store_log(LOG_WARNING, "%s/%s: cannot close a full segment; the next append"
			  " does", t->name, s->name);
}

/* Writes LEN bytes of P as one batch of COUNT events at the end of S: the
 * bytes to the segment, the batch to the journal (journal.c), and only
 * then to memory, where readers see it.  On failure nothing remains. */
static int commit_batch(struct store_tenant *t, struct stream *s,
			const char *p, size_t len, uint32_t count,
			bool has_ids)
{
	const struct store_config *cfg = &t->st->cfg;
	int64_t now = store_now_ns();
	struct pending row;
	struct seg *g;
	bool fresh;
	int fd, rc;

	if (now < s->last_ns)
		now = s->last_ns;	/* times never go back within a stream */
	rc = segment_for(t, s, len, now, &g, &fresh);
	if (rc)
		return rc;
	row = (struct pending){
		.stream = s->id,
		.seg = g->id,
		.b = {
			.first_version = s->version + 1,
			.count = count,
			.offset = s->size,
			.length = len,
			.time_ns = now,
		},
	};
	fd = store_seg_fd_append(t, g, now);
	rc = fd < 0 ? fd : write_hashed(t, g, fd, p, len, &row.b.hash);
	if (!rc && cfg->sync_always && fdatasync(fd) < 0)
		rc = -errno;
	if (!rc)
		rc = store_journal_append(t, s, g, &row, has_ids);
	if (!rc && has_ids && !g->has_ids) {
		/* once per segment; the journal record carries it too */
		g->has_ids = true;
		if (store_index_segment_update(t, g))
			store_log(LOG_WARNING, "%s/%s: cannot mark segment as holding IDs",
				  t->name, s->name);
	}
	/* Past the length, bytes are no event; an extended file has its
	 * zeros there anyway, and the next append writes over them. */
	if (fd >= 0 && rc && !g->extended && ftruncate(fd, (off_t)g->length) < 0)
		store_log(LOG_ERR, "truncate after failed append: %s", strerror(errno));
	if (fd >= 0)
		store_seg_fd_append_put(t, g);
	if (rc) {
		if (fresh)
			drop_new_segment(t, s);
		return rc;
	}
	store_seg_hash_update(g, p, len);
	store_seg_grew(t, g, len);
	store_seg_rows_grew(t, g, row.b.offset - g->offset, row.b.hash);
	batch_committed(t, s, g, len, count, now);
	atomic_fetch_add_explicit(&t->st->n_events, count, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->st->n_bytes, len, memory_order_relaxed);
	if (store_journal_due(t, now) && store_journal_flush(t))
		store_log(LOG_WARNING, "%s: index flush failed; rows stay in the journal",
			  t->name);
	return 0;
}

static void remember_ids(struct store_tenant *t, struct stream *s,
			 const struct batch *b, uint64_t base)
{
	uint64_t gone = 0;	/* bytes of skipped events so far */

	for (size_t i = 0; i < b->nev; i++) {
		const struct event *e = &b->ev[i];

		if (e->skip) {
			gone += e->len;
			continue;
		}
		if (e->has_id && store_idset_add(&s->active_ids, e->hash,
						 base + e->off - gone)) {
			/* out of memory: rebuild from disk on the next ID */
			store_stream_ids_release(s);
			(void)t;
			return;
		}
	}
}

static void report_skipped(const struct batch *b, const struct store_append *app,
			   struct store_append_result *res)
{
	size_t n = 0;

	res->skipped = 0;
	for (size_t i = 0; b->any_id && i < b->nev; i++) {
		if (!b->ev[i].skip)
			continue;
		res->skipped++;
		if (app->skipped && n < app->skipped_cap)
			app->skipped[n++] = (uint32_t)b->ev[i].index;
	}
}

/* The part of an append to S under the tenant's lock: version check,
 * dedup, commit.  -ENODATA when dedup needs an evicted segment back. */
static int append_to(struct store_tenant *t, struct stream *s,
		     struct batch *b, const struct store_append *app,
		     struct store_append_result *res)
{
	char *copy = NULL;
	const char *p;
	uint32_t count;
	uint64_t base;
	size_t len;
	int rc = 0;

	STORE_ASSERT_WRLOCKED(t);
	if (app->expected != STORE_ANY_VERSION && app->expected != s->version)
		return -ESTALE;
	/* Only events with IDs are ever skipped. */
	for (size_t i = 0; b->any_id && i < b->nev; i++)
		b->ev[i].skip = false;
	if (b->any_id)
		rc = mark_duplicates(t, s, b);
	if (rc)
		return rc;
	p = payload(b, app->buf, &len, &count, &copy);
	if (!p)
		return -ENOMEM;
	base = s->size;
	if (count)
		rc = commit_batch(t, s, p, len, count, b->any_id);
	if (!rc && count && b->any_id && s->ids_loaded)
		remember_ids(t, s, b, base);
	if (!rc) {
		res->version = s->version;
		res->size = s->size;
		res->consumed = b->consumed;
		res->appended = count;
		report_skipped(b, app, res);
	}
	free(copy);
	return rc;
}

static const int64_t latency_bounds_ns[STORE_LATENCY_BUCKETS] = {
	10000, 25000, 50000, 100000, 250000, 500000,		/* 10 us .. */
	1000000, 2500000, 5000000, 10000000, 25000000, 50000000,		/* 1 ms .. */
	100000000, 250000000, 1000000000,		/* .. 1 s */
};

int64_t store_latency_bound_ns(size_t i)
{
	return latency_bounds_ns[i];
}

/* Counts the latency of an append that committed events, begun at START
 * (CLOCK_MONOTONIC), in the store's counters. */
static void count_append(struct store *st, int64_t start)
{
	int64_t took = store_mono_ns() - start;
	size_t b = 0;

	while (b < STORE_LATENCY_BUCKETS && took > latency_bounds_ns[b])
		b++;
	atomic_fetch_add_explicit(&st->latency[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->latency_sum_ns, (uint64_t)took,
				  memory_order_relaxed);
}

void store_tenant_hold(struct store_tenant *t, bool hold)
{
	pthread_mutex_lock(&t->hold_lock);
	atomic_store(&t->held, hold);
	if (!hold)
		pthread_cond_broadcast(&t->hold_cond);
	pthread_mutex_unlock(&t->hold_lock);
}

int store_tenant_wait_unheld(struct store_tenant *t, int64_t timeout_ns)
{
	struct timespec ts;
	int rc = 0;

	if (!atomic_load(&t->held))
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ns / 1000000000;
	ts.tv_nsec += timeout_ns % 1000000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&t->hold_lock);
	while (atomic_load(&t->held) && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&t->hold_cond, &t->hold_lock, &ts);
	pthread_mutex_unlock(&t->hold_lock);
	return atomic_load(&t->held) ? -EAGAIN : 0;
}

/* How long an append waits for a tenant being seeded (store_tenant_hold()). */
#define APPEND_HOLD_NS (30 * 1000000000LL)

/* Appends up to this long are split under the tenant's lock: that costs
 * less than taking the lock twice.  Below SHORT_APPEND (one line, most
 * often) a memchr(3) per line and a look at each line's first byte cost
 * less than a vector pass; longer ones are scanned (lines.c).  Longer than
 * SCAN_LOCKED, they are scanned without the lock. */
#define SHORT_APPEND 256
#define SCAN_LOCKED 4096

/* The first look under T's lock, held for writing: a raw append, or a
 * short one none of whose lines may have an ID, is split and committed
 * at once.  Any other is split, or has its IDs found, without the lock:
 * 1, with SC made for the tenant's ID member. */
static int append_first(struct store_tenant *t, uint64_t id,
			struct batch *b, struct ids_scratch *sc,
			const struct store_append *app,
			struct store_append_result *res)
{
	struct stream *s = t->removed ? NULL : store_stream_find(t, id);
	int rc;

	if (!s)
		return -ENOENT;
	b->framing = s->framing;
	if (b->framing == STORE_LINES && app->len > SCAN_LOCKED)
		goto unlocked;
	if (b->framing == STORE_LINES && app->len >= SHORT_APPEND) {
		store_lines_scan(app->buf, app->len, &b->scan);
		b->scanned = true;
		if (b->scan.quote)
			goto unlocked;
	} else {
		b->want_ids = b->framing == STORE_LINES;	/* its few lines */
	}
	rc = split(b, app->buf, app->len, b->framing, app->final,
		   t->st->cfg.max_event);
	if (rc)
		return rc;
	b->split_done = true;
	if (b->nev)
		goto unlocked;	/* a line may have an ID */
	return append_to(t, s, b, app, res);
unlocked:
	store_ids_scratch_init(sc, t->id_field);
	return 1;
}

/* Splits the lines of an append that append_first() left, without the
 * lock, unless it did, and finds their IDs if some line may have one. */
static int split_unlocked(struct store_tenant *t, struct batch *b,
			  struct ids_scratch *sc,
			  const struct store_append *app)
{
	int rc = 0;

	if (!b->split_done && !b->scanned) {
		store_lines_scan(app->buf, app->len, &b->scan);
		b->scanned = true;
	}
	if (!b->split_done) {
		b->want_ids = b->scan.quote;
		rc = split(b, app->buf, app->len, b->framing, app->final,
			   t->st->cfg.max_event);
	}
	if (!rc && b->nev)
		rc = extract_ids(b, app->buf, sc);
	return rc;
}

/* Takes the lock again for an append split without it. */
static int append_again(struct store_tenant *t, uint64_t id,
			struct batch *b, const struct store_append *app,
			struct store_append_result *res)
{
	struct stream *s;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (s->framing != b->framing)
		rc = -EAGAIN;	/* framing changed since the split */
	else
		rc = append_to(t, s, b, app, res);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_append(struct store_tenant *t, uint64_t id,
		 const struct store_append *app,
		 struct store_append_result *res)
{
	int64_t start = store_mono_ns();
	struct fetch_tries tries = { 0 };
	struct ids_scratch sc;
	struct batch b;
	int rc;

	rc = store_tenant_wait_unheld(t, APPEND_HOLD_NS);
	if (rc)
		return rc;
	batch_init(&b);
	pthread_rwlock_wrlock(&t->lock);
	rc = append_first(t, id, &b, &sc, app, res);
	pthread_rwlock_unlock(&t->lock);
	if (rc > 0) {
		rc = split_unlocked(t, &b, &sc, app);
		store_ids_scratch_release(&sc);
		if (!rc)
			rc = append_again(t, id, &b, app, res);
	}
	while (rc == -ENODATA && !(rc = store_seg_fetch_wanted(t, &tries)))
		rc = append_again(t, id, &b, app, res);
	if (!rc && res->appended)
		count_append(t->st, start);
	if (!rc && res->appended && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, res->size);
	batch_release(&b);
	return rc;
}
