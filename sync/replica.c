/*
 * replica.c: the analysis host's puller.  Every poll, the sync thread reads
 * tenants.json and each tenant's manifest and makes the local store (a cache
 * directory) mirror them: tenants and streams created, framing and
 * attributes set, new segments added with store_replica_add() (from their
 * event index objects; the bytes stay remote until read), renames followed
 * by stream id, and streams and tenants that disappeared removed.
 *
 * The remote id -> local id map lives in memory (struct tenant_state.map);
 * after a restart a local stream is matched by name and kept only when its
 * segments are a prefix of the remote's (same origin ids).
 *
 * A failure holds back only its stream: the other streams of the tenant
 * go on, and the manifest is applied again at the next poll.  An index
 * object that failed is not fetched again before its time in s->retries
 * (retry.c); the pass itself keeps polling every `poll` (sync.c).
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

/* KEY's object, whole, NUL-terminated, into OUT (max set by the
 * caller). */
static int get_text(struct sync *s, const char *key, struct backend_buf *out)
{
	int rc = backend_get(s->b, key, 0, BACKEND_TO_END, out);

	return rc ? rc : backend_buf_terminate(out);
}

static uint64_t map_get(struct tenant_state *ts, uint64_t rid)
{
	for (size_t i = 0; i < ts->nmap; i++)
		if (ts->map[2 * i] == rid)
			return ts->map[2 * i + 1];
	return 0;
}

static int map_set(struct tenant_state *ts, uint64_t rid, uint64_t lid)
{
	uint64_t *v;

	for (size_t i = 0; i < ts->nmap; i++)
		if (ts->map[2 * i] == rid) {
			ts->map[2 * i + 1] = lid;
			return 0;
		}
	v = realloc(ts->map, (ts->nmap + 1) * 2 * sizeof(*v));
	if (!v)
		return -ENOMEM;
	ts->map = v;
	v[2 * ts->nmap] = rid;
	v[2 * ts->nmap + 1] = lid;
	ts->nmap++;
	return 0;
}

static void map_drop_local(struct tenant_state *ts, uint64_t lid)
{
	for (size_t i = 0; i < ts->nmap; i++)
		if (ts->map[2 * i + 1] == lid)
			ts->map[2 * i + 1] = 0;
}

struct local_stream {
	uint64_t id;
	char *name;
	struct store_attr attr;
};

struct local_vec {
	struct local_stream *v;
	size_t n, alloc;
};

static int local_collect(void *arg, const char *name,
			 const struct store_attr *attr)
{
	struct local_vec *lv = arg;
	struct local_stream *v;

	if (STORE_ARRAY_RESERVE(lv->v, lv->alloc, lv->n + 1, 16))
		return -ENOMEM;
	v = lv->v;
	v[lv->n] = (struct local_stream){ .id = attr->id, .attr = *attr,
					  .name = strdup(name) };
	if (!v[lv->n].name)
		return -ENOMEM;
	lv->n++;
	return 0;
}

static void local_vec_release(struct local_vec *lv)
{
	for (size_t i = 0; i < lv->n; i++)
		free(lv->v[i].name);
	free(lv->v);
}

/* Whether MS's tail entries name G (past MS's segments) at its offset: a
 * writer's segment seeded from them (seed.c), grown since maybe. */
static bool tail_names(const struct manifest_stream *ms,
		       const struct store_segment *g)
{
	for (size_t i = 0; i < ms->ntails; i++)
		if (ms->tails[i].seg == g->origin &&
		    ms->tails[i].seg_offset == g->offset)
			return true;
	return false;
}

bool sync_replica_is_prefix(struct store_tenant *t, uint64_t lid,
			    const struct manifest_stream *ms)
{
	struct sync_seg_vec sv = { 0 };
	bool ok;

	if (store_stream_segments(t, lid, sync_seg_collect, &sv))
		return false;
	if (sv.n)
		qsort(sv.v, sv.n, sizeof(*sv.v), sync_seg_cmp);
	ok = true;
	for (size_t i = 0; ok && i < sv.n; i++) {
		const struct manifest_seg *g = i < ms->nsegs ? &ms->segs[i] : NULL;

		if (sv.v[i].tail || (!g && sv.v[i].origin &&
				     tail_names(ms, &sv.v[i]))) {
			/* shipped early: a prefix of its segment, or past
			 * the sealed ones (its bytes are checked when it
			 * seals) */
			ok = !g || (sv.v[i].origin == g->seg &&
				    sv.v[i].offset == g->offset &&
				    sv.v[i].length <= g->length);
			continue;
		}
		ok = g && sv.v[i].origin == g->seg &&
		     sv.v[i].checksum == g->checksum &&
		     sv.v[i].offset == g->offset &&
		     sv.v[i].length == g->length;
	}
	free(sv.v);
	return ok;
}

/* GETs and decodes KEY, the event index object of segment SEG, into *B
 * (*N rows), unless it failed lately and its retry is not due: then its
 * last failure.  Failures go into s->retries. */
static int get_index(struct sync *s, const char *key, uint64_t seg,
		     struct store_batch **b, size_t *n, char *what, size_t wlen)
{
	struct backend_buf idx = { .max = 256u << 20 };
	struct sync_retry *e = sync_retry_get(&s->retries, key);
	int rc;

	if (!sync_retry_due(e, sync_clock(CLOCK_MONOTONIC))) {
		snprintf(what, wlen, "%s", e->what);
		return e->rc;
	}
	snprintf(what, wlen, "get %s", key);
	rc = backend_get(s->b, key, 0, BACKEND_TO_END, &idx);
	if (rc) {
		sync_what_why(what, wlen, s->b);
	} else {
		rc = sync_index_decode(&idx, seg, b, n);
		if (rc == -EIO)
			rc = -EBADMSG;	/* damaged, or another segment's */
	}
	if (rc && rc != -ECANCELED)
		sync_retry_failed(s, &s->retries, key, rc, what);
	else if (!rc && e)
		sync_retry_done(&s->retries, key);
	backend_buf_release(&idx);
	return rc;
}

/* Whether local stream LID holds bytes shipped early (tail segments). */
static bool any_tail(struct store_tenant *t, uint64_t lid)
{
	struct sync_seg_vec sv = { 0 };
	bool any = false;

	if (!store_stream_segments(t, lid, sync_seg_collect, &sv))
		for (size_t i = 0; !any && i < sv.n; i++)
			any = sv.v[i].tail;
	free(sv.v);
	return any;
}

/* Adds to local stream LID of T the segments of MS it lacks, each from
 * its event index object (the bytes stay remote: evicted); KEEP_ID keeps
 * the published segment ids (a writer continuing the history). */
int sync_replica_add_segments(struct sync *s, struct store_tenant *t,
			       const char *tprefix, uint64_t lid,
			       const struct manifest_stream *ms, bool keep_id,
			       char *what, size_t wlen)
{
	struct store_attr a;
	bool has_tails = any_tail(t, lid);
	int rc = store_stream_stat(t, lid, &a);

	for (size_t i = 0; !rc && i < ms->nsegs; i++) {
		const struct manifest_seg *g = &ms->segs[i];
		struct store_segment seg = {
			.origin = g->seg, .stream = lid,
			.first_version = g->first_version, .count = g->count,
			.offset = g->offset, .length = g->length,
			.checksum = g->checksum, .created_ns = g->created_ns,
			.state = STORE_SEG_EVICTED, .keep_id = keep_id,
			.has_ids = g->ids != 0 };
		struct store_batch *b = NULL;
		size_t n = 0;
		char *key;

		if (seg.first_version + seg.count - 1 <= a.version &&
		    seg.count) {
			/* have it; shipped early, it takes its checksum */
			if (has_tails)
				rc = sync_replica_tail_seal(s, t, tprefix, lid,
							    &seg, &a, what, wlen);
			continue;
		}
		if (a.size > seg.offset) {
			/* partly shipped early: the rest comes from it */
			rc = sync_replica_tail_seal(s, t, tprefix, lid, &seg,
						    &a, what, wlen);
			continue;
		}
		key = sync_segment_key(tprefix, seg.origin, seg.checksum, true);
		if (!key)
			return -ENOMEM;
		rc = get_index(s, key, seg.origin, &b, &n, what, wlen);
		if (!rc) {
			snprintf(what, wlen, "add segment %s to %s", key,
				 store_tenant_name(t));
			rc = store_replica_add(t, lid, &seg, b, n);
		}
		if (!rc) {
			a.version = seg.first_version + seg.count - 1;
			a.size = seg.offset + seg.length;
		}
		free(b);
		free(key);
	}
	return rc;
}

/* Reads the manifest below TPREFIX into *M, and its XXH3 into *HASH.  1
 * (nothing to do) when there is none yet or it is the one TS applied
 * last; else 0 or -errno. */
static int load_manifest(struct sync *s, struct tenant_state *ts,
			 const char *tprefix, struct manifest *m,
			 uint64_t *hash, char *what, size_t wlen)
{
	struct backend_buf text = { .max = 256u << 20 };
	char *key = sync_manifest_key(tprefix);
	int rc;

	if (!key)
		return -ENOMEM;
	snprintf(what, wlen, "get %s", key);
	rc = get_text(s, key, &text);
	if (rc == -ENOENT)
		rc = 1;		/* listed before its first manifest */
	else if (rc)
		sync_what_why(what, wlen, s->b);
	if (!rc) {
		*hash = XXH3_64bits(text.data, text.len);
		if (*hash == ts->mhash)
			rc = 1;
	}
	if (!rc)
		rc = sync_manifest_decode(text.data, text.len, m);
	backend_buf_release(&text);
	free(key);
	return rc;
}

/* The local tenant NAME into *T: created as M says when missing, its
 * framing set. */
static int local_tenant(struct sync *s, const char *name,
			const struct manifest *m, struct store_tenant **t,
			char *what, size_t wlen)
{
	int rc;

	snprintf(what, wlen, "create tenant %s", name);
	rc = store_tenant_get(s->st, name, t);
	if (rc == -ENOENT) {
		rc = store_tenant_create(s->st, name,
					 (mode_t)(m->mode ? m->mode : 0755),
					 (uid_t)m->uid, (gid_t)m->gid);
		if (!rc)
			rc = store_tenant_get(s->st, name, t);
		if (!rc)
			sync_log(LOG_NOTICE, "replica: tenant %s appeared", name);
	}
	if (!rc && m->has_framing)
		rc = store_tenant_set_framing(*t, m->framing);
	return rc;
}

/* Whether local stream L is the one a remote stream of M continues: by
 * the id map, or (after a restart) by name and a common history, which
 * then goes into the map. */
static int local_matches(struct tenant_state *ts, struct store_tenant *t,
			 const struct manifest *m, const struct local_stream *l,
			 bool *keep)
{
	*keep = false;
	for (size_t j = 0; !*keep && j < m->nstreams; j++)
		*keep = map_get(ts, m->streams[j].id) == l->id;
	for (size_t j = 0; !*keep && j < m->nstreams; j++) {
		const struct manifest_stream *r = &m->streams[j];

		if (map_get(ts, r->id) || strcmp(r->name, l->name) ||
		    !sync_replica_is_prefix(t, l->id, r))
			continue;
		*keep = true;
		return map_set(ts, r->id, l->id);
	}
	return 0;
}

/* Phase 1 of a tenant: matches its local streams LV to M's streams and
 * removes those M does not continue. */
static int drop_unmatched(struct tenant_state *ts, struct store_tenant *t,
			  const char *name, const struct manifest *m,
			  const struct local_vec *lv, char *what, size_t wlen)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < lv->n; i++) {
		const struct local_stream *l = &lv->v[i];
		bool keep;

		rc = local_matches(ts, t, m, l, &keep);
		if (rc || keep)
			continue;
		snprintf(what, wlen, "remove stream %s of %s", l->name, name);
		rc = store_stream_remove(t, l->id);
		map_drop_local(ts, l->id);
		if (!rc)
			sync_log(LOG_NOTICE, "replica: stream %s/%s removed", name, l->name);
	}
	return rc;
}

/* The local stream that mirrors R into *LID: the mapped one, renamed when
 * R's name changed; a new one when there is none, or when its history is
 * not R's. */
static int local_stream_of(struct tenant_state *ts, struct store_tenant *t,
			   const char *name, const struct manifest_stream *r,
			   uint64_t *lid, char *what, size_t wlen)
{
	struct store_attr a;
	uint64_t cur;
	int rc = 0;

	*lid = map_get(ts, r->id);
	if (*lid && store_stream_stat(t, *lid, &a) == -ENOENT)
		*lid = 0;
	if (*lid && !sync_replica_is_prefix(t, *lid, r)) {
		/* Not the same history (should not happen): anew. */
		snprintf(what, wlen, "remove stream %s of %s", r->name, name);
		rc = store_stream_remove(t, *lid);
		*lid = 0;
	}
	if (!rc && *lid &&
	    (store_stream_lookup(t, r->name, &cur) || cur != *lid)) {
		snprintf(what, wlen, "rename stream to %s/%s", name, r->name);
		rc = store_stream_rename(t, *lid, r->name);
		if (!rc)
			sync_log(LOG_NOTICE, "replica: stream %s/%s renamed", name, r->name);
	}
	if (!rc && !*lid) {
		snprintf(what, wlen, "create stream %s/%s", name, r->name);
		rc = store_stream_create(t, r->name, (mode_t)r->mode,
					 (uid_t)r->uid, (gid_t)r->gid, lid);
		if (!rc)
			rc = map_set(ts, r->id, *lid);
	}
	return rc;
}

/* Phase 2 of a tenant, for each remote stream R: its local stream
 * created or renamed, its framing, new segments and attributes. */
static int mirror_stream(struct sync *s, struct tenant_state *ts,
			 struct store_tenant *t, const char *tprefix,
			 const struct manifest *m, const struct manifest_stream *r,
			 struct piece_cache *pc, char *what, size_t wlen)
{
	const char *name = ts->name;
	struct store_attr a, set = { 0 };
	uint64_t lid;
	int rc = local_stream_of(ts, t, name, r, &lid, what, wlen);

	if (!rc)
		rc = store_stream_stat(t, lid, &a);
	if (!rc && a.version == 0 && a.framing != r->framing)
		rc = store_stream_set_framing(t, lid, r->framing);
	if (!rc)
		rc = sync_replica_add_segments(s, t, tprefix, lid, r, false,
					       what, wlen);
	if (!rc)
		rc = sync_replica_tails(s, t, tprefix, lid, m, r, pc, what, wlen);
	if (!rc) {
		snprintf(what, wlen, "snapshots of %s/%s", name, r->name);
		rc = sync_replica_snapshots(t, lid, r);
	}
	if (rc)
		return rc;
	set.mode = (mode_t)r->mode;
	set.uid = (uid_t)r->uid;
	set.gid = (gid_t)r->gid;
	set.mtime.tv_sec = r->mtime_ns / 1000000000;
	set.mtime.tv_nsec = r->mtime_ns % 1000000000;
	snprintf(what, wlen, "set attributes of %s/%s", name, r->name);
	return store_stream_setattr(t, lid, &set, STORE_SET_MODE |
				    STORE_SET_UID | STORE_SET_GID |
				    (r->mtime_ns ? STORE_SET_MTIME : 0));
}

/* Phase 2 for every stream of M (its pieces fetched once into PC): one
 * stream's failure does not hold up the others.  Returns the first one
 * (described in WHAT). */
static int mirror_streams(struct sync *s, struct tenant_state *ts,
			  struct store_tenant *t, const char *tprefix,
			  const struct manifest *m, struct piece_cache *pc,
			  char *what, size_t wlen)
{
	char w[160];
	int rc = 0;

	for (size_t j = 0; j < m->nstreams; j++) {
		int r = mirror_stream(s, ts, t, tprefix, m, &m->streams[j], pc,
				      w, sizeof(w));

		if (r && !rc) {
			rc = r;
			snprintf(what, wlen, "%s", w);
		}
		if (r == -ENOMEM || r == -ECANCELED)
			return r;
	}
	return rc;
}

static uint64_t writer_hash(const struct manifest *m)
{
	return m->writer ? XXH3_64bits(m->writer, strlen(m->writer)) : 0;
}

/* Whether M is older than the manifest TS applied last, by the same
 * writer at the same generation: the remote went back in time (a share
 * mounted again from an older state, before its writer put back what it
 * lost).  Applying it would shrink streams readers saw; it is skipped
 * (logged), and the writer's next manifest is applied. */
static bool manifest_stale(struct tenant_state *ts, const struct manifest *m)
{
	bool stale = ts->applied_ns && m->updated_ns &&
		     writer_hash(m) == ts->applied_writer &&
		     m->generation == ts->applied_gen &&
		     m->updated_ns < ts->applied_ns;

	if (stale)
		sync_log(LOG_WARNING, "replica: tenant %s: the remote's "
			 "manifest is older than the one applied before (the "
			 "remote went back in time?); keeping what was shown "
			 "until its writer publishes again", ts->name);
	return stale;
}

/* Mirrors one tenant's manifest, when it changed. */
static int replica_tenant(struct sync *s, const char *name, char *what,
			  size_t wlen)
{
	struct tenant_state *ts = sync_tstate(s, name);
	struct local_vec lv = { 0 };
	struct manifest m = { 0 };
	struct piece_cache pc = { 0 };
	struct store_tenant *t;
	char *tprefix;
	uint64_t hash = 0;
	int rc;

	if (!ts)
		return -ENOMEM;
	ts->present = true;
	tprefix = sync_tenant_prefix(name);
	if (!tprefix)
		return -ENOMEM;
	rc = load_manifest(s, ts, tprefix, &m, &hash, what, wlen);
	if (!rc && manifest_stale(ts, &m)) {
		ts->mhash = hash;	/* not read again */
		rc = 1;
	}
	if (!rc)
		rc = local_tenant(s, name, &m, &t, what, wlen);
	if (!rc)
		rc = store_stream_list(t, 0, local_collect, &lv);
	if (!rc)
		rc = drop_unmatched(ts, t, name, &m, &lv, what, wlen);
	if (!rc)
		rc = mirror_streams(s, ts, t, tprefix, &m, &pc, what, wlen);
	if (!rc) {
		ts->mhash = hash;
		ts->applied_writer = writer_hash(&m);
		ts->applied_gen = m.generation;
		ts->applied_ns = m.updated_ns;
	}
	local_vec_release(&lv);
	sync_piece_cache_release(&pc);
	sync_manifest_release(&m);
	free(tprefix);
	return rc > 0 ? 0 : rc;
}

static int drop_local_tenant(struct sync *s, const char *name)
{
	struct store_tenant *t;
	struct local_vec lv = { 0 };
	int rc = store_tenant_get(s->st, name, &t);

	if (!rc)
		rc = store_stream_list(t, 0, local_collect, &lv);
	for (size_t i = 0; !rc && i < lv.n; i++)
		rc = store_stream_remove(t, lv.v[i].id);
	if (!rc)
		rc = store_tenant_remove(s->st, name);
	if (!rc) {
		struct tenant_state *ts = sync_tstate(s, name);

		sync_log(LOG_NOTICE, "replica: tenant %s removed", name);
		if (ts) {
			ts->mhash = 0;
			ts->nmap = 0;
			ts->applied_writer = 0;
			ts->applied_gen = 0;
			ts->applied_ns = 0;
		}
	}
	local_vec_release(&lv);
	return rc;
}

/* Logs a tenant's failure once per change of state, and its recovery. */
static void tenant_error(struct tenant_state *ts, int rc, const char *what)
{
	if (rc && rc != ts->err)
		sync_log(LOG_WARNING, "replica: tenant %s failing: %s: %s; other tenants go "
			 "on", ts->name, what, sync_strerror(rc));
	else if (!rc && ts->err)
		sync_log(LOG_NOTICE, "replica: tenant %s working again", ts->name);
	ts->err = rc;
}

int sync_tenants_json_get(struct sync *s, json_object **root)
{
	struct backend_buf text = { .max = 256u << 20 };
	int rc = get_text(s, sync_tenants_key, &text);

	*root = NULL;
	if (rc == -ENOENT) {
		rc = 0;
		*root = json_object_new_object();
	} else if (!rc) {
		*root = json_tokener_parse(text.data);
		if (!*root)
			rc = -EIO;
	}
	if (!rc && !*root)
		rc = -ENOMEM;
	backend_buf_release(&text);
	return rc;
}

/* Mirrors each tenant ROOT (tenants.json) lists.  One tenant's failure
 * (a manifest the store refuses, an object missing) must not hold up the
 * others nor the removals after: it is noted, and the first one comes
 * back in *FIRST and FIRST_WHAT.  Returns only what stops the pass
 * (-ENOMEM, -ECANCELED). */
static int mirror_tenants(struct sync *s, json_object *root, int *first,
			  char *first_what, size_t wlen)
{
	json_object *arr;
	int rc = 0;

	if (!json_object_object_get_ex(root, "tenants", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return 0;
	for (size_t i = 0; !rc && i < json_object_array_length(arr); i++) {
		json_object *o = json_object_array_get_idx(arr, i), *v;
		const char *name = NULL;
		struct tenant_state *ts;
		char w[160];
		int r;

		if (sync_stopping(s))
			return -ECANCELED;
		if (json_object_object_get_ex(o, "name", &v) &&
		    json_object_is_type(v, json_type_string))
			name = json_object_get_string(v);
		if (!name || !store_name_valid(name))
			continue;
		r = replica_tenant(s, name, w, sizeof(w));
		ts = sync_tstate(s, name);
		if (ts)
			tenant_error(ts, r, w);
		if (r == -ENOMEM || r == -ECANCELED)
			rc = r;
		if (r && !*first) {
			*first = r;
			snprintf(first_what, wlen, "%s", w);
		}
	}
	return rc;
}

int sync_replica_pass(struct sync *s, char *what, size_t wlen)
{
	json_object *root = NULL;
	struct sync_strvec local = { 0 };
	char first_what[160] = "";
	int rc, first = 0;

	snprintf(what, wlen, "get %s", sync_tenants_key);
	rc = sync_tenants_json_get(s, &root);
	if (rc) {
		sync_what_why(what, wlen, s->b);
		return rc;
	}
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].present = false;
	rc = mirror_tenants(s, root, &first, first_what, sizeof(first_what));
	if (!rc)
		rc = store_tenant_list(s->st, sync_strvec_collect, &local);
	/* Tenants no longer listed go. */
	for (size_t i = 0; !rc && i < local.n; i++) {
		struct tenant_state *ts = sync_tstate(s, local.v[i]);

		if (!ts) {
			rc = -ENOMEM;
			break;
		}
		if (ts->present)
			continue;
		snprintf(what, wlen, "remove tenant %s", local.v[i]);
		rc = drop_local_tenant(s, local.v[i]);
	}
	sync_strvec_release(&local);
	json_object_put(root);
	if (!rc)
		sync_evict(s, NULL, 0);
	if (!rc && first) {
		rc = first;
		snprintf(what, wlen, "%s", first_what);
	}
	return rc;
}
