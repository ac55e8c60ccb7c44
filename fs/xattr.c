/*
 * Extended attributes of the contract:
 *   streams: user.streamfs.version (ro), .framing (rw while empty), .sync (ro)
 *   tenants: user.streamfs.framing, user.streamfs.id_field (rw)
 * Views expose the version and framing of their stream, read-only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>

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
static int xattr_value(struct fs_node *n, const char *name, char *buf,
		       size_t cap)
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
	else if (strcmp(name, X_SYNC) == 0 && n->kind == FS_STREAM)
		snprintf(buf, cap, "local");	/* no remote in this build */
	else
		return -ENODATA;
	return 0;
}

void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 size_t size)
{
	char buf[STORE_ID_FIELD_MAX + 64];
	int rc = xattr_value(fs_node_of(ino), name, buf, sizeof(buf));
	size_t len;

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
	static const char stream_list[] = X_VERSION "\0" X_FRAMING "\0" X_SYNC;
	static const char view_list[] = X_VERSION "\0" X_FRAMING;
	static const char tenant_list[] = X_FRAMING "\0" X_ID_FIELD;
	struct fs_node *n = fs_node_of(ino);
	const char *list = "";
	size_t len = 0;

	if (n->kind == FS_STREAM) {
		list = stream_list;
		len = sizeof(stream_list);
	} else if (n->kind == FS_VIEW) {
		list = view_list;
		len = sizeof(view_list);
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
