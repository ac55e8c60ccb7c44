/*
 * ids_fetch.c: a writer that continued another writer's published history
 * (seed.c) has its segments' event-ID tables on the remote, not here.  The
 * first append with an ID to such a stream needs them for dedup: the store
 * calls sync_ids_fetch_hook() from the appending (FUSE) thread, which
 * queues a request and waits on s->fetch_done, as for segments (fetch.c);
 * a fetch worker takes it with sync_ids_fetch_next(), GETs the segment's
 * ID table object and installs it (sync_seed_ids()).  So a takeover
 * fetches no table it does not need, and dedup fetches no segment bytes.
 *
 * Locking: the queue (s->iq) and each request's fields are protected by
 * s->lock, dropped around the GET.
 */
#include <errno.h>
#include <stdlib.h>

#include "sync.h"
#include "sync_int.h"

struct ids_req {
	struct ids_req *next;
	struct store_tenant *t;
	struct store_segment seg;
	unsigned refs;		/* the queue's and each waiter's */
	bool taken;		/* a worker fetches it */
	bool done;
	int rc;
};

static void req_unref(struct ids_req *r)
{
	if (!--r->refs)
		free(r);
}

/* Takes R off the queue and drops the queue's reference. */
static void req_dequeue(struct sync *s, struct ids_req *r)
{
	for (struct ids_req **p = &s->iq; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			req_unref(r);
			return;
		}
}

int sync_ids_fetch_hook(void *arg, struct store_tenant *t,
			const struct store_segment *seg)
{
	struct sync *s = arg;
	struct ids_req *r, **tail;
	int rc = -EIO;		/* stopping: nothing will fetch it */

	sync_mutex_lock(&s->lock);
	if (s->stop)
		goto out;
	s->hook_waiters++;
	r = calloc(1, sizeof(*r));
	if (r) {
		r->t = t;
		r->seg = *seg;
		r->refs = 2;
		for (tail = &s->iq; *tail; tail = &(*tail)->next)
			;
		*tail = r;
		pthread_cond_signal(&s->fetch_cond);
		while (!r->done && !s->stop)
			sync_cond_wait(&s->fetch_done, &s->lock);
		rc = r->done ? r->rc : -EIO;
		req_unref(r);
	} else {
		rc = -ENOMEM;
	}
	if (--s->hook_waiters == 0 && s->stop)
		pthread_cond_broadcast(&s->fetch_done);
out:
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* GETs R's table and installs it.  No lock held. */
static int fetch_one(struct sync_worker *f, struct ids_req *r)
{
	struct sync *s = f->s;
	char *tprefix = sync_tenant_prefix(store_tenant_name(r->t));
	int rc = tprefix ? 0 : -ENOMEM;

	if (!rc && !f->b)
		rc = backend_open_url(s->cfg.url, &s->cfg.opts, &f->b);
	if (!rc)
		rc = sync_seed_ids(f->b, r->t, tprefix, r->seg.seg,
				   r->seg.checksum);
	free(tprefix);
	return rc;
}

bool sync_ids_fetch_next(struct sync_worker *f)
{
	struct sync *s = f->s;
	struct ids_req *r;
	int rc;

	SYNC_ASSERT_HELD(&s->lock);
	for (r = s->iq; r && (r->taken || r->done); r = r->next)
		;
	if (!r)
		return false;
	r->taken = true;	/* the queue's reference keeps R */
	sync_mutex_unlock(&s->lock);
	rc = fetch_one(f, r);
	sync_mutex_lock(&s->lock);
	if (!r->done) {
		r->done = true;
		r->rc = rc;
	}
	pthread_cond_broadcast(&s->fetch_done);
	req_dequeue(s, r);
	return true;
}

void sync_ids_fetch_stop(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (struct ids_req *r = s->iq; r; r = r->next)
		if (!r->done) {
			r->done = true;
			r->rc = -EIO;
		}
}

void sync_ids_fetch_release(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	while (s->iq)
		req_dequeue(s, s->iq);
}
