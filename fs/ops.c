/*
 * Namespace operations: tenants at the root, streams inside tenants, views
 * (S@SEL, view.c) looked up beside streams but never listed.  The table of
 * all operations is at the end; open files are file.c's, extended
 * attributes xattr.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "fs_int.h"

/* All changes go through this mount, so names may be cached; attributes
 * may not (a growing stream must never show an old size). */
#define ENTRY_TIMEOUT 1.0

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* st_blksize of a stream: what one request carries, but in a raw stream,
 * where every write is one event, no more than the largest raw event. */
static blksize_t stream_io_size(const struct fs *fs,
				const struct store_attr *a)
{
	size_t io = fs->io_size, page = (size_t)fs->page_size;
	size_t most = fs_raw_event_max(page, io);

	if (most > fs->opts->store.max_event)
		most = fs->opts->store.max_event;
	most = most / page * page;

	if (a->framing == STORE_RAW && io > most)
		io = most > page ? most : page;
	return (blksize_t)io;
}

/* Read only through the page cache: a ",snap" view without ",follow", or a
 * stored snapshot nobody is writing.  The kernel fills their pages in
 * readahead windows of 128 KiB whatever the reader asks, so a bigger
 * st_blksize buys nothing; it costs every open: cat, stdio and Python size
 * their buffer by it, and a 1 MiB buffer is a fresh mmap whose 256 pages
 * fault in on every file (docs/BENCHMARKS.md, "Reading S@N,snap"). */
static bool read_through_cache(struct fs_node *n)
{
	if (n->kind == FS_VIEW)
		return n->sel.snap && !n->sel.follow;
	return n->kind == FS_SNAP && !atomic_load(&n->snap_writers);
}

static void fill_stat(struct fs *fs, struct fs_node *n,
		      const struct store_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = fs_ino_of(n);
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
	st->st_blksize = (blksize_t)fs->page_size;
	if (n->kind == FS_TENANT || n->kind == FS_ROOT) {
		st->st_mode = S_IFDIR | (a->mode & 07777);
		st->st_nlink = 2;
		return;
	}
	st->st_mode = S_IFREG | (a->mode & 07777);
	if (n->kind == FS_VIEW || n->kind == FS_SNAP)
		st->st_mode &= ~(mode_t)0222;
	st->st_nlink = 1;
	st->st_blksize = read_through_cache(n) ? FS_CACHED_IO_SIZE
					       : stream_io_size(fs, a);
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
}

/* A snapshot: its stream's owner and mode, its own size and commit time;
 * while a description writes it (not committed yet), the bytes it wrote. */
static int snap_stat(struct fs_node *n, struct store_attr *a)
{
	struct store_snapshot snap;
	int rc = store_stream_stat(n->t, n->id, a);

	if (rc)
		return rc;
	rc = store_snapshot_get(n->t, n->id, n->sel.n, &snap);
	if (!rc) {
		a->size = snap.length;
		a->mtime = a->ctime = (struct timespec){
			.tv_sec = snap.time_ns / 1000000000,
			.tv_nsec = snap.time_ns % 1000000000,
		};
		return 0;
	}
	if (rc != -ENOENT || !atomic_load(&n->snap_writers))
		return rc;
	a->size = atomic_load(&n->snap_written);
	clock_gettime(CLOCK_REALTIME, &a->mtime);
	a->ctime = a->mtime;
	return 0;
}

static int stat_node(struct fs *fs, struct fs_node *n, struct stat *st)
{
	struct store_attr a;
	int rc;

	switch (n->kind) {
	case FS_ROOT:
		fs_mutex_lock(&fs->lock);
		a = fs->root;
		fs_mutex_unlock(&fs->lock);
		rc = 0;
		break;
	case FS_TENANT:
		if (store_tenant_removed(n->t))
			return -ENOENT;
		rc = store_tenant_stat(n->t, &a);
		break;
	case FS_STREAM:
		rc = store_stream_stat(n->t, n->id, &a);
		break;
	case FS_VIEW:
		rc = fs_view_stat(n, &a);
		break;
	case FS_SNAP:
		rc = snap_stat(n, &a);
		break;
	default:
		return -EIO;
	}
	if (rc)
		return rc;
	fill_stat(fs, n, &a, st);
	return 0;
}

/* The entry the kernel gets for N: inode, timeouts and attributes (OUT). */
static int entry_of(struct fs *fs, struct fs_node *n,
		    struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = fs_ino_of(n);
	e->generation = 1;
	e->attr_timeout = 0;	/* sizes move: never cached (docs/CACHING.md) */
	e->entry_timeout = n->kind == FS_VIEW || n->kind == FS_SNAP ? 0
								     : ENTRY_TIMEOUT;
	return stat_node(fs, n, &e->attr);
}

/*
 * Replies with an entry for N, consuming the lookup taken on it.  Once the
 * kernel has the entry it may FORGET N on another thread, ordered after
 * our reads of N only by the kernel; the ref held across the reply makes
 * that order one the daemon (and ThreadSanitizer) can see.
 */
static void reply_entry(fuse_req_t req, struct fs_node *n)
{
	struct fs *fs = req_fs(req);
	struct fuse_entry_param e;
	int rc;

	fs_node_ref(fs, n);
	rc = entry_of(fs, n, &e);
	if (rc) {
		fs_node_forget(fs, n, 1);
		fuse_reply_err(req, -rc);
	} else if (fuse_reply_entry(req, &e) == -ENOENT) {
		fs_node_forget(fs, n, 1);	/* the caller went away */
	}
	fs_node_unref(fs, n);
}

static int lookup_tenant(struct fs *fs, const char *name, struct fs_node **out)
{
	struct store_tenant *t;
	int rc = store_tenant_get(fs->st, name, &t);

	if (rc)
		return rc;
	return fs_node_get(fs, FS_TENANT, t, 0, NULL, NULL, true, out);
}

/* S@snap=V: a node when S has that snapshot, named "snap=V#XXH3" inside
 * the daemon: one node is one blob, whose pages the kernel may keep
 * across opens even if the snapshot is removed and stored anew.  CREATE:
 * the node of the one being written, "snap=V", whether or not it exists. */
static int snap_node(struct fs *fs, struct store_tenant *t, const char *stream,
		     const char *sel_name, uint64_t version, bool create,
		     struct fs_node **out)
{
	struct store_snapshot snap;
	struct fs_sel sel = { .n = version };
	char name[64];
	uint64_t id;
	int rc = store_stream_lookup(t, stream, &id);

	if (rc || create)
		return rc ? rc : fs_node_get(fs, FS_SNAP, t, id, sel_name, &sel,
					     true, out);
	rc = store_snapshot_get(t, id, version, &snap);
	if (rc)
		return rc;
	sel.snap_sum = snap.checksum;
	snprintf(name, sizeof(name), "snap=%" PRIu64 "#%016" PRIx64, version,
		 snap.checksum);
	return fs_node_get(fs, FS_SNAP, t, id, name, &sel, true, out);
}

static int lookup_snap(struct fs *fs, struct store_tenant *t, const char *stream,
		       uint64_t version, struct fs_node **out)
{
	return snap_node(fs, t, stream, NULL, version, false, out);
}

static int lookup_stream(struct fs *fs, struct store_tenant *t,
			 const char *name, struct fs_node **out)
{
	const char *at = strchr(name, '@');
	struct fs_sel sel;
	uint64_t id;
	char stream[STORE_NAME_MAX + 1];
	char snap_name[STORE_NAME_MAX + 64];
	int rc;

	if (!at) {
		rc = store_stream_lookup(t, name, &id);
		if (rc)
			return rc;
		return fs_node_get(fs, FS_STREAM, t, id, NULL, NULL, true, out);
	}
	if ((size_t)(at - name) > STORE_NAME_MAX)
		return -ENOENT;
	memcpy(stream, name, (size_t)(at - name));
	stream[at - name] = '\0';
	if (!fs_snap_name_parse(at + 1, &sel.n))
		return lookup_snap(fs, t, stream, sel.n, out);
	if (fs_sel_parse(at + 1, &sel))
		return -ENOENT;
	rc = store_stream_lookup(t, stream, &id);
	if (rc)
		return rc;
	if (sel.snap) {
		rc = fs_view_snap_name(t, id, at + 1, &sel, snap_name,
				       sizeof(snap_name));
		if (rc)
			return rc;
	}
	return fs_node_get(fs, FS_VIEW, t, id, sel.snap ? snap_name : at + 1,
			   &sel, true, out);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_node *p = fs_node_of(parent), *n;
	int rc;

	if (p->kind == FS_ROOT)
		rc = lookup_tenant(fs, name, &n);
	else if (p->kind == FS_TENANT)
		rc = lookup_stream(fs, p->t, name, &n);
	else
		rc = -ENOTDIR;
	if (rc == -EINVAL)
		rc = -ENOENT;	/* a bad name simply does not exist */
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_node_forget(req_fs(req), fs_node_of(ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		fs_node_forget(req_fs(req), fs_node_of(forgets[i].ino),
			       forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;
	int rc = stat_node(req_fs(req), fs_node_of(ino), &st);

	(void)fi;
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, 0);
}

static void set_time(struct timespec *dst, const struct timespec *src,
		     bool now)
{
	if (now)
		clock_gettime(CLOCK_REALTIME, dst);
	else
		*dst = *src;
}

static int setattr_size(struct fs_node *n, off_t size)
{
	struct store_attr a;
	int rc;

	if (n->kind == FS_VIEW || n->kind == FS_SNAP)
		return -EROFS;
	if (n->kind != FS_STREAM)
		return -EISDIR;
	rc = store_stream_stat(n->t, n->id, &a);
	if (rc)
		return rc;
	/* Append-only: only "truncating" to the current size is allowed
	 * (rsync --append and friends do that). */
	return (uint64_t)size == a.size ? 0 : -EPERM;
}

static int root_setattr(struct fs *fs, const struct store_attr *a,
			unsigned mask)
{
	fs_mutex_lock(&fs->lock);
	if (mask & STORE_SET_MODE)
		fs->root.mode = a->mode;
	if (mask & STORE_SET_UID)
		fs->root.uid = a->uid;
	if (mask & STORE_SET_GID)
		fs->root.gid = a->gid;
	if (mask & STORE_SET_ATIME)
		fs->root.atime = a->atime;
	if (mask & STORE_SET_MTIME)
		fs->root.mtime = a->mtime;
	clock_gettime(CLOCK_REALTIME, &fs->root.ctime);
	fs_mutex_unlock(&fs->lock);
	return 0;
}

static int do_setattr(struct fs *fs, struct fs_node *n, struct stat *in,
		      int to_set)
{
	struct store_attr a = { 0 };
	unsigned mask = 0;
	int rc;

	if (to_set & FUSE_SET_ATTR_SIZE) {
		rc = setattr_size(n, in->st_size);
		if (rc)
			return rc;
	}
	if (to_set & FUSE_SET_ATTR_MODE) {
		a.mode = in->st_mode & 07777;
		mask |= STORE_SET_MODE;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		a.uid = in->st_uid;
		mask |= STORE_SET_UID;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		a.gid = in->st_gid;
		mask |= STORE_SET_GID;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
		set_time(&a.atime, &in->st_atim,
			 to_set & FUSE_SET_ATTR_ATIME_NOW);
		mask |= STORE_SET_ATIME;
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		set_time(&a.mtime, &in->st_mtim,
			 to_set & FUSE_SET_ATTR_MTIME_NOW);
		mask |= STORE_SET_MTIME;
	}
	if (!mask)
		return 0;
	if (fs->opts->ro)
		return -EROFS;
	if ((n->kind == FS_TENANT || n->kind == FS_STREAM) &&
	    (rc = fs_tenant_writable(fs, n->t)))
		return rc;
	switch (n->kind) {
	case FS_ROOT:
		return root_setattr(fs, &a, mask);
	case FS_TENANT:
		return store_tenant_setattr(n->t, &a, mask);
	case FS_STREAM:
		return store_stream_setattr(n->t, n->id, &a, mask);
	case FS_VIEW:
	case FS_SNAP:
		return -EROFS;
	default:
		return -EPERM;
	}
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = fs_node_of(ino);
	struct stat st;
	int rc;

	(void)fi;
	rc = do_setattr(fs, n, attr, to_set);
	if (!rc)
		rc = stat_node(fs, n, &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, 0);
}

static int check_writable(struct fs *fs)
{
	return fs->opts->ro ? -EROFS : 0;
}

int fs_tenant_writable(struct fs *fs, struct store_tenant *t)
{
	struct sync *sy = atomic_load(&fs->sync);

	if (fs->opts->ro)
		return -EROFS;
	/* Taken over by another writer: what it writes now is the truth.
	 * (Without a remote, every write(2) skips the look.) */
	if (sy && sync_tenant_fenced(sy, store_tenant_name(t)))
		return -EROFS;
	return 0;
}

/* How long mkdir waits for the remote's answer about a tenant's lease: a
 * remote that hangs must not hold up the writer. */
#define CLAIM_WAIT_NS (5 * 1000000000LL)

/* Before tenant NAME is created: with a remote, its lease, so that a
 * tenant another writer holds is refused (EBUSY) before it exists here.
 * Unanswered in time, the tenant is made as when the remote is down: its
 * lease is taken when the remote answers (and a holder then reported
 * loudly, nothing of the tenant uploaded). */
static int claim_tenant(struct fs *fs, const char *name)
{
	struct sync *sy = atomic_load(&fs->sync);
	struct store_tenant *t;
	int rc;

	if (!sy || !store_name_valid(name) ||
	    store_tenant_get(fs->st, name, &t) == 0)
		return 0;	/* the store answers EINVAL or EEXIST */
	rc = sync_tenant_claim(sy, name, CLAIM_WAIT_NS);
	return rc == -ETIMEDOUT ? 0 : rc;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = req_fs(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fs_node *n;
	int rc = check_writable(fs);

	if (!rc && fs_node_of(parent)->kind != FS_ROOT)
		rc = -EPERM;	/* no directories below a tenant */
	if (!rc)
		rc = claim_tenant(fs, name);
	if (!rc)
		rc = store_tenant_create(fs->st, name, mode & 07777, ctx->uid,
					 ctx->gid);
	else if (rc == 1)	/* made from its published history */
		rc = 0;
	if (!rc)
		rc = lookup_tenant(fs, name, &n);
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, n);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	int rc = check_writable(fs);

	if (!rc && fs_node_of(parent)->kind != FS_ROOT)
		rc = -ENOTDIR;
	if (!rc)
		rc = store_tenant_remove(fs->st, name);
	fuse_reply_err(req, -rc);
}

/* Creates stream NAME in P (mknod and create) and takes a lookup on its
 * node, *out (OUT). */
static int create_stream(struct fs *fs, fuse_req_t req, struct fs_node *p,
			 const char *name, mode_t mode, struct fs_node **out)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	uint64_t id;
	int rc = check_writable(fs);

	if (rc)
		return rc;
	if (p->kind != FS_TENANT || !S_ISREG(mode))
		return -EPERM;
	if (strchr(name, '@') || !store_name_valid(name))
		return -EINVAL;
	rc = fs_tenant_writable(fs, p->t);
	if (rc)
		return rc;
	rc = store_stream_create(p->t, name, mode & 07777, ctx->uid, ctx->gid,
				 &id);
	if (rc)
		return rc;
	return fs_node_get(fs, FS_STREAM, p->t, id, NULL, NULL, true, out);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fs_node *n;
	int rc = create_stream(req_fs(req), req, fs_node_of(parent), name,
			       mode, &n);

	(void)rdev;
	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, n);
}

/* S@snap=V: the node of the snapshot to write, opened by
 * fs_snap_create() (file.c).  -EINVAL for any other name with '@'. */
static int create_snap(struct fs *fs, struct fs_node *p, const char *name,
		       struct fs_node **out)
{
	char stream[STORE_NAME_MAX + 1];
	const char *at = strchr(name, '@');
	uint64_t version;
	int rc = check_writable(fs);

	if (rc)
		return rc;
	if (p->kind != FS_TENANT)
		return -EPERM;
	if ((size_t)(at - name) > STORE_NAME_MAX ||
	    fs_snap_name_parse(at + 1, &version))
		return -EINVAL;
	memcpy(stream, name, (size_t)(at - name));
	stream[at - name] = '\0';
	return snap_node(fs, p->t, stream, at + 1, version, true, out);
}

/* Creates the stream, or a snapshot, and opens it (file.c). */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fuse_entry_param e;
	struct fs_node *n;
	struct fs_file *fh = NULL;
	bool snap = strchr(name, '@') != NULL;
	int rc = snap ? create_snap(fs, fs_node_of(parent), name, &n)
		      : create_stream(fs, req, fs_node_of(parent), name, mode, &n);

	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (snap) {
		rc = fs_snap_create(fs, n, fi, &fh);
		if (!rc)
			rc = entry_of(fs, n, &e);
	} else {
		rc = entry_of(fs, n, &e);
		if (!rc)
			rc = fs_file_open(fs, n, fi, &fh);
	}
	if (rc) {
		fs_file_free(fs, fh);
		fs_node_forget(fs, n, 1);
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)fh;
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		fs_file_free(fs, fh);
		fs_node_forget(fs, n, 1);
	}
}

/* rm S@snap=V removes a snapshot; other views are not entries to delete. */
static void unlink_snap(fuse_req_t req, struct fs *fs, struct fs_node *p,
			const char *name)
{
	char stream[STORE_NAME_MAX + 1];
	const char *at = strchr(name, '@');
	uint64_t version, id;
	int rc = 0;

	if ((size_t)(at - name) > STORE_NAME_MAX ||
	    fs_snap_name_parse(at + 1, &version))
		rc = -EROFS;
	if (!rc && fs->opts->nodelete)
		rc = -EPERM;
	if (!rc) {
		memcpy(stream, name, (size_t)(at - name));
		stream[at - name] = '\0';
		rc = store_stream_lookup(p->t, stream, &id);
	}
	if (!rc)
		rc = store_snapshot_remove(p->t, id, version);
	fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_node *p = fs_node_of(parent);
	uint64_t id;
	int rc = check_writable(fs);

	if (!rc && p->kind != FS_TENANT)
		rc = -EPERM;
	if (!rc && strchr(name, '@')) {
		unlink_snap(req, fs, p, name);
		return;
	}
	if (!rc && fs->opts->nodelete)
		rc = -EPERM;
	if (!rc)
		rc = fs_tenant_writable(fs, p->t);
	if (!rc)
		rc = store_stream_lookup(p->t, name, &id);
	if (!rc)
		rc = store_stream_remove(p->t, id);
	fuse_reply_err(req, -rc);
}

static int do_rename(struct fs *fs, struct fs_node *p, const char *name,
		     struct fs_node *np, const char *newname, unsigned flags)
{
	uint64_t id, other;
	int rc = check_writable(fs);

	if (rc)
		return rc;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;	/* RENAME_WHITEOUT and anything newer */
	if (p->kind != FS_TENANT || np->kind != FS_TENANT)
		return -EPERM;	/* tenants are not renamed */
	if (p->t != np->t)
		return -EXDEV;
	if (strchr(name, '@') || strchr(newname, '@'))
		return strchr(name, '@') ? -EROFS : -EINVAL;
	if (flags & RENAME_EXCHANGE)
		return -EPERM;
	if (!store_name_valid(newname))
		return -EINVAL;
	rc = fs_tenant_writable(fs, p->t);
	if (rc)
		return rc;
	rc = store_stream_lookup(p->t, name, &id);
	if (rc)
		return rc;
	if (store_stream_lookup(p->t, newname, &other) == 0) {
		if (flags & RENAME_NOREPLACE)
			return -EEXIST;
		if (other == id)
			return 0;
	}
	return store_stream_rename(p->t, id, newname);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	int rc = do_rename(req_fs(req), fs_node_of(parent), name,
			   fs_node_of(newparent), newname, flags);

	fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

/* ---- directories ---- */

struct fs_dir_list {
	char **names;
	size_t count, cap;
	struct fs_dir_list *next, *prev;	/* fs->dirs; fs->lock */
};

static int collect_tenant(void *arg, const char *name)
{
	struct fs_dir_list *d = arg;

	if (STORE_ARRAY_RESERVE(d->names, d->cap, d->count + 1, 16))
		return -ENOMEM;
	d->names[d->count] = strdup(name);
	if (!d->names[d->count])
		return -ENOMEM;
	d->count++;
	return 0;
}

static void dir_list_free(struct fs_dir_list *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->count; i++)
		free(d->names[i]);
	free(d->names);
	free(d);
}

static void dir_list_link(struct fs *fs, struct fs_dir_list *d)
{
	fs_mutex_lock(&fs->lock);
	d->next = fs->dirs;
	if (d->next)
		d->next->prev = d;
	fs->dirs = d;
	fs_mutex_unlock(&fs->lock);
}

static void dir_list_unlink(struct fs *fs, struct fs_dir_list *d)
{
	fs_mutex_lock(&fs->lock);
	if (d->prev)
		d->prev->next = d->next;
	else
		fs->dirs = d->next;
	if (d->next)
		d->next->prev = d->prev;
	fs_mutex_unlock(&fs->lock);
}

void fs_dirs_release(struct fs *fs)
{
	while (fs->dirs) {
		struct fs_dir_list *d = fs->dirs;

		fs->dirs = d->next;
		dir_list_free(d);
	}
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = fs_node_of(ino);
	struct fs_dir_list *d;
	int rc;

	fi->fh = 0;
	if (n->kind == FS_TENANT && store_tenant_removed(n->t)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != FS_ROOT) {
		fuse_reply_open(req, fi);
		return;
	}
	/* The root lists tenants by name: snapshot them at open so that
	 * offsets stay stable. */
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = store_tenant_list(fs->st, collect_tenant, d);
	if (rc) {
		dir_list_free(d);
		fuse_reply_err(req, rc < 0 ? -rc : EIO);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	dir_list_link(fs, d);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		dir_list_unlink(fs, d);
		dir_list_free(d);
	}
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs_dir_list *d = (struct fs_dir_list *)(uintptr_t)fi->fh;

	(void)ino;
	if (d) {
		dir_list_unlink(req_fs(req), d);
		dir_list_free(d);
	}
	fuse_reply_err(req, 0);
}

struct dir_buf {
	fuse_req_t req;
	char *buf;
	size_t size, used;
};

/* Adds one entry; returns 1 when the buffer is full. */
static int dir_add(struct dir_buf *b, const char *name, mode_t mode,
		   off_t next)
{
	/* d_ino 0 would hide the entry from readdir(3); real inode numbers
	 * come from lookup. */
	struct stat st = { .st_ino = (ino_t)next, .st_mode = mode };
	size_t len = fuse_add_direntry(b->req, b->buf + b->used,
				       b->size - b->used, name, &st, next);

	if (len > b->size - b->used)
		return 1;
	b->used += len;
	return 0;
}

static int add_stream(void *arg, const char *name,
		      const struct store_attr *attr)
{
	struct dir_buf *b = arg;

	/* Cookie: the stream id plus the two dot entries. */
	return dir_add(b, name, S_IFREG, (off_t)(attr->id + 2));
}

static int readdir_fill(struct fs_node *n, struct fuse_file_info *fi,
			struct dir_buf *b, off_t off)
{
	if (off < 1 && dir_add(b, ".", S_IFDIR, 1))
		return 0;
	if (off < 2 && dir_add(b, "..", S_IFDIR, 2))
		return 0;
	if (n->kind == FS_ROOT) {
		struct fs_dir_list *d = (struct fs_dir_list *)(uintptr_t)fi->fh;
		for (size_t i = off < 2 ? 0 : (size_t)off - 2;
		     d && i < d->count; i++)
			if (dir_add(b, d->names[i], S_IFDIR, (off_t)i + 3))
				return 0;
		return 0;
	}
	int rc = store_stream_list(n->t, off < 2 ? 0 : (uint64_t)off - 2,
				   add_stream, b);
	return rc < 0 ? rc : 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off, struct fuse_file_info *fi)
{
	struct dir_buf b = { .req = req, .size = size };
	int rc;

	b.buf = malloc(size);
	if (!b.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = readdir_fill(fs_node_of(ino), fi, &b, off);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, b.buf, b.used);
	free(b.buf);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = req_fs(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(fs->opts->source, &sv)) {
		fuse_reply_err(req, errno);
		return;
	}
	sv.f_namemax = STORE_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	fuse_reply_err(req, -store_sync(req_fs(req)->st));
}

/* Preferred I/O size of streams: what one request may carry (max_write, 1 MiB
 * with libfuse's buffers), so that cp and cat send one request where 128 KiB
 * would take eight.  cp of 1 GiB, 12 copies each, alternating: median 697
 * against 557 MB/s, and 440 against 630 ms of the daemon's CPU at best. */
#define IO_SIZE_MAX (1024u << 10)

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;
	size_t io = conn->max_write < IO_SIZE_MAX ? conn->max_write : IO_SIZE_MAX;

	fs->io_size = io > (size_t)fs->page_size ? io : (size_t)fs->page_size;
	/* Keep cached pages of a growing stream: we invalidate the last page
	 * ourselves after each commit (docs/CACHING.md). */
	if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA)
		conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.release = fs_release,
	.fsync = fs_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.removexattr = fs_removexattr,
	.create = op_create,
};

const struct fuse_lowlevel_ops *fs_lowlevel_ops(void)
{
	return &ops;
}
