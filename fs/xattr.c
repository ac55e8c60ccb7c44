/*
 * Extended attributes of the contract:
 *   streams: user.streamfs.version (ro), .framing (rw while empty), .sync (ro)
 *   tenants: user.streamfs.framing, user.streamfs.id_field (rw)
 * Views expose the version and framing of their stream, read-only.
 * listxattr names only what a copy can carry over (framing, id_field):
 * `mv`, `cp -a` and `rsync -X` set every listed attribute on the target,
 * and the computed ones (version, sync, status) would refuse.  They stay
 * readable by name, like CephFS's virtual ceph.dir.* attributes.
 * The root has two for the tools (docs/streamfs.1, "Tools"):
 *   user.streamfs.status             sync status of the mount, as text
 *   user.streamfs.sync_now[.SECS]    reading it seals and uploads everything
 *                                    (sync_now) and waits; not listed, so
 *                                    `getfattr -d` never triggers it
 * A getxattr, not a setxattr, so that it works on read-only (analysis) mounts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/xattr.h>

#include <unistd.h>

#include "fs_int.h"

#define X_VERSION "user.streamfs.version"
#define X_FRAMING "user.streamfs.framing"
#define X_SYNC "user.streamfs.sync"
#define X_ID_FIELD "user.streamfs.id_field"

static const char *framing_name(enum store_framing f)
{
	return f == STORE_RAW ? "raw" : "lines";
}

static int framing_parse(const char *v, size_t len, enum store_framing *out)
{
	/* Accept a trailing newline: `echo raw | xargs setfattr` habits. */
	if (len && v[len - 1] == '\n')
		len--;
	if (len == 5 && memcmp(v, "lines", 5) == 0)
		*out = STORE_LINES;
	else if (len == 3 && memcmp(v, "raw", 3) == 0)
		*out = STORE_RAW;
	else
		return -EINVAL;
	return 0;
}

/* Writes the value of NAME on N into BUF (at least 512 bytes). */
static int xattr_value(struct fs *fs, struct fs_node *n, const char *name,
		       char *buf, size_t cap)
{
	struct store_attr a;
	int rc;

	if (n->kind == FS_TENANT) {
		if (strcmp(name, X_ID_FIELD) == 0)
			return store_tenant_get_id_field(n->t, buf, cap) < 0 ?
				       -EIO : 0;
		if (strcmp(name, X_FRAMING) != 0)
			return -ENODATA;
		rc = store_tenant_stat(n->t, &a);
		if (rc)
			return rc;
		snprintf(buf, cap, "%s", framing_name(a.framing));
		return 0;
	}
	if (n->kind != FS_STREAM && n->kind != FS_VIEW)
		return -ENODATA;
	rc = store_stream_stat(n->t, n->id, &a);
	if (rc)
		return rc;
	if (strcmp(name, X_VERSION) == 0)
		snprintf(buf, cap, "%" PRIu64, a.version);
	else if (strcmp(name, X_FRAMING) == 0)
		snprintf(buf, cap, "%s", framing_name(a.framing));
	else if (strcmp(name, X_SYNC) == 0 && n->kind == FS_STREAM) {
		rc = sync_stream_status(atomic_load(&fs->sync), n->t, n->id,
					buf, cap);
		return rc < 0 ? rc : 0;
	} else
		return -ENODATA;
	return 0;
}

/* ---- root: status and sync now ---- */

static void put_time(char *buf, size_t cap, size_t *len, const char *key,
		     int64_t ns)
{
	struct timespec now;
	struct tm tm;
	time_t secs = (time_t)(ns / 1000000000);

	if (*len >= cap)
		return;
	if (!ns) {
		*len += (size_t)snprintf(buf + *len, cap - *len, "%s: never\n", key);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&secs, &tm);
	*len += (size_t)snprintf(buf + *len, cap - *len,
				 "%s: %04d-%02d-%02dT%02d:%02d:%02dZ (%lld s ago)\n",
				 key, tm.tm_year + 1900, tm.tm_mon + 1,
				 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
				 (long long)(now.tv_sec - secs));
}

#define STATUS_MAX 4000

/* The text of `streamfs status`: one "key: value" per line. */
static void status_text(struct fs *fs, char *buf, size_t cap)
{
	struct sync *sy = atomic_load(&fs->sync);
	struct fs_opts *o = fs->opts;
	struct sync_status st;
	uint64_t served;
	unsigned queues;
	size_t len = 0;

#define PUT(...) do { if (len < cap) len += (size_t)snprintf(buf + len, cap - len, __VA_ARGS__); } while (0)
	PUT("source: %s\n", o->source);
	PUT("mode: %s\n", o->replica ? "analysis (read-only replica)" :
	    o->ro ? "read-only" : o->remote ? "writer" : "writer (no remote)");
	PUT("remote: %s\n", o->remote ? o->remote_shown : "none");
	fs_ring_stats(fs->ring, &queues, &served);
	if (queues)
		PUT("transport: io_uring, %u queues, %llu requests\n", queues,
		    (unsigned long long)served);
	else
		PUT("transport: /dev/fuse\n");
	if (!sy || !o->remote) {
		buf[cap - 1] = '\0';
		return;
	}
	sync_get_status(sy, &st);
	if (!o->replica) {
		PUT("pending_segments: %llu\n", (unsigned long long)st.pending_segments);
		PUT("pending_bytes: %llu\n", (unsigned long long)st.pending_bytes);
		PUT("uploaded_segments: %llu\n", (unsigned long long)st.uploaded_segments);
		PUT("uploaded_bytes: %llu\n", (unsigned long long)st.uploaded_bytes);
		PUT("leases_held: %llu\n", (unsigned long long)st.leases_held);
		PUT("leases_refused: %llu\n", (unsigned long long)st.leases_refused);
		PUT("leases_fenced: %llu\n", (unsigned long long)st.leases_fenced);
		if (st.fenced[0]) {
			/* One "fenced: T: ..." line per tenant. */
			for (char *l = st.fenced, *e; *l; l = e + 1) {
				e = strchr(l, '\n');
				if (!e)
					break;
				PUT("fenced: %.*s\n", (int)(e - l), l);
			}
		}
	}
	PUT("cached_bytes: %llu\n", (unsigned long long)st.cached_bytes);
	if (o->cache_size)
		PUT("cache_size: %llu\n", (unsigned long long)o->cache_size);
	PUT("evicted_segments: %llu\n", (unsigned long long)st.evicted_segments);
	PUT("fetched_segments: %llu\n", (unsigned long long)st.fetched_segments);
	PUT("fetch_failures: %llu\n", (unsigned long long)st.fetch_failures);
	put_time(buf, cap, &len, "last_success", st.last_success_ns);
	if (st.last_error) {
		PUT("last_error: %s (%s)\n", strerror(-st.last_error),
		    st.last_error_what[0] ? st.last_error_what : "?");
		put_time(buf, cap, &len, "last_error_time", st.last_error_ns);
	} else {
		PUT("last_error: none\n");
	}
#undef PUT
	buf[cap - 1] = '\0';
}

/* Default wait of user.streamfs.sync_now without a .SECS suffix. */
#define SYNC_NOW_DEFAULT_S 300

/* Runs sync_now() in this FUSE thread, which waits on sync's condition
 * variable (no libcurl here).  Cut to the kernel's request timeout. */
static int sync_now_xattr(struct fs *fs, const char *suffix, char *buf,
			  size_t cap)
{
	struct sync *sy = atomic_load(&fs->sync);
	int64_t timeout = (int64_t)SYNC_NOW_DEFAULT_S * 1000000000;
	int rc;

	if (*suffix == '.') {
		char *end;
		long secs = strtol(suffix + 1, &end, 10);
		if (end == suffix + 1 || *end || secs <= 0 || secs > 86400)
			return -EINVAL;
		timeout = (int64_t)secs * 1000000000;
	} else if (*suffix) {
		return -ENODATA;
	}
	if (fs->park_max_ns && timeout > fs->park_max_ns)
		timeout = fs->park_max_ns;
	if (sy)
		rc = sync_now(sy, timeout);
	else if (!fs->opts->ro)	/* no remote: seal, nothing more */
		rc = store_roll_all(fs->st);
	else
		rc = 0;		/* a plain ro mount: nothing to seal or fetch */
	if (rc < 0)
		return rc;
	snprintf(buf, cap, "ok");
	return 0;
}

/* At most this many sync_now callers at once (each holds a FUSE thread). */
#define SYNC_NOW_MAX_CALLERS 2

/* sync_now seals, uploads and holds a worker thread for minutes: with
 * allow_other, only the mount's owner (who started the daemon) and root
 * may ask for it, and only a few at once (EBUSY beyond). */
static int sync_now_guarded(struct fs *fs, fuse_req_t req, const char *suffix,
			    char *buf, size_t cap)
{
	uid_t uid = fuse_req_ctx(req)->uid;
	int rc;

	if (uid != 0 && uid != getuid())
		return -EPERM;
	if (atomic_fetch_add(&fs->sync_now_callers, 1) >= SYNC_NOW_MAX_CALLERS) {
		atomic_fetch_sub(&fs->sync_now_callers, 1);
		return -EBUSY;
	}
	rc = sync_now_xattr(fs, suffix, buf, cap);
	atomic_fetch_sub(&fs->sync_now_callers, 1);
	return rc;
}

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 size_t size)
{
	char buf[STATUS_MAX];
	struct fs_node *n = fs_node_of(ino);
	struct fs *fs = fuse_req_userdata(req);
	size_t slen = strlen(FS_XATTR_SYNC_NOW);
	size_t len;
	int rc = 0;

	if (n->kind == FS_ROOT && strcmp(name, FS_XATTR_STATUS) == 0)
		status_text(fs, buf, sizeof(buf));
	else if (n->kind == FS_ROOT && strncmp(name, FS_XATTR_SYNC_NOW, slen) == 0)
		rc = sync_now_guarded(fs, req, name + slen, buf, sizeof(buf));
	else
		rc = xattr_value(fs, n, name, buf, sizeof(buf));
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	len = strlen(buf);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, len);
}

static int set_id_field(struct fs_node *n, const char *v, size_t len)
{
	char field[STORE_ID_FIELD_MAX + 1];

	if (len && v[len - 1] == '\n')
		len--;
	if (len == 0 || len > STORE_ID_FIELD_MAX || memchr(v, '\0', len))
		return -EINVAL;
	memcpy(field, v, len);
	field[len] = '\0';
	return store_tenant_set_id_field(n->t, field);
}

static int set_framing(struct fs_node *n, const char *v, size_t len)
{
	enum store_framing f;
	struct store_attr a;
	int rc = framing_parse(v, len, &f);

	if (rc)
		return rc;
	if (n->kind == FS_TENANT)
		return store_tenant_set_framing(n->t, f);
	rc = store_stream_stat(n->t, n->id, &a);
	if (rc)
		return rc;
	if (a.framing == f)
		return 0;	/* idempotent even on a non-empty stream */
	return store_stream_set_framing(n->t, n->id, f);
}

static int do_setxattr(struct fs *fs, struct fs_node *n, const char *name,
		       const char *value, size_t size)
{
	if (n->kind == FS_VIEW)
		return -EROFS;
	if (n->kind == FS_ROOT)
		return -ENOTSUP;
	if (strncmp(name, "user.streamfs.", 14) != 0)
		return -ENOTSUP;
	if (fs->opts->ro)
		return -EROFS;
	if (strcmp(name, X_FRAMING) == 0)
		return set_framing(n, value, size);
	if (n->kind == FS_TENANT && strcmp(name, X_ID_FIELD) == 0)
		return set_id_field(n, value, size);
	if (n->kind == FS_STREAM &&
	    (strcmp(name, X_VERSION) == 0 || strcmp(name, X_SYNC) == 0))
		return -EPERM;	/* read-only */
	return -ENOTSUP;
}

void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 const char *value, size_t size, int flags)
{
	struct fs *fs = fuse_req_userdata(req);
	int rc;

	if (flags & XATTR_CREATE)
		rc = -EEXIST;	/* every attribute of ours always exists */
	else
		rc = do_setxattr(fs, fs_node_of(ino), name, value, size);
	fuse_reply_err(req, -rc);
}

void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char stream_list[] = X_FRAMING;
	static const char tenant_list[] = X_FRAMING "\0" X_ID_FIELD;
	struct fs_node *n = fs_node_of(ino);
	const char *list = "";
	size_t len = 0;

	if (n->kind == FS_STREAM || n->kind == FS_VIEW) {
		list = stream_list;
		len = sizeof(stream_list);
	} else if (n->kind == FS_TENANT) {
		list = tenant_list;
		len = sizeof(tenant_list);
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
}

void fs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs_node *n = fs_node_of(ino);

	if (n->kind == FS_VIEW)
		fuse_reply_err(req, EROFS);
	else if (strncmp(name, "user.streamfs.", 14) == 0 && n->kind != FS_ROOT)
		fuse_reply_err(req, EPERM);
	else
		fuse_reply_err(req, ENODATA);
}
