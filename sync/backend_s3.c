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
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "store_sync.h"
#include "sync_int.h"

#define SHA256_EMPTY \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct backend_s3 {
	struct backend base;
	CURL *curl;
	struct http_conf conf;
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
	if (s->curl)
		curl_easy_cleanup(s->curl);
	http_conf_release(&s->conf);
	if (s->token_header)
		explicit_bzero(s->token_header, strlen(s->token_header));
	free(s->token_header);
	free(s->base_url);
	free(s->prefix);
	free(s);
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

static int s3_open(const char *url, const struct backend_options *o,
		   struct backend **out)
{
	const char *bucket = url + strlen("s3://"), *slash;
	struct backend_s3 *s;
	struct s3_creds cr;
	size_t blen;
	int rc;

	slash = strchr(bucket, '/');
	blen = slash ? (size_t)(slash - bucket) : strlen(bucket);
	if (!bucket_valid(bucket, blen)) {
		sync_log("s3: bad bucket name in URL");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base.ops = &backend_s3_ops;
	s->list_page = o->list_page;
	s->query_slash_raw = o->query_slash_raw;

	/* Prefix: the URL's path without surrounding slashes, plus '/'. */
	{
		const char *p = slash ? slash + 1 : "";
		size_t n = strlen(p);

		while (n && p[n - 1] == '/')
			n--;
		if (asprintf(&s->prefix, "%.*s%s", (int)n, p, n ? "/" : "") < 0) {
			s->prefix = NULL;
			rc = -ENOMEM;
			goto fail;
		}
		if (n) {
			s->prefix[n] = '\0';
			if (!backend_key_valid(s->prefix)) {
				sync_log("s3: bad prefix in URL");
				rc = -EINVAL;
				goto fail;
			}
			s->prefix[n] = '/';
		}
	}

	if (o->endpoint) {
		const char *host = strstr(o->endpoint, "://");
		size_t el = strlen(o->endpoint);

		if (!host || (strncmp(o->endpoint, "http://", 7) &&
			      strncmp(o->endpoint, "https://", 8))) {
			sync_log("s3: endpoint must start with http:// or https://");
			rc = -EINVAL;
			goto fail;
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
		rc = -ENOMEM;
		goto fail;
	}

	rc = http_conf_init(&s->conf, o);
	if (rc)
		goto fail;
	if (strpbrk(o->region, ":\r\n/") || !*o->region) {
		rc = -EINVAL;
		goto fail;
	}
	if (asprintf(&s->conf.sigv4, "aws:amz:%s:s3", o->region) < 0) {
		s->conf.sigv4 = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	rc = s3_creds_load(o->credentials_file, &cr);
	if (rc)
		goto fail;
	s->conf.userpwd_user = cr.key_id;
	s->conf.userpwd_pass = cr.secret;
	if (cr.token && asprintf(&s->token_header, "x-amz-security-token: %s",
				 cr.token) < 0) {
		s->token_header = NULL;
		rc = -ENOMEM;
	}
	if (cr.token) {
		explicit_bzero(cr.token, strlen(cr.token));
		free(cr.token);
	}
	if (rc)
		goto fail;
	s->curl = curl_easy_init();
	if (!s->curl) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = &s->base;
	return 0;
fail:
	s3_close(&s->base);
	return rc;
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

/* Sends one request.  EXTRA are additional header lines (NULL-ended). */
static int s3_request(struct backend_s3 *s, struct http_req *req,
		      const char *op, const char *key, const char *const *extra)
{
	struct curl_slist *h = NULL, *t;
	struct backend_buf errbuf = { .max = 64 << 10 };
	char hash[65] = SHA256_EMPTY, hdr[128], what[256];
	bool own_resp = false;
	int rc = 0;

	snprintf(what, sizeof(what), "s3 %s %s%s", op, s->prefix, key);
	if (req->body && req->body->sha256)
		rc = known_sha256(req->body->sha256, hash);
	else if (req->body)
		rc = body_sha256(req->body, hash);
	if (rc)
		return rc;
	snprintf(hdr, sizeof(hdr), "x-amz-content-sha256: %s", hash);
	t = curl_slist_append(h, hdr);
	if (t)
		h = t;
	if (t && req->body)
		t = h = curl_slist_append(h, "Content-Type: application/octet-stream");
	/* No "Expect:" to turn off 100-continue: libcurl 7.88 would sign the
	 * empty header it never sends. */
	if (t && s->token_header)
		t = h = curl_slist_append(h, s->token_header);
	for (; t && extra && *extra; extra++)
		t = h = curl_slist_append(h, *extra);
	if (!t) {
		curl_slist_free_all(h);
		return -ENOMEM;
	}
	req->headers = h;
	if (!req->resp && !req->nobody) {
		req->resp = &errbuf;
		own_resp = true;
	}
	rc = http_perform(s->curl, &s->conf, req, what);
	if (!rc && req->status >= 300 && req->status != 416) {
		char code[64];

		error_code(req->resp, code, sizeof(code));
		if (req->status != 404 && req->status != 412)
			sync_log("%s: S3 answered %s", what, code);
		rc = sync_errno_from_http(req->status, what);
	}
	if (own_resp) {
		backend_buf_release(&errbuf);
		req->resp = NULL;
	}
	curl_slist_free_all(h);
	return rc;
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

static int s3_get(struct backend *b, const char *key, uint64_t off,
		  uint64_t len, struct backend_buf *out)
{
	return http_object_get(b, &s3_ops, key, off, len, out);
}

static int s3_del(struct backend *b, const char *key)
{
	return http_object_del(b, &s3_ops, key);
}

static int s3_head(struct backend *b, const char *key, struct backend_stat *st)
{
	return http_object_head(b, &s3_ops, key, st);
}

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
		sync_log("s3 list: response is not XML");
		return -EIO;
	}
	root = xmlDocGetRootElement(doc);
	if (!root || !xml_named(root, "ListBucketResult")) {
		rc = -EIO;
		goto out;
	}
	for (xmlNode *n = root->children; n && !rc; n = n->next) {
		if (xml_named(n, "IsTruncated")) {
			truncated = !strcmp(xml_text(n), "true");
		} else if (xml_named(n, "NextContinuationToken")) {
			free(*next);
			*next = strdup(xml_text(n));
			if (!*next)
				rc = -ENOMEM;
		} else if (xml_named(n, "Contents")) {
			const char *key = NULL;
			uint64_t size = 0;

			for (xmlNode *c = n->children; c; c = c->next) {
				if (xml_named(c, "Key"))
					key = xml_text(c);
				else if (xml_named(c, "Size"))
					size = strtoull(xml_text(c), NULL, 10);
			}
			if (!key || strncmp(key, s->prefix, plen))
				continue;
			rc = fn(arg, &(struct backend_entry){
					     .key = key + plen, .size = size });
		}
	}
	if (!rc && truncated && (!*next || !**next)) {
		sync_log("s3 list: truncated page without a continuation token");
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
		BACKEND_CAP_SHA256,
	.open = s3_open,
	.close = s3_close,
	.put = s3_put,
	.get = s3_get,
	.del = s3_del,
	.head = s3_head,
	.list = s3_list,
	.put_if_absent = s3_put_if_absent,
};
