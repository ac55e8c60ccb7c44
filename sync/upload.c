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
 * event index object, and only then marks the segment uploaded.  A
 * segment whose bytes went up but whose index did not is remembered
 * (s->data_up): its retry sends the index alone.  A PUT's
 * own success is the proof; no HEAD follows it.
 *
 * A failure holds back only its stream: its later segments do not start
 * this pass, the other streams' do (and their manifest goes out); the pass
 * then reports the failure and backs off.  sync_stop() ends transfers in
 * flight through s->abort.
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

/* One segment of a batch. */
struct upload_job {
	struct store_segment seg;	/* read-only once the batch is up */
	bool ran;		/* protected by s->lock */
	bool skipped;		/* protected by s->lock: its stream failed */
	int rc;			/* protected by s->lock */
	char what[160];		/* the failed step; the job's thread only */
	bool damaged;		/* the local copy failed its checksum; the
				 * job's thread only */
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

/* Whether KEY is in s->data_up (the segment's bytes went up, its event
 * index not yet); with ADD, puts it there, with DEL takes it out. */
static bool data_up(struct sync *s, const char *key, int change)
{
	bool found = false;

	sync_mutex_lock(&s->lock);
	for (size_t i = 0; !found && i < s->data_up.n; i++) {
		found = !strcmp(s->data_up.v[i], key);
		if (found && change < 0) {
			free(s->data_up.v[i]);
			s->data_up.v[i] = s->data_up.v[--s->data_up.n];
		}
	}
	if (!found && change > 0)
		(void)sync_strvec_push(&s->data_up, key); /* else: sent again */
	sync_mutex_unlock(&s->lock);
	return found;
}

/* PUTs SEG's bytes from the local file, checked first.  *DAMAGED (OUT)
 * tells a local copy that failed its checksum. */
static int put_data(struct backend *b, struct store_tenant *t,
		    const char *key, const struct store_segment *seg,
		    char *what, size_t wlen, bool *damaged)
{
	char *path = store_segment_path(t, seg->seg);
	bool want_sha = backend_caps(b) & BACKEND_CAP_SHA256;
	struct stat st;
	char sha256[65];
	int fd = -1, rc;

	if (!path)
		return -ENOMEM;
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
	snprintf(what, wlen, "put %s", key);
	rc = backend_put(b, key, &(struct backend_body){
		.fd = fd, .len = seg->length,
		.sha256 = want_sha ? sha256 : NULL });
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return rc;
}

/* PUTs segment SEG of T, then its event index object, through B.  When
 * only the index failed before, its bytes are not sent again.  *DAMAGED
 * (OUT) tells a local copy that failed its checksum. */
static int upload_segment(struct sync *s, struct backend *b,
			  struct store_tenant *t, const char *tprefix,
			  const struct store_segment *seg, char *what,
			  size_t wlen, bool *damaged)
{
	char *key = sync_segment_key(tprefix, seg->seg, seg->checksum, false);
	char *ikey = sync_segment_key(tprefix, seg->seg, seg->checksum, true);
	struct backend_buf idx = { 0 };
	int rc = key && ikey ? 0 : -ENOMEM;

	snprintf(what, wlen, "put %s", key ? key : "?");
	if (!rc && !data_up(s, key, 0)) {
		rc = put_data(b, t, key, seg, what, wlen, damaged);
		if (!rc)
			data_up(s, key, 1);
	}
	if (rc)
		goto out;
	/* The event index, after its segment.  A put that succeeded is the
	 * whole object (the server checked its length, and s3 its signed
	 * SHA-256): no HEAD to confirm it. */
	snprintf(what, wlen, "event index of segment %" PRIu64, seg->seg);
	idx.max = 256u << 20;
	rc = sync_index_encode(t, seg->seg, &idx);
	if (rc)
		goto out;
	snprintf(what, wlen, "put %s", ikey);
	rc = backend_put_buf(b, ikey, idx.data, idx.len);
	if (!rc)
		data_up(s, key, -1);
out:
	backend_buf_release(&idx);
	free(key);
	free(ikey);
	return rc;
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
		rc = upload_segment(s, *b, ub->t, ub->tprefix, &j->seg,
				    j->what, sizeof(j->what), &j->damaged);
	if (!rc) {
		snprintf(j->what, sizeof(j->what),
			 "mark segment %" PRIu64 " uploaded", j->seg.seg);
		rc = store_segment_mark_uploaded(ub->t, j->seg.seg);
	}
	/* A stream removed meanwhile: nothing to ship. */
	return rc == -ENOENT ? 0 : rc;
}

/* With s->lock: moves UB->next past the jobs skipped, and tells whether
 * one is left to start. */
static bool batch_has_work(struct sync *s, struct upload_batch *ub)
{
	SYNC_ASSERT_HELD(&s->lock);
	while (ub->next < ub->n && ub->v[ub->next].skipped)
		ub->next++;
	return ub->next < ub->n && !sync_stopping(s);
}

/* With s->lock: a job of STREAM failed, so the later segments of STREAM
 * cannot be published this pass; they wait (the other streams go on). */
static void skip_stream(struct upload_batch *ub, uint64_t stream)
{
	for (size_t i = ub->next; i < ub->n; i++)
		if (ub->v[i].seg.stream == stream)
			ub->v[i].skipped = true;
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

		ub->running++;
		sync_mutex_unlock(&s->lock);
		rc = upload_job(s, b, ub, j);
		sync_mutex_lock(&s->lock);
		j->ran = true;
		j->rc = rc;
		if (rc) {
			skip_stream(ub, j->seg.stream);
			if (!(rc == -ECANCELED && sync_stopping(s)))
				s->status.upload_failures[j->damaged ?
					SYNC_CAUSE_CHECKSUM :
					sync_cause_of(rc)]++;
		} else {
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

int sync_upload(struct sync *s, struct store_tenant *t, const char *tprefix,
		const struct sync_seg_vec *segs, uint64_t *done,
		uint64_t *done_bytes, int64_t *oldest_left, char *what,
		size_t wlen)
{
	struct upload_batch ub = { .t = t, .tprefix = tprefix, .n = segs->n };
	int rc = 0;

	*done = *done_bytes = 0;
	*oldest_left = 0;
	if (!segs->n)
		return 0;
	ub.v = calloc(segs->n, sizeof(*ub.v));
	if (!ub.v)
		return -ENOMEM;
	for (size_t i = 0; i < segs->n; i++)
		ub.v[i].seg = segs->v[i];
	sync_mutex_lock(&s->lock);
	s->ub = &ub;
	pthread_cond_broadcast(&s->upload_cond);
	run_jobs(s, &s->b, &ub);
	while (ub.running)
		sync_cond_wait(&s->upload_done, &s->lock);
	s->ub = NULL;
	sync_mutex_unlock(&s->lock);
	/* The first failure in segment order is the one reported. */
	for (size_t i = 0; i < ub.n; i++) {
		struct upload_job *j = &ub.v[i];

		int64_t c = j->seg.created_ns;

		if (j->ran && !j->rc) {
			(*done)++;
			*done_bytes += j->seg.length;
			continue;
		}
		if (c > 0 && (!*oldest_left || c < *oldest_left))
			*oldest_left = c;
		if (j->ran && !rc) {
			rc = j->rc;
			snprintf(what, wlen, "%s", j->what);
		}
	}
	if (!rc && *done < ub.n) {
		rc = -ECANCELED;	/* sync_stop() began */
		snprintf(what, wlen, "upload of %s", store_tenant_name(t));
	}
	free(ub.v);
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
