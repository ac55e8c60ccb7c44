/*
 * sync_int.h: declarations private to sync/.
 */
#ifndef STREAMFS_SYNC_INT_H
#define STREAMFS_SYNC_INT_H

#include <curl/curl.h>
#include <stdarg.h>

#include "backend.h"

#define SYNC_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Logging to stderr, prefixed "streamfs: sync: ".  Never pass secrets. */
void sync_log(const char *fmt, ...) SYNC_PRINTF(1, 2);

/* ---- buffers ---- */

/* Makes room for N more bytes: -EFBIG past the cap, -ENOMEM. */
int backend_buf_reserve(struct backend_buf *b, size_t n);
int backend_buf_append(struct backend_buf *b, const void *p, size_t n);
/* Appends a NUL without counting it in len. */
int backend_buf_terminate(struct backend_buf *b);

/* ---- errors ---- */

/* Maps a curl code to -errno and logs it with WHAT (method and key). */
int sync_errno_from_curl(CURLcode cc, const char *what);
/* Maps an HTTP status (>= 300) to -errno and logs it with WHAT. */
int sync_errno_from_http(long status, const char *what);

/* ---- keys and URLs ---- */

/* Appends KEY to OUT percent-encoded as AWS wants in paths and query
 * values: unreserved bytes kept, '/' kept when KEEP_SLASH, the rest %XX. */
int backend_buf_urlencode(struct backend_buf *out, const char *key,
			  bool keep_slash);
/* Decodes %XX in place; -EINVAL on a bad escape. */
int sync_urldecode(char *s);

/* ---- curl requests ---- */

struct http_req {
	const char *method;		/* "GET", "PUT", ... */
	const char *url;
	struct curl_slist *headers;	/* borrowed */
	const struct backend_body *body; /* request body or NULL */
	struct backend_buf *resp;	/* response body, or NULL to discard */
	uint64_t skip;			/* drop this many response bytes first */
	bool nobody;			/* HEAD */
	/* OUT */
	long status;
	curl_off_t content_length;	/* -1 if unknown */
	int64_t mtime;			/* Last-Modified, 0 if none */
};

/* Common settings of a backend's CURL handle. */
struct http_conf {
	long connect_timeout_ms;
	long low_speed_time_s;
	long timeout_ms;
	char *ca_file;
	char *userpwd_user;		/* s3 only */
	char *userpwd_pass;
	char *sigv4;			/* "aws:amz:REGION:s3" or NULL */
};

/* Runs one request on H with C's settings.  Returns 0 when a response came
 * (any status, in REQ->status) or -errno from sync_errno_from_curl(). */
int http_perform(CURL *h, const struct http_conf *c, struct http_req *req,
		 const char *what);
void http_conf_release(struct http_conf *c);
int http_conf_init(struct http_conf *c, const struct backend_options *o);

/* ---- backends ---- */

extern const struct backend_ops backend_file_ops;
extern const struct backend_ops backend_s3_ops;
extern const struct backend_ops backend_http_ops;

/* Sorts ENTRIES by key and calls FN; shared by file and http listings. */
struct entry_vec {
	struct backend_entry *v;
	size_t n, alloc;
};
int entry_vec_add(struct entry_vec *ev, const char *key, uint64_t size);
int entry_vec_emit(struct entry_vec *ev, backend_list_fn fn, void *arg);
void entry_vec_release(struct entry_vec *ev);

/* Credentials of an s3 backend (env or credentials file).  Caller frees. */
struct s3_creds {
	char *key_id;
	char *secret;
	char *token;			/* may be NULL */
};
int s3_creds_load(const char *file, struct s3_creds *out);
void s3_creds_release(struct s3_creds *c);

#endif
