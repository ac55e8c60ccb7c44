/*
 * Reading: bytes at an offset (shared lock, never past the last commit),
 * the lookups behind views: version -> offset, time -> version, and
 * whether an offset was the stream's end since a version (a stale writer's
 * ESTALE).  An index row is a batch, so a version inside a lines batch is
 * found by counting newlines in the batch's bytes; raw batches hold one
 * event each.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store_int.h"

/* Runs ONCE (with CTX) until it no longer stops at an evicted segment
 * (-ENODATA), fetching the segment it wanted in between, at most
 * FETCH_TRIES times.  ONCE takes and drops T's lock itself. */
static ssize_t with_fetch(struct store_tenant *t,
			  ssize_t (*once)(struct store_tenant *t, void *ctx),
			  void *ctx)
{
	for (int tries = 0;; tries++) {
		ssize_t n = once(t, ctx);
		int rc;

		store_seg_reached_tell(t);
		if (n != -ENODATA)
			return n;
		if (tries == FETCH_TRIES)
			return -EIO;
		rc = store_seg_fetch_wanted(t);
		if (rc)
			return rc;
	}
}

struct read_args {
	uint64_t id;
	void *buf;
	size_t len;
	uint64_t off;
};

static ssize_t read_once(struct store_tenant *t, void *ctx)
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
		n = store_seg_read(t, s, a->buf, len, a->off);
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

/* Whether G's file (at FD) holds its first END bytes, as its row says. */
static bool file_holds(struct store_tenant *t, const struct seg *g, int fd,
		       uint64_t end)
{
	struct stat sb;

	if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size >= end)
		return true;
	store_log(LOG_ERR, "read of segment %016" PRIx64 " of %s: short file", g->id,
		  t->name);
	return false;
}

struct piece_args {
	uint64_t id;
	size_t len;
	uint64_t off;
	store_piece_fn fn;
	void *arg;
};

/* The bytes at OFF as one piece of one local segment file: FN runs on it
 * under the shared lock, so the file stays open and its bytes committed. */
static ssize_t piece_once(struct store_tenant *t, void *ctx)
{
	struct piece_args *a = ctx;
	size_t len = a->len;
	struct stream *s;
	struct seg *g;
	ssize_t n = 0;
	uint64_t in;
	int fd;

	pthread_rwlock_rdlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, a->id);
	if (!s) {
		n = -ENOENT;
		goto out;
	}
	if (a->off >= s->size)
		goto out;
	if (len > s->size - a->off)
		len = (size_t)(s->size - a->off);
	g = store_seg_at(s, a->off);
	in = a->off - (g ? g->offset : 0);
	if (!g || in >= g->length || len > g->length - in) {
		n = -EXDEV;
		goto out;
	}
	fd = store_seg_fd_read(t, g);
	if (fd < 0) {
		n = fd;
		goto out;
	}
	/* FN's reply could only come short (a hole the kernel fills with
	 * zeros), never fail, so a file shorter than its row is said here */
	n = file_holds(t, g, fd, in + len) ? a->fn(fd, in, len, a->arg) : -EIO;
	store_seg_fd_put(t, g);
out:
	pthread_rwlock_unlock(&t->lock);
	return n;
}

ssize_t store_read_piece(struct store_tenant *t, uint64_t id, size_t len,
			 uint64_t off, store_piece_fn fn, void *arg)
{
	struct piece_args a = {
		.id = id, .len = len, .off = off, .fn = fn, .arg = arg,
	};

	return with_fetch(t, piece_once, &a);
}

/* Offset of the Nth event (0-based) of the batch at OFFSET, LENGTH bytes. */
static int offset_in_batch(struct store_tenant *t, struct stream *s,
			   uint64_t offset, uint64_t length, uint64_t nth,
			   uint64_t *out)
{
	char *buf = malloc(length ? length : 1);
	const char *p, *end;
	ssize_t n;
	int rc = 0;

	if (!buf)
		return -ENOMEM;
	n = store_seg_read(t, s, buf, length, offset);
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
			  uint64_t version, uint64_t *off)
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
			       version - b.first_version, off);
}

struct lookup;
typedef int (*lookup_fn)(struct store_tenant *t, struct stream *s,
			 struct lookup *l);

struct lookup {
	uint64_t id;		/* the stream */
	lookup_fn fn;
	uint64_t n;		/* version or count */
	uint64_t *off;		/* OUT */
};

/* Runs l->fn on its stream under the tenant's lock, exclusively (the
 * index's statements are not shared). */
static ssize_t lookup_once(struct store_tenant *t, void *ctx)
{
	struct lookup *l = ctx;
	struct stream *s;
	int rc;

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
	return version_offset(t, s, l->n, l->off);
}

static int of_last(struct store_tenant *t, struct stream *s,
		   struct lookup *l)
{
	if (l->n >= s->version) {
		*l->off = 0;
		return 0;
	}
	return version_offset(t, s, s->version - l->n + 1, l->off);
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
