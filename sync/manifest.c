/*
 * manifest.c: a tenant's manifest (docs/FORMAT.md), as one struct manifest
 * that the writer builds from its store and publishes, reads back when it
 * starts (seeding), and that a replica reads and mirrors.
 *
 * - sync_manifest_build(): the store's uploaded state of a tenant.
 * - sync_manifest_tombstones(): the tombstones a new manifest carries.
 * - sync_manifest_encode() / _decode(): the JSON text, both ways.  Decoding
 *   ignores members it does not know and skips streams it cannot use; text
 *   that is not a manifest gives -EIO.
 * - sync_manifest_keys() / _stale_keys(): the objects a manifest names, and
 *   those an older one named that a newer one does not (what the writer
 *   deletes once the newer one is published).
 *
 * A struct manifest owns its strings and arrays; sync_manifest_release()
 * frees them.  Nothing here talks to the remote.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

/* Tombstones are kept this long after the removal. */
#define TOMBSTONE_KEEP_NS (7 * 86400 * 1000000000LL)

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

void sync_manifest_release(struct manifest *m)
{
	for (size_t i = 0; i < m->nstreams; i++) {
		free(m->streams[i].name);
		free(m->streams[i].segs);
		free(m->streams[i].snaps);
		free(m->streams[i].tails);
	}
	free(m->pieces);
	for (size_t i = 0; i < m->ntombs; i++)
		free(m->tombs[i].name);
	free(m->streams);
	free(m->tombs);
	free(m->tenant);
	free(m->writer);
	free(m->id_field);
	*m = (struct manifest){ 0 };
}

/* ---- building from the store ---- */

static int stream_collect(void *arg, const char *name,
			  const struct store_attr *attr)
{
	struct manifest *m = arg;
	struct manifest_stream *ms;

	if (STORE_ARRAY_RESERVE(m->streams, m->astreams, m->nstreams + 1, 8))
		return -ENOMEM;
	ms = &m->streams[m->nstreams];
	*ms = (struct manifest_stream){
		.id = attr->id, .name = strdup(name), .framing = attr->framing,
		.mode = (uint32_t)attr->mode, .uid = attr->uid, .gid = attr->gid,
		.mtime_ns = (int64_t)attr->mtime.tv_sec * 1000000000 +
			    attr->mtime.tv_nsec };
	if (!ms->name)
		return -ENOMEM;
	m->nstreams++;
	return 0;
}

/* Gives MS the segments of SEGS (sorted by stream, then offset) that form
 * its gapless chain from offset 0: only those are published. */
static int stream_chain(struct manifest_stream *ms,
			const struct sync_seg_vec *segs)
{
	size_t alloc = 0;

	for (size_t j = 0; j < segs->n; j++) {
		const struct store_segment *g = &segs->v[j];

		if (g->stream != ms->id)
			continue;
		if (g->offset != ms->size)
			break;
		if (STORE_ARRAY_RESERVE(ms->segs, alloc, ms->nsegs + 1, 8))
			return -ENOMEM;
		ms->segs[ms->nsegs++] = (struct manifest_seg){
			.seg = g->seg, .first_version = g->first_version,
			.count = g->count, .offset = g->offset,
			.length = g->length, .checksum = g->checksum,
			.created_ns = g->created_ns, .ids = g->has_ids };
		ms->size = g->offset + g->length;
		ms->version = g->first_version + g->count - 1;
	}
	return 0;
}

/* Adds an uploaded snapshot to its stream of M (ARG), when the stream's
 * published chain holds its version. */
static int snap_add(void *arg, const struct store_snapshot *snap)
{
	struct manifest *m = arg;

	for (size_t i = 0; i < m->nstreams; i++) {
		struct manifest_stream *ms = &m->streams[i];

		if (ms->id != snap->stream || snap->version > ms->version)
			continue;
		struct manifest_snap *v = reallocarray(ms->snaps, ms->nsnaps + 1,
						       sizeof(*v));
		if (!v)
			return -ENOMEM;
		ms->snaps = v;
		ms->snaps[ms->nsnaps++] = (struct manifest_snap){
			.version = snap->version, .length = snap->length,
			.checksum = snap->checksum, .time_ns = snap->time_ns };
	}
	return 0;
}

static int snap_cmp(const void *a, const void *b)
{
	const struct manifest_snap *x = a, *y = b;

	return x->version < y->version ? -1 : x->version > y->version;
}

/* The snapshots of M's streams: uploaded from here, and (on a writer that
 * continues another's history) those it published, still remote-only. */
static int snaps_build(struct store_tenant *t, struct manifest *m)
{
	int rc = store_snapshot_list_state(t, STORE_SNAP_UPLOADED, snap_add, m);

	if (!rc)
		rc = store_snapshot_list_state(t, STORE_SNAP_REMOTE, snap_add,
					       m);
	for (size_t i = 0; !rc && i < m->nstreams; i++)
		if (m->streams[i].nsnaps > 1)
			qsort(m->streams[i].snaps, m->streams[i].nsnaps,
			      sizeof(*m->streams[i].snaps), snap_cmp);
	return rc;
}

int sync_manifest_build(struct store_tenant *t, const char *writer,
			uint64_t generation, struct manifest *out)
{
	struct sync_seg_vec segs = { 0 };
	struct store_attr tattr;
	char field[256];
	int rc;

	*out = (struct manifest){ 0 };
	rc = store_stream_list(t, 0, stream_collect, out);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_UPLOADED, sync_seg_collect,
					&segs);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_EVICTED, sync_seg_collect,
					&segs);
	if (!rc)
		rc = store_tenant_stat(t, &tattr);
	if (!rc)
		rc = store_tenant_get_id_field(t, field, sizeof(field));
	if (!rc && !(out->id_field = strdup(field)))
		rc = -ENOMEM;
	if (!rc && segs.n)
		qsort(segs.v, segs.n, sizeof(*segs.v), sync_seg_cmp);
	for (size_t i = 0; !rc && i < out->nstreams; i++)
		rc = stream_chain(&out->streams[i], &segs);
	if (!rc)
		rc = snaps_build(t, out);
	if (!rc) {
		out->tenant = strdup(store_tenant_name(t));
		out->writer = strdup(writer);
		out->generation = generation;
		out->mode = (uint32_t)tattr.mode;
		out->uid = tattr.uid;
		out->gid = tattr.gid;
		out->has_framing = true;
		out->framing = tattr.framing;
		if (!out->tenant || !out->writer)
			rc = -ENOMEM;
	}
	free(segs.v);
	if (rc)
		sync_manifest_release(out);
	return rc;
}

/* ---- tombstones ---- */

static bool has_stream(const struct manifest *m, uint64_t id)
{
	for (size_t i = 0; i < m->nstreams; i++)
		if (m->streams[i].id == id)
			return true;
	return false;
}

static int add_tomb(struct manifest *m, uint64_t id, const char *name,
		    int64_t removed_ns)
{
	char *copy = name ? strdup(name) : NULL;

	if ((name && !copy) || STORE_ARRAY_RESERVE(m->tombs, m->atombs,
						    m->ntombs + 1, 8)) {
		free(copy);
		return -ENOMEM;
	}
	m->tombs[m->ntombs++] = (struct manifest_tombstone){
		.id = id, .name = copy, .removed_ns = removed_ns };
	return 0;
}

int sync_manifest_tombstones(struct manifest *m, const struct manifest *prev,
			     int64_t now)
{
	int rc = 0;

	/* PREV's, for a week, unless the stream is back (by id: a renamed
	 * stream keeps its id). */
	for (size_t i = 0; !rc && i < prev->ntombs; i++) {
		const struct manifest_tombstone *tb = &prev->tombs[i];

		if (now - tb->removed_ns > TOMBSTONE_KEEP_NS ||
		    has_stream(m, tb->id))
			continue;
		rc = add_tomb(m, tb->id, tb->name, tb->removed_ns);
	}
	/* Streams PREV had and M lacks: removed since. */
	for (size_t i = 0; !rc && i < prev->nstreams; i++)
		if (!has_stream(m, prev->streams[i].id))
			rc = add_tomb(m, prev->streams[i].id,
				      prev->streams[i].name, now);
	return rc;
}

/* ---- encoding ---- */

static const char *framing_name(enum store_framing f)
{
	return f == STORE_RAW ? "raw" : "lines";
}

static enum store_framing framing_of(const char *f)
{
	return f && !strcmp(f, "raw") ? STORE_RAW : STORE_LINES;
}

/* Adds K: V to O.  V is a new object, or NULL when its constructor ran
 * out of memory: then, and when the add fails, -ENOMEM (V put). */
static int jadd(json_object *o, const char *k, json_object *v)
{
	if (!v || json_object_object_add(o, k, v)) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static json_object *seg_json(const struct manifest_seg *g)
{
	json_object *o = json_object_new_object();
	char *key = sync_segment_key("", g->seg, g->checksum, false);
	char sum[17];
	int rc = o && key ? 0 : -ENOMEM;

	snprintf(sum, sizeof(sum), "%016" PRIx64, g->checksum);
	rc = rc ? rc : jadd(o, "seg", json_object_new_uint64(g->seg));
	rc = rc ? rc : jadd(o, "key", json_object_new_string(key));
	rc = rc ? rc : jadd(o, "first_version",
			    json_object_new_uint64(g->first_version));
	rc = rc ? rc : jadd(o, "count", json_object_new_uint64(g->count));
	rc = rc ? rc : jadd(o, "offset", json_object_new_uint64(g->offset));
	rc = rc ? rc : jadd(o, "length", json_object_new_uint64(g->length));
	rc = rc ? rc : jadd(o, "xxh3", json_object_new_string(sum));
	rc = rc ? rc : jadd(o, "created_ns",
			    json_object_new_int64(g->created_ns));
	/* its event-ID table object (key + ".ids"): true, false */
	if (!rc && g->ids >= 0)
		rc = jadd(o, "ids", json_object_new_boolean(g->ids));
	free(key);
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static json_object *snap_json(const struct manifest_snap *g)
{
	json_object *o = json_object_new_object();
	char *key = sync_snapshot_key("", g->version, g->checksum);
	char sum[17];
	int rc = o && key ? 0 : -ENOMEM;

	snprintf(sum, sizeof(sum), "%016" PRIx64, g->checksum);
	rc = rc ? rc : jadd(o, "version", json_object_new_uint64(g->version));
	rc = rc ? rc : jadd(o, "key", json_object_new_string(key));
	rc = rc ? rc : jadd(o, "length", json_object_new_uint64(g->length));
	rc = rc ? rc : jadd(o, "xxh3", json_object_new_string(sum));
	rc = rc ? rc : jadd(o, "time_ns", json_object_new_int64(g->time_ns));
	free(key);
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static json_object *snap_item(const void *p, bool times)
{
	(void)times;
	return snap_json(p);
}

static int jadd_array(json_object *o, const char *k, const void *v, size_t n,
		      size_t size, json_object *(*fn)(const void *, bool),
		      bool times);

static json_object *stream_json(const struct manifest_stream *ms, bool times)
{
	json_object *o = json_object_new_object();
	json_object *segs = json_object_new_array();
	int rc = o && segs ? 0 : -ENOMEM;

	for (size_t i = 0; !rc && i < ms->nsegs; i++) {
		json_object *g = seg_json(&ms->segs[i]);

		if (!g || json_object_array_add(segs, g)) {
			json_object_put(g);
			rc = -ENOMEM;
		}
	}
	rc = rc ? rc : jadd(o, "id", json_object_new_uint64(ms->id));
	rc = rc ? rc : jadd(o, "name", json_object_new_string(ms->name));
	rc = rc ? rc : jadd(o, "framing",
			    json_object_new_string(framing_name(ms->framing)));
	rc = rc ? rc : jadd(o, "mode", json_object_new_int((int)ms->mode));
	rc = rc ? rc : jadd(o, "uid", json_object_new_int64(ms->uid));
	rc = rc ? rc : jadd(o, "gid", json_object_new_int64(ms->gid));
	rc = rc ? rc : jadd(o, "size", json_object_new_uint64(ms->size));
	rc = rc ? rc : jadd(o, "version", json_object_new_uint64(ms->version));
	rc = rc ? rc : jadd(o, "segments", json_object_get(segs));
	/* Only when there are some: manifests without stay as they were. */
	if (!rc && ms->nsnaps)
		rc = jadd_array(o, "snapshots", ms->snaps, ms->nsnaps,
				sizeof(*ms->snaps), snap_item, times);
	if (!rc)
		rc = sync_tail_encode(o, ms);
	if (!rc && times)
		rc = jadd(o, "mtime_ns", json_object_new_int64(ms->mtime_ns));
	json_object_put(segs);
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static json_object *tomb_json(const struct manifest_tombstone *tb)
{
	json_object *o = json_object_new_object();
	int rc = o ? 0 : -ENOMEM;

	rc = rc ? rc : jadd(o, "id", json_object_new_uint64(tb->id));
	if (!rc && tb->name)
		rc = jadd(o, "name", json_object_new_string(tb->name));
	rc = rc ? rc : jadd(o, "removed_ns",
			    json_object_new_int64(tb->removed_ns));
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* An array of N items of SIZE bytes at V, each through FN, added to O as
 * K.  FN's second argument says whether times go in. */
static int jadd_array(json_object *o, const char *k, const void *v, size_t n,
		      size_t size, json_object *(*fn)(const void *, bool),
		      bool times)
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; arr && i < n; i++) {
		json_object *e = fn((const char *)v + i * size, times);

		if (!e || json_object_array_add(arr, e)) {
			json_object_put(e);
			json_object_put(arr);
			return -ENOMEM;
		}
	}
	return jadd(o, k, arr);
}

static json_object *stream_item(const void *p, bool times)
{
	return stream_json(p, times);
}

static json_object *tomb_item(const void *p, bool times)
{
	(void)times;
	return tomb_json(p);
}

int sync_manifest_encode(const struct manifest *m, bool times, char **out)
{
	json_object *root = json_object_new_object();
	int rc = root ? 0 : -ENOMEM;

	*out = NULL;
	rc = rc ? rc : jadd(root, "format", json_object_new_string(
				    "streamfs-tenant-manifest"));
	rc = rc ? rc : jadd(root, "version", json_object_new_int(1));
	rc = rc ? rc : jadd(root, "tenant", json_object_new_string(
				    m->tenant ? m->tenant : ""));
	rc = rc ? rc : jadd(root, "writer", json_object_new_string(
				    m->writer ? m->writer : ""));
	if (!rc && m->generation)
		rc = jadd(root, "generation",
			  json_object_new_uint64(m->generation));
	rc = rc ? rc : jadd(root, "mode", json_object_new_int((int)m->mode));
	rc = rc ? rc : jadd(root, "uid", json_object_new_int64(m->uid));
	rc = rc ? rc : jadd(root, "gid", json_object_new_int64(m->gid));
	if (!rc && m->has_framing)
		rc = jadd(root, "framing", json_object_new_string(
				  framing_name(m->framing)));
	if (!rc && m->id_field)
		rc = jadd(root, "id_field", json_object_new_string(m->id_field));
	rc = rc ? rc : jadd_array(root, "streams", m->streams, m->nstreams,
				  sizeof(*m->streams), stream_item, times);
	rc = rc ? rc : jadd_array(root, "tombstones", m->tombs, m->ntombs,
				  sizeof(*m->tombs), tomb_item, times);
	rc = rc ? rc : sync_pieces_encode(root, m);
	if (!rc && times)
		rc = jadd(root, "updated_ns", json_object_new_int64(m->updated_ns));
	if (!rc && !(*out = strdup(json_object_to_json_string_ext(root,
								    JSON_FLAGS))))
		rc = -ENOMEM;
	json_object_put(root);
	return rc;
}

/* ---- decoding ---- */

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

/* O's "mode": permission bits only, as the store keeps them, whatever
 * the remote holds (a larger number would not encode back the same). */
static uint32_t jget_mode(json_object *o)
{
	return (uint32_t)(jget_u64(o, "mode") & 07777);
}

/* K's value when it is a string, else NULL. */
static const char *jget_str(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) &&
	       json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : NULL;
}

/* K's value when it is an array, else NULL. */
/* 1 or 0 for a boolean member K, -1 when there is none. */
static int jget_bool(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_boolean))
		return -1;
	return json_object_get_boolean(v);
}

static json_object *jget_array(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) &&
	       json_object_is_type(v, json_type_array) ? v : NULL;
}

static struct manifest_seg seg_decode(json_object *g)
{
	const char *sum = jget_str(g, "xxh3");

	return (struct manifest_seg){
		.seg = jget_u64(g, "seg"),
		.first_version = jget_u64(g, "first_version"),
		.count = jget_u64(g, "count"),
		.offset = jget_u64(g, "offset"),
		.length = jget_u64(g, "length"),
		.checksum = sum ? strtoull(sum, NULL, 16) : 0,
		.created_ns = jget_i64(g, "created_ns"),
		.ids = jget_bool(g, "ids") };
}

/* The snapshots of stream R into MS; entries that are no objects are
 * skipped. */
static int snaps_decode(struct manifest_stream *ms, json_object *r)
{
	json_object *arr = jget_array(r, "snapshots");
	size_t n = arr ? json_object_array_length(arr) : 0;

	if (!n)
		return 0;
	ms->snaps = calloc(n, sizeof(*ms->snaps));
	if (!ms->snaps)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *g = json_object_array_get_idx(arr, i);
		const char *sum = jget_str(g, "xxh3");

		if (!json_object_is_type(g, json_type_object))
			continue;
		ms->snaps[ms->nsnaps++] = (struct manifest_snap){
			.version = jget_u64(g, "version"),
			.length = jget_u64(g, "length"),
			.checksum = sum ? strtoull(sum, NULL, 16) : 0,
			.time_ns = jget_i64(g, "time_ns") };
	}
	return 0;
}

/* Appends stream R to M; one without a name or a segments array is
 * skipped (nothing could be done with it). */
static int stream_decode(struct manifest *m, json_object *r)
{
	const char *name = jget_str(r, "name");
	json_object *segs = jget_array(r, "segments");
	struct manifest_stream *ms;
	size_t n;

	if (!name || !segs)
		return 0;
	if (STORE_ARRAY_RESERVE(m->streams, m->astreams, m->nstreams + 1, 8))
		return -ENOMEM;
	n = json_object_array_length(segs);
	ms = &m->streams[m->nstreams];
	*ms = (struct manifest_stream){
		.id = jget_u64(r, "id"), .name = strdup(name),
		.framing = framing_of(jget_str(r, "framing")),
		.mode = jget_mode(r),
		.uid = jget_i64(r, "uid"), .gid = jget_i64(r, "gid"),
		.mtime_ns = jget_i64(r, "mtime_ns"),
		.size = jget_u64(r, "size"), .version = jget_u64(r, "version"),
		.segs = calloc(n ? n : 1, sizeof(*ms->segs)) };
	if (!ms->name || !ms->segs) {
		free(ms->name);
		free(ms->segs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *g = json_object_array_get_idx(segs, i);

		if (json_object_is_type(g, json_type_object))
			ms->segs[ms->nsegs++] = seg_decode(g);
	}
	if (snaps_decode(ms, r) || sync_tail_decode(ms, r)) {
		free(ms->name);
		free(ms->segs);
		free(ms->snaps);
		return -ENOMEM;
	}
	m->nstreams++;
	return 0;
}

static int tombs_decode(struct manifest *m, json_object *arr)
{
	int rc = 0;

	for (size_t i = 0; !rc && arr && i < json_object_array_length(arr); i++) {
		json_object *o = json_object_array_get_idx(arr, i);

		if (json_object_is_type(o, json_type_object))
			rc = add_tomb(m, jget_u64(o, "id"), jget_str(o, "name"),
				      jget_i64(o, "removed_ns"));
	}
	return rc;
}

static int root_decode(json_object *root, struct manifest *m)
{
	json_object *streams = jget_array(root, "streams");
	const char *s;
	int rc = 0;

	if (!json_object_is_type(root, json_type_object) || !streams)
		return -EIO;
	if ((s = jget_str(root, "tenant")) && !(m->tenant = strdup(s)))
		return -ENOMEM;
	if ((s = jget_str(root, "writer")) && !(m->writer = strdup(s)))
		return -ENOMEM;
	if ((s = jget_str(root, "id_field")) && !(m->id_field = strdup(s)))
		return -ENOMEM;
	m->mode = jget_mode(root);
	m->uid = jget_i64(root, "uid");
	m->gid = jget_i64(root, "gid");
	m->has_framing = (s = jget_str(root, "framing")) != NULL;
	m->framing = framing_of(s);
	m->updated_ns = jget_i64(root, "updated_ns");
	m->generation = jget_u64(root, "generation");
	for (size_t i = 0; !rc && i < json_object_array_length(streams); i++)
		rc = stream_decode(m, json_object_array_get_idx(streams, i));
	if (!rc)
		rc = tombs_decode(m, jget_array(root, "tombstones"));
	if (!rc)
		rc = sync_pieces_decode(m, root);
	return rc;
}

static bool only_space(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!p[i] || !strchr(" \t\r\n", p[i]))
			return false;
	return true;
}

int sync_manifest_decode(const char *text, size_t len, struct manifest *out)
{
	struct json_tokener *tok = json_tokener_new();
	json_object *root = NULL;
	int rc = -EIO;

	*out = (struct manifest){ 0 };
	if (!tok)
		return -ENOMEM;
	if (len <= INT32_MAX)
		root = json_tokener_parse_ex(tok, text, (int)len);
	/* One value, then nothing but white space: a truncated manifest is
	 * no manifest. */
	if (root && json_tokener_get_error(tok) == json_tokener_success &&
	    only_space(text + json_tokener_get_parse_end(tok),
		       len - json_tokener_get_parse_end(tok)))
		rc = root_decode(root, out);
	json_object_put(root);
	json_tokener_free(tok);
	if (rc)
		sync_manifest_release(out);
	return rc;
}

/* ---- the objects a manifest names ---- */

/* Appends KEY (taken; NULL: out of memory) to OUT. */
static int keys_take(struct sync_strvec *out, char *key)
{
	int rc = key ? sync_strvec_push(out, key) : -ENOMEM;

	free(key);
	return rc;
}

static int seg_keys(const char *tprefix, const struct manifest_seg *g,
		    struct sync_strvec *out)
{
	int rc = keys_take(out, sync_segment_key(tprefix, g->seg, g->checksum,
						 false));

	rc = rc ? rc : keys_take(out, sync_segment_key(tprefix, g->seg,
						       g->checksum, true));
	if (!rc && g->ids > 0)
		rc = keys_take(out, sync_ids_key(tprefix, g->seg, g->checksum));
	return rc;
}

static bool names_seg(const struct manifest *m, const struct manifest_seg *g)
{
	for (size_t i = 0; i < m->nstreams; i++)
		for (size_t j = 0; j < m->streams[i].nsegs; j++)
			if (m->streams[i].segs[j].seg == g->seg &&
			    m->streams[i].segs[j].checksum == g->checksum)
				return true;
	return false;
}

/* Snapshot objects are named by version and checksum alone: two streams
 * may share one. */
static bool names_snap(const struct manifest *m, const struct manifest_snap *g)
{
	for (size_t i = 0; i < m->nstreams; i++)
		for (size_t j = 0; j < m->streams[i].nsnaps; j++)
			if (m->streams[i].snaps[j].version == g->version &&
			    m->streams[i].snaps[j].checksum == g->checksum)
				return true;
	return false;
}

int sync_manifest_stale_keys(const struct manifest *old,
			     const struct manifest *cur, const char *tprefix,
			     struct sync_strvec *out)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < old->nstreams; i++) {
		const struct manifest_stream *ms = &old->streams[i];

		for (size_t j = 0; !rc && j < ms->nsegs; j++)
			if (!cur || !names_seg(cur, &ms->segs[j]))
				rc = seg_keys(tprefix, &ms->segs[j], out);
		for (size_t j = 0; !rc && j < ms->nsnaps; j++)
			if (!cur || !names_snap(cur, &ms->snaps[j]))
				rc = keys_take(out, sync_snapshot_key(tprefix,
						ms->snaps[j].version,
						ms->snaps[j].checksum));
	}
	return rc;
}

uint64_t sync_manifest_stream_end(const struct manifest_stream *r)
{
	const struct manifest_tail *tl = r->ntails ? &r->tails[r->ntails - 1]
						   : NULL;

	return tl ? tl->first_version + tl->count - 1 : r->version;
}

int sync_manifest_keys(const struct manifest *m, const char *tprefix,
		       struct sync_strvec *out)
{
	return sync_manifest_stale_keys(m, NULL, tprefix, out);
}
