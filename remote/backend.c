/*
 * backend.c: what every backend shares: options, URL dispatch, key rules,
 * buffers, listings, the rule for credentials files.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remote_int.h"

int (*backend_fault_hook)(const struct backend *b, const char *op,
			  const char *key);

/* Set once, before any thread starts (remote_log_set_sink()). */
static remote_log_fn log_sink;

void remote_log_set_sink(remote_log_fn sink)
{
	log_sink = sink;
}

void remote_log(int prio, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	n = snprintf(line, sizeof(line), "sync: ");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (log_sink)
		log_sink(prio, line);
	else
		fprintf(stderr, "streamfs: %s\n", line);
}

void backend_options_default(struct backend_options *o)
{
	*o = (struct backend_options){
		.region = "us-east-1",
		.connect_timeout_ms = 10000,
		.low_speed_time_s = 30,
	};
}

static int parse_long(const char *v, long *out)
{
	char *end;
	long n;

	if (!v || !*v)
		return -EINVAL;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || n < 0)
		return -EINVAL;
	*out = n;
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	if (!v || !*v || !strcmp(v, "1") || !strcmp(v, "true") ||
	    !strcmp(v, "yes")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

int backend_options_set(struct backend_options *o, const char *key,
			const char *value)
{
	long n;
	int rc;

	if (!strcmp(key, "endpoint")) {
		if (!value || !*value)
			return -EINVAL;
		o->endpoint = value;
	} else if (!strcmp(key, "region")) {
		if (!value || !*value)
			return -EINVAL;
		o->region = value;
	} else if (!strcmp(key, "path_style")) {
		return parse_bool(value, &o->path_style);
	} else if (!strcmp(key, "query_slash_raw")) {
		return parse_bool(value, &o->query_slash_raw);
	} else if (!strcmp(key, "credentials")) {
		if (!value || !*value)
			return -EINVAL;
		o->credentials_file = value;
	} else if (!strcmp(key, "ca_file")) {
		if (!value || !*value)
			return -EINVAL;
		o->ca_file = value;
	} else if (!strcmp(key, "connect_timeout")) {
		if ((rc = parse_long(value, &n)))
			return rc;
		o->connect_timeout_ms = n;
	} else if (!strcmp(key, "timeout")) {
		if ((rc = parse_long(value, &n)))
			return rc;
		o->timeout_ms = n;
	} else if (!strcmp(key, "low_speed_time")) {
		if ((rc = parse_long(value, &n)))
			return rc;
		o->low_speed_time_s = n;
	} else if (!strcmp(key, "list_page")) {
		if ((rc = parse_long(value, &n)) || n > 1000)
			return -EINVAL;
		o->list_page = (unsigned)n;
	} else {
		return -EINVAL;
	}
	return 0;
}

bool backend_url_has_userinfo(const char *url)
{
	const char *host = strstr(url, "://");
	size_t n;

	if (!host)
		return false;
	host += 3;
	n = strcspn(host, "/?#");
	return memchr(host, '@', n) != NULL;
}

char *backend_url_redacted(const char *url)
{
	const char *sep = strstr(url, "://");
	const char *at = strrchr(url, '@');
	size_t keep = 0;
	char *out;

	if (sep && strcspn(url, "/@") > (size_t)(sep - url))
		keep = (size_t)(sep - url) + 3;
	if (!at || (size_t)(at - url) < keep ||
	    strncmp(url, "file:///", 8) == 0)
		return strdup(url);
	if (asprintf(&out, "%.*s***%s", (int)keep, url, at) < 0)
		return NULL;
	return out;
}

int backend_open_url(const char *url, const struct backend_options *opts,
		     struct backend **out)
{
	struct backend_options def;
	const struct backend_ops *ops;

	*out = NULL;
	if (!opts) {
		backend_options_default(&def);
		opts = &def;
	}
	if (!strncmp(url, "file://", 7))
		ops = &backend_file_ops;
	else if (!strncmp(url, "s3://", 5))
		ops = &backend_s3_ops;
	else if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8))
		ops = &backend_http_ops;
	else
		return strstr(url, "://") ? -EPROTONOSUPPORT : -EINVAL;
	if (ops != &backend_file_ops && backend_url_has_userinfo(url)) {
		/* Never echo the URL: it holds a secret. */
		remote_log(LOG_ERR, "the remote URL holds credentials (user:password@): "
			   "refused, they would show on the command line and "
			   "in logs; put them in a file given as "
			   "credentials=FILE");
		return -EINVAL;
	}
	return ops->open(url, opts, out);
}

static bool key_byte_ok(unsigned char c)
{
	/* Only bytes that never need URL escaping: S3-compatible servers
	 * disagree on how to canonicalize escaped paths when signing. */
	return isalnum(c) || c == '.' || c == '_' || c == '~' || c == '-';
}

bool backend_key_valid(const char *key)
{
	size_t len = strlen(key);
	const char *p = key;

	if (len == 0 || len > BACKEND_KEY_MAX)
		return false;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == 0 || p[0] == '.')	/* ".", "..", temp files */
			return false;
		for (size_t i = 0; i < n; i++)
			if (!key_byte_ok((unsigned char)p[i]))
				return false;
		if (!end)
			break;
		p = end + 1;
		if (!*p)
			return false;	/* trailing '/' */
	}
	return true;
}

/* ---- buffers ---- */

#define BUF_DEFAULT_MAX (64u << 20)

void backend_buf_release(struct backend_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

int backend_buf_reserve(struct backend_buf *b, size_t n)
{
	size_t max = b->max ? b->max : BUF_DEFAULT_MAX;

	if (n > max || b->passed + b->len > max - n)
		return -EFBIG;
	return REMOTE_GROW(b->data, b->alloc, b->len + n + 1 /* a NUL */, 256);
}

int backend_buf_pass(struct backend_buf *b)
{
	int rc;

	if (!b->sink || b->len < b->sink->chunk)
		return 0;
	rc = b->sink->put(b->sink->arg, b);
	if (!rc) {
		b->passed += b->len;
		b->len = 0;
	}
	return rc;
}

size_t backend_buf_room(const struct backend_buf *b, size_t n)
{
	if (b->sink && n > b->sink->chunk - b->len)
		return b->sink->chunk - b->len;
	return n;
}

int backend_buf_append(struct backend_buf *b, const void *p, size_t n)
{
	const char *src = p;
	int rc;

	do {
		size_t take = backend_buf_room(b, n);

		rc = backend_buf_reserve(b, take);
		if (rc)
			return rc;
		if (take)
			memcpy(b->data + b->len, src, take);
		b->len += take;
		b->data[b->len] = '\0';
		src += take;
		n -= take;
		rc = backend_buf_pass(b);
	} while (!rc && n);
	return rc;
}

int backend_buf_terminate(struct backend_buf *b)
{
	return backend_buf_append(b, "", 0);
}

int backend_buf_urlencode(struct backend_buf *out, const char *key,
			  bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		char esc[3];
		int rc;

		if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' ||
		    *p == '~' || (keep_slash && *p == '/')) {
			rc = backend_buf_append(out, p, 1);
		} else {
			esc[0] = '%';
			esc[1] = hex[*p >> 4];
			esc[2] = hex[*p & 15];
			rc = backend_buf_append(out, esc, 3);
		}
		if (rc)
			return rc;
	}
	return backend_buf_terminate(out);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int remote_urldecode(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (*r == '%') {
			int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);

			if (hi < 0 || lo < 0)
				return -EINVAL;
			*w++ = (char)(hi * 16 + lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return 0;
}

/* ---- listings ---- */

int remote_entries_add(struct remote_entries *ev, const char *key,
		       uint64_t size)
{
	char *k;

	if (REMOTE_GROW(ev->v, ev->alloc, ev->n + 1, 64))
		return -ENOMEM;
	k = strdup(key);
	if (!k)
		return -ENOMEM;
	ev->v[ev->n++] = (struct backend_entry){ .key = k, .size = size };
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct backend_entry *)a)->key,
		      ((const struct backend_entry *)b)->key);
}

int remote_entries_emit(struct remote_entries *ev, backend_list_fn fn,
			void *arg)
{
	if (ev->n)
		qsort(ev->v, ev->n, sizeof(*ev->v), entry_cmp);
	for (size_t i = 0; i < ev->n; i++) {
		int rc = fn(arg, &ev->v[i]);

		if (rc)
			return rc;
	}
	return 0;
}

void remote_entries_release(struct remote_entries *ev)
{
	for (size_t i = 0; i < ev->n; i++)
		free((char *)ev->v[i].key);
	free(ev->v);
	*ev = (struct remote_entries){ 0 };
}

/* ---- credentials ---- */

int backend_credentials_open(const char *file)
{
	struct stat st;
	int fd, rc;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		remote_log(LOG_ERR, "credentials file %s: %s", file, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		remote_log(LOG_ERR, "credentials file %s: not a regular file", file);
		return -EACCES;
	}
	if (st.st_mode & 077) {
		close(fd);
		remote_log(LOG_ERR, "credentials file %s is readable by group or others "
			   "(mode %03o): refusing it; chmod 600 it", file,
			   (unsigned)(st.st_mode & 0777));
		return -EACCES;
	}
	return fd;
}

FILE *remote_credentials_fopen(const char *file, int *err)
{
	int fd = backend_credentials_open(file);
	FILE *f;

	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		*err = -ENOMEM;
	}
	return f;
}
