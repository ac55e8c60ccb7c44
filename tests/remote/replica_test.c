/*
 * replica_test: writer store -> remote -> replica store, through the sync
 * threads of both.
 *
 *   replica_test WORKDIR URL [mode=full|crash|resume] [pause=1]
 *                [KEY=VALUE ...] [r.KEY=VALUE ...]
 *
 * WORKDIR/w is the writer's store, WORKDIR/r the replica's cache, WORKDIR/w2
 * a second writer.  KEY=VALUE are backend options of both sides; r.KEY=VALUE
 * of the replica only (e.g. its endpoint through the fault proxy).
 *
 * mode=full checks: segments, index objects and manifests reach the remote
 * and the replica sees byte-identical streams (framing, versions, offsets of
 * versions); evicted segments are fetched back on both sides and cache_size
 * holds on the writer during a read sweep; growth, rename, removal of a
 * stream (tombstone, objects deleted) and of a tenant reach the replica; a
 * second writer identity is refused with -EBUSY, a restart of the same one
 * is not.  With pause=1 it also prints "PAUSE corrupt" and "PAUSE heal" and
 * waits for a line on stdin after each: a driver makes fetches corrupt,
 * then heals them; reads must fail with -EIO, then succeed.
 *
 * mode=crash writes a known data set, starts the writer's sync and prints
 * "STARTED", then sleeps (the driver kills it with SIGKILL); mode=resume
 * reopens that store, uploads everything and checks the remote through a
 * replica.  Prints "ok"/"not ok" lines and "N passed, N failed".
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "store_sync.h"
#include "sync.h"

static volatile int remote_down;

/* Fault hook: the remote is unreachable while remote_down is set. */
static int fault(const struct backend *b, const char *op, const char *key)
{
	(void)b;
	(void)op;
	(void)key;
	return __atomic_load_n(&remote_down, __ATOMIC_SEQ_CST) ? -EAGAIN : 0;
}

#define SEC 1000000000LL
#define ROLL 256		/* small segments: moto's ranged GETs stay cheap */
#define CACHE 1024

static struct backend_options wopts, ropts;

static int append(struct store_tenant *t, uint64_t id, const void *s,
		  size_t len)
{
	struct store_append app = { .buf = s, .len = len,
				    .expected = STORE_ANY_VERSION,
				    .final = true };
	struct store_append_result res;

	return store_append(t, id, &app, &res);
}

static int appends(struct store_tenant *t, uint64_t id, const char *s)
{
	return append(t, id, s, strlen(s));
}

/* Reads all of stream NAME of tenant TN: malloc'd into *out, length or
 * -errno. */
static long read_all(struct store *st, const char *tn, const char *name,
		     char **out)
{
	struct store_tenant *t;
	struct store_attr a;
	uint64_t id;
	char *buf;
	long off = 0;
	int rc;

	*out = NULL;
	rc = store_tenant_get(st, tn, &t);
	if (!rc)
		rc = store_stream_lookup(t, name, &id);
	if (!rc)
		rc = store_stream_stat(t, id, &a);
	if (rc) {
		fprintf(stderr, "read_all %s/%s: lookup: %d\n", tn, name, rc);
		return rc;
	}
	buf = malloc(a.size + 1);
	if (!buf)
		return -ENOMEM;
	while ((uint64_t)off < a.size) {
		/* Odd-sized reads cross segment boundaries. */
		ssize_t n = store_read(t, id, buf + off, 97, (uint64_t)off);

		if (n <= 0) {
			fprintf(stderr, "read_all %s/%s: store_read at %ld: %zd\n",
				tn, name, off, n);
			free(buf);
			return n < 0 ? n : -EIO;
		}
		off += n;
	}
	*out = buf;
	return off;
}

static void same_stream(struct store *w, struct store *r, const char *tn,
			const char *name)
{
	char *a = NULL, *b = NULL;
	long na = read_all(w, tn, name, &a), nb = read_all(r, tn, name, &b);
	struct store_tenant *tw, *tr;
	struct store_attr aw = { 0 }, ar = { 0 };
	uint64_t iw, ir;
	bool offs = true;

	CHECK(na >= 0 && na == nb && !memcmp(a, b, (size_t)na),
	      "%s/%s: replica bytes identical (%ld, %ld)", tn, name, na, nb);
	if (!store_tenant_get(w, tn, &tw) && !store_tenant_get(r, tn, &tr) &&
	    !store_stream_lookup(tw, name, &iw) &&
	    !store_stream_lookup(tr, name, &ir) &&
	    !store_stream_stat(tw, iw, &aw) && !store_stream_stat(tr, ir, &ar)) {
		for (uint64_t v = 1; v <= aw.version + 1; v++) {
			uint64_t ow = 1, orr = 2;

			if (store_offset_of_version(tw, iw, v, &ow) ||
			    store_offset_of_version(tr, ir, v, &orr) || ow != orr)
				offs = false;
		}
	}
	CHECK(aw.version == ar.version && aw.framing == ar.framing &&
	      aw.mode == ar.mode && offs,
	      "%s/%s: same version (%llu, %llu), framing, mode, event offsets",
	      tn, name, (unsigned long long)aw.version,
	      (unsigned long long)ar.version);
	free(a);
	free(b);
}

static void pause_for(const char *what)
{
	char line[64];

	printf("PAUSE %s\n", what);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		exit(3);
}

static struct store *open_store(const char *dir)
{
	struct store_config sc;
	struct store *st = NULL;
	int rc;

	store_config_default(&sc);
	sc.roll_size = ROLL;
	(void)mkdir(dir, 0755);
	rc = store_open(dir, &sc, &st);
	CHECK(rc == 0, "store_open %s (%d)", dir, rc);
	return rc ? NULL : st;
}

static int start(struct store *st, const char *url, const char *state,
		 bool replica, uint64_t cache, struct sync **s)
{
	struct sync_config c;

	sync_config_default(&c);
	c.url = url;
	c.opts = replica ? ropts : wopts;
	c.state_dir = state;
	c.replica = replica;
	c.cache_size = cache;
	c.poll_ns = 3600 * SEC;		/* only sync_now rescans */
	c.backoff_min_ns = 50000000;
	c.backoff_max_ns = 500000000;
	/* The writer fetches a segment in several ranges, the replica in one
	 * GET: both paths run. */
	c.fetch_range = 100;
	c.fetch_whole = replica ? 0 : 64;
	c.fetch_attempts = 3;
	return sync_start(st, &c, s);
}

/* The data set of mode=crash and mode=resume. */
static void crash_data(struct store *st)
{
	struct store_tenant *t;
	uint64_t id;
	char line[64];

	if (store_tenant_create(st, "crash", 0755, 0, 0) ||
	    store_tenant_get(st, "crash", &t) ||
	    store_stream_create(t, "log", 0644, 0, 0, &id)) {
		CHECK(0, "crash data set");
		return;
	}
	for (int i = 0; i < 200; i++) {
		snprintf(line, sizeof(line), "{\"n\": %d, \"pad\": \"xxxxxxxx\"}\n", i);
		if (appends(t, id, line)) {
			CHECK(0, "append %d", i);
			return;
		}
	}
	CHECK(store_roll(t, 0, true) >= 0, "crash data set written");
}

static int mode_crash(const char *work, const char *url)
{
	char wdir[4096];
	struct store *w;
	struct sync *s = NULL;

	snprintf(wdir, sizeof(wdir), "%s/w", work);
	w = open_store(wdir);
	if (!w)
		return 1;
	crash_data(w);
	CHECK(start(w, url, wdir, false, 0, &s) == 0, "sync_start");
	printf("STARTED\n");
	fflush(stdout);
	for (;;)
		pause();
}

static int mode_resume(const char *work, const char *url)
{
	char wdir[4096], rdir[4096], *a = NULL;
	struct store *w, *r;
	struct sync *s = NULL, *rs = NULL;
	long n;
	int rc;

	snprintf(wdir, sizeof(wdir), "%s/w", work);
	snprintf(rdir, sizeof(rdir), "%s/r", work);
	w = open_store(wdir);
	r = open_store(rdir);
	if (!w || !r)
		return 1;
	rc = start(w, url, wdir, false, 0, &s);
	CHECK(rc == 0, "restarted writer re-takes its own lease (%d)", rc);
	if (!rc) {
		rc = sync_now(s, 120 * SEC);
		CHECK(rc == 0, "sync_now after the crash (%d)", rc);
	}
	rc = start(r, url, NULL, true, 0, &rs);
	CHECK(rc == 0, "replica start (%d)", rc);
	if (!rc) {
		rc = sync_now(rs, 120 * SEC);
		CHECK(rc == 0, "replica sync_now (%d)", rc);
	}
	n = read_all(w, "crash", "log", &a);
	CHECK(n > 0 && n < 8000, "writer stream intact (%ld)", n);
	free(a);
	same_stream(w, r, "crash", "log");
	sync_stop(rs);
	sync_stop(s);
	store_close(r);
	store_close(w);
	return 0;
}

static int count_keys(void *arg, const struct backend_entry *e)
{
	(void)e;
	++*(int *)arg;
	return 0;
}

static int remote_count(const char *url, const char *prefix)
{
	struct backend *b;
	int n = 0;

	if (backend_open_url(url, &wopts, &b))
		return -1;
	if (backend_list(b, prefix, count_keys, &n))
		n = -1;
	backend_close(b);
	return n;
}

static int mode_full(const char *work, const char *url, bool pauses)
{
	char wdir[4096], rdir[4096], w2dir[4096], buf[128], *x = NULL;
	struct store *w = NULL, *r = NULL, *w2 = NULL;
	struct sync *s = NULL, *rs = NULL, *s2 = NULL;
	struct store_tenant *acme, *odd, *t;
	struct sync_status ss;
	uint64_t orders, blob, oddid, id;
	unsigned char bin[300];
	int rc, before, after;
	long n;

	snprintf(wdir, sizeof(wdir), "%s/w", work);
	snprintf(rdir, sizeof(rdir), "%s/r", work);
	snprintf(w2dir, sizeof(w2dir), "%s/w2", work);
	if (!(w = open_store(wdir)) || !(r = open_store(rdir)) ||
	    !(w2 = open_store(w2dir)))
		goto out;

	rc = store_tenant_create(w, "acme", 0750, 0, 0);
	rc = rc ? rc : store_tenant_get(w, "acme", &acme);
	rc = rc ? rc : store_stream_create(acme, "orders", 0640, 0, 0, &orders);
	rc = rc ? rc : store_stream_create(acme, "blob", 0600, 0, 0, &blob);
	rc = rc ? rc : store_stream_set_framing(acme, blob, STORE_RAW);
	rc = rc ? rc : store_tenant_create(w, "we ird", 0755, 0, 0);
	rc = rc ? rc : store_tenant_get(w, "we ird", &odd);
	rc = rc ? rc : store_stream_create(odd, "x.y z", 0644, 0, 0, &oddid);
	CHECK(rc == 0, "writer namespace (%d)", rc);
	if (rc)
		goto out;
	for (int i = 0; !rc && i < 120; i++) {
		snprintf(buf, sizeof(buf), "{\"id\": \"e%d\", \"v\": %d}\n", i, i * i);
		rc = appends(acme, orders, buf);
	}
	for (int i = 0; !rc && i < 4; i++) {
		for (size_t j = 0; j < sizeof(bin); j++)
			bin[j] = (unsigned char)(j * 7 + i);
		rc = append(acme, blob, bin, sizeof(bin) - (size_t)i * 50);
	}
	rc = rc ? rc : appends(odd, oddid, "odd\n");
	CHECK(rc == 0, "writer appends (%d)", rc);

	rc = start(w, url, wdir, false, CACHE, &s);
	CHECK(rc == 0, "writer sync_start (%d)", rc);
	if (rc)
		goto out;
	rc = sync_now(s, 120 * SEC);
	CHECK(rc == 0, "writer sync_now (%d)", rc);
	rc = sync_stream_status(s, acme, orders, buf, sizeof(buf));
	CHECK(rc > 0 && !strncmp(buf, "uploaded ", 9),
	      "xattr text after sync_now: \"%s\"", rc > 0 ? buf : "");
	sync_get_status(s, &ss);
	CHECK(ss.cached_bytes <= CACHE && ss.evicted_segments > 0,
	      "writer cache_size holds after uploads (%llu bytes, %llu evicted)",
	      (unsigned long long)ss.cached_bytes,
	      (unsigned long long)ss.evicted_segments);
	/* A read sweep larger than the cache. */
	n = read_all(w, "acme", "orders", &x);
	CHECK(n > 2 * CACHE, "writer reads evicted segments back (%ld)", n);
	free(x);
	x = NULL;
	sync_get_status(s, &ss);
	CHECK(ss.fetched_segments > 0 && ss.cached_bytes <= CACHE + ROLL,
	      "cache_size holds during the sweep (%llu fetched, %llu bytes)",
	      (unsigned long long)ss.fetched_segments,
	      (unsigned long long)ss.cached_bytes);
	rc = appends(acme, orders, "{\"id\": \"tail\"}\n");
	rc = rc ? rc : sync_stream_status(s, acme, orders, buf, sizeof(buf));
	CHECK(rc > 0 && !strncmp(buf, "local ", 6),
	      "xattr text with an unsealed tail: \"%s\"", rc > 0 ? buf : "");

	/* A second writer of the same tenant on the same remote. */
	rc = store_tenant_create(w2, "acme", 0755, 0, 0);
	rc = rc ? rc : start(w2, url, w2dir, false, 0, &s2);
	CHECK(rc == -EBUSY, "a second writer is refused (%d)", rc);
	if (!rc)
		sync_stop(s2);

	/* The replica, with a cache smaller than what it reads. */
	rc = start(r, url, NULL, true, CACHE, &rs);
	CHECK(rc == 0, "replica sync_start (%d)", rc);
	if (rc)
		goto out;
	rc = sync_now(s, 120 * SEC);
	CHECK(rc == 0, "writer sync_now (%d)", rc);
	rc = sync_now(rs, 120 * SEC);
	CHECK(rc == 0, "replica sync_now (%d)", rc);
	same_stream(w, r, "acme", "orders");
	same_stream(w, r, "acme", "blob");
	same_stream(w, r, "we ird", "x.y z");
	sync_get_status(rs, &ss);
	CHECK(ss.fetched_segments > 0 && ss.cached_bytes <= CACHE + ROLL,
	      "replica cache_size holds during the sweep (%llu fetched, "
	      "%llu bytes)", (unsigned long long)ss.fetched_segments,
	      (unsigned long long)ss.cached_bytes);
	if (!store_tenant_get(r, "acme", &t) && !store_stream_lookup(t, "orders", &id)) {
		rc = sync_stream_status(rs, t, id, buf, sizeof(buf));
		CHECK(rc > 0 && !strncmp(buf, "uploaded ", 9),
		      "replica xattr text \"%s\"", rc > 0 ? buf : "");
	}

	if (pauses) {
		struct store *r2 = NULL;
		struct sync *rs2 = NULL;
		char r2dir[4096];

		/* A fresh replica whose fetches the driver corrupts. */
		snprintf(r2dir, sizeof(r2dir), "%s/r2", work);
		r2 = open_store(r2dir);
		rc = r2 ? start(r2, url, NULL, true, 0, &rs2) : -EIO;
		rc = rc ? rc : sync_now(rs2, 120 * SEC);
		CHECK(rc == 0, "second replica (%d)", rc);
		pause_for("corrupt");
		n = read_all(r2, "acme", "orders", &x);
		CHECK(n == -EIO, "a corrupted fetch gives EIO (%ld)", n);
		free(x);
		x = NULL;
		pause_for("heal");
		same_stream(w, r2, "acme", "orders");
		sync_stop(rs2);
		if (r2)
			store_close(r2);
	}

	/* Remote unreachable at start: the writer starts anyway and takes
	 * its leases when the remote is back; a lease held by another writer
	 * is then reported, and nothing of that tenant is uploaded. */
	{
		char w3dir[4096];
		struct store *w3;
		struct store_tenant *late;
		uint64_t lid;

		snprintf(w3dir, sizeof(w3dir), "%s/w3", work);
		w3 = open_store(w3dir);
		rc = w3 ? store_tenant_create(w3, "late", 0755, 0, 0) : -EIO;
		rc = rc ? rc : store_tenant_get(w3, "late", &late);
		rc = rc ? rc : store_stream_create(late, "s", 0644, 0, 0, &lid);
		rc = rc ? rc : appends(late, lid, "late\n");
		rc = rc ? rc : store_tenant_create(w3, "acme", 0755, 0, 0);
		CHECK(rc == 0, "third writer (%d)", rc);
		__atomic_store_n(&remote_down, 1, __ATOMIC_SEQ_CST);
		rc = rc ? rc : start(w3, url, w3dir, false, 0, &s2);
		CHECK(rc == 0, "writer starts while the remote is down (%d)", rc);
		if (!rc) {
			rc = sync_now(s2, 2 * SEC);
			CHECK(rc == -EAGAIN, "sync_now says the remote is down (%d)", rc);
			__atomic_store_n(&remote_down, 0, __ATOMIC_SEQ_CST);
			rc = sync_now(s2, 5 * SEC);
			sync_get_status(s2, &ss);
			CHECK(rc == -EBUSY && ss.leases_refused == 1 &&
			      ss.leases_held == 1,
			      "back: one lease taken, one refused (%d, %llu, %llu)",
			      rc, (unsigned long long)ss.leases_held,
			      (unsigned long long)ss.leases_refused);
			CHECK(remote_count(url, "streamfs-v1/tenants/late/segments/") == 2,
			      "the leased tenant is uploaded");
			sync_stop(s2);
		}
		__atomic_store_n(&remote_down, 0, __ATOMIC_SEQ_CST);
		s2 = NULL;
		if (w3)
			store_close(w3);
		rc = sync_now(rs, 120 * SEC);
		CHECK(rc == 0, "replica sync_now (%d)", rc);
		CHECK(store_tenant_get(r, "late", &t) == 0,
		      "replica sees the third writer's tenant");
	}

	/* Growth, rename, removal. */
	before = remote_count(url, "streamfs-v1/tenants/acme/segments/");
	rc = appends(acme, orders, "{\"id\": \"more\"}\n");
	rc = rc ? rc : store_stream_rename(acme, orders, "orders2");
	rc = rc ? rc : store_stream_remove(acme, blob);
	rc = rc ? rc : store_stream_remove(odd, oddid);
	rc = rc ? rc : store_tenant_remove(w, "we ird");
	CHECK(rc == 0, "grow, rename, remove (%d)", rc);
	rc = sync_now(s, 120 * SEC);
	CHECK(rc == 0, "writer sync_now (%d)", rc);
	after = remote_count(url, "streamfs-v1/tenants/acme/segments/");
	CHECK(after >= 0 && after < before,
	      "objects of the removed stream deleted (%d -> %d)", before, after);
	CHECK(remote_count(url, "streamfs-v1/tenants/we~20ird/") == 0,
	      "objects of the removed tenant deleted");
	rc = sync_now(rs, 120 * SEC);
	CHECK(rc == 0, "replica sync_now (%d)", rc);
	same_stream(w, r, "acme", "orders2");
	CHECK(store_tenant_get(r, "acme", &t) == 0 &&
	      store_stream_lookup(t, "orders", &id) == -ENOENT &&
	      store_stream_lookup(t, "blob", &id) == -ENOENT,
	      "replica: renamed and removed streams follow");
	CHECK(store_tenant_get(r, "we ird", &t) == -ENOENT ||
	      store_tenant_removed(t), "replica: removed tenant gone");

	/* Restart of the replica: its streams are matched, not rebuilt. */
	{
		uint64_t before_id = 0, after_id = 0;

		if (!store_tenant_get(r, "acme", &t) &&
		    store_stream_lookup(t, "orders2", &before_id))
			before_id = 0;
		sync_stop(rs);
		rs = NULL;
		rc = start(r, url, NULL, true, CACHE, &rs);
		rc = rc ? rc : sync_now(rs, 120 * SEC);
		CHECK(rc == 0, "replica restarts (%d)", rc);
		if (!store_tenant_get(r, "acme", &t) &&
		    store_stream_lookup(t, "orders2", &after_id))
			after_id = 0;
		CHECK(before_id && before_id == after_id,
		      "replica restart keeps its streams (%llu, %llu)",
		      (unsigned long long)before_id,
		      (unsigned long long)after_id);
		same_stream(w, r, "acme", "orders2");
	}

	/* Restart of the same writer: its own lease again. */
	sync_stop(s);
	rc = start(w, url, wdir, false, CACHE, &s);
	CHECK(rc == 0, "the same writer restarts (%d)", rc);
	if (!rc) {
		rc = sync_now(s, 120 * SEC);
		CHECK(rc == 0, "sync_now after restart (%d)", rc);
		sync_get_status(s, &ss);
		CHECK(ss.uploaded_segments <= 1,
		      "restart uploads only the new tail (%llu)",
		      (unsigned long long)ss.uploaded_segments);
	}
out:
	sync_stop(rs);
	sync_stop(s);
	if (r)
		store_close(r);
	if (w)
		store_close(w);
	if (w2)
		store_close(w2);
	return 0;
}

/* Writer DIR (a fresh store) publishes tenant t, stream s holding TEXT,
 * then stops (releasing its lease). */
static void publish_once(const char *dir, const char *url, const char *text)
{
	struct store *w = open_store(dir);
	struct store_tenant *t;
	struct sync *s = NULL;
	uint64_t id;
	int rc;

	if (!w)
		return;
	rc = store_tenant_create(w, "t", 0755, 0, 0);
	if (!rc)
		rc = store_tenant_get(w, "t", &t);
	if (!rc)
		rc = store_stream_create(t, "s", 0644, 0, 0, &id);
	if (!rc)
		rc = appends(t, id, text);
	if (!rc)
		rc = start(w, url, dir, false, 0, &s);
	if (!rc)
		rc = sync_now(s, 60 * SEC);
	CHECK(rc == 0, "writer %s publishes t/s (%d)", dir, rc);
	sync_stop(s);
	store_close(w);
}

static void expect_text(struct store *r, const char *want, const char *why)
{
	char *a = NULL;
	long n = read_all(r, "t", "s", &a);

	CHECK(n == (long)strlen(want) && !memcmp(a, want, (size_t)n),
	      "replica t/s: %s (%ld: %.*s)", why, n, n > 0 ? (int)n : 0,
	      a ? a : "");
	free(a);
}

/* mode=errors: a tenant deleted and created again (segment ids restart)
 * replaces the replica's copy instead of passing for a prefix of it; a
 * tenant whose manifest the store refuses does not stop the others nor
 * the removal of tenants gone from the remote. */
static int mode_errors(const char *work, const char *url)
{
	static const char bad[] =
		"{\"format\": \"streamfs-tenant-manifest\", \"version\": 1, "
		"\"tenant\": \"aa\", \"streams\": [{\"id\": 1, "
		"\"name\": \"bad/name\", \"segments\": []}]}\n";
	static const char tindex[] =
		"{\"format\": \"streamfs-tenants\", \"version\": 1, "
		"\"tenants\": [{\"name\": \"aa\", \"key\": \"aa\"}, "
		"{\"name\": \"t\", \"key\": \"t\"}]}\n";
	char dir[4096];
	struct store *r;
	struct store_tenant *gone;
	struct sync *rs = NULL;
	struct backend *b = NULL;
	struct sync_status ss;
	int rc;

	snprintf(dir, sizeof(dir), "%s/wa", work);
	publish_once(dir, url, "old1\n");
	snprintf(dir, sizeof(dir), "%s/r", work);
	r = open_store(dir);
	if (!r)
		return 1;
	rc = start(r, url, NULL, true, 0, &rs);
	CHECK(rc == 0, "replica start (%d)", rc);
	if (rc)
		return 1;
	rc = sync_now(rs, 60 * SEC);
	CHECK(rc == 0, "replica sync_now (%d)", rc);
	expect_text(r, "old1\n", "first incarnation");

	/* The same tenant from a fresh store: same stream id, same segment
	 * ids, same length, other bytes.  Removed first (its manifest gone,
	 * as after an rmdir): a writer never replaces a published history. */
	rc = backend_open_url(url, &wopts, &b);
	if (!rc)
		rc = backend_del(b, "streamfs-v1/tenants/t/manifest.json");
	CHECK(rc == 0, "the first incarnation removed (%d)", rc);
	backend_close(b);
	b = NULL;
	snprintf(dir, sizeof(dir), "%s/wb", work);
	publish_once(dir, url, "new1\n");
	rc = sync_now(rs, 60 * SEC);
	CHECK(rc == 0, "replica sync_now (%d)", rc);
	expect_text(r, "new1\n", "the new incarnation replaces the old");

	/* A manifest the store refuses, listed first; a local tenant that
	 * the remote does not list. */
	rc = backend_open_url(url, &wopts, &b);
	CHECK(rc == 0, "open the remote (%d)", rc);
	if (!rc)
		rc = backend_put_buf(b, "streamfs-v1/tenants/aa/manifest.json",
				     bad, strlen(bad));
	if (!rc)
		rc = backend_put_buf(b, "streamfs-v1/tenants.json", tindex,
				     strlen(tindex));
	CHECK(rc == 0, "bad manifest of tenant aa published (%d)", rc);
	backend_close(b);
	rc = store_tenant_create(r, "gone", 0755, 0, 0);
	CHECK(rc == 0, "local tenant not on the remote (%d)", rc);
	snprintf(dir, sizeof(dir), "%s/wb", work);
	{
		/* t grows. */
		struct store *w = open_store(dir);
		struct store_tenant *t;
		struct sync *s = NULL;
		uint64_t id;

		rc = w ? store_tenant_get(w, "t", &t) : -EIO;
		if (!rc)
			rc = store_stream_lookup(t, "s", &id);
		if (!rc)
			rc = appends(t, id, "more\n");
		if (!rc)
			rc = start(w, url, dir, false, 0, &s);
		if (!rc)
			rc = sync_now(s, 60 * SEC);
		CHECK(rc == 0, "writer appends to t/s (%d)", rc);
		sync_stop(s);
		if (w)
			store_close(w);
	}
	/* A failing pass never completes sync_now: it answers with the
	 * error at the deadline. */
	rc = sync_now(rs, 5 * SEC);
	sync_get_status(rs, &ss);
	CHECK(rc == -EINVAL && strstr(ss.last_error_what, "aa"),
	      "the bad tenant is reported (%d, %s)", rc, ss.last_error_what);
	expect_text(r, "new1\nmore\n", "later tenants still update");
	CHECK(store_tenant_get(r, "gone", &gone) == -ENOENT ||
	      store_tenant_removed(gone),
	      "removals still run after a tenant failed");
	sync_stop(rs);
	store_close(r);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = "full";
	bool pauses = false;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: %s WORKDIR URL [mode=...] [pause=1] "
			"[KEY=VALUE...] [r.KEY=VALUE...]\n", argv[0]);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	backend_fault_hook = fault;
	backend_options_default(&wopts);
	backend_options_default(&ropts);
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		const char *val = eq ? eq + 1 : NULL;

		if (eq)
			*eq = '\0';
		if (!strcmp(argv[i], "mode")) {
			mode = val;
		} else if (!strcmp(argv[i], "pause")) {
			pauses = val && *val == '1';
		} else if (!strncmp(argv[i], "r.", 2)) {
			if (backend_options_set(&ropts, argv[i] + 2, val))
				return 2;
		} else if (backend_options_set(&wopts, argv[i], val) ||
			   (strcmp(argv[i], "endpoint") &&
			    backend_options_set(&ropts, argv[i], val))) {
			return 2;
		} else if (!strcmp(argv[i], "endpoint") && !ropts.endpoint) {
			ropts.endpoint = val;
		}
	}
	if (!strcmp(mode, "crash"))
		rc = mode_crash(argv[1], argv[2]);
	else if (!strcmp(mode, "resume"))
		rc = mode_resume(argv[1], argv[2]);
	else if (!strcmp(mode, "errors"))
		rc = mode_errors(argv[1], argv[2]);
	else
		rc = mode_full(argv[1], argv[2], pauses);
	curl_global_cleanup();
	if (check_summary())
		return rc ? rc : 1;
	return rc;
}
