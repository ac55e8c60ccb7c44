/*
 * metrics.c: -o metrics=ADDR:PORT, Prometheus metrics at /metrics.
 *
 * libmicrohttpd serves HTTP on a thread of its own; we parse none of it.
 * The socket is bound at mount, before the filesystem is mounted, so that
 * a bad address or a port in use refuses the mount with a message; the
 * server starts once the session serves.  Each scrape takes one status
 * snapshot (status.c), the very values `streamfs status` prints, and
 * writes them in the text exposition format (version 0.0.4): a HELP and a
 * TYPE line for each family, counters ending in _total, sizes in _bytes,
 * times in _seconds.  The snapshot takes each owner's lock for a moment
 * (sync's leaf lock, fs->park_lock) and reads the store's counters from
 * atomics: a scrape never waits for an append, nor an append for it.
 * docs/streamfs.1, "METRICS", says what each metric means.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "config.h"
#include "fs_int.h"

struct fs_metrics {
	int fd;				/* the listening socket until the
					 * server owns it, then -1 */
	struct MHD_Daemon *daemon;	/* NULL until started */
	struct fs *fs;			/* set before the server starts */
};

/* ---- the exposition format ---- */

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(FILE *f, const char *name, uint64_t v)
{
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void one(FILE *f, const char *name, const char *type,
		const char *help, uint64_t v)
{
	family(f, name, type, help);
	sample(f, name, v);
}

/* Nanoseconds as seconds: "0.000025", "1", "0". */
static void put_seconds(FILE *f, int64_t ns)
{
	char buf[48];
	size_t n;

	snprintf(buf, sizeof(buf), "%" PRId64 ".%09" PRId64,
		 ns / 1000000000, ns % 1000000000);
	n = strlen(buf);
	while (buf[n - 1] == '0')
		buf[--n] = '\0';
	if (buf[n - 1] == '.')
		buf[--n] = '\0';
	fputs(buf, f);
}

/* A label value: backslash, double quote and newline escaped as the
 * format wants; other control bytes (which tenant names may hold) as '?'. */
static void put_label(FILE *f, const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p == '\\' || *p == '"')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else
			fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
	}
}

static void causes(FILE *f, const char *name, const char *help,
		   const uint64_t *n)
{
	family(f, name, "counter", help);
	for (int c = 0; c < SYNC_CAUSES; c++)
		fprintf(f, "%s{cause=\"%s\"} %" PRIu64 "\n", name,
			sync_cause_name(c), n[c]);
}

static void latency(FILE *f, const struct store_counters *sc)
{
	const char *name = "streamfs_append_latency_seconds";
	uint64_t count = 0;

	family(f, name, "histogram",
	       "Time an append of events took in the store, write to commit.");
	for (int b = 0; b <= STORE_LATENCY_BUCKETS; b++) {
		count += sc->append_latency[b];
		fprintf(f, "%s_bucket{le=\"", name);
		if (b < STORE_LATENCY_BUCKETS)
			put_seconds(f, store_latency_bound_ns((size_t)b));
		else
			fputs("+Inf", f);
		fprintf(f, "\"} %" PRIu64 "\n", count);
	}
	fprintf(f, "%s_sum ", name);
	put_seconds(f, (int64_t)sc->append_latency_sum_ns);
	fprintf(f, "\n%s_count %" PRIu64 "\n", name, count);
}

/* A gauge of a time (CLOCK_REALTIME ns) as Unix seconds; 0 for never. */
static void timestamp(FILE *f, const char *name, const char *help, int64_t ns)
{
	family(f, name, "gauge", help);
	fprintf(f, "%s ", name);
	put_seconds(f, ns > 0 ? ns : 0);
	fputc('\n', f);
}

/* One gauge per tenant: NAME{tenant="T"} and the value VALUE_OF gives. */
static void per_lease(FILE *f, const struct fs_status *st, const char *name,
		      const char *help,
		      uint64_t (*value_of)(const struct sync_lease *))
{
	family(f, name, "gauge", help);
	for (size_t i = 0; i < st->nleases; i++) {
		fprintf(f, "%s{tenant=\"", name);
		put_label(f, st->leases[i].tenant);
		fprintf(f, "\"} %" PRIu64 "\n", value_of(&st->leases[i]));
	}
}

static uint64_t lease_held(const struct sync_lease *l)
{
	return l->held;
}

static uint64_t lease_refused(const struct sync_lease *l)
{
	return l->refused;
}

static uint64_t lease_fenced(const struct sync_lease *l)
{
	return l->fenced;
}

static uint64_t lease_generation(const struct sync_lease *l)
{
	return l->generation;
}

static uint64_t lease_frozen(const struct sync_lease *l)
{
	return l->frozen;
}

static void leases(FILE *f, const struct fs_status *st)
{
	per_lease(f, st, "streamfs_lease_held",
		  "1 while this writer holds the tenant's lease on the remote.",
		  lease_held);
	per_lease(f, st, "streamfs_lease_refused",
		  "1 while another writer holds the tenant's lease: nothing "
		  "of the tenant is uploaded.", lease_refused);
	per_lease(f, st, "streamfs_lease_fenced",
		  "1 once another writer took the tenant over from this one: "
		  "its writes are refused and nothing more is published.",
		  lease_fenced);
	per_lease(f, st, "streamfs_lease_generation",
		  "Generation of this writer's lease of the tenant (held or "
		  "fenced); 0 before one is taken.", lease_generation);
	per_lease(f, st, "streamfs_streams_frozen",
		  "Streams of the tenant that publish no more: the remote lost "
		  "one of their objects and no copy is left here.",
		  lease_frozen);
}

static void writer_metrics(FILE *f, const struct fs_status *st)
{
	const struct sync_status *sy = &st->sy;
	int64_t lag = sy->oldest_pending_ns ? st->now_ns - sy->oldest_pending_ns : 0;

	one(f, "streamfs_pending_segments", "gauge",
	    "Sealed segments not yet uploaded.", sy->pending_segments);
	one(f, "streamfs_pending_bytes", "gauge",
	    "Bytes of the sealed segments not yet uploaded.", sy->pending_bytes);
	one(f, "streamfs_pending_snapshots", "gauge",
	    "Snapshots not yet uploaded.", sy->pending_snapshots);
	family(f, "streamfs_sync_lag_seconds", "gauge",
	       "Age of the oldest sealed segment not yet uploaded; 0 when none waits.");
	fputs("streamfs_sync_lag_seconds ", f);
	put_seconds(f, lag > 0 ? lag : 0);
	fputc('\n', f);
	one(f, "streamfs_uploaded_segments_total", "counter",
	    "Segments uploaded since mount.", sy->uploaded_segments);
	one(f, "streamfs_uploaded_bytes_total", "counter",
	    "Bytes of segments uploaded since mount.", sy->uploaded_bytes);
	causes(f, "streamfs_upload_failures_total",
	       "Segment uploads that failed, by cause.", sy->upload_failures);
	one(f, "streamfs_lost_objects_total", "counter",
	    "Objects found missing on the remote that a manifest of this "
	    "writer names, since mount.", sy->lost_objects);
	one(f, "streamfs_reput_objects_total", "counter",
	    "Objects the remote lost that were put again from local copies, "
	    "since mount.", sy->reput_objects);
	leases(f, st);
}

static void sync_metrics(FILE *f, const struct fs_status *st)
{
	const struct sync_status *sy = &st->sy;

	if (!st->opts->replica)
		writer_metrics(f, st);
	one(f, "streamfs_cache_bytes", "gauge",
	    "Local copies of uploaded segments and fetched snapshots"
	    " (counted with cache_size).",
	    sy->cached_bytes);
	if (st->opts->cache_size)
		one(f, "streamfs_cache_limit_bytes", "gauge",
		    "The cache_size bound on local copies (segments, snapshots).",
		    st->opts->cache_size);
	one(f, "streamfs_evicted_segments_total", "counter",
	    "Local copies of uploaded segments evicted since mount.",
	    sy->evicted_segments);
	one(f, "streamfs_fetched_segments_total", "counter",
	    "Segments fetched from the remote since mount.", sy->fetched_segments);
	one(f, "streamfs_fetch_failures_total", "counter",
	    "Fetches that failed for good: their readers got EIO.",
	    sy->fetch_failures);
	causes(f, "streamfs_fetch_errors_total",
	       "Fetch attempts that failed, by cause (each retry counts).",
	       sy->fetch_errors);
	causes(f, "streamfs_sync_pass_failures_total",
	       "Sync passes that failed, by cause.", sy->pass_failures);
	one(f, "streamfs_sync_failing", "gauge",
	    "1 while the last sync pass failed (the remote is failing).",
	    sy->last_error != 0);
	timestamp(f, "streamfs_last_success_timestamp_seconds",
		  "When a sync pass last finished cleanly (Unix time); 0: never.",
		  sy->last_success_ns);
	timestamp(f, "streamfs_last_error_timestamp_seconds",
		  "When a step against the remote last failed (Unix time); 0: never.",
		  sy->last_error_ns);
}

/* The whole page for ST into F. */
static void render(FILE *f, const struct fs_status *st)
{
	family(f, "streamfs_info", "gauge",
	       "Always 1; its labels say what the mount is.");
	fprintf(f, "streamfs_info{version=\"%s\",mode=\"%s\",remote=\"",
		STREAMFS_VERSION, fs_status_mode(st));
	put_label(f, st->opts->remote ? st->opts->remote_shown : "");
	fputs("\"} 1\n", f);
	one(f, "streamfs_appended_events_total", "counter",
	    "Events appended since mount (duplicates skipped are not).",
	    st->store.events_appended);
	one(f, "streamfs_appended_bytes_total", "counter",
	    "Bytes of the events appended since mount.",
	    st->store.bytes_appended);
	latency(f, &st->store);
	one(f, "streamfs_fsyncs_total", "counter",
	    "fsync(2) calls on streams since mount.", st->store.fsyncs);
	one(f, "streamfs_followers_parked", "gauge",
	    "Follow reads waiting for new events.", st->followers_parked);
	one(f, "streamfs_damaged_segments_total", "counter",
	    "Segments a read found damaged on disk (bytes failing their hash).",
	    st->store.damaged_segments);
	one(f, "streamfs_healed_segments_total", "counter",
	    "Damaged segments fetched again from the remote.",
	    st->store.healed_segments);
	one(f, "streamfs_damaged_snapshots_total", "counter",
	    "Snapshots a read found damaged on disk (length or hash).",
	    st->store.damaged_snapshots);
	one(f, "streamfs_healed_snapshots_total", "counter",
	    "Damaged snapshots fetched again from the remote.",
	    st->store.healed_snapshots);
	if (st->sync)
		sync_metrics(f, st);
}

/* ---- the server ---- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
			     char *body, size_t len, const char *type)
{
	struct MHD_Response *r;
	enum MHD_Result ok;

	r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ok = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code,
				  const char *text)
{
	char *body = strdup(text);

	return body ? reply(c, code, body, strlen(body), "text/plain") : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **req_cls)
{
	struct fs_metrics *m = cls;
	struct fs_status st;
	char *body = NULL;
	size_t len = 0;
	FILE *f;

	(void)version;
	(void)upload;
	(void)upload_size;
	(void)req_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "GET /metrics\n");
	if (strcmp(url, "/metrics") != 0)
		return reply_text(c, MHD_HTTP_NOT_FOUND,
				  "streamfs serves /metrics\n");
	f = open_memstream(&body, &len);
	if (!f)
		return MHD_NO;
	if (fs_status_get(m->fs, &st) == 0)
		render(f, &st);
	fs_status_release(&st);
	if (fclose(f) != 0 || !len) {
		free(body);
		return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "out of memory\n");
	}
	return reply(c, MHD_HTTP_OK, body, len,
		     "text/plain; version=0.0.4; charset=utf-8");
}

int fs_metrics_open(const struct fs_opts *o, struct fs_metrics **out)
{
	const struct sockaddr *sa = (const struct sockaddr *)&o->metrics_addr;
	struct fs_metrics *m;
	int one = 1, rc;

	*out = NULL;
	if (!o->metrics)
		return 0;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (m->fd < 0 ||
	    setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(m->fd, sa, o->metrics_addrlen) || listen(m->fd, 16)) {
		rc = -errno;
		fs_log(LOG_ERR, "metrics=%s: cannot listen there: %s",
		       o->metrics, strerror(-rc));
		fs_metrics_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* libmicrohttpd's own errors (a connection it could not take) go where
 * ours do. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	fs_log(LOG_WARNING, "metrics: %s", line);
}

int fs_metrics_start(struct fs_metrics *m, struct fs *fs)
{
	if (!m)
		return 0;
	m->fs = fs;
	m->daemon = MHD_start_daemon(
		MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
		on_request, m,
		MHD_OPTION_LISTEN_SOCKET, (MHD_socket)m->fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
		MHD_OPTION_END);
	if (!m->daemon) {
		fs_log(LOG_ERR, "metrics: cannot start the HTTP server");
		return -EIO;
	}
	m->fd = -1;	/* MHD_stop_daemon() closes it */
	return 0;
}

void fs_metrics_free(struct fs_metrics *m)
{
	if (!m)
		return;
	if (m->daemon)
		MHD_stop_daemon(m->daemon);
	if (m->fd >= 0)
		close(m->fd);
	free(m);
}
