/*
 * Extended attributes of the contract:
 *   streams: user.streamfs.version (ro), .framing (rw while empty), .sync (ro),
 *            .snapshots and .segments (ro; one "VERSION TIME" line each:
 *            the snapshots' versions and commit times, the segments' first
 *            versions and the commit times of those; E2BIG beyond 64 KiB),
 *            and their pages .snapshots.from.V and .segments.from.V (the
 *            lines of versions >= V, as many as fit in 64 KiB; not listed)
 *   tenants: user.streamfs.framing, user.streamfs.id_field (rw)
 * Views expose the version and framing of their stream, read-only.
 * listxattr names only what a copy can carry over (framing, id_field):
 * `mv`, `cp -a` and `rsync -X` set every listed attribute on the target,
 * and the computed ones (version, sync, status) would refuse.  They stay
 * readable by name, like CephFS's virtual ceph.dir.* attributes.
 * The root has two for the tools (docs/streamfs.1, "Tools"):
 *   user.streamfs.status             state of the mount, as text (status.c)
 *   user.streamfs.status.json        the same as JSON
 *   user.streamfs.sync_now[.SECS]    reading it puts everything on the
 *                                    remote (sync_now) and waits; not listed, so
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
#define X_SNAPSHOTS "user.streamfs.snapshots"
#define X_SEGMENTS "user.streamfs.segments"
#define LIST_MAX 65536	/* Linux's largest xattr value (XATTR_SIZE_MAX) */

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

/* ---- lists: snapshots and segments ---- */

/* A growing "VERSION TIME\n" text, at most LIST_MAX bytes.  A whole list
 * that does not fit is E2BIG; a page (NAME.from.V) stops at the last whole
 * line that fits, and the reader asks again from the version after it. */
struct list_text {
	char *buf;
	size_t len, cap;
	bool page;
};

#define LIST_FULL 1	/* a page is full: stop, no error */

static int list_line(struct list_text *l, uint64_t version, int64_t ns)
{
	char line[80];
	struct tm tm;
	time_t secs = (time_t)(ns / 1000000000);
	int n;

	gmtime_r(&secs, &tm);
	n = snprintf(line, sizeof(line), "%" PRIu64 " %04d-%02d-%02dT%02d:%02d:"
		     "%02d.%09dZ\n", version, tm.tm_year + 1900, tm.tm_mon + 1,
		     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     (int)(ns % 1000000000));
	if (l->len + (size_t)n > LIST_MAX)
		return l->page ? LIST_FULL : -E2BIG;
	if (STORE_ARRAY_RESERVE(l->buf, l->cap, l->len + (size_t)n + 1, 1024))
		return -ENOMEM;
	memcpy(l->buf + l->len, line, (size_t)n + 1);
	l->len += (size_t)n;
	return 0;
}

static int snapshot_line(void *arg, const struct store_snapshot *snap)
{
	return list_line(arg, snap->version, snap->time_ns);
}

static int segment_line(void *arg, uint64_t first_version, int64_t time_ns)
{
	return list_line(arg, first_version, time_ns);
}

/* Whether NAME is the list attribute LIST, whole (*from = 0) or as the
 * page LIST.from.V (*from = V >= 1). */
static bool list_name(const char *name, const char *list, uint64_t *from)
{
	static const char sep[] = ".from.";
	size_t len = strlen(list);
	char *end;

	*from = 0;
	if (strncmp(name, list, len) != 0)
		return false;
	name += len;
	if (!*name)
		return true;
	if (strncmp(name, sep, sizeof(sep) - 1) != 0)
		return false;
	name += sizeof(sep) - 1;
	if (*name < '1' || *name > '9')
		return false;
	errno = 0;
	*from = strtoull(name, &end, 10);
	return !*end && errno == 0;
}

/* The value of a list attribute NAME of stream node N: *L (OUT, the
 * caller frees l->buf); -ENODATA for any other name. */
static int list_value(struct fs_node *n, const char *name, struct list_text *l)
{
	uint64_t from;
	int rc;

	memset(l, 0, sizeof(*l));
	if (n->kind != FS_STREAM)
		return -ENODATA;
	if (list_name(name, X_SNAPSHOTS, &from)) {
		l->page = from > 0;
		rc = store_snapshot_list(n->t, n->id, from, snapshot_line, l);
	} else if (list_name(name, X_SEGMENTS, &from)) {
		l->page = from > 0;
		rc = store_stream_segment_starts(n->t, n->id, from,
						 segment_line, l);
	} else {
		return -ENODATA;
	}
	if (rc == LIST_FULL)
		rc = 0;
	if (!rc && !l->buf)
		l->buf = strdup("");
	return rc ? rc : l->buf ? 0 : -ENOMEM;
}

/* ---- root: status and sync now ---- */

/* The status (status.c) as text, or as JSON with AS_JSON, in *OUT
 * (malloc'd). */
static int status_value(struct fs *fs, bool as_json, char **out)
{
	struct fs_status st;
	int rc = fs_status_get(fs, &st);

	*out = NULL;
	if (!rc && as_json) {
		*out = fs_status_json(&st);
	} else if (!rc) {
		*out = malloc(FS_STATUS_MAX);
		if (*out)
			fs_status_text(&st, *out, FS_STATUS_MAX);
	}
	fs_status_release(&st);
	if (!rc && !*out)
		rc = -ENOMEM;
	return rc;
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

/* Answers a getxattr of SIZE bytes (0: the length) with VALUE. */
static void reply_value(fuse_req_t req, const char *value, size_t len,
			size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 size_t size)
{
	char small[512], *status = NULL, *buf = small;
	struct fs_node *n = fs_node_of(ino);
	struct fs *fs = fuse_req_userdata(req);
	size_t slen = strlen(FS_XATTR_SYNC_NOW);
	struct list_text l;
	size_t len;
	int rc;

	rc = list_value(n, name, &l);
	if (rc != -ENODATA) {
		if (!rc)
			reply_value(req, l.buf, l.len, size);
		else
			fuse_reply_err(req, -rc);
		free(l.buf);
		return;
	}
	rc = 0;
	if (n->kind == FS_ROOT && (strcmp(name, FS_XATTR_STATUS) == 0 ||
				   strcmp(name, FS_XATTR_STATUS_JSON) == 0)) {
		rc = status_value(fs, strcmp(name, FS_XATTR_STATUS) != 0,
				  &status);
		buf = status;
	} else if (n->kind == FS_ROOT && strncmp(name, FS_XATTR_SYNC_NOW, slen) == 0)
		rc = sync_now_guarded(fs, req, name + slen, buf, sizeof(small));
	else
		rc = xattr_value(fs, n, name, buf, sizeof(small));
	len = rc ? 0 : strlen(buf);
	if (rc)
		fuse_reply_err(req, -rc);
	else if (size && len > FS_STATUS_MAX)
		fuse_reply_err(req, E2BIG);
	else
		reply_value(req, buf, len, size);
	free(status);
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
	uint64_t from;

	if (n->kind == FS_VIEW || n->kind == FS_SNAP)
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
	    (strcmp(name, X_VERSION) == 0 || strcmp(name, X_SYNC) == 0 ||
	     list_name(name, X_SNAPSHOTS, &from) ||
	     list_name(name, X_SEGMENTS, &from)))
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
