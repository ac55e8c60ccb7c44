/*
 * lost.c: objects the remote lost (docs/FORMAT.md, "Objects the remote
 * lost").
 *
 * A remote can lose objects behind the writer's back: a NAS share mounted
 * again from an older state, a bucket emptied of some segments by hand.
 * A writer never publishes a manifest that names an object it has not
 * confirmed on the remote since it last saw the remote whole: for each
 * tenant it keeps the set of objects it confirmed (ts->confirmed), from a
 * listing of the tenant's keys and from its own puts since (noted by any
 * thread through sync_lost_note_put()).  The set is thrown away at any
 * sign of loss (a manifest or lease of its own found changed, the remote
 * down or gone, `streamfs sync`, and every VERIFY_NS anyway), and the
 * tenant is listed again before its next manifest.
 *
 * An object the manifest names and the listing lacks is put again from
 * the local copy: a segment and its event index, a snapshot blob; the
 * tails of a lost piece are cut, and their bytes shipped again in a new
 * piece (tail.c ships what lies past the tails).  When the local copy is
 * gone too (evicted, or a segment seeded from another writer and never
 * read here), the stream is frozen: its entry stays the one last
 * published, nothing more of it is published, the log says so loudly
 * and the status lists it, while the other streams go on.  A frozen
 * stream thaws when a later listing finds the object back (copied back
 * by hand, the right share mounted).  A lost snapshot blob with no copy
 * here leaves the manifest (a snapshot is derived state: the program can
 * store it again), logged.
 *
 * Everything here runs on the sync thread with its tenant state, but
 * sync_lost_note_put(), which takes s->lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

/* Even without a sign of loss, a tenant's objects are listed this often. */
#define VERIFY_NS (600 * 1000000000LL)
/* Put notes kept for the sync thread at most: past that they are dropped
 * (their tenants are then listed again). */
#define NOTES_MAX 65536

/* ---- key sets ---- */

static uint64_t key_hash(const char *key)
{
	return XXH3_64bits(key, strlen(key));
}

static int ent_cmp(const void *a, const void *b)
{
	const struct sync_keyent *x = a, *y = b;

	return x->hash < y->hash ? -1 : x->hash > y->hash;
}

int sync_keyset_add(struct sync_keyset *ks, const char *key, uint64_t size)
{
	if (STORE_ARRAY_RESERVE(ks->v, ks->alloc, ks->n + 1, 64))
		return -ENOMEM;
	ks->v[ks->n++] = (struct sync_keyent){ key_hash(key), size };
	ks->sorted = false;
	return 0;
}

/* Sorts KS and merges the entries of one key. */
static void keyset_sort(struct sync_keyset *ks)
{
	size_t out = 0;

	if (ks->sorted)
		return;
	if (ks->n > 1)
		qsort(ks->v, ks->n, sizeof(*ks->v), ent_cmp);
	for (size_t i = 0; i < ks->n; i++) {
		if (out && ks->v[out - 1].hash == ks->v[i].hash) {
			/* sizes of one key differ only when the object was
			 * replaced (a put after the listing): the last one
			 * is the truth, but qsort keeps no order, so the
			 * size is taken as unknown */
			if (ks->v[out - 1].size != ks->v[i].size)
				ks->v[out - 1].size = SYNC_SIZE_UNKNOWN;
			continue;
		}
		ks->v[out++] = ks->v[i];
	}
	ks->n = out;
	ks->sorted = true;
}

static struct sync_keyent *keyset_find(struct sync_keyset *ks, const char *key)
{
	struct sync_keyent want = { .hash = key_hash(key) };

	keyset_sort(ks);
	return ks->n ? bsearch(&want, ks->v, ks->n, sizeof(*ks->v), ent_cmp)
		     : NULL;
}

bool sync_keyset_has(struct sync_keyset *ks, const char *key, uint64_t size)
{
	struct sync_keyent *e = keyset_find(ks, key);

	return e && (size == SYNC_SIZE_UNKNOWN || e->size == SYNC_SIZE_UNKNOWN ||
		     e->size == size);
}

static void keyset_del(struct sync_keyset *ks, const char *key)
{
	struct sync_keyent *e = keyset_find(ks, key);

	if (!e)
		return;
	memmove(e, e + 1, (size_t)(ks->v + ks->n - (e + 1)) * sizeof(*e));
	ks->n--;
}

void sync_keyset_release(struct sync_keyset *ks)
{
	free(ks->v);
	*ks = (struct sync_keyset){ 0 };
}

/* ---- notes of puts ---- */

static void notes_clear(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (size_t i = 0; i < s->nput_notes; i++)
		free(s->put_notes[i].key);
	s->nput_notes = 0;
}

void sync_lost_note_put(struct sync *s, const char *key, uint64_t size)
{
	char *copy = strdup(key);

	sync_mutex_lock(&s->lock);
	if (s->nput_notes >= NOTES_MAX)
		notes_clear(s);		/* their tenants get listed */
	if (copy && !STORE_ARRAY_RESERVE(s->put_notes, s->aput_notes,
					 s->nput_notes + 1, 64)) {
		s->put_notes[s->nput_notes++] =
			(struct sync_put_note){ copy, size };
		copy = NULL;
	}
	sync_mutex_unlock(&s->lock);
	free(copy);
}

/* Takes the notes of keys below TPREFIX: into TS->confirmed with KEEP,
 * else dropped (a listing follows).  A note that cannot be kept leaves
 * its key unconfirmed, which only costs a listing. */
static void notes_take(struct sync *s, struct tenant_state *ts,
		       const char *tprefix, bool keep)
{
	size_t plen = strlen(tprefix), out = 0;

	sync_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nput_notes; i++) {
		struct sync_put_note *n = &s->put_notes[i];

		if (strncmp(n->key, tprefix, plen)) {
			s->put_notes[out++] = *n;
			continue;
		}
		if (keep && sync_keyset_add(&ts->confirmed, n->key, n->size))
			ts->whole = false;	/* no memory: listed instead */
		free(n->key);
	}
	s->nput_notes = out;
	sync_mutex_unlock(&s->lock);
}

void sync_lost_suspect(struct sync *s, struct tenant_state *ts)
{
	(void)s;
	ts->whole = false;
}

void sync_lost_suspect_all(struct sync *s)
{
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].whole = false;
}

void sync_lost_deleted(struct tenant_state *ts, const char *key)
{
	keyset_del(&ts->confirmed, key);
}

/* ---- listing ---- */

static int list_collect(void *arg, const struct backend_entry *e)
{
	return sync_keyset_add(arg, e->key, e->size);
}

/* Lists TS's objects below TPREFIX into a fresh TS->confirmed. */
static int list_tenant(struct sync *s, struct tenant_state *ts,
		       const char *tprefix, char *what, size_t wlen)
{
	struct sync_keyset ks = { 0 };
	int rc;

	notes_take(s, ts, tprefix, false);
	snprintf(what, wlen, "list %s", tprefix);
	rc = backend_list(s->b, tprefix, list_collect, &ks);
	if (rc) {
		sync_what_why(what, wlen, s->b);
		sync_keyset_release(&ks);
		return rc;
	}
	keyset_sort(&ks);
	sync_keyset_release(&ts->confirmed);
	ts->confirmed = ks;
	sync_keyset_release(&ts->lost);
	ts->whole = true;
	ts->listed_ns = sync_clock(CLOCK_MONOTONIC);
	return 0;
}

/* After a listing: when the manifest this writer published last is gone
 * from the remote, or has another length (an older one), it is published
 * again at once, even if nothing changed here. */
static int manifest_check(struct tenant_state *ts, const char *tprefix)
{
	char *key = sync_manifest_key(tprefix);

	if (!key)
		return -ENOMEM;
	if (ts->published_cmp && ts->published_len &&
	    !sync_keyset_has(&ts->confirmed, key, ts->published_len)) {
		sync_log(LOG_WARNING, "tenant %s: the remote lost the manifest "
			 "this writer published last (or holds another one); "
			 "publishing it again", ts->name);
		free(ts->published_cmp);
		ts->published_cmp = NULL;
		ts->manifest_tag_known = false;
	}
	free(key);
	return 0;
}

/* ---- what a manifest names ---- */

/* Whether KEY (SIZE bytes) is known: confirmed, or known lost. */
static bool known(struct tenant_state *ts, const char *key, uint64_t size)
{
	return sync_keyset_has(&ts->confirmed, key, size) ||
	       sync_keyset_has(&ts->lost, key, SYNC_SIZE_UNKNOWN);
}

/* Whether every object of MS (segments, indexes, snapshots) is known;
 * -ENOMEM. */
static int stream_known(struct tenant_state *ts, const char *tprefix,
			const struct manifest_stream *ms, bool *yes)
{
	*yes = true;
	for (size_t j = 0; *yes && j < ms->nsegs; j++) {
		const struct manifest_seg *g = &ms->segs[j];
		char *k = sync_segment_key(tprefix, g->seg, g->checksum, false);
		char *ik = sync_segment_key(tprefix, g->seg, g->checksum, true);

		if (!k || !ik) {
			free(k);
			free(ik);
			return -ENOMEM;
		}
		*yes = known(ts, k, g->length) &&
		       known(ts, ik, SYNC_SIZE_UNKNOWN);
		free(k);
		free(ik);
	}
	for (size_t j = 0; *yes && j < ms->nsnaps; j++) {
		char *k = sync_snapshot_key(tprefix, ms->snaps[j].version,
					    ms->snaps[j].checksum);

		if (!k)
			return -ENOMEM;
		*yes = known(ts, k, ms->snaps[j].length);
		free(k);
	}
	return 0;
}

/* Whether every object M and the pieces of TS->published name is known. */
static int all_known(struct tenant_state *ts, const char *tprefix,
		     const struct manifest *m, bool *yes)
{
	int rc = 0;

	*yes = true;
	for (size_t i = 0; !rc && *yes && i < m->nstreams; i++)
		rc = stream_known(ts, tprefix, &m->streams[i], yes);
	for (size_t i = 0; !rc && *yes && i < ts->published.npieces; i++) {
		const struct manifest_piece *pc = &ts->published.pieces[i];
		char *k = sync_piece_key(tprefix, pc->seq, pc->checksum);

		if (!k)
			return -ENOMEM;
		*yes = known(ts, k, pc->length);
		free(k);
	}
	return rc;
}

/* ---- repairs ---- */

/* What sync_lost_check() found of one stream. */
struct stream_loss {
	char *gone;		/* first object lost with no copy here */
	uint64_t n;		/* objects found lost */
};

static const struct manifest_stream *stream_in(const struct manifest *m,
					       uint64_t id)
{
	for (size_t i = 0; i < m->nstreams; i++)
		if (m->streams[i].id == id)
			return &m->streams[i];
	return NULL;
}

/* The entry stream ID freezes at: the one this writer last published,
 * or, before its first publication after continuing another writer's
 * history (its published copy then holds that writer's tails only, not
 * its segments: publish.c), the other writer's. */
static const struct manifest_stream *
freeze_source(const struct tenant_state *ts, uint64_t id)
{
	const struct manifest_stream *pub = stream_in(&ts->published, id);
	const struct manifest_stream *inh = stream_in(&ts->inherited, id);

	if (pub && inh && !pub->nsegs && inh->nsegs)
		return inh;
	return pub ? pub : inh;
}

/* Notes that KEY is lost with no copy here (logged once per listing). */
static int lost_for_good(struct tenant_state *ts, struct stream_loss *sl,
			 const char *key)
{
	if (!sync_keyset_has(&ts->lost, key, SYNC_SIZE_UNKNOWN)) {
		int rc = sync_keyset_add(&ts->lost, key, SYNC_SIZE_UNKNOWN);

		if (rc)
			return rc;
		sl->n++;	/* counted once per listing */
	}
	if (!sl->gone)
		sl->gone = strdup(key);
	return sl->gone ? 0 : -ENOMEM;
}

struct seg_pick {
	uint64_t seg;
	struct store_segment found;
	bool have;
};

static int seg_pick(void *arg, const struct store_segment *g)
{
	struct seg_pick *p = arg;

	if (g->seg == p->seg && !g->tail) {
		p->found = *g;
		p->have = true;
	}
	return 0;
}

/* Segment G of MS is lost (its object or index): queued in PUT when its
 * bytes are here, else lost for good. */
static int seg_lost(struct store_tenant *t, struct tenant_state *ts,
		    const struct manifest_stream *ms,
		    const struct manifest_seg *g, const char *key,
		    struct sync_seg_vec *put, struct stream_loss *sl)
{
	struct seg_pick p = { .seg = g->seg };
	int rc = store_stream_segments(t, ms->id, seg_pick, &p);

	if (rc && rc != -ENOENT)
		return rc;
	if (p.have && p.found.state == STORE_SEG_UPLOADED &&
	    p.found.checksum == g->checksum) {
		sl->n++;
		return sync_seg_collect(put, &p.found);
	}
	return lost_for_good(ts, sl, key);
}

/* The segments of MS whose object or index the remote lacks. */
static int check_segs(struct store_tenant *t, struct tenant_state *ts,
		      const char *tprefix, const struct manifest_stream *ms,
		      struct sync_seg_vec *put, struct stream_loss *sl)
{
	int rc = 0;

	for (size_t j = 0; !rc && j < ms->nsegs; j++) {
		const struct manifest_seg *g = &ms->segs[j];
		char *k = sync_segment_key(tprefix, g->seg, g->checksum, false);
		char *ik = sync_segment_key(tprefix, g->seg, g->checksum, true);

		if (!k || !ik)
			rc = -ENOMEM;
		else if (!sync_keyset_has(&ts->confirmed, k, g->length))
			rc = seg_lost(t, ts, ms, g, k, put, sl);
		else if (!sync_keyset_has(&ts->confirmed, ik, SYNC_SIZE_UNKNOWN))
			rc = seg_lost(t, ts, ms, g, ik, put, sl);
		free(k);
		free(ik);
	}
	return rc;
}

/* The snapshots of MS the remote lacks are put again; those with no
 * copy here leave MS (logged). */
static int check_snaps(struct sync *s, struct store_tenant *t,
		       struct tenant_state *ts, const char *tprefix,
		       struct manifest_stream *ms, uint64_t *lost,
		       uint64_t *reput, char *what, size_t wlen)
{
	size_t out = 0;
	int rc = 0;

	for (size_t j = 0; !rc && j < ms->nsnaps; j++) {
		const struct manifest_snap *g = &ms->snaps[j];
		char *k = sync_snapshot_key(tprefix, g->version, g->checksum);
		struct store_snapshot snap = {
			.stream = ms->id, .version = g->version,
			.length = g->length, .checksum = g->checksum };
		bool keep = true;

		if (!k) {
			rc = -ENOMEM;
			break;
		}
		if (sync_keyset_has(&ts->lost, k, SYNC_SIZE_UNKNOWN)) {
			keep = false;	/* lost for good, said already */
		} else if (!sync_keyset_has(&ts->confirmed, k, g->length)) {
			(*lost)++;
			rc = sync_snapshot_put(s, t, tprefix, &snap, what, wlen);
			if (!rc) {
				(*reput)++;
				rc = sync_keyset_add(&ts->confirmed, k, g->length);
			} else if (rc == -ENOENT) {
				keep = false;
				sync_log(LOG_ERR, "tenant %s: the remote lost "
					 "snapshot %s of stream %s and it is "
					 "not here either: published no more "
					 "(store it again)", ts->name, k,
					 ms->name);
				rc = sync_keyset_add(&ts->lost, k, SYNC_SIZE_UNKNOWN);
			} else {
				sync_what_why(what, wlen, s->b);
			}
		}
		if (keep && !rc)
			ms->snaps[out++] = *g;
		free(k);
	}
	if (!rc)
		ms->nsnaps = out;
	return rc;
}

/* MS (of M) publishes nothing more: its entry becomes PUB, the one last
 * published (here, or by the writer this one continued; without tails:
 * carried from it later), or, when there is none, its segments before the
 * first lost one. */
static int freeze_entry(struct manifest_stream *ms,
			const struct manifest_stream *pub, const char *tprefix,
			struct tenant_state *ts)
{
	size_t keep = 0;

	ms->frozen = true;
	free(ms->tails);
	ms->tails = NULL;
	ms->ntails = 0;
	if (pub) {
		struct manifest_seg *segs = NULL;
		struct manifest_snap *snaps = NULL;

		if (pub->nsegs &&
		    !(segs = malloc(pub->nsegs * sizeof(*segs))))
			return -ENOMEM;
		if (pub->nsnaps &&
		    !(snaps = malloc(pub->nsnaps * sizeof(*snaps)))) {
			free(segs);
			return -ENOMEM;
		}
		if (segs)
			memcpy(segs, pub->segs, pub->nsegs * sizeof(*segs));
		if (snaps)
			memcpy(snaps, pub->snaps, pub->nsnaps * sizeof(*snaps));
		free(ms->segs);
		free(ms->snaps);
		ms->segs = segs;
		ms->nsegs = pub->nsegs;
		ms->snaps = snaps;
		ms->nsnaps = pub->nsnaps;
		ms->size = pub->size;
		ms->version = pub->version;
		return 0;
	}
	/* Never published by this writer (its manifest lost as well): the
	 * segments the remote still has, up to the first it lacks. */
	for (; keep < ms->nsegs; keep++) {
		const struct manifest_seg *g = &ms->segs[keep];
		char *k = sync_segment_key(tprefix, g->seg, g->checksum, false);
		char *ik = sync_segment_key(tprefix, g->seg, g->checksum, true);
		bool ok = k && ik &&
			  sync_keyset_has(&ts->confirmed, k, g->length) &&
			  sync_keyset_has(&ts->confirmed, ik, SYNC_SIZE_UNKNOWN);

		free(k);
		free(ik);
		if (!ok)
			break;
	}
	ms->nsegs = keep;
	ms->size = keep ? ms->segs[keep - 1].offset + ms->segs[keep - 1].length
			: 0;
	ms->version = keep ? ms->segs[keep - 1].first_version +
			     ms->segs[keep - 1].count - 1 : 0;
	while (ms->nsnaps && ms->snaps[ms->nsnaps - 1].version > ms->version)
		ms->nsnaps--;
	return 0;
}

static struct sync_frozen *frozen_of(struct tenant_state *ts, uint64_t id)
{
	for (size_t i = 0; i < ts->nfrozen; i++)
		if (ts->frozen[i].id == id)
			return &ts->frozen[i];
	return NULL;
}

/* MS froze (lost object KEY): recorded in TS, logged when new. */
static int frozen_add(struct sync *s, struct tenant_state *ts,
		      const struct manifest_stream *ms, const char *key)
{
	struct sync_frozen *f = frozen_of(ts, ms->id), *v;

	if (f) {
		f->seen = true;
		f->version = ms->version;
		return 0;
	}
	v = reallocarray(ts->frozen, ts->nfrozen + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	ts->frozen = v;
	f = &v[ts->nfrozen];
	*f = (struct sync_frozen){ .id = ms->id, .version = ms->version,
				   .name = strdup(ms->name),
				   .key = strdup(key), .seen = true };
	if (!f->name || !f->key) {
		free(f->name);
		free(f->key);
		return -ENOMEM;
	}
	ts->nfrozen++;
	sync_log(LOG_ERR, "tenant %s: stream %s FROZEN: the remote %s lost %s "
		 "and no copy of it is left here; the stream stays published "
		 "at version %" PRIu64 " and nothing more of it is published "
		 "until the object is back on the remote (or the stream is "
		 "removed); its later events stay in SOURCE; the other streams "
		 "go on", ts->name, ms->name, s->url_shown, key, ms->version);
	return 0;
}

/* The streams frozen before and not found frozen now thaw (logged). */
static void frozen_sweep(struct tenant_state *ts)
{
	size_t out = 0;

	for (size_t i = 0; i < ts->nfrozen; i++) {
		struct sync_frozen *f = &ts->frozen[i];

		if (f->seen) {
			f->seen = false;
			ts->frozen[out++] = *f;
			continue;
		}
		sync_log(LOG_NOTICE, "tenant %s: stream %s is not frozen any "
			 "more (the remote has %s back, or the stream went)",
			 ts->name, f->name, f->key);
		free(f->name);
		free(f->key);
	}
	ts->nfrozen = out;
}

/* TS's frozen streams into s->frozen_marks (sync_stream_status()). */
static int marks_update(struct sync *s, struct tenant_state *ts)
{
	int rc = 0;
	size_t out = 0;

	sync_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nfrozen_marks; i++) {
		if (strcmp(s->frozen_marks[i].tenant, ts->name)) {
			s->frozen_marks[out++] = s->frozen_marks[i];
			continue;
		}
		free(s->frozen_marks[i].tenant);
	}
	s->nfrozen_marks = out;
	for (size_t i = 0; !rc && i < ts->nfrozen; i++) {
		char *name = strdup(ts->name);

		if (!name || STORE_ARRAY_RESERVE(s->frozen_marks,
						 s->afrozen_marks,
						 s->nfrozen_marks + 1, 8)) {
			free(name);
			rc = -ENOMEM;
			break;
		}
		s->frozen_marks[s->nfrozen_marks++] = (struct sync_frozen_mark){
			name, ts->frozen[i].id, ts->frozen[i].version };
	}
	atomic_store(&s->nfrozen, (unsigned)s->nfrozen_marks);
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* Puts again the segments in PUT (their objects and indexes). */
static int reput_segments(struct sync *s, struct store_tenant *t,
			  const char *tprefix, const struct sync_seg_vec *put,
			  uint64_t *reput, char *what, size_t wlen)
{
	struct sync_upload_out out;
	int rc;

	if (!put->n)
		return 0;
	rc = sync_upload(s, t, tprefix, put, true, &out, what, wlen);
	*reput += 2 * out.done;
	return rc;
}

int sync_lost_check(struct sync *s, struct store_tenant *t,
		    struct tenant_state *ts, const char *tprefix,
		    struct manifest *m, char *what, size_t wlen)
{
	struct sync_seg_vec put = { 0 };
	uint64_t reput = 0, lost = 0;
	bool list = !ts->whole ||
		    sync_clock(CLOCK_MONOTONIC) - ts->listed_ns >= VERIFY_NS;
	int rc = 0;

	if (!list) {
		notes_take(s, ts, tprefix, true);
		rc = all_known(ts, tprefix, m, &list);
		list = !list;
	}
	if (!rc && list)
		rc = list_tenant(s, ts, tprefix, what, wlen);
	if (!rc && list)
		rc = manifest_check(ts, tprefix);
	for (size_t i = 0; !rc && i < m->nstreams; i++) {
		struct manifest_stream *ms = &m->streams[i];
		struct stream_loss sl = { 0 };

		rc = check_segs(t, ts, tprefix, ms, &put, &sl);
		if (!rc && !sl.gone)
			rc = check_snaps(s, t, ts, tprefix, ms, &sl.n, &reput,
					 what, wlen);
		lost += sl.n;
		if (!rc && sl.gone)
			rc = freeze_entry(ms, freeze_source(ts, ms->id),
					  tprefix, ts);
		if (!rc && sl.gone)
			rc = frozen_add(s, ts, ms, sl.gone);
		free(sl.gone);
	}
	if (!rc && put.n) {
		sync_log(LOG_WARNING, "tenant %s: the remote %s lost %zu "
			 "segment(s) this writer had put; putting them again "
			 "from the local copies before any manifest names them",
			 ts->name, s->url_shown, put.n);
		rc = reput_segments(s, t, tprefix, &put, &reput, what, wlen);
		/* taken as put by the notes (upload.c) */
		if (!rc)
			notes_take(s, ts, tprefix, true);
	}
	if (!rc) {
		frozen_sweep(ts);
		rc = marks_update(s, ts);
	}
	sync_mutex_lock(&s->lock);
	s->status.lost_objects += lost;
	s->status.reput_objects += reput;
	sync_mutex_unlock(&s->lock);
	free(put.v);
	return rc;
}

/* ---- pieces ---- */

/* Rows of a segment within [from, to) of its stream. */
struct range_rows {
	uint64_t from, to;
	struct store_batch *v;
	size_t n, alloc;
};

static int range_collect(void *arg, const struct store_batch *b)
{
	struct range_rows *r = arg;

	if (b->offset < r->from || b->offset >= r->to)
		return 0;
	if (STORE_ARRAY_RESERVE(r->v, r->alloc, r->n + 1, 16))
		return -ENOMEM;
	r->v[r->n++] = *b;
	return 0;
}

/* Adds to P the chunk of stream STREAM that TL names, from T's local
 * segment: its rows and bytes, each row checked against its hash.
 * -ENOENT or -EIO when the bytes are not here as they were shipped. */
static int chunk_rebuild(struct store_tenant *t, struct piece *p,
			 uint64_t stream, const struct manifest_tail *tl)
{
	struct range_rows r = { .from = tl->offset,
				.to = tl->offset + tl->length };
	struct piece_chunk c = { .stream = stream, .tail = *tl };
	char *path = NULL;
	uint64_t len = 0, at = 0;
	int fd = -1, rc = store_segment_batches(t, tl->seg, range_collect, &r);

	for (size_t i = 0; !rc && i < r.n; i++)
		len += r.v[i].length;
	if (!rc && (!r.n || r.v[0].offset != tl->offset || len != tl->length))
		rc = -EIO;
	if (!rc) {
		path = store_segment_path(t, tl->seg);
		c.bytes = malloc(len ? len : 1);
		rc = path && c.bytes ? 0 : -ENOMEM;
	}
	if (!rc && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		rc = -errno;
	if (!rc)
		rc = store_pread_all(fd, c.bytes, len, tl->offset - tl->seg_offset);
	for (size_t i = 0; !rc && i < r.n; i++) {
		if (XXH3_64bits(c.bytes + at, r.v[i].length) != r.v[i].hash)
			rc = -EIO;
		at += r.v[i].length;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	if (!rc)
		rc = STORE_ARRAY_RESERVE(p->chunks, p->alloc, p->n + 1, 8);
	if (rc) {
		free(c.bytes);
		free(r.v);
		return rc;
	}
	c.rows = r.v;
	c.nrows = r.n;
	p->chunks[p->n++] = c;
	return 0;
}

/* Puts piece MP (key KEY) again, made anew from the local segments as PUB,
 * the manifest that named it, describes it: only when the result is the
 * same object (length and XXH3), else -ESTALE.  The chunks go in the
 * order a flush makes them: by stream as PUB lists them. */
static int piece_reput(struct sync *s, struct store_tenant *t,
		       const struct manifest *pub, const struct manifest_piece *mp,
		       const char *key, char *what, size_t wlen)
{
	struct piece p = { .seq = mp->seq, .generation = mp->generation,
			   .owns_bytes = true };
	struct backend_buf buf = { .max = mp->length + 1 };
	int rc = 0;

	for (size_t i = 0; !rc && i < pub->nstreams; i++)
		for (size_t j = 0; !rc && j < pub->streams[i].ntails; j++)
			if (pub->streams[i].tails[j].piece == mp->seq)
				rc = chunk_rebuild(t, &p, pub->streams[i].id,
						   &pub->streams[i].tails[j]);
	if (!rc)
		rc = sync_piece_encode(&p, &buf);
	if (!rc && (buf.len != mp->length ||
		    XXH3_64bits(buf.data, buf.len) != mp->checksum))
		rc = -ESTALE;
	if (!rc) {
		snprintf(what, wlen, "put %s", key);
		rc = backend_put_buf(s->b, key, buf.data, buf.len);
		if (rc)
			sync_what_why(what, wlen, s->b);
	}
	sync_piece_release(&p);
	backend_buf_release(&buf);
	return rc;
}

/* Piece MP of M, which the remote lacks: put again when it can be made
 * anew here (1), or known lost (0: its tails are cut). */
static int piece_lost(struct sync *s, struct store_tenant *t,
		      struct tenant_state *ts, const struct manifest_piece *mp,
		      const char *key, uint64_t *reput, char *what, size_t wlen)
{
	int rc;

	if (sync_keyset_has(&ts->lost, key, SYNC_SIZE_UNKNOWN))
		return 0;
	rc = piece_reput(s, t, &ts->published, mp, key, what, wlen);
	if (!rc) {
		sync_log(LOG_WARNING, "tenant %s: the remote lost piece %s; "
			 "put again, made anew from the local segments",
			 ts->name, key);
		(*reput)++;
		rc = sync_keyset_add(&ts->confirmed, key, mp->length);
		return rc ? rc : 1;
	}
	if (rc != -ESTALE && rc != -ENOENT && rc != -EIO)
		return rc;	/* the remote failed: the manifest waits */
	sync_log(LOG_WARNING, "tenant %s: the remote lost piece %s, which "
		 "cannot be made again here; its bytes go up again in a new "
		 "piece", ts->name, key);
	rc = sync_keyset_add(&ts->lost, key, SYNC_SIZE_UNKNOWN);
	return rc;
}

/* Only the pieces some tail of M still names stay listed. */
static void pieces_prune(struct manifest *m)
{
	size_t out = 0;

	for (size_t i = 0; i < m->npieces; i++) {
		bool named = false;

		for (size_t j = 0; !named && j < m->nstreams; j++)
			for (size_t k = 0; !named && k < m->streams[j].ntails; k++)
				named = m->streams[j].tails[k].piece ==
					m->pieces[i].seq;
		if (named)
			m->pieces[out++] = m->pieces[i];
	}
	m->npieces = out;
}

int sync_lost_pieces(struct sync *s, struct store_tenant *t,
		     struct tenant_state *ts, const char *tprefix,
		     struct manifest *m, bool *reship, char *what, size_t wlen)
{
	uint64_t reput = 0, lost = 0;
	int rc = 0;

	*reship = false;
	for (size_t i = 0; !rc && i < m->npieces; i++) {
		const struct manifest_piece *mp = &m->pieces[i];
		char *k = sync_piece_key(tprefix, mp->seq, mp->checksum);

		if (!k)
			return -ENOMEM;
		if (!sync_keyset_has(&ts->confirmed, k, mp->length)) {
			lost += !sync_keyset_has(&ts->lost, k, SYNC_SIZE_UNKNOWN);
			rc = piece_lost(s, t, ts, mp, k, &reput, what, wlen);
			rc = rc > 0 ? 0 : rc;
		}
		free(k);
	}
	/* The tails of pieces lost for good are cut (frozen streams keep
	 * theirs); the bytes from there go in a new piece. */
	for (size_t i = 0; !rc && i < m->nstreams; i++) {
		struct manifest_stream *ms = &m->streams[i];

		for (size_t j = 0; !ms->frozen && j < ms->ntails; j++) {
			const struct manifest_piece *pc =
				sync_manifest_piece(m, ms->tails[j].piece);
			char *k = pc ? sync_piece_key(tprefix, pc->seq,
						      pc->checksum) : NULL;
			bool ok = k && sync_keyset_has(&ts->confirmed, k,
						       pc->length);

			if (pc && !k)
				return -ENOMEM;
			free(k);
			if (!ok) {
				ms->ntails = j;
				*reship = true;
			}
		}
	}
	if (!rc)
		pieces_prune(m);
	sync_mutex_lock(&s->lock);
	s->status.lost_objects += lost;
	s->status.reput_objects += reput;
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* ---- the last check ---- */

int sync_lost_confirmed(struct sync *s, struct tenant_state *ts,
			const char *tprefix, const struct manifest *m,
			char *what, size_t wlen)
{
	const char *missing = NULL;
	char *k = NULL;

	notes_take(s, ts, tprefix, true);
	for (size_t i = 0; !missing && i < m->nstreams; i++) {
		const struct manifest_stream *ms = &m->streams[i];
		bool yes;

		if (ms->frozen)
			continue;
		if (stream_known(ts, tprefix, ms, &yes))
			return -ENOMEM;
		if (!yes)
			missing = ms->name;
	}
	for (size_t i = 0; !missing && i < m->npieces; i++) {
		k = sync_piece_key(tprefix, m->pieces[i].seq,
				   m->pieces[i].checksum);
		if (!k)
			return -ENOMEM;
		if (!sync_keyset_has(&ts->confirmed, k, m->pieces[i].length))
			missing = k;
		else
			free(k);
		k = missing ? k : NULL;
	}
	if (missing) {
		/* Not expected (lost.c is told of every put): list again. */
		snprintf(what, wlen, "manifest of %s: %s not confirmed on the "
			 "remote", ts->name, missing);
		ts->whole = false;
	}
	free(k);
	return missing ? -EAGAIN : 0;
}

size_t sync_lost_note(const struct tenant_state *ts, char *note, size_t len)
{
	size_t used = 0;

	if (len)
		note[0] = '\0';
	for (size_t i = 0; i < ts->nfrozen && used < len; i++) {
		int n = snprintf(note + used, len - used, "%s%s at version %"
				 PRIu64 " (lost %s)", i ? ", " : "",
				 ts->frozen[i].name, ts->frozen[i].version,
				 ts->frozen[i].key);

		used = n < 0 ? len : used + (size_t)n;
	}
	if (used >= len && len > 4)
		memcpy(note + len - 4, "...", 4);
	return ts->nfrozen;
}

void sync_lost_release(struct tenant_state *ts)
{
	sync_manifest_release(&ts->inherited);
	sync_keyset_release(&ts->confirmed);
	sync_keyset_release(&ts->lost);
	for (size_t i = 0; i < ts->nfrozen; i++) {
		free(ts->frozen[i].name);
		free(ts->frozen[i].key);
	}
	free(ts->frozen);
	ts->frozen = NULL;
	ts->nfrozen = 0;
}

void sync_lost_free(struct sync *s)
{
	/* no thread is left (and s->lock may be gone) */
	for (size_t i = 0; i < s->nput_notes; i++)
		free(s->put_notes[i].key);
	for (size_t i = 0; i < s->nfrozen_marks; i++)
		free(s->frozen_marks[i].tenant);
	free(s->put_notes);
	free(s->frozen_marks);
}
