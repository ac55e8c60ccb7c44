/*
 * upload.c: sealed segments to the remote, several at once.
 *
 * A writer pass hands the sealed segments of one tenant to sync_upload().
 * They go up on the calling (sync) thread and on cfg.upload_parallel - 1
 * long-lived helper threads, each with a backend (so a CURL handle) of its
 * own, and sync_upload() returns once none is in flight: the pass publishes
 * the manifest only after that (docs/FORMAT.md, "Order of writes").
 *
 * One upload reads the local file once (its XXH3 against the store's
 * checksum, and the SHA-256 an s3 PUT signs), PUTs the segment, then its
 * event index object, and only then marks the segment uploaded.  A PUT's
 * own success is the proof; no HEAD follows it.
 *
 * A failure holds back only its segment (and so its stream's manifest
 * entry, retry.c): it is recorded in s->retries, with whether the
 * segment's bytes went up already, so that its retry sends only the event
 * index when that was what failed.  The other segments go on, unless
 * UPLOAD_DOWN_FAILS of them failed before any went up: then the remote
 * looks down, no further segment starts, and the pass backs off as a
 * whole.  sync_stop() ends transfers in flight through s->abort.
 *
 * Locking: the batch's bookkeeping and s->ub are protected by s->lock (a
 * leaf), dropped around every upload.  The helper threads are a
 * struct sync_pool (sync.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

/* Failures before any success that stop a batch: the remote looks down. */
#define UPLOAD_DOWN_FAILS 3

/* One segment of a batch. */
struct upload_job {
	struct store_segment seg;	/* read-only once the batch is up */
	char *key;		/* the segment's remote key; read-only */
	bool ran;		/* protected by s->lock */
	int rc;			/* protected by s->lock */
	/* The job's thread's while it runs, then sync_upload()'s: */
	char what[160];		/* the failed step */
	bool damaged;		/* the local copy failed its checksum */
	bool body_done;		/* the segment's bytes are up (before the
				 * job too: only its index is left) */
	bool waits;		/* for its retry time: not run; read-only */
};

/* The sealed segments of one tenant that a pass uploads; on the stack of
 * sync_upload(), which returns only once `running` is back at 0.  t,
 * tprefix, v and n are set before s->ub points to it, and read-only
 * after. */
struct upload_batch {
	struct store_tenant *t;
	const char *tprefix;
	struct upload_job *v;
	size_t n;
	size_t next;		/* protected by s->lock: next job to start */
	unsigned running;	/* protected by s->lock: jobs in flight */
	unsigned ok, failed;	/* protected by s->lock: jobs ended so */
};

/* What hash_local() feeds each chunk of the file to. */
struct local_hashes {
	XXH3_state_t *xxh;
	EVP_MD_CTX *sha256;	/* NULL when not wanted */
};

static int hash_chunk(void *arg, const void *p, size_t n)
{
	struct local_hashes *h = arg;

	XXH3_64bits_update(h->xxh, p, n);
	if (h->sha256 && !EVP_DigestUpdate(h->sha256, p, n))
		return -EIO;
	return 0;
}

/* One pass over the sealed segment in FD before it leaves: checks that the
 * file still holds the sealed bytes (XXH3 against the store's checksum,
 * -EIO otherwise) and, when SHA256 is not NULL, computes their SHA-256 as
 * hex (65 bytes) for a backend that signs the payload. */
static int hash_local(int fd, const struct store_segment *seg, char *sha256)
{
	struct local_hashes h = {
		.xxh = XXH3_createState(),
		.sha256 = sha256 ? EVP_MD_CTX_new() : NULL,
	};
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	int rc = 0;

	if (!h.xxh || (sha256 && !h.sha256)) {
		rc = -ENOMEM;
		goto out;
	}
	XXH3_64bits_reset(h.xxh);
	if (h.sha256 && !EVP_DigestInit_ex(h.sha256, EVP_sha256(), NULL))
		rc = -EIO;
	if (!rc)
		rc = store_file_chunks(fd, seg->length, hash_chunk, &h);
	if (!rc && XXH3_64bits_digest(h.xxh) != seg->checksum)
		rc = -EIO;
	if (!rc && h.sha256 &&
	    (!EVP_DigestFinal_ex(h.sha256, dig, &dlen) || dlen != 32))
		rc = -EIO;
	for (unsigned i = 0; !rc && h.sha256 && i < dlen; i++)
		snprintf(sha256 + 2 * i, 3, "%02x", dig[i]);
out:
	EVP_MD_CTX_free(h.sha256);
	XXH3_freeState(h.xxh);
	return rc;
}

/* PUTs the bytes of segment SEG of T as KEY through B. *DAMAGED (OUT)
 * tells a local copy that failed its checksum. */
static int put_segment(struct backend *b, struct store_tenant *t,
		       const struct store_segment *seg, const char *key,
		       char *what, size_t wlen, bool *damaged)
{
	char *path = store_segment_path(t, seg->seg);
	struct stat st;
	char sha256[65];
	bool want_sha = backend_caps(b) & BACKEND_CAP_SHA256;
	int fd = -1, rc;

	snprintf(what, wlen, "put %s", key);
	if (!path) {
		rc = -ENOMEM;
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(what, wlen, "read local segment %s", path);
		goto out;
	}
	rc = (uint64_t)st.st_size < seg->length ? -EIO :
	     hash_local(fd, seg, want_sha ? sha256 : NULL);
	if (rc) {
		snprintf(what, wlen, "checksum of local segment %s", path);
		*damaged = rc == -EIO;
		goto out;
	}
	rc = backend_put(b, key, &(struct backend_body){
		.fd = fd, .len = seg->length,
		.sha256 = want_sha ? sha256 : NULL });
	if (rc)
		sync_what_why(what, wlen, b);
	/* No such place on the remote: not a stream removed here. */
	if (rc == -ENOENT)
		rc = -EIO;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

static int ids_collect(void *arg, uint64_t hash, uint64_t offset,
		       const char *id, size_t len)
{
	return sync_ids_add(arg, hash, offset, id, len);
}

/* PUTs the event-ID table object of segment SEG of T (below TPREFIX),
 * made from the IDs in its local file, through B. */
static int put_ids(struct backend *b, struct store_tenant *t,
		   const char *tprefix, const struct store_segment *seg,
		   char *what, size_t wlen)
{
	char *key = sync_ids_key(tprefix, seg->seg, seg->checksum);
	char *path = store_segment_path(t, seg->seg);
	struct ids_object o = { .seg = seg->seg };
	struct backend_buf out = { .max = 1u << 30 };
	int fd = -1, rc = key && path ? 0 : -ENOMEM;

	if (!rc) {
		snprintf(what, wlen, "event IDs of segment %" PRIu64, seg->seg);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		rc = fd < 0 ? -errno : 0;
	}
	if (!rc)
		rc = store_segment_ids(t, seg, fd, ids_collect, &o, &o.field);
	if (!rc)
		rc = sync_ids_encode(&o, &out);
	if (!rc) {
		snprintf(what, wlen, "put %s", key);
		rc = backend_put_buf(b, key, out.data, out.len);
		if (rc)
			sync_what_why(what, wlen, b);
		if (rc == -ENOENT)
			rc = -EIO;	/* as in put_segment() */
	}
	if (fd >= 0)
		close(fd);
	backend_buf_release(&out);
	sync_ids_release(&o);
	free(path);
	free(key);
	return rc;
}

/* PUTs segment SEG of T (remote key KEY, below TPREFIX), unless
 * *BODY_DONE says its bytes are up already, then its event index object,
 * through B.  *BODY_DONE (OUT too) and *DAMAGED (OUT) as in struct
 * upload_job. */
static int upload_segment(struct backend *b, struct store_tenant *t,
			  const char *tprefix, const struct store_segment *seg,
			  const char *key, bool *body_done, char *what,
			  size_t wlen, bool *damaged)
{
	char *ikey = sync_segment_key(tprefix, seg->seg, seg->checksum, true);
	struct backend_buf idx = { .max = 256u << 20 };
	int rc = 0;

	if (!ikey)
		return -ENOMEM;
	if (!*body_done) {
		rc = put_segment(b, t, seg, key, what, wlen, damaged);
		*body_done = !rc;
	}
	/* The event index, after its segment.  A put that succeeded is the
	 * whole object (the server checked its length, and s3 its signed
	 * SHA-256): no HEAD to confirm it. */
	if (!rc) {
		snprintf(what, wlen, "event index of segment %" PRIu64,
			 seg->seg);
		rc = sync_index_encode(t, seg->seg, &idx);
	}
	if (!rc) {
		snprintf(what, wlen, "put %s", ikey);
		rc = backend_put_buf(b, ikey, idx.data, idx.len);
		if (rc)
			sync_what_why(what, wlen, b);
		if (rc == -ENOENT)
			rc = -EIO;	/* as in put_segment() */
	}
	/* Its event IDs, when it has some: a writer that continues this
	 * history deduplicates without fetching the segment. */
	if (!rc && seg->has_ids)
		rc = put_ids(b, t, tprefix, seg, what, wlen);
	backend_buf_release(&idx);
	free(ikey);
	return rc;
}

/* J's segment and its event index are up: lost.c counts them as on the
 * remote. */
static void note_puts(struct sync *s, const struct upload_batch *ub,
		      const struct upload_job *j)
{
	char *ikey = sync_segment_key(ub->tprefix, j->seg.seg, j->seg.checksum,
				      true);

	sync_lost_note_put(s, j->key, j->seg.length);
	if (ikey)	/* else unconfirmed: the tenant is listed again */
		sync_lost_note_put(s, ikey, SYNC_SIZE_UNKNOWN);
	free(ikey);
}

/* Uploads J's segment through *B (opened here on first use) and marks it
 * uploaded. */
static int upload_job(struct sync *s, struct backend **b,
		      const struct upload_batch *ub, struct upload_job *j)
{
	int rc = 0;

	if (!*b) {
		snprintf(j->what, sizeof(j->what), "open the remote");
		rc = backend_open_url(s->cfg.url, &s->cfg.opts, b);
	}
	if (!rc)
		rc = upload_segment(*b, ub->t, ub->tprefix, &j->seg, j->key,
				    &j->body_done, j->what, sizeof(j->what),
				    &j->damaged);
	if (!rc)
		note_puts(s, ub, j);
	if (!rc) {
		snprintf(j->what, sizeof(j->what),
			 "mark segment %" PRIu64 " uploaded", j->seg.seg);
		rc = store_segment_mark_uploaded(ub->t, j->seg.seg);
	}
	/* A stream removed meanwhile: nothing to ship. */
	return rc == -ENOENT ? 0 : rc;
}

/* Whether UB's failures, none of them redeemed by a success, say that
 * the remote is down.  With s->lock. */
static bool batch_down(struct sync *s, const struct upload_batch *ub)
{
	SYNC_ASSERT_HELD(&s->lock);
	return !ub->ok && ub->failed >= UPLOAD_DOWN_FAILS;
}

/* With s->lock. */
static bool batch_has_work(struct sync *s, const struct upload_batch *ub)
{
	SYNC_ASSERT_HELD(&s->lock);
	return ub->next < ub->n && !batch_down(s, ub) && !sync_stopping(s);
}

/* On the sync thread, with s->lock, between two of its uploads: leases
 * due are renewed (a long batch must not let them lapse).  Failures are
 * left to the next pass, which renews first. */
static void renew_between(struct sync *s)
{
	char what[160];

	sync_mutex_unlock(&s->lock);
	(void)sync_leases_renew_due(s, what, sizeof(what));
	sync_mutex_lock(&s->lock);
}

/* Starts jobs of UB one after the other until none is left to start.
 * Called and returns with s->lock held; drops it around each upload. */
static void run_jobs(struct sync *s, struct backend **b,
		     struct upload_batch *ub)
{
	SYNC_ASSERT_HELD(&s->lock);
	while (batch_has_work(s, ub)) {
		struct upload_job *j = &ub->v[ub->next++];
		int rc;

		if (j->waits)
			continue;
		ub->running++;
		sync_mutex_unlock(&s->lock);
		rc = upload_job(s, b, ub, j);
		sync_mutex_lock(&s->lock);
		j->ran = true;
		j->rc = rc;
		if (rc) {
			ub->failed++;
			if (!(rc == -ECANCELED && sync_stopping(s)))
				s->status.upload_failures[j->damaged ?
					SYNC_CAUSE_CHECKSUM :
					sync_cause_of(rc)]++;
		} else {
			ub->ok++;
			s->status.uploaded_segments++;
			s->status.uploaded_bytes += j->seg.length;
		}
		if (--ub->running == 0)
			pthread_cond_broadcast(&s->upload_done);
		if (b == &s->b)
			renew_between(s);
	}
}

static void *uploader_main(void *arg)
{
	struct sync_worker *u = arg;
	struct sync *s = u->s;

	sync_mutex_lock(&s->lock);
	while (!s->stop) {
		if (s->ub && batch_has_work(s, s->ub))
			run_jobs(s, &u->b, s->ub);
		else
			sync_cond_wait(&s->upload_cond, &s->lock);
	}
	sync_mutex_unlock(&s->lock);
	return NULL;
}

/* Fills UB with a job for each of SEGS, their keys below TPREFIX: those
 * that wait for their retry time (unless RETRY_ALL) marked so, and those
 * whose bytes went up before marked body_done. */
static int batch_fill(struct sync *s, struct upload_batch *ub,
		      const char *tprefix, const struct sync_seg_vec *segs,
		      bool retry_all)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);

	ub->v = calloc(segs->n, sizeof(*ub->v));
	if (!ub->v)
		return -ENOMEM;
	for (size_t i = 0; i < segs->n; i++) {
		struct upload_job *j = &ub->v[ub->n++];
		const struct sync_retry *e;

		j->seg = segs->v[i];
		j->key = sync_segment_key(tprefix, j->seg.seg, j->seg.checksum,
					  false);
		if (!j->key)
			return -ENOMEM;
		e = sync_retry_get(&s->retries, j->key);
		j->body_done = e && e->body_done;
		j->waits = !retry_all && !sync_retry_due(e, now);
	}
	return 0;
}

static void batch_release(struct upload_batch *ub)
{
	for (size_t i = 0; i < ub->n; i++)
		free(ub->v[i].key);
	free(ub->v);
}

/* Notes in OUT the creation of a segment not done. */
static void note_left(struct sync_upload_out *out, const struct upload_job *j)
{
	int64_t c = j->seg.created_ns;

	if (c > 0 && (!out->oldest_left_ns || c < out->oldest_left_ns))
		out->oldest_left_ns = c;
}

/* After the batch, on the sync thread: the outcome of each job into OUT
 * and s->retries.  Returns the first failure in segment order (a job that
 * waited counts with its last one), described in WHAT. */
static int batch_settle(struct sync *s, struct upload_batch *ub,
			struct sync_upload_out *out, char *what, size_t wlen)
{
	int rc = 0;

	for (size_t i = 0; i < ub->n; i++) {
		struct upload_job *j = &ub->v[i];
		struct sync_retry *e = NULL;

		if (j->ran && !j->rc) {
			out->done++;
			out->done_bytes += j->seg.length;
			sync_retry_done(&s->retries, j->key);
			continue;
		}
		note_left(out, j);
		if (j->waits)
			e = sync_retry_get(&s->retries, j->key);
		else if (j->ran && !(j->rc == -ECANCELED && sync_stopping(s)))
			e = sync_retry_failed(s, &s->retries, j->key, j->rc,
					      j->what);
		if (e && j->ran)
			e->body_done = j->body_done;
		if (rc || (!j->ran && !e))
			continue;
		rc = e ? e->rc : j->rc;
		snprintf(what, wlen, "%s", e ? e->what : j->what);
	}
	return rc;
}

int sync_upload(struct sync *s, struct store_tenant *t, const char *tprefix,
		const struct sync_seg_vec *segs, bool retry_all,
		struct sync_upload_out *out, char *what, size_t wlen)
{
	struct upload_batch ub = { .t = t, .tprefix = tprefix };
	int rc;

	*out = (struct sync_upload_out){ 0 };
	if (!segs->n)
		return 0;
	rc = batch_fill(s, &ub, tprefix, segs, retry_all);
	if (rc) {
		batch_release(&ub);
		return rc;
	}
	sync_mutex_lock(&s->lock);
	s->ub = &ub;
	pthread_cond_broadcast(&s->upload_cond);
	run_jobs(s, &s->b, &ub);
	while (ub.running)
		sync_cond_wait(&s->upload_done, &s->lock);
	s->ub = NULL;
	out->down = batch_down(s, &ub);
	sync_mutex_unlock(&s->lock);
	rc = batch_settle(s, &ub, out, what, wlen);
	if (!rc && out->done < ub.n) {
		rc = -ECANCELED;	/* sync_stop() began */
		snprintf(what, wlen, "upload of %s", store_tenant_name(t));
	}
	batch_release(&ub);
	return rc;
}

int sync_upload_start(struct sync *s)
{
	unsigned n = s->cfg.upload_parallel - 1;
	int rc;

	if (!n)
		return 0;
	rc = sync_pool_start(s, &s->uploaders, n, uploader_main);
	if (rc)
		sync_upload_stop(s);
	return rc;
}

void sync_upload_stop(struct sync *s)
{
	sync_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->upload_cond);
	sync_mutex_unlock(&s->lock);
	sync_pool_join(&s->uploaders);
}
