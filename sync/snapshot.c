/*
 * snapshot.c: snapshots on the remote (docs/FORMAT.md, "Snapshot objects").
 *
 * - Writer: sync_snapshots_upload() puts each snapshot not uploaded yet
 *   once the segment holding its version is uploaded (the stream's chain
 *   of uploaded segments reaches it), then marks it uploaded; the manifest
 *   built afterwards lists it (manifest.c).
 * - Replica: sync_replica_snapshots() makes a local stream's snapshot rows
 *   those of its manifest entry (added as not fetched, removed when the
 *   manifest no longer lists them).
 * - Lazy fetch: the store calls sync_snapshot_fetch_hook() from a reading
 *   (FUSE) thread, which queues a request and waits on s->fetch_done, as
 *   for segments (fetch.c); a fetch worker takes it with
 *   sync_snapshot_fetch_next(), GETs the object into a staging file a
 *   chunk at a time (store_snapshot_restore_begin()), and commits it,
 *   which checks its length and XXH3 before it is used; a failed attempt
 *   is retried after a doubling backoff, up to fetch_attempts.
 * - Eviction: blobs on the remote (uploaded or fetched) count in
 *   cache_size with segments, and go by least recent open (fetch.c,
 *   sync_evict()).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sync.h"
#include "sync_int.h"

/* ---- writer: upload ---- */

struct snap_vec {
	struct store_snapshot *v;
	size_t n, alloc;
};

static int snap_collect(void *arg, const struct store_snapshot *snap)
{
	struct snap_vec *sv = arg;

	if (STORE_ARRAY_RESERVE(sv->v, sv->alloc, sv->n + 1, 16))
		return -ENOMEM;
	sv->v[sv->n++] = *snap;
	return 0;
}

struct chain {
	uint64_t version;	/* the chain of uploaded segments ends there */
	bool broken;
};

static int chain_step(void *arg, const struct store_segment *seg)
{
	struct chain *c = arg;

	if (c->broken || (seg->state != STORE_SEG_UPLOADED &&
			  seg->state != STORE_SEG_EVICTED)) {
		c->broken = true;
		return 0;
	}
	c->version = seg->first_version + seg->count - 1;
	return 0;
}

/* The version up to which stream ID is on the remote (0: none). */
static int uploaded_version(struct store_tenant *t, uint64_t id, uint64_t *out)
{
	struct chain c = { 0 };
	int rc = store_stream_segments(t, id, chain_step, &c);

	*out = c.version;
	return rc;
}

int sync_snapshot_put(struct sync *s, struct store_tenant *t,
		      const char *tprefix, const struct store_snapshot *snap,
		      char *what, size_t wlen)
{
	char *path = store_snapshot_path(t, snap->stream, snap->version);
	char *key = sync_snapshot_key(tprefix, snap->version, snap->checksum);
	int fd = -1, rc = path && key ? 0 : -ENOMEM;

	snprintf(what, wlen, "put %s", key ? key : "?");
	if (!rc) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		rc = fd < 0 ? -errno : 0;
	}
	if (!rc)
		rc = backend_put(s->b, key, &(struct backend_body){
			.fd = fd, .len = snap->length });
	if (!rc)
		sync_lost_note_put(s, key, snap->length);
	if (fd >= 0)
		close(fd);
	free(path);
	free(key);
	return rc;
}

int sync_snapshots_upload(struct sync *s, struct store_tenant *t,
			  const char *tprefix, uint64_t *n, uint64_t *left,
			  char *what, size_t wlen)
{
	struct snap_vec sv = { 0 };
	uint64_t stream = 0, upto = 0;
	int rc = store_snapshot_list_state(t, STORE_SNAP_LOCAL, snap_collect, &sv);

	*n = 0;
	*left = 0;
	for (size_t i = 0; !rc && i < sv.n && !sync_stopping(s); i++) {
		const struct store_snapshot *snap = &sv.v[i];

		if (snap->stream != stream || i == 0) {
			stream = snap->stream;
			rc = uploaded_version(t, stream, &upto);
		}
		if (rc || snap->version > upto) {
			(*left)++;	/* with its segment, later */
			continue;
		}
		rc = sync_snapshot_put(s, t, tprefix, snap, what, wlen);
		if (!rc)
			rc = store_snapshot_mark_uploaded(t, snap->stream,
							  snap->version);
		if (!rc)
			(*n)++;
		else if (rc != -ENOENT)
			*left += sv.n - i;	/* this one and the rest */
		/* Removed meanwhile (stream or snapshot): nothing to ship. */
		if (rc == -ENOENT)
			rc = 0;
	}
	if (rc == -ENOENT)
		rc = 0;		/* the tenant went */
	free(sv.v);
	return rc;
}

/* ---- replica: the rows of a mirrored stream ---- */

static bool listed(const struct manifest_stream *r,
		   const struct store_snapshot *snap)
{
	for (size_t i = 0; i < r->nsnaps; i++)
		if (r->snaps[i].version == snap->version &&
		    r->snaps[i].checksum == snap->checksum)
			return true;
	return false;
}

static bool have(const struct snap_vec *sv, const struct manifest_snap *ms)
{
	for (size_t i = 0; i < sv->n; i++)
		if (sv->v[i].version == ms->version &&
		    sv->v[i].checksum == ms->checksum)
			return true;
	return false;
}

int sync_replica_snapshots(struct store_tenant *t, uint64_t lid,
			   const struct manifest_stream *r)
{
	struct snap_vec sv = { 0 };
	struct store_attr a;
	int rc = store_snapshot_list(t, lid, 0, snap_collect, &sv);

	if (!rc)
		rc = store_stream_stat(t, lid, &a);
	for (size_t i = 0; !rc && i < sv.n; i++)
		if (!listed(r, &sv.v[i])) {
			rc = store_snapshot_remove(t, lid, sv.v[i].version);
			if (rc == -ENOENT)
				rc = 0;
		}
	for (size_t i = 0; !rc && i < r->nsnaps; i++) {
		const struct manifest_snap *ms = &r->snaps[i];
		struct store_snapshot snap = {
			.stream = lid, .version = ms->version,
			.length = ms->length, .checksum = ms->checksum,
			.time_ns = ms->time_ns,
		};

		if (have(&sv, ms) || ms->version > a.version)
			continue;	/* here, or its events are not yet */
		rc = store_replica_snapshot_add(t, &snap);
		if (rc == -EEXIST)
			rc = 0;		/* another at that version, to go next pass */
	}
	free(sv.v);
	return rc;
}

/* ---- lazy fetch ---- */

/* A snapshot a reader waits for.  On s->sq; protected by s->lock. */
struct snap_req {
	struct snap_req *next;
	struct store_tenant *t;
	struct store_snapshot snap;
	unsigned refs;		/* the queue's and each waiter's */
	bool taken;		/* a worker fetches it */
	bool done;
	int rc;
};

static struct snap_req *req_find(struct sync *s, struct store_tenant *t,
				 const struct store_snapshot *snap)
{
	for (struct snap_req *r = s->sq; r; r = r->next)
		if (r->t == t && r->snap.stream == snap->stream &&
		    r->snap.version == snap->version && !r->done)
			return r;
	return NULL;
}

static struct snap_req *req_add(struct sync *s, struct store_tenant *t,
				const struct store_snapshot *snap)
{
	struct snap_req *r = calloc(1, sizeof(*r)), **tail;

	if (!r)
		return NULL;
	r->t = t;
	r->snap = *snap;
	r->refs = 1;
	for (tail = &s->sq; *tail; tail = &(*tail)->next)
		;
	*tail = r;
	pthread_cond_broadcast(&s->fetch_cond);
	return r;
}

/* With s->lock: drops a reference; the last one frees R (off the queue
 * by then: the queue's reference goes with it). */
static void req_unref(struct sync *s, struct snap_req *r)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (!--r->refs)
		free(r);
}

/* With s->lock: takes R, done, off the queue. */
static void req_dequeue(struct sync *s, struct snap_req *r)
{
	for (struct snap_req **p = &s->sq; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			req_unref(s, r);
			return;
		}
}

int sync_snapshot_fetch_hook(void *arg, struct store_tenant *t,
			     const struct store_snapshot *snap)
{
	struct sync *s = arg;
	struct snap_req *r;
	int rc = -EIO;		/* stopping: nothing will fetch it */

	sync_mutex_lock(&s->lock);
	if (s->stop)
		goto out;
	s->hook_waiters++;
	r = req_find(s, t, snap);
	if (!r)
		r = req_add(s, t, snap);
	if (r) {
		r->refs++;
		while (!r->done && !s->stop)
			sync_cond_wait(&s->fetch_done, &s->lock);
		rc = r->done ? r->rc : -EIO;
		req_unref(s, r);
	} else {
		rc = -ENOMEM;
	}
	if (--s->hook_waiters == 0 && s->stop)
		pthread_cond_broadcast(&s->fetch_done);
out:
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* The bytes of a snapshot GET go to the staging file as they come, this
 * many at a time: memory stays small whatever the blob's size. */
#define SNAP_FETCH_CHUNK (1u << 20)

/* Passes a chunk of the GET on to the staging file (the sink's put()). */
static int put_chunk(void *arg, struct backend_buf *buf)
{
	struct store_snap_writer *w = arg;
	ssize_t n = store_snapshot_write(w, buf->data, buf->len,
					 store_snapshot_written(w));

	return n < 0 ? (int)n : 0;
}

/* One attempt: GETs KEY into a staging file and restores R's blob from it
 * (checked against its length and checksum). */
static int fetch_once(struct backend *b, struct snap_req *r, const char *key)
{
	struct store_snap_writer *w;
	struct backend_sink sink = { .put = put_chunk, .chunk = SNAP_FETCH_CHUNK };
	struct backend_buf buf = { .max = (size_t)r->snap.length + 1,
				   .sink = &sink };
	int rc = store_snapshot_restore_begin(r->t, r->snap.stream,
					      r->snap.version, &w);

	if (rc)
		return rc;
	sink.arg = w;
	rc = backend_get(b, key, 0, BACKEND_TO_END, &buf);
	if (!rc && buf.len)	/* the last part, or all when the sink was dropped */
		rc = put_chunk(w, &buf);
	if (rc == -EFBIG)
		rc = -EIO;	/* longer than its row says */
	backend_buf_release(&buf);
	if (rc) {
		store_snapshot_abort(w);
		return rc;
	}
	return store_snapshot_restore_commit(w);
}

/* Waits BACKOFF_NS before the next attempt, or less if the sync stops. */
static void backoff_wait(struct sync *s, int64_t backoff_ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + backoff_ns;
	struct timespec ts = { .tv_sec = deadline / 1000000000,
			       .tv_nsec = deadline % 1000000000 };

	sync_mutex_lock(&s->lock);
	while (!s->stop && sync_clock(CLOCK_MONOTONIC) < deadline)
		sync_cond_timedwait(&s->fetch_done, &s->lock, &ts);
	sync_mutex_unlock(&s->lock);
}

/* GETs R's object and restores it, with up to fetch_attempts attempts
 * spaced by a doubling backoff as for segments (fetch.c).  No lock held. */
static int fetch_one(struct sync_worker *f, struct snap_req *r)
{
	struct sync *s = f->s;
	unsigned attempts = s->cfg.fetch_attempts ? s->cfg.fetch_attempts : 1;
	int64_t backoff = s->cfg.backoff_min_ns;
	char *tprefix = sync_tenant_prefix(store_tenant_name(r->t));
	char *key = tprefix ? sync_snapshot_key(tprefix, r->snap.version,
						r->snap.checksum) : NULL;
	int rc = key ? 0 : -ENOMEM;

	if (!rc && !f->b)
		rc = backend_open_url(s->cfg.url, &s->cfg.opts, &f->b);
	for (unsigned i = 1; !rc; i++) {
		rc = fetch_once(f->b, r, key);
		if (!rc || rc == -ENOENT || rc == -ENOSPC || i >= attempts ||
		    sync_stopping(s))
			break;
		sync_log(LOG_WARNING, "fetch of snapshot %s failed (try %u of %u): %s",
			 key, i, attempts, strerror(-rc));
		backoff_wait(s, backoff);
		backoff = backoff * 2 > s->cfg.backoff_max_ns ?
			s->cfg.backoff_max_ns : backoff * 2;
		rc = 0;
	}
	if (rc)
		sync_log(LOG_WARNING, "fetch of snapshot %s failed: %s", key ? key : "?",
			 strerror(-rc));
	free(key);
	free(tprefix);
	return rc ? -EIO : 0;
}

bool sync_snapshot_fetch_next(struct sync_worker *f)
{
	struct sync *s = f->s;
	struct snap_req *r;

	SYNC_ASSERT_HELD(&s->lock);
	for (r = s->sq; r && (r->taken || r->done); r = r->next)
		;
	if (!r)
		return false;
	/* The queue's reference keeps R until the worker dequeues it. */
	r->taken = true;
	sync_mutex_unlock(&s->lock);
	int rc = fetch_one(f, r);
	sync_mutex_lock(&s->lock);
	if (!r->done) {
		r->done = true;
		r->rc = rc;
	}
	pthread_cond_broadcast(&s->fetch_done);
	req_dequeue(s, r);
	return true;
}

void sync_snapshot_fetch_stop(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (struct snap_req *r = s->sq; r; r = r->next)
		if (!r->done) {
			r->done = true;
			r->rc = -EIO;
		}
}

void sync_snapshot_fetch_release(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	while (s->sq)
		req_dequeue(s, s->sq);
}
