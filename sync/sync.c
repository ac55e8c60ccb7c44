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
/* What a writer asks the remote before its mount comes up (the probe, the
 * leases of its tenants) gets this long: a remote that hangs must not hold
 * up the mount; the thread asks again. */
#define START_REMOTE_NS 5000000000LL
#define SYNC_LEASE_DEFAULT_NS (60 * 1000000000LL)

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
		.lease_ns = SYNC_LEASE_DEFAULT_NS,
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
			 s->url_shown, what, sync_strerror(rc));
	if (log_ok)
		sync_log(LOG_NOTICE, "remote %s working again", s->url_shown);
}

void sync_what_why(char *what, size_t wlen, const struct backend *b)
{
	size_t n = strlen(what);

	if (backend_why(b)[0] && n + 2 < wlen)
		snprintf(what + n, wlen - n, ": %s", backend_why(b));
}

const char *sync_strerror(int rc)
{
	return rc == -EBADMSG ? "checksum mismatch" : strerror(-rc);
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
	case -EBADMSG:
		return SYNC_CAUSE_CHECKSUM;
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
	sync_lost_release(ts);
	free(ts->map);
	free(ts->fence_note);
	free(ts->fence_text);
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
	bool retry_all;		/* a new sync_now: failing objects too */
	bool hard;		/* a failure of more than single objects
				 * (lease, manifest, the remote down) */
	bool down;		/* uploads found the remote down: the pass
				 * ends */
	uint64_t pending;	/* sealed segments not uploaded yet */
	uint64_t pending_bytes;
	int64_t oldest_ns;	/* creation of the oldest of them; 0: none */
	uint64_t pending_snaps;	/* snapshots not uploaded yet */
	bool refused;		/* some tenant's lease is another writer's */
	char refused_what[160];
};

/* Answers a pending sync_tenant_claim() (the sync thread). */
static void serve_claim(struct sync *s)
{
	struct tenant_state *ts;
	char *name, what[160];
	uint64_t req;
	int rc;

	sync_mutex_lock(&s->lock);
	name = s->claim_name ? strdup(s->claim_name) : NULL;
	req = s->claim_req;
	sync_mutex_unlock(&s->lock);
	if (!name)
		return;
	ts = sync_tstate(s, name);
	if (!ts)
		rc = -ENOMEM;
	else if (ts->fenced)
		rc = -EBUSY;	/* another writer's now */
	else if (ts->leased)
		rc = 0;
	else
		rc = sync_lease_take(s, ts, what, sizeof(what), NULL);
	if (!rc)
		rc = sync_seed_claimed(s, ts, what, sizeof(what));
	/* Unreachable or failing: the tenant is made, and its lease taken
	 * when the remote answers, as for a mount (a holder is then
	 * reported loudly, and nothing of it is uploaded). */
	if (rc < 0 && rc != -EBUSY && rc != -ENOMEM) {
		sync_note(s, rc, what);
		rc = 0;
	}
	sync_mutex_lock(&s->lock);
	if (s->claim_req == req && s->claim_name) {
		s->claim_rc = rc;
		s->claim_done = req;
		free(s->claim_name);
		s->claim_name = NULL;
		pthread_cond_broadcast(&s->claim_cond);
	}
	sync_mutex_unlock(&s->lock);
	free(name);
}

/* Runs the fencing probe until it answers: 0, -EOPNOTSUPP (the remote
 * cannot fence; s->unfenceable), or a retryable failure (again later). */
static int probe(struct sync *s)
{
	int rc;

	if (s->probed)
		return s->unfenceable ? -EOPNOTSUPP : 0;
	rc = sync_probe_fencing(s);
	if (!backend_err_retryable(rc)) {
		s->probed = true;
		s->unfenceable = rc == -EOPNOTSUPP;
	}
	return rc;
}

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

/* Notes in PT a segment created at C (CLOCK_REALTIME, 0: none) that
 * waits for upload. */
static void note_oldest(struct pass_tenant *pt, int64_t c)
{
	if (c > 0 && (!pt->oldest_ns || c < pt->oldest_ns))
		pt->oldest_ns = c;
}

/* Notes in PT every one of SEGS: none of them goes up this pass. */
static void note_all(struct pass_tenant *pt, const struct sync_seg_vec *segs)
{
	for (size_t i = 0; i < segs->n; i++)
		note_oldest(pt, segs->v[i].created_ns);
}

/* The last version of stream ID that M publishes (in segments or tail
 * pieces), 0 when it lists none. */
static uint64_t published_version(const struct manifest *m, uint64_t id)
{
	for (size_t i = 0; i < m->nstreams; i++)
		if (m->streams[i].id == id)
			return sync_manifest_stream_end(&m->streams[i]);
	return 0;
}

struct fence_list {
	const struct manifest *published;
	char *text;
	size_t len, cap;
};

static int fence_stream(void *arg, const char *name,
			const struct store_attr *attr)
{
	struct fence_list *fl = arg;
	uint64_t from = published_version(fl->published, attr->id) + 1;
	int n;

	if (attr->version < from || fl->len >= fl->cap)
		return 0;
	n = snprintf(fl->text + fl->len, fl->cap - fl->len, "%s%s versions "
		     "%" PRIu64 "-%" PRIu64, fl->len ? ", " : "", name, from,
		     attr->version);
	fl->len = n < 0 ? fl->cap : fl->len + (size_t)n;
	return 0;
}

/* Fenced T: what status says of it (TS->fence_text, sync_lease.fence_note),
 * with the events its streams hold beyond what this writer published. */
static int fence_listing(struct sync *s, struct store_tenant *t,
			 struct tenant_state *ts)
{
	struct fence_list fl = { .published = &ts->published, .cap = 1024 };
	char *text;
	int rc;

	(void)s;
	fl.text = calloc(1, fl.cap);
	if (!fl.text)
		return -ENOMEM;
	rc = store_stream_list(t, 0, fence_stream, &fl);
	if (!rc && asprintf(&text, "%s; not published: %s",
			    ts->fence_note ? ts->fence_note : "taken over",
			    fl.len ? fl.text : "nothing") < 0)
		rc = -ENOMEM;
	if (!rc) {
		free(ts->fence_text);
		ts->fence_text = text;
	}
	free(fl.text);
	return rc;
}

/* What upload_tenant() leaves for its caller. */
struct upload_held {
	bool uploaded;		/* some segment went up */
	int rc;			/* a failure of single objects, or 0 */
	char what[160];		/* what failed */
};

/* Uploads SEGS of T, noting in PT what is left, and in *H what went up.
 * A failure of single objects (not the remote down) goes to H, not to the
 * result: the manifest still publishes the streams it does not hold
 * back. */
static int upload_tenant(struct sync *s, struct store_tenant *t,
			 const char *tprefix, const struct sync_seg_vec *segs,
			 struct pass_tenant *pt, struct upload_held *h,
			 char *what, size_t wlen)
{
	struct sync_upload_out up;
	int rc = sync_upload(s, t, tprefix, segs, pt->retry_all, &up, what,
			     wlen);

	pt->pending -= up.done;
	pt->pending_bytes -= up.done_bytes;
	note_oldest(pt, up.oldest_left_ns);
	h->uploaded = up.done > 0;
	pt->down |= up.down;
	if (rc && rc != -ECANCELED && !up.down) {
		h->rc = rc;
		snprintf(h->what, sizeof(h->what), "%s", what);
		rc = 0;
	}
	return rc;
}

/* Uploads the snapshots of T that their streams' uploaded segments
 * reach (snapshot.c), after the segments; noting in PT what is left.  A
 * failure holds back only those snapshots (noted in H, as a segment's). */
static void upload_snapshots(struct sync *s, struct store_tenant *t,
			     const char *tprefix, struct pass_tenant *pt,
			     struct upload_held *h)
{
	uint64_t done = 0, left = 0;
	char what[160];
	int rc = sync_snapshots_upload(s, t, tprefix, &done, &left, what,
				       sizeof(what));

	h->uploaded |= done > 0;
	pt->pending_snaps += left;
	if (rc && rc != -ECANCELED && !h->rc) {
		h->rc = rc;
		snprintf(h->what, sizeof(h->what), "%s", what);
	}
}

/* Lease, seed, upload and manifest of T (state TS, prefix TPREFIX), whose
 * sealed segments are SEGS; in that order, so that the manifest goes out
 * only after its segments (and its tail piece, when a flush is due).  A lease held by another writer is noted in
 * PT, and nothing else is done. */
static int writer_tenant(struct sync *s, struct store_tenant *t,
			 struct tenant_state *ts, const char *tprefix,
			 const struct sync_seg_vec *segs,
			 struct pass_tenant *pt, char *what, size_t wlen)
{
	struct upload_held held = { 0 };
	bool flush;
	int rc = 0;

	if (ts->fenced) {
		note_all(pt, segs);
		return fence_listing(s, t, ts);
	}
	if (!ts->leased) {
		char w[160];

		rc = sync_lease_take(s, ts, w, sizeof(w), NULL);
		if (rc == -EBUSY) {
			pt->refused = true;
			snprintf(pt->refused_what, sizeof(pt->refused_what),
				 "%s", w);
			note_all(pt, segs);
			return 0;
		}
		if (rc) {
			snprintf(what, wlen, "%s", w);
			sync_what_why(what, wlen, s->b);
		}
	}
	if (!rc && !ts->seeded) {
		rc = sync_seed_from_remote(s, t, ts, tprefix, what, wlen);
		ts->seeded = !rc;
		if (rc)
			sync_what_why(what, wlen, s->b);
		else	/* a mkdir's seeding that had to wait: appends go on */
			store_tenant_hold(t, false);
	}
	if (!rc)
		rc = upload_tenant(s, t, tprefix, segs, pt, &held, what, wlen);
	else
		note_all(pt, segs);
	if (!rc)
		upload_snapshots(s, t, tprefix, pt, &held);
	flush = !rc && sync_tail_due(s, t, ts, pt->force);
	/* A new sync_now looks at the remote's objects again (lost.c). */
	if (pt->retry_all)
		sync_lost_suspect(s, ts);
	if (!rc && (flush || manifest_due(ts, held.uploaded, pt->force))) {
		/* sync_now ships everything acknowledged, however much */
		rc = sync_publish_manifest(s, t, ts, tprefix,
					   !flush ? SYNC_FLUSH_NONE :
					   pt->force ? SYNC_FLUSH_ALL :
					   SYNC_FLUSH_STEP, what, wlen);
		if (!rc)
			ts->checked_ns = sync_clock(CLOCK_MONOTONIC);
		else if (rc != -EROFS)	/* its last call on s->b failed */
			sync_what_why(what, wlen, s->b);
		/* the status says "shipped" once tenants.json lists it too
		 * (writer_pass()) */
		ts->tail_note_due = !rc;
		if (!rc && flush)
			ts->flushed_ns = ts->checked_ns;
	}
	if (!rc) {
		rc = sync_tail_delete_due(s, ts, false, what, wlen);
		if (rc)
			sync_what_why(what, wlen, s->b);
	}
	if (rc == -EROFS) {	/* fenced on the way: logged */
		rc = fence_listing(s, t, ts);
	} else if (rc) {
		pt->hard = true;
	} else if (held.rc) {
		rc = held.rc;
		snprintf(what, wlen, "%s", held.what);
	}
	return rc;
}

struct snap_streams {
	uint64_t *v;		/* pairs: stream, version */
	size_t n, alloc;
};

static int snap_stream_collect(void *arg, const struct store_snapshot *snap)
{
	struct snap_streams *ss = arg;

	if (STORE_ARRAY_RESERVE(ss->v, ss->alloc, ss->n + 2, 16))
		return -ENOMEM;
	ss->v[ss->n++] = snap->stream;
	ss->v[ss->n++] = snap->version;
	return 0;
}

/* A snapshot of stream ID at VERSION is not uploaded yet (sync_now): the
 * stream's active segment is sealed when it holds VERSION, since a
 * snapshot goes up only after the segment holding its version
 * (snapshot.c). */
static int seal_for_snapshot(struct store_tenant *t, uint64_t id,
			     uint64_t version)
{
	struct sync_seg_vec sv = { 0 };
	int rc = store_stream_segments(t, id, sync_seg_collect, &sv);
	bool in_active = false;

	for (size_t i = 0; !rc && i < sv.n; i++)
		in_active |= sv.v[i].state == STORE_SEG_ACTIVE &&
			     version >= sv.v[i].first_version;
	free(sv.v);
	if (!rc && in_active)
		rc = store_roll_stream(t, id);
	return rc == -ENOENT ? 0 : rc < 0 ? rc : 0;	/* gone meanwhile */
}

/* What sync_now seals of T before its pass.  Without flush, every
 * non-empty active segment: sealed segments are all the remote gets.
 * With flush, the pass ships what the active segments hold as a tail
 * piece instead (sealing them would make a small segment object per
 * stream at every `streamfs sync`), so only what must go up whole is
 * sealed: the closing segments (full already) and the active segments
 * that hold a snapshot's version. */
static int force_seal(struct sync *s, struct store_tenant *t)
{
	struct snap_streams ss = { 0 };
	int rc;

	if (s->cfg.flush_ns <= 0)
		return store_roll(t, 0, true);
	rc = store_seal_closing_now(t);
	/* listed first: the callback runs under the tenant's lock */
	if (!rc)
		rc = store_snapshot_list_state(t, STORE_SNAP_LOCAL,
					       snap_stream_collect, &ss);
	for (size_t i = 0; !rc && i < ss.n; i += 2)
		rc = seal_for_snapshot(t, ss.v[i], ss.v[i + 1]);
	free(ss.v);
	return rc;
}

/* Uploads NAME's sealed segments and publishes its manifest; with
 * PT->force (sync_now) seals first what force_seal() says.  (The
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
	rc = pt->force ? force_seal(s, t) : 0;
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
/* Copies TEXT into BUF of CAP bytes, ending with "..." when it is longer. */
static void copy_truncated(char *buf, size_t cap, const char *text)
{
	if ((size_t)snprintf(buf, cap, "%s", text) >= cap)
		memcpy(buf + cap - 4, "...", 4);
}

static struct sync_lease *lease_copy(struct sync *s)
{
	struct sync_lease *v = s->nts ? calloc(s->nts, sizeof(*v)) : NULL;

	for (size_t i = 0; v && i < s->nts; i++) {
		const char *note;

		snprintf(v[i].tenant, sizeof(v[i].tenant), "%s", s->ts[i].name);
		v[i].held = s->ts[i].leased;
		v[i].refused = s->ts[i].refused;
		v[i].fenced = s->ts[i].fenced;
		v[i].generation = s->ts[i].generation;
		/* Fenced since its last listing: who took it, for now. */
		note = s->ts[i].fence_text ? s->ts[i].fence_text :
		       s->ts[i].fence_note;
		if (s->ts[i].fenced && note)
			copy_truncated(v[i].fence_note,
				       sizeof(v[i].fence_note), note);
		v[i].frozen = sync_lost_note(&s->ts[i], v[i].frozen_note,
					     sizeof(v[i].frozen_note));
	}
	return v;
}

/* The status a writer pass leaves: what waits, and the leases. */
static void pass_status(struct sync *s, const struct pass_tenant *pt)
{
	struct sync_lease *leases = lease_copy(s);
	uint64_t held = 0, refused = 0, fenced = 0, frozen = 0;

	for (size_t i = 0; i < s->nts; i++) {
		frozen += s->ts[i].nfrozen;
		held += s->ts[i].leased;
		refused += s->ts[i].refused && s->ts[i].present;
		fenced += s->ts[i].fenced;
	}
	sync_mutex_lock(&s->lock);
	s->status.pending_segments = pt->pending;
	s->status.pending_bytes = pt->pending_bytes;
	s->status.oldest_pending_ns = pt->pending ? pt->oldest_ns : 0;
	s->status.pending_snapshots = pt->pending_snaps;
	s->status.leases_held = held;
	s->status.leases_refused = refused;
	s->status.leases_fenced = fenced;
	s->status.streams_frozen = frozen;
	if (leases || !s->nts) {
		free(s->leases);
		s->leases = leases;
		s->nleases = s->nts;
	}
	sync_mutex_unlock(&s->lock);
}

/* The remote's tenants this writer continues, created and seeded here
 * (once; again at the next pass when the remote was unreachable, or, with
 * takeover, while another writer's lease may still expire). */
static int seed_tenants(struct sync *s)
{
	int rc;

	if (s->adopted)
		return 0;
	rc = sync_seed_tenants(s);
	s->adopted = !rc;
	if (rc == -ENOMEM || rc == -EBUSY || rc == 1)
		return rc > 0 ? 0 : rc;
	if (rc)
		sync_log(LOG_WARNING, "reading the tenants of %s failed (%s); "
			 "tried again at the next pass", s->url_shown,
			 strerror(-rc));
	return 0;
}

/* Whether a failure RC of one tenant (PT its pass) ends the pass:
 * stopping, no memory, or a remote that does not answer or looks down
 * (each tenant would wait for it).  Other failures hold back only their
 * tenant. */
static bool pass_ends(const struct pass_tenant *pt, int rc)
{
	return rc == -ECANCELED || rc == -ENOMEM || rc == -ETIMEDOUT ||
	       pt->down;
}

/* One writer pass over every tenant: PT says how (force, retry_all).
 * Returns the first failure, described in WHAT; *RETRY_AT (OUT) is then
 * when the next failing object is due (retry.c) if single objects were
 * all that failed, else 0 (the pass backs off). */
static int writer_pass(struct sync *s, struct pass_tenant *pt,
		       int64_t *retry_at, char *what, size_t wlen)
{
	struct sync_strvec names = { 0 };
	char w[160];
	int rc, r = 0;
	bool listed;

	snprintf(what, wlen, "probe the remote's conditional writes");
	rc = probe(s);
	if (!rc)
		rc = sync_leases_renew_due(s, what, wlen);
	if (!rc)
		rc = sync_mlocks_refresh_due(s, what, wlen);
	if (!rc)
		rc = seed_tenants(s);
	if (!rc) {
		snprintf(what, wlen, "list tenants");
		rc = store_tenant_list(s->st, sync_strvec_collect, &names);
	}
	listed = !rc;
	pt->hard = !listed;
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].present = false;
	for (size_t i = 0; listed && i < names.n && !pass_ends(pt, r); i++) {
		r = sync_stopping(s) ? -ECANCELED :
			pass_tenant(s, names.v[i], pt, w, sizeof(w));
		if (r && !rc) {
			rc = r;
			snprintf(what, wlen, "%s", w);
		}
		if (pass_ends(pt, r))
			pt->hard = true;
		serve_claim(s);
	}
	if (listed && !pass_ends(pt, r)) {
		r = sync_publish_tenants(s, &names, w, sizeof(w));
		if (r)
			sync_what_why(w, sizeof(w), s->b);
		if (r && !rc) {
			rc = r;
			snprintf(what, wlen, "%s", w);
		}
		pt->hard |= r != 0;
		/* a tenant's streams read as shipped once tenants.json lists
		 * it too */
		for (size_t i = 0; !r && i < s->nts; i++)
			if (s->ts[i].tail_note_due) {
				r = sync_tail_note(s, &s->ts[i]);
				s->ts[i].tail_note_due = false;
			}
		if (r && !rc) {
			rc = r;
			snprintf(what, wlen, "note the shipped tails");
			pt->hard = true;
		}
	}
	if (!rc && pt->refused) {
		rc = -EBUSY;
		snprintf(what, wlen, "%s", pt->refused_what);
	}
	pt->hard |= pt->refused;
	/* The remote down or gone (a share unmounted): it may come back
	 * without some objects; each tenant is listed before its next
	 * manifest (lost.c). */
	if (pt->hard && backend_err_retryable(rc))
		sync_lost_suspect_all(s);
	*retry_at = rc && !pt->hard ? sync_retry_next(&s->retries) : 0;
	pass_status(s, pt);
	if (s->cfg.cache_size)
		sync_evict(s, NULL, 0);
	sync_strvec_release(&names);
	return rc;
}

/* STATE_DIR/sync-remote: the URL of the remote this SOURCE wrote to. */
static char *remote_marker(struct sync *s)
{
	char *path;

	return asprintf(&path, "%s/sync-remote", s->cfg.state_dir) < 0 ? NULL
									 : path;
}

/* Whether this SOURCE wrote to s->cfg.url before. */
static bool remote_used(struct sync *s)
{
	char *path = remote_marker(s), buf[4096];
	FILE *f = path ? fopen(path, "re") : NULL;
	bool used = false;

	if (f && fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		used = !strcmp(buf, s->cfg.url);
	}
	if (f)
		fclose(f);
	free(path);
	return used;
}

/* After a writer pass that succeeded: records that this SOURCE uses the
 * remote (written once, atomically). */
static void mark_remote_used(struct sync *s)
{
	char *path = remote_marker(s), *tmp = NULL;
	FILE *f = NULL;

	if (path && asprintf(&tmp, "%s.tmp", path) >= 0)
		f = fopen(tmp, "we");
	if (f) {
		bool ok = fprintf(f, "%s\n", s->cfg.url) > 0;

		ok = !fflush(f) && !fsync(fileno(f)) && ok;
		ok = !fclose(f) && ok;
		s->remote_used = ok && !rename(tmp, path);
		if (!s->remote_used)
			unlink(tmp);
	}
	free(tmp);
	free(path);
}

/* One pass (FORCE, RETRY_ALL: see struct pass_tenant); *RETRY_AT as
 * writer_pass() says. */
static int pass(struct sync *s, bool force, bool retry_all, int64_t *retry_at)
{
	struct pass_tenant pt = { .force = force, .retry_all = retry_all };
	char what[160] = "list tenants";
	bool stopped;
	int rc;

	*retry_at = 0;
	if (s->cfg.replica)
		rc = sync_replica_pass(s, what, sizeof(what));
	else
		rc = writer_pass(s, &pt, retry_at, what, sizeof(what));
	/* Cut short by sync_stop(): not a failure of the remote. */
	stopped = rc == -ECANCELED && sync_stopping(s);
	sync_mutex_lock(&s->lock);
	if (!rc)
		s->status.last_success_ns = sync_clock(CLOCK_REALTIME);
	else if (!stopped)
		s->status.pass_failures[sync_cause_of(rc)]++;
	sync_mutex_unlock(&s->lock);
	if (!rc && !s->cfg.replica && !s->remote_used)
		mark_remote_used(s);
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
	while (!s->stop && s->now_req == s->now_done && !s->claim_name &&
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
	while (!s->stop && s->now_req == req && !s->claim_name &&
	       sync_clock(CLOCK_MONOTONIC) < deadline)
		sync_cond_timedwait(&s->cond, &s->lock, &ts);
}

/* After a pass that failed with RC, with s->lock: how long to wait. */
static int64_t next_backoff(const struct sync *s, int64_t backoff, int rc)
{
	/* An analysis host keeps polling at its pace whatever fails; a
	 * writer's leases must be renewed whatever else fails. */
	int64_t pace = s->cfg.replica ? s->cfg.poll_ns : s->cfg.lease_ns / 3;
	int64_t cap;

	/* ... and its manifest locks refreshed before the server drops them
	 * (nginx ignores the token of a PUT to an unlocked object). */
	if (s->mlocks && pace > s->mlock_period_ns)
		pace = s->mlock_period_ns;
	cap = pace < s->cfg.backoff_max_ns ? pace : s->cfg.backoff_max_ns;

	backoff = backoff ? backoff * 2 : s->cfg.backoff_min_ns;
	/* Refused credentials, a full remote...: no hurry. */
	if (!backend_err_retryable(rc) || backoff > cap)
		backoff = cap;
	return backoff;
}

static void *sync_main(void *arg)
{
	struct sync *s = arg;
	int64_t backoff = 0;
	uint64_t retried = 0;	/* the last sync_now() that retried all */

	sync_mutex_lock(&s->lock);
	while (!s->stop) {
		uint64_t target = s->now_req;
		bool force = target != s->now_done;
		/* A new sync_now() tries failing objects at once, once. */
		bool retry_all = force && target != retried;
		int64_t period = s->cfg.url && s->cfg.replica ?
			s->cfg.poll_ns : s->cfg.interval_ns;
		int64_t retry_at, now;
		int rc;

		if (!s->cfg.replica && period > s->cfg.lease_ns / 3)
			period = s->cfg.lease_ns / 3;	/* renewals */
		if (s->mlocks && period > s->mlock_period_ns)
			period = s->mlock_period_ns;	/* manifest locks */
		/* a flush must not wait for the next pass */
		if (!s->cfg.replica && s->cfg.flush_ns > 0 &&
		    s->cfg.flush_ns < period)
			period = s->cfg.flush_ns;

		s->kicked = false;
		if (retry_all)
			retried = target;
		sync_mutex_unlock(&s->lock);
		if (!s->cfg.replica)
			serve_claim(s);
		rc = pass(s, force, retry_all, &retry_at);
		sync_mutex_lock(&s->lock);
		if (!rc && force && s->now_done < target)
			s->now_done = target;
		pthread_cond_broadcast(&s->done);
		now = sync_clock(CLOCK_MONOTONIC);
		if (!rc) {
			backoff = 0;
			wait_until(s, now + period);
		} else if (retry_at) {
			/* Only single objects fail, each at its own pace
			 * (retry.c): passes keep their period, and one comes
			 * sooner when a retry is due. */
			backoff = 0;
			if (retry_at > now + period)
				retry_at = now + period;
			wait_backoff(s, retry_at - now > SYNC_KICK_MIN_NS ?
					retry_at - now : SYNC_KICK_MIN_NS);
		} else {
			backoff = next_backoff(s, backoff, rc);
			wait_backoff(s, backoff);
		}
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
	pthread_cond_destroy(&s->claim_cond);
	sync_mutex_destroy(&s->lock);
	sync_mutex_destroy(&s->evict_lock);
	for (size_t i = 0; i < s->nts; i++)
		tstate_release(&s->ts[i]);
	free(s->ts);
	sync_retries_release(&s->retries);
	free(s->leases);
	free(s->claim_name);
	sync_strvec_release(&s->fenced);
	sync_tail_marks_release(s);
	sync_lost_free(s);
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
	if (s->cfg.lease_ns <= 0)
		s->cfg.lease_ns = SYNC_LEASE_DEFAULT_NS;
	if (s->cfg.piece_keep_ns <= 0)
		s->cfg.piece_keep_ns = SYNC_PIECE_KEEP_DEFAULT_NS;
	s->cfg.opts.abort = &s->abort;
	/* A file:// root is the remote once it holds the layout (backend.h). */
	s->cfg.opts.file_layout = SYNC_ROOT;
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
	pthread_cond_init(&s->claim_cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!s->cfg.url || !s->url_shown ||
	    (cfg->state_dir && !s->cfg.state_dir)) {
		sync_free(s);
		return NULL;
	}
	return s;
}

/* A writer's start: its identity, the probe of the remote, the leases,
 * the upload helpers. */
static int writer_start(struct sync *s)
{
	int rc = sync_identity_load(s);

	if (rc) {
		sync_log(LOG_ERR, "cannot read or create %s/sync-identity: %s",
			 s->cfg.state_dir, strerror(-rc));
		return rc;
	}
	atomic_store(&s->abort.deadline_ns,
		     sync_clock(CLOCK_MONOTONIC) + START_REMOTE_NS);
	rc = probe(s);
	if (backend_err_retryable(rc))
		rc = 0;		/* the thread asks again */
	if (!rc)
		rc = sync_leases_at_start(s);
	atomic_store(&s->abort.deadline_ns, 0);
	/* Seeding reads the whole published history's metadata: at start
	 * only from a remote that answered the probe in time; else the
	 * thread seeds once it answers. */
	if (!rc && s->probed)
		rc = seed_tenants(s);
	if (!rc)
		rc = sync_upload_start(s);
	return rc;
}

/* Opens s->b.  A writer's may make a new file:// remote where the URL
 * points (backend.h, file_claim); the other backends (the helpers', the
 * fetch workers', opened later, maybe after the share went away) only
 * wait for it. */
static int open_main_backend(struct sync *s)
{
	struct backend_options o = s->cfg.opts;

	o.file_claim = !s->cfg.replica;
	return backend_open_url(s->cfg.url, &o, &s->b);
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
	/* file://: whether this SOURCE wrote to the remote before. */
	if (!s->cfg.replica)
		s->cfg.opts.file_used = s->remote_used = remote_used(s);
	rc = open_main_backend(s);
	if (!rc && !s->cfg.replica)
		rc = writer_start(s);
	if (!rc) {
		rc = sync_fetch_start(s);
		if (!rc) {
			store_set_fetch_hook(st, sync_fetch_hook,
					     sync_fetch_reached, s);
			store_set_snapshot_fetch_hook(st, sync_snapshot_fetch_hook, s);
			store_set_ids_fetch_hook(st, sync_ids_fetch_hook, s);
		}
	}
	if (!rc) {
		rc = -pthread_create(&s->thread, NULL, sync_main, s);
		if (rc) {
			sync_fetch_stop(s);
			store_set_fetch_hook(st, NULL, NULL, NULL);
			store_set_snapshot_fetch_hook(st, NULL, NULL);
			store_set_ids_fetch_hook(st, NULL, NULL);
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
	pthread_cond_broadcast(&s->claim_cond);
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
	store_set_ids_fetch_hook(s->st, NULL, NULL);
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
	/* A tenant taken over keeps what it did not publish. */
	if (!rc && atomic_load(&s->nfenced))
		rc = -EROFS;
	/* A stream frozen (the remote lost what it needs): not shipped. */
	if (!rc && atomic_load(&s->nfrozen))
		rc = -EIO;
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

bool sync_tenant_fenced(struct sync *s, const char *tenant)
{
	bool found = false;

	if (!s || !atomic_load(&s->nfenced))
		return false;
	sync_mutex_lock(&s->lock);
	for (size_t i = 0; !found && i < s->fenced.n; i++)
		found = !strcmp(s->fenced.v[i], tenant);
	sync_mutex_unlock(&s->lock);
	return found;
}

int sync_tenant_claim(struct sync *s, const char *tenant, int64_t timeout_ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + timeout_ns;
	struct timespec ts = abs_time(deadline);
	uint64_t req = 0;
	int rc = -ETIMEDOUT;

	if (!s || s->cfg.replica)
		return 0;
	sync_mutex_lock(&s->lock);
	/* One claim at a time. */
	while (s->claim_name && !s->stop &&
	       sync_clock(CLOCK_MONOTONIC) < deadline)
		sync_cond_timedwait(&s->claim_cond, &s->lock, &ts);
	if (!s->claim_name && !s->stop) {
		s->claim_name = strdup(tenant);
		req = ++s->claim_req;
		if (!s->claim_name)
			rc = -ENOMEM;
		pthread_cond_signal(&s->cond);
	}
	while (req && s->claim_name && s->claim_done < req && !s->stop &&
	       sync_clock(CLOCK_MONOTONIC) < deadline)
		sync_cond_timedwait(&s->claim_cond, &s->lock, &ts);
	if (req && s->claim_done >= req) {
		rc = s->claim_rc;
	} else if (req && s->claim_req == req && s->claim_name) {
		free(s->claim_name);	/* not answered: withdrawn */
		s->claim_name = NULL;
	}
	if (s->stop)
		rc = -ECANCELED;
	pthread_cond_broadcast(&s->claim_cond);
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* ---- per-stream status ---- */

/* Whether stream STREAM of TENANT is frozen (lost.c), and at which
 * version (*VERSION, OUT); with s->lock. */
static bool frozen_mark(struct sync *s, const char *tenant, uint64_t stream,
			uint64_t *version)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (!atomic_load(&s->nfrozen))
		return false;
	for (size_t i = 0; i < s->nfrozen_marks; i++)
		if (s->frozen_marks[i].stream == stream &&
		    !strcmp(s->frozen_marks[i].tenant, tenant)) {
			*version = s->frozen_marks[i].version;
			return true;
		}
	return false;
}

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
	uint64_t reached = 0, size = 0, tail, fversion = 0;
	bool sealed = false, frozen;
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
	frozen = frozen_mark(s, store_tenant_name(t), stream, &fversion);
	sync_mutex_unlock(&s->lock);
	if (frozen)
		n = snprintf(buf, len, "frozen %" PRIu64 "/%" PRIu64, fversion,
			     attr.version);
	else if (reached >= attr.version)
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
