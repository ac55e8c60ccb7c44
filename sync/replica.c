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
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "store_sync.h"
#include "sync.h"
#include "sync_int.h"

static int get_json(struct sync *s, const char *key, json_object **out,
		    uint64_t *hash)
{
	struct backend_buf buf = { .max = 256u << 20 };
	int rc = backend_get(s->b, key, 0, BACKEND_TO_END, &buf);

	*out = NULL;
	if (!rc)
		rc = backend_buf_terminate(&buf);
	if (!rc) {
		if (hash)
			*hash = XXH3_64bits(buf.data, buf.len);
		*out = json_tokener_parse(buf.data);
		if (!*out)
			rc = -EIO;
	}
	backend_buf_release(&buf);
	return rc;
}

static uint64_t jget_u64(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_uint64(v) : 0;
}

static int64_t jget_i64(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *jget_str(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) &&
	       json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : NULL;
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
	size_t n;
};

static int local_collect(void *arg, const char *name,
			 const struct store_attr *attr)
{
	struct local_vec *lv = arg;
	struct local_stream *v = realloc(lv->v, (lv->n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	lv->v = v;
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

/* True when the local segments of LID are the first ones of SEGS: same
 * origin segment id, and same checksum, offset and length.  Segment ids
 * alone are not enough: a tenant removed and created again between two
 * polls numbers its segments from 1 again. */
static bool local_is_prefix(struct store_tenant *t, uint64_t lid,
			    json_object *segs)
{
	struct seg_vec sv = { 0 };
	bool ok;

	if (store_stream_segments(t, lid, seg_collect, &sv))
		return false;
	if (sv.n)
		qsort(sv.v, sv.n, sizeof(*sv.v), seg_cmp);
	ok = sv.n <= json_object_array_length(segs);
	for (size_t i = 0; ok && i < sv.n; i++) {
		json_object *g = json_object_array_get_idx(segs, i);
		const char *sum = jget_str(g, "xxh3");

		ok = sv.v[i].origin == jget_u64(g, "seg") && sum &&
		     sv.v[i].checksum == strtoull(sum, NULL, 16) &&
		     sv.v[i].offset == jget_u64(g, "offset") &&
		     sv.v[i].length == jget_u64(g, "length");
	}
	free(sv.v);
	return ok;
}

static int add_segments(struct sync *s, struct store_tenant *t,
			const char *tprefix, uint64_t lid, json_object *segs,
			char *what, size_t wlen)
{
	struct store_attr a;
	int rc = store_stream_stat(t, lid, &a);

	for (size_t i = 0; !rc && i < json_object_array_length(segs); i++) {
		json_object *g = json_object_array_get_idx(segs, i);
		const char *sum = jget_str(g, "xxh3");
		struct store_segment seg = {
			.origin = jget_u64(g, "seg"), .stream = lid,
			.first_version = jget_u64(g, "first_version"),
			.count = jget_u64(g, "count"),
			.offset = jget_u64(g, "offset"),
			.length = jget_u64(g, "length"),
			.checksum = sum ? strtoull(sum, NULL, 16) : 0,
			.created_ns = jget_i64(g, "created_ns"),
			.state = STORE_SEG_EVICTED };
		struct backend_buf idx = { .max = 256u << 20 };
		struct store_batch *b = NULL;
		size_t n = 0;
		char *key;

		if (seg.first_version + seg.count - 1 <= a.version &&
		    seg.count)
			continue;	/* have it */
		key = sync_segment_key(tprefix, seg.origin, seg.checksum, true);
		if (!key)
			return -ENOMEM;
		snprintf(what, wlen, "get %s", key);
		rc = backend_get(s->b, key, 0, BACKEND_TO_END, &idx);
		if (!rc)
			rc = sync_index_decode(&idx, seg.origin, &b, &n);
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
		backend_buf_release(&idx);
	}
	return rc;
}

static enum store_framing framing_of(const char *f)
{
	return f && !strcmp(f, "raw") ? STORE_RAW : STORE_LINES;
}

/* Mirrors one tenant's manifest. */
static int replica_tenant(struct sync *s, const char *name, const char *tkey,
			  char *what, size_t wlen)
{
	struct tenant_state *ts = sync_tstate(s, name);
	struct local_vec lv = { 0 };
	json_object *m = NULL, *streams;
	struct store_tenant *t;
	char *tprefix = NULL, *mkey = NULL;
	uint64_t hash = 0;
	size_t nr;
	int rc;

	(void)tkey;
	if (!ts)
		return -ENOMEM;
	ts->present = true;
	tprefix = sync_tenant_prefix(name);
	if (!tprefix || asprintf(&mkey, "%smanifest.json", tprefix) < 0) {
		free(tprefix);
		return -ENOMEM;
	}
	snprintf(what, wlen, "get %s", mkey);
	rc = get_json(s, mkey, &m, &hash);
	if (rc == -ENOENT) {
		rc = 0;		/* listed before its first manifest */
		goto out;
	}
	if (rc || hash == ts->mhash)
		goto out;
	if (!json_object_object_get_ex(m, "streams", &streams) ||
	    !json_object_is_type(streams, json_type_array)) {
		rc = -EIO;
		goto out;
	}
	snprintf(what, wlen, "create tenant %s", name);
	rc = store_tenant_get(s->st, name, &t);
	if (rc == -ENOENT) {
		rc = store_tenant_create(s->st, name,
					 (mode_t)(jget_u64(m, "mode") ?
						  jget_u64(m, "mode") : 0755),
					 (uid_t)jget_u64(m, "uid"),
					 (gid_t)jget_u64(m, "gid"));
		if (!rc)
			rc = store_tenant_get(s->st, name, &t);
		if (!rc)
			sync_log("replica: tenant %s appeared", name);
	}
	if (!rc && jget_str(m, "framing"))
		rc = store_tenant_set_framing(t, framing_of(jget_str(m, "framing")));
	if (!rc)
		rc = store_stream_list(t, 0, local_collect, &lv);
	if (rc)
		goto out;
	nr = json_object_array_length(streams);
	/* Phase 1: match local streams to remote ones; drop the rest. */
	for (size_t i = 0; !rc && i < lv.n; i++) {
		struct local_stream *l = &lv.v[i];
		bool keep = false;

		for (size_t j = 0; !keep && j < nr; j++) {
			json_object *r = json_object_array_get_idx(streams, j);
			uint64_t rid = jget_u64(r, "id");

			if (map_get(ts, rid) == l->id)
				keep = true;
		}
		for (size_t j = 0; !keep && j < nr; j++) {
			json_object *r = json_object_array_get_idx(streams, j);
			uint64_t rid = jget_u64(r, "id");
			const char *rn = jget_str(r, "name");
			json_object *segs;

			if (map_get(ts, rid) || !rn || strcmp(rn, l->name) ||
			    !json_object_object_get_ex(r, "segments", &segs))
				continue;
			if (local_is_prefix(t, l->id, segs)) {
				rc = map_set(ts, rid, l->id);
				keep = true;
			}
		}
		if (!keep && !rc) {
			snprintf(what, wlen, "remove stream %s of %s", l->name, name);
			rc = store_stream_remove(t, l->id);
			map_drop_local(ts, l->id);
			if (!rc)
				sync_log("replica: stream %s/%s removed", name,
					 l->name);
		}
	}
	/* Phase 2: create, rename, extend, set attributes. */
	for (size_t j = 0; !rc && j < nr; j++) {
		json_object *r = json_object_array_get_idx(streams, j), *segs;
		uint64_t rid = jget_u64(r, "id"), lid = map_get(ts, rid);
		const char *rn = jget_str(r, "name");
		struct store_attr a, set = { 0 };

		if (!rn || !json_object_object_get_ex(r, "segments", &segs))
			continue;
		if (lid && store_stream_stat(t, lid, &a) == -ENOENT)
			lid = 0;
		if (lid && !local_is_prefix(t, lid, segs)) {
			/* Not the same history (should not happen): anew. */
			snprintf(what, wlen, "remove stream %s of %s", rn, name);
			rc = store_stream_remove(t, lid);
			lid = 0;
		}
		if (!rc && lid) {
			uint64_t cur;

			if (store_stream_lookup(t, rn, &cur) || cur != lid) {
				snprintf(what, wlen, "rename stream to %s/%s",
					 name, rn);
				rc = store_stream_rename(t, lid, rn);
				if (!rc)
					sync_log("replica: stream %s/%s renamed",
						 name, rn);
			}
		}
		if (!rc && !lid) {
			snprintf(what, wlen, "create stream %s/%s", name, rn);
			rc = store_stream_create(t, rn, (mode_t)jget_u64(r, "mode"),
						 (uid_t)jget_u64(r, "uid"),
						 (gid_t)jget_u64(r, "gid"), &lid);
			if (!rc)
				rc = map_set(ts, rid, lid);
		}
		if (!rc)
			rc = store_stream_stat(t, lid, &a);
		if (!rc && a.version == 0 &&
		    a.framing != framing_of(jget_str(r, "framing")))
			rc = store_stream_set_framing(t, lid,
				framing_of(jget_str(r, "framing")));
		if (!rc)
			rc = add_segments(s, t, tprefix, lid, segs, what, wlen);
		if (rc)
			break;
		set.mode = (mode_t)jget_u64(r, "mode");
		set.uid = (uid_t)jget_u64(r, "uid");
		set.gid = (gid_t)jget_u64(r, "gid");
		set.mtime.tv_sec = jget_i64(r, "mtime_ns") / 1000000000;
		set.mtime.tv_nsec = jget_i64(r, "mtime_ns") % 1000000000;
		snprintf(what, wlen, "set attributes of %s/%s", name, rn);
		rc = store_stream_setattr(t, lid, &set, STORE_SET_MODE |
					  STORE_SET_UID | STORE_SET_GID |
					  (jget_i64(r, "mtime_ns") ?
					   STORE_SET_MTIME : 0));
	}
	if (!rc)
		ts->mhash = hash;
out:
	local_vec_release(&lv);
	json_object_put(m);
	free(mkey);
	free(tprefix);
	return rc;
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

		sync_log("replica: tenant %s removed", name);
		if (ts) {
			ts->mhash = 0;
			ts->nmap = 0;
		}
	}
	local_vec_release(&lv);
	return rc;
}

/* Logs a tenant's failure once per change of state, and its recovery. */
static void tenant_error(struct tenant_state *ts, int rc, const char *what)
{
	if (rc && rc != ts->err)
		sync_log("replica: tenant %s failing: %s: %s; other tenants go "
			 "on", ts->name, what, strerror(-rc));
	else if (!rc && ts->err)
		sync_log("replica: tenant %s working again", ts->name);
	ts->err = rc;
}

int sync_replica_pass(struct sync *s, char *what, size_t wlen)
{
	json_object *root = NULL, *arr;
	struct strvec local = { 0 };
	char first_what[160] = "";
	int rc, first = 0;

	snprintf(what, wlen, "get " SYNC_ROOT "/tenants.json");
	rc = get_json(s, SYNC_ROOT "/tenants.json", &root, NULL);
	if (rc == -ENOENT) {
		rc = 0;
		root = json_object_new_object();	/* nothing published yet */
	}
	if (rc)
		return rc;
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].present = false;
	if (json_object_object_get_ex(root, "tenants", &arr) &&
	    json_object_is_type(arr, json_type_array)) {
		for (size_t i = 0; !rc && i < json_object_array_length(arr); i++) {
			json_object *o = json_object_array_get_idx(arr, i);
			const char *name = jget_str(o, "name");

			if (sync_stopping(s)) {
				rc = -ECANCELED;
				break;
			}
			struct tenant_state *ts;
			char w[160];
			int r;

			if (!name || !store_name_valid(name))
				continue;
			/* One tenant's failure (a manifest the store
			 * refuses, an object missing) must not hold up the
			 * others nor the removals below: note it, go on,
			 * and report the first failure at the end. */
			r = replica_tenant(s, name, jget_str(o, "key"), w,
					   sizeof(w));
			ts = sync_tstate(s, name);
			if (ts)
				tenant_error(ts, r, w);
			if (r == -ENOMEM || r == -ECANCELED)
				rc = r;
			if (r && !first) {
				first = r;
				snprintf(first_what, sizeof(first_what), "%s", w);
			}
		}
	}
	if (!rc)
		rc = store_tenant_list(s->st, strvec_collect, &local);
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
	strvec_release(&local);
	json_object_put(root);
	if (!rc)
		sync_evict(s, NULL, 0);
	if (!rc && first) {
		rc = first;
		snprintf(what, wlen, "%s", first_what);
	}
	return rc;
}
