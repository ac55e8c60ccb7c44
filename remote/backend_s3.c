/*
 * backend_s3.c: s3://BUCKET[/PREFIX] with AWS Signature V4 (libcurl's
 * CURLOPT_AWS_SIGV4).
 *
 * Every request carries x-amz-content-sha256 with the SHA-256 of its
 * payload, computed here: libcurl 7.88 signs the header but does not add it,
 * and S3 refuses requests without it.  A real hash (not UNSIGNED-PAYLOAD)
 * also lets the server reject a body damaged in transit, over plain HTTP
 * as well as TLS.  Query strings are written already sorted and encoded,
 * as the canonical request wants them (old libcurl does not sort).
 *
 * Addressing: virtual-host (https://BUCKET.s3.REGION.amazonaws.com/KEY) by
 * default, path style (ENDPOINT/BUCKET/KEY) with path_style; endpoint=
 * replaces the AWS host for MinIO, R2, B2, Ceph and test servers.
 */
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "remote_int.h"

#define SHA256_EMPTY \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Used by one thread at a time (backend.h): no lock. */
struct backend_s3 {
	struct http_backend http;	/* first: a struct backend too */
	char *base_url;		/* up to and including the '/' before keys */
	char *prefix;		/* "" or "some/prefix/" */
	char *token_header;	/* "x-amz-security-token: ..." or NULL */
	unsigned list_page;
	bool query_slash_raw;
};

static struct backend_s3 *to_s3(struct backend *b)
{
	return (struct backend_s3 *)b;
}

static void s3_close(struct backend *b)
{
	struct backend_s3 *s = to_s3(b);

	if (!s)
		return;
	http_backend_release(&s->http);
	if (s->token_header)
		explicit_bzero(s->token_header, strlen(s->token_header));
	free(s->token_header);
	free(s->base_url);
	free(s->prefix);
	free(s);
}

/* Credentials of an s3 backend (env or credentials file).  Caller frees
 * with creds_release(). */
struct s3_creds {
	char *key_id;
	char *secret;
	char *token;			/* may be NULL */
};

static void creds_release(struct s3_creds *c)
{
	if (c->secret)
		explicit_bzero(c->secret, strlen(c->secret));
	free(c->key_id);
	free(c->secret);
	free(c->token);
	*c = (struct s3_creds){ 0 };
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Reads the [default] section (or the only one) of an AWS-style
 * credentials file: aws_access_key_id, aws_secret_access_key,
 * aws_session_token.  Refuses a file that group or others can read. */
static int creds_from_file(const char *file, struct s3_creds *out)
{
	char line[4096];
	bool in_section = true;	/* keys before any section count */
	int fd, rc = 0;
	FILE *f;

	f = remote_credentials_fopen(file, &fd);
	if (!f)
		return fd;
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq, *k, *v, **dst = NULL;

		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			in_section = !strcmp(s, "[default]");
			continue;
		}
		if (!in_section || !(eq = strchr(s, '=')))
			continue;
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		if (!strcmp(k, "aws_access_key_id"))
			dst = &out->key_id;
		else if (!strcmp(k, "aws_secret_access_key"))
			dst = &out->secret;
		else if (!strcmp(k, "aws_session_token"))
			dst = &out->token;
		if (dst) {
			free(*dst);
			if (!(*dst = strdup(v))) {
				rc = -ENOMEM;
				break;
			}
		}
	}
	explicit_bzero(line, sizeof(line));
	fclose(f);
	return rc;
}

static int creds_load(const char *file, struct s3_creds *out)
{
	int rc = 0;

	*out = (struct s3_creds){ 0 };
	if (file) {
		rc = creds_from_file(file, out);
	} else {
		const char *id = getenv("AWS_ACCESS_KEY_ID");
		const char *sec = getenv("AWS_SECRET_ACCESS_KEY");
		const char *tok = getenv("AWS_SESSION_TOKEN");

		if ((id && !(out->key_id = strdup(id))) ||
		    (sec && !(out->secret = strdup(sec))) ||
		    (tok && *tok && !(out->token = strdup(tok))))
			rc = -ENOMEM;
	}
	if (!rc && (!out->key_id || !*out->key_id || !out->secret ||
		    !*out->secret)) {
		remote_log(LOG_ERR, "no S3 credentials: set AWS_ACCESS_KEY_ID and "
			   "AWS_SECRET_ACCESS_KEY, or credentials=FILE");
		rc = -EACCES;
	}
	if (!rc && (strchr(out->key_id, ':') || strpbrk(out->key_id, "\r\n") ||
		    (out->token && strpbrk(out->token, "\r\n")))) {
		remote_log(LOG_ERR, "malformed S3 credentials");
		rc = -EACCES;
	}
	if (rc)
		creds_release(out);
	return rc;
}

static bool bucket_valid(const char *b, size_t n)
{
	if (n < 3 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') ||
		      (b[i] >= '0' && b[i] <= '9') || b[i] == '-' ||
		      b[i] == '.' || b[i] == '_'))
			return false;
	return true;
}

/* Extracts <Code> of an S3 error body for the log. */
static void error_code(const struct backend_buf *resp, char *code, size_t n)
{
	const char *p, *e;

	snprintf(code, n, "-");
	if (!resp || !resp->data)
		return;
	p = strstr(resp->data, "<Code>");
	if (!p)
		return;
	p += 6;
	e = strstr(p, "</Code>");
	if (e && (size_t)(e - p) < n)
		snprintf(code, n, "%.*s", (int)(e - p), p);
}

/* Logs the <Code> of an S3 error answer, unless it is an ordinary one. */
static void explain_error(const char *what, long status,
			  const struct backend_buf *body)
{
	char code[64];

	if (status == 404 || status == 412)
		return;
	error_code(body, code, sizeof(code));
	remote_log(LOG_WARNING, "%s: S3 answered %s", what, code);
}

/* The key prefix: PATH (the URL's path after the bucket, "" for none)
 * without surrounding slashes, plus '/'; "" for none. */
static int set_prefix(struct backend_s3 *s, const char *path)
{
	size_t n = strlen(path);

	while (n && path[n - 1] == '/')
		n--;
	if (asprintf(&s->prefix, "%.*s%s", (int)n, path, n ? "/" : "") < 0) {
		s->prefix = NULL;
		return -ENOMEM;
	}
	if (n) {
		s->prefix[n] = '\0';
		if (!backend_key_valid(s->prefix)) {
			remote_log(LOG_ERR, "s3: bad prefix in URL");
			return -EINVAL;
		}
		s->prefix[n] = '/';
	}
	return 0;
}

/* The URL before keys of BUCKET (BLEN bytes): at endpoint= when given,
 * else at AWS; path style or virtual-host as O says. */
static int set_base_url(struct backend_s3 *s, const struct backend_options *o,
			const char *bucket, size_t blen)
{
	int rc;

	if (o->endpoint) {
		const char *host = strstr(o->endpoint, "://");
		size_t el = strlen(o->endpoint);

		if (!host || (strncmp(o->endpoint, "http://", 7) &&
			      strncmp(o->endpoint, "https://", 8))) {
			remote_log(LOG_ERR, "s3: endpoint must start with http:// or https://");
			return -EINVAL;
		}
		host += 3;
		while (el && o->endpoint[el - 1] == '/')
			el--;
		if (o->path_style)
			rc = asprintf(&s->base_url, "%.*s/%.*s/", (int)el,
				      o->endpoint, (int)blen, bucket);
		else
			rc = asprintf(&s->base_url, "%.*s%.*s.%.*s/",
				      (int)(host - o->endpoint), o->endpoint,
				      (int)blen, bucket,
				      (int)(el - (size_t)(host - o->endpoint)),
				      host);
	} else if (o->path_style) {
		rc = asprintf(&s->base_url, "https://s3.%s.amazonaws.com/%.*s/",
			      o->region, (int)blen, bucket);
	} else {
		rc = asprintf(&s->base_url, "https://%.*s.s3.%s.amazonaws.com/",
			      (int)blen, bucket, o->region);
	}
	if (rc < 0) {
		s->base_url = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Signature V4 for O's region, and S3's error codes in the log. */
static int set_signing(struct backend_s3 *s, const struct backend_options *o)
{
	s->http.conf.explain = explain_error;
	if (strpbrk(o->region, ":\r\n/") || !*o->region)
		return -EINVAL;
	if (asprintf(&s->http.conf.sigv4, "aws:amz:%s:s3", o->region) < 0) {
		s->http.conf.sigv4 = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Credentials from FILE or the environment: the key pair goes to the
 * signing settings (which then own it), a session token into a header. */
static int set_credentials(struct backend_s3 *s, const char *file)
{
	struct s3_creds cr;
	int rc = creds_load(file, &cr);

	if (rc)
		return rc;
	s->http.conf.userpwd_user = cr.key_id;
	s->http.conf.userpwd_pass = cr.secret;
	if (cr.token && asprintf(&s->token_header, "x-amz-security-token: %s",
				 cr.token) < 0) {
		s->token_header = NULL;
		rc = -ENOMEM;
	}
	if (cr.token) {
		explicit_bzero(cr.token, strlen(cr.token));
		free(cr.token);
	}
	return rc;
}

static const struct http_object_ops s3_ops;	/* below */

static int s3_open(const char *url, const struct backend_options *o,
		   struct backend **out)
{
	const char *bucket = url + strlen("s3://"), *slash;
	struct backend_s3 *s;
	size_t blen;
	int rc;

	slash = strchr(bucket, '/');
	blen = slash ? (size_t)(slash - bucket) : strlen(bucket);
	if (!bucket_valid(bucket, blen)) {
		remote_log(LOG_ERR, "s3: bad bucket name in URL");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->list_page = o->list_page;
	s->query_slash_raw = o->query_slash_raw;
	rc = http_backend_init(&s->http, &backend_s3_ops, &s3_ops, o);
	if (!rc)
		rc = set_prefix(s, slash ? slash + 1 : "");
	if (!rc)
		rc = set_base_url(s, o, bucket, blen);
	if (!rc)
		rc = set_signing(s, o);
	if (!rc)
		rc = set_credentials(s, o->credentials_file);
	if (rc) {
		s3_close(&s->http.base);
		return rc;
	}
	*out = &s->http.base;
	return 0;
}

/* Hex SHA-256 of BODY into HEX (65 bytes). */
static int body_sha256(const struct backend_body *body, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = 0;

	if (!ctx)
		return -ENOMEM;
	if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		rc = -EIO;
		goto out;
	}
	if (body->buf) {
		if (!EVP_DigestUpdate(ctx, body->buf, body->len))
			rc = -EIO;
	} else {
		char buf[65536];
		uint64_t off = 0;

		while (!rc && off < body->len) {
			size_t want = body->len - off < sizeof(buf) ?
				(size_t)(body->len - off) : sizeof(buf);
			ssize_t n = pread(body->fd, buf, want, (off_t)off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				rc = n < 0 ? -errno : -EIO;
			else if (!EVP_DigestUpdate(ctx, buf, (size_t)n))
				rc = -EIO;
			else
				off += (uint64_t)n;
		}
	}
	if (!rc && !EVP_DigestFinal_ex(ctx, md, &mdlen))
		rc = -EIO;
	for (unsigned i = 0; !rc && i < mdlen && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* Copies a caller's hex SHA-256 into HEX (65 bytes): it goes into a
 * header, so nothing but 64 lower-case hex digits. */
static int known_sha256(const char *given, char hex[65])
{
	if (strlen(given) != 64 || strspn(given, "0123456789abcdef") != 64)
		return -EINVAL;
	memcpy(hex, given, 65);
	return 0;
}

/* URL of KEY (relative to the prefix). */
static int object_url(struct backend_s3 *s, const char *key,
		      struct backend_buf *url)
{
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = backend_buf_append(url, s->base_url, strlen(s->base_url));
	if (!rc)
		rc = backend_buf_urlencode(url, s->prefix, true);
	if (!rc)
		rc = backend_buf_urlencode(url, key, true);
	return rc;
}

/* Sends one request (http_request()) with the payload's SHA-256 and the
 * session token.  EXTRA are additional header lines (NULL-ended). */
static int s3_request(struct backend_s3 *s, struct http_req *req,
		      const char *op, const char *key, const char *const *extra)
{
	char hash[65] = SHA256_EMPTY, hdr[128], what[256];
	const char *lines[4];
	size_t n = 0;
	int rc = 0;

	snprintf(what, sizeof(what), "s3 %s %s%s", op, s->prefix, key);
	if (req->body && req->body->sha256)
		rc = known_sha256(req->body->sha256, hash);
	else if (req->body)
		rc = body_sha256(req->body, hash);
	if (rc)
		return rc;
	snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s", hash);
	lines[n++] = hdr;
	if (req->body)
		lines[n++] = "Content-Type: application/octet-stream";
	/* No "Expect:" to turn off 100-continue: libcurl 7.88 would sign the
	 * empty header it never sends. */
	if (s->token_header)
		lines[n++] = s->token_header;
	lines[n] = NULL;
	return http_request(&s->http, req, lines, extra, what);
}

static int do_put(struct backend *b, const char *key,
		  const struct backend_body *body, bool if_absent)
{
	struct backend_s3 *s = to_s3(b);
	struct backend_buf url = { 0 };
	const char *extra[] = { if_absent ? "If-None-Match: *" : NULL, NULL };
	struct http_req req = { .method = "PUT", .body = body };
	int rc;

	rc = object_url(s, key, &url);
	if (rc)
		goto out;
	req.url = url.data;
	rc = s3_request(s, &req, if_absent ? "put_if_absent" : "put", key,
			extra);
out:
	backend_buf_release(&url);
	return rc;
}

static int s3_put(struct backend *b, const char *key,
		  const struct backend_body *body)
{
	return do_put(b, key, body, false);
}

static int s3_put_if_absent(struct backend *b, const char *key,
			    const struct backend_body *body)
{
	return do_put(b, key, body, true);
}

static int s3_get_tagged(struct backend *b, const char *key,
			 struct backend_buf *out, char *tag)
{
	return http_object_get_tagged(b, key, out, tag, false);
}

/* PUT with "If-Match: TAG" (AWS S3 since 2024, moto): 412 when the object
 * changed (-ESTALE), 404 when it is gone. */
static int s3_put_if_match(struct backend *b, const char *key,
			   const struct backend_body *body, const char *tag,
			   char *new_tag)
{
	struct backend_s3 *s = to_s3(b);
	struct backend_buf url = { 0 };
	char cond[BACKEND_TAG_MAX + 16];
	const char *extra[] = { cond, NULL };
	struct http_req req = { .method = "PUT", .body = body,
				.want_header = "ETag" };
	int rc;

	snprintf(cond, sizeof(cond), "If-Match: %s", tag);
	rc = object_url(s, key, &url);
	if (!rc) {
		req.url = url.data;
		rc = s3_request(s, &req, "put_if_match", key, extra);
	}
	if (rc == -EEXIST)
		rc = -ESTALE;	/* 412 Precondition Failed */
	if (!rc && new_tag)
		snprintf(new_tag, BACKEND_TAG_MAX, "%s", req.header);
	backend_buf_release(&url);
	return rc;
}

/* DELETE with "If-Match: TAG" (AWS S3 since 2024, moto). */
static int s3_del_if_match(struct backend *b, const char *key,
			   const char *tag)
{
	struct backend_s3 *s = to_s3(b);
	struct backend_buf url = { 0 };
	char cond[BACKEND_TAG_MAX + 16];
	const char *extra[] = { cond, NULL };
	struct http_req req = { .method = "DELETE" };
	int rc;

	snprintf(cond, sizeof(cond), "If-Match: %s", tag);
	rc = object_url(s, key, &url);
	if (!rc) {
		req.url = url.data;
		rc = s3_request(s, &req, "del_if_match", key, extra);
	}
	if (rc == -EEXIST)
		rc = -ESTALE;
	backend_buf_release(&url);
	return rc;
}

static int s3_url(struct backend *b, const char *key, struct backend_buf *url)
{
	return object_url(to_s3(b), key, url);
}

static int s3_send(struct backend *b, struct http_req *req, const char *op,
		   const char *key, const char *const *extra)
{
	return s3_request(to_s3(b), req, op, key, extra);
}

static const struct http_object_ops s3_ops = {
	.url = s3_url,
	.request = s3_send,
};

/* Parses one ListObjectsV2 page: calls FN for each key, fills *next with
 * the continuation token (caller frees) or NULL on the last page. */
static int parse_page(struct backend_s3 *s, const struct backend_buf *page,
		      backend_list_fn fn, void *arg, char **next)
{
	xmlDoc *doc;
	xmlNode *root;
	bool truncated = false;
	size_t plen = strlen(s->prefix);
	int rc = 0;

	*next = NULL;
	doc = xmlReadMemory(page->data, (int)page->len, NULL, NULL,
			    XML_PARSE_NONET | XML_PARSE_NOBLANKS |
			    XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		remote_log(LOG_WARNING, "s3 list: response is not XML");
		return -EIO;
	}
	root = xmlDocGetRootElement(doc);
	if (!root || !http_xml_named(root, "ListBucketResult")) {
		rc = -EIO;
		goto out;
	}
	for (xmlNode *n = root->children; n && !rc; n = n->next) {
		if (http_xml_named(n, "IsTruncated")) {
			truncated = !strcmp(http_xml_text(n), "true");
		} else if (http_xml_named(n, "NextContinuationToken")) {
			free(*next);
			*next = strdup(http_xml_text(n));
			if (!*next)
				rc = -ENOMEM;
		} else if (http_xml_named(n, "Contents")) {
			const char *key = NULL;
			uint64_t size = 0;

			for (xmlNode *c = n->children; c; c = c->next) {
				if (http_xml_named(c, "Key"))
					key = http_xml_text(c);
				else if (http_xml_named(c, "Size"))
					size = strtoull(http_xml_text(c), NULL, 10);
			}
			if (!key || strncmp(key, s->prefix, plen))
				continue;
			rc = fn(arg, &(struct backend_entry){
					     .key = key + plen, .size = size });
		}
	}
	if (!rc && truncated && (!*next || !**next)) {
		remote_log(LOG_WARNING, "s3 list: truncated page without a continuation token");
		rc = -EIO;
	}
out:
	if (rc || !truncated) {
		free(*next);
		*next = NULL;
	}
	xmlFreeDoc(doc);
	return rc;
}

/* Appends "&name=value" (or without '&' first) encoded for the query. */
static int query_param(struct backend_s3 *s, struct backend_buf *url,
		       const char *name, const char *value, bool first)
{
	int rc = backend_buf_append(url, first ? "?" : "&", 1);

	if (!rc)
		rc = backend_buf_append(url, name, strlen(name));
	if (!rc)
		rc = backend_buf_append(url, "=", 1);
	if (!rc)
		rc = backend_buf_urlencode(url, value, s->query_slash_raw);
	return rc;
}

static int s3_list(struct backend *b, const char *prefix, backend_list_fn fn,
		   void *arg)
{
	struct backend_s3 *s = to_s3(b);
	char *token = NULL, *full = NULL, maxkeys[16];
	int rc = 0;

	if (asprintf(&full, "%s%s", s->prefix, prefix ? prefix : "") < 0)
		return -ENOMEM;
	snprintf(maxkeys, sizeof(maxkeys), "%u", s->list_page);
	do {
		struct backend_buf url = { 0 }, page = { .max = 16 << 20 };
		struct http_req req = { .method = "GET", .resp = &page };
		char *next = NULL;

		/* Parameters in the sorted order the signature wants. */
		rc = backend_buf_append(&url, s->base_url, strlen(s->base_url));
		if (!rc && token)
			rc = query_param(s, &url, "continuation-token", token, true);
		if (!rc)
			rc = query_param(s, &url, "list-type", "2", !token);
		if (!rc && s->list_page)
			rc = query_param(s, &url, "max-keys", maxkeys, false);
		if (!rc && *full)
			rc = query_param(s, &url, "prefix", full, false);
		if (!rc) {
			req.url = url.data;
			rc = s3_request(s, &req, "list", prefix ? prefix : "",
					NULL);
		}
		if (!rc)
			rc = backend_buf_terminate(&page);
		if (!rc)
			rc = parse_page(s, &page, fn, arg, &next);
		backend_buf_release(&url);
		backend_buf_release(&page);
		free(token);
		token = next;
	} while (!rc && token);
	free(token);
	free(full);
	return rc;
}

const struct backend_ops backend_s3_ops = {
	.name = "s3",
	.caps = BACKEND_CAP_ATOMIC_CREATE | BACKEND_CAP_RANGE |
		BACKEND_CAP_SHA256 | BACKEND_CAP_CAS,
	.open = s3_open,
	.close = s3_close,
	.put = s3_put,
	.get = http_object_get,
	.del = http_object_del,
	.head = http_object_head,
	.list = s3_list,
	.put_if_absent = s3_put_if_absent,
	.get_tagged = s3_get_tagged,
	.put_if_match = s3_put_if_match,
	.del_if_match = s3_del_if_match,
};
