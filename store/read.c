/*
 * Reading: bytes at an offset (shared lock, never past the last commit;
 * checked against their batch hashes, and a damaged segment fetched again
 * from the remote or refused with EIO),
 * the lookups behind views: version -> offset, time -> version, and
 * whether an offset was the stream's end since a version (a stale writer's
 * ESTALE).  An index row is a batch, so a version inside a lines batch is
 * found by counting newlines in the batch's bytes; raw batches hold one
 * event each.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hash.h"
#include "store_int.h"

/* ---- checked reads ----
 * A read serves a segment's bytes only once the batch rows they lie in
 * hash right: it takes the XXH3-64 of each row it touches whole, every
 * time (the bytes it wants are in the reader's buffer; the rest of the
 * rows at either end is read from the file).  No "checked" flag is kept
 * per row: a byte that turns bad on the disk after a check would then
 * come through once the page cache has let the good copy go, and nothing
 * but `streamfs verify` would see it.  The rows come from the index and,
 * for an active or closing segment, from the journal's pending rows, on
 * the first read that holds the file; appends add theirs
 * (store_seg_rows_grew), and they go with the file (close_locked), so they
 * take memory only for open segments that were read. */
static uint64_t row_end(const struct seg *g, const struct seg_rows *r, size_t i)
{
	return i + 1 < r->n ? r->v[i + 1].start : g->length;
}

/* The row holding segment offset IN. */
static size_t row_at(const struct seg_rows *r, uint64_t in)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->v[mid].start <= in)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo - 1;		/* v[0].start is 0 */
}

struct rows_scan {
	const struct seg *g;
	struct seg_rows *r;
	uint64_t next;		/* where the next row must start */
};

/* Adds the row at stream offset OFFSET, LENGTH bytes, hashing to HASH:
 * 0, 1 past G, or -errno (-EIO where the rows do not follow each other). */
static int row_push(struct rows_scan *sc, uint64_t offset, uint64_t length,
		    uint64_t hash)
{
	uint64_t end = sc->g->offset + sc->g->length;

	if (offset >= end)
		return 1;	/* the next segment's */
	if (offset != sc->g->offset + sc->next || length > end - offset)
		return -EIO;
	if (STORE_ARRAY_RESERVE(sc->r->v, sc->r->cap, sc->r->n + 1, 64))
		return -ENOMEM;
	sc->r->v[sc->r->n++] = (struct seg_row){
		.start = sc->next, .hash = hash,
	};
	sc->next += length;
	return 0;
}

static int row_add(void *arg, const struct index_batch *b)
{
	return row_push(arg, b->offset, b->length, b->hash);
}

/* Then the rows of G still pending in the journal, the newest. */
static int rows_pending(struct store_tenant *t, struct rows_scan *sc)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < t->npending; i++) {
		const struct pending *p = &t->pending[i];

		if (p->seg == sc->g->id)
			rc = row_push(sc, p->b.offset, p->b.length, p->b.hash);
	}
	return rc < 0 ? rc : 0;
}

/* The rows of G, whose file the caller holds.  Under T's shared lock no
 * writer uses the index or the journal, and rows_lock keeps the other
 * readers off the index. */
static int rows_load(struct store_tenant *t, struct seg *g,
		     struct seg_rows **out)
{
	struct rows_scan sc = { .g = g };
	struct seg_rows *r;
	int rc = 0;

	pthread_mutex_lock(&t->rows_lock);
	r = atomic_load(&g->rows);
	if (r)
		goto out;	/* another reader loaded them */
	sc.r = r = calloc(1, sizeof(*r));
	rc = r ? store_index_batch_scan(t, g->stream->id, g->first_version,
					row_add, &sc) : -ENOMEM;
	if (!rc)
		rc = rows_pending(t, &sc);
	if (!rc && (!r->n || sc.next != g->length))
		rc = -EIO;
	if (rc) {
		if (rc == -EIO)
			store_log(LOG_ERR, "%s/%s: the index rows of segment %016" PRIx64
				  " do not cover its bytes", t->name,
				  g->stream->name, g->id);
		if (r)
			free(r->v);
		free(r);
		r = NULL;
		goto out;
	}
	pthread_mutex_lock(&t->fd_lock);
	atomic_store(&g->rows, r);
	pthread_mutex_unlock(&t->fd_lock);
out:
	pthread_mutex_unlock(&t->rows_lock);
	*out = r;
	return rc;
}

/* Where a checked read found damage. */
struct found {
	uint64_t seg;
	uint64_t at;		/* the segment offset of the row that failed */
};

#define EDGE_CHUNK (64u << 10)

/* Feeds bytes FROM to TO of the file FD to ST, through SCRATCH (EDGE_CHUNK
 * bytes, allocated on first use). */
static int hash_file_part(int fd, uint64_t from, uint64_t to, char **scratch,
			  XXH3_state_t *st)
{
	while (from < to) {
		size_t n = to - from < EDGE_CHUNK ? (size_t)(to - from) : EDGE_CHUNK;
		int rc;

		if (!*scratch && !(*scratch = malloc(EDGE_CHUNK)))
			return -ENOMEM;
		rc = store_pread_all(fd, *scratch, n, from);
		if (rc)
			return rc;
		XXH3_64bits_update(st, *scratch, n);
		from += n;
	}
	return 0;
}

/* The XXH3-64 of the row from START to END of G's file FD, of which BUF
 * holds the bytes from IN to IN + LEN: the rest is read from the file. */
static int row_hash(int fd, uint64_t start, uint64_t end, const char *buf,
		    uint64_t in, size_t len, char **scratch, uint64_t *sum)
{
	uint64_t lo = start > in ? start : in;
	uint64_t hi = end < in + len ? end : in + len;
	XXH3_state_t st;
	int rc;

	if (lo == start && hi == end) {		/* all of it in BUF */
		*sum = XXH3_64bits(buf + (start - in), end - start);
		return 0;
	}
	XXH3_64bits_reset(&st);
	rc = hash_file_part(fd, start, lo, scratch, &st);
	if (!rc) {
		XXH3_64bits_update(&st, buf + (lo - in), hi - lo);
		rc = hash_file_part(fd, hi, end, scratch, &st);
	}
	*sum = XXH3_64bits_digest(&st);
	return rc;
}

/* Whether the file FD holds its first END bytes. */
static bool file_holds(int fd, uint64_t end)
{
	struct stat sb;

	return fstat(fd, &sb) == 0 && (uint64_t)sb.st_size >= end;
}

/* A store_seg_reader: reads LEN bytes at IN of G into BUF, then checks
 * each row they lie in, reading the rest of the rows at either end from
 * the file.  LEN, 0 for a file cut short (damage from outside, which the
 * caller says), or -errno; -EBADMSG when a row fails its hash, said in
 * *FOUND (ARG). */
static ssize_t read_checked(void *arg, struct store_tenant *t, struct seg *g,
			    int fd, char *buf, size_t len, uint64_t in)
{
	struct found *found = arg;
	struct seg_rows *r = atomic_load(&g->rows);
	char *scratch = NULL;
	size_t first, last;
	int rc;

	if (!r && (rc = rows_load(t, g, &r)))
		return rc;
	first = row_at(r, in);
	last = row_at(r, in + len - 1);
	if (!file_holds(fd, row_end(g, r, last)))
		return 0;
	rc = store_pread_all(fd, buf, len, in);
	for (size_t i = first; !rc && i <= last; i++) {
		uint64_t start = r->v[i].start, sum;

		rc = row_hash(fd, start, row_end(g, r, i), buf, in, len,
			      &scratch, &sum);
		if (!rc && sum != r->v[i].hash) {
			*found = (struct found){ .seg = g->id, .at = start };
			rc = -EBADMSG;
		}
	}
	free(scratch);
	return rc ? rc : (ssize_t)len;
}

/* Reads LEN bytes of S at OFF, checked. */
static ssize_t read_stream(struct store_tenant *t, struct stream *s, void *buf,
			   size_t len, uint64_t off, struct found *found)
{
	return store_seg_read_by(t, s, buf, len, off, read_checked, found);
}

/* ---- damaged segments ----
 * A segment whose bytes fail their batch hash on a read (read_checked) is
 * never served.  When the remote has it (sealed and uploaded, and
 * sync/ has set the fetch hook), its local copy is dropped as eviction
 * drops it and the read, retried, fetches a copy that store_segment_restore
 * checks whole: the read then returns the right bytes.  Otherwise the read
 * fails with -EIO, and so does every later read of those bytes.  Each case
 * is one line in the log and counts in store_get_counters(). */
struct damage {
	uint64_t seg, at;	/* the segment, and the row that failed in it */
	char *stream;		/* its stream's name, for the log */
	bool dropped;		/* its local copy went, to be fetched again */
};

static void damage_log(struct store_tenant *t, const struct damage *d,
		       int prio, const char *what)
{
	store_log(prio, "%s/%s: segment %016" PRIx64 " is damaged on disk (the batch"
		  " at byte %" PRIu64 " does not match its hash): %s", t->name,
		  d->stream ? d->stream : "?", d->seg, d->at, what);
}

/* After a read found damage (F): 0 when the local copy went (the retry
 * fetches it), else -EIO. */
static int damage_handle(struct store_tenant *t, struct damage *d,
			 const struct found *f)
{
	uint64_t seg = f->seg, at = f->at;
	bool again, fetch;
	char *name = NULL;
	int rc;

	again = d->dropped && d->seg == seg;	/* the fetched copy too */
	fetch = !again && store_seg_can_fetch(t->st);
	rc = store_seg_drop_damaged(t, seg, fetch, &name);
	if (rc == -EALREADY || rc == 1) {	/* known, and said, already */
		free(name);
		return rc == 1 ? 0 : -EIO;	/* 1: fetched by another read */
	}
	if (!again) {
		free(d->stream);
		*d = (struct damage){ .seg = seg, .at = at, .stream = name };
		atomic_fetch_add(&t->st->damaged, 1);
	} else {
		free(name);
	}
	if (!rc) {
		d->dropped = true;
		return 0;
	}
	damage_log(t, d, LOG_ERR, again ? "the copy fetched from the remote does not"
		   " match its batch hashes either: reads fail with EIO" :
		   "no good copy to fetch (not uploaded, or no remote):"
		   " reads fail with EIO");
	d->dropped = false;	/* said */
	return -EIO;
}

/* At the end of a read that dropped a damaged copy: says how it went. */
static void damage_done(struct store_tenant *t, struct damage *d, ssize_t n)
{
	if (d->dropped && n >= 0) {
		atomic_fetch_add(&t->st->healed, 1);
		damage_log(t, d, LOG_WARNING, "healed: the local copy was dropped and fetched"
			   " again from the remote");
	} else if (d->dropped) {
		char what[128];

		snprintf(what, sizeof(what), "the local copy was dropped; fetching"
			 " it again failed: %s", strerror((int)-n));
		damage_log(t, d, LOG_ERR, what);
	}
	free(d->stream);
}

/* Runs ONCE (with CTX) until it no longer stops at an evicted segment
 * (-ENODATA), fetching the segment it wanted in between (at most
 * FETCH_TRIES times each); a damaged segment the remote has is dropped and
 * fetched the same way.  ONCE takes and drops T's lock itself. */
typedef ssize_t (*once_fn)(struct store_tenant *t, void *ctx,
			   struct found *found);

static ssize_t with_fetch(struct store_tenant *t, once_fn once, void *ctx)
{
	struct fetch_tries tries = { 0 };
	struct damage d = { 0 };
	unsigned damaged = 0;
	ssize_t n;

	for (;;) {
		struct found found = { 0 };
		int rc;

		n = once(t, ctx, &found);
		store_seg_reached_tell(t);
		if (n != -EBADMSG && n != -ENODATA)
			break;
		if (n == -EBADMSG)
			rc = damaged++ == FETCH_TRIES ? -EIO :
				damage_handle(t, &d, &found);
		else
			rc = store_seg_fetch_wanted(t, &tries);
		if (rc) {
			n = rc;
			break;
		}
	}
	damage_done(t, &d, n);
	return n;
}

struct read_args {
	uint64_t id;
	void *buf;
	size_t len;
	uint64_t off;
};

static ssize_t read_once(struct store_tenant *t, void *ctx,
			 struct found *found)
{
	struct read_args *a = ctx;
	size_t len = a->len;
	struct stream *s;
	ssize_t n = 0;

	pthread_rwlock_rdlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, a->id);
	if (!s) {
		n = -ENOENT;
	} else if (a->off < s->size) {
		if (len > s->size - a->off)
			len = (size_t)(s->size - a->off);
		n = read_stream(t, s, a->buf, len, a->off, found);
	}
	pthread_rwlock_unlock(&t->lock);
	return n;
}

ssize_t store_read(struct store_tenant *t, uint64_t id, void *buf,
		   size_t len, uint64_t off)
{
	struct read_args a = { .id = id, .buf = buf, .len = len, .off = off };

	return with_fetch(t, read_once, &a);
}

/* Offset of the Nth event (0-based) of the batch at OFFSET, LENGTH bytes. */
static int offset_in_batch(struct store_tenant *t, struct stream *s,
			   uint64_t offset, uint64_t length, uint64_t nth,
			   uint64_t *out, struct found *found)
{
	char *buf = malloc(length ? length : 1);
	const char *p, *end;
	ssize_t n;
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	n = read_stream(t, s, buf, length, offset, found);
	if (n != (ssize_t)length) {
		rc = n < 0 ? (int)n : -EIO;
		goto out;
	}
	for (p = buf, end = buf + length; nth && p < end; nth--) {
		p = memchr(p, '\n', (size_t)(end - p));
		if (!p)
			break;
		p++;
	}
	if (nth || !p) {
		store_log(LOG_ERR, "%s/%s: batch at %llu holds fewer events than indexed",
			  t->name, s->name, (unsigned long long)offset);
		rc = -EIO;
		goto out;
	}
	*out = offset + (uint64_t)(p - buf);
out:
	free(buf);
	return rc;
}

static int version_offset(struct store_tenant *t, struct stream *s,
			  uint64_t version, uint64_t *off, struct found *found)
{
	struct sub_batch b;
	int rc;

	if (version <= 1) {
		*off = 0;
		return 0;
	}
	if (version > s->version) {
		*off = s->size;
		return 0;
	}
	rc = store_index_batch_find(t, s->id, version, &b);
	if (rc)
		return rc == -ENOENT ? -EIO : rc;
	if (b.first_version == version) {
		*off = b.offset;
		return 0;
	}
	return offset_in_batch(t, s, b.offset, b.length,
			       version - b.first_version, off, found);
}

struct lookup;
typedef int (*lookup_fn)(struct store_tenant *t, struct stream *s,
			 struct lookup *l);

struct lookup {
	uint64_t id;		/* the stream */
	lookup_fn fn;
	uint64_t n;		/* version or count */
	uint64_t *off;		/* OUT */
	struct found *found;	/* OUT: where a read found damage */
};

/* Runs l->fn on its stream under the tenant's lock, exclusively (the
 * index's statements are not shared). */
static ssize_t lookup_once(struct store_tenant *t, void *ctx,
			   struct found *found)
{
	struct lookup *l = ctx;
	struct stream *s;
	int rc;

	l->found = found;
	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, l->id);
	rc = s ? store_journal_flush(t) : -ENOENT;	/* rows to look up */
	if (!rc)
		rc = l->fn(t, s, l);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* The same, fetching evicted segments it needs. */
static int lookup(struct store_tenant *t, struct lookup *l)
{
	return (int)with_fetch(t, lookup_once, l);
}

static int of_version(struct store_tenant *t, struct stream *s,
		      struct lookup *l)
{
	return version_offset(t, s, l->n, l->off, l->found);
}

static int of_last(struct store_tenant *t, struct stream *s,
		   struct lookup *l)
{
	if (l->n >= s->version) {
		*l->off = 0;
		return 0;
	}
	return version_offset(t, s, s->version - l->n + 1, l->off, l->found);
}

int store_offset_of_version(struct store_tenant *t, uint64_t id,
			    uint64_t version, uint64_t *off)
{
	struct lookup l = {
		.id = id, .fn = of_version, .n = version, .off = off,
	};

	return lookup(t, &l);
}

int store_offset_of_last(struct store_tenant *t, uint64_t id, uint64_t n,
			 uint64_t *off)
{
	struct lookup l = { .id = id, .fn = of_last, .n = n, .off = off };

	return lookup(t, &l);
}

/* Commit times never decrease along a stream's versions (append clamps
 * them), so the first version at or after a time is a binary search over
 * versions, each probe one index lookup. */
int store_version_at_time(struct store_tenant *t, uint64_t id,
			  int64_t time_ns, uint64_t *version)
{
	uint64_t lo = 1, hi;
	struct sub_batch b;
	struct stream *s;
	int rc = 0;

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	rc = s ? store_journal_flush(t) : -ENOENT;
	if (rc) {
		pthread_rwlock_unlock(&t->lock);
		return rc;
	}
	hi = s->version + 1;
	while (lo < hi && !rc) {
		uint64_t mid = lo + (hi - lo) / 2;

		rc = store_index_batch_find(t, s->id, mid, &b);
		if (rc)
			break;
		if (b.time_ns >= time_ns) {
			hi = b.first_version;	/* all of this batch qualifies */
		} else {
			/* the whole batch is too early: skip past MID */
			lo = mid + 1;
		}
	}
	if (!rc)
		*version = lo;
	pthread_rwlock_unlock(&t->lock);
	return rc == -ENOENT ? -EIO : rc;
}

/* Whether a batch of S after version SINCE starts at OFF, among the rows
 * still pending in the journal (the newest): 1, 0, or -1 when OFF lies
 * before them all (the index has its rows).  *FIRST (OUT): the first
 * pending version of S, or S's next version if none is pending. */
static int pending_batch_at(const struct store_tenant *t,
			    const struct stream *s, uint64_t since,
			    uint64_t off, uint64_t *first)
{
	uint64_t lowest = s->size;

	*first = s->version + 1;
	for (size_t i = 0; i < t->npending; i++) {
		const struct store_batch *b = &t->pending[i].b;

		if (t->pending[i].stream != s->id)
			continue;
		if (b->offset == off)
			return b->first_version > since;
		if (b->offset < lowest) {
			lowest = b->offset;
			*first = b->first_version;
		}
	}
	return off < lowest ? -1 : 0;
}

/* Batch starts grow with versions: a binary search of the index over
 * versions SINCE + 1 to HI for a batch starting at OFF.  1, 0 or -errno. */
static int index_batch_at(struct store_tenant *t, const struct stream *s,
			  uint64_t since, uint64_t hi, uint64_t off)
{
	uint64_t lo = since + 1;
	struct sub_batch b;
	int rc;

	while (lo <= hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		rc = store_index_batch_find(t, s->id, mid, &b);
		if (rc)
			return rc == -ENOENT ? -EIO : rc;
		if (b.offset == off)	/* where version first - 1 ended */
			return b.first_version > since;
		if (b.offset < off)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return 0;
}

int store_stream_ended_at(struct store_tenant *t, uint64_t id, uint64_t since,
			  uint64_t off)
{
	struct stream *s;
	uint64_t first;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (since >= s->version || off > s->size)
		rc = 0;
	else if (off == s->size)
		rc = 1;
	else if ((rc = pending_batch_at(t, s, since, off, &first)) < 0)
		rc = index_batch_at(t, s, since, first - 1, off);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}
