/*
 * backend_conformance: runs the same checks against any backend URL.
 *
 *   backend_conformance URL [KEY=VALUE ...] [--expect-denied]
 *
 * KEY=VALUE are backend options (endpoint=, region=, path_style=1,
 * list_page=2, ...).  With --expect-denied the credentials are expected
 * to be refused (-EACCES) on every request.  Prints one "ok"/"not ok" line
 * per check and a closing "N passed, N failed"; exits 1 on any failure.
 * Objects are made under a fresh "conformance-PID-TIME/" prefix and removed.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "backend.h"
#include "check.h"

static char base[128];

static const char *k(const char *name)
{
	static char buf[8][512];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s%s", base, name);
	return buf[i];
}

static void pattern(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((i * 31 + seed * 7 + i / 251) & 0xff);
}

/* get into a fresh buffer and compare with WANT. */
static int get_eq(struct backend *b, const char *key, uint64_t off,
		  uint64_t len, const char *want, size_t wlen)
{
	struct backend_buf out = { 0 };
	int rc = backend_get(b, key, off, len, &out);

	if (rc == 0 && (out.len != wlen || (wlen && memcmp(out.data, want, wlen))))
		rc = 1;
	backend_buf_release(&out);
	return rc;
}

/* A put that brings its body's SHA-256 along (read once by the caller):
 * the backend sends it as is; a malformed one is refused before any
 * request.  (The proxied s3 test checks the header against the body.) */
static void put_known_sha256(struct backend *b, int fd, const char *buf,
			     size_t len)
{
	unsigned char md[32];
	char hex[65];
	struct backend_body body = { .fd = fd, .len = len, .sha256 = hex };
	int rc;

	SHA256((const unsigned char *)buf, len, md);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	rc = backend_put(b, k("a/known"), &body);
	CHECK(rc == 0, "put with a known SHA-256 (%d)", rc);
	CHECK(get_eq(b, k("a/known"), 0, BACKEND_TO_END, buf, len) == 0,
	      "get of an object put with a known SHA-256");
	body.sha256 = "not-a-hash";
	rc = backend_put(b, k("a/known"), &body);
	CHECK(rc == -EINVAL, "a malformed SHA-256 is refused (%d)", rc);
	rc = backend_del(b, k("a/known"));
	CHECK(rc == 0, "delete (%d)", rc);
}

struct collect {
	char keys[64][256];
	uint64_t sizes[64];
	int n;
};

static int collect_fn(void *arg, const struct backend_entry *e)
{
	struct collect *c = arg;

	if (c->n < 64) {
		snprintf(c->keys[c->n], sizeof(c->keys[0]), "%s", e->key);
		c->sizes[c->n] = e->size;
	}
	c->n++;
	return 0;
}

static int stop_fn(void *arg, const struct backend_entry *e)
{
	(void)e;
	return ++*(int *)arg == 3 ? 42 : 0;
}

static void run_denied(struct backend *b)
{
	struct backend_buf out = { 0 };
	struct backend_stat st;
	struct collect c = { 0 };
	int rc;

	rc = backend_put_buf(b, k("denied"), "x", 1);
	CHECK(rc == -EACCES, "put with wrong credentials is refused (%d)", rc);
	rc = backend_get(b, k("denied"), 0, BACKEND_TO_END, &out);
	CHECK(rc == -EACCES, "get with wrong credentials is refused (%d)", rc);
	rc = backend_head(b, k("denied"), &st);
	CHECK(rc == -EACCES || rc == -ENOENT,
	      "head with wrong credentials gives nothing (%d)", rc);
	rc = backend_list(b, base, collect_fn, &c);
	CHECK(rc == -EACCES, "list with wrong credentials is refused (%d)", rc);
	backend_buf_release(&out);
}

/* Compare-and-swap on version tags; k("lease") holds "first". */
static void run_cas(struct backend *b)
{
	char tag[BACKEND_TAG_MAX] = "", tag2[BACKEND_TAG_MAX] = "",
	     tag3[BACKEND_TAG_MAX] = "";
	struct backend_buf out = { 0 };
	int rc;

	rc = backend_get_tagged(b, k("lease"), &out, tag);
	CHECK(rc == 0 && out.len == 5 && !memcmp(out.data, "first", 5) && tag[0],
	      "get_tagged reads the object and a tag (%d, tag '%s')", rc, tag);
	backend_buf_release(&out);
	rc = backend_put_if_match_buf(b, k("lease"), "third", 5, tag, tag2);
	CHECK(rc == 0, "put_if_match with the current tag replaces (%d)", rc);
	CHECK(get_eq(b, k("lease"), 0, BACKEND_TO_END, "third", 5) == 0,
	      "put_if_match wrote the new bytes");
	rc = backend_get_tagged(b, k("lease"), &out, tag3);
	backend_buf_release(&out);
	CHECK(rc == 0 && strcmp(tag, tag3) && (!tag2[0] || !strcmp(tag2, tag3)),
	      "the tag changed with the bytes, and put_if_match told the new "
	      "one ('%s', '%s', '%s')", tag, tag2, tag3);
	/* Same length, written at once: an mtime-and-size tag would miss it. */
	rc = backend_put_if_match_buf(b, k("lease"), "forth", 5, tag, NULL);
	CHECK(rc == -ESTALE, "put_if_match with an old tag gives ESTALE (%d)", rc);
	CHECK(get_eq(b, k("lease"), 0, BACKEND_TO_END, "third", 5) == 0,
	      "the stale put_if_match changed nothing");
	rc = backend_del_if_match(b, k("lease"), tag);
	CHECK(rc == -ESTALE, "del_if_match with an old tag gives ESTALE (%d)", rc);
	rc = backend_del_if_match(b, k("lease"), tag3);
	CHECK(rc == 0, "del_if_match with the current tag deletes (%d)", rc);
	rc = backend_head(b, k("lease"), &(struct backend_stat){ 0 });
	CHECK(rc == -ENOENT, "the object is gone (%d)", rc);
	rc = backend_put_if_match_buf(b, k("lease"), "x", 1, tag3, NULL);
	CHECK(rc == -ENOENT || rc == -ESTALE,
	      "put_if_match on a missing object fails (%d)", rc);
	rc = backend_head(b, k("lease"), &(struct backend_stat){ 0 });
	CHECK(rc == -ENOENT, "and leaves nothing behind (%d)", rc);
	rc = backend_put_buf(b, k("lease"), "first", 5);
	CHECK(rc == 0, "put again (%d)", rc);
}

/* Backends that lock (WebDAV): a locked object refuses a put without
 * the token and takes one with it; a missing object is not made by a
 * LOCK; after unlock anyone may put again. */
static void run_lock(struct backend *b)
{
	char token[BACKEND_TAG_MAX] = "", other[BACKEND_TAG_MAX] = "";
	long granted;
	int rc;

	rc = backend_lock(b, k("locked"), 30, token, &granted);
	CHECK(rc == -ENOENT && !token[0],
	      "lock of a missing object gives ENOENT (%d)", rc);
	rc = backend_head(b, k("locked"), &(struct backend_stat){ 0 });
	CHECK(rc == -ENOENT, "and leaves nothing behind (%d)", rc);
	rc = backend_put_buf(b, k("locked"), "one", 3);
	CHECK(rc == 0, "put (%d)", rc);
	rc = backend_lock(b, k("locked"), 30, token, &granted);
	CHECK(rc == 0 && token[0], "lock (%d, token '%s', %ld s)", rc, token,
	      granted);
	rc = backend_lock(b, k("locked"), 30, other, &granted);
	CHECK(rc == -EAGAIN, "a second lock is refused (%d)", rc);
	rc = backend_put_buf(b, k("locked"), "two", 3);
	CHECK(rc == -EAGAIN, "a put without the token is refused (%d)", rc);
	rc = backend_put_locked_buf(b, k("locked"), "tri", 3,
				    "<opaquelocktoken:streamfs-not-a-token>");
	CHECK(rc == -ESTALE, "a put with another token is refused (%d)", rc);
	CHECK(get_eq(b, k("locked"), 0, BACKEND_TO_END, "one", 3) == 0,
	      "the refused puts changed nothing");
	rc = backend_put_locked_buf(b, k("locked"), "for", 3, token);
	CHECK(rc == 0, "a put with the token goes through (%d)", rc);
	CHECK(get_eq(b, k("locked"), 0, BACKEND_TO_END, "for", 3) == 0,
	      "it wrote the new bytes");
	rc = backend_lock(b, k("locked"), 30, token, &granted);
	CHECK(rc == 0, "the lock refreshes (%d)", rc);
	rc = backend_unlock(b, k("locked"), token);
	CHECK(rc == 0, "unlock (%d)", rc);
	rc = backend_put_buf(b, k("locked"), "fiv", 3);
	CHECK(rc == 0, "after unlock a put goes through (%d)", rc);
	rc = backend_del(b, k("locked"));
	CHECK(rc == 0, "delete (%d)", rc);
}

static void run(struct backend *b)
{
	char big[3000], other[3000];
	struct backend_stat st;
	struct collect c;
	struct backend_buf out = { 0 };
	int rc, stopped = 0;

	pattern(big, sizeof(big), 1);
	pattern(other, sizeof(other), 2);

	/* put, head, get */
	rc = backend_put_buf(b, k("a/obj"), big, sizeof(big));
	CHECK(rc == 0, "put 3000 bytes (%d)", rc);
	rc = backend_head(b, k("a/obj"), &st);
	CHECK(rc == 0 && st.size == sizeof(big), "head gives the size (%d, %llu)",
	      rc, (unsigned long long)st.size);
	CHECK(get_eq(b, k("a/obj"), 0, BACKEND_TO_END, big, sizeof(big)) == 0,
	      "get whole object");
	CHECK(get_eq(b, k("a/obj"), 0, 10, big, 10) == 0, "get range 0+10");
	CHECK(get_eq(b, k("a/obj"), 100, 50, big + 100, 50) == 0,
	      "get range 100+50");
	CHECK(get_eq(b, k("a/obj"), 2990, 100, big + 2990, 10) == 0,
	      "get range across the end gives the tail");
	CHECK(get_eq(b, k("a/obj"), 1500, BACKEND_TO_END, big + 1500, 1500) == 0,
	      "get from 1500 to the end");
	CHECK(get_eq(b, k("a/obj"), 3000, 10, "", 0) == 0,
	      "get at the end gives nothing");
	CHECK(get_eq(b, k("a/obj"), 5000, 10, "", 0) == 0,
	      "get past the end gives nothing");


	/* overwrite */
	rc = backend_put_buf(b, k("a/obj"), other, 1000);
	CHECK(rc == 0, "overwrite (%d)", rc);
	CHECK(get_eq(b, k("a/obj"), 0, BACKEND_TO_END, other, 1000) == 0,
	      "get after overwrite gives the new bytes");

	/* put from a file descriptor */
	{
		char path[] = "/tmp/conformance.XXXXXX";
		int fd = mkstemp(path);
		struct backend_body body = { .fd = fd, .len = sizeof(big) };

		unlink(path);
		rc = fd < 0 || write(fd, big, sizeof(big)) != sizeof(big);
		CHECK(rc == 0, "temp file");
		rc = backend_put(b, k("a/fromfd"), &body);
		CHECK(rc == 0, "put from a file (%d)", rc);
		CHECK(get_eq(b, k("a/fromfd"), 7, 1000, big + 7, 1000) == 0,
		      "get of an object put from a file");
		if (backend_caps(b) & BACKEND_CAP_SHA256)
			put_known_sha256(b, fd, big, sizeof(big));
		if (fd >= 0)
			close(fd);
	}

	/* empty object */
	rc = backend_put_buf(b, k("a/empty"), "", 0);
	CHECK(rc == 0, "put empty object (%d)", rc);
	rc = backend_head(b, k("a/empty"), &st);
	CHECK(rc == 0 && st.size == 0, "head of empty object (%d)", rc);
	CHECK(get_eq(b, k("a/empty"), 0, BACKEND_TO_END, "", 0) == 0,
	      "get of empty object");

	/* not found */
	rc = backend_get(b, k("missing"), 0, BACKEND_TO_END, &out);
	CHECK(rc == -ENOENT, "get of a missing object gives ENOENT (%d)", rc);
	backend_buf_release(&out);
	rc = backend_get(b, k("missing"), 5, 10, &out);
	CHECK(rc == -ENOENT, "ranged get of a missing object gives ENOENT (%d)", rc);
	backend_buf_release(&out);
	rc = backend_head(b, k("nodir/missing"), &st);
	CHECK(rc == -ENOENT, "head of a missing object gives ENOENT (%d)", rc);
	rc = backend_del(b, k("missing"));
	CHECK(rc == 0, "delete of a missing object succeeds (%d)", rc);

	/* put_if_absent */
	rc = backend_put_if_absent_buf(b, k("lease"), "first", 5);
	CHECK(rc == 0, "put_if_absent creates (%d)", rc);
	rc = backend_put_if_absent_buf(b, k("lease"), "second", 6);
	CHECK(rc == -EEXIST, "put_if_absent on an existing key gives EEXIST (%d)",
	      rc);
	CHECK(get_eq(b, k("lease"), 0, BACKEND_TO_END, "first", 5) == 0,
	      "the loser did not change the object");
	rc = backend_put_if_absent_buf(b, k("deep/er/lease"), "x", 1);
	CHECK(rc == 0, "put_if_absent under new directories (%d)", rc);
	run_cas(b);
	if (backend_caps(b) & BACKEND_CAP_LOCK)
		run_lock(b);

	/* list: more objects than one page when list_page is small */
	for (int i = 0; i < 7; i++) {
		char name[64];

		snprintf(name, sizeof(name), "l/o%02d", i);
		rc = backend_put_buf(b, k(name), big, (size_t)i + 1);
		CHECK(rc == 0, "put %s (%d)", name, rc);
	}
	rc = backend_put_buf(b, k("l/sub/x"), "x", 1);
	CHECK(rc == 0, "put l/sub/x (%d)", rc);
	rc = backend_put_buf(b, k("lx"), "x", 1);
	CHECK(rc == 0, "put lx (%d)", rc);
	memset(&c, 0, sizeof(c));
	rc = backend_list(b, k("l/"), collect_fn, &c);
	CHECK(rc == 0 && c.n == 8, "list l/ finds 8 objects (%d, %d)", rc, c.n);
	{
		bool order = true, sizes = true;

		for (int i = 0; i < c.n && i < 8; i++) {
			char want[64];

			if (i < 7)
				snprintf(want, sizeof(want), "l/o%02d", i);
			else
				snprintf(want, sizeof(want), "l/sub/x");
			if (strcmp(c.keys[i], k(want)))
				order = false;
			if (i < 7 && c.sizes[i] != (uint64_t)i + 1)
				sizes = false;
		}
		CHECK(order, "list gives full keys in order");
		CHECK(sizes, "list gives sizes");
	}
	memset(&c, 0, sizeof(c));
	rc = backend_list(b, k("l/o0"), collect_fn, &c);
	CHECK(rc == 0 && c.n == 7, "list by a partial name (%d, %d)", rc, c.n);
	memset(&c, 0, sizeof(c));
	rc = backend_list(b, k("nothing/"), collect_fn, &c);
	CHECK(rc == 0 && c.n == 0, "list of an empty prefix (%d, %d)", rc, c.n);
	rc = backend_list(b, k("l/"), stop_fn, &stopped);
	CHECK(rc == 42 && stopped == 3, "a callback stops the listing (%d)", rc);

	/* keys that must be refused */
	{
		static const char *bad[] = { "../x", "a//b", "/a", "a/", "a/../b",
					     ".hidden", "a/./b", "sp ace", "q?x", "p%20", "a+b",
					     "" };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			rc = backend_put_buf(b, bad[i], "x", 1);
			CHECK(rc == -EINVAL, "bad key \"%s\" is refused (%d)",
			      bad[i], rc);
		}
	}

	/* delete everything */
	memset(&c, 0, sizeof(c));
	rc = backend_list(b, base, collect_fn, &c);
	CHECK(rc == 0 && c.n == 14, "list the run's prefix (%d, %d)", rc, c.n);
	for (int i = 0; i < c.n && i < 64; i++) {
		rc = backend_del(b, c.keys[i]);
		if (rc)
			CHECK(0, "delete %s (%d)", c.keys[i], rc);
	}
	rc = backend_head(b, k("a/obj"), &st);
	CHECK(rc == -ENOENT, "deleted object is gone (%d)", rc);
	memset(&c, 0, sizeof(c));
	rc = backend_list(b, base, collect_fn, &c);
	CHECK(rc == 0 && c.n == 0, "nothing left after delete (%d, %d)", rc, c.n);
}

int main(int argc, char **argv)
{
	struct backend_options o;
	struct backend *b = NULL;
	bool denied = false;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: %s URL [KEY=VALUE ...] [--expect-denied]\n",
			argv[0]);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	backend_options_default(&o);
	for (int i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');

		if (!strcmp(argv[i], "--expect-denied")) {
			denied = true;
			continue;
		}
		if (eq)
			*eq = '\0';
		if (backend_options_set(&o, argv[i], eq ? eq + 1 : NULL)) {
			fprintf(stderr, "bad option %s\n", argv[i]);
			return 2;
		}
	}
	snprintf(base, sizeof(base), "conformance-%ld-%ld/", (long)getpid(),
		 (long)time(NULL));
	rc = backend_open_url(argv[1], &o, &b);
	CHECK(rc == 0, "open %s (%d)", argv[1], rc);
	if (rc == 0) {
		if (denied)
			run_denied(b);
		else
			run(b);
		backend_close(b);
	}
	curl_global_cleanup();
	return check_summary();
}
