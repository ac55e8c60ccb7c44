/*
 * http.c: one libcurl request, shared by the s3 and http backends, and the
 * mapping of curl codes and HTTP statuses to -errno.
 *
 * The handle is reset before each request (connections stay cached), so
 * no option leaks from one request to the next.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libxml/tree.h>

#include "remote_int.h"

struct upload {
	const struct backend_body *body;
	uint64_t pos;
	int err;
};

struct download {
	CURL *h;
	struct backend_buf *out;
	uint64_t skip;
	long sink_status;
	int err;
	bool answered;		/* the first bytes of the body came */
};

static size_t read_cb(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct upload *u = arg;
	uint64_t left = u->body->len - u->pos;
	size_t n = size * nmemb;
	ssize_t got;

	if (n > left)
		n = (size_t)left;
	if (n == 0)
		return 0;
	if (u->body->buf) {
		memcpy(dst, (const char *)u->body->buf + u->pos, n);
		got = (ssize_t)n;
	} else {
		got = pread(u->body->fd, dst, n, (off_t)u->pos);
		if (got <= 0) {
			u->err = got < 0 ? -errno : -EIO; /* file shrank */
			return CURL_READFUNC_ABORT;
		}
	}
	u->pos += (uint64_t)got;
	return (size_t)got;
}

static int seek_cb(void *arg, curl_off_t off, int origin)
{
	struct upload *u = arg;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > u->body->len)
		return CURL_SEEKFUNC_CANTSEEK;
	u->pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

static size_t write_cb(char *src, size_t size, size_t nmemb, void *arg)
{
	struct download *d = arg;
	size_t n = size * nmemb, skip;
	int rc;

	if (!d->out)
		return n;
	if (!d->answered) {
		long status = 0;

		/* Only the bytes asked for go to a sink: not an error, not a
		 * whole object sent for a range. */
		curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &status);
		if (status != d->sink_status)
			d->out->sink = NULL;
		d->answered = true;
	}
	skip = d->skip < n ? (size_t)d->skip : n;
	d->skip -= skip;
	rc = backend_buf_append(d->out, src + skip, n - skip);
	if (rc) {
		d->err = rc;
		return 0;
	}
	return n;
}

/* Takes O's timeouts, abort and CA file (copied) into C: 0 or -ENOMEM. */
static int conf_init(struct http_conf *c, const struct backend_options *o)
{
	*c = (struct http_conf){
		.connect_timeout_ms = o->connect_timeout_ms,
		.low_speed_time_s = o->low_speed_time_s,
		.timeout_ms = o->timeout_ms,
		.abort = o->abort,
	};
	if (o->ca_file && !(c->ca_file = strdup(o->ca_file)))
		return -ENOMEM;
	return 0;
}

static void conf_release(struct http_conf *c)
{
	if (c->userpwd_pass)
		explicit_bzero(c->userpwd_pass, strlen(c->userpwd_pass));
	free(c->ca_file);
	free(c->userpwd_user);
	free(c->userpwd_pass);
	free(c->sigv4);
	*c = (struct http_conf){ 0 };
}

int http_backend_init(struct http_backend *hb, const struct backend_ops *ops,
		      const struct http_object_ops *obj,
		      const struct backend_options *o)
{
	hb->base.ops = ops;
	hb->obj = obj;
	hb->curl = curl_easy_init();
	if (!hb->curl)
		return -ENOMEM;
	return conf_init(&hb->conf, o);
}

void http_backend_release(struct http_backend *hb)
{
	if (hb->curl)
		curl_easy_cleanup(hb->curl);
	hb->curl = NULL;
	conf_release(&hb->conf);
}

/* -ECANCELED when A says stop now, -ETIMEDOUT once its deadline passed
 * (a timeout like any other: the caller asks again later), else 0. */
static int abort_errno(const struct backend_abort *a)
{
	struct timespec ts;
	int64_t dl;

	if (!a)
		return 0;
	if (atomic_load(&a->now))
		return -ECANCELED;
	dl = atomic_load(&a->deadline_ns);
	if (!dl)
		return 0;
	/* Not sync_clock(): remote/ depends on nothing of ours. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec < dl)
		return 0;
	return -ETIMEDOUT;
}

static bool aborted(const struct backend_abort *a)
{
	return abort_errno(a) != 0;
}

/* CURLOPT_XFERINFOFUNCTION: called at least once a second while a
 * transfer runs; non-zero ends it with CURLE_ABORTED_BY_CALLBACK. */
static int xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return aborted(arg) ? 1 : 0;
}

/* What every request on H gets from C: URL, timeouts, TLS, auth. */
static void set_conf_options(CURL *h, const struct http_conf *c,
			     const char *url)
{
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	if (c->low_speed_time_s > 0) {
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_time_s);
	}
	if (c->timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	if (c->sigv4) {
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, c->userpwd_user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, c->userpwd_pass);
	} else if (c->userpwd_user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, c->userpwd_user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, c->userpwd_pass);
	}
	if (c->abort) {
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c->abort);
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	}
}

/* What REQ asks of H: method, headers, the body UP reads from, the
 * answer DOWN writes to. */
static void set_req_options(CURL *h, const struct http_req *req,
			    struct upload *up, struct download *down)
{
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
	/* bigger reads from the socket: a 16 MiB GET's body measured 10 ms
	 * instead of 15 with the default 16 KiB */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L << 10);
	if (req->body) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)req->body->len);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(h, CURLOPT_READDATA, up);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, seek_cb);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, up);
	}
	if (req->nobody)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD") &&
	    !(req->body && !strcmp(req->method, "PUT")))
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, down);
}

int http_perform(CURL *h, const struct http_conf *c, struct http_req *req,
		 const char *what)
{
	struct upload up = { .body = req->body };
	struct download down = { .h = h, .out = req->resp, .skip = req->skip,
				 .sink_status = req->sink_status };
	curl_off_t cl = -1;
	long filetime = -1;
	CURLcode cc;

	if (aborted(c->abort))
		return abort_errno(c->abort);
	curl_easy_reset(h);
	set_conf_options(h, c, req->url);
	set_req_options(h, req, &up, &down);
	cc = curl_easy_perform(h);
	if (cc == CURLE_ABORTED_BY_CALLBACK && up.err)
		return up.err;
	if (cc == CURLE_ABORTED_BY_CALLBACK && aborted(c->abort))
		return abort_errno(c->abort);	/* not worth a log line */
	if (cc == CURLE_WRITE_ERROR && down.err)
		return down.err;
	req->curl = cc;
	if (cc != CURLE_OK)
		return http_errno_from_curl(cc, what);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &req->status);
	curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	curl_easy_getinfo(h, CURLINFO_FILETIME, &filetime);
	req->content_length = cl;
	req->mtime = filetime > 0 ? filetime : 0;
	req->header[0] = '\0';
	if (req->want_header) {
		struct curl_header *hdr;

		if (curl_easy_header(h, req->want_header, 0, CURLH_HEADER, -1,
				     &hdr) == CURLHE_OK)
			snprintf(req->header, sizeof(req->header), "%s",
				 hdr->value);
	}
	return 0;
}

/* Appends LINES and then EXTRA (both NULL-ended, or NULL) to *HL. */
static int header_list(const char *const *lines, const char *const *extra,
		       struct curl_slist **hl)
{
	const char *const *sets[] = { lines, extra };

	*hl = NULL;
	for (size_t i = 0; i < 2; i++) {
		for (const char *const *l = sets[i]; l && *l; l++) {
			struct curl_slist *t = curl_slist_append(*hl, *l);

			if (!t) {
				curl_slist_free_all(*hl);
				*hl = NULL;
				return -ENOMEM;
			}
			*hl = t;
		}
	}
	return 0;
}

int http_request(struct http_backend *hb, struct http_req *req,
		 const char *const *lines, const char *const *extra,
		 const char *what)
{
	const struct http_conf *c = &hb->conf;
	struct backend_buf errbuf = { .max = 64 << 10 };
	bool own_resp = !req->resp && !req->nobody;
	struct curl_slist *hl;
	int rc;

	rc = header_list(lines, extra, &hl);
	if (rc)
		return rc;
	req->headers = hl;
	if (own_resp)
		req->resp = &errbuf;	/* for C->explain */
	hb->base.why[0] = '\0';
	rc = http_perform(hb->curl, c, req, what);
	if (!rc && req->status >= 300 && req->status != 416) {
		if (c->explain)
			c->explain(what, req->status, req->resp);
		rc = http_errno_from_status(req->status, what);
		snprintf(hb->base.why, sizeof(hb->base.why),
			 "HTTP status %ld", req->status);
	} else if (rc && req->curl != CURLE_OK) {
		snprintf(hb->base.why, sizeof(hb->base.why), "curl: %s",
			 curl_easy_strerror(req->curl));
	}
	if (own_resp) {
		backend_buf_release(&errbuf);
		req->resp = NULL;
	}
	req->headers = NULL;
	curl_slist_free_all(hl);
	return rc;
}

void http_range_header(char *buf, size_t n, uint64_t off, uint64_t len)
{
	if (len != BACKEND_TO_END)
		snprintf(buf, n, "Range: bytes=%llu-%llu",
			 (unsigned long long)off,
			 (unsigned long long)(off + len - 1));
	else if (off)
		snprintf(buf, n, "Range: bytes=%llu-", (unsigned long long)off);
	else
		buf[0] = '\0';
}

int http_range_finish(struct backend_buf *out, size_t start, long status,
		      uint64_t off, uint64_t len)
{
	if (status == 416) {
		out->len = start;	/* OFF at or past the end */
	} else if (status == 200 && (off || len != BACKEND_TO_END)) {
		/* The server ignored Range: keep only the asked-for bytes. */
		size_t got = out->len - start;

		if (off >= got) {
			out->len = start;
		} else {
			memmove(out->data + start, out->data + start + off,
				got - (size_t)off);
			out->len = start + got - (size_t)off;
			if (len != BACKEND_TO_END && out->len - start > len)
				out->len = start + (size_t)len;
		}
	} else if (len != BACKEND_TO_END && out->len - start > len) {
		out->len = start;	/* more than asked: not what we asked */
		return -EIO;
	}
	return backend_buf_terminate(out);
}

/* ---- errors ---- */

int http_errno_from_curl(CURLcode cc, const char *what)
{
	int rc;

	switch (cc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		rc = -ETIMEDOUT;
		break;
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_AGAIN:
		rc = -EAGAIN;
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_LOGIN_DENIED:
		rc = -EACCES;
		break;
	case CURLE_OUT_OF_MEMORY:
		rc = -ENOMEM;
		break;
	case CURLE_URL_MALFORMAT:
		rc = -EINVAL;
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
		rc = -EPROTONOSUPPORT;
		break;
	case CURLE_ABORTED_BY_CALLBACK:
		rc = -ECANCELED;
		break;
	default:
		rc = -EIO;
		break;
	}
	remote_log(LOG_WARNING, "%s: curl code %d (%s) -> %s", what, (int)cc,
		   curl_easy_strerror(cc), strerror(-rc));
	return rc;
}

int http_errno_from_status(long status, const char *what)
{
	int rc;

	switch (status) {
	case 400:
		rc = -EINVAL;
		break;
	case 401:
	case 403:
		rc = -EACCES;
		break;
	case 404:
	case 410:
		rc = -ENOENT;
		break;
	case 412:
		rc = -EEXIST;
		break;
	case 413:
		rc = -EFBIG;
		break;
	case 405:
	case 501:
		rc = -EOPNOTSUPP;
		break;
	case 507:
		rc = -ENOSPC;
		break;
	case 408:
	case 409:	/* S3 OperationAborted: a conflicting operation ran */
	case 423:
	case 429:
		rc = -EAGAIN;
		break;
	default:
		rc = status >= 500 ? -EAGAIN : -EIO;
		break;
	}
	/* Not-found and lost races are ordinary answers, not worth a line. */
	if (rc != -ENOENT && rc != -EEXIST)
		remote_log(LOG_WARNING, "%s: HTTP status %ld -> %s", what, status,
			   strerror(-rc));
	return rc;
}

/* ---- object verbs shared by the HTTP backends ---- */

/* Sends REQ, its method set, for KEY at the URL B gives it. */
static int object_request(struct backend *b, const char *key,
			  struct http_req *req, const char *op,
			  const char *const *extra)
{
	const struct http_object_ops *o = ((struct http_backend *)b)->obj;
	struct backend_buf url = { 0 };
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = o->url(b, key, &url);
	if (!rc) {
		req->url = url.data;
		rc = o->request(b, req, op, key, extra);
	}
	backend_buf_release(&url);
	return rc;
}

int http_object_get(struct backend *b, const char *key, uint64_t off,
		    uint64_t len, struct backend_buf *out)
{
	struct http_req req = { .method = "GET", .resp = out };
	char range[80];
	const char *extra[] = { range, NULL };
	size_t start = out->len;
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	if (len == 0)
		return backend_buf_terminate(out);
	http_range_header(range, sizeof(range), off, len);
	if (!range[0])
		extra[0] = NULL;
	req.sink_status = range[0] ? 206 : 200;
	rc = object_request(b, key, &req, "get", extra);
	if (rc) {
		out->len = start;
		return rc;
	}
	return http_range_finish(out, start, req.status, off, len);
}

int http_content_tag(const void *buf, size_t len, char *tag)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL))
		return -ENOMEM;
	n = strlen("sha256:");
	memcpy(tag, "sha256:", n);
	for (unsigned i = 0; i < 16; i++)
		snprintf(tag + n + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int http_object_get_tagged(struct backend *b, const char *key,
			   struct backend_buf *out, char *tag, bool content_tag)
{
	struct http_req req = { .method = "GET", .resp = out,
				.want_header = content_tag ? NULL : "ETag" };
	size_t start = out->len;
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = object_request(b, key, &req, "get", NULL);
	if (!rc)
		rc = http_range_finish(out, start, req.status, 0,
				       BACKEND_TO_END);
	if (!rc && content_tag)
		rc = http_content_tag(out->data + start, out->len - start, tag);
	else if (!rc && !req.header[0])
		rc = -EIO;	/* an S3 server always sends one */
	else if (!rc)
		snprintf(tag, BACKEND_TAG_MAX, "%s", req.header);
	if (rc)
		out->len = start;
	return rc;
}

int http_object_del(struct backend *b, const char *key)
{
	struct http_req req = { .method = "DELETE" };
	int rc = object_request(b, key, &req, "del", NULL);

	return rc == -ENOENT ? 0 : rc;	/* gone already */
}

int http_object_head(struct backend *b, const char *key,
		     struct backend_stat *st)
{
	struct http_req req = { .method = "HEAD", .nobody = true };
	int rc = object_request(b, key, &req, "head", NULL);

	if (!rc && req.status == 416)
		rc = -EIO;	/* no range was asked for */
	if (!rc)
		*st = (struct backend_stat){
			.size = req.content_length < 0 ? 0 :
				(uint64_t)req.content_length,
			.mtime = req.mtime,
		};
	return rc;
}

bool http_xml_named(const struct _xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE &&
	       !strcmp((const char *)n->name, name);
}

const char *http_xml_text(const struct _xmlNode *n)
{
	for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
			return (const char *)c->content;
	return "";
}
