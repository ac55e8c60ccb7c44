/*
 * sync.c: the sync thread (see sync.h for its contract, docs/FORMAT.md for
 * what it writes).
 *
 * Lock order: s->lock is a leaf; it is never held across store calls or
 * network I/O.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "store_sync.h"
#include "sync.h"
#include "sync_int.h"

#define ROOT SYNC_ROOT
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

char *sync_key_encode(const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(name);

	/* '~' instead of '%': keys then hold only bytes that never need URL
	 * escaping, so no server can decode them differently. */
	char *out = malloc(3 * n + 1), *w = out;

	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-') {
			*w++ = (char)*p;
		} else {
			*w++ = '~';
			*w++ = hex[*p >> 4];
			*w++ = hex[*p & 15];
		}
	}
	*w = '\0';
	return out;
}

/* ---- status ---- */

/* Records the outcome of one step; logs only changes of state. */
void sync_note(struct sync *s, int rc, const char *what)
{
	bool log_fail = false, log_ok = false;
	int old;

	pthread_mutex_lock(&s->lock);
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
	pthread_mutex_unlock(&s->lock);
	if (log_fail)
		sync_log("remote %s failing: %s: %s; will retry", s->cfg.url ? s->cfg.url : "(none)",
			 what, strerror(-rc));
	if (log_ok)
		sync_log("remote %s working again", s->cfg.url ? s->cfg.url : "(none)");
}

/* ---- segments ---- */

int seg_collect(void *arg, const struct store_segment *seg)
{
	struct seg_vec *sv = arg;

	if (sv->n == sv->alloc) {
		size_t alloc = sv->alloc ? 2 * sv->alloc : 16;
		struct store_segment *v = realloc(sv->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sv->v = v;
		sv->alloc = alloc;
	}
	sv->v[sv->n++] = *seg;
	return 0;
}

char *sync_tenant_prefix(const char *tenant)
{
	char *enc = sync_key_encode(tenant), *out = NULL;

	if (enc && asprintf(&out, ROOT "/tenants/%s/", enc) < 0)
		out = NULL;
	free(enc);
	return out;
}

char *sync_segment_key(const char *tprefix, uint64_t id, uint64_t checksum,
		       bool index)
{
	char *out;

	if (asprintf(&out, "%ssegments/%016" PRIx64 "-%016" PRIx64 "%s",
		     tprefix, id, checksum, index ? ".idx" : "") < 0)
		return NULL;
	return out;
}

static char *segment_key(const char *tprefix, const struct store_segment *seg)
{
	return sync_segment_key(tprefix, seg->seg, seg->checksum, false);
}

/* ---- event index objects ---- */

/* Little-endian u64 at P. */
static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#define IDX_MAGIC "SFIDX\0\0\1"
#define IDX_HEAD 24
#define IDX_REC 48

static int index_row(void *arg, const struct store_batch *b)
{
	struct backend_buf *out = arg;
	unsigned char rec[IDX_REC];

	put64(rec, b->first_version);
	put64(rec + 8, b->count);
	put64(rec + 16, b->offset);
	put64(rec + 24, b->length);
	put64(rec + 32, (uint64_t)b->time_ns);
	put64(rec + 40, b->hash);
	return backend_buf_append(out, rec, sizeof(rec));
}

int sync_index_encode(struct store_tenant *t, uint64_t seg,
		      struct backend_buf *out)
{
	unsigned char head[IDX_HEAD], sum[8];
	int rc;

	memcpy(head, IDX_MAGIC, 8);
	put64(head + 8, seg);
	put64(head + 16, 0);
	rc = backend_buf_append(out, head, sizeof(head));
	if (!rc)
		rc = store_segment_batches(t, seg, index_row, out);
	if (rc)
		return rc;
	put64((unsigned char *)out->data + 16, (out->len - IDX_HEAD) / IDX_REC);
	put64(sum, XXH3_64bits(out->data, out->len));
	return backend_buf_append(out, sum, sizeof(sum));
}

int sync_index_decode(const struct backend_buf *in, uint64_t seg,
		      struct store_batch **out, size_t *n)
{
	const unsigned char *p = (const unsigned char *)in->data;
	uint64_t count;
	struct store_batch *v;

	*out = NULL;
	*n = 0;
	if (in->len < IDX_HEAD + 8 || memcmp(p, IDX_MAGIC, 8) ||
	    get64(p + 8) != seg)
		return -EIO;
	count = get64(p + 16);
	if (count > (in->len - IDX_HEAD - 8) / IDX_REC ||
	    in->len != IDX_HEAD + count * IDX_REC + 8 ||
	    get64(p + in->len - 8) != XXH3_64bits(p, in->len - 8))
		return -EIO;
	v = calloc(count ? count : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++) {
		const unsigned char *r = p + IDX_HEAD + i * IDX_REC;

		v[i] = (struct store_batch){
			.first_version = get64(r), .count = get64(r + 8),
			.offset = get64(r + 16), .length = get64(r + 24),
			.time_ns = (int64_t)get64(r + 32), .hash = get64(r + 40) };
	}
	*out = v;
	*n = count;
	return 0;
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

static void keys_free(char **keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

static void tstate_release(struct tenant_state *ts)
{
	free(ts->name);
	free(ts->last_cmp);
	keys_free(ts->keys, ts->nkeys);
	json_object_put(ts->tombstones);
	free(ts->map);
}

/* ---- leases ---- */

static char *lease_key(const char *tenant)
{
	char *tp = sync_tenant_prefix(tenant), *out = NULL;

	if (tp && asprintf(&out, "%slease.json", tp) < 0)
		out = NULL;
	free(tp);
	return out;
}

/* Reads or creates STATE_DIR/sync-identity. */
static int load_identity(struct sync *s)
{
	char path[4096], buf[128];
	unsigned char rnd[8];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/sync-identity", s->cfg.state_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			return -EIO;
		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		s->identity = strdup(buf);
		return s->identity ? 0 : -ENOMEM;
	}
	if (errno != ENOENT)
		return -errno;
	fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd)) {
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	n = snprintf(buf, sizeof(buf), "%.40s-", s->host);
	for (size_t i = 0; i < sizeof(rnd); i++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%02x", rnd[i]);
	/* Only [A-Za-z0-9.-]: it also goes into JSON and logs. */
	for (char *p = buf; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
			*p = '_';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf) ||
	    write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
		int rc = -errno;

		close(fd);
		unlink(path);
		return rc ? rc : -EIO;
	}
	close(fd);
	s->identity = strdup(buf);
	return s->identity ? 0 : -ENOMEM;
}

/* Takes (or finds already ours) the lease of TENANT.  -EBUSY when another
 * writer holds it (logged once per tenant, with the holder).  *CREATED (when
 * not NULL) tells whether this call wrote the lease object, as opposed to
 * finding one that already named us (a restart). */
static int lease_take(struct sync *s, struct tenant_state *ts, char *what,
		      size_t wlen, bool *created)
{
	char *key = lease_key(ts->name), *text = NULL;
	struct backend_buf cur = { .max = 1 << 16 };
	json_object *o = NULL, *v;
	const char *holder = "?", *host = "?";
	bool wrote;
	int rc;

	if (!key)
		return -ENOMEM;
	snprintf(what, wlen, "take lease %s", key);
	if (asprintf(&text, "{\"format\": \"streamfs-lease\", \"version\": 1, "
		     "\"writer\": \"%s\", \"host\": \"%s\", \"pid\": %ld, "
		     "\"taken_ns\": %" PRId64 "}\n", s->identity, s->host,
		     (long)getpid(), sync_clock(CLOCK_REALTIME)) < 0) {
		free(key);
		return -ENOMEM;
	}
	rc = backend_put_if_absent_buf(s->b, key, text, strlen(text));
	wrote = !rc;
	/* A conditional put that succeeded is not proof: a server that
	 * ignores If-None-Match lets two writers both "create" the lease.
	 * Read it back; the check below refuses it unless it names us. */
	if (!rc)
		rc = -EEXIST;
	if (rc == -EEXIST) {
		snprintf(what, wlen, "get %s", key);
		rc = backend_get(s->b, key, 0, BACKEND_TO_END, &cur);
		if (!rc)
			rc = backend_buf_terminate(&cur);
		if (rc == -ENOENT)
			rc = -EAGAIN;	/* released meanwhile: next pass */
		if (!rc) {
			o = json_tokener_parse(cur.data);
			if (o && json_object_object_get_ex(o, "writer", &v))
				holder = json_object_get_string(v);
			if (o && json_object_object_get_ex(o, "host", &v))
				host = json_object_get_string(v);
			if (!o || strcmp(holder, s->identity))
				rc = -EBUSY;
		}
		if (rc == -EBUSY && wrote) {
			sync_log("tenant %s: the remote %s accepted our "
				 "conditional lease write, yet the lease names "
				 "writer %s: the server ignores If-None-Match "
				 "and cannot keep two writers apart; refusing",
				 ts->name, s->cfg.url, holder);
			wrote = false;	/* not ours: never delete it */
		}
	}
	if (created)
		*created = !rc && wrote;
	if (!rc) {
		if (!ts->leased)
			sync_log("tenant %s: lease taken on %s as writer %s",
				 ts->name, s->cfg.url, s->identity);
		ts->leased = true;
		ts->refused = false;
	} else if (rc == -EBUSY) {
		snprintf(what, wlen, "lease of tenant %s held by writer %s",
			 ts->name, holder);
		if (!ts->refused)
			sync_log("tenant %s on %s is held by writer %s (host %s); "
				 "refusing a second writer: nothing of it is "
				 "uploaded (remove %s on the remote only if "
				 "that writer is gone for good)", ts->name,
				 s->cfg.url, holder, host, key);
		ts->refused = true;
	}
	json_object_put(o);
	backend_buf_release(&cur);
	free(text);
	free(key);
	return rc;
}

/* Deletes the leases we hold; with ONLY (an array of nts flags, or NULL
 * for all), only those flagged. */
static void lease_release(struct sync *s, const bool *only)
{
	for (size_t i = 0; i < s->nts; i++) {
		char *key;
		int rc;

		if (!s->ts[i].leased || (only && !only[i]))
			continue;
		key = lease_key(s->ts[i].name);
		rc = key ? backend_del(s->b, key) : -ENOMEM;
		if (rc) {
			sync_log("tenant %s: lease %s not released: %s",
				 s->ts[i].name, key ? key : "?", strerror(-rc));
			free(key);
			break;	/* the remote is down: do not wait for each */
		}
		s->ts[i].leased = false;
		free(key);
	}
}

/* ---- manifests ---- */

struct stream_rec {
	uint64_t id;
	char *name;
	struct store_attr attr;
};

struct stream_vec {
	struct stream_rec *v;
	size_t n, alloc;
};

static int stream_collect(void *arg, const char *name,
			  const struct store_attr *attr)
{
	struct stream_vec *sv = arg;

	if (sv->n == sv->alloc) {
		size_t alloc = sv->alloc ? 2 * sv->alloc : 16;
		struct stream_rec *v = realloc(sv->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sv->v = v;
		sv->alloc = alloc;
	}
	sv->v[sv->n] = (struct stream_rec){ .id = attr->id, .attr = *attr,
					    .name = strdup(name) };
	if (!sv->v[sv->n].name)
		return -ENOMEM;
	sv->n++;
	return 0;
}

static void stream_vec_release(struct stream_vec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i].name);
	free(sv->v);
}

int seg_cmp(const void *a, const void *b)
{
	const struct store_segment *x = a, *y = b;

	if (x->stream != y->stream)
		return x->stream < y->stream ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static json_object *segment_json(const char *tprefix,
				 const struct store_segment *seg)
{
	json_object *o = json_object_new_object();
	char *key = segment_key(tprefix, seg), sum[17];

	if (!o || !key) {
		json_object_put(o);
		free(key);
		return NULL;
	}
	snprintf(sum, sizeof(sum), "%016" PRIx64, seg->checksum);
	json_object_object_add(o, "seg", json_object_new_uint64(seg->seg));
	json_object_object_add(o, "key", json_object_new_string(
						 key + strlen(tprefix)));
	json_object_object_add(o, "first_version",
			       json_object_new_uint64(seg->first_version));
	json_object_object_add(o, "count", json_object_new_uint64(seg->count));
	json_object_object_add(o, "offset", json_object_new_uint64(seg->offset));
	json_object_object_add(o, "length", json_object_new_uint64(seg->length));
	json_object_object_add(o, "xxh3", json_object_new_string(sum));
	json_object_object_add(o, "created_ns",
			       json_object_new_int64(seg->created_ns));
	free(key);
	return o;
}

static int keys_add(char ***keys, size_t *n, char *key)
{
	char **v;

	if (!key)
		return -ENOMEM;
	v = realloc(*keys, (*n + 1) * sizeof(*v));
	if (!v) {
		free(key);
		return -ENOMEM;
	}
	v[(*n)++] = key;
	*keys = v;
	return 0;
}

static bool keys_has(char **keys, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(keys[i], key))
			return true;
	return false;
}

/* Keys a manifest's text names (segments and their index objects), and its
 * tombstones, when the manifest was written by this writer.  0 and nothing
 * otherwise. */
static int seed_from_remote(struct sync *s, struct tenant_state *ts,
			    const char *tprefix, char *what, size_t wlen)
{
	struct backend_buf m = { .max = 256u << 20 };
	json_object *root = NULL, *streams, *v;
	char *key = NULL;
	int rc;

	if (asprintf(&key, "%smanifest.json", tprefix) < 0)
		return -ENOMEM;
	snprintf(what, wlen, "get %s", key);
	rc = backend_get(s->b, key, 0, BACKEND_TO_END, &m);
	if (!rc)
		rc = backend_buf_terminate(&m);
	if (rc == -ENOENT) {
		rc = 0;
		goto out;
	}
	if (rc)
		goto out;
	root = json_tokener_parse(m.data);
	if (!root || !json_object_object_get_ex(root, "writer", &v) ||
	    strcmp(json_object_get_string(v), s->identity))
		goto out;	/* not ours: leave its objects alone */
	if (json_object_object_get_ex(root, "tombstones", &v) &&
	    json_object_is_type(v, json_type_array))
		ts->tombstones = json_object_get(v);
	/* The previous stream list: streams removed while this writer was
	 * down get their tombstones at the next publication. */
	free(ts->last_cmp);
	ts->last_cmp = strdup(m.data);
	if (!json_object_object_get_ex(root, "streams", &streams))
		goto out;
	for (size_t i = 0; !rc && i < json_object_array_length(streams); i++) {
		json_object *st = json_object_array_get_idx(streams, i), *segs;

		if (!json_object_object_get_ex(st, "segments", &segs))
			continue;
		for (size_t j = 0; !rc && j < json_object_array_length(segs); j++) {
			json_object *g = json_object_array_get_idx(segs, j), *k;
			char *full;

			if (!json_object_object_get_ex(g, "key", &k))
				continue;
			if (asprintf(&full, "%s%s", tprefix,
				     json_object_get_string(k)) < 0)
				full = NULL;
			rc = keys_add(&ts->keys, &ts->nkeys, full);
			if (!rc && asprintf(&full, "%s%s.idx", tprefix,
					    json_object_get_string(k)) < 0)
				full = NULL;
			if (!rc)
				rc = keys_add(&ts->keys, &ts->nkeys, full);
		}
	}
out:
	json_object_put(root);
	backend_buf_release(&m);
	free(key);
	return rc;
}

#define TOMBSTONE_KEEP_NS (7 * 86400 * 1000000000LL)

/* Writes TENANT's manifest when it changed: every stream with its uploaded
 * segments, tombstones of removed ones; then deletes the objects the
 * previous manifest named and this one does not. */
static int publish_manifest(struct sync *s, struct store_tenant *t,
			    struct tenant_state *ts, const char *tprefix,
			    char *what, size_t wlen)
{
	struct stream_vec streams = { 0 };
	struct seg_vec segs = { 0 };
	json_object *root = NULL, *arr, *tomb;
	json_object **sobj = NULL;
	char **keys = NULL;
	size_t nkeys = 0;
	struct store_attr tattr;
	char *key = NULL, *cmp = NULL;
	const char *text;
	int64_t now = sync_clock(CLOCK_REALTIME);
	int rc;

	snprintf(what, wlen, "manifest of %s", store_tenant_name(t));
	rc = store_stream_list(t, 0, stream_collect, &streams);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_UPLOADED, seg_collect, &segs);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_EVICTED, seg_collect, &segs);
	if (!rc)
		rc = store_tenant_stat(t, &tattr);
	if (rc)
		goto out;
	if (segs.n)
		qsort(segs.v, segs.n, sizeof(*segs.v), seg_cmp);
	root = json_object_new_object();
	arr = json_object_new_array();
	tomb = json_object_new_array();
	sobj = calloc(streams.n + 1, sizeof(*sobj));
	if (!root || !arr || !tomb || !sobj) {
		json_object_put(arr);
		json_object_put(tomb);
		rc = -ENOMEM;
		goto out;
	}
	json_object_object_add(root, "format",
			       json_object_new_string("streamfs-tenant-manifest"));
	json_object_object_add(root, "version", json_object_new_int(1));
	json_object_object_add(root, "tenant",
			       json_object_new_string(store_tenant_name(t)));
	json_object_object_add(root, "writer",
			       json_object_new_string(s->identity));
	json_object_object_add(root, "mode", json_object_new_int((int)tattr.mode));
	json_object_object_add(root, "uid", json_object_new_int64(tattr.uid));
	json_object_object_add(root, "gid", json_object_new_int64(tattr.gid));
	json_object_object_add(root, "framing", json_object_new_string(
		tattr.framing == STORE_RAW ? "raw" : "lines"));
	json_object_object_add(root, "streams", arr);
	for (size_t i = 0; i < streams.n; i++) {
		struct stream_rec *r = &streams.v[i];
		json_object *o = json_object_new_object();
		json_object *sa = json_object_new_array();
		uint64_t size = 0, version = 0;

		if (!o || !sa) {
			json_object_put(o);
			json_object_put(sa);
			rc = -ENOMEM;
			goto out;
		}
		for (size_t j = 0; j < segs.n; j++) {
			json_object *so;

			if (segs.v[j].stream != r->id)
				continue;
			/* Only a gapless chain from offset 0 is published. */
			if (segs.v[j].offset != size)
				break;
			so = segment_json(tprefix, &segs.v[j]);
			if (!so) {
				rc = -ENOMEM;
				break;
			}
			json_object_array_add(sa, so);
			rc = keys_add(&keys, &nkeys, segment_key(tprefix, &segs.v[j]));
			if (!rc)
				rc = keys_add(&keys, &nkeys, sync_segment_key(
					tprefix, segs.v[j].seg,
					segs.v[j].checksum, true));
			if (rc)
				break;
			size = segs.v[j].offset + segs.v[j].length;
			version = segs.v[j].first_version + segs.v[j].count - 1;
		}
		json_object_object_add(o, "id", json_object_new_uint64(r->id));
		json_object_object_add(o, "name", json_object_new_string(r->name));
		json_object_object_add(o, "framing", json_object_new_string(
			r->attr.framing == STORE_RAW ? "raw" : "lines"));
		json_object_object_add(o, "mode",
				       json_object_new_int((int)r->attr.mode));
		json_object_object_add(o, "uid",
				       json_object_new_int64(r->attr.uid));
		json_object_object_add(o, "gid",
				       json_object_new_int64(r->attr.gid));
		json_object_object_add(o, "size", json_object_new_uint64(size));
		json_object_object_add(o, "version",
				       json_object_new_uint64(version));
		json_object_object_add(o, "segments", sa);
		json_object_array_add(arr, o);
		sobj[i] = o;
		if (rc)
			goto out;
	}
	/* Tombstones: streams the previous manifest had and this one lacks
	 * (by id: a renamed stream keeps its id), kept for a week. */
	if (ts->tombstones) {
		for (size_t i = 0; i < json_object_array_length(ts->tombstones); i++) {
			json_object *o = json_object_array_get_idx(ts->tombstones, i), *v;
			uint64_t id = 0;
			bool back = false;

			if (json_object_object_get_ex(o, "removed_ns", &v) &&
			    now - json_object_get_int64(v) > TOMBSTONE_KEEP_NS)
				continue;
			if (json_object_object_get_ex(o, "id", &v))
				id = json_object_get_uint64(v);
			for (size_t j = 0; j < streams.n; j++)
				back |= streams.v[j].id == id;
			if (!back)
				json_object_array_add(tomb, json_object_get(o));
		}
	}
	json_object_object_add(root, "tombstones", tomb);
	cmp = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	if (!cmp) {
		rc = -ENOMEM;
		goto out;
	}
	if (ts->last_cmp && !strcmp(ts->last_cmp, cmp))
		goto out;	/* nothing changed */
	/* New tombstones need the previous stream list: keep it in last_cmp. */
	if (ts->last_cmp) {
		json_object *old = json_tokener_parse(ts->last_cmp), *os;

		if (old && json_object_object_get_ex(old, "streams", &os)) {
			for (size_t i = 0; i < json_object_array_length(os); i++) {
				json_object *o = json_object_array_get_idx(os, i), *v, *nm;
				uint64_t id;
				bool still = false;

				if (!json_object_object_get_ex(o, "id", &v) ||
				    !json_object_object_get_ex(o, "name", &nm))
					continue;
				id = json_object_get_uint64(v);
				for (size_t j = 0; j < streams.n; j++)
					still |= streams.v[j].id == id;
				if (still)
					continue;
				json_object *tb = json_object_new_object();

				json_object_object_add(tb, "id", json_object_new_uint64(id));
				json_object_object_add(tb, "name", json_object_get(nm));
				json_object_object_add(tb, "removed_ns",
						       json_object_new_int64(now));
				json_object_array_add(tomb, tb);
			}
		}
		json_object_put(old);
		free(cmp);
		cmp = strdup(json_object_to_json_string_ext(root,
							    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		if (!cmp) {
			rc = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < streams.n; i++)
		json_object_object_add(sobj[i], "mtime_ns", json_object_new_int64(
			(int64_t)streams.v[i].attr.mtime.tv_sec * 1000000000 +
			streams.v[i].attr.mtime.tv_nsec));
	json_object_object_add(root, "updated_ns", json_object_new_int64(now));
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (asprintf(&key, "%smanifest.json", tprefix) < 0) {
		key = NULL;
		rc = -ENOMEM;
		goto out;
	}
	snprintf(what, wlen, "put %s", key);
	rc = backend_put_buf(s->b, key, text, strlen(text));
	if (rc)
		goto out;
	json_object_put(ts->tombstones);
	ts->tombstones = json_object_get(tomb);
	free(ts->last_cmp);
	ts->last_cmp = cmp;
	cmp = NULL;
	/* Published: objects only the old manifest named can go. */
	for (size_t i = 0; !s->cfg.nodelete && i < ts->nkeys; i++) {
		if (keys_has(keys, nkeys, ts->keys[i]))
			continue;
		snprintf(what, wlen, "delete %s", ts->keys[i]);
		rc = backend_del(s->b, ts->keys[i]);
		if (rc) {
			/* Retried from the next pass: keep them listed. */
			for (size_t j = i; j < ts->nkeys; j++)
				if (!keys_has(keys, nkeys, ts->keys[j]) &&
				    keys_add(&keys, &nkeys, strdup(ts->keys[j])))
					break;
			free(ts->last_cmp);
			ts->last_cmp = NULL;
			break;
		}
	}
	keys_free(ts->keys, ts->nkeys);
	ts->keys = keys;
	ts->nkeys = nkeys;
	keys = NULL;
	nkeys = 0;
out:
	json_object_put(root);
	stream_vec_release(&streams);
	keys_free(keys, nkeys);
	free(sobj);
	free(segs.v);
	free(key);
	free(cmp);
	return rc;
}

/* ---- passes ---- */

/* Deletes what this writer put under a tenant that is gone locally. */
static int drop_tenant(struct sync *s, struct tenant_state *ts, char *what,
		       size_t wlen)
{
	char *tp = sync_tenant_prefix(ts->name), *key = NULL;
	int rc = tp ? 0 : -ENOMEM;

	for (size_t i = 0; !rc && !s->cfg.nodelete && i < ts->nkeys; i++) {
		snprintf(what, wlen, "delete %s", ts->keys[i]);
		rc = backend_del(s->b, ts->keys[i]);
	}
	if (!rc && !s->cfg.nodelete) {
		if (asprintf(&key, "%smanifest.json", tp) < 0)
			key = NULL;
		snprintf(what, wlen, "delete %s", key ? key : "?");
		rc = key ? backend_del(s->b, key) : -ENOMEM;
	}
	if (!rc) {
		free(key);
		key = lease_key(ts->name);
		snprintf(what, wlen, "delete %s", key ? key : "?");
		rc = key ? backend_del(s->b, key) : -ENOMEM;
	}
	if (!rc) {
		keys_free(ts->keys, ts->nkeys);
		ts->keys = NULL;
		ts->nkeys = 0;
		ts->leased = false;
		ts->seeded = false;
		free(ts->last_cmp);
		ts->last_cmp = NULL;
	}
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

/* tenants.json lists the tenants of every writer of the remote: read it,
 * add ours, drop the ones we removed, and write it back when that changes
 * it (a lost race with another writer heals at the next pass). */
static int publish_tenants(struct sync *s, const struct strvec *names,
			   char *what, size_t wlen)
{
	struct backend_buf cur = { .max = 64u << 20 };
	json_object *root = NULL, *arr, *old = NULL, *oarr;
	const char *text;
	int rc;

	snprintf(what, wlen, "get " ROOT "/tenants.json");
	rc = backend_get(s->b, ROOT "/tenants.json", 0, BACKEND_TO_END, &cur);
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
	/* Others' tenants, and ours still present (in name order below). */
	if (old && json_object_object_get_ex(old, "tenants", &oarr)) {
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
			/* Ours: re-added below when still here, dropped
			 * when removed here.  Anyone else's: kept. */
			if (!mine)
				json_object_array_add(arr, json_object_get(o));
		}
	}
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
			rc = -ENOMEM;
			goto out;
		}
		json_object_object_add(o, "name",
				       json_object_new_string(names->v[i]));
		json_object_object_add(o, "key", json_object_new_string(enc));
		json_object_array_add(arr, o);
		free(enc);
	}
	/* In name order, so that writers agree on the text. */
	json_object_array_sort(arr, tenant_cmp);
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!old || strcmp(json_object_to_json_string_ext(
				   old, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), text)) {
		snprintf(what, wlen, "put " ROOT "/tenants.json");
		rc = backend_put_buf(s->b, ROOT "/tenants.json", text,
				     strlen(text));
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

struct pending {
	uint64_t n, bytes;
};

/* The tenants this writer publishes, as one string. */
static char *names_signature(struct sync *s, const struct strvec *names)
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

/* One writer pass over every tenant.  FORCE seals every non-empty segment. */
/* sync_stop() was called: a pass stops at the next segment or tenant. */
bool sync_stopping(struct sync *s)
{
	return atomic_load(&s->abort.now);
}

static int pass(struct sync *s, bool force)
{
	struct strvec names = { 0 };
	struct pending pend = { 0 };
	char what[160] = "list tenants", refused_what[160] = "";
	int rc, refused = 0;
	uint64_t held = 0, nrefused = 0;

	if (s->cfg.url && s->cfg.replica) {
		rc = sync_replica_pass(s, what, sizeof(what));
		goto done;
	}
	rc = store_tenant_list(s->st, strvec_collect, &names);
	for (size_t i = 0; i < s->nts; i++)
		s->ts[i].present = false;
	for (size_t i = 0; !rc && i < names.n; i++) {
		struct store_tenant *t;
		struct tenant_state *ts;
		struct seg_vec segs = { 0 };
		char *tprefix = NULL;
		bool uploaded = false;
		int r;

		if (sync_stopping(s)) {
			rc = -ECANCELED;
			break;
		}
		if (store_tenant_get(s->st, names.v[i], &t) ||
		    store_tenant_removed(t))
			continue;
		r = store_roll(t, sync_clock(CLOCK_REALTIME), force);
		if (r < 0) {
			snprintf(what, sizeof(what), "seal segments of %s",
				 names.v[i]);
			rc = r;
			break;
		}
		if (!s->b)
			continue;	/* roller only */
		ts = sync_tstate(s, names.v[i]);
		if (!ts) {
			rc = -ENOMEM;
			break;
		}
		ts->present = true;
		tprefix = sync_tenant_prefix(names.v[i]);
		if (!tprefix) {
			rc = -ENOMEM;
			break;
		}
		rc = store_segment_list(t, STORE_SEG_SEALED, seg_collect, &segs);
		for (size_t j = 0; j < segs.n; j++) {
			pend.n++;
			pend.bytes += segs.v[j].length;
		}
		if (!rc && !ts->leased) {
			char w2[160];

			r = lease_take(s, ts, w2, sizeof(w2), NULL);
			if (r == -EBUSY) {
				refused = r;
				snprintf(refused_what, sizeof(refused_what),
					 "%s", w2);
				free(segs.v);
				free(tprefix);
				continue;
			}
			if (r)
				snprintf(what, sizeof(what), "%s", w2);
			rc = r;
		}
		if (!rc && !ts->seeded) {
			rc = seed_from_remote(s, ts, tprefix, what, sizeof(what));
			ts->seeded = !rc;
		}
		if (!rc) {
			uint64_t n = 0, bytes = 0;

			rc = sync_upload(s, t, tprefix, &segs, &n, &bytes,
					 what, sizeof(what));
			uploaded = n > 0;
			pend.n -= n;
			pend.bytes -= bytes;
		}
		/* The manifest goes out only after its segments.  It is
		 * rebuilt when segments went up, on sync_now, and otherwise
		 * every MANIFEST_CHECK_NS (renames, removals, attributes):
		 * building it walks every stream of the tenant. */
		if (!rc && (uploaded || force || !ts->last_cmp ||
			    sync_clock(CLOCK_MONOTONIC) - ts->checked_ns >=
			    MANIFEST_CHECK_NS)) {
			rc = publish_manifest(s, t, ts, tprefix, what,
					      sizeof(what));
			if (!rc)
				ts->checked_ns = sync_clock(CLOCK_MONOTONIC);
		}
		free(segs.v);
		free(tprefix);
	}
	if (!rc && s->b) {
		/* tenants.json: when our set changes, and once a minute to
		 * heal a lost race with another writer. */
		char *sig = names_signature(s, &names);
		int64_t now = sync_clock(CLOCK_MONOTONIC);

		if (!sig) {
			rc = -ENOMEM;
		} else if (!s->tenants_json || strcmp(sig, s->tenants_json) ||
			   now - s->tenants_checked_ns > 60 * 1000000000LL) {
			rc = publish_tenants(s, &names, what, sizeof(what));
			if (!rc) {
				free(s->tenants_json);
				s->tenants_json = sig;
				sig = NULL;
				s->tenants_checked_ns = now;
			}
		}
		free(sig);
	}
	if (!rc && refused) {
		rc = refused;
		snprintf(what, sizeof(what), "%s", refused_what);
	}
	if (!rc)
		s->published_once = true;
	for (size_t i = 0; i < s->nts; i++) {
		held += s->ts[i].leased;
		nrefused += s->ts[i].refused && s->ts[i].present;
	}
	pthread_mutex_lock(&s->lock);
	s->status.pending_segments = pend.n;
	s->status.pending_bytes = pend.bytes;
	s->status.leases_held = held;
	s->status.leases_refused = nrefused;
	pthread_mutex_unlock(&s->lock);
	if (s->b && s->cfg.cache_size)
		sync_evict(s, NULL, 0);
done:
	pthread_mutex_lock(&s->lock);
	if (!rc)
		s->status.last_success_ns = sync_clock(CLOCK_REALTIME);
	pthread_mutex_unlock(&s->lock);
	/* Cut short by sync_stop(): not a failure of the remote. */
	if (!(rc == -ECANCELED && sync_stopping(s)))
		sync_note(s, rc, what);
	strvec_release(&names);
	return rc;
}

static void wait_until(struct sync *s, int64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = deadline_ns / 1000000000,
			       .tv_nsec = deadline_ns % 1000000000 };

	int64_t earliest = sync_clock(CLOCK_MONOTONIC) + SYNC_KICK_MIN_NS;

	/* A kick (a commit) brings the next pass forward, but passes stay
	 * SYNC_KICK_MIN_NS apart: a busy writer must not make the thread
	 * spin. */
	while (!s->stop && s->now_req == s->now_done &&
	       sync_clock(CLOCK_MONOTONIC) < deadline_ns) {
		if (s->kicked && sync_clock(CLOCK_MONOTONIC) >= earliest)
			break;
		if (s->kicked && earliest < deadline_ns) {
			struct timespec e = { .tv_sec = earliest / 1000000000,
					      .tv_nsec = earliest % 1000000000 };

			pthread_cond_timedwait(&s->cond, &s->lock, &e);
			continue;
		}
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
}

static void *sync_main(void *arg)
{
	struct sync *s = arg;
	int64_t backoff = 0;

	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		uint64_t target = s->now_req;
		bool force = target != s->now_done;
		int rc;

		s->kicked = false;
		pthread_mutex_unlock(&s->lock);
		rc = pass(s, force);
		pthread_mutex_lock(&s->lock);
		if (!rc) {
			int64_t period = s->cfg.url && s->cfg.replica ?
				s->cfg.poll_ns : s->cfg.interval_ns;

			backoff = 0;
			if (force && s->now_done < target)
				s->now_done = target;
			pthread_cond_broadcast(&s->done);
			wait_until(s, sync_clock(CLOCK_MONOTONIC) + period);
		} else {
			pthread_cond_broadcast(&s->done);
			backoff = backoff ? backoff * 2 : s->cfg.backoff_min_ns;
			/* Refused credentials, a full remote...: no hurry. */
			if (!backend_err_retryable(rc))
				backoff = s->cfg.backoff_max_ns;
			if (backoff > s->cfg.backoff_max_ns)
				backoff = s->cfg.backoff_max_ns;
			/* A kick must not defeat the backoff; only stop does
			 * (and sync_now, which wants an answer soon). */
			{
				int64_t deadline = sync_clock(CLOCK_MONOTONIC) + backoff;
				uint64_t req = s->now_req;

				while (!s->stop && s->now_req == req &&
				       sync_clock(CLOCK_MONOTONIC) < deadline) {
					struct timespec ts = {
						.tv_sec = deadline / 1000000000,
						.tv_nsec = deadline % 1000000000 };

					pthread_cond_timedwait(&s->cond,
							       &s->lock, &ts);
				}
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void sync_free(struct sync *s)
{
	backend_close(s->b);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->fetch_cond);
	pthread_cond_destroy(&s->fetch_done);
	pthread_cond_destroy(&s->upload_cond);
	pthread_cond_destroy(&s->upload_done);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->evict_lock);
	for (size_t i = 0; i < s->nts; i++)
		tstate_release(&s->ts[i]);
	free(s->ts);
	free(s->tenants_json);
	free(s->identity);
	free((char *)s->cfg.url);
	free((char *)s->cfg.state_dir);
	free(s);
}

/* At start: the lease of every existing tenant, so that a second writer
 * is refused at mount.  An unreachable remote is left to the thread. */
static int leases_at_start(struct sync *s)
{
	struct strvec names = { 0 };
	bool *created = NULL;
	char what[160];
	int rc;

	rc = store_tenant_list(s->st, strvec_collect, &names);
	if (!rc && names.n && !(created = calloc(names.n, sizeof(*created))))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < names.n; i++) {
		struct tenant_state *ts = sync_tstate(s, names.v[i]);
		bool c = false;

		rc = ts ? lease_take(s, ts, what, sizeof(what), &c) : -ENOMEM;
		/* s->ts starts empty and grows only here: ts - s->ts <= i. */
		if (c)
			created[ts - s->ts] = true;
		if (backend_err_retryable(rc)) {
			sync_log("remote %s unreachable at start (%s: %s); "
				 "leases are taken when it comes back",
				 s->cfg.url, what, strerror(-rc));
			rc = 0;
			break;
		}
	}
	/* Refused: undo only the leases this call wrote.  A lease that
	 * already named us (held before a restart) stays: its tenant may
	 * have segments not uploaded yet, and no other writer may take
	 * it over. */
	if (rc == -EBUSY)
		lease_release(s, created);
	free(created);
	strvec_release(&names);
	return rc;
}

int sync_start(struct store *st, const struct sync_config *cfg,
	       struct sync **out)
{
	pthread_condattr_t ca;
	struct sync *s;
	int rc;

	*out = NULL;
	if (cfg->url && !cfg->replica && !cfg->state_dir)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->st = st;
	s->cfg = *cfg;
	s->cfg.url = cfg->url ? strdup(cfg->url) : NULL;
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
	if (gethostname(s->host, sizeof(s->host) - 1) < 0)
		snprintf(s->host, sizeof(s->host), "unknown");
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->evict_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_cond_init(&s->done, &ca);
	pthread_cond_init(&s->fetch_cond, &ca);
	pthread_cond_init(&s->fetch_done, &ca);
	pthread_cond_init(&s->upload_cond, &ca);
	pthread_cond_init(&s->upload_done, &ca);
	pthread_condattr_destroy(&ca);
	if ((cfg->url && !s->cfg.url) ||
	    (cfg->state_dir && !s->cfg.state_dir)) {
		rc = -ENOMEM;
		goto fail;
	}
	s->cfg.opts.abort = &s->abort;
	rc = cfg->url ? backend_open_url(cfg->url, &s->cfg.opts, &s->b) : 0;
	if (rc)
		goto fail;
	if (s->b && !s->cfg.replica) {
		rc = load_identity(s);
		if (rc) {
			sync_log("cannot read or create %s/sync-identity: %s",
				 s->cfg.state_dir, strerror(-rc));
			goto fail;
		}
		rc = leases_at_start(s);
		if (!rc)
			rc = sync_upload_start(s);
		if (rc)
			goto fail;
	}
	if (s->b) {
		rc = sync_fetch_start(s);
		if (rc)
			goto fail;
		store_set_fetch_hook(st, sync_fetch_hook, sync_fetch_reached,
				     s);
	}
	rc = -pthread_create(&s->thread, NULL, sync_main, s);
	if (rc) {
		if (s->b) {
			sync_fetch_stop(s);
			store_set_fetch_hook(st, NULL, NULL, NULL);
		}
		goto fail;
	}
	s->thread_started = true;
	*out = s;
	return 0;
fail:
	sync_upload_stop(s);
	sync_free(s);
	return rc;
}

void sync_stop(struct sync *s)
{
	if (!s)
		return;
	/* Transfers in flight end now (-ECANCELED); the pass stops at the
	 * next segment or tenant.  What was cut short is redone on the next
	 * start. */
	atomic_store(&s->abort.now, true);
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_cond_broadcast(&s->done);
	pthread_cond_broadcast(&s->fetch_cond);
	pthread_cond_broadcast(&s->fetch_done);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	sync_upload_stop(s);
	if (s->b) {
		/* Fails pending fetches and waits until no reader is inside
		 * the hook; only then is the hook cleared (store does not
		 * yet clear it atomically with respect to callers, so fs
		 * stops its readers before sync_stop). */
		sync_fetch_stop(s);
		store_set_fetch_hook(s->st, NULL, NULL, NULL);
		/* Releasing the leases is worth a few seconds, not more:
		 * a stalled remote must not hold up the unmount. */
		atomic_store(&s->abort.deadline_ns,
			     sync_clock(CLOCK_MONOTONIC) + STOP_RELEASE_NS);
		atomic_store(&s->abort.now, false);
		if (!s->cfg.replica)
			lease_release(s, NULL);
	}
	sync_free(s);
}

void sync_kick(struct sync *s)
{
	/* A replica's commits are its own thread's doing; roller passes
	 * need no hurry. */
	if (!s || !s->b || s->cfg.replica)
		return;
	pthread_mutex_lock(&s->lock);
	/* Once told, the thread keeps the kick until its next pass: waking
	 * it again for every append would only send it back to sleep. */
	if (!s->kicked) {
		s->kicked = true;
		pthread_cond_signal(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
}

int sync_now(struct sync *s, int64_t timeout_ns)
{
	int64_t deadline = sync_clock(CLOCK_MONOTONIC) + timeout_ns;
	uint64_t req;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
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
		pthread_cond_timedwait(&s->done, &s->lock, &ts);
	}
	if (s->now_done < req && !rc)
		rc = -ECANCELED;	/* stopped */
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void sync_get_status(struct sync *s, struct sync_status *out)
{
	pthread_mutex_lock(&s->lock);
	*out = s->status;
	pthread_mutex_unlock(&s->lock);
}

/* ---- per-stream status ---- */

struct reach {
	uint64_t stream;
	struct seg_vec segs;
};

static int reach_collect(void *arg, const struct store_segment *seg)
{
	struct reach *r = arg;

	return seg->stream == r->stream ? seg_collect(&r->segs, seg) : 0;
}

int sync_stream_status(struct sync *s, struct store_tenant *t,
		       uint64_t stream, char *buf, size_t len)
{
	struct reach r = { .stream = stream };
	struct store_attr attr;
	uint64_t reached = 0, size = 0;
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
		qsort(r.segs.v, r.segs.n, sizeof(*r.segs.v), seg_cmp);
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
	if (reached >= attr.version)
		n = snprintf(buf, len, "uploaded %" PRIu64, attr.version);
	else
		n = snprintf(buf, len, "%s %" PRIu64 "/%" PRIu64,
			     sealed ? "uploading" : "local", reached,
			     attr.version);
out:
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}
