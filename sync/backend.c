/*
 * backend.c: what every backend shares: options, URL dispatch, key rules,
 * buffers, error mapping, listings, credentials.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_sync.h"
#include "sync_int.h"

int (*backend_fault_hook)(const struct backend *b, const char *op,
			  const char *key);

void sync_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "streamfs: sync: %s\n", line);
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
		sync_log("the remote URL holds credentials (user:password@): "
			 "refused, they would show on the command line and in "
			 "logs; put them in a file given as credentials=FILE");
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

/* ---- string vectors ---- */

int strvec_push(struct strvec *sv, const char *str)
{
	if (sv->n == sv->alloc) {
		size_t alloc = sv->alloc ? 2 * sv->alloc : 16;
		char **v = realloc(sv->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sv->v = v;
		sv->alloc = alloc;
	}
	if (!(sv->v[sv->n] = strdup(str)))
		return -ENOMEM;
	sv->n++;
	return 0;
}

int strvec_collect(void *arg, const char *name)
{
	return strvec_push(arg, name);
}

void strvec_release(struct strvec *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	*sv = (struct strvec){ 0 };
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
	size_t want, alloc;
	char *p;

	if (n > max || b->passed + b->len > max - n)
		return -EFBIG;
	want = b->len + n + 1;	/* room for a NUL */
	if (want <= b->alloc)
		return 0;
	alloc = b->alloc ? b->alloc : 256;
	while (alloc < want)
		alloc *= 2;
	p = realloc(b->data, alloc);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->alloc = alloc;
	return 0;
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

int sync_urldecode(char *s)
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

/* ---- errors ---- */

int sync_errno_from_curl(CURLcode cc, const char *what)
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
	sync_log("%s: curl code %d (%s) -> %s", what, (int)cc,
		 curl_easy_strerror(cc), strerror(-rc));
	return rc;
}

int sync_errno_from_http(long status, const char *what)
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
		sync_log("%s: HTTP status %ld -> %s", what, status,
			 strerror(-rc));
	return rc;
}

/* ---- listings ---- */

int entry_vec_add(struct entry_vec *ev, const char *key, uint64_t size)
{
	char *k;

	if (ev->n == ev->alloc) {
		size_t alloc = ev->alloc ? ev->alloc * 2 : 64;
		struct backend_entry *v = realloc(ev->v, alloc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ev->v = v;
		ev->alloc = alloc;
	}
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

int entry_vec_emit(struct entry_vec *ev, backend_list_fn fn, void *arg)
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

void entry_vec_release(struct entry_vec *ev)
{
	for (size_t i = 0; i < ev->n; i++)
		free((char *)ev->v[i].key);
	free(ev->v);
	*ev = (struct entry_vec){ 0 };
}

/* ---- credentials ---- */

int backend_credentials_open(const char *file)
{
	struct stat st;
	int fd, rc;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		sync_log("credentials file %s: %s", file, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		sync_log("credentials file %s: not a regular file", file);
		return -EACCES;
	}
	if (st.st_mode & 077) {
		close(fd);
		sync_log("credentials file %s is readable by group or others "
			 "(mode %03o): refusing it; chmod 600 it", file,
			 (unsigned)(st.st_mode & 0777));
		return -EACCES;
	}
	return fd;
}

/* A private credentials file opened for reading; NULL with *err = -errno. */
static FILE *credentials_fopen(const char *file, int *err)
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

int http_creds_load(const char *file, char **user, char **pass)
{
	char line[4096], *colon, *e;
	int fd, rc = -EACCES;
	FILE *f;

	*user = *pass = NULL;
	f = credentials_fopen(file, &fd);
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
			sync_log("credentials file %s: want one line "
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
		sync_log("credentials file %s: no USER:PASSWORD line", file);
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

void s3_creds_release(struct s3_creds *c)
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

	f = credentials_fopen(file, &fd);
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

int s3_creds_load(const char *file, struct s3_creds *out)
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
		sync_log("no S3 credentials: set AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY, or credentials=FILE");
		rc = -EACCES;
	}
	if (!rc && (strchr(out->key_id, ':') || strpbrk(out->key_id, "\r\n") ||
		    (out->token && strpbrk(out->token, "\r\n")))) {
		sync_log("malformed S3 credentials");
		rc = -EACCES;
	}
	if (rc)
		s3_creds_release(out);
	return rc;
}
