/*
 * seed.c: a writer continues the history another writer published (a
 * takeover, or a new writer after a clean release, docs/FORMAT.md
 * "Takeover").  Published history only grows, so a writer never publishes
 * a tenant from what its SOURCE alone holds: the streams of the remote
 * manifest that SOURCE lacks are made first, as an analysis host makes its
 * replica (replica.c): same ids, versions and segments, the bytes left on
 * the remote (evicted, fetched when read), their event-ID tables fetched
 * from their ID table objects when dedup first needs them (ids_fetch.c:
 * no bytes).  What the other writer shipped in tail pieces past its
 * segments is fetched now and becomes this writer's own segments under
 * the same ids (store_seed_tail_append()): the last one its active
 * segment.  Appends then continue there, at the next version, and the next
 * manifest names the old segments, the old tail entries and the new ones,
 * so that an analysis host that holds the old tail goes on appending to it.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

/* Local stream NAME of T into *LID: made with the published id ID when it
 * is free (a new one otherwise) when SOURCE lacks it. */
static int seed_stream_of(struct store_tenant *t,
			  const struct manifest_stream *r, uint64_t *lid)
{
	int rc = store_stream_lookup(t, r->name, lid);

	if (rc != -ENOENT)
		return rc;
	rc = store_replica_stream_create(t, r->name, (mode_t)r->mode,
					 (uid_t)r->uid, (gid_t)r->gid, r->id);
	if (!rc)
		*lid = r->id;
	else if (rc == -EEXIST)	/* the id is a local stream's */
		rc = store_stream_create(t, r->name, (mode_t)r->mode,
					 (uid_t)r->uid, (gid_t)r->gid, lid);
	return rc;
}

/* Appends to local stream LID (whose end A holds) what R's tail entries
 * (of M) hold past it, from their pieces (fetched once into PC). */
static int seed_tails(struct sync *s, struct store_tenant *t,
		      const char *tprefix, uint64_t lid,
		      const struct manifest *m, const struct manifest_stream *r,
		      struct store_attr *a, struct piece_cache *pc,
		      char *what, size_t wlen)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < r->ntails; i++) {
		const struct manifest_tail *tl = &r->tails[i];
		const struct piece_chunk *c;

		if (tl->offset + tl->length <= a->size)
			continue;	/* have it */
		if (tl->offset != a->size)
			return -EIO;	/* not a chain: a damaged manifest */
		rc = sync_tail_chunk(s, tprefix, m, r->id, tl, pc, &c, what,
				     wlen);
		if (rc == -ENOENT)
			return -EAGAIN;	/* replaced: read the manifest again */
		if (rc)
			return rc;
		snprintf(what, wlen, "seed tail of %s/%s", store_tenant_name(t),
			 r->name);
		rc = store_seed_tail_append(t, lid, tl->seg, tl->seg_offset,
					    tl->seg_created_ns, c->bytes,
					    c->tail.length, c->rows, c->nrows);
		a->size += tl->length;
		a->version += tl->count;
	}
	return rc;
}

/* Makes local stream R->name of T hold R's published history, its tail
 * entries included (from M's pieces, through PC).  A stream whose events
 * here are not a prefix of it (a history of its own) would replace it at
 * the next manifest: -EEXIST, and the tenant is not published. */
static int seed_stream(struct sync *s, struct store_tenant *t,
		       const char *tprefix, const struct manifest *m,
		       const struct manifest_stream *r, struct piece_cache *pc,
		       char *what, size_t wlen)
{
	struct store_attr a, set = { 0 };
	uint64_t lid;
	int rc;

	snprintf(what, wlen, "seed stream %s/%s", store_tenant_name(t),
		 r->name);
	rc = seed_stream_of(t, r, &lid);
	if (!rc)
		rc = store_stream_stat(t, lid, &a);
	if (rc)
		return rc;
	if (a.version && !sync_replica_is_prefix(t, lid, r)) {
		sync_log(LOG_ERR, "tenant %s: stream %s holds versions 1-%llu "
			 "here that are not its published history (versions "
			 "1-%llu): the tenant is not published from here; move "
			 "the stream away to continue", store_tenant_name(t),
			 r->name, (unsigned long long)a.version,
			 (unsigned long long)r->version);
		return -EEXIST;
	}
	if (a.version >= sync_manifest_stream_end(r))
		return 0;
	if (!a.version && a.framing != r->framing)
		rc = store_stream_set_framing(t, lid, r->framing);
	if (!rc && a.version < r->version)
		rc = sync_replica_add_segments(s, t, tprefix, lid, r, true,
					       what, wlen);
	if (!rc)
		rc = sync_replica_snapshots(t, lid, r);
	if (!rc && r->ntails)
		rc = store_stream_stat(t, lid, &a);
	if (!rc && r->ntails)
		rc = seed_tails(s, t, tprefix, lid, m, r, &a, pc, what, wlen);
	if (rc)
		return rc;
	set.mtime.tv_sec = r->mtime_ns / 1000000000;
	set.mtime.tv_nsec = r->mtime_ns % 1000000000;
	return r->mtime_ns ? store_stream_setattr(t, lid, &set, STORE_SET_MTIME)
			   : 0;
}

static int count_stream(void *arg, const char *name,
			const struct store_attr *attr)
{
	(void)name;
	(void)attr;
	(*(size_t *)arg)++;
	return 0;
}

int sync_seed_ids(struct backend *b, struct store_tenant *t,
		  const char *tprefix, uint64_t seg, uint64_t checksum)
{
	char *key = sync_ids_key(tprefix, seg, checksum);
	struct backend_buf in = { .max = 1u << 30 };
	struct ids_object o = { 0 };
	int rc = key ? backend_get(b, key, 0, BACKEND_TO_END, &in) : -ENOMEM;

	if (!rc)
		rc = sync_ids_decode(&in, seg, &o);
	if (!rc)
		rc = store_segment_ids_install(t, seg, o.field, o.pairs,
					       o.ends, o.n, o.ids, o.idlen);
	if (rc == -ESTALE)
		sync_log(LOG_WARNING, "tenant %s: %s holds the IDs of another "
			 "JSON member than this tenant's id_field: a retried "
			 "event of that segment fetches it", store_tenant_name(t),
			 key);
	else if (rc && rc != -ENOMEM && rc != -ENOENT)
		sync_log(LOG_WARNING, "tenant %s: event IDs %s not loaded (%s): "
			 "a retried event of that segment fetches it",
			 store_tenant_name(t), key ? key : "?",
			 rc == -EIO ? "damaged: checksum or layout mismatch"
				    : strerror(-rc));
	backend_buf_release(&in);
	sync_ids_release(&o);
	free(key);
	return rc;
}

/* The JSON member of event IDs: a tenant made here takes the published
 * one, so that its IDs still deduplicate; one that has its own, other
 * one is told loudly (its dedup then misses the published IDs). */
static int seed_id_field(struct store_tenant *t, const struct manifest *m,
			 bool fresh)
{
	char here[STORE_ID_FIELD_MAX + 1];
	int rc;

	if (!m->id_field)
		return 0;	/* a writer that predates it: "id" or as set */
	rc = store_tenant_get_id_field(t, here, sizeof(here));
	if (rc || !strcmp(here, m->id_field))
		return rc;
	if (fresh)
		return store_tenant_set_id_field(t, m->id_field);
	sync_log(LOG_ERR, "tenant %s: event IDs here are the JSON member "
		 "\"%s\", those of its published history \"%s\": a retried "
		 "event of that history is not recognised (set the tenant's "
		 "user.streamfs.id_field to \"%s\")", store_tenant_name(t),
		 here, m->id_field, m->id_field);
	return 0;
}

/* A tenant made here to continue M takes M's mode, owner and framing. */
static int seed_tenant_attrs(struct store_tenant *t, const struct manifest *m)
{
	struct store_attr a = { .mode = (mode_t)(m->mode ? m->mode : 0755),
				.uid = (uid_t)m->uid, .gid = (gid_t)m->gid };
	int rc = store_tenant_setattr(t, &a, STORE_SET_MODE | STORE_SET_UID |
				      STORE_SET_GID);

	if (!rc && m->has_framing)
		rc = store_tenant_set_framing(t, m->framing);
	return rc;
}

int sync_seed_streams(struct sync *s, struct store_tenant *t,
		      const char *tprefix, const struct manifest *m,
		      char *what, size_t wlen)
{
	struct piece_cache pc = { 0 };
	uint64_t events = 0;
	size_t here = 0;
	int rc = store_stream_list(t, 0, count_stream, &here);
	bool fresh = !rc && !here;

	if (rc)
		return rc;
	rc = fresh ? seed_tenant_attrs(t, m) : 0;
	if (!rc)
		rc = seed_id_field(t, m, fresh);
	for (size_t i = 0; !rc && i < m->nstreams; i++) {
		rc = seed_stream(s, t, tprefix, m, &m->streams[i], &pc, what,
				 wlen);
		events += sync_manifest_stream_end(&m->streams[i]);
	}
	sync_piece_cache_release(&pc);
	if (!rc)
		sync_log(LOG_NOTICE, "tenant %s: continuing the history of "
			 "writer %s (generation %llu): %zu streams, %llu "
			 "events, fetched when read", store_tenant_name(t),
			 m->writer ? m->writer : "?",
			 (unsigned long long)m->generation, m->nstreams,
			 (unsigned long long)events);
	return rc;
}

/* Creates tenant NAME here and takes its lease, when the remote lists it,
 * SOURCE lacks it and its lease is free.  1 when another writer holds it
 * live and cfg.takeover may take it once it expired: ask again later. */
static int adopt_tenant(struct sync *s, const char *name)
{
	struct store_tenant *t;
	struct tenant_state *ts;
	char what[160];
	int rc = store_tenant_get(s->st, name, &t);

	if (rc != -ENOENT)
		return rc;
	rc = sync_lease_takeable(s, name);
	if (rc <= 0)
		return !rc && s->cfg.takeover ? 1 : rc;
	ts = sync_tstate(s, name);
	if (!ts)
		return -ENOMEM;
	rc = sync_lease_take(s, ts, what, sizeof(what), NULL);
	if (rc == -EBUSY)	/* lost a race: another's now */
		return 0;
	if (!rc)
		rc = store_tenant_create(s->st, name, 0755, 0, 0);
	if (!rc)
		rc = store_tenant_get(s->st, name, &t);
	if (!rc)
		store_tenant_hold(t, true);	/* until seed_one() */
	ts->adopted = !rc;
	return rc == -EEXIST ? 0 : rc;
}

struct id_vec {
	uint64_t *v;
	size_t n, alloc;
};

static int collect_id(void *arg, const char *name, const struct store_attr *a)
{
	struct id_vec *ids = arg;

	(void)name;
	if (STORE_ARRAY_RESERVE(ids->v, ids->alloc, ids->n + 1, 16))
		return -ENOMEM;
	ids->v[ids->n++] = a->id;
	return 0;
}

/* Undoes adopt_tenant() for TS, whose published history cannot be
 * continued here (a manifest this store refuses): the local tenant goes,
 * and the lease, so that nothing is ever published from it. */
static int unadopt(struct sync *s, struct tenant_state *ts)
{
	struct id_vec ids = { 0 };
	struct store_tenant *t;
	int rc = store_tenant_get(s->st, ts->name, &t);

	if (!rc)
		rc = store_stream_list(t, 0, collect_id, &ids);
	for (size_t i = 0; !rc && i < ids.n; i++)
		rc = store_stream_remove(t, ids.v[i]);
	if (!rc)
		rc = store_tenant_remove(s->st, ts->name);
	free(ids.v);
	if (!rc)
		rc = sync_lease_drop(s, ts);
	ts->adopted = false;
	return rc;
}

/* Seeds TS (local tenant T) now, before the mount serves appends to it. */
static int seed_one(struct sync *s, struct store_tenant *t,
		    struct tenant_state *ts)
{
	char what[160], *tprefix = sync_tenant_prefix(ts->name);
	int rc = tprefix ? sync_seed_from_remote(s, t, ts, tprefix, what,
						 sizeof(what))
			 : -ENOMEM;

	free(tprefix);
	ts->seeded = !rc;
	if (!rc) {
		store_tenant_hold(t, false);	/* appends go on from here */
		return rc;
	}
	if (rc == -ENOMEM)
		return rc;
	if (ts->adopted && !backend_err_retryable(rc)) {
		sync_log(LOG_ERR, "tenant %s on %s cannot be continued here "
			 "(%s: %s): left alone", ts->name, s->url_shown, what,
			 strerror(-rc));
		rc = unadopt(s, ts);
		store_tenant_hold(t, false);	/* removed: waiters see it */
		return rc;
	}
	/* Not published until seeded: the next pass tries again. */
	sync_log(LOG_WARNING, "tenant %s: %s: %s", ts->name, what,
		 strerror(-rc));
	return 0;
}

/* Seeds each tenant we lease and have not seeded yet. */
static int seed_leased(struct sync *s)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < s->nts; i++) {
		struct tenant_state *ts = &s->ts[i];
		struct store_tenant *t;

		if (ts->leased && !ts->seeded &&
		    !store_tenant_get(s->st, ts->name, &t))
			rc = seed_one(s, t, ts);
	}
	return rc;
}

int sync_seed_tenants(struct sync *s)
{
	json_object *root, *arr;
	bool later = false;
	int rc = sync_tenants_json_get(s, &root);

	if (rc)
		return rc;
	if (json_object_object_get_ex(root, "tenants", &arr) &&
	    json_object_is_type(arr, json_type_array))
		for (size_t i = 0; !rc && i < json_object_array_length(arr);
		     i++) {
			json_object *o = json_object_array_get_idx(arr, i), *v;
			const char *name;

			if (!json_object_object_get_ex(o, "name", &v) ||
			    !json_object_is_type(v, json_type_string))
				continue;
			name = json_object_get_string(v);
			if (store_name_valid(name))
				rc = adopt_tenant(s, name);
			later |= rc == 1;
			rc = rc == 1 ? 0 : rc;
		}
	json_object_put(root);
	if (!rc)
		rc = seed_leased(s);
	return rc ? rc : later;
}

int sync_seed_claimed(struct sync *s, struct tenant_state *ts, char *what,
		      size_t wlen)
{
	struct backend_buf text = { .max = 256u << 20 };
	char *tp = sync_tenant_prefix(ts->name);
	char *key = tp ? sync_manifest_key(tp) : NULL;
	struct store_tenant *t;
	int rc = key ? 0 : -ENOMEM;

	if (!rc) {
		snprintf(what, wlen, "get %s", key);
		rc = backend_get(s->b, key, 0, BACKEND_TO_END, &text);
	}
	backend_buf_release(&text);
	free(key);
	free(tp);
	if (rc == -ENOENT)
		return 0;	/* a new tenant */
	if (!rc)
		rc = store_tenant_create(s->st, ts->name, 0755, 0, 0);
	if (!rc)
		rc = store_tenant_get(s->st, ts->name, &t);
	if (rc)
		return rc;
	store_tenant_hold(t, true);	/* until seed_one() */
	ts->adopted = true;
	rc = seed_one(s, t, ts);
	if (!rc && !ts->adopted)
		rc = -EIO;	/* not continued: logged */
	return rc ? rc : 1;
}
