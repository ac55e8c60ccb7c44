/*
 * remote_int.h: declarations private to remote/, the backends and the
 * HTTP helper.  remote/ includes nothing of ours but its own headers; other
 * folders include backend.h only.
 */
#ifndef STREAMFS_REMOTE_INT_H
#define STREAMFS_REMOTE_INT_H

#include <curl/curl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"

#define REMOTE_PRINTF(a, b) __attribute__((format(printf, a, b)))


/* ---- growable arrays ---- */

/* The capacity an array of SIZE-byte elements grows to so that it holds
 * WANT: ALLOC when it does already, else ALLOC (MIN when 0) doubled until
 * it does; 0 when that many bytes would overflow size_t. */
static inline size_t remote_grow_alloc(size_t alloc, size_t want, size_t min,
				       size_t size)
{
	size_t n = alloc ? alloc : min;

	if (want <= alloc)
		return alloc;
	while (n < want) {
		if (n > SIZE_MAX / 2)
			return 0;
		n *= 2;
	}
	return n > SIZE_MAX / size ? 0 : n;
}

/* Makes room for WANT (>= 1) elements in the array V of capacity ALLOC,
 * doubling from MIN: 0, or -ENOMEM with V and ALLOC unchanged.  V and
 * ALLOC are lvalues, evaluated more than once; V may be NULL while ALLOC
 * is 0.  The one way remote/ grows an array. */
#define REMOTE_GROW(v, alloc, want, min)				\
	__extension__ ({						\
		size_t grow_n_ = remote_grow_alloc((alloc), (want), (min), \
						   sizeof(*(v)));	\
		__typeof__(v) grow_p_ = grow_n_ == (alloc) ? (v) :	\
			grow_n_ ? realloc((v), grow_n_ * sizeof(*(v))) : NULL; \
		if (grow_p_) {						\
			(v) = grow_p_;					\
			(alloc) = grow_n_;				\
		}							\
		grow_p_ ? 0 : -ENOMEM;					\
	})

/* ---- buffers ---- */

/* How many of N more bytes fit before B's sink wants them: N without one. */
size_t backend_buf_room(const struct backend_buf *b, size_t n);
/* Passes B's bytes on to its sink once they make a whole chunk. */
int backend_buf_pass(struct backend_buf *b);

/* ---- errors (http.c) ---- */

/* Maps a curl code to -errno and logs it with WHAT (method and key). */
int http_errno_from_curl(CURLcode cc, const char *what);
/* Maps an HTTP status (>= 300) to -errno and logs it with WHAT. */
int http_errno_from_status(long status, const char *what);

/* ---- keys and URLs ---- */

/* Appends KEY to OUT percent-encoded as AWS wants in paths and query
 * values: unreserved bytes kept, '/' kept when KEEP_SLASH, the rest %XX. */
int backend_buf_urlencode(struct backend_buf *out, const char *key,
			  bool keep_slash);
/* Decodes %XX in place; -EINVAL on a bad escape. */
int remote_urldecode(char *s);

/* ---- curl requests ---- */

struct http_req {
	const char *method;		/* "GET", "PUT", ... */
	const char *url;
	struct curl_slist *headers;	/* borrowed; http_request() sets it */
	const struct backend_body *body; /* request body or NULL */
	struct backend_buf *resp;	/* response body, or NULL to discard */
	uint64_t skip;			/* drop this many response bytes first */
	long sink_status;		/* the only answer whose body may go
					 * to resp's sink (0: none may) */
	bool nobody;			/* HEAD */
	const char *want_header;	/* a response header to keep, or NULL */
	/* OUT */
	char header[BACKEND_TAG_MAX];	/* want_header's value, "" if none */
	CURLcode curl;			/* a transfer that failed, or CURLE_OK */
	long status;
	curl_off_t content_length;	/* -1 if unknown */
	int64_t mtime;			/* Last-Modified, 0 if none */
};

/* Common settings of a backend's CURL handle, owned by the backend (one
 * thread at a time, no lock); only *abort is shared, atomically. */
struct http_conf {
	long connect_timeout_ms;
	long low_speed_time_s;
	long timeout_ms;
	const struct backend_abort *abort; /* borrowed, or NULL */
	char *ca_file;
	char *userpwd_user;		/* s3: key id; http: basic auth */
	char *userpwd_pass;
	char *sigv4;			/* "aws:amz:REGION:s3" or NULL */
	/* Logs what the body of an error answer says (s3: its <Code>), or
	 * NULL.  BODY may be NULL (a HEAD). */
	void (*explain)(const char *what, long status,
			const struct backend_buf *body);
};

/* What the object verbs below need of a backend that speaks HTTP (S3,
 * WebDAV): the URL of a key, and one request, its statuses >= 300 (but
 * 416) turned into -errno. */
struct http_object_ops {
	int (*url)(struct backend *b, const char *key, struct backend_buf *url);
	int (*request)(struct backend *b, struct http_req *req, const char *op,
		       const char *key, const char *const *extra);
};

/* The start of a backend that speaks HTTP (s3, http): its CURL handle
 * and settings, and what lets the object verbs below serve as its get,
 * del and head in struct backend_ops. */
struct http_backend {
	struct backend base;
	const struct http_object_ops *obj;
	CURL *curl;
	struct http_conf conf;
};
/* Sets HB's ops and OBJ, a CURL handle, and the settings of O: 0 or
 * -ENOMEM.  http_backend_release() frees what it made, even on failure. */
int http_backend_init(struct http_backend *hb, const struct backend_ops *ops,
		      const struct http_object_ops *obj,
		      const struct backend_options *o);
/* Frees HB's handle and settings (not HB itself). */
void http_backend_release(struct http_backend *hb);

/* Runs one request on H with C's settings.  Returns 0 when a response came
 * (any status, in REQ->status) or -errno from http_errno_from_curl(). */
int http_perform(CURL *h, const struct http_conf *c, struct http_req *req,
		 const char *what);
/* The request scaffolding of the s3 and http backends: sends REQ with
 * HB's handle and settings, and the header lines LINES (the backend's)
 * and then EXTRA (the caller's; both NULL-ended, or NULL).  An error
 * answer's body is kept for conf.explain (up to 64 KiB) when REQ has no
 * resp.  Statuses >= 300 but 416 become -errno (http_errno_from_status());
 * otherwise as http_perform(). */
int http_request(struct http_backend *hb, struct http_req *req,
		 const char *const *lines, const char *const *extra,
		 const char *what);

/* Ranged GETs (s3 and http): the "Range:" header line for OFF and LEN
 * into BUF, or "" when the whole object is wanted (OFF 0, TO_END). */
void http_range_header(char *buf, size_t n, uint64_t off, uint64_t len);
/* Settles the answer to a GET that appended to OUT from START: 416 (OFF
 * at or past the end) gives nothing; a 200 to a ranged request (the
 * server ignored Range) keeps only the asked-for bytes; more bytes than
 * asked is -EIO.  Then NUL-terminates OUT.  0 or -errno (OUT back at
 * START). */
int http_range_finish(struct backend_buf *out, size_t start, long status,
		      uint64_t off, uint64_t len);

/* The object verbs of an HTTP backend B (a struct http_backend). */
int http_object_get(struct backend *b, const char *key, uint64_t off,
		    uint64_t len, struct backend_buf *out);
int http_object_del(struct backend *b, const char *key);
/* get_tagged() with the object's ETag as its tag (s3).  With CONTENT_TAG,
 * the tag is a hash of the bytes instead (WebDAV servers' ETags, like
 * nginx's mtime-size, do not tell two writes within a second apart). */
int http_object_get_tagged(struct backend *b, const char *key,
			   struct backend_buf *out, char *tag, bool content_tag);
/* The content tag of BUF (LEN bytes): "sha256:" and 32 hex digits. */
int http_content_tag(const void *buf, size_t len, char *tag);
int http_object_head(struct backend *b, const char *key,
		     struct backend_stat *st);

/* libxml2 helpers for listing answers (ListObjectsV2, PROPFIND). */
struct _xmlNode;
/* Whether N is an element called NAME (local name, no namespace). */
bool http_xml_named(const struct _xmlNode *n, const char *name);
/* N's first text or CDATA child, "" when none (or N is NULL). */
const char *http_xml_text(const struct _xmlNode *n);

/* ---- backends ---- */

extern const struct backend_ops backend_file_ops;
extern const struct backend_ops backend_s3_ops;
extern const struct backend_ops backend_http_ops;

/* The objects of a listing gathered before they are sorted (the file and
 * http backends walk directories, which come in no order). */
struct remote_entries {
	struct backend_entry *v;	/* keys owned */
	size_t n, alloc;
};
/* Appends a copy of KEY: 0 or -ENOMEM. */
int remote_entries_add(struct remote_entries *ev, const char *key,
		       uint64_t size);
/* Sorts EV by key and calls FN for each, stopping at its first non-zero
 * answer, which it returns. */
int remote_entries_emit(struct remote_entries *ev, backend_list_fn fn,
			void *arg);
/* Frees the keys and the array (not EV itself). */
void remote_entries_release(struct remote_entries *ev);

/* A credentials file opened for reading once backend_credentials_open()
 * accepted it; NULL with *ERR (OUT) = -errno.  The caller fcloses it. */
FILE *remote_credentials_fopen(const char *file, int *err);

#endif
