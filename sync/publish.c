/*
 * publish.c: what a writer pass writes besides segments (docs/FORMAT.md):
 * each tenant's manifest, once its segments are up, then the deletion of
 * the objects only the previous manifest named; tenants.json; and the
 * removal of a tenant gone locally.  All of it runs on the sync thread and
 * uses its tenant state (struct tenant_state, thread-only) and s->b.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
/* tenants.json is written again this often, to heal a lost race with
 * another writer. */
#define TENANTS_CHECK_NS (60 * 1000000000LL)

/* ---- tenant manifests ---- */

/* Whether manifests are written by compare-and-swap on their tag: on
 * backends where the server or filesystem enforces it (s3, file).  Then a
 * writer taken over cannot land a manifest once the new writer published
 * one, however long it was paused.  (WebDAV's swap reads the object back
 * whole under a LOCK: too dear for every manifest.) */
static bool manifest_cas(const struct sync *s)
{
	return backend_caps(s->b) & BACKEND_CAP_CAS;
}

/* Reads KEY, the manifest, into TEXT, and with manifest_cas() its tag
 * into TS->manifest_tag ("" when there is none); with s->mlocks, the XXH3
 * of its text into TS->mtext_sum. */
static int get_manifest(struct sync *s, struct tenant_state *ts,
			const char *key, struct backend_buf *text)
{
	int rc;

	if (s->mlocks) {
		rc = backend_get(s->b, key, 0, BACKEND_TO_END, text);
		ts->mtext_known = !rc || rc == -ENOENT;
		ts->mtext_absent = rc == -ENOENT;
		ts->mtext_sum = rc ? 0 : XXH3_64bits(text->data, text->len);
		return rc;
	}
	if (!manifest_cas(s))
		return backend_get(s->b, key, 0, BACKEND_TO_END, text);
	rc = backend_get_tagged(s->b, key, text, ts->manifest_tag);
	if (rc == -ENOENT)
		ts->manifest_tag[0] = '\0';
	ts->manifest_tag_known = !rc || rc == -ENOENT;
	return rc;
}

/* Into *OUT (released first), what of TEXT, another writer's manifest
 * that this writer continues, counts as published by this writer: the
 * streams' ids, names, versions and tail entries, and the pieces they
 * name.  Its next manifests carry those tails (sync_tail_carry()) until
 * its own segments cover them, then retire their pieces like its own.
 * The segments and snapshots stay the other writer's: never deleted from
 * here. */
static int tails_of(const struct backend_buf *text, struct manifest *out)
{
	struct manifest m;
	int rc = sync_manifest_decode(text->data, text->len, &m);

	if (rc)
		return rc;
	for (size_t i = 0; i < m.nstreams; i++) {
		struct manifest_stream *ms = &m.streams[i];

		free(ms->segs);
		free(ms->snaps);
		ms->segs = NULL;
		ms->snaps = NULL;
		ms->nsegs = ms->nsnaps = 0;
	}
	sync_manifest_release(out);
	*out = m;
	return 0;
}

static int mlock_lock(struct sync *s, struct tenant_state *ts,
		      const char *key);
static int put_manifest_cas(struct sync *s, struct tenant_state *ts,
			    const char *key, const char *text);

/* With manifest_cas(): puts M, the other writer's manifest just read at
 * KEY (tag learnt), back under this writer's generation, by
 * compare-and-swap, before anything is seeded from it.  Its content stays
 * the same (and its writer, so that a restart here still seeds from it),
 * but its tag changes: a writer taken over, paused between its check of
 * the lease and its manifest put, can no longer land a manifest after
 * this read (docs/FORMAT.md, Fencing).  -ESTALE when it did meanwhile. */
static int stamp_manifest(struct sync *s, struct tenant_state *ts,
			  const char *key, const struct manifest *m)
{
	struct manifest stamped = *m;	/* shallow: M keeps what it owns */
	char *text = NULL;
	int rc;

	stamped.generation = ts->generation;
	stamped.updated_ns = sync_clock(CLOCK_REALTIME);
	rc = sync_manifest_encode(&stamped, true, &text);
	if (!rc)
		rc = put_manifest_cas(s, ts, key, text);
	free(text);
	return rc;
}

/* Reads the manifest at KEY into TEXT and M: 0, 1 when there is none (or
 * none we can read), or -errno.  With manifest_cas(), another writer's is
 * stamped (stamp_manifest()) and read again if it changed meanwhile. */
static int read_manifest_to_seed(struct sync *s, struct tenant_state *ts,
				 const char *key, struct backend_buf *text,
				 struct manifest *m)
{
	int rc, tries = 0;

	do {
		backend_buf_release(text);
		*text = (struct backend_buf){ .max = 256u << 20 };
		rc = get_manifest(s, ts, key, text);
		if (!rc)
			rc = backend_buf_terminate(text);
		if (rc == -ENOENT)
			return 1;	/* none yet */
		if (!rc) {
			rc = sync_manifest_decode(text->data, text->len, m);
			if (rc == -EIO)
				return 1;	/* not one we can read */
		}
		if (rc || !manifest_cas(s) ||
		    (m->writer && !strcmp(m->writer, s->identity)))
			return rc;
		rc = stamp_manifest(s, ts, key, m);
		if (rc)
			sync_manifest_release(m);
	} while (rc == -ESTALE && ++tries < 3);
	return rc;
}

int sync_seed_from_remote(struct sync *s, struct store_tenant *t,
			  struct tenant_state *ts, const char *tprefix,
			  char *what, size_t wlen)
{
	struct backend_buf text = { 0 };
	struct manifest m;
	char *key = sync_manifest_key(tprefix);
	int rc = 0;

	if (!key)
		return -ENOMEM;
	/* With manifest locks: locked before it is read, so that what is
	 * seeded is the last manifest of a writer taken over (its lock
	 * expired), never one it lands after the read. */
	if (s->mlocks && !ts->mlock[0]) {
		snprintf(what, wlen, "lock %s", key);
		rc = mlock_lock(s, ts, key);
		if (rc == -ENOENT)
			rc = 0;	/* none yet: created if absent */
	}
	if (rc) {
		free(key);
		return rc;
	}
	snprintf(what, wlen, "get %s", key);
	rc = read_manifest_to_seed(s, ts, key, &text, &m);
	if (!rc && (!m.writer || strcmp(m.writer, s->identity))) {
		/* Another writer's: continued, never replaced.  Its
		 * segments and snapshots stay (never listed as ours to
		 * delete); its tail entries are carried on. */
		rc = sync_seed_streams(s, t, tprefix, &m, what, wlen);
		if (!rc)
			rc = tails_of(&text, &ts->published);
		if (!rc) {
			free(ts->published_cmp);
			ts->published_cmp = NULL;
		}
		/* kept whole for the streams lost.c may freeze */
		sync_manifest_release(&ts->inherited);
		ts->inherited = m;
	} else if (!rc) {
		/* Ours, from before a restart: its objects are ours to
		 * delete, and streams removed while this writer was down get
		 * their tombstones at the next publication. */
		sync_manifest_release(&ts->published);
		ts->published = m;
		free(ts->published_cmp);
		ts->published_cmp = NULL;
	}
	backend_buf_release(&text);
	free(key);
	return rc > 0 ? 0 : rc;
}

/* Deletes TS->stale, the objects no manifest of ours names any more, but
 * those the published manifest names again.  Those whose delete fails
 * stay listed for the next pass. */
static int delete_stale(struct sync *s, struct tenant_state *ts,
			const char *tprefix, char *what, size_t wlen)
{
	struct sync_strvec named = { 0 }, left = { 0 };
	int rc = 0;

	if (s->cfg.nodelete || !ts->stale.n) {
		sync_strvec_release(&ts->stale);
		return 0;
	}
	/* Only while the tenant is surely ours: a writer taken over must
	 * not delete what the new one may name. */
	if (!sync_lease_fresh(s, ts))
		return 0;
	rc = sync_manifest_keys(&ts->published, tprefix, &named);
	for (size_t i = 0; !rc && i < ts->stale.n; i++) {
		const char *key = ts->stale.v[i];
		bool keep = false;

		for (size_t j = 0; !keep && j < named.n; j++)
			keep = !strcmp(named.v[j], key);
		if (keep)
			continue;
		snprintf(what, wlen, "delete %s", key);
		rc = backend_del(s->b, key);
		if (!rc)
			sync_lost_deleted(ts, key);
		if (rc)		/* retried from the next pass */
			for (size_t j = i; j < ts->stale.n; j++)
				if (sync_strvec_push(&left, ts->stale.v[j]))
					break;
	}
	sync_strvec_release(&named);
	sync_strvec_release(&ts->stale);
	ts->stale = left;
	return rc;
}

/* With manifest_cas(): TEXT over the manifest at KEY only while it is the
 * one this writer last saw (or still absent).  -ESTALE when another writer
 * wrote it meanwhile: the caller checks the lease again. */
static int put_manifest_cas(struct sync *s, struct tenant_state *ts,
			    const char *key, const char *text)
{
	struct backend_buf cur = { .max = 256u << 20 };
	char tag[BACKEND_TAG_MAX] = "";
	int rc = 0;

	if (!ts->manifest_tag_known)
		rc = get_manifest(s, ts, key, &cur);
	if (rc && rc != -ENOENT)
		goto out;
	if (ts->manifest_tag[0]) {
		rc = backend_put_if_match_buf(s->b, key, text, strlen(text),
					      ts->manifest_tag, tag);
	} else {
		rc = backend_put_if_absent_buf(s->b, key, text, strlen(text));
		if (rc == -EEXIST)
			rc = -ESTALE;
	}
	if (!rc && tag[0]) {
		snprintf(ts->manifest_tag, sizeof(ts->manifest_tag), "%s", tag);
	} else if (!rc) {
		/* No tag in the answer: learn it, and that it is ours. */
		backend_buf_release(&cur);
		cur = (struct backend_buf){ .max = 256u << 20 };
		rc = get_manifest(s, ts, key, &cur);
		if (!rc && (cur.len != strlen(text) ||
			    memcmp(cur.data, text, cur.len)))
			rc = -ESTALE;
	}
	if (rc == -ESTALE || rc == -ENOENT) {
		ts->manifest_tag_known = false;
		rc = -ESTALE;
	}
out:
	backend_buf_release(&cur);
	return rc;
}

/* ---- manifests under a WebDAV lock (s->mlocks) ----
 *
 * WebDAV servers ignore If-Match on PUT, so the manifest cannot be
 * swapped on its tag cheaply.  Instead the writer holds an exclusive LOCK
 * on its tenant's manifest for as long as it holds the lease (refreshed
 * with it, released with it) and PUTs the manifest with the lock token: a
 * writer taken over, whose lock expired while it was paused and which the
 * new writer now holds, gets 423 and is fenced.  Taking the lock waits
 * for the previous holder's to expire (-EAGAIN meanwhile), and is followed
 * by a read of the manifest: when it is not the text this writer last
 * read or wrote, someone else wrote it in between (-ESTALE: the caller
 * checks the lease).  A manifest is only locked once it exists (a LOCK
 * would create an empty one); the first is created if absent. */

/* The XXH3 of manifest TEXT, as get_manifest() records it. */
static uint64_t text_sum(const char *text)
{
	return XXH3_64bits(text, strlen(text));
}

/* Takes TS's lock on the manifest at KEY: 0, -ENOENT when there is no
 * manifest (nothing is left there), -EAGAIN while another writer's lock
 * holds (said once while it lasts). */
static int mlock_lock(struct sync *s, struct tenant_state *ts,
		      const char *key)
{
	char token[BACKEND_TAG_MAX] = "";
	int64_t sent = sync_clock(CLOCK_MONOTONIC);
	long granted;
	int rc = backend_lock(s->b, key, sync_mlock_seconds(s), token,
			      &granted);

	if (rc == -EAGAIN && !ts->mlock_waits)
		sync_log(LOG_NOTICE, "tenant %s: the manifest is locked by "
			 "another writer (its lock lasts until the server lets "
			 "it expire); not seeded or published until then",
			 ts->name);
	ts->mlock_waits = rc == -EAGAIN;
	if (rc)
		return rc;
	snprintf(ts->mlock, sizeof(ts->mlock), "%s", token);
	ts->mlock_mono = sent;
	return 0;
}

/* Takes TS's lock on the manifest at KEY (an existing object), then
 * checks the manifest is still what TS last saw.  1 when there is no
 * manifest (create it); 0; -EAGAIN while another writer's lock holds;
 * -ESTALE when it changed. */
static int mlock_take(struct sync *s, struct tenant_state *ts,
		      const char *key)
{
	struct backend_buf cur = { .max = 256u << 20 };
	uint64_t want;
	int rc = 0;

	if (!ts->mtext_known)
		rc = get_manifest(s, ts, key, &cur);
	backend_buf_release(&cur);
	if (rc && rc != -ENOENT)
		return rc;
	if (ts->mtext_absent)
		return 1;
	want = ts->mtext_sum;
	rc = mlock_lock(s, ts, key);
	if (rc == -ENOENT) {		/* removed meanwhile */
		ts->mtext_known = false;
		return -ESTALE;
	}
	if (rc)
		return rc;
	cur = (struct backend_buf){ .max = 256u << 20 };
	rc = get_manifest(s, ts, key, &cur);
	backend_buf_release(&cur);
	if (!rc && ts->mtext_sum != want)
		rc = -ESTALE;
	if (rc) {
		sync_mlock_release(s, ts);
		return rc == -ENOENT ? -ESTALE : rc;
	}
	return 0;
}

/* With s->mlocks: TEXT over the manifest at KEY under TS's lock, taken
 * first when TS holds none.  -ESTALE when another writer wrote it or
 * holds the lock now: the caller checks the lease. */
static int put_manifest_locked(struct sync *s, struct tenant_state *ts,
			       const char *key, const char *text)
{
	int rc = ts->mlock[0] ? 0 : mlock_take(s, ts, key);

	if (rc == 1) {
		rc = backend_put_if_absent_buf(s->b, key, text, strlen(text));
		if (rc == -EEXIST) {
			ts->mtext_known = false;
			return -ESTALE;
		}
		if (!rc) {
			ts->mtext_sum = text_sum(text);
			ts->mtext_absent = false;
			/* Locked from now on; failing that, at the next
			 * publication. */
			if (mlock_take(s, ts, key))
				ts->mlock[0] = '\0';
		}
		return rc;
	}
	if (!rc)
		rc = backend_put_locked_buf(s->b, key, text, strlen(text),
					    ts->mlock);
	if (rc == -ESTALE) {
		ts->mlock[0] = '\0';	/* gone: expired, or another's now */
		ts->mtext_known = false;
	} else if (!rc) {
		ts->mtext_sum = text_sum(text);
		ts->mtext_known = true;
	}
	return rc;
}

void sync_mlock_release(struct sync *s, struct tenant_state *ts)
{
	char *tp, *key;

	if (!ts->mlock[0])
		return;
	tp = sync_tenant_prefix(ts->name);
	key = tp ? sync_manifest_key(tp) : NULL;
	if (key)
		(void)backend_unlock(s->b, key, ts->mlock);
	ts->mlock[0] = '\0';
	free(key);
	free(tp);
}

int sync_mlocks_refresh_due(struct sync *s, char *what, size_t wlen)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	int first = 0;

	for (size_t i = 0; s->mlocks && i < s->nts; i++) {
		struct tenant_state *ts = &s->ts[i];
		char *tp, *key;
		long granted;
		int rc;

		if (!ts->mlock[0] || ts->fenced ||
		    now - ts->mlock_mono < s->mlock_period_ns)
			continue;
		tp = sync_tenant_prefix(ts->name);
		key = tp ? sync_manifest_key(tp) : NULL;
		rc = key ? 0 : -ENOMEM;
		if (!rc) {
			snprintf(what, wlen, "refresh the lock of %s", key);
			rc = backend_lock(s->b, key, sync_mlock_seconds(s),
					  ts->mlock, &granted);
		}
		if (!rc)
			ts->mlock_mono = now;
		else if (!backend_err_retryable(rc) && rc != -ENOMEM)
			/* Lost: taken again, with a check, when next
			 * published. */
			ts->mlock[0] = '\0';
		rc = backend_err_retryable(rc) || rc == -ENOMEM ? rc : 0;
		free(key);
		free(tp);
		if (rc && !first)
			first = rc;
		if (backend_err_retryable(rc))
			break;		/* the remote is down: not each */
	}
	return first;
}

/* Puts M as TPREFIX's manifest; once it is out, lists what only the old
 * one named for deletion and makes M (taken) TS->published, with COMPARE
 * (M's text without times, taken). */
static int put_manifest(struct sync *s, struct tenant_state *ts,
			const char *tprefix, struct manifest *m, char **compare,
			char *what, size_t wlen)
{
	char *key = sync_manifest_key(tprefix), *text = NULL;
	int rc = key ? sync_manifest_encode(m, true, &text) : -ENOMEM;

	if (!rc) {
		snprintf(what, wlen, "put %s", key);
		rc = s->mlocks ? put_manifest_locked(s, ts, key, text) :
		     manifest_cas(s) ? put_manifest_cas(s, ts, key, text) :
		     backend_put_buf(s->b, key, text, strlen(text));
		if (!rc)
			ts->published_len = strlen(text);
	}
	free(text);
	free(key);
	if (rc)
		return rc;
	if (!s->cfg.nodelete)
		rc = sync_manifest_stale_keys(&ts->published, m, tprefix,
					      &ts->stale);
	if (!rc && !s->cfg.nodelete)
		rc = sync_tail_retire(s, ts, &ts->published, m, tprefix);
	sync_manifest_release(&ts->published);
	ts->published = *m;
	*m = (struct manifest){ 0 };
	free(ts->published_cmp);
	ts->published_cmp = *compare;
	*compare = NULL;
	return rc;
}

int sync_publish_manifest(struct sync *s, struct store_tenant *t,
			  struct tenant_state *ts, const char *tprefix,
			  enum sync_flush flush, char *what, size_t wlen)
{
	int64_t now = sync_clock(CLOCK_REALTIME);
	struct manifest m;
	char *compare = NULL;
	bool reship = false;
	int rc;

	snprintf(what, wlen, "manifest of %s", store_tenant_name(t));
	rc = sync_manifest_build(t, s->identity, ts->generation, &m);
	if (rc)
		return rc;
	/* Objects the remote lost are put again, or their streams frozen,
	 * before a manifest names them (lost.c). */
	rc = sync_lost_check(s, t, ts, tprefix, &m, what, wlen);
	/* The tails shipped before stay until segments cover them (but
	 * those of lost pieces, shipped again); a flush adds what grew
	 * since (tail.c). */
	if (!rc)
		rc = sync_tail_carry(&ts->published, &m);
	if (!rc)
		rc = sync_lost_pieces(s, t, ts, tprefix, &m, &reship, what,
				      wlen);
	if (!rc && (flush != SYNC_FLUSH_NONE || reship))
		rc = sync_tail_ship(s, t, ts, tprefix, &m,
				    flush == SYNC_FLUSH_ALL, what, wlen);
	if (!rc)
		rc = sync_manifest_tombstones(&m, &ts->published, now);
	/* Compared without times: an mtime alone is not worth a manifest. */
	if (!rc)
		rc = sync_manifest_encode(&m, false, &compare);
	if (!rc && (!ts->published_cmp || strcmp(ts->published_cmp, compare))) {
		/* Every object it names is on the remote (lost.c). */
		rc = sync_lost_confirmed(s, ts, tprefix, &m, what, wlen);
		/* The fence.  With manifest_cas() it is the manifest's own
		 * swap, with s->mlocks its WebDAV lock: a writer that takes
		 * the lease over publishes its manifest (one generation up)
		 * as soon as it may, so ours can no longer land; the lease
		 * needs only its renewals then, while it is fresh.
		 * Elsewhere the lease must be ours, just now, by a
		 * conditional write (-EROFS: taken over). */
		if (!rc && (!(manifest_cas(s) || s->mlocks) ||
			    !sync_lease_fresh(s, ts)))
			rc = sync_lease_confirm(s, ts, what, wlen);
		m.updated_ns = now;
		if (!rc)
			rc = put_manifest(s, ts, tprefix, &m, &compare, what,
					  wlen);
		/* Someone else wrote the manifest since we last did: a
		 * takeover (then the lease says so), or a predecessor's last
		 * manifest; the next pass writes over it, tag learnt. */
		if (rc == -ESTALE) {
			rc = sync_lease_confirm(s, ts, what, wlen);
			if (!rc) {
				sync_log(LOG_NOTICE, "tenant %s: the manifest "
					 "changed on the remote since this "
					 "writer last wrote it; writing it "
					 "again once its objects are checked",
					 ts->name);
				/* a remote gone back in time may lack
				 * objects too */
				sync_lost_suspect(s, ts);
				rc = -EAGAIN;
			}
		}
	}
	/* Published (now or before): objects only older ones named go. */
	if (!rc)
		rc = delete_stale(s, ts, tprefix, what, wlen);
	sync_manifest_release(&m);
	free(compare);
	return rc;
}

/* ---- tenants ---- */

/* Deletes KEYS, one after the other, until one fails. */
static int delete_all(struct sync *s, const struct sync_strvec *keys,
		      char *what, size_t wlen)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < keys->n; i++) {
		snprintf(what, wlen, "delete %s", keys->v[i]);
		rc = backend_del(s->b, keys->v[i]);
	}
	return rc;
}

/* Deletes what this writer put under a tenant that is gone locally: the
 * objects its manifest names and those left to delete, the manifest, and
 * then the lease. */
static int drop_tenant(struct sync *s, struct tenant_state *ts, char *what,
		       size_t wlen)
{
	char *tp = sync_tenant_prefix(ts->name), *key = NULL;
	struct sync_strvec named = { 0 };
	int rc = tp ? 0 : -ENOMEM;

	/* Deleting a tenant's objects needs it to be surely ours. */
	if (!rc)
		rc = sync_lease_confirm(s, ts, what, wlen);
	if (rc == -EROFS) {	/* taken over: nothing of it is ours */
		free(tp);
		return 0;
	}
	if (!rc && !s->cfg.nodelete) {
		rc = sync_manifest_keys(&ts->published, tp, &named);
		if (!rc)
			rc = sync_manifest_piece_keys(&ts->published, tp, &named);
		if (!rc)
			rc = delete_all(s, &named, what, wlen);
		if (!rc)
			rc = delete_all(s, &ts->stale, what, wlen);
		if (!rc)
			rc = sync_tail_delete_due(s, ts, true, what, wlen);
	}
	if (!rc && !s->cfg.nodelete) {
		sync_mlock_release(s, ts);	/* a locked object refuses DELETE */
		key = sync_manifest_key(tp);
		snprintf(what, wlen, "delete %s", key ? key : "?");
		rc = key ? backend_del(s->b, key) : -ENOMEM;
	}
	if (!rc) {
		snprintf(what, wlen, "release the lease of %s", ts->name);
		rc = sync_lease_drop(s, ts);
		if (rc == -ESTALE || rc == -EIO)
			rc = 0;	/* another's now: left in place */
	}
	if (!rc) {
		sync_manifest_release(&ts->published);
		sync_strvec_release(&ts->stale);
		free(ts->published_cmp);
		ts->published_cmp = NULL;
		ts->leased = false;
		ts->seeded = false;
		ts->manifest_tag_known = false;
		ts->mtext_known = false;
	}
	sync_strvec_release(&named);
	free(key);
	free(tp);
	return rc;
}

static int tenant_cmp(const void *a, const void *b)
{
	json_object *const *x = a, *const *y = b, *nx, *ny;

	if (!json_object_object_get_ex(*x, "name", &nx) ||
	    !json_object_object_get_ex(*y, "name", &ny))
		return 0;
	return strcmp(json_object_get_string(nx), json_object_get_string(ny));
}

/* Adds to ARR the entries of OLD's tenants that are not ours: another
 * writer's, and ours that we removed (dropped). */
static void others_tenants(struct sync *s, json_object *old, json_object *arr)
{
	json_object *oarr;

	if (!old || !json_object_object_get_ex(old, "tenants", &oarr))
		return;
	for (size_t i = 0; i < json_object_array_length(oarr); i++) {
		json_object *o = json_object_array_get_idx(oarr, i), *n;
		const char *name;
		bool mine = false;

		if (!json_object_object_get_ex(o, "name", &n))
			continue;
		name = json_object_get_string(n);
		for (size_t j = 0; j < s->nts; j++)
			if (!strcmp(s->ts[j].name, name))
				mine = s->ts[j].leased;
		/* Ours: re-added when still here, dropped when removed
		 * here.  Anyone else's: kept. */
		if (!mine)
			json_object_array_add(arr, json_object_get(o));
	}
}

/* Adds to ARR an entry for each of NAMES whose lease we hold. */
static int our_tenants(struct sync *s, const struct sync_strvec *names,
		       json_object *arr)
{
	for (size_t i = 0; i < names->n; i++) {
		struct tenant_state *ts = sync_tstate(s, names->v[i]);
		char *enc;
		json_object *o;

		if (!ts || !ts->leased)
			continue;	/* not ours (yet), or another's */
		enc = sync_key_encode(names->v[i]);
		o = json_object_new_object();
		if (!enc || !o) {
			free(enc);
			json_object_put(o);
			return -ENOMEM;
		}
		json_object_object_add(o, "name",
				       json_object_new_string(names->v[i]));
		json_object_object_add(o, "key", json_object_new_string(enc));
		json_object_array_add(arr, o);
		free(enc);
	}
	return 0;
}

/* tenants.json lists the tenants of every writer of the remote: read it,
 * add ours, drop the ones we removed, and write it back when that changes
 * it (a lost race with another writer heals at the next pass). */
static int publish_tenants(struct sync *s, const struct sync_strvec *names,
			   char *what, size_t wlen)
{
	struct backend_buf cur = { .max = 64u << 20 };
	json_object *root = NULL, *arr, *old = NULL;
	const char *text;
	int rc;

	snprintf(what, wlen, "get %s", sync_tenants_key);
	rc = backend_get(s->b, sync_tenants_key, 0, BACKEND_TO_END, &cur);
	if (!rc)
		rc = backend_buf_terminate(&cur);
	if (rc && rc != -ENOENT)
		goto out;
	if (!rc)
		old = json_tokener_parse(cur.data);
	rc = 0;
	root = json_object_new_object();
	arr = json_object_new_array();
	if (!root || !arr) {
		json_object_put(arr);
		rc = -ENOMEM;
		goto out;
	}
	json_object_object_add(root, "format",
			       json_object_new_string("streamfs-tenants"));
	json_object_object_add(root, "version", json_object_new_int(1));
	json_object_object_add(root, "tenants", arr);
	others_tenants(s, old, arr);
	rc = our_tenants(s, names, arr);
	if (rc)
		goto out;
	/* In name order, so that writers agree on the text. */
	json_object_array_sort(arr, tenant_cmp);
	text = json_object_to_json_string_ext(root, JSON_FLAGS);
	if (!old || strcmp(json_object_to_json_string_ext(old, JSON_FLAGS),
			   text)) {
		snprintf(what, wlen, "put %s", sync_tenants_key);
		rc = backend_put_buf(s->b, sync_tenants_key, text, strlen(text));
	}
	/* Listed no more: now its objects and its lease can go. */
	for (size_t j = 0; !rc && j < s->nts; j++) {
		bool here = false;

		for (size_t i = 0; i < names->n; i++)
			here |= !strcmp(names->v[i], s->ts[j].name);
		if (!here && s->ts[j].leased)
			rc = drop_tenant(s, &s->ts[j], what, wlen);
	}
out:
	json_object_put(root);
	json_object_put(old);
	backend_buf_release(&cur);
	return rc;
}

/* The tenants this writer publishes, as one string. */
static char *names_signature(struct sync *s, const struct sync_strvec *names)
{
	size_t len = 1;
	char *out;

	for (size_t i = 0; i < names->n; i++)
		len += strlen(names->v[i]) + 3;
	out = malloc(len);
	if (!out)
		return NULL;
	out[0] = '\0';
	for (size_t i = 0; i < names->n; i++) {
		struct tenant_state *ts = sync_tstate(s, names->v[i]);

		strcat(out, names->v[i]);
		strcat(out, ts && ts->leased ? "/L" : "/-");
		strcat(out, "\n");
	}
	return out;
}

int sync_publish_tenants(struct sync *s, const struct sync_strvec *names,
			 char *what, size_t wlen)
{
	char *sig = names_signature(s, names);
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	int rc = 0;

	if (!sig)
		return -ENOMEM;
	if (!s->tenants_json || strcmp(sig, s->tenants_json) ||
	    now - s->tenants_checked_ns > TENANTS_CHECK_NS) {
		rc = publish_tenants(s, names, what, wlen);
		if (!rc) {
			free(s->tenants_json);
			s->tenants_json = sig;
			sig = NULL;
			s->tenants_checked_ns = now;
		}
	}
	free(sig);
	return rc;
}
