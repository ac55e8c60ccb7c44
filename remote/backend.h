/*
 * backend: object storage behind a small vtable.
 *
 * A backend stores whole objects under keys below the prefix of its URL:
 *   file:///dir[/prefix]         a directory (POSIX I/O, no libcurl)
 *   s3://bucket[/prefix]         S3 Signature V4 through libcurl
 *   http(s)://host[:port]/path   WebDAV-style PUT/GET/DELETE/HEAD/PROPFIND/MOVE
 *
 * What it does: put (atomic: readers see the old object or the new one),
 * ranged get, head, delete, list by key prefix (every page), put_if_absent,
 * and compare-and-swap on an object's version tag (get_tagged,
 * put_if_match, del_if_match: the leases of sync/).  What it does not: retry (callers do, once, in sync/),
 * cache, or encode names: keys are built by sync/ (see docs/FORMAT.md) and
 * must be "safe": 1-1024 bytes of [A-Za-z0-9._~-] and '/' (nothing that
 * needs URL escaping), no empty
 * component and none starting with '.' (so no "." or ".."; backends keep
 * their temporary objects there), no leading or trailing '/'.  Anything
 * else is -EINVAL.
 *
 * Threads: a struct backend holds one CURL handle and is used by one thread
 * at a time; open one per thread.  curl_global_init() must have run.
 *
 * Errors: methods return 0 or -errno.  -EAGAIN and -ETIMEDOUT mean "try
 * again later" (network down, 5xx, throttling, truncated transfer); the rest
 * are final: -ENOENT (no such object), -EEXIST (put_if_absent lost),
 * -ESTALE (put_if_match or del_if_match lost: the tag changed),
 * -EACCES (credentials refused, TLS verification failed), -EINVAL, -EIO.
 * The original curl or HTTP code is logged once where it is mapped.
 * Credentials are never logged.
 */
#ifndef STREAMFS_BACKEND_H
#define STREAMFS_BACKEND_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>	/* LOG_* priorities of remote_log() */

#define BACKEND_WARN_UNUSED __attribute__((warn_unused_result))

/* One log line, prefixed "sync: " (the prefix users and the tests'
 * allow-lists know); sync/ logs through it too.  PRIO is a syslog(3)
 * priority.  Lines go to the sink of remote_log_set_sink(), which gets
 * them without a newline, or to stderr as "streamfs: sync: ...".  The sink
 * is set once, before any thread starts, and may be called from any
 * thread.  Never pass secrets: a URL goes through backend_url_redacted(). */
typedef void (*remote_log_fn)(int prio, const char *msg);
void remote_log_set_sink(remote_log_fn sink);
void remote_log(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define BACKEND_KEY_MAX 1024
/* get(): read from OFF to the end of the object. */
#define BACKEND_TO_END UINT64_MAX

/* Capabilities (struct backend_ops.caps). */
#define BACKEND_CAP_ATOMIC_CREATE (1u << 0) /* put_if_absent is race-free */
#define BACKEND_CAP_RANGE	  (1u << 1) /* get() fetches only the range */
/* put() sends the body's SHA-256 (s3: x-amz-content-sha256): a caller that
 * knows it passes it in backend_body.sha256 and saves a pass over FD. */
#define BACKEND_CAP_SHA256	  (1u << 2)
/* put_if_match and del_if_match are enforced by the server or the
 * filesystem, not only checked before the request (docs/FORMAT.md,
 * "Leases": what each backend does). */
#define BACKEND_CAP_CAS		  (1u << 3)
/* lock and unlock work (WebDAV LOCK), and a put with backend_body.lock
 * is refused once that lock is no longer the holder's.  Whether the server
 * really refuses other writers is for the caller to probe (sync/'s probe
 * does, docs/FORMAT.md "Servers"). */
#define BACKEND_CAP_LOCK	  (1u << 4)

/* An object's version tag (get_tagged()): an S3 ETag, or what the backend
 * derives itself; opaque, compared whole, NUL-terminated. */
#define BACKEND_TAG_MAX 128

/* A request's way out (backend_options.abort).  Shared without a lock:
 * any thread writes the two atomics (sync_stop() sets now), the thread
 * using the backend reads them while a request runs. */
struct backend_abort {
	atomic_bool now;
	_Atomic int64_t deadline_ns;	/* CLOCK_MONOTONIC; 0: none */
};

/* Options of backend_open_url().  Strings are borrowed for the call only. */
struct backend_options {
	const char *endpoint;	/* s3: scheme://host[:port] instead of AWS */
	const char *region;	/* s3: signing region, default us-east-1 */
	bool path_style;	/* s3: endpoint/bucket/key, not bucket.endpoint/key */
	/* s3: an AWS credentials file instead of AWS_* variables; http(s):
	 * one line USER:PASSWORD for basic auth.  Credentials never come
	 * from the URL (refused) or the command line. */
	const char *credentials_file;
	const char *ca_file;	/* extra CA bundle (PEM), for private CAs */
	long connect_timeout_ms; /* default 10 s */
	long low_speed_time_s;	/* abort a transfer slower than 1 B/s for this long; default 30 */
	long timeout_ms;	/* whole request; 0: none (default) */
	unsigned list_page;	/* s3: max-keys per ListObjectsV2 page; 0: server default */
	/* s3: send '/' unencoded in query values.  Real S3 wants %2F; some
	 * test servers (moto) decode it before checking the signature. */
	bool query_slash_raw;
	/* file: the top directory of the layout the caller keeps below the
	 * root (sync's "streamfs-v1"), or NULL.  When set, the root is taken
	 * for the remote while it holds that directory.  A root that held it
	 * once (file_used, or seen by this backend) and no longer does is a
	 * NAS not mounted: its bare mount point.  Before that, the root is
	 * also taken while it is a mount point of its own (or, missing, its
	 * parent is): a share, where the first put makes the directory.
	 * Otherwise (the root missing, or an empty directory of its parent's
	 * filesystem, or a directory of other things) every call gives
	 * -EAGAIN, like a server that is down, and nothing is written
	 * (logged once per state).  With file_claim as well (a writer; never
	 * an analysis host), a remote not used yet is made where the URL
	 * points unless that looks like an unmounted mount point: the root
	 * when its parent is there and is no empty directory of its own
	 * parent's filesystem (at open, or at the first put once that
	 * holds), and the layout directory in a root that is not empty (at
	 * open) or was just made. */
	const char *file_layout;
	bool file_used;		/* the caller wrote to this root before */
	bool file_claim;
	/* When not NULL: a request fails with -ECANCELED, in flight too
	 * (checked about once a second and on progress), while abort->now
	 * is true or once CLOCK_MONOTONIC passes abort->deadline_ns (when
	 * not 0), so that sync_stop() need not wait for a stalled remote.
	 * Borrowed: must outlive the backend. */
	const struct backend_abort *abort;
};

/* The one rule for credentials files, for every backend and for fs's
 * check of -o credentials=: FILE is opened with O_NOFOLLOW, must be a
 * regular file, and must give no permission at all to group or others
 * (mode & 077 == 0: chmod 600).  Returns an fd open for reading
 * (O_CLOEXEC; the caller closes it) or -errno: -EACCES when the file breaks
 * the rule, -ENOENT, -ELOOP (a symlink)...  Logs the reason. */
int backend_credentials_open(const char *file) BACKEND_WARN_UNUSED;

/* Whether URL has a userinfo part ("scheme://user:pass@host/...").
 * backend_open_url() refuses such a URL (credentials come only from
 * credentials=FILE or the environment); print such a URL nowhere. */
bool backend_url_has_userinfo(const char *url);

/* URL as messages may show it: everything between the scheme and the last
 * '@' replaced by "***", which hides any "user:password@" before the host
 * even when the password holds a raw '/', '?' or '#'.  After "file:///"
 * (no host: the rest is a path) nothing is hidden.  A string without a
 * scheme ("://" before any '/' or '@') is hidden from its start.  Caller
 * frees; NULL without memory. */
char *backend_url_redacted(const char *url);

/* Fills in the defaults above. */
void backend_options_default(struct backend_options *o);
/* Sets one option from text, as "-o key=value" gives it: endpoint, region,
 * path_style (no value, or 0/1), credentials, ca_file, connect_timeout (ms),
 * timeout (ms), low_speed_time (s), list_page, query_slash_raw.  VALUE is
 * borrowed and must outlive O.  -EINVAL for an unknown key or a bad value. */
int backend_options_set(struct backend_options *o, const char *key,
			const char *value) BACKEND_WARN_UNUSED;

struct backend;

/* Body of a put: BUF when not NULL, else LEN bytes of FD from offset 0. */
struct backend_body {
	const void *buf;
	int fd;
	uint64_t len;
	/* The body's SHA-256 as 64 lower-case hex digits, or NULL: backends
	 * with BACKEND_CAP_SHA256 then trust it instead of reading the body
	 * an extra time.  A wrong one makes the server refuse the put. */
	const char *sha256;
	/* A token of lock() on the key put, or NULL: with BACKEND_CAP_LOCK,
	 * the put goes through only while that lock holds (WebDAV "If:"),
	 * and is -ESTALE otherwise (the lock expired, or another holds one). */
	const char *lock;
};

struct backend_buf;

/* Where a get() passes the bytes on as they come, so that it holds CHUNK
 * of them at a time instead of all: each time the buffer holds CHUNK
 * bytes, put() takes them and the buffer is empty again.
 * A get() answered with anything but the bytes asked for (an error, a
 * whole object sent for a range) clears backend_buf.sink first and holds
 * what it gets. */
struct backend_sink {
	int (*put)(void *arg, struct backend_buf *b);
	void *arg;
	size_t chunk;
};

/* A growable byte buffer with a hard cap.  get() appends to it. */
struct backend_buf {
	char *data;		/* owned; free with backend_buf_release() */
	size_t len;
	size_t alloc;
	size_t max;		/* hard cap on passed + len; 0 means 64 MiB */
	const struct backend_sink *sink;	/* or NULL */
	uint64_t passed;	/* bytes the sink took */
};
void backend_buf_release(struct backend_buf *b);
/* Makes room for N more bytes: -EFBIG past the cap, -ENOMEM. */
int backend_buf_reserve(struct backend_buf *b, size_t n) BACKEND_WARN_UNUSED;
/* Appends N bytes of P (and a NUL after them), passing them on to the
 * sink as they make whole chunks: 0 or -errno (-EFBIG, or the sink's). */
int backend_buf_append(struct backend_buf *b, const void *p,
		       size_t n) BACKEND_WARN_UNUSED;
/* Appends a NUL without counting it in len. */
int backend_buf_terminate(struct backend_buf *b) BACKEND_WARN_UNUSED;

struct backend_stat {
	uint64_t size;
	int64_t mtime;		/* seconds since the epoch, 0 if unknown */
};

struct backend_entry {
	const char *key;	/* relative to the backend's prefix */
	uint64_t size;
};

/* Called for each object of a listing; non-zero stops the listing and is
 * returned by list(). */
typedef int (*backend_list_fn)(void *arg, const struct backend_entry *e);

struct backend_ops {
	const char *name;	/* "file", "s3", "http" */
	unsigned caps;		/* BACKEND_CAP_* */
	/* URL is the whole URL; *out gets the backend on success. */
	int (*open)(const char *url, const struct backend_options *opts,
		    struct backend **out);
	void (*close)(struct backend *b);
	/* Creates or replaces KEY atomically. */
	int (*put)(struct backend *b, const char *key,
		   const struct backend_body *body);
	/* Appends bytes [OFF, OFF+LEN) of KEY to OUT; fewer at the end of the
	 * object, none when OFF is at or past it.  LEN may be BACKEND_TO_END.
	 * OUT's sink, if any, may take them on the way (backend_buf_pass()).
	 * -ENOENT, -EFBIG when OUT would pass its cap. */
	int (*get)(struct backend *b, const char *key, uint64_t off,
		   uint64_t len, struct backend_buf *out);
	/* Removes KEY; removing a missing key succeeds. */
	int (*del)(struct backend *b, const char *key);
	int (*head)(struct backend *b, const char *key,
		    struct backend_stat *st);
	/* Every object whose key starts with PREFIX ("" for all), in
	 * byte order of keys. */
	int (*list)(struct backend *b, const char *prefix, backend_list_fn fn,
		    void *arg);
	/* Creates KEY only if it does not exist: -EEXIST otherwise. */
	int (*put_if_absent)(struct backend *b, const char *key,
			     const struct backend_body *body);
	/* Reads all of KEY into OUT and its version tag into TAG (OUT:
	 * BACKEND_TAG_MAX bytes).  -ENOENT. */
	int (*get_tagged)(struct backend *b, const char *key,
			  struct backend_buf *out, char *tag);
	/* Replaces KEY only while its version tag is still TAG: -ESTALE
	 * when it changed, -ENOENT when it is gone.  NEW_TAG (OUT, when
	 * not NULL) gets the new object's tag, or "" when the server did
	 * not say (get_tagged() then tells). */
	int (*put_if_match)(struct backend *b, const char *key,
			    const struct backend_body *body, const char *tag,
			    char *new_tag);
	/* Removes KEY only while its version tag is TAG: -ESTALE when it
	 * changed; a missing KEY is -ENOENT. */
	int (*del_if_match)(struct backend *b, const char *key,
			    const char *tag);
	/* BACKEND_CAP_LOCK only (NULL otherwise).  Takes an exclusive write
	 * lock on KEY, an existing object, for about TIMEOUT_S seconds, its
	 * token into TOKEN (BACKEND_TAG_MAX bytes) when TOKEN is "", or
	 * refreshes the lock TOKEN names.  *GRANTED_S (OUT) gets the
	 * timeout the server granted, 0 when it did not say.  -ENOENT when
	 * KEY is missing (nothing is left there), -EAGAIN when another holds
	 * a lock on it, -ESTALE when the lock to refresh is gone,
	 * -EOPNOTSUPP when the server does not lock. */
	int (*lock)(struct backend *b, const char *key, long timeout_s,
		    char *token, long *granted_s);
	/* Releases the lock TOKEN on KEY (gone already: 0). */
	int (*unlock)(struct backend *b, const char *key, const char *token);
};

/* Every backend starts with this.  A backend and all it holds (the CURL
 * handle, buffers) has no lock: one thread at a time uses it, as the top
 * of this file says. */
struct backend {
	const struct backend_ops *ops;
	/* The cause of the last failed call as the remote gave it ("HTTP
	 * status 503", "curl: Couldn't connect to server"), "" when there is
	 * nothing to add to its -errno: cleared by every wrapper below, set
	 * by the backend; backend_why() reads it. */
	char why[96];
};

/* Opens the backend for URL's scheme.  The caller owns *out and frees it
 * with backend_close().  -EPROTONOSUPPORT for an unknown scheme, -EINVAL
 * for a malformed URL, -EACCES for unusable credentials. */
int backend_open_url(const char *url, const struct backend_options *opts,
		     struct backend **out) BACKEND_WARN_UNUSED;

/* True when KEY follows the rules at the top of this file. */
bool backend_key_valid(const char *key);

/* True for errors worth retrying later. */
static inline bool backend_err_retryable(int rc)
{
	return rc == -EAGAIN || rc == -ETIMEDOUT;
}

/* Fault injection for tests: when set, every call through the wrappers
 * below first asks it; a non-zero -errno is returned instead of the call.
 * OP is the method name ("put", "get", ...).  Set before any thread runs. */
extern int (*backend_fault_hook)(const struct backend *b, const char *op,
				 const char *key);

static inline int backend_fault(struct backend *b, const char *op,
				const char *key)
{
	b->why[0] = '\0';
	return backend_fault_hook ? backend_fault_hook(b, op, key) : 0;
}

/* What the remote said of the last failed call through the wrappers
 * below, or "" (see struct backend). */
static inline const char *backend_why(const struct backend *b)
{
	return b->why;
}

static inline const char *backend_name(const struct backend *b)
{
	return b->ops->name;
}

static inline unsigned backend_caps(const struct backend *b)
{
	return b->ops->caps;
}

static inline void backend_close(struct backend *b)
{
	if (b)
		b->ops->close(b);
}

BACKEND_WARN_UNUSED static inline int
backend_put(struct backend *b, const char *key, const struct backend_body *body)
{
	int rc = backend_fault(b, "put", key);

	/* A lock the backend cannot honour must not pass unnoticed. */
	if (!rc && body->lock && !(b->ops->caps & BACKEND_CAP_LOCK))
		rc = -EOPNOTSUPP;
	return rc ? rc : b->ops->put(b, key, body);
}

BACKEND_WARN_UNUSED static inline int
backend_put_buf(struct backend *b, const char *key, const void *buf, size_t len)
{
	struct backend_body body = { .buf = buf ? buf : "", .fd = -1, .len = len };
	return backend_put(b, key, &body);
}

/* A put of BUF that goes through only while the lock TOKEN (of
 * backend_lock()) on KEY holds: -ESTALE otherwise. */
BACKEND_WARN_UNUSED static inline int
backend_put_locked_buf(struct backend *b, const char *key, const void *buf,
		       size_t len, const char *token)
{
	struct backend_body body = { .buf = buf ? buf : "", .fd = -1, .len = len,
				     .lock = token };
	return backend_put(b, key, &body);
}

BACKEND_WARN_UNUSED static inline int
backend_get(struct backend *b, const char *key, uint64_t off, uint64_t len,
	    struct backend_buf *out)
{
	int rc = backend_fault(b, "get", key);
	return rc ? rc : b->ops->get(b, key, off, len, out);
}

BACKEND_WARN_UNUSED static inline int
backend_del(struct backend *b, const char *key)
{
	int rc = backend_fault(b, "del", key);
	return rc ? rc : b->ops->del(b, key);
}

BACKEND_WARN_UNUSED static inline int
backend_head(struct backend *b, const char *key, struct backend_stat *st)
{
	int rc = backend_fault(b, "head", key);
	return rc ? rc : b->ops->head(b, key, st);
}

BACKEND_WARN_UNUSED static inline int
backend_list(struct backend *b, const char *prefix, backend_list_fn fn,
	     void *arg)
{
	int rc = backend_fault(b, "list", prefix);
	return rc ? rc : b->ops->list(b, prefix, fn, arg);
}

BACKEND_WARN_UNUSED static inline int
backend_put_if_absent(struct backend *b, const char *key,
		      const struct backend_body *body)
{
	int rc = backend_fault(b, "put_if_absent", key);
	return rc ? rc : b->ops->put_if_absent(b, key, body);
}

BACKEND_WARN_UNUSED static inline int
backend_put_if_absent_buf(struct backend *b, const char *key, const void *buf,
			  size_t len)
{
	struct backend_body body = { .buf = buf ? buf : "", .fd = -1, .len = len };
	return backend_put_if_absent(b, key, &body);
}

BACKEND_WARN_UNUSED static inline int
backend_get_tagged(struct backend *b, const char *key, struct backend_buf *out,
		   char *tag)
{
	int rc = backend_fault(b, "get_tagged", key);
	return rc ? rc : b->ops->get_tagged(b, key, out, tag);
}

BACKEND_WARN_UNUSED static inline int
backend_put_if_match_buf(struct backend *b, const char *key, const void *buf,
			 size_t len, const char *tag, char *new_tag)
{
	struct backend_body body = { .buf = buf ? buf : "", .fd = -1, .len = len };
	int rc = backend_fault(b, "put_if_match", key);
	return rc ? rc : b->ops->put_if_match(b, key, &body, tag, new_tag);
}

BACKEND_WARN_UNUSED static inline int
backend_del_if_match(struct backend *b, const char *key, const char *tag)
{
	int rc = backend_fault(b, "del_if_match", key);
	return rc ? rc : b->ops->del_if_match(b, key, tag);
}

BACKEND_WARN_UNUSED static inline int
backend_lock(struct backend *b, const char *key, long timeout_s, char *token,
	     long *granted_s)
{
	int rc = backend_fault(b, "lock", key);

	*granted_s = 0;
	if (!rc && !b->ops->lock)
		rc = -EOPNOTSUPP;
	return rc ? rc : b->ops->lock(b, key, timeout_s, token, granted_s);
}

/* Its failure is for the log only: a lock left behind expires. */
static inline int
backend_unlock(struct backend *b, const char *key, const char *token)
{
	int rc = backend_fault(b, "unlock", key);

	if (!rc && !b->ops->unlock)
		rc = -EOPNOTSUPP;
	return rc ? rc : b->ops->unlock(b, key, token);
}

#endif
