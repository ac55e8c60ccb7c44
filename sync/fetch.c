/*
 * fetch.c: lazy fetch of evicted segments, and eviction under cache_size.
 *
 * The store calls sync_fetch_hook() from a reading (FUSE) thread.  That
 * thread never touches libcurl: it queues a request (or joins one already
 * queued for the same segment) and waits on s->fetch_done in a loop.  A
 * fetcher thread downloads the whole object with ranged GETs, several in
 * parallel for large segments (one backend, so one CURL handle, per range
 * worker), into a temporary file beside the segment, and hands it to
 * store_segment_restore(), which checks length and XXH3 before renaming it
 * into place.  Wrong bytes therefore never reach a reader; after
 * cfg.fetch_attempts tries (with backoff) the read gets -EIO.
 *
 * Lock order: s->evict_lock, then s->lock (a leaf); see sync_int.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sync.h"
#include "sync_int.h"

int sync_fetch_hook(void *arg, struct store_tenant *t,
		    const struct store_segment *seg)
{
	struct sync *s = arg;
	struct fetch_req *r;
	int rc;

	pthread_mutex_lock(&s->lock);
	if (s->stop) {
		/* Stopping: nothing will fetch it. */
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	s->hook_waiters++;
	for (r = s->fq; r; r = r->next)
		if (r->t == t && r->seg.seg == seg->seg && !r->done)
			break;
	if (!r) {
		struct fetch_req **tail = &s->fq;

		r = calloc(1, sizeof(*r));
		if (!r) {
			rc = -ENOMEM;
			goto out;
		}
		r->t = t;
		r->seg = *seg;
		r->refs = 1;	/* the queue's */
		while (*tail)
			tail = &(*tail)->next;
		*tail = r;
		pthread_cond_signal(&s->fetch_cond);
	}
	r->refs++;
	while (!r->done && !s->stop)
		pthread_cond_wait(&s->fetch_done, &s->lock);
	rc = r->done ? r->rc : -EIO;
	if (--r->refs == 0)
		free(r);
out:
	/* sync_fetch_stop() waits for the last waiter to leave before it
	 * frees anything. */
	if (--s->hook_waiters == 0 && s->stop)
		pthread_cond_broadcast(&s->fetch_done);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* ---- downloading ---- */

struct fetcher {
	struct sync *s;
	struct backend **b;	/* cfg.fetch_parallel backends, opened lazily */
	pthread_t thread;
};

struct range_job {
	struct sync *s;
	struct backend *b;
	const char *key;
	int fd;
	uint64_t length, range;
	atomic_uint_fast64_t *next;	/* next range index to take */
	int rc;
};

static int get_range(struct backend *b, const char *key, int fd,
		     uint64_t off, uint64_t len)
{
	struct backend_buf buf = { .max = (size_t)len + 1 };
	int rc = backend_get(b, key, off, len, &buf);

	if (!rc && buf.len != len)
		rc = -EIO;	/* short: the object is not what the manifest says */
	for (size_t done = 0; !rc && done < buf.len;) {
		ssize_t n = pwrite(fd, buf.data + done, buf.len - done,
				   (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = -errno;
		else
			done += (size_t)n;
	}
	backend_buf_release(&buf);
	return rc;
}

static void *range_worker(void *arg)
{
	struct range_job *j = arg;
	uint64_t n = (j->length + j->range - 1) / j->range;

	for (;;) {
		uint64_t i = atomic_fetch_add(j->next, 1);
		uint64_t off = i * j->range;

		if (i >= n || j->rc)
			break;
		j->rc = get_range(j->b, j->key, j->fd, off,
				  j->length - off < j->range ?
				  j->length - off : j->range);
	}
	return NULL;
}

static int download(struct fetcher *f, const char *key, int fd, uint64_t length)
{
	struct sync *s = f->s;
	uint64_t range = s->cfg.fetch_range;
	unsigned workers = s->cfg.fetch_parallel, started = 0;
	struct range_job jobs[16];
	pthread_t th[16];
	atomic_uint_fast64_t next = 0;
	int rc = 0;

	if (length == 0)
		return 0;
	if (workers > 16)
		workers = 16;
	if ((length + range - 1) / range < workers)
		workers = (unsigned)((length + range - 1) / range);
	for (unsigned i = 0; i < workers; i++) {
		if (!f->b[i]) {
			rc = backend_open_url(s->cfg.url, &s->cfg.opts, &f->b[i]);
			if (rc)
				return rc;
		}
		jobs[i] = (struct range_job){ .s = s, .b = f->b[i], .key = key,
					      .fd = fd, .length = length,
					      .range = range, .next = &next };
	}
	/* Worker 0 runs here; the others in threads of their own. */
	for (unsigned i = 1; i < workers; i++) {
		if (pthread_create(&th[i], NULL, range_worker, &jobs[i]))
			break;
		started = i;
	}
	range_worker(&jobs[0]);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < workers && !rc; i++)
		rc = jobs[i].rc;
	return rc;
}

/* Sleeps NS unless the sync stops. */
static void nap(struct sync *s, int64_t ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + ns;

	pthread_mutex_lock(&s->lock);
	while (!s->stop && sync_clock(CLOCK_MONOTONIC) < deadline) {
		struct timespec ts = { .tv_sec = deadline / 1000000000,
				       .tv_nsec = deadline % 1000000000 };

		pthread_cond_timedwait(&s->fetch_cond, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
}

#define READAHEAD 2	/* segments fetched ahead of a demanded one */

/* Queues background fetches of the READAHEAD evicted segments that follow
 * R's in its stream, when the cache has room for them: a reader that
 * needed this one will most likely read on. */
static void read_ahead(struct sync *s, const struct fetch_req *r)
{
	struct seg_vec sv = { 0 };
	unsigned queued = 0;

	if (store_stream_segments(r->t, r->seg.stream, seg_collect, &sv))
		goto out;
	for (size_t i = 0; i < sv.n && queued < READAHEAD; i++) {
		const struct store_segment *g = &sv.v[i];
		struct fetch_req *q, **tail;

		if (g->offset <= r->seg.offset)
			continue;
		if (g->state != STORE_SEG_EVICTED)
			continue;
		if (s->cfg.cache_size &&
		    (READAHEAD + 2) * g->length > s->cfg.cache_size)
			break;
		pthread_mutex_lock(&s->lock);
		for (q = s->fq; q; q = q->next)
			if (q->t == r->t && q->seg.seg == g->seg)
				break;
		if (!q && !s->stop && (q = calloc(1, sizeof(*q)))) {
			q->t = r->t;
			q->seg = *g;
			q->refs = 1;
			q->prefetch = true;
			for (tail = &s->fq; *tail; tail = &(*tail)->next)
				;
			*tail = q;
			pthread_cond_signal(&s->fetch_cond);
		}
		pthread_mutex_unlock(&s->lock);
		queued++;
	}
out:
	free(sv.v);
}

static int fetch_one(struct fetcher *f, struct fetch_req *r)
{
	struct sync *s = f->s;
	const struct store_segment *seg = &r->seg;
	char *tp = sync_tenant_prefix(store_tenant_name(r->t));
	char *key = NULL, *path = store_segment_path(r->t, seg->seg);
	char *tmp = NULL;
	int rc = -ENOMEM;
	int64_t backoff = s->cfg.backoff_min_ns;

	if (!tp || !path)
		goto out;
	key = sync_segment_key(tp, seg->origin ? seg->origin : seg->seg,
			       seg->checksum, false);
	if (!key || asprintf(&tmp, "%s.fetch-%p", path, (void *)f) < 0) {
		tmp = NULL;
		goto out;
	}
	for (unsigned attempt = 0; attempt < s->cfg.fetch_attempts; attempt++) {
		int fd;

		if (attempt) {
			nap(s, backoff);
			backoff *= 2;
			if (backoff > s->cfg.backoff_max_ns)
				backoff = s->cfg.backoff_max_ns;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		rc = download(f, key, fd, seg->length);
		close(fd);
		if (!rc)
			rc = store_segment_restore(r->t, seg->seg, tmp);
		unlink(tmp);	/* gone already when restored */
		if (!rc || rc == -ENOENT || rc == -ENOSPC)
			break;
		sync_log("fetch of %s failed (try %u of %u): %s", key,
			 attempt + 1, s->cfg.fetch_attempts, strerror(-rc));
	}
	if (rc && rc != -ENOSPC) {
		sync_log("fetch of %s failed for good%s", key, r->prefetch ?
			 " (readahead)" : ": reads of it give EIO");
		rc = -EIO;
	}
out:
	pthread_mutex_lock(&s->lock);
	if (rc)
		s->status.fetch_failures++;
	else
		s->status.fetched_segments++;
	pthread_mutex_unlock(&s->lock);
	if (!rc)
		sync_evict(s, r->t, seg->seg);
	if (!rc && !r->prefetch)
		read_ahead(s, r);
	free(tp);
	free(key);
	free(path);
	free(tmp);
	return rc;
}

static void *fetcher_main(void *arg)
{
	struct fetcher *f = arg;
	struct sync *s = f->s;

	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct fetch_req *r;

		for (r = s->fq; r && r->taken; r = r->next)
			;
		if (!r) {
			pthread_cond_wait(&s->fetch_cond, &s->lock);
			continue;
		}
		r->taken = true;
		pthread_mutex_unlock(&s->lock);
		int rc = fetch_one(f, r);
		pthread_mutex_lock(&s->lock);
		r->rc = rc;
		r->done = true;
		for (struct fetch_req **p = &s->fq; *p; p = &(*p)->next)
			if (*p == r) {
				*p = r->next;
				break;
			}
		if (--r->refs == 0)
			free(r);
		pthread_cond_broadcast(&s->fetch_done);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int sync_fetch_start(struct sync *s)
{
	unsigned par = s->cfg.fetch_parallel > 16 ? 16 : s->cfg.fetch_parallel;

	s->fetchers = calloc(s->cfg.fetch_threads, sizeof(*s->fetchers));
	if (!s->fetchers)
		return -ENOMEM;
	for (unsigned i = 0; i < s->cfg.fetch_threads; i++) {
		struct fetcher *f = calloc(1, sizeof(*f));
		int rc;

		if (f)
			f->b = calloc(par, sizeof(*f->b));
		if (!f || !f->b) {
			if (f)
				free(f->b);
			free(f);
			sync_fetch_stop(s);
			return -ENOMEM;
		}
		f->s = s;
		rc = -pthread_create(&f->thread, NULL, fetcher_main, f);
		if (rc) {
			free(f->b);
			free(f);
			sync_fetch_stop(s);
			return rc;
		}
		s->fetchers[s->nfetchers++] = f;
	}
	return 0;
}

void sync_fetch_stop(struct sync *s)
{
	unsigned par = s->cfg.fetch_parallel > 16 ? 16 : s->cfg.fetch_parallel;

	pthread_mutex_lock(&s->lock);
	s->stop = true;
	/* Fail what is pending: its waiters get -EIO now, not after a
	 * transfer that may never end. */
	for (struct fetch_req *r = s->fq; r; r = r->next) {
		if (!r->done) {
			r->done = true;
			r->rc = -EIO;
		}
	}
	pthread_cond_broadcast(&s->fetch_cond);
	pthread_cond_broadcast(&s->fetch_done);
	while (s->hook_waiters)
		pthread_cond_wait(&s->fetch_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->nfetchers; i++) {
		struct fetcher *f = s->fetchers[i];

		pthread_join(f->thread, NULL);
		for (unsigned j = 0; j < par; j++)
			backend_close(f->b[j]);
		free(f->b);
		free(f);
	}
	free(s->fetchers);
	s->fetchers = NULL;
	s->nfetchers = 0;
	/* Requests left in the queue: their waiters are gone (counted
	 * above), so only the queue's reference remains. */
	pthread_mutex_lock(&s->lock);
	while (s->fq) {
		struct fetch_req *r = s->fq;

		s->fq = r->next;
		if (--r->refs == 0)
			free(r);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---- eviction ---- */

struct lru_seg {
	struct store_tenant *t;
	uint64_t seg, length;
	int64_t used_ns;
};

struct lru_vec {
	struct lru_seg *v;
	size_t n, alloc;
	struct store_tenant *t;		/* being listed */
	uint64_t total;
};

static int lru_collect(void *arg, const struct store_segment *seg)
{
	struct lru_vec *lv = arg;

	if (lv->n == lv->alloc) {
		size_t alloc = lv->alloc ? 2 * lv->alloc : 64;
		struct lru_seg *v = realloc(lv->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		lv->v = v;
		lv->alloc = alloc;
	}
	lv->v[lv->n++] = (struct lru_seg){ .t = lv->t, .seg = seg->seg,
					   .length = seg->length,
					   .used_ns = seg->used_ns };
	lv->total += seg->length;
	return 0;
}

struct lru_walk {
	struct sync *s;
	struct lru_vec *lv;
};

static int lru_walk_tenant(void *arg, const char *name)
{
	struct lru_walk *w = arg;
	struct store_tenant *t;

	if (store_tenant_get(w->s->st, name, &t) || store_tenant_removed(t))
		return 0;
	w->lv->t = t;
	return store_segment_list(t, STORE_SEG_UPLOADED, lru_collect, w->lv);
}

static int lru_cmp(const void *a, const void *b)
{
	const struct lru_seg *x = a, *y = b;

	if (x->used_ns != y->used_ns)
		return x->used_ns < y->used_ns ? -1 : 1;
	return x->seg < y->seg ? -1 : x->seg > y->seg;
}

void sync_evict(struct sync *s, struct store_tenant *keep_t, uint64_t keep_seg)
{
	struct lru_vec lv = { 0 };
	struct lru_walk w = { .s = s, .lv = &lv };
	uint64_t evicted = 0;

	pthread_mutex_lock(&s->evict_lock);
	if (store_tenant_list(s->st, lru_walk_tenant, &w))
		goto out;
	if (s->cfg.cache_size && lv.total > s->cfg.cache_size) {
		qsort(lv.v, lv.n, sizeof(*lv.v), lru_cmp);
		for (size_t i = 0; i < lv.n && lv.total > s->cfg.cache_size; i++) {
			if (lv.v[i].t == keep_t && lv.v[i].seg == keep_seg)
				continue;
			if (store_segment_evict(lv.v[i].t, lv.v[i].seg))
				continue;	/* busy or gone: the next one */
			lv.total -= lv.v[i].length;
			evicted++;
		}
	}
	pthread_mutex_lock(&s->lock);
	s->status.cached_bytes = lv.total;
	s->status.evicted_segments += evicted;
	pthread_mutex_unlock(&s->lock);
out:
	pthread_mutex_unlock(&s->evict_lock);
	free(lv.v);
}
