/*
 * sync_test: the sync thread against a real store and a backend.
 *
 *   sync_test WORKDIR [URL [KEY=VALUE ...]]
 *
 * Uses WORKDIR/data as the store and URL (default file://WORKDIR/remote) as
 * the remote.  Checks: segments, then manifests reach the remote with the
 * right bytes; a restart does not upload again; while the remote fails
 * (injected through backend_fault_hook) writers go on and sync_now reports
 * the failure; once it heals everything arrives.  Prints "ok"/"not ok"
 * lines and "N passed, N failed"; exits 1 on a failure.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "store_sync.h"
#include "sync.h"

static atomic_int remote_down;

/* mode=parallel: segment puts are slowed down, the first one fails twice,
 * and every manifest put checks what is on the remote at that moment. */
static struct {
	atomic_bool on;
	const char *remote;		/* the file:// remote's directory */
	struct store_tenant *t;
	pthread_mutex_t lock;
	char victim[256];		/* protected by lock */
	int victim_fails;		/* protected by lock */
	atomic_int in_flight, max_in_flight;
	atomic_int manifests, missing;
} par = { .lock = PTHREAD_MUTEX_INITIALIZER };

static bool ends_with(const char *s, const char *end)
{
	size_t n = strlen(s), m = strlen(end);

	return n >= m && !strcmp(s + n - m, end);
}

static int check_uploaded(void *arg, const struct store_segment *seg)
{
	char path[4096];
	struct stat st;

	(void)arg;
	for (int idx = 0; idx < 2; idx++) {
		snprintf(path, sizeof(path), "%s/streamfs-v1/tenants/par/"
			 "segments/%016llx-%016llx%s", par.remote,
			 (unsigned long long)seg->seg,
			 (unsigned long long)seg->checksum, idx ? ".idx" : "");
		if (stat(path, &st) < 0 || (!idx && (uint64_t)st.st_size != seg->length))
			atomic_fetch_add(&par.missing, 1);
	}
	return 0;
}

static int parallel_fault(const char *op, const char *key)
{
	int rc = 0, n;

	/* Manifests go up by compare-and-swap (put_if_match and
	 * put_if_absent) on backends that enforce it. */
	if (strncmp(op, "put", 3))
		return 0;
	if (ends_with(key, "manifest.json")) {
		/* Everything marked uploaded is complete on the remote. */
		atomic_fetch_add(&par.manifests, 1);
		if (store_segment_list(par.t, STORE_SEG_UPLOADED,
				       check_uploaded, NULL))
			atomic_fetch_add(&par.missing, 1);
		return 0;
	}
	if (strcmp(op, "put") || !strstr(key, "/segments/") ||
	    ends_with(key, ".idx"))
		return 0;
	n = atomic_fetch_add(&par.in_flight, 1) + 1;
	for (int m = atomic_load(&par.max_in_flight); n > m &&
	     !atomic_compare_exchange_weak(&par.max_in_flight, &m, n);)
		;
	usleep(100000);
	pthread_mutex_lock(&par.lock);
	if (!par.victim[0])
		snprintf(par.victim, sizeof(par.victim), "%s", key);
	if (!strcmp(par.victim, key) && par.victim_fails < 2) {
		par.victim_fails++;
		rc = -EAGAIN;
	}
	pthread_mutex_unlock(&par.lock);
	atomic_fetch_sub(&par.in_flight, 1);
	return rc;
}

/* mode=fence: when the writer puts the manifest of tenant "f" (right
 * after confirming its lease), another writer "writer-b" takes the lease
 * over and publishes first, through its own backend: the race that a
 * writer paused between its confirmation and its put would lose. */
static struct {
	atomic_bool armed;
	atomic_bool inside;		/* the hook's own requests pass */
	atomic_int fired;
	struct backend *b;		/* writer-b's */
	char token[BACKEND_TAG_MAX];	/* writer-b's manifest lock */
} fz;

static const char fz_lease[] = "streamfs-v1/tenants/f/lease.json";
static const char fz_manifest[] = "streamfs-v1/tenants/f/manifest.json";

/* writer-b replaces the object at KEY, conditionally, with TEXT. */
static int fz_replace(const char *key, const char *text)
{
	struct backend_buf cur = { 0 };
	char tag[BACKEND_TAG_MAX];
	int rc = backend_get_tagged(fz.b, key, &cur, tag);

	if (!rc)
		rc = backend_put_if_match_buf(fz.b, key, text, strlen(text),
					      tag, NULL);
	backend_buf_release(&cur);
	return rc;
}

/* writer-b, on a remote that locks (WebDAV), writes the manifest as a
 * writer does there: under a lock of its own that it keeps, taken once
 * the paused writer's expired (the server refuses it until then). */
static int fz_lock_put(const char *key, const char *text)
{
	long granted;
	int rc = -EAGAIN;

	for (int i = 0; i < 240 && rc == -EAGAIN; i++) {
		rc = backend_lock(fz.b, key, 60, fz.token, &granted);
		if (rc == -EAGAIN)
			usleep(500000);
	}
	return rc ? rc : backend_put_locked_buf(fz.b, key, text, strlen(text),
						fz.token);
}

static void fence_fault(const char *op, const char *key)
{
	static const char lease[] =
		"{\"format\": \"streamfs-lease\", \"version\": 2, "
		"\"writer\": \"writer-b\", \"host\": \"b\", \"generation\": 2, "
		"\"expires_ns\": 4000000000000000000}\n";
	static const char manifest[] =
		"{\"format\": \"streamfs-tenant-manifest\", \"version\": 1, "
		"\"tenant\": \"f\", \"writer\": \"writer-b\", "
		"\"generation\": 2, \"streams\": []}\n";

	if (!atomic_load(&fz.armed) || atomic_load(&fz.inside) ||
	    strncmp(op, "put", 3) || !strstr(key, fz_manifest))
		return;
	atomic_store(&fz.armed, false);
	atomic_store(&fz.inside, true);
	if (!fz_replace(fz_lease, lease) &&
	    !(backend_caps(fz.b) & BACKEND_CAP_LOCK ?
	      fz_lock_put(fz_manifest, manifest) :
	      fz_replace(fz_manifest, manifest)))
		atomic_fetch_add(&fz.fired, 1);
	atomic_store(&fz.inside, false);
}

/* mode=seedfence: writer-b continues tenant "g" after writer-a released
 * it; the moment writer-b reads anything of "g" but its manifest and
 * lease (it is seeding from the manifest it read), writer-a, as if it had
 * been paused between its check of the lease and its manifest put, puts
 * its manifest by compare-and-swap on the tag it last knew.  That must
 * fail: the continuing writer stamped the manifest before seeding. */
static struct {
	atomic_bool armed;
	atomic_bool inside;
	atomic_int fired;
	struct backend *b;		/* writer-a's, for its late put */
	char tag[BACKEND_TAG_MAX];	/* the manifest's, as writer-a knew it */
	int rc;				/* that put's */
} sf;

static const char sf_manifest[] = "streamfs-v1/tenants/g/manifest.json";

static void seedfence_fault(const char *op, const char *key)
{
	static const char zombie[] =
		"{\"format\": \"streamfs-tenant-manifest\", \"version\": 1, "
		"\"tenant\": \"g\", \"writer\": \"writer-a\", "
		"\"generation\": 1, \"streams\": []}\n";

	if (!atomic_load(&sf.armed) || atomic_load(&sf.inside) ||
	    strncmp(op, "get", 3) || !strstr(key, "/tenants/g/") ||
	    ends_with(key, "/manifest.json") || ends_with(key, "/lease.json"))
		return;
	atomic_store(&sf.armed, false);
	atomic_store(&sf.inside, true);
	sf.rc = backend_put_if_match_buf(sf.b, sf_manifest, zombie,
					 strlen(zombie), sf.tag, NULL);
	atomic_fetch_add(&sf.fired, 1);
	atomic_store(&sf.inside, false);
}

/* mode=idx: the first event index put fails; segment puts are counted. */
static struct {
	atomic_bool on;
	atomic_int idx_fails, data_puts;
} ix;

static int idx_fault(const char *op, const char *key)
{
	int zero = 0;

	if (!atomic_load(&ix.on) || strcmp(op, "put") ||
	    !strstr(key, "/segments/"))
		return 0;
	if (!ends_with(key, ".idx")) {
		atomic_fetch_add(&ix.data_puts, 1);
		return 0;
	}
	return atomic_compare_exchange_strong(&ix.idx_fails, &zero, 1) ?
	       -EAGAIN : 0;
}

/* mode=flaky: every put of one segment fails while on. */
static struct {
	atomic_bool on;
	char victim[64];		/* "segments/SEG-XXH3", set before */
	atomic_int fails;
} fl;

static int flaky_fault(const char *op, const char *key)
{
	if (!atomic_load(&fl.on) || strcmp(op, "put") ||
	    !strstr(key, fl.victim))
		return 0;
	atomic_fetch_add(&fl.fails, 1);
	return -EAGAIN;
}

static int fault(const struct backend *b, const char *op, const char *key)
{
	int rc;

	(void)b;
	fence_fault(op, key);
	seedfence_fault(op, key);
	rc = flaky_fault(op, key);
	if (rc)
		return rc;
	rc = idx_fault(op, key);
	if (rc)
		return rc;
	if (atomic_load(&par.on))
		return parallel_fault(op, key);
	return atomic_load(&remote_down) ? -EAGAIN : 0;
}

static int append(struct store_tenant *t, uint64_t id, const char *s)
{
	struct store_append app = { .buf = s, .len = strlen(s),
				    .expected = STORE_ANY_VERSION,
				    .final = true };
	struct store_append_result res;

	return store_append(t, id, &app, &res);
}

/* Reads the remote copy of stream NAME of tenant key TKEY into OUT by
 * following the manifest.  Returns the manifest's size or -errno. */
static long remote_stream(struct backend *b, const char *tkey,
			  const char *name, struct backend_buf *out)
{
	char key[1024];
	struct backend_buf m = { 0 };
	json_object *root = NULL, *streams;
	long size = -ENOENT;
	int rc;

	snprintf(key, sizeof(key), "streamfs-v1/tenants/%s/manifest.json", tkey);
	rc = backend_get(b, key, 0, BACKEND_TO_END, &m);
	if (rc) {
		backend_buf_release(&m);
		return rc;
	}
	root = json_tokener_parse(m.data);
	if (!root || !json_object_object_get_ex(root, "streams", &streams)) {
		size = -EIO;
		goto out;
	}
	for (size_t i = 0; i < json_object_array_length(streams); i++) {
		json_object *s = json_object_array_get_idx(streams, i), *v, *segs;

		json_object_object_get_ex(s, "name", &v);
		if (strcmp(json_object_get_string(v), name))
			continue;
		json_object_object_get_ex(s, "size", &v);
		size = (long)json_object_get_uint64(v);
		json_object_object_get_ex(s, "segments", &segs);
		for (size_t j = 0; j < json_object_array_length(segs); j++) {
			json_object *seg = json_object_array_get_idx(segs, j), *k;

			json_object_object_get_ex(seg, "key", &k);
			snprintf(key, sizeof(key), "streamfs-v1/tenants/%s/%s",
				 tkey, json_object_get_string(k));
			rc = backend_get(b, key, 0, BACKEND_TO_END, out);
			if (rc) {
				size = rc;
				goto out;
			}
		}
	}
out:
	json_object_put(root);
	backend_buf_release(&m);
	return size;
}

static void expect_remote(struct backend *b, const char *tkey,
			  const char *name, const char *want)
{
	struct backend_buf out = { 0 };
	long size = remote_stream(b, tkey, name, &out);

	CHECK(size == (long)strlen(want) && out.len == strlen(want) &&
	      !memcmp(out.data, want, out.len),
	      "remote %s/%s holds \"%.*s\" (size %ld)", tkey, name,
	      (int)strcspn(want, "\n"), want, size);
	backend_buf_release(&out);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int collect_seg(void *arg, const struct store_segment *seg)
{
	uint64_t *ids = arg;

	if (ids[0] < 15)
		ids[++ids[0]] = seg->seg;
	return 0;
}

/* Inverts the first byte of every sealed (not yet uploaded) segment file
 * of T; doing it twice restores them.  Returns how many. */
static int flip_sealed(struct store_tenant *t)
{
	uint64_t ids[16] = { 0 };
	int n = 0;

	if (store_segment_list(t, STORE_SEG_SEALED, collect_seg, ids))
		return -1;
	for (uint64_t i = 1; i <= ids[0]; i++) {
		char *path = store_segment_path(t, ids[i]);
		int fd = path ? open(path, O_RDWR | O_CLOEXEC) : -1;
		unsigned char c;

		if (fd >= 0 && pread(fd, &c, 1, 0) == 1) {
			c ^= 0xff;
			if (pwrite(fd, &c, 1, 0) == 1)
				n++;
		}
		if (fd >= 0)
			close(fd);
		free(path);
	}
	return n;
}

/* mode=parallel (file:// remote): six sealed segments go up three at a
 * time; the first one's put fails twice.  The others are marked uploaded
 * meanwhile, yet every manifest put finds each segment marked uploaded
 * (and its event index) complete on the remote. */
static void parallel_mode(struct store *st, struct sync_config *cfg,
			  const char *workdir)
{
	char remote[4096];
	struct store_tenant *t;
	struct sync *s = NULL;
	struct sync_status ss;
	struct backend *b = NULL;
	uint64_t id;
	int rc;

	snprintf(remote, sizeof(remote), "%s/remote", workdir);
	rc = store_tenant_create(st, "par", 0755, 0, 0);
	CHECK(rc == 0, "tenant (%d)", rc);
	rc = store_tenant_get(st, "par", &t);
	CHECK(rc == 0, "tenant get (%d)", rc);
	if (rc)
		return;
	rc = store_stream_create(t, "s", 0644, 0, 0, &id);
	CHECK(rc == 0, "stream (%d)", rc);
	for (int i = 0; i < 6; i++) {
		char line[8];

		snprintf(line, sizeof(line), "%d\n", i);
		rc = append(t, id, line);
		if (!rc)
			rc = store_roll(t, 0, true) == 1 ? 0 : -EIO;
		CHECK(rc == 0, "segment %d sealed (%d)", i, rc);
	}
	par.remote = remote;
	par.t = t;
	atomic_store(&par.on, true);
	cfg->upload_parallel = 3;
	rc = sync_start(st, cfg, &s);
	CHECK(rc == 0, "sync_start (%d)", rc);
	if (rc)
		return;
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "sync_now (%d)", rc);
	sync_get_status(s, &ss);
	sync_stop(s);
	atomic_store(&par.on, false);
	CHECK(ss.uploaded_segments == 6 && ss.pending_segments == 0,
	      "six segments uploaded (%llu, %llu pending)",
	      (unsigned long long)ss.uploaded_segments,
	      (unsigned long long)ss.pending_segments);
	CHECK(par.victim_fails == 2, "the first segment's put failed twice (%d)",
	      par.victim_fails);
	CHECK(atomic_load(&par.max_in_flight) >= 2 &&
	      atomic_load(&par.max_in_flight) <= 3,
	      "segments went up at once, at most three (%d)",
	      atomic_load(&par.max_in_flight));
	CHECK(atomic_load(&par.manifests) >= 1 && atomic_load(&par.missing) == 0,
	      "every manifest put found its segments complete (%d puts, %d "
	      "missing)", atomic_load(&par.manifests),
	      atomic_load(&par.missing));
	rc = backend_open_url(cfg->url, &cfg->opts, &b);
	CHECK(rc == 0, "open the remote (%d)", rc);
	if (!rc)
		expect_remote(b, "par", "s", "0\n1\n2\n3\n4\n5\n");
	backend_close(b);
}

/* The "writer" member of the object at KEY, into BUF. */
static void remote_writer(struct backend *b, const char *key, char *buf,
			  size_t len)
{
	struct backend_buf text = { 0 };
	json_object *o = NULL, *w;

	snprintf(buf, len, "?");
	if (!backend_get(b, key, 0, BACKEND_TO_END, &text) &&
	    !backend_buf_terminate(&text) &&
	    (o = json_tokener_parse(text.data)) &&
	    json_object_object_get_ex(o, "writer", &w))
		snprintf(buf, len, "%s", json_object_get_string(w));
	json_object_put(o);
	backend_buf_release(&text);
}

/* mode=fence: the writer's manifest put races with a takeover (above).
 * It must not land: the manifest is written by compare-and-swap (on
 * WebDAV under a lock that writer-b holds now), the writer finds the
 * lease another's and is fenced for good.  On WebDAV the lease is
 * short, so that the paused writer's manifest lock expires soon. */
static void fence_mode(struct store *st, struct sync_config *cfg)
{
	struct store_tenant *t;
	struct sync *s = NULL;
	struct sync_status ss;
	struct sync_lease *leases = NULL;
	size_t nleases = 0;
	char who[64];
	struct backend_options bo = cfg->opts;
	uint64_t id;
	int rc;

	/* Writer-b opens as a writer does: a file:// remote is made with its
	 * layout (an empty directory would be waited for, backend.h). */
	bo.file_layout = "streamfs-v1";
	bo.file_claim = true;
	rc = backend_open_url(cfg->url, &bo, &fz.b);
	CHECK(rc == 0, "open writer-b's backend (%d)", rc);
	if (!rc && (backend_caps(fz.b) & BACKEND_CAP_LOCK))
		cfg->lease_ns = 3000000000LL;
	rc = rc ? rc : store_tenant_create(st, "f", 0755, 0, 0);
	rc = rc ? rc : store_tenant_get(st, "f", &t);
	rc = rc ? rc : store_stream_create(t, "s", 0644, 0, 0, &id);
	rc = rc ? rc : append(t, id, "a\n");
	CHECK(rc == 0, "tenant f with one event (%d)", rc);
	rc = rc ? rc : sync_start(st, cfg, &s);
	CHECK(rc == 0, "sync_start (%d)", rc);
	if (rc)
		goto out;
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "published (%d)", rc);
	atomic_store(&fz.armed, true);
	rc = append(t, id, "zombie\n");
	CHECK(rc == 0, "append (%d)", rc);
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(atomic_load(&fz.fired) == 1, "writer-b took over during the "
	      "manifest put (%d)", atomic_load(&fz.fired));
	CHECK(rc == -EROFS, "sync_now says the tenant is fenced (%d)", rc);
	CHECK(sync_tenant_fenced(s, "f"), "the tenant is fenced");
	remote_writer(fz.b, fz_manifest, who, sizeof(who));
	CHECK(!strcmp(who, "writer-b"), "the manifest is still writer-b's, "
	      "not the fenced writer's (%s)", who);
	sync_get_status(s, &ss);
	CHECK(sync_get_leases(s, &leases, &nleases) == 0 && nleases == 1,
	      "one lease (%zu)", nleases);
	CHECK(ss.leases_fenced == 1 && leases && leases[0].fenced &&
	      !strcmp(leases[0].tenant, "f") && leases[0].generation &&
	      strstr(leases[0].fence_note, "writer-b") &&
	      strstr(leases[0].fence_note, "s versions 2-2"),
	      "status: fenced, by writer-b, version 2 unpublished (%llu, %s)",
	      (unsigned long long)ss.leases_fenced,
	      leases ? leases[0].fence_note : "-");
	free(leases);
	sync_stop(s);
	remote_writer(fz.b, fz_lease, who, sizeof(who));
	CHECK(!strcmp(who, "writer-b"), "the stop left writer-b's lease (%s)",
	      who);
	if (fz.token[0])
		(void)backend_unlock(fz.b, fz_manifest, fz.token);
out:
	backend_close(fz.b);
}

/* mode=seedfence (above): writer-a publishes "g" and stops (its lease
 * released); writer-b, with a SOURCE of its own under WORKDIR/data-b,
 * continues it.  Writer-a's late put during the seeding is refused, and
 * the remote keeps the published stream. */
static void seedfence_mode(struct store *st, struct sync_config *cfg,
			   const char *workdir)
{
	struct store_config scfg;
	struct sync_config cb = *cfg;
	struct store *sb = NULL;
	struct store_tenant *t, *tb;
	struct sync *s = NULL;
	struct backend_buf cur = { 0 };
	struct store_attr a;
	char datab[4096];
	uint64_t id;
	int rc;

	rc = store_tenant_create(st, "g", 0755, 0, 0);
	rc = rc ? rc : store_tenant_get(st, "g", &t);
	rc = rc ? rc : store_stream_create(t, "s", 0644, 0, 0, &id);
	rc = rc ? rc : append(t, id, "a\n");
	rc = rc ? rc : sync_start(st, cfg, &s);
	rc = rc ? rc : sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "writer-a published g (%d)", rc);
	/* opened once the remote exists (an empty file:// directory is
	 * waited for, backend.h) */
	rc = rc ? rc : backend_open_url(cfg->url, &cfg->opts, &sf.b);
	CHECK(rc == 0, "open writer-a's late backend (%d)", rc);
	rc = rc ? rc : backend_get_tagged(sf.b, sf_manifest, &cur, sf.tag);
	CHECK(rc == 0 && sf.tag[0], "writer-a knows its manifest's tag (%d)",
	      rc);
	backend_buf_release(&cur);
	sync_stop(s);
	s = NULL;
	if (rc)
		goto out;

	snprintf(datab, sizeof(datab), "%s/data-b", workdir);
	(void)mkdir(datab, 0755);
	cb.state_dir = datab;
	store_config_default(&scfg);
	rc = store_open(datab, &scfg, &sb);
	rc = rc ? rc : store_tenant_create(sb, "g", 0755, 0, 0);
	CHECK(rc == 0, "writer-b's store with tenant g (%d)", rc);
	atomic_store(&sf.armed, true);
	rc = rc ? rc : sync_start(sb, &cb, &s);
	CHECK(rc == 0, "writer-b starts (%d)", rc);
	rc = rc ? rc : sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "writer-b continued g and published (%d)", rc);
	CHECK(atomic_load(&sf.fired) == 1, "writer-a's late put came during "
	      "the seeding (%d)", atomic_load(&sf.fired));
	CHECK(sf.rc == -ESTALE, "writer-a's late put was refused (%d)", sf.rc);
	rc = store_tenant_get(sb, "g", &tb);
	rc = rc ? rc : store_stream_lookup(tb, "s", &id);
	rc = rc ? rc : store_stream_stat(tb, id, &a);
	CHECK(rc == 0 && a.version == 1, "writer-b continued stream s at "
	      "version 1 (%d)", rc);
	if (s)
		sync_stop(s);
	rc = backend_get(sf.b, sf_manifest, 0, BACKEND_TO_END, &cur);
	rc = rc ? rc : backend_buf_terminate(&cur);
	CHECK(rc == 0 && strstr(cur.data, "\"name\":\"s\""),
	      "the remote still publishes stream s (%d)", rc);
	backend_buf_release(&cur);
out:
	if (sb)
		store_close(sb);
	if (sf.b)
		backend_close(sf.b);
}

/* mode=idx: one segment whose event index put fails goes up again with
 * its index alone: its bytes are sent once. */
static void idx_mode(struct store *st, struct sync_config *cfg)
{
	struct store_tenant *t;
	struct sync *s = NULL;
	struct backend *b = NULL;
	uint64_t id;
	int rc;

	rc = store_tenant_create(st, "ix", 0755, 0, 0);
	rc = rc ? rc : store_tenant_get(st, "ix", &t);
	rc = rc ? rc : store_stream_create(t, "s", 0644, 0, 0, &id);
	rc = rc ? rc : append(t, id, "one\n");
	CHECK(rc == 0, "tenant ix with one event (%d)", rc);
	atomic_store(&ix.on, true);
	rc = rc ? rc : sync_start(st, cfg, &s);
	CHECK(rc == 0, "sync_start (%d)", rc);
	if (rc)
		return;
	rc = sync_now(s, 30LL * 1000000000);
	sync_stop(s);
	atomic_store(&ix.on, false);
	CHECK(rc == 0, "uploaded after the index failed once (%d)", rc);
	CHECK(atomic_load(&ix.idx_fails) == 1, "the index put failed once");
	CHECK(atomic_load(&ix.data_puts) == 1, "the segment's bytes went up "
	      "once (%d puts)", atomic_load(&ix.data_puts));
	rc = backend_open_url(cfg->url, &cfg->opts, &b);
	CHECK(rc == 0, "open the remote (%d)", rc);
	if (!rc)
		expect_remote(b, "ix", "s", "one\n");
	backend_close(b);
}

static int find_stream_seg(void *arg, const struct store_segment *seg)
{
	struct store_segment *want = arg;

	if (seg->stream == want->stream)
		*want = *seg;
	return 0;
}

/* mode=flaky: one segment of stream b fails every put; streams a and c
 * publish all the same, and b follows once it heals. */
static void flaky_mode(struct store *st, struct sync_config *cfg)
{
	struct store_segment victim = { 0 };
	struct store_tenant *t;
	struct sync *s = NULL;
	struct backend *b = NULL;
	uint64_t id;
	int rc;

	rc = store_tenant_create(st, "fl", 0755, 0, 0);
	rc = rc ? rc : store_tenant_get(st, "fl", &t);
	for (const char *n = "abc"; !rc && *n; n++) {
		char name[2] = { *n, 0 }, line[3] = { *n, '\n', 0 };

		rc = store_stream_create(t, name, 0644, 0, 0, &id);
		rc = rc ? rc : append(t, id, line);
		if (!rc && *n == 'b')
			victim.stream = id;
	}
	rc = rc ? rc : (store_roll(t, 0, true) < 0 ? -EIO : 0);
	rc = rc ? rc : store_segment_list(t, STORE_SEG_SEALED, find_stream_seg,
					  &victim);
	CHECK(rc == 0 && victim.seg, "three streams, sealed (%d)", rc);
	if (rc || !victim.seg)
		return;
	snprintf(fl.victim, sizeof(fl.victim), "segments/%016llx-%016llx",
		 (unsigned long long)victim.seg,
		 (unsigned long long)victim.checksum);
	atomic_store(&fl.on, true);
	rc = sync_start(st, cfg, &s);
	CHECK(rc == 0, "sync_start (%d)", rc);
	if (rc)
		return;
	rc = sync_now(s, 3LL * 1000000000);
	CHECK(rc != 0 && atomic_load(&fl.fails) > 0,
	      "b's segment keeps failing (%d, %d puts)", rc,
	      atomic_load(&fl.fails));
	rc = backend_open_url(cfg->url, &cfg->opts, &b);
	CHECK(rc == 0, "open the remote (%d)", rc);
	if (!rc) {
		expect_remote(b, "fl", "a", "a\n");
		expect_remote(b, "fl", "c", "c\n");
	}
	atomic_store(&fl.on, false);
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "healed: sync_now (%d)", rc);
	if (b)
		expect_remote(b, "fl", "b", "b\n");
	sync_stop(s);
	backend_close(b);
}

/* mode=stall: the remote stalls every segment upload (the test's fault
 * proxy); sync_stop() must return promptly anyway.  mode=resume: the
 * next start uploads what was cut short. */
static void stop_modes(const char *mode, struct store *st,
		       const struct sync_config *cfg, const char *url)
{
	struct store_tenant *t;
	struct sync *s = NULL;
	struct backend *b = NULL;
	uint64_t id;
	int64_t t0;
	int rc;

	if (!strcmp(mode, "stall")) {
		rc = store_tenant_create(st, "acme", 0755, 0, 0);
		CHECK(rc == 0, "tenant (%d)", rc);
		rc = store_tenant_get(st, "acme", &t);
		CHECK(rc == 0, "tenant get (%d)", rc);
		if (rc)
			return;
		rc = store_stream_create(t, "orders", 0644, 0, 0, &id);
		CHECK(rc == 0, "stream (%d)", rc);
		rc = store_stream_create(t, "other", 0644, 0, 0, &id);
		CHECK(rc == 0, "stream (%d)", rc);
		rc = store_stream_lookup(t, "orders", &id);
		CHECK(rc == 0 && append(t, id, "a\nb\n") == 0, "append");
		rc = store_stream_lookup(t, "other", &id);
		CHECK(rc == 0 && append(t, id, "c\n") == 0, "append");
		rc = sync_start(st, cfg, &s);
		CHECK(rc == 0, "sync_start (%d)", rc);
		if (rc)
			return;
		rc = sync_now(s, 2000000000LL);
		CHECK(rc != 0, "sync_now cannot finish: uploads stall (%d)", rc);
		t0 = now_ns();
		sync_stop(s);
		t0 = now_ns() - t0;
		CHECK(t0 < 10000000000LL,
		      "sync_stop abandons the stalled upload (%lld ms)",
		      (long long)(t0 / 1000000));
		return;
	}
	rc = store_tenant_get(st, "acme", &t);
	CHECK(rc == 0, "tenant get (%d)", rc);
	rc = sync_start(st, cfg, &s);
	CHECK(rc == 0, "sync_start after the stall (%d)", rc);
	if (rc)
		return;
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "resumed: sync_now (%d)", rc);
	sync_stop(s);
	rc = backend_open_url(url, &cfg->opts, &b);
	CHECK(rc == 0, "open the remote (%d)", rc);
	if (rc)
		return;
	expect_remote(b, "acme", "orders", "a\nb\n");
	expect_remote(b, "acme", "other", "c\n");
	backend_close(b);
}

int main(int argc, char **argv)
{
	const char *mode = NULL;
	struct store_config scfg;
	struct sync_config cfg;
	struct store *st = NULL;
	struct store_tenant *t, *w;
	struct sync *s = NULL;
	struct backend *b = NULL;
	struct sync_status ss;
	char data[4096], url[4096];
	uint64_t id, wid;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: %s WORKDIR [URL [KEY=VALUE...]]\n", argv[0]);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(data, sizeof(data), "%s/data", argv[1]);
	snprintf(url, sizeof(url), "%s", argc > 2 ? argv[2] : "");
	if (!*url)
		snprintf(url, sizeof(url), "file://%s/remote", argv[1]);
	sync_config_default(&cfg);
	cfg.url = url;
	cfg.state_dir = data;
	cfg.backoff_max_ns = 500000000;
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (eq)
			*eq = '\0';
		if (eq && !strcmp(argv[i], "mode")) {
			mode = eq + 1;
			continue;
		}
		if (backend_options_set(&cfg.opts, argv[i], eq ? eq + 1 : NULL))
			return 2;
	}
	backend_fault_hook = fault;

	store_config_default(&scfg);
	(void)mkdir(data, 0755);
	rc = store_open(data, &scfg, &st);
	CHECK(rc == 0, "store_open (%d)", rc);
	if (rc)
		goto out;
	if (mode && !strcmp(mode, "parallel")) {
		parallel_mode(st, &cfg, argv[1]);
		goto out;
	}
	if (mode && !strcmp(mode, "fence")) {
		fence_mode(st, &cfg);
		goto out;
	}
	if (mode && !strcmp(mode, "seedfence")) {
		seedfence_mode(st, &cfg, argv[1]);
		goto out;
	}
	if (mode && !strcmp(mode, "idx")) {
		idx_mode(st, &cfg);
		goto out;
	}
	if (mode && !strcmp(mode, "flaky")) {
		flaky_mode(st, &cfg);
		goto out;
	}
	if (mode) {
		stop_modes(mode, st, &cfg, url);
		goto out;
	}
	rc = store_tenant_create(st, "acme", 0755, 0, 0);
	CHECK(rc == 0, "tenant (%d)", rc);
	rc = store_tenant_get(st, "acme", &t);
	CHECK(rc == 0, "tenant get (%d)", rc);
	rc = store_stream_create(t, "orders", 0644, 0, 0, &id);
	CHECK(rc == 0, "stream (%d)", rc);
	rc = store_tenant_create(st, "we ird.%..", 0755, 0, 0);
	CHECK(rc == 0, "tenant with an odd name (%d)", rc);
	rc = store_tenant_get(st, "we ird.%..", &w);
	CHECK(rc == 0, "tenant get (%d)", rc);
	rc = store_stream_create(w, "../x y", 0644, 0, 0, &wid);
	CHECK(rc == 0 || rc == -EINVAL, "stream with an odd name (%d)", rc);
	if (rc)
		rc = store_stream_create(w, "x y.", 0644, 0, 0, &wid);
	rc = append(t, id, "a\nb\n");
	CHECK(rc == 0, "append (%d)", rc);
	rc = append(w, wid, "odd\n");
	CHECK(rc == 0, "append (%d)", rc);

	rc = sync_start(st, &cfg, &s);
	CHECK(rc == 0, "sync_start (%d)", rc);
	if (rc)
		goto out;
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "sync_now (%d)", rc);
	rc = backend_open_url(url, &cfg.opts, &b);
	CHECK(rc == 0, "open the remote to check it (%d)", rc);
	if (rc)
		goto out;
	expect_remote(b, "acme", "orders", "a\nb\n");
	{
		struct backend_buf out = { 0 };
		char *enc = sync_key_encode("we ird.%..");

		CHECK(enc && !strcmp(enc, "we~20ird~2E~25~2E~2E"),
		      "odd tenant name encodes to one safe component (%s)", enc);
		struct store_attr a;
		char name[256] = "x y.";
		(void)a;
		if (store_stream_lookup(w, "../x y", &wid) == 0)
			snprintf(name, sizeof(name), "../x y");
		long size = remote_stream(b, enc, name, &out);
		CHECK(size == 4 && out.len == 4 && !memcmp(out.data, "odd\n", 4),
		      "odd names travel intact (%ld)", size);
		backend_buf_release(&out);
		free(enc);
	}

	rc = append(t, id, "c\n");
	CHECK(rc == 0, "append more (%d)", rc);
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "sync_now again (%d)", rc);
	expect_remote(b, "acme", "orders", "a\nb\nc\n");
	sync_get_status(s, &ss);
	CHECK(ss.uploaded_segments == 3 && ss.pending_segments == 0 &&
	      ss.last_error == 0 && ss.last_success_ns > 0,
	      "status: 3 uploaded, none pending (%llu, %llu, %d)",
	      (unsigned long long)ss.uploaded_segments,
	      (unsigned long long)ss.pending_segments, ss.last_error);

	/* Restart: nothing is uploaded again. */
	sync_stop(s);
	s = NULL;
	rc = sync_start(st, &cfg, &s);
	CHECK(rc == 0, "sync_start after stop (%d)", rc);
	if (rc)
		goto out;
	rc = sync_now(s, 30LL * 1000000000);
	sync_get_status(s, &ss);
	CHECK(rc == 0 && ss.uploaded_segments == 0,
	      "restart uploads nothing again (%d, %llu)", rc,
	      (unsigned long long)ss.uploaded_segments);

	/* The remote fails: writers go on, sync_now says why. */
	atomic_store(&remote_down, 1);
	rc = append(t, id, "d\n");
	CHECK(rc == 0, "append while the remote is down (%d)", rc);
	rc = sync_now(s, 1500000000LL);
	CHECK(rc == -EAGAIN, "sync_now reports the failure (%d)", rc);
	rc = append(t, id, "e\n");
	CHECK(rc == 0, "append while the remote is still down (%d)", rc);
	sync_get_status(s, &ss);
	CHECK(ss.last_error == -EAGAIN && ss.pending_segments >= 1 &&
	      ss.last_error_what[0], "status shows the failure (%d, %llu, %s)",
	      ss.last_error, (unsigned long long)ss.pending_segments,
	      ss.last_error_what);
	atomic_store(&remote_down, 0);
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "sync_now once the remote is back (%d)", rc);
	atomic_store(&remote_down, 0);
	expect_remote(b, "acme", "orders", "a\nb\nc\nd\ne\n");
	sync_get_status(s, &ss);
	CHECK(ss.last_error == 0 && ss.pending_segments == 0,
	      "status is clean again (%d, %llu)", ss.last_error,
	      (unsigned long long)ss.pending_segments);

	/* A sealed segment whose local bytes no longer match its checksum
	 * never leaves: the one read before its upload checks them. */
	atomic_store(&remote_down, 1);
	rc = append(t, id, "f\n");
	CHECK(rc == 0, "append (%d)", rc);
	rc = sync_now(s, 1000000000LL);
	CHECK(rc == -EAGAIN, "sealed while the remote is down (%d)", rc);
	rc = flip_sealed(t);
	CHECK(rc == 1, "one sealed segment damaged locally (%d)", rc);
	atomic_store(&remote_down, 0);
	rc = sync_now(s, 1500000000LL);
	sync_get_status(s, &ss);
	CHECK(rc == -EIO && strstr(ss.last_error_what, "checksum"),
	      "the damaged segment is refused (%d, %s)", rc,
	      ss.last_error_what);
	expect_remote(b, "acme", "orders", "a\nb\nc\nd\ne\n");
	rc = flip_sealed(t);
	CHECK(rc == 1, "the damage undone (%d)", rc);
	rc = sync_now(s, 30LL * 1000000000);
	CHECK(rc == 0, "then it goes up (%d)", rc);
	expect_remote(b, "acme", "orders", "a\nb\nc\nd\ne\nf\n");

	/* A restart refused because another writer holds one tenant must
	 * keep the leases this writer already held (its data may not be
	 * uploaded yet): only leases taken by the refused start go. */
	{
		static const char foreign[] =
			"{\"format\": \"streamfs-lease\", \"version\": 1, "
			"\"writer\": \"other-writer\", \"host\": \"elsewhere\", "
			"\"pid\": 1, \"taken_ns\": 1}\n";
		const char *lk = "streamfs-v1/tenants/bee/lease.json";
		const char *ak = "streamfs-v1/tenants/acme/lease.json";
		struct backend_stat meta;
		struct sync *s2 = NULL;

		rc = backend_put_if_absent_buf(b, lk, foreign, strlen(foreign));
		CHECK(rc == 0, "another writer leases tenant bee (%d)", rc);
		rc = store_tenant_create(st, "bee", 0755, 0, 0);
		CHECK(rc == 0, "tenant bee (%d)", rc);
		rc = backend_head(b, ak, &meta);
		CHECK(rc == 0, "our lease of acme is on the remote (%d)", rc);
		/* A restart after a crash (s never stopped: its leases stay). */
		rc = sync_start(st, &cfg, &s2);
		CHECK(rc == -EBUSY && !s2, "restart refused: bee is held (%d)", rc);
		sync_stop(s2);
		rc = backend_head(b, ak, &meta);
		CHECK(rc == 0, "the refused restart left our lease of acme (%d)",
		      rc);
		rc = backend_del(b, lk);
		CHECK(rc == 0, "foreign lease removed (%d)", rc);
	}
out:
	sync_stop(s);
	backend_close(b);
	if (st)
		store_close(st);
	curl_global_cleanup();
	return check_summary();
}
