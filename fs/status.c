/*
 * status.c: the state of a mount, in one snapshot, for `streamfs status`
 * (text, and JSON with --json) and for the metrics (metrics.c).
 *
 * fs_status_get() gathers the values from their owners (the store's
 * counters, sync's status and leases, the parked follow reads, the ring),
 * each under its owner's lock for a moment or from atomics; the text, the
 * JSON and the metrics are all written from that one struct, so they
 * never disagree.  The text and the JSON come from the same walk over the
 * fields (emit()), one "key: value" line or one member per field; the
 * field names are the contract of docs/streamfs.1, "STATUS".
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "fs_int.h"

int fs_status_get(struct fs *fs, struct fs_status *out)
{
	struct timespec now;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	out->opts = fs->opts;
	clock_gettime(CLOCK_REALTIME, &now);
	out->now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	fs_ring_stats(fs->ring, &out->ring_queues, &out->ring_served);
	store_get_counters(fs->st, &out->store);
	fs_mutex_lock(&fs->park_lock);
	out->followers_parked = fs->parked_count;
	fs_mutex_unlock(&fs->park_lock);
	out->sync = atomic_load(&fs->sync);
	if (!out->sync || !fs->opts->remote) {
		out->sync = NULL;
		return 0;
	}
	sync_get_status(out->sync, &out->sy);
	if (!fs->opts->replica)
		rc = sync_get_leases(out->sync, &out->leases, &out->nleases);
	return rc;
}

void fs_status_release(struct fs_status *st)
{
	free(st->leases);
	st->leases = NULL;
	st->nleases = 0;
}

const char *fs_status_mode(const struct fs_status *st)
{
	const struct fs_opts *o = st->opts;

	return o->replica ? "analysis (read-only replica)" :
	       o->ro ? "read-only" : o->remote ? "writer" : "writer (no remote)";
}

/* ---- one walk over the fields, into text or JSON ---- */

/* Where emit() writes: text lines into BUF, or members of OBJ. */
struct status_out {
	char *buf;
	size_t cap, len;
	json_object *obj;
};

static void text_add(struct status_out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void text_add(struct status_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->len >= o->cap)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void json_add(struct status_out *o, const char *key, json_object *v)
{
	json_object_object_add(o->obj, key, v);
}

static void out_str(struct status_out *o, const char *key, const char *v)
{
	if (o->obj)
		json_add(o, key, v ? json_object_new_string(v) : NULL);
	else
		text_add(o, "%s: %s\n", key, v ? v : "none");
}

static void out_u64(struct status_out *o, const char *key, uint64_t v)
{
	if (o->obj)
		json_add(o, key, json_object_new_uint64(v));
	else
		text_add(o, "%s: %" PRIu64 "\n", key, v);
}

/* A time (CLOCK_REALTIME ns): the text shows it in UTC with its age,
 * the JSON in Unix seconds; NONE (text) or null (JSON) when NS is 0. */
static void out_time(struct status_out *o, const char *key, int64_t ns,
		     int64_t now_ns, const char *none)
{
	time_t secs = (time_t)(ns / 1000000000);
	struct tm tm;

	if (o->obj) {
		json_add(o, key, ns ? json_object_new_int64(secs) : NULL);
		return;
	}
	if (!ns) {
		text_add(o, "%s: %s\n", key, none);
		return;
	}
	gmtime_r(&secs, &tm);
	text_add(o, "%s: %04d-%02d-%02dT%02d:%02d:%02dZ (%lld s ago)\n", key,
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec,
		 (long long)(now_ns / 1000000000 - (int64_t)secs));
}

/* Failures by cause: "cause=N ..." of the non-zero ones, or "none";
 * in JSON an object of every cause. */
static void out_causes(struct status_out *o, const char *key,
		       const uint64_t *n)
{
	json_object *v;
	bool any = false;

	if (o->obj) {
		v = json_object_new_object();
		for (int c = 0; c < SYNC_CAUSES; c++)
			json_object_object_add(v, sync_cause_name(c),
					       json_object_new_uint64(n[c]));
		json_add(o, key, v);
		return;
	}
	text_add(o, "%s:", key);
	for (int c = 0; c < SYNC_CAUSES; c++) {
		if (!n[c])
			continue;
		text_add(o, " %s=%" PRIu64, sync_cause_name(c), n[c]);
		any = true;
	}
	text_add(o, "%s\n", any ? "" : " none");
}

static const char *lease_word(const struct sync_lease *l)
{
	return l->fenced ? "fenced" : l->refused ? "refused" :
	       l->held ? "held" : "not held";
}

/* The text shows a tenant name with its control bytes as '?': one line
 * per field, whatever the names hold. */
static void text_name(struct status_out *o, const char *name)
{
	for (const char *p = name; *p; p++)
		text_add(o, "%c", (unsigned char)*p < 0x20 || *p == 0x7f ?
			 '?' : *p);
}

static json_object *lease_json(const struct sync_lease *l)
{
	json_object *v = json_object_new_object();

	json_object_object_add(v, "tenant", json_object_new_string(l->tenant));
	json_object_object_add(v, "held", json_object_new_boolean(l->held));
	json_object_object_add(v, "refused",
			       json_object_new_boolean(l->refused));
	json_object_object_add(v, "fenced", json_object_new_boolean(l->fenced));
	json_object_object_add(v, "generation",
			       json_object_new_uint64(l->generation));
	return v;
}

/* The leases of each tenant: "T held (generation G), U refused" or
 * "none"; in JSON an array of {tenant, held, refused, fenced,
 * generation}. */
static void out_leases(struct status_out *o, const struct fs_status *st)
{
	json_object *a;

	if (o->obj) {
		a = json_object_new_array();
		for (size_t i = 0; i < st->nleases; i++)
			json_object_array_add(a, lease_json(&st->leases[i]));
		json_add(o, "leases", a);
		return;
	}
	text_add(o, "leases:");
	for (size_t i = 0; i < st->nleases; i++) {
		const struct sync_lease *l = &st->leases[i];

		text_add(o, "%s ", i ? "," : "");
		text_name(o, l->tenant);
		text_add(o, " %s", lease_word(l));
		if (l->generation)
			text_add(o, " (generation %" PRIu64 ")", l->generation);
	}
	text_add(o, "%s\n", st->nleases ? "" : " none");
}

/* The tenants taken over from this writer, each with who took it and
 * what was not published: one "fenced: T: NOTE" line each, or "fenced:
 * none"; in JSON an array of {tenant, note}. */
static void out_fenced(struct status_out *o, const struct fs_status *st)
{
	json_object *a = o->obj ? json_object_new_array() : NULL;
	bool any = false;

	for (size_t i = 0; i < st->nleases; i++) {
		const struct sync_lease *l = &st->leases[i];
		json_object *f;

		if (!l->fenced)
			continue;
		any = true;
		if (!a) {
			text_add(o, "fenced: ");
			text_name(o, l->tenant);
			text_add(o, ": ");
			text_name(o, l->fence_note);
			text_add(o, "\n");
			continue;
		}
		f = json_object_new_object();
		json_object_object_add(f, "tenant",
				       json_object_new_string(l->tenant));
		json_object_object_add(f, "note",
				       json_object_new_string(l->fence_note));
		json_object_array_add(a, f);
	}
	if (a)
		json_add(o, "fenced", a);
	else if (!any)
		text_add(o, "fenced: none\n");
}

/* The streams that publish no more because the remote lost one of their
 * objects and no copy is left here: one "frozen: T: NOTE" line per
 * tenant, or "frozen: none"; in JSON an array of {tenant, streams,
 * note}. */
static void out_frozen(struct status_out *o, const struct fs_status *st)
{
	json_object *a = o->obj ? json_object_new_array() : NULL;
	bool any = false;

	for (size_t i = 0; i < st->nleases; i++) {
		const struct sync_lease *l = &st->leases[i];
		json_object *f;

		if (!l->frozen)
			continue;
		any = true;
		if (!a) {
			text_add(o, "frozen: ");
			text_name(o, l->tenant);
			text_add(o, ": ");
			text_name(o, l->frozen_note);
			text_add(o, "\n");
			continue;
		}
		f = json_object_new_object();
		json_object_object_add(f, "tenant",
				       json_object_new_string(l->tenant));
		json_object_object_add(f, "streams",
				       json_object_new_uint64(l->frozen));
		json_object_object_add(f, "note",
				       json_object_new_string(l->frozen_note));
		json_object_array_add(a, f);
	}
	if (a)
		json_add(o, "frozen", a);
	else if (!any)
		text_add(o, "frozen: none\n");
}

/* last_error: "message (what failed)" or "none"; in JSON
 * {"error", "errno", "what"} or null. */
static void out_error(struct status_out *o, const struct sync_status *sy)
{
	const char *what = sy->last_error_what[0] ? sy->last_error_what : "?";
	json_object *e;

	if (!sy->last_error) {
		out_str(o, "last_error", NULL);
		return;
	}
	if (!o->obj) {
		text_add(o, "last_error: %s (%s)\n", sync_strerror(sy->last_error),
			 what);
		return;
	}
	e = json_object_new_object();
	json_object_object_add(e, "error",
			       json_object_new_string(sync_strerror(sy->last_error)));
	json_object_object_add(e, "errno",
			       json_object_new_int(-sy->last_error));
	json_object_object_add(e, "what", json_object_new_string(what));
	json_add(o, "last_error", e);
}

/* transport: "/dev/fuse", or "io_uring, Q queues, N requests"; in JSON
 * the same words, and io_uring_queues, io_uring_requests. */
static void out_transport(struct status_out *o, const struct fs_status *st)
{
	if (!st->ring_queues) {
		out_str(o, "transport", "/dev/fuse");
		return;
	}
	if (!o->obj) {
		text_add(o, "transport: io_uring, %u queues, %" PRIu64
			 " requests\n", st->ring_queues, st->ring_served);
		return;
	}
	out_str(o, "transport", "io_uring");
	out_u64(o, "io_uring_queues", st->ring_queues);
	out_u64(o, "io_uring_requests", st->ring_served);
}

static void emit_sync(struct status_out *o, const struct fs_status *st)
{
	const struct sync_status *sy = &st->sy;
	const struct fs_opts *opts = st->opts;

	if (!opts->replica) {
		out_u64(o, "pending_segments", sy->pending_segments);
		out_u64(o, "pending_bytes", sy->pending_bytes);
		out_u64(o, "pending_snapshots", sy->pending_snapshots);
		out_time(o, "oldest_pending", sy->oldest_pending_ns, st->now_ns,
			 "none");
		out_u64(o, "uploaded_segments", sy->uploaded_segments);
		out_u64(o, "uploaded_bytes", sy->uploaded_bytes);
		out_causes(o, "upload_failures", sy->upload_failures);
		/* shipped early in tail pieces (flush), not sealed yet */
		out_u64(o, "shipped_tail_bytes", sy->tail_bytes);
		out_u64(o, "tail_pieces", sy->tail_pieces);
		out_u64(o, "tail_pieces_bytes", sy->tail_pieces_bytes);
		out_time(o, "last_flush", sy->last_flush_ns, st->now_ns, "never");
		out_u64(o, "leases_held", sy->leases_held);
		out_u64(o, "leases_refused", sy->leases_refused);
		out_u64(o, "leases_fenced", sy->leases_fenced);
		/* off: the remote cannot fence and -o risk_forks said go on */
		out_str(o, "fencing", sy->fencing_off ? "off (risk_forks: the "
			"remote does not enforce conditional writes)" : "on");
		out_leases(o, st);
		out_fenced(o, st);
		/* objects the remote lost: found, put again, streams frozen */
		out_u64(o, "lost_objects", sy->lost_objects);
		out_u64(o, "reput_objects", sy->reput_objects);
		out_u64(o, "streams_frozen", sy->streams_frozen);
		out_frozen(o, st);
	}
	out_u64(o, "cached_bytes", sy->cached_bytes);
	if (opts->cache_size)
		out_u64(o, "cache_size", opts->cache_size);
	out_u64(o, "evicted_segments", sy->evicted_segments);
	out_u64(o, "fetched_segments", sy->fetched_segments);
	out_u64(o, "fetch_failures", sy->fetch_failures);
	out_causes(o, "fetch_errors", sy->fetch_errors);
	out_causes(o, "pass_failures", sy->pass_failures);
	out_time(o, "last_success", sy->last_success_ns, st->now_ns, "never");
	out_error(o, sy);
	if (sy->last_error)
		out_time(o, "last_error_time", sy->last_error_ns, st->now_ns,
			 "never");
}

/* Every field of ST, in the order of the text. */
static void emit(struct status_out *o, const struct fs_status *st)
{
	const struct fs_opts *opts = st->opts;

	out_str(o, "source", opts->source);
	out_str(o, "mode", fs_status_mode(st));
	out_str(o, "remote", opts->remote ? opts->remote_shown : NULL);
	out_transport(o, st);
	out_u64(o, "appended_events", st->store.events_appended);
	out_u64(o, "appended_bytes", st->store.bytes_appended);
	out_u64(o, "fsyncs", st->store.fsyncs);
	out_u64(o, "followers_parked", st->followers_parked);
	out_u64(o, "damaged_segments", st->store.damaged_segments);
	out_u64(o, "healed_segments", st->store.healed_segments);
	out_u64(o, "damaged_snapshots", st->store.damaged_snapshots);
	out_u64(o, "healed_snapshots", st->store.healed_snapshots);
	if (st->sync)
		emit_sync(o, st);
}

void fs_status_text(const struct fs_status *st, char *buf, size_t cap)
{
	struct status_out o = { .buf = buf, .cap = cap };

	emit(&o, st);
	buf[o.len < cap ? o.len : cap - 1] = '\0';
}

char *fs_status_json(const struct fs_status *st)
{
	struct status_out o = { .obj = json_object_new_object() };
	const char *text;
	char *copy;

	if (!o.obj)
		return NULL;
	emit(&o, st);
	text = json_object_to_json_string_ext(o.obj,
		JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
		JSON_C_TO_STRING_NOSLASHESCAPE);
	copy = text ? strdup(text) : NULL;
	json_object_put(o.obj);
	return copy;
}
