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
#include <xxhash.h>

#include "sync.h"
#include "sync_int.h"

#define ROOT "streamfs-v1"

struct sync {
	struct store *st;
	struct backend *b;		/* used by the thread only */
	struct sync_config cfg;
	pthread_t thread;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* wakes the thread; with lock */
	pthread_cond_t done;		/* wakes sync_now() waiters; with lock */
	bool stop;			/* protected by lock */
	bool kicked;			/* protected by lock */
	uint64_t now_req;		/* protected by lock: sync_now() calls */
	uint64_t now_done;		/* protected by lock: calls satisfied */
	struct sync_status status;	/* protected by lock */

	/* Thread-only state. */
	bool published_once;		/* every manifest written since start */
	char *tenants_json;		/* last tenants.json written */
};

static int64_t now_ns(clockid_t clk)
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
		.fetch_range = 4u << 20,
		.fetch_attempts = 4,
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
static void note_result(struct sync *s, int rc, const char *what)
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
		s->status.last_error_ns = now_ns(CLOCK_REALTIME);
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

struct seg_vec {
	struct store_segment *v;
	size_t n, alloc;
};

static int seg_collect(void *arg, const struct store_segment *seg)
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

static char *tenant_prefix(const char *tenant)
{
	char *enc = sync_key_encode(tenant), *out = NULL;

	if (enc && asprintf(&out, ROOT "/tenants/%s/", enc) < 0)
		out = NULL;
	free(enc);
	return out;
}

static char *segment_key(const char *tprefix, const struct store_segment *seg)
{
	char *out;

	if (asprintf(&out, "%ssegments/%016" PRIx64 "-%016" PRIx64, tprefix,
		     seg->seg, seg->checksum) < 0)
		return NULL;
	return out;
}

/* Checks that the local file holds the sealed bytes before they leave. */
static int check_local(int fd, const struct store_segment *seg)
{
	XXH3_state_t *x = XXH3_createState();
	char buf[65536];
	uint64_t off = 0;
	int rc = 0;

	if (!x)
		return -ENOMEM;
	XXH3_64bits_reset(x);
	while (off < seg->length) {
		size_t want = seg->length - off < sizeof(buf) ?
			(size_t)(seg->length - off) : sizeof(buf);
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		XXH3_64bits_update(x, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (!rc && XXH3_64bits_digest(x) != seg->checksum)
		rc = -EIO;
	XXH3_freeState(x);
	return rc;
}

static int upload_segment(struct sync *s, struct store_tenant *t,
			  const char *tprefix, const struct store_segment *seg,
			  char *what, size_t wlen)
{
	char *path = store_segment_path(t, seg->seg), *key = NULL;
	struct backend_stat bst;
	struct stat st;
	int fd = -1, rc;

	key = segment_key(tprefix, seg);
	snprintf(what, wlen, "put %s", key ? key : "?");
	if (!path || !key) {
		rc = -ENOMEM;
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(what, wlen, "read local segment %s", path);
		goto out;
	}
	if ((uint64_t)st.st_size < seg->length || check_local(fd, seg)) {
		rc = -EIO;
		snprintf(what, wlen, "checksum of local segment %s", path);
		goto out;
	}
	rc = backend_put(s->b, key, &(struct backend_body){
					    .fd = fd, .len = seg->length });
	if (rc)
		goto out;
	/* Confirm before marking: a proxy or server may have cut it short. */
	snprintf(what, wlen, "head %s", key);
	rc = backend_head(s->b, key, &bst);
	if (!rc && bst.size != seg->length)
		rc = -EAGAIN;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	free(key);
	return rc;
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

static int seg_cmp(const void *a, const void *b)
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

/* Writes TENANT's manifest: every stream with its uploaded segments. */
static int publish_manifest(struct sync *s, struct store_tenant *t,
			    const char *tprefix, char *what, size_t wlen)
{
	struct stream_vec streams = { 0 };
	struct seg_vec segs = { 0 };
	json_object *root = NULL, *arr;
	char *key = NULL;
	const char *text;
	int rc;

	snprintf(what, wlen, "manifest of %s", store_tenant_name(t));
	rc = store_stream_list(t, 0, stream_collect, &streams);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_UPLOADED, seg_collect, &segs);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_EVICTED, seg_collect, &segs);
	if (rc)
		goto out;
	if (segs.n)
		qsort(segs.v, segs.n, sizeof(*segs.v), seg_cmp);
	root = json_object_new_object();
	arr = json_object_new_array();
	if (!root || !arr) {
		json_object_put(arr);
		rc = -ENOMEM;
		goto out;
	}
	json_object_object_add(root, "format",
			       json_object_new_string("streamfs-tenant-manifest"));
	json_object_object_add(root, "version", json_object_new_int(1));
	json_object_object_add(root, "tenant",
			       json_object_new_string(store_tenant_name(t)));
	json_object_object_add(root, "updated_ns",
			       json_object_new_int64(now_ns(CLOCK_REALTIME)));
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
		json_object_object_add(o, "mtime_ns", json_object_new_int64(
			(int64_t)r->attr.mtime.tv_sec * 1000000000 +
			r->attr.mtime.tv_nsec));
		json_object_object_add(o, "size", json_object_new_uint64(size));
		json_object_object_add(o, "version",
				       json_object_new_uint64(version));
		json_object_object_add(o, "segments", sa);
		json_object_array_add(arr, o);
		if (rc)
			goto out;
	}
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (asprintf(&key, "%smanifest.json", tprefix) < 0) {
		key = NULL;
		rc = -ENOMEM;
		goto out;
	}
	snprintf(what, wlen, "put %s", key);
	rc = backend_put_buf(s->b, key, text, strlen(text));
out:
	json_object_put(root);
	stream_vec_release(&streams);
	free(segs.v);
	free(key);
	return rc;
}

/* ---- passes ---- */

struct name_vec {
	char **v;
	size_t n, alloc;
};

static int name_collect(void *arg, const char *name)
{
	struct name_vec *nv = arg;

	if (nv->n == nv->alloc) {
		size_t alloc = nv->alloc ? 2 * nv->alloc : 16;
		char **v = realloc(nv->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		nv->v = v;
		nv->alloc = alloc;
	}
	if (!(nv->v[nv->n] = strdup(name)))
		return -ENOMEM;
	nv->n++;
	return 0;
}

static void name_vec_release(struct name_vec *nv)
{
	for (size_t i = 0; i < nv->n; i++)
		free(nv->v[i]);
	free(nv->v);
}

static int publish_tenants(struct sync *s, const struct name_vec *names,
			   char *what, size_t wlen)
{
	json_object *root = json_object_new_object();
	json_object *arr = json_object_new_array();
	const char *text;
	int rc = 0;

	if (!root || !arr) {
		json_object_put(root);
		json_object_put(arr);
		return -ENOMEM;
	}
	json_object_object_add(root, "format",
			       json_object_new_string("streamfs-tenants"));
	json_object_object_add(root, "version", json_object_new_int(1));
	json_object_object_add(root, "tenants", arr);
	for (size_t i = 0; i < names->n; i++) {
		char *enc = sync_key_encode(names->v[i]);
		json_object *o = json_object_new_object();

		if (!enc || !o) {
			free(enc);
			json_object_put(o);
			rc = -ENOMEM;
			break;
		}
		json_object_object_add(o, "name",
				       json_object_new_string(names->v[i]));
		json_object_object_add(o, "key", json_object_new_string(enc));
		json_object_array_add(arr, o);
		free(enc);
	}
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!rc && (!s->tenants_json || strcmp(s->tenants_json, text))) {
		snprintf(what, wlen, "put " ROOT "/tenants.json");
		rc = backend_put_buf(s->b, ROOT "/tenants.json", text,
				     strlen(text));
		if (!rc) {
			free(s->tenants_json);
			s->tenants_json = strdup(text);
		}
	}
	json_object_put(root);
	return rc;
}

struct pending {
	uint64_t n, bytes;
};

/* One pass over every tenant.  FORCE seals every non-empty segment. */
static int pass(struct sync *s, bool force)
{
	struct name_vec names = { 0 };
	struct pending pend = { 0 };
	char what[160] = "list tenants";
	int rc;

	rc = store_tenant_list(s->st, name_collect, &names);
	for (size_t i = 0; !rc && i < names.n; i++) {
		struct store_tenant *t;
		struct seg_vec segs = { 0 };
		char *tprefix = NULL;
		bool dirty = !s->published_once;
		int r;

		if (store_tenant_get(s->st, names.v[i], &t) ||
		    store_tenant_removed(t))
			continue;
		r = store_roll(t, now_ns(CLOCK_REALTIME), force);
		if (r < 0) {
			snprintf(what, sizeof(what), "seal segments of %s",
				 names.v[i]);
			rc = r;
			break;
		}
		if (!s->b)
			continue;	/* roller only */
		tprefix = tenant_prefix(names.v[i]);
		if (!tprefix) {
			rc = -ENOMEM;
			break;
		}
		rc = store_segment_list(t, STORE_SEG_SEALED, seg_collect, &segs);
		for (size_t j = 0; j < segs.n; j++) {
			pend.n++;
			pend.bytes += segs.v[j].length;
		}
		for (size_t j = 0; !rc && j < segs.n; j++) {
			rc = upload_segment(s, t, tprefix, &segs.v[j], what,
					    sizeof(what));
			if (!rc) {
				snprintf(what, sizeof(what),
					 "mark segment %" PRIu64 " uploaded",
					 segs.v[j].seg);
				rc = store_segment_mark_uploaded(t, segs.v[j].seg);
			}
			/* A stream removed meanwhile: nothing to ship. */
			if (rc == -ENOENT)
				rc = 0;
			if (!rc) {
				dirty = true;
				pend.n--;
				pend.bytes -= segs.v[j].length;
				pthread_mutex_lock(&s->lock);
				s->status.uploaded_segments++;
				s->status.uploaded_bytes += segs.v[j].length;
				pthread_mutex_unlock(&s->lock);
			}
		}
		/* The manifest goes out only after its segments. */
		if (!rc && dirty)
			rc = publish_manifest(s, t, tprefix, what, sizeof(what));
		free(segs.v);
		free(tprefix);
	}
	if (!rc && s->b)
		rc = publish_tenants(s, &names, what, sizeof(what));
	if (!rc)
		s->published_once = true;
	pthread_mutex_lock(&s->lock);
	s->status.pending_segments = pend.n;
	s->status.pending_bytes = pend.bytes;
	if (!rc)
		s->status.last_success_ns = now_ns(CLOCK_REALTIME);
	pthread_mutex_unlock(&s->lock);
	note_result(s, rc, what);
	name_vec_release(&names);
	return rc;
}

static void wait_until(struct sync *s, int64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = deadline_ns / 1000000000,
			       .tv_nsec = deadline_ns % 1000000000 };

	while (!s->stop && !s->kicked && s->now_req == s->now_done &&
	       now_ns(CLOCK_MONOTONIC) < deadline_ns)
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
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
			backoff = 0;
			if (force && s->now_done < target)
				s->now_done = target;
			pthread_cond_broadcast(&s->done);
			wait_until(s, now_ns(CLOCK_MONOTONIC) + s->cfg.interval_ns);
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
				int64_t deadline = now_ns(CLOCK_MONOTONIC) + backoff;
				uint64_t req = s->now_req;

				while (!s->stop && s->now_req == req &&
				       now_ns(CLOCK_MONOTONIC) < deadline) {
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

int sync_start(struct store *st, const struct sync_config *cfg,
	       struct sync **out)
{
	pthread_condattr_t ca;
	struct sync *s;
	int rc;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->st = st;
	s->cfg = *cfg;
	s->cfg.url = cfg->url ? strdup(cfg->url) : NULL;
	if (cfg->url && !s->cfg.url) {
		free(s);
		return -ENOMEM;
	}
	rc = cfg->url ? backend_open_url(cfg->url, &cfg->opts, &s->b) : 0;
	if (rc) {
		free((char *)s->cfg.url);
		free(s);
		return rc;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_cond_init(&s->done, &ca);
	pthread_condattr_destroy(&ca);
	rc = -pthread_create(&s->thread, NULL, sync_main, s);
	if (rc) {
		backend_close(s->b);
		pthread_cond_destroy(&s->cond);
		pthread_cond_destroy(&s->done);
		pthread_mutex_destroy(&s->lock);
		free((char *)s->cfg.url);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void sync_stop(struct sync *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_cond_broadcast(&s->done);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	backend_close(s->b);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->done);
	pthread_mutex_destroy(&s->lock);
	free(s->tenants_json);
	free((char *)s->cfg.url);
	free(s);
}

void sync_kick(struct sync *s)
{
	pthread_mutex_lock(&s->lock);
	s->kicked = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

int sync_now(struct sync *s, int64_t timeout_ns)
{
	int64_t deadline = now_ns(CLOCK_MONOTONIC) + timeout_ns;
	uint64_t req;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	req = ++s->now_req;
	pthread_cond_signal(&s->cond);
	while (s->now_done < req && !s->stop) {
		struct timespec ts = { .tv_sec = deadline / 1000000000,
				       .tv_nsec = deadline % 1000000000 };

		if (now_ns(CLOCK_MONOTONIC) >= deadline) {
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
	rc = store_segment_list(t, STORE_SEG_UPLOADED, reach_collect, &r);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_EVICTED, reach_collect, &r);
	if (!rc)
		rc = store_segment_list(t, STORE_SEG_SEALED, reach_collect, &r);
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
		if (g->state == STORE_SEG_SEALED) {
			sealed = true;
			break;
		}
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
