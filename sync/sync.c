/*
 * sync.c: the sync thread (see sync.h for its contract, docs/FORMAT.md for
 * what it writes): its passes (a writer's here, a replica's in replica.c), sync_start(), sync_stop(), sync_now(), the status; and the
 * pool that starts upload.c's and fetch.c's helper threads.
 *
 * Lock order: s->lock is a leaf; it is never held across store calls or
 * network I/O (sync_int.h, struct sync).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync.h"
#include "sync_int.h"

/* Closest two passes brought forward by commits may be. */
#define SYNC_KICK_MIN_NS 200000000LL
/* Longest a manifest waits for a rename, removal or chmod. */
#define MANIFEST_CHECK_NS 2000000000LL
/* sync_stop(): how long releasing the leases may take. */
#define STOP_RELEASE_NS 3000000000LL

int64_t sync_clock(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sync_config_default(struct sync_config *cfg)
{
	*cfg = (struct sync_config){
		.interval_ns = 1000000000,
		.poll_ns = 10000000000LL,
		.fetch_threads = 2,
		.fetch_parallel = 4,
		.fetch_range = 16u << 20,	/* moto slices per request */
		.fetch_attempts = 4,
		.upload_parallel = 3,
		.backoff_min_ns = 200000000,
		.backoff_max_ns = 30000000000LL,
	};
	backend_options_default(&cfg->opts);
}

/* ---- status ---- */

/* Records the outcome of one step; logs only changes of state. */
void sync_note(struct sync *s, int rc, const char *what)
{
	bool log_fail = false, log_ok = false;
	int old;

	sync_mutex_lock(&s->lock);
	old = s->status.last_error;
	if (rc) {
		log_fail = rc != old ||
			   strcmp(what, s->status.last_error_what) != 0;
		s->status.last_error = rc;
		snprintf(s->status.last_error_what,
			 sizeof(s->status.last_error_what), "%s", what);
		s->status.last_error_ns = sync_clock(CLOCK_REALTIME);
	} else if (old) {
		log_ok = true;
		s->status.last_error = 0;
		s->status.last_error_what[0] = '\0';
	}
	sync_mutex_unlock(&s->lock);
	if (log_fail)
		sync_log(LOG_WARNING, "remote %s failing: %s: %s; will retry",
			 s->url_shown, what, strerror(-rc));
	if (log_ok)
		sync_log(LOG_NOTICE, "remote %s working again", s->url_shown);
}

static const char *const cause_names[SYNC_CAUSES] = {
	[SYNC_CAUSE_TIMEOUT] = "timeout",
	[SYNC_CAUSE_UNAVAILABLE] = "unavailable",
	[SYNC_CAUSE_DENIED] = "denied",
	[SYNC_CAUSE_NOT_FOUND] = "not_found",
	[SYNC_CAUSE_FULL] = "full",
	[SYNC_CAUSE_CHECKSUM] = "checksum",
	[SYNC_CAUSE_LEASE] = "lease",
	[SYNC_CAUSE_OTHER] = "other",
};

const char *sync_cause_name(enum sync_cause c)
{
	return c < SYNC_CAUSES ? cause_names[c] : "other";
}

enum sync_cause sync_cause_of(int rc)
{
	switch (rc) {
	case -ETIMEDOUT:
		return SYNC_CAUSE_TIMEOUT;
	case -EAGAIN:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		return SYNC_CAUSE_UNAVAILABLE;
	case -EACCES:
	case -EPERM:
	case -EROFS:
		return SYNC_CAUSE_DENIED;
	case -ENOENT:
		return SYNC_CAUSE_NOT_FOUND;
	case -ENOSPC:
	case -EDQUOT:
	case -EFBIG:
		return SYNC_CAUSE_FULL;
	case -EBUSY:
		return SYNC_CAUSE_LEASE;
	default:
		return SYNC_CAUSE_OTHER;
	}
}

/* ---- segments ---- */

int sync_seg_collect(void *arg, const struct store_segment *seg)
{
	struct sync_seg_vec *sv = arg;

	if (STORE_ARRAY_RESERVE(sv->v, sv->alloc, sv->n + 1, 16))
		return -ENOMEM;
	sv->v[sv->n++] = *seg;
	return 0;
}

int sync_seg_cmp(const void *a, const void *b)
{
	const struct store_segment *x = a, *y = b;

	if (x->stream != y->stream)
		return x->stream < y->stream ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* ---- tenant state ---- */

struct tenant_state *sync_tstate(struct sync *s, const char *name)
{
	struct tenant_state *v;

	for (size_t i = 0; i < s->nts; i++)
		if (!strcmp(s->ts[i].name, name))
			return &s->ts[i];
	v = realloc(s->ts, (s->nts + 1) * sizeof(*v));
	if (!v)
		return NULL;
	s->ts = v;
	v = &s->ts[s->nts];
	*v = (struct tenant_state){ .name = strdup(name) };
	if (!v->name)
		return NULL;
	s->nts++;
	return v;
}

static void tstate_release(struct tenant_state *ts)
{
	free(ts->name);
	sync_manifest_release(&ts->published);
	free(ts->published_cmp);
	sync_strvec_release(&ts->stale);
	sync_tail_release(ts);
	free(ts->map);
}

/* ---- passes ---- */

/* sync_stop() was called: a pass stops at the next segment or tenant. */
bool sync_stopping(struct sync *s)
{
	return atomic_load(&s->abort.now);
}

/* What one writer pass does to one tenant, and what it counts. */
struct pass_tenant {
	bool force;		/* sync_now: seal everything, check manifests */
	uint64_t pending;	/* sealed segments not uploaded yet */
	uint64_t pending_bytes;
	int64_t oldest_ns;	/* creation of the oldest of them; 0: none */
	uint64_t pending_snaps;	/* snapshots not uploaded yet */
	bool refused;		/* some tenant's lease is another writer's */
	char refused_what[160];
};

/* Whether TS's manifest is to be rebuilt now: when segments went up
 * (UPLOADED), on sync_now (FORCE), and otherwise every MANIFEST_CHECK_NS
 * (renames, removals, attributes): building it walks every stream of the
 * tenant. */
static bool manifest_due(const struct tenant_state *ts, bool uploaded,
			 bool force)
{
	return uploaded || force || !ts->published_cmp ||
	       sync_clock(CLOCK_MONOTONIC) - ts->checked_ns >= MANIFEST_CHECK_NS;
}

/* Notes in PT the oldest of SEGS but the first DONE (uploads go in
 * segment order, so those are the ones that went up). */
static void note_oldest(struct pass_tenant *pt, const struct sync_seg_vec *segs,
			uint64_t done)
{
	for (size_t i = (size_t)done; i < segs->n; i++) {
		int64_t c = segs->v[i].created_ns;

		if (c > 0 && (!pt->oldest_ns || c < pt->oldest_ns))
			pt->oldest_ns = c;
	}
}

/* Lease, seed, upload and manifest of T (state TS, prefix TPREFIX), whose
 * sealed segments are SEGS; in that order, so that the manifest goes out
 * only after its segments.  A lease held by another writer is noted in
 * PT, and nothing else is done. */
static int writer_tenant(struct sync *s, struct store_tenant *t,
			 struct tenant_state *ts, const char *tprefix,
			 const struct sync_seg_vec *segs,
			 struct pass_tenant *pt, char *what, size_t wlen)
{
	uint64_t n = 0, bytes = 0;
	bool flush;
	int rc = 0;

	if (!ts->leased) {
		char w[160];

		rc = sync_lease_take(s, ts, w, sizeof(w), NULL);
		if (rc == -EBUSY) {
			pt->refused = true;
			snprintf(pt->refused_what, sizeof(pt->refused_what),
				 "%s", w);
			note_oldest(pt, segs, 0);
			return 0;
		}
		if (rc)
			snprintf(what, wlen, "%s", w);
	}
	if (!rc && !ts->seeded) {
		rc = sync_seed_from_remote(s, ts, tprefix, what, wlen);
		ts->seeded = !rc;
	}
	if (!rc) {
		rc = sync_upload(s, t, tprefix, segs, &n, &bytes, what, wlen);
		pt->pending -= n;
		pt->pending_bytes -= bytes;
	}
	note_oldest(pt, segs, n);
	if (!rc) {
		uint64_t snaps = 0, left = 0;

		rc = sync_snapshots_upload(s, t, tprefix, &snaps, &left, what,
					   wlen);
		n += snaps;
		pt->pending_snaps += left;
	}
	flush = !rc && sync_tail_due(s, t, ts, pt->force);
	if (!rc && (flush || manifest_due(ts, n > 0, pt->force))) {
		rc = sync_publish_manifest(s, t, ts, tprefix, flush, what, wlen);
		if (!rc)
			ts->checked_ns = sync_clock(CLOCK_MONOTONIC);
		/* the status says "shipped" once tenants.json lists it too
		 * (writer_pass()) */
		ts->tail_note_due = !rc;
		if (!rc && flush)
			ts->flushed_ns = ts->checked_ns;
	}
	if (!rc)
		rc = sync_tail_delete_due(s, ts, false, what, wlen);
	return rc;
}

/* Uploads NAME's sealed segments and publishes its manifest; with
 * PT->force (sync_now) seals every non-empty active segment first.  (The
 * store's sealer seals by age and size on its own.) */
static int pass_tenant(struct sync *s, const char *name,
		       struct pass_tenant *pt, char *what, size_t wlen)
{
	struct sync_seg_vec segs = { 0 };
	struct tenant_state *ts;
	struct store_tenant *t;
	char *tprefix;
	int rc;

	if (store_tenant_get(s->st, name, &t) || store_tenant_removed(t))
		return 0;
	rc = pt->force ? store_roll(t, 0, true) : 0;
	if (rc < 0) {
		snprintf(what, wlen, "seal segments of %s", name);
		return rc;
	}
	ts = sync_tstate(s, name);
	if (!ts)
		return -ENOMEM;
	ts->present = true;
	tprefix = sync_tenant_prefix(name);
	if (!tprefix)
		return -ENOMEM;
	rc = store_segment_list(t, STORE_SEG_SEALED, sync_seg_collect, &segs);
	for (size_t j = 0; j < segs.n; j++) {
		pt->pending++;
		pt->pending_bytes += segs.v[j].length;
	}
	if (!rc)
		rc = writer_tenant(s, t, ts, tprefix, &segs, pt, what, wlen);
	free(segs.v);
	free(tprefix);
	return rc;
}

/* The leases of the tenants met, for sync_get_leases(): a malloc'd
 * array of s->nts, or NULL (none, or out of memory: the old copy stays). */
static struct sync_lease *lease_copy(struct sync *s)
{
	struct sync_lease *v = s->nts ? calloc(s->nts, sizeof(*v)) : NULL;

	for (size_t i = 0; v && i < s->nts; i++) {
		snprintf(v[i].tenant, sizeof(v[i].tenant), "%s", s->ts[i].name);
		v[i].held = s->ts[i].leased;
		v[i].refused = s->ts[i].refused;
	}
	return v;
}

/* The status a writer pass leaves: what waits, and the leases. */
static void pass_status(struct sync *s, const struct pass_tenant *pt)
{
	struct sync_lease *leases = lease_copy(s);
	uint64_t held = 0, refused = 0;

	for (size_t i = 0; i < s->nts; i++) {
		held += s->ts[i].leased;
		refused += s->ts[i].refused && s->ts[i].present;
	}
	sync_mutex_lock(&s->lock);
	s->status.pending_segments = pt->pending;
	s->status.pending_bytes = pt->pending_bytes;
	s->status.oldest_pending_ns = pt->pending ? pt->oldest_ns : 0;
	s->status.pending_snapshots = pt->pending_snaps;
	s->status.leases_held = held;
	s->status.leases_refused = refused;
	if (leases || !s->nts) {
		free(s->leases);
		s->leases = leases;
		s->nleases = s->nts;
	}
	sync_mutex_unlock(&s->lock);
}

/* One writer pass over every tenant.  FORCE seals every
 * non-empty segment. */
static int writer_pass(struct sync *s, bool force, char *what, size_t wlen)
{
	struct pass_tenant pt = { .force = force };
	struct sync_strvec names = { 0 };
	int rc;

	rc = store_tenant_list(s->st, sync_strvec_collect, &names);
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].present = false;
	for (size_t i = 0; !rc && i < names.n; i++) {
		if (sync_stopping(s))
			rc = -ECANCELED;
		else
			rc = pass_tenant(s, names.v[i], &pt, what, wlen);
	}
	if (!rc)
		rc = sync_publish_tenants(s, &names, what, wlen);
	for (size_t i = 0; !rc && i < s->nts; i++)
		if (s->ts[i].tail_note_due) {
			rc = sync_tail_note(s, &s->ts[i]);
			s->ts[i].tail_note_due = false;
		}
	if (!rc && pt.refused) {
		rc = -EBUSY;
		snprintf(what, wlen, "%s", pt.refused_what);
	}
	pass_status(s, &pt);
	if (s->cfg.cache_size)
		sync_evict(s, NULL, 0);
	sync_strvec_release(&names);
	return rc;
}

static int pass(struct sync *s, bool force)
{
	char what[160] = "list tenants";
	bool stopped;
	int rc;

	if (s->cfg.replica)
		rc = sync_replica_pass(s, what, sizeof(what));
	else
		rc = writer_pass(s, force, what, sizeof(what));
	/* Cut short by sync_stop(): not a failure of the remote. */
	stopped = rc == -ECANCELED && sync_stopping(s);
	sync_mutex_lock(&s->lock);
	if (!rc)
		s->status.last_success_ns = sync_clock(CLOCK_REALTIME);
	else if (!stopped)
		s->status.pass_failures[sync_cause_of(rc)]++;
	sync_mutex_unlock(&s->lock);
	if (!stopped)
		sync_note(s, rc, what);
	return rc;
}

static struct timespec abs_time(int64_t ns)
{
	return (struct timespec){ .tv_sec = ns / 1000000000,
				  .tv_nsec = ns % 1000000000 };
}

/* After a pass, with s->lock: waits until DEADLINE_NS, a kick, sync_now()
 * or stop. */
static void wait_until(struct sync *s, int64_t deadline_ns)
{
	struct timespec ts = abs_time(deadline_ns);
	int64_t earliest = sync_clock(CLOCK_MONOTONIC) + SYNC_KICK_MIN_NS;

	SYNC_ASSERT_HELD(&s->lock);
	/* A kick (a commit) brings the next pass forward, but passes stay
	 * SYNC_KICK_MIN_NS apart: a busy writer must not make the thread
	 * spin. */
	while (!s->stop && s->now_req == s->now_done &&
	       sync_clock(CLOCK_MONOTONIC) < deadline_ns) {
		if (s->kicked && sync_clock(CLOCK_MONOTONIC) >= earliest)
			break;
		if (s->kicked && earliest < deadline_ns) {
			struct timespec e = abs_time(earliest);

			sync_cond_timedwait(&s->cond, &s->lock, &e);
			continue;
		}
		sync_cond_timedwait(&s->cond, &s->lock, &ts);
	}
}

/* After a failed pass, with s->lock: waits BACKOFF_NS.  A kick must not
 * defeat the backoff; only stop does (and sync_now, which wants an answer
 * soon). */
static void wait_backoff(struct sync *s, int64_t backoff_ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + backoff_ns;
	struct timespec ts = abs_time(deadline);
	uint64_t req = s->now_req;

	SYNC_ASSERT_HELD(&s->lock);
	while (!s->stop && s->now_req == req &&
	       sync_clock(CLOCK_MONOTONIC) < deadline)
		sync_cond_timedwait(&s->cond, &s->lock, &ts);
}

static void *sync_main(void *arg)
{
	struct sync *s = arg;
	int64_t backoff = 0;

	sync_mutex_lock(&s->lock);
	while (!s->stop) {
		uint64_t target = s->now_req;
		bool force = target != s->now_done;
		int rc;

		s->kicked = false;
		sync_mutex_unlock(&s->lock);
		rc = pass(s, force);
		sync_mutex_lock(&s->lock);
		if (!rc && force && s->now_done < target)
			s->now_done = target;
		pthread_cond_broadcast(&s->done);
		if (!rc) {
			int64_t period = s->cfg.url && s->cfg.replica ?
				s->cfg.poll_ns : s->cfg.interval_ns;

			/* a flush must not wait for the next pass */
			if (!s->cfg.replica && s->cfg.flush_ns > 0 &&
			    s->cfg.flush_ns < period)
				period = s->cfg.flush_ns;

			backoff = 0;
			wait_until(s, sync_clock(CLOCK_MONOTONIC) + period);
			continue;
		}
		backoff = backoff ? backoff * 2 : s->cfg.backoff_min_ns;
		/* Refused credentials, a full remote...: no hurry. */
		if (!backend_err_retryable(rc) || backoff > s->cfg.backoff_max_ns)
			backoff = s->cfg.backoff_max_ns;
		wait_backoff(s, backoff);
	}
	sync_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- helper threads ---- */

int sync_pool_start(struct sync *s, struct sync_pool *p, unsigned n,
		    void *(*fn)(void *))
{
	p->n = 0;
	p->v = calloc(n ? n : 1, sizeof(*p->v));
	if (!p->v)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		struct sync_worker *w = &p->v[i];
		int rc;

		w->s = s;
		rc = -pthread_create(&w->thread, NULL, fn, w);
		if (rc)
			return rc;
		p->n++;
	}
	return 0;
}

void sync_pool_join(struct sync_pool *p)
{
	for (unsigned i = 0; i < p->n; i++) {
		pthread_join(p->v[i].thread, NULL);
		backend_close(p->v[i].b);
	}
	free(p->v);
	*p = (struct sync_pool){ 0 };
}

/* ---- start and stop ---- */

static void sync_free(struct sync *s)
{
	backend_close(s->b);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->fetch_cond);
	pthread_cond_destroy(&s->fetch_done);
	pthread_cond_destroy(&s->upload_cond);
	pthread_cond_destroy(&s->upload_done);
	sync_mutex_destroy(&s->lock);
	sync_mutex_destroy(&s->evict_lock);
	for (size_t i = 0; i < s->nts; i++)
		tstate_release(&s->ts[i]);
	free(s->ts);
	free(s->leases);
	sync_tail_marks_release(s);
	free(s->tenants_json);
	free(s->identity);
	free((char *)s->cfg.url);
	free(s->url_shown);
	free((char *)s->cfg.state_dir);
	free(s);
}

/* A struct sync for ST with CFG (its strings copied, zeros made
 * defaults), its locks and conditions ready; no thread yet.  NULL: out
 * of memory. */
static struct sync *sync_new(struct store *st, const struct sync_config *cfg)
{
	struct sync *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;

	if (!s)
		return NULL;
	s->st = st;
	s->cfg = *cfg;
	s->cfg.url = strdup(cfg->url);
	s->url_shown = backend_url_redacted(cfg->url);
	s->cfg.state_dir = cfg->state_dir ? strdup(cfg->state_dir) : NULL;
	if (!s->cfg.fetch_threads)
		s->cfg.fetch_threads = 1;
	if (!s->cfg.fetch_parallel)
		s->cfg.fetch_parallel = 1;
	if (!s->cfg.fetch_range)
		s->cfg.fetch_range = 16u << 20;
	if (!s->cfg.fetch_attempts)
		s->cfg.fetch_attempts = 1;
	if (!s->cfg.upload_parallel)
		s->cfg.upload_parallel = 1;
	if (s->cfg.upload_parallel > 16)
		s->cfg.upload_parallel = 16;
	if (s->cfg.poll_ns <= 0)
		s->cfg.poll_ns = 10000000000LL;
	s->cfg.opts.abort = &s->abort;
	if (gethostname(s->host, sizeof(s->host) - 1) < 0)
		snprintf(s->host, sizeof(s->host), "unknown");
	sync_mutex_init(&s->lock);
	sync_mutex_init(&s->evict_lock);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_cond_init(&s->done, &ca);
	pthread_cond_init(&s->fetch_cond, &ca);
	pthread_cond_init(&s->fetch_done, &ca);
	pthread_cond_init(&s->upload_cond, &ca);
	pthread_cond_init(&s->upload_done, &ca);
	pthread_condattr_destroy(&ca);
	if (!s->cfg.url || !s->url_shown ||
	    (cfg->state_dir && !s->cfg.state_dir)) {
		sync_free(s);
		return NULL;
	}
	return s;
}

/* A writer's start: its identity, the leases, the upload helpers. */
static int writer_start(struct sync *s)
{
	int rc = sync_identity_load(s);

	if (rc) {
		sync_log(LOG_ERR, "cannot read or create %s/sync-identity: %s",
			 s->cfg.state_dir, strerror(-rc));
		return rc;
	}
	rc = sync_leases_at_start(s);
	if (!rc)
		rc = sync_upload_start(s);
	return rc;
}

int sync_start(struct store *st, const struct sync_config *cfg,
	       struct sync **out)
{
	struct sync *s;
	int rc;

	*out = NULL;
	if (!cfg->url || (!cfg->replica && !cfg->state_dir))
		return -EINVAL;
	s = sync_new(st, cfg);
	if (!s)
		return -ENOMEM;
	rc = backend_open_url(cfg->url, &s->cfg.opts, &s->b);
	if (!rc && !s->cfg.replica)
		rc = writer_start(s);
	if (!rc) {
		rc = sync_fetch_start(s);
		if (!rc) {
			store_set_fetch_hook(st, sync_fetch_hook,
					     sync_fetch_reached, s);
			store_set_snapshot_fetch_hook(st, sync_snapshot_fetch_hook, s);
		}
	}
	if (!rc) {
		rc = -pthread_create(&s->thread, NULL, sync_main, s);
		if (rc) {
			sync_fetch_stop(s);
			store_set_fetch_hook(st, NULL, NULL, NULL);
			store_set_snapshot_fetch_hook(st, NULL, NULL);
		}
	}
	if (rc) {
		sync_upload_stop(s);
		sync_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void sync_stop(struct sync *s)
{
	if (!s)
		return;
	/* Transfers in flight end now (-ECANCELED); the pass stops at the
	 * next segment or tenant.  What was cut short is redone on the next
	 * start. */
	atomic_store(&s->abort.now, true);
	sync_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_cond_broadcast(&s->done);
	pthread_cond_broadcast(&s->fetch_cond);
	pthread_cond_broadcast(&s->fetch_done);
	sync_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	sync_upload_stop(s);
	/* Fails pending fetches and waits until no reader is inside
	 * the hook; only then is the hook cleared (store does not
	 * yet clear it atomically with respect to callers, so fs
	 * stops its readers before sync_stop). */
	sync_fetch_stop(s);
	store_set_fetch_hook(s->st, NULL, NULL, NULL);
	store_set_snapshot_fetch_hook(s->st, NULL, NULL);
	/* Releasing the leases is worth a few seconds, not more:
	 * a stalled remote must not hold up the unmount. */
	atomic_store(&s->abort.deadline_ns,
		     sync_clock(CLOCK_MONOTONIC) + STOP_RELEASE_NS);
	atomic_store(&s->abort.now, false);
	if (!s->cfg.replica)
		sync_lease_release(s, NULL);
	sync_free(s);
}

void sync_kick(struct sync *s)
{
	/* A replica's commits are its own thread's doing. */
	if (!s || s->cfg.replica)
		return;
	sync_mutex_lock(&s->lock);
	/* Once told, the thread keeps the kick until its next pass: waking
	 * it again for every append would only send it back to sleep. */
	if (!s->kicked) {
		s->kicked = true;
		pthread_cond_signal(&s->cond);
	}
	sync_mutex_unlock(&s->lock);
}

int sync_now(struct sync *s, int64_t timeout_ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + timeout_ns;
	uint64_t req;
	int rc = 0;

	sync_mutex_lock(&s->lock);
	req = ++s->now_req;
	pthread_cond_signal(&s->cond);
	while (s->now_done < req && !s->stop) {
		struct timespec ts = { .tv_sec = deadline / 1000000000,
				       .tv_nsec = deadline % 1000000000 };

		if (sync_clock(CLOCK_MONOTONIC) >= deadline) {
			rc = s->status.last_error ? s->status.last_error :
						    -ETIMEDOUT;
			break;
		}
		sync_cond_timedwait(&s->done, &s->lock, &ts);
	}
	if (s->now_done < req && !rc)
		rc = -ECANCELED;	/* stopped */
	sync_mutex_unlock(&s->lock);
	return rc;
}

void sync_get_status(struct sync *s, struct sync_status *out)
{
	sync_mutex_lock(&s->lock);
	*out = s->status;
	sync_mutex_unlock(&s->lock);
}

int sync_get_leases(struct sync *s, struct sync_lease **out, size_t *n)
{
	int rc = 0;

	*out = NULL;
	*n = 0;
	sync_mutex_lock(&s->lock);
	if (s->nleases) {
		*out = malloc(s->nleases * sizeof(**out));
		if (*out) {
			memcpy(*out, s->leases, s->nleases * sizeof(**out));
			*n = s->nleases;
		} else {
			rc = -ENOMEM;
		}
	}
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* ---- per-stream status ---- */

struct reach {
	uint64_t stream;
	struct sync_seg_vec segs;
};

static int reach_collect(void *arg, const struct store_segment *seg)
{
	struct reach *r = arg;

	return seg->stream == r->stream ? sync_seg_collect(&r->segs, seg) : 0;
}

int sync_stream_status(struct sync *s, struct store_tenant *t,
		       uint64_t stream, char *buf, size_t len)
{
	struct reach r = { .stream = stream };
	struct store_attr attr;
	uint64_t reached = 0, size = 0, tail;
	bool sealed = false;
	int rc, n;

	rc = store_stream_stat(t, stream, &attr);
	if (rc)
		return rc;
	if (s && s->cfg.url && s->cfg.replica) {
		n = snprintf(buf, len, "uploaded %" PRIu64, attr.version);
		goto out;
	}
	if (!s || !s->cfg.url) {
		n = snprintf(buf, len, "local 0/%" PRIu64, attr.version);
		goto out;
	}
	rc = store_stream_segments(t, stream, reach_collect, &r);
	if (rc) {
		free(r.segs.v);
		return rc;
	}
	if (r.segs.n)
		qsort(r.segs.v, r.segs.n, sizeof(*r.segs.v), sync_seg_cmp);
	for (size_t i = 0; i < r.segs.n; i++) {
		const struct store_segment *g = &r.segs.v[i];

		if (g->offset != size)
			break;
		if (g->state == STORE_SEG_SEALED)
			sealed = true;
		if (g->state != STORE_SEG_UPLOADED &&
		    g->state != STORE_SEG_EVICTED)
			break;
		size = g->offset + g->length;
		reached = g->first_version + g->count - 1;
	}
	free(r.segs.v);
	sync_mutex_lock(&s->lock);
	tail = sync_tail_mark(s, store_tenant_name(t), stream);
	sync_mutex_unlock(&s->lock);
	if (reached >= attr.version)
		n = snprintf(buf, len, "uploaded %" PRIu64, attr.version);
	else if (tail > reached)
		n = snprintf(buf, len, "shipped %" PRIu64 "/%" PRIu64
			     " (sealed %" PRIu64 ")", tail, attr.version, reached);
	else
		n = snprintf(buf, len, "%s %" PRIu64 "/%" PRIu64,
			     sealed ? "uploading" : "local", reached,
			     attr.version);
out:
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}
