/*
 * backend_http.c: http(s)://HOST/PATH, a WebDAV-style server (nginx's dav
 * module with dav_ext for PROPFIND, Apache mod_dav, ...).
 *
 * put is one PUT (the server may create missing parent collections, as
 * nginx does with create_full_put_path; if it answers 409, or 404 as
 * rclone serve webdav does, we MKCOL them, the base URL's path first, and
 * PUT again).  get uses Range; del DELETE; head HEAD.  list walks collections
 * with PROPFIND Depth: 1, so it needs no manifest object on the server.
 * put_if_absent PUTs a temporary object beside KEY and MOVEs it onto KEY
 * with "Overwrite: F", which the server refuses with 412 when KEY exists.
 * This is only as atomic as the server's MOVE (nginx checks, then
 * renames), so the backend does not claim BACKEND_CAP_ATOMIC_CREATE.
 *
 * Compare-and-swap (put_if_match, del_if_match): servers ignore If-Match
 * on PUT (nginx does), so the backend takes a WebDAV write LOCK on KEY
 * (RFC 4918; nginx's dav_ext_lock, Apache mod_dav_lock, rclone), compares
 * the tag of what it then reads, and PUTs or DELETEs with the lock token
 * in an "If:" header before it UNLOCKs.  Another writer's LOCK, PUT, MOVE
 * or DELETE of KEY meanwhile is refused with 423 (-EAGAIN).  The tag is a
 * hash of the content: nginx's ETag (mtime in seconds and size) misses two
 * writes within a second.  A server that refuses LOCK (405, 501) gets a
 * compare then an unlocked PUT, which is not atomic: logged once, and the
 * backend does not claim BACKEND_CAP_CAS.
 *
 * lock and unlock expose the LOCK itself (BACKEND_CAP_LOCK) for a caller
 * that holds one for long (sync/ holds the manifest's with its lease), and
 * a put with backend_body.lock sends its token in "If:"; 412 or 423 then
 * mean the lock is gone (-ESTALE).  Whether the server enforces locks at
 * all is for the caller to probe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "remote_int.h"

/* Used by one thread at a time (backend.h): no lock. */
struct backend_http {
	struct http_backend http;	/* first: a struct backend too */
	char *base_url;		/* ends with '/' */
	char *base_path;	/* decoded path part of base_url, ends with '/' */
	bool said_no_lock;	/* the server's refusal of LOCK was logged */
};

static struct backend_http *to_http(struct backend *b)
{
	return (struct backend_http *)b;
}

static void http_close(struct backend *b)
{
	struct backend_http *h = to_http(b);

	if (!h)
		return;
	http_backend_release(&h->http);
	free(h->base_url);
	free(h->base_path);
	free(h);
}

/* USER:PASSWORD (the first line that is not empty or a '#' comment) of
 * the credentials file FILE, which backend_credentials_open() accepts.
 * Caller frees both. */
static int creds_load(const char *file, char **user, char **pass)
{
	char line[4096], *colon, *e;
	int fd, rc = -EACCES;
	FILE *f;

	*user = *pass = NULL;
	f = remote_credentials_fopen(file, &fd);
	if (!f)
		return fd;
	/* The first line that is neither empty nor a comment. */
	while (fgets(line, sizeof(line), f)) {
		e = line + strcspn(line, "\r\n");
		*e = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		colon = strchr(line, ':');
		if (!colon || colon == line) {
			remote_log(LOG_ERR, "credentials file %s: want one line "
				   "USER:PASSWORD", file);
			break;
		}
		*colon = '\0';
		*user = strdup(line);
		*pass = strdup(colon + 1);
		rc = *user && *pass ? 0 : -ENOMEM;
		break;
	}
	if (rc == -EACCES && !*user)
		remote_log(LOG_ERR, "credentials file %s: no USER:PASSWORD line", file);
	explicit_bzero(line, sizeof(line));
	fclose(f);
	if (rc) {
		if (*pass)
			explicit_bzero(*pass, strlen(*pass));
		free(*user);
		free(*pass);
		*user = *pass = NULL;
	}
	return rc;
}

static const struct http_object_ops dav_ops;	/* below */

static int http_open(const char *url, const struct backend_options *o,
		     struct backend **out)
{
	struct backend_http *h;
	const char *host = strstr(url, "://") + 3, *path;
	size_t n = strlen(url);
	int rc;

	if (strpbrk(url, "?#\r\n "))
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	rc = http_backend_init(&h->http, &backend_http_ops, &dav_ops, o);
	if (rc)
		goto fail;
	while (n && url[n - 1] == '/')
		n--;
	if (asprintf(&h->base_url, "%.*s/", (int)n, url) < 0) {
		h->base_url = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	path = strchr(host, '/');
	if (!path || path >= url + n) {
		h->base_path = strdup("/");
	} else if (asprintf(&h->base_path, "%.*s/", (int)(url + n - path),
			    path) < 0) {
		h->base_path = NULL;
	}
	if (!h->base_path) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = remote_urldecode(h->base_path);
	if (rc)
		goto fail;
	if (o->credentials_file) {
		rc = creds_load(o->credentials_file, &h->http.conf.userpwd_user,
				&h->http.conf.userpwd_pass);
		if (rc)
			goto fail;
	}
	*out = &h->http.base;
	return 0;
fail:
	http_close(&h->http.base);
	return rc;
}

static int key_url(struct backend_http *h, const char *key,
		   struct backend_buf *url)
{
	int rc = backend_buf_append(url, h->base_url, strlen(h->base_url));

	if (!rc)
		rc = backend_buf_urlencode(url, key, true);
	return rc;
}

/* One request (http_request()), with "Expect:" to skip 100-continue. */
static int dav_request(struct backend_http *h, struct http_req *req,
		       const char *op, const char *key,
		       const char *const *extra)
{
	static const char *const lines[] = { "Expect:", NULL };
	char what[256];

	snprintf(what, sizeof(what), "http %s %s", op, key);
	return http_request(&h->http, req, lines, extra, what);
}

/* MKCOL of collection URL (ends with '/'), named NAME in log lines: 0
 * when it was made or was there already (405 from nginx; rclone answers
 * 201 again). */
static int mkcol(struct backend_http *h, const char *url, const char *name)
{
	struct http_req req = { .method = "MKCOL", .url = url };
	int rc = dav_request(h, &req, "mkcol", name, NULL);

	return rc == -EOPNOTSUPP || rc == -EEXIST ? 0 : rc;
}

/* Creates the collections above KEY, top down from the first one of the
 * base URL's path, for servers that do not create them on PUT. */
static int mkcol_parents(struct backend_http *h, const char *key)
{
	struct backend_buf url = { 0 };
	const char *host = strstr(h->base_url, "://") + 3;
	const char *path = strchr(host, '/');
	int rc = 0;

	/* The base path's own collections: "/a/", then "/a/b/"... */
	for (const char *p = path + 1; !rc && (p = strchr(p, '/')); p++) {
		url.len = 0;
		rc = backend_buf_append(&url, h->base_url,
					(size_t)(p + 1 - h->base_url));
		if (!rc)
			rc = mkcol(h, url.data, path);
	}
	/* Then KEY's, below the base. */
	for (const char *p = key; !rc && (p = strchr(p, '/')); p++) {
		char *k = strndup(key, (size_t)(p - key));

		url.len = 0;
		rc = k ? key_url(h, k, &url) : -ENOMEM;
		if (!rc)
			rc = backend_buf_append(&url, "/", 1);
		if (!rc)
			rc = mkcol(h, url.data, k);
		free(k);
	}
	backend_buf_release(&url);
	return rc;
}

/* The "If: (<token>)" line of lock TOKEN into HDR. */
static const char *if_line(char *hdr, size_t len, const char *token)
{
	snprintf(hdr, len, "If: (%s)", token);
	return hdr;
}

static int put_url(struct backend_http *h, const char *url, const char *key,
		   const struct backend_body *body)
{
	char hdr[BACKEND_TAG_MAX + 16];
	const char *extra[] = { body->lock ? if_line(hdr, sizeof(hdr), body->lock)
					   : NULL, NULL };
	struct http_req req = { .method = "PUT", .url = url, .body = body };
	int rc = dav_request(h, &req, "put", key, extra);

	/* With a lock: 412 (the token is not the lock's any more) or 423
	 * (another holds a lock): this writer's lock is gone. */
	if (body->lock && (req.status == 412 || req.status == 423))
		return -ESTALE;

	/* A parent collection is missing: RFC 4918 says 409 Conflict, and
	 * some servers (rclone serve webdav) answer 404. */
	if ((rc == -EAGAIN && req.status == 409) ||
	    (rc == -ENOENT && req.status == 404)) {
		rc = mkcol_parents(h, key);
		if (!rc) {
			req = (struct http_req){ .method = "PUT", .url = url,
						 .body = body };
			rc = dav_request(h, &req, "put", key, extra);
		}
	}
	return rc;
}

static int http_put(struct backend *b, const char *key,
		    const struct backend_body *body)
{
	struct backend_http *h = to_http(b);
	struct backend_buf url = { 0 };
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = key_url(h, key, &url);
	if (!rc)
		rc = put_url(h, url.data, key, body);
	backend_buf_release(&url);
	return rc;
}

static int http_put_if_absent(struct backend *b, const char *key,
			      const struct backend_body *body)
{
	struct backend_http *h = to_http(b);
	struct backend_buf url = { 0 }, tmpurl = { 0 };
	char *tmpkey = NULL, dest[4096];
	const char *slash;
	struct timespec ts;
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	clock_gettime(CLOCK_REALTIME, &ts);
	slash = strrchr(key, '/');
	if (asprintf(&tmpkey, "%.*s.tmp.%s.%ld.%ld", slash ? (int)(slash - key + 1) : 0,
		     key, slash ? slash + 1 : key, (long)getpid(),
		     (long)ts.tv_nsec) < 0)
		return -ENOMEM;
	rc = key_url(h, key, &url);
	if (!rc)
		rc = key_url(h, tmpkey, &tmpurl);
	if (!rc)
		rc = put_url(h, tmpurl.data, key, body);
	if (!rc) {
		struct http_req req = { .method = "MOVE", .url = tmpurl.data };
		const char *extra[] = { dest, "Overwrite: F", NULL };

		if ((size_t)snprintf(dest, sizeof(dest), "Destination: %s",
				     url.data) >= sizeof(dest)) {
			rc = -ENAMETOOLONG;
		} else {
			rc = dav_request(h, &req, "put_if_absent", key, extra);
		}
		if (rc) {
			struct http_req del = { .method = "DELETE",
						.url = tmpurl.data };

			(void)dav_request(h, &del, "del", tmpkey, NULL);
		}
	}
	backend_buf_release(&url);
	backend_buf_release(&tmpurl);
	free(tmpkey);
	return rc;
}

static int http_get_tagged(struct backend *b, const char *key,
			   struct backend_buf *out, char *tag)
{
	return http_object_get_tagged(b, key, out, tag, true);
}

static const char lock_body[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope>"
	"<D:locktype><D:write/></D:locktype></D:lockinfo>\n";

/* The timeout a LOCK answer RESP grants ("<D:timeout>Second-N"), 0 when
 * it does not say. */
static long lock_granted(const struct backend_buf *resp)
{
	const char *p = resp->data ? strstr(resp->data, "Second-") : NULL;

	return p ? strtol(p + strlen("Second-"), NULL, 10) : 0;
}

/* LOCKs URL (KEY's) for TIMEOUT_S seconds: its token, "<urn:...>", into
 * TOKEN (BACKEND_TAG_MAX bytes); or, TOKEN not "", refreshes that lock.
 * *GRANTED_S (OUT): what the server granted, 0 when it did not say.
 * -EAGAIN when another holds a lock on it, -ESTALE when the lock to
 * refresh is gone, -EOPNOTSUPP when the server does not lock.  *CREATED
 * (OUT) tells a LOCK that made an empty object where there was none. */
static int dav_lock(struct backend_http *h, const char *url, const char *key,
		    long timeout_s, char *token, long *granted_s,
		    bool *created)
{
	struct backend_body body = { .buf = lock_body, .fd = -1,
				     .len = sizeof(lock_body) - 1 };
	struct backend_buf resp = { .max = 64u << 10 };
	bool refresh = token[0];
	struct http_req req = { .method = "LOCK", .url = url,
				.body = refresh ? NULL : &body, .resp = &resp,
				.want_header = "Lock-Token" };
	char tmo[48], hdr[BACKEND_TAG_MAX + 16];
	const char *extra[] = { tmo, "Depth: 0", refresh ? if_line(hdr,
				sizeof(hdr), token) : "Content-Type: application/xml",
				NULL };
	int rc;

	snprintf(tmo, sizeof(tmo), "Timeout: Second-%ld", timeout_s);
	rc = dav_request(h, &req, refresh ? "lock refresh" : "lock", key, extra);
	*created = !rc && req.status == 201;
	*granted_s = rc ? 0 : lock_granted(&resp);
	if (refresh && (req.status == 412 || req.status == 423))
		rc = -ESTALE;
	else if (!rc && !refresh && !req.header[0])
		rc = -EOPNOTSUPP;
	if (!rc && !refresh)
		snprintf(token, BACKEND_TAG_MAX, "%s", req.header);
	backend_buf_release(&resp);
	return rc;
}

static void dav_unlock(struct backend_http *h, const char *url,
		       const char *key, const char *token)
{
	char hdr[BACKEND_TAG_MAX + 16];
	const char *extra[] = { hdr, NULL };
	struct http_req req = { .method = "UNLOCK", .url = url };

	snprintf(hdr, sizeof(hdr), "Lock-Token: %s", token);
	(void)dav_request(h, &req, "unlock", key, extra);
}

/* Compares the tag of KEY with TAG: 0, -ESTALE, -ENOENT.  *EMPTY (OUT)
 * tells whether KEY holds nothing. */
static int dav_compare(struct backend_http *h, const char *key,
		       const char *tag, bool *empty)
{
	struct backend_buf cur = { .max = 16u << 20 };
	char curtag[BACKEND_TAG_MAX];
	int rc = http_get_tagged(&h->http.base, key, &cur, curtag);

	*empty = !rc && cur.len == 0;
	if (!rc && strcmp(curtag, tag))
		rc = -ESTALE;
	backend_buf_release(&cur);
	return rc;
}

/* With KEY (at URL) locked when TOKEN is not "": compares its tag with
 * TAG, then PUTs BODY, or DELETEs when BODY is NULL. */
static int dav_swap(struct backend_http *h, const char *url, const char *key,
		    const char *token, const char *tag,
		    const struct backend_body *body)
{
	char hdr[BACKEND_TAG_MAX + 16];
	const char *extra[] = { token[0] ? hdr : NULL, NULL };
	struct http_req req = { .method = body ? "PUT" : "DELETE", .url = url,
				.body = body };
	bool empty;
	int rc;

	if_line(hdr, sizeof(hdr), token);
	rc = dav_compare(h, key, tag, &empty);
	if (rc == -ESTALE && empty && token[0]) {
		/* KEY went away before our LOCK, which made an empty
		 * lock-null object of it: take that away again. */
		req = (struct http_req){ .method = "DELETE", .url = url };
		(void)dav_request(h, &req, "del", key, extra);
		return -ENOENT;
	}
	if (!rc)
		rc = dav_request(h, &req, body ? "put_if_match" :
				 "del_if_match", key, extra);
	return rc;
}

/* put_if_match (BODY) or del_if_match (BODY NULL), as the top says. */
static int dav_cas(struct backend *b, const char *key,
		   const struct backend_body *body, const char *tag,
		   char *new_tag)
{
	struct backend_http *h = to_http(b);
	struct backend_buf url = { 0 };
	char token[BACKEND_TAG_MAX] = "";
	bool empty, created;
	long granted;
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	/* First without a lock: a LOCK of a missing key would create it. */
	rc = dav_compare(h, key, tag, &empty);
	if (!rc)
		rc = key_url(h, key, &url);
	if (!rc)
		rc = dav_lock(h, url.data, key, 30, token, &granted, &created);
	if (rc == -EOPNOTSUPP) {
		if (!h->said_no_lock)
			remote_log(LOG_WARNING, "http %s: the server does not LOCK: "
				   "conditional writes are a compare then a "
				   "put, not atomic (nginx: dav_ext_lock)",
				   key);
		h->said_no_lock = true;
		token[0] = '\0';
		rc = 0;
	}
	if (!rc)
		rc = dav_swap(h, url.data, key, token, tag, body);
	if (!rc && new_tag && body)
		rc = body->buf ? http_content_tag(body->buf, body->len, new_tag)
			       : (new_tag[0] = '\0', 0);
	if (token[0])
		dav_unlock(h, url.data, key, token);
	backend_buf_release(&url);
	return rc;
}

static int http_put_if_match(struct backend *b, const char *key,
			     const struct backend_body *body, const char *tag,
			     char *new_tag)
{
	return dav_cas(b, key, body, tag, new_tag);
}

static int http_del_if_match(struct backend *b, const char *key,
			     const char *tag)
{
	return dav_cas(b, key, NULL, tag, NULL);
}

static int http_lock(struct backend *b, const char *key, long timeout_s,
		     char *token, long *granted_s)
{
	struct backend_http *h = to_http(b);
	struct backend_buf url = { 0 };
	bool created = false;
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = key_url(h, key, &url);
	if (!rc)
		rc = dav_lock(h, url.data, key, timeout_s, token, granted_s,
			      &created);
	if (!rc && created) {
		/* KEY was missing and the LOCK made it (RFC 4918's locked
		 * empty resource): take that away again. */
		char hdr[BACKEND_TAG_MAX + 16];
		const char *extra[] = { if_line(hdr, sizeof(hdr), token), NULL };
		struct http_req del = { .method = "DELETE", .url = url.data };

		(void)dav_request(h, &del, "del", key, extra);
		dav_unlock(h, url.data, key, token);
		token[0] = '\0';
		rc = -ENOENT;
	}
	backend_buf_release(&url);
	return rc;
}

static int http_unlock(struct backend *b, const char *key, const char *token)
{
	struct backend_http *h = to_http(b);
	struct backend_buf url = { 0 };
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = key_url(h, key, &url);
	if (!rc)
		dav_unlock(h, url.data, key, token);
	backend_buf_release(&url);
	return rc;
}

static int dav_url(struct backend *b, const char *key, struct backend_buf *url)
{
	return key_url(to_http(b), key, url);
}

static int dav_object_request(struct backend *b, struct http_req *req,
			      const char *op, const char *key,
			      const char *const *extra)
{
	return dav_request(to_http(b), req, op, key, extra);
}

static const struct http_object_ops dav_ops = {
	.url = dav_url,
	.request = dav_object_request,
};

static xmlNode *find(xmlNode *n, const char *name)
{
	for (; n; n = n->next) {
		xmlNode *f;

		if (http_xml_named(n, name))
			return n;
		if (n->children && (f = find(n->children, name)))
			return f;
	}
	return NULL;
}

static const char propfind_body[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/>"
	"<D:getcontentlength/></D:prop></D:propfind>\n";

static int walk(struct backend_http *h, const char *dir, const char *prefix,
		struct remote_entries *ev, int depth);

/* Whether KEY (KL bytes, from a listing of DIR) is to be skipped: DIR
 * itself, a temporary, an odd name. */
static bool skip_key(const char *key, size_t kl, const char *dir)
{
	size_t dl = strlen(dir);

	return !kl || !strcmp(key, dir) ||
	       (dl && dl - 1 == kl && !strncmp(key, dir, kl)) ||
	       strstr(key, "/.") || key[0] == '.';
}

/* One <response> R of the listing of DIR: descends into a collection
 * whose objects may start with PREFIX, adds an object that does. */
static int walk_response(struct backend_http *h, xmlNode *r, const char *dir,
			 const char *prefix, struct remote_entries *ev,
			 int depth)
{
	size_t bplen = strlen(h->base_path), pl = strlen(prefix), kl;
	xmlNode *hn = find(r->children, "href"), *rt;
	char *path, *p, *key;
	bool coll;
	int rc = 0;

	if (!hn)
		return 0;
	path = strdup(http_xml_text(hn));
	if (!path)
		return -ENOMEM;
	p = path;
	if (strstr(p, "://")) {	/* absolute URL: keep its path */
		p = strchr(strstr(p, "://") + 3, '/');
		if (!p)
			p = path + strlen(path);
	}
	if (remote_urldecode(p) || strncmp(p, h->base_path, bplen))
		goto out;
	key = p + bplen;
	kl = strlen(key);
	rt = find(r->children, "resourcetype");
	coll = (rt && find(rt->children, "collection")) ||
	       (kl && key[kl - 1] == '/');
	if (coll && kl && key[kl - 1] == '/')
		key[--kl] = '\0';
	if (skip_key(key, kl, dir))
		goto out;
	if (coll && !strncmp(key, prefix, kl < pl ? kl : pl)) {
		char *sub = NULL;

		if (asprintf(&sub, "%s/", key) < 0)
			rc = -ENOMEM;
		else
			rc = walk(h, sub, prefix, ev, depth + 1);
		free(sub);
	} else if (!coll && !strncmp(key, prefix, pl)) {
		xmlNode *len = find(r->children, "getcontentlength");

		rc = remote_entries_add(ev, key,
					strtoull(http_xml_text(len), NULL, 10));
	}
out:
	free(path);
	return rc;
}

/* PROPFIND with Depth: 1 of collection DIR into RESP: -ENOENT when DIR is
 * missing, -EOPNOTSUPP when the server does not answer 207. */
static int propfind(struct backend_http *h, const char *dir,
		    struct backend_buf *resp)
{
	struct backend_buf url = { 0 };
	struct backend_body body = { .buf = propfind_body, .fd = -1,
				     .len = sizeof(propfind_body) - 1 };
	struct http_req req = { .method = "PROPFIND", .body = &body,
				.resp = resp };
	const char *extra[] = { "Depth: 1",
				"Content-Type: application/xml", NULL };
	int rc = key_url(h, dir, &url);

	if (!rc) {
		req.url = url.data;
		rc = dav_request(h, &req, "list", dir, extra);
	}
	if (!rc && req.status != 207) {
		remote_log(LOG_WARNING, "http list %s: PROPFIND gave status %ld, not 207",
			   dir, req.status);
		rc = -EOPNOTSUPP;
	}
	backend_buf_release(&url);
	return rc;
}

/* Lists collection DIR (a key ending in '/', or "" for the root). */
static int walk(struct backend_http *h, const char *dir, const char *prefix,
		struct remote_entries *ev, int depth)
{
	struct backend_buf resp = { .max = 32 << 20 };
	xmlDoc *doc = NULL;
	xmlNode *root;
	int rc;

	if (depth > 64)
		return -ELOOP;
	rc = propfind(h, dir, &resp);
	if (rc == -ENOENT) {
		rc = 0;		/* nothing there yet */
		goto out;
	}
	if (rc)
		goto out;
	doc = xmlReadMemory(resp.data, (int)resp.len, NULL, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOBLANKS |
			    XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || !http_xml_named(root, "multistatus")) {
		remote_log(LOG_WARNING, "http list %s: PROPFIND answer is not a multistatus",
			   dir);
		rc = -EIO;
		goto out;
	}
	for (xmlNode *r = root->children; r && !rc; r = r->next)
		if (http_xml_named(r, "response"))
			rc = walk_response(h, r, dir, prefix, ev, depth);
out:
	if (doc)
		xmlFreeDoc(doc);
	backend_buf_release(&resp);
	return rc;
}

static int http_list(struct backend *b, const char *prefix,
		     backend_list_fn fn, void *arg)
{
	struct backend_http *h = to_http(b);
	struct remote_entries ev = { 0 };
	char *dir;
	const char *slash;
	int rc;

	prefix = prefix ? prefix : "";
	/* Start at the deepest collection the prefix names. */
	slash = strrchr(prefix, '/');
	dir = strndup(prefix, slash ? (size_t)(slash - prefix + 1) : 0);
	if (!dir)
		return -ENOMEM;
	if (*dir && !(dir[strlen(dir) - 1] = '\0', backend_key_valid(dir))) {
		free(dir);
		return -EINVAL;
	}
	if (*dir)
		dir[strlen(dir)] = '/';
	rc = walk(h, dir, prefix, &ev, 0);
	if (!rc)
		rc = remote_entries_emit(&ev, fn, arg);
	remote_entries_release(&ev);
	free(dir);
	return rc;
}

const struct backend_ops backend_http_ops = {
	.name = "http",
	.caps = BACKEND_CAP_RANGE | BACKEND_CAP_LOCK,
	.open = http_open,
	.close = http_close,
	.put = http_put,
	.get = http_object_get,
	.del = http_object_del,
	.head = http_object_head,
	.list = http_list,
	.put_if_absent = http_put_if_absent,
	.get_tagged = http_get_tagged,
	.put_if_match = http_put_if_match,
	.del_if_match = http_del_if_match,
	.lock = http_lock,
	.unlock = http_unlock,
};
