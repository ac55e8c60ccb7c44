/*
 * Open files: streams (append-only writes, partial lines held per open file
 * description), views (read-only, optionally following the end) and
 * snapshots (S@snap=V: written once by the description that created it,
 * committed at its first flush, read-only afterwards).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_int.h"

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_file *file_of(struct fuse_file_info *fi)
{
	return (struct fs_file *)(uintptr_t)fi->fh;
}

/* ---- open and close ---- */

static void file_link(struct fs *fs, struct fs_file *fh)
{
	fs_mutex_lock(&fs->lock);
	fh->prev = NULL;
	fh->next = fs->files;
	if (fs->files)
		fs->files->prev = fh;
	fs->files = fh;
	fs_mutex_unlock(&fs->lock);
}

static void file_unlink(struct fs *fs, struct fs_file *fh)
{
	fs_mutex_lock(&fs->lock);
	if (fh->prev)
		fh->prev->next = fh->next;
	else if (fs->files == fh)
		fs->files = fh->next;
	if (fh->next)
		fh->next->prev = fh->prev;
	fh->next = fh->prev = NULL;
	fs_mutex_unlock(&fs->lock);
}

void fs_file_free(struct fs *fs, struct fs_file *fh)
{
	if (!fh)
		return;
	file_unlink(fs, fh);
	if (fh->snap_w) {
		store_snapshot_abort(fh->snap_w);
		atomic_fetch_sub(&fh->node->snap_writers, 1);
	}
	if (fh->counted_writer)
		atomic_fetch_sub(&fh->node->writers, 1);
	if (fh->snap_fd >= 0)
		close(fh->snap_fd);
	if (fh->stream)
		fs_node_unref(fs, fh->stream);
	if (fh->node)
		fs_node_unref(fs, fh->node);
	fs_mutex_destroy(&fh->lock);
	free(fh->held);
	free(fh);
}

/* How long after its last change a stream counts as quiet. */
#define QUIET_NS (1000 * 1000000ll)

/* Whether a reader of stream node N, whose attributes are A, may use the
 * page cache: only while nobody writes it.  A reader's GETATTR reply that
 * the kernel applies late, after newer bytes were cached, zero-fills the
 * cached page past the size it carried, and no invalidation can come after
 * it (docs/CACHING.md): so a stream being appended to is read without the
 * page cache, through the daemon. */
static bool stream_quiet(struct fs_node *n, const struct store_attr *a)
{
	struct timespec now;
	int64_t age;

	if (atomic_load(&n->writers))
		return false;
	clock_gettime(CLOCK_REALTIME, &now);
	age = (int64_t)(now.tv_sec - a->ctime.tv_sec) * 1000000000ll +
	      (now.tv_nsec - a->ctime.tv_nsec);
	return age >= QUIET_NS;
}

static int open_stream(struct fs *fs, struct fs_node *n, int flags,
		       struct fs_file *fh, struct fuse_file_info *fi)
{
	struct store_attr a;
	int rc = store_stream_stat(n->t, n->id, &a);

	if (rc)
		return rc;
	fh->writable = (flags & O_ACCMODE) != O_RDONLY;
	if (fh->writable && fs->opts->ro)
		return -EROFS;
	if ((flags & O_TRUNC) && a.size > 0)
		return -EPERM;	/* append-only: O_TRUNC only on an empty stream */
	fh->append = flags & O_APPEND;
	fh->version = a.version;
	fh->end = a.size;
	if (fh->writable) {
		/* Writes go straight to the store, never through pages. */
		fi->direct_io = 1;
		atomic_fetch_add(&n->writers, 1);
		fh->counted_writer = true;
	} else if (!stream_quiet(n, &a)) {
		fi->direct_io = 1;
	} else {
		/* Committed bytes never change: keep pages across opens;
		 * commits invalidate the last page (docs/CACHING.md). */
		atomic_store(&n->cached, true);
		fi->keep_cache = 1;
	}
	return 0;
}

static int open_view(struct fs *fs, struct fs_node *n, int flags,
		     struct fs_file *fh, struct fuse_file_info *fi)
{
	struct store_attr a;
	uint64_t base;
	int rc;

	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;

	if (n->sel.snap) {
		rc = fs_view_open_snap(n, fh);
	} else {
		rc = fs_view_base(n, &base, NULL);
		if (!rc)
			atomic_store(&fh->base, base);
	}
	if (rc)
		return rc;
	rc = fs_node_get(fs, FS_STREAM, n->t, n->id, NULL, NULL, false,
			 &fh->stream);
	if (rc)
		return rc;
	fh->follow = n->sel.follow;
	fi->direct_io = 1;
	if (!n->sel.snap || fh->follow)
		return 0;	/* its bytes shift with its selector */
	rc = store_stream_stat(n->t, n->id, &a);
	if (!rc && stream_quiet(fh->stream, &a)) {
		/* Its bytes only grow at the end (view.c): cached as a
		 * stream's, commits invalidate the end (follow.c). */
		fs_node_add_view(fs, fh->stream, n);
		atomic_store(&n->cached, true);
		fi->direct_io = 0;
		fi->keep_cache = 1;
	}
	return rc;
}

/* A snapshot exists once it can be looked up, and never changes. */
static int open_snap(struct fs_node *n, int flags, struct fs_file *fh,
		     struct fuse_file_info *fi)
{
	int rc;

	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EEXIST;
	/* -ENOENT when removed, maybe stored anew: another node */
	fh->snap_row = (struct store_snapshot){
		.stream = n->id, .version = n->sel.n, .checksum = n->sel.snap_sum };
	rc = store_snapshot_open(n->t, &fh->snap_row, &fh->snap_fd);
	if (rc)
		return rc;
	fh->snap_len = fh->snap_row.length;
	fi->keep_cache = 1;
	return 0;
}

/* The description of the snapshot being created (fs_snap_create()). */
static int open_new_snap(struct fs *fs, struct fs_node *n, int flags,
			 struct fs_file *fh, struct fuse_file_info *fi)
{
	int rc;

	if ((flags & O_ACCMODE) == O_RDONLY)
		return -EINVAL;	/* nothing to store */
	fh->writable = true;
	fi->direct_io = 1;
	rc = store_snapshot_begin(n->t, n->id, n->sel.n, fs->opts->max_snapshot,
				  &fh->snap_w);
	if (!rc)
		atomic_fetch_add(&n->snap_writers, 1);
	return rc;
}

static int file_open(struct fs *fs, struct fs_node *n, struct fuse_file_info *fi,
		     bool create, struct fs_file **out)
{
	struct fs_file *fh;
	int rc;

	if (n->kind == FS_ROOT || n->kind == FS_TENANT)
		return -EISDIR;
	fh = calloc(1, sizeof(*fh));
	if (!fh)
		return -ENOMEM;
	fs_mutex_init(&fh->lock, FS_LOCK_FILE);
	fs_node_ref(fs, n);
	fh->node = n;
	fh->snap_fd = -1;
	if (n->kind == FS_STREAM)
		rc = open_stream(fs, n, fi->flags, fh, fi);
	else if (n->kind == FS_SNAP && create)
		rc = open_new_snap(fs, n, fi->flags, fh, fi);
	else if (n->kind == FS_SNAP)
		rc = open_snap(n, fi->flags, fh, fi);
	else
		rc = open_view(fs, n, fi->flags, fh, fi);
	if (rc) {
		fs_file_free(fs, fh);
		return rc;
	}
	file_link(fs, fh);
	*out = fh;
	return 0;
}

int fs_file_open(struct fs *fs, struct fs_node *n,
		 struct fuse_file_info *fi, struct fs_file **out)
{
	return file_open(fs, n, fi, false, out);
}

int fs_snap_create(struct fs *fs, struct fs_node *n, struct fuse_file_info *fi,
		   struct fs_file **out)
{
	if (fs->opts->ro)
		return -EROFS;
	return file_open(fs, n, fi, true, out);
}

/* Commits the snapshot FH created, once.  Called with fh->lock held. */
static int commit_snap(struct fs_file *fh)
{
	int rc;

	fs_assert_held(&fh->lock);
	if (!fh->snap_w)
		return 0;
	rc = store_snapshot_commit(fh->snap_w);
	fh->snap_w = NULL;
	atomic_fetch_sub(&fh->node->snap_writers, 1);
	return rc;
}

static int commit_held(struct fs_file *fh);

/* Descriptions the kernel did not release (a clean stop): their partial
 * lines are committed as a close would, failures logged. */
void fs_files_release(struct fs *fs)
{
	while (fs->files) {
		struct fs_file *fh = fs->files;
		int rc;

		fs_mutex_lock(&fh->lock);
		rc = commit_held(fh);
		if (!rc)
			rc = commit_snap(fh);
		fs_mutex_unlock(&fh->lock);
		if (rc)
			fs_log(LOG_ERR, "partial line or snapshot lost at "
				"unmount: %s", strerror(-rc));
		fs_file_free(fs, fh);
	}
}

void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *fh;
	int rc = fs_file_open(fs, fs_node_of(ino), fi, &fh);

	if (rc) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)fh;
	if (fuse_reply_open(req, fi) == -ENOENT)
		fs_file_free(fs, fh);	/* interrupted: no release will come */
}

/* Commits a held partial line with its '\n' (close of the description).
 * Called with fh->lock held. */
static int commit_held(struct fs_file *fh)
{
	struct store_append app = { 0 };
	struct store_append_result res;
	int rc;

	fs_assert_held(&fh->lock);
	if (!fh->held_len)
		return 0;
	app.buf = fh->held;
	app.len = fh->held_len;
	app.expected = fh->append ? STORE_ANY_VERSION : fh->version;
	app.final = true;
	rc = store_append(fh->node->t, fh->node->id, &app, &res);
	/* Reported once, from flush; the line is gone either way. */
	fh->held_len = 0;
	if (!rc && !fh->append)
		fh->version = res.version;
	return rc;
}

void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *fh = file_of(fi);
	int rc;

	(void)ino;
	fs_mutex_lock(&fh->lock);
	rc = commit_held(fh);
	if (!rc)
		rc = commit_snap(fh);
	if (!rc)
		rc = fh->error;
	fh->error = 0;
	fh->dropping = false;	/* a line dropped ends here as a held one would */
	fs_mutex_unlock(&fh->lock);
	fs_inval_wait(fs);
	fuse_reply_err(req, -rc);
}

void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *fh = file_of(fi);
	int rc;

	(void)ino;
	fs_mutex_lock(&fh->lock);
	rc = commit_held(fh);
	if (!rc)
		rc = commit_snap(fh);
	fs_mutex_unlock(&fh->lock);
	if (rc)
		fs_log(LOG_ERR, "partial line or snapshot lost at release: %s",
			strerror(-rc));
	fs_inval_wait(fs);
	fs_file_free(fs, fh);
	fuse_reply_err(req, 0);
}

void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi)
{
	struct fs_node *n = fs_node_of(ino);
	struct fs_file *fh = file_of(fi);
	int rc;

	(void)datasync;
	/* A snapshot's writer is the description's: under its lock. */
	rc = n->kind == FS_SNAP ? 0 : store_sync_stream(n->t, n->id);
	fs_mutex_lock(&fh->lock);
	if (!rc && fh->snap_w)
		rc = store_snapshot_sync(fh->snap_w);
	if (!rc)
		rc = fh->error;
	fh->error = 0;
	fs_mutex_unlock(&fh->lock);
	fuse_reply_err(req, -rc);
}

/* ---- read ---- */

/* Reads SIZE bytes at OFF, or up to the end.  store_read() may stop at a
 * segment boundary (an evicted segment is fetched separately), but the
 * kernel takes a short reply to a page-cache read for the end of file and
 * zero-fills the rest of the page, keeping it cached: so a short count only
 * ever means end of file, and an error of store_read() is the answer even
 * when some bytes came before it (contract: EIO, never zero-filled bytes). */
static ssize_t read_full(struct fs_node *n, char *buf, size_t size,
			 uint64_t off)
{
	size_t done = 0;

	while (done < size) {
		ssize_t got = store_read(n->t, n->id, buf + done, size - done,
					 off + done);
		if (got == -ENOENT)
			break;	/* removed: end of file */
		if (got < 0)
			return got;
		if (got == 0)
			break;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

/* Answers a read of SIZE bytes at OFF of node N, through a buffer: the
 * store checks the bytes against their batch hashes on their way. */
static void read_reply(fuse_req_t req, struct fs_node *n, size_t size,
		       uint64_t off)
{
	void *buf = fs_read_buffer(size);
	ssize_t got = buf ? read_full(n, buf, size, off) : -ENOMEM;

	if (got == -ENOENT)
		got = 0;	/* removed */
	if (got >= 0)
		fuse_reply_buf(req, buf, (size_t)got);
	else
		fuse_reply_err(req, (int)-got);
}

/* Answers a read at OFF of a snapshot, or of a snapshot view (the blob,
 * then events), through a buffer as every read is.
 * FH's fields are fixed at open; they are read under fh->lock all the
 * same, up to the reply: fs_release() frees FH under it, and the kernel,
 * which sends RELEASE only once a readahead's reply is in, is an ordering
 * ThreadSanitizer cannot see. */
static void snap_read_reply(fuse_req_t req, struct fs_file *fh, size_t size,
			    uint64_t off)
{
	ssize_t got;
	void *buf;

	fs_mutex_lock(&fh->lock);
	if (fh->node->kind == FS_SNAP && off >= fh->snap_len) {
		fs_mutex_unlock(&fh->lock);
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (fh->node->kind == FS_SNAP && size > fh->snap_len - off)
		size = (size_t)(fh->snap_len - off);
	buf = fs_read_buffer(size);
	got = buf ? fs_view_read(fh, atomic_load(&fh->base), buf, size, off)
		  : -ENOMEM;
	fs_mutex_unlock(&fh->lock);
	if (got < 0)
		fuse_reply_err(req, (int)-got);
	else
		fuse_reply_buf(req, buf, (size_t)got);
}

void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *fh = file_of(fi);
	struct fs_node *n = fs_node_of(ino);
	struct fs_wait *w;
	uint64_t base = 0;
	ssize_t got;

	if (n->kind == FS_SNAP || (fh->snap_len && (uint64_t)off < fh->snap_len)) {
		snap_read_reply(req, fh, size, (uint64_t)off);
		return;
	}
	if (!fh->follow) {
		got = n->kind == FS_VIEW ? fs_file_base(fh, &base, NULL) : 0;
		if (got < 0)
			fuse_reply_err(req, (int)-got);
		else if (base == FS_BASE_PENDING)
			fuse_reply_buf(req, NULL, 0);	/* starts past the end */
		else
			read_reply(req, n, size,
				   fs_file_stream_off(fh, base, (uint64_t)off));
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->req = req;
	w->fh = fh;
	w->off = (uint64_t)off;
	w->size = size;
	w->nonblock = fi->flags & O_NONBLOCK;
	fs_wait_answer(fs, w);
}

/* ---- write ---- */

static int held_reserve(struct fs_file *fh, size_t len)
{
	if (len <= fh->held_cap)
		return 0;
	size_t cap = fh->held_cap ? fh->held_cap : 4096;
	while (cap < len)
		cap *= 2;
	char *p = realloc(fh->held, cap);
	if (!p)
		return -ENOMEM;
	fh->held = p;
	fh->held_cap = cap;
	return 0;
}

/* The error of a write by a description without O_APPEND at OFF, not
 * where its own bytes end.  If others appended since its last look and it
 * writes where the stream ended since (lseek SEEK_END took it there, and
 * the end may have moved on again before the write), it lost the race as
 * at its own end, where the store's version check says ESTALE: ESTALE too.
 * Anywhere else it is an overwrite or a hole: EPERM. */
static int misplaced_write(struct fs_file *fh, off_t off)
{
	int rc = store_stream_ended_at(fh->node->t, fh->node->id, fh->version,
				       (uint64_t)off);

	if (rc < 0)
		return rc;
	return rc ? -ESTALE : -EPERM;
}

/* A line longer than max_event is dropped whole: what the description
 * holds of it is discarded, and while it is OPEN (its '\n' not yet
 * written) so is what follows up to its '\n'.  Close reports EMSGSIZE. */
static void drop_line(struct fs_file *fh, bool open)
{
	fh->held_len = 0;
	fh->dropping = open;
	fh->error = -EMSGSIZE;
}

/* Appends DATA after the held partial line and holds its own trailing
 * partial line, which the caller saw is within max_event.  Called with
 * fh->lock held.  Returns SIZE or -errno (nothing of DATA taken). */
static ssize_t append_events(struct fs *fs, struct fs_file *fh,
			     const char *data, size_t size)
{
	struct store_append app = { 0 };
	struct store_append_result res;
	const char *buf = data, *nl;
	size_t len = size, rest;
	int rc;

	if (fh->held_len) {
		rc = held_reserve(fh, fh->held_len + size);
		if (rc)
			return rc;
		memcpy(fh->held + fh->held_len, data, size);
		buf = fh->held;
		len = fh->held_len + size;
	} else if (size && data[size - 1] != '\n') {
		/* Room for a trailing partial line, before anything commits. */
		nl = memrchr(data, '\n', size);
		rc = held_reserve(fh, nl ? size - (size_t)(nl + 1 - data) : size);
		if (rc)
			return rc;
	}
	rc = fs_tenant_writable(fs, fh->node->t);
	if (rc)
		return rc;
	app.buf = buf;
	app.len = len;
	app.expected = fh->append ? STORE_ANY_VERSION : fh->version;
	rc = store_append(fh->node->t, fh->node->id, &app, &res);
	if (rc == -EMSGSIZE && fh->held_len) {
		/* The held line, ended in DATA, is too long: drop it. */
		nl = memchr(data, '\n', size);
		if (nl && fh->held_len + (size_t)(nl + 1 - data) >
			  fs->opts->store.max_event)
			drop_line(fh, false);
	}
	if (rc)
		return rc;
	/* Lines framing leaves a trailing partial line unconsumed. */
	rest = len - res.consumed;
	if (rest && buf == data)
		memcpy(fh->held, data + res.consumed, rest);	/* reserved */
	else if (rest)
		memmove(fh->held, buf + res.consumed, rest);
	fh->held_len = rest;
	if (!fh->append)
		fh->version = res.version;
	return (ssize_t)size;
}

/* The largest raw event: what a write(2) of it always brings in one
 * request, from any buffer.  The kernel pins the writer's pages, at most
 * max_pages of them per request (libfuse asks for REQUEST_MAX / PAGE), and
 * an unaligned buffer spans one page more than its length fills: a larger
 * write may come in two requests, which the daemon cannot tell from two
 * writes.  1020 KiB with 4 KiB pages and 1 MiB requests.  (The kernel's
 * fs.fuse.max_pages_limit, 256 by default, must not be set lower.) */
size_t fs_raw_event_max(size_t page, size_t request_max)
{
	size_t pages = (request_max + page - 1) / page;

	return pages > 1 ? (pages - 1) * page : 1;
}

/* 1 if the stream of FH has raw framing, 0 if lines, or -errno. */
static int stream_is_raw(struct fs_file *fh)
{
	struct store_attr a;
	int rc = store_stream_stat(fh->node->t, fh->node->id, &a);

	return rc ? rc : a.framing == STORE_RAW;
}

/* Appends DATA as events.  A raw write larger than fs_raw_event_max()
 * fails: it may be a piece of a larger write(2).  A trailing partial line
 * that would make an event past max_event drops its line (if DATA holds
 * complete lines before it, they are taken alone, a short count: the
 * writer sends the rest again, and that write fails).  Called with
 * fh->lock held. */
static ssize_t write_events(struct fs *fs, struct fs_file *fh,
			    const char *data, size_t size)
{
	const char *nl = size ? memrchr(data, '\n', size) : NULL;
	size_t tail = nl ? size - (size_t)(nl + 1 - data) : fh->held_len + size;
	size_t raw_max = fs_raw_event_max((size_t)fs->page_size, fs->io_size);
	bool fits = tail + 1 <= fs->opts->store.max_event;
	int raw;

	if (fits && size <= raw_max)
		return append_events(fs, fh, data, size);
	raw = stream_is_raw(fh);
	if (raw < 0)
		return raw;
	if (raw)
		return size > raw_max ? -EMSGSIZE
				      : append_events(fs, fh, data, size);
	if (fits)
		return append_events(fs, fh, data, size);
	if (!nl) {
		drop_line(fh, true);
		return -EMSGSIZE;
	}
	return append_events(fs, fh, data, (size_t)(nl + 1 - data));
}

/* A write while a line too long is being dropped: its bytes up to the
 * line's '\n' are discarded, and a write that holds nothing else fails
 * with EMSGSIZE; the rest is appended as usual.  Called with fh->lock
 * held. */
static ssize_t write_dropping(struct fs *fs, struct fs_file *fh,
			      const char *data, size_t size)
{
	const char *nl = memchr(data, '\n', size);
	size_t skip;
	ssize_t got;

	if (!size)
		return 0;
	if (!nl || nl + 1 == data + size) {
		fh->dropping = !nl;
		return -EMSGSIZE;
	}
	skip = (size_t)(nl + 1 - data);
	got = write_events(fs, fh, data + skip, size - skip);
	if (got < 0)
		return got;	/* nothing taken: still dropping */
	fh->dropping = false;
	return (ssize_t)skip + got;
}

/* Called with fh->lock held.  Returns bytes taken or -errno. */
static ssize_t stream_write(struct fs *fs, struct fs_file *fh,
			    const char *data, size_t size, off_t off)
{
	ssize_t got;

	fs_assert_held(&fh->lock);
	/* O_APPEND ignores the kernel's offset (its idea of the size may be
	 * old); the others must write exactly where their own bytes end. */
	if (!fh->append && (uint64_t)off != fh->end)
		return misplaced_write(fh, off);
	if (fh->dropping)
		got = write_dropping(fs, fh, data, size);
	else
		got = write_events(fs, fh, data, size);
	if (got > 0 && !fh->append)
		fh->end += (uint64_t)got;
	return got;
}

void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_file *fh = file_of(fi);
	ssize_t rc;

	if (fs_node_of(ino)->kind == FS_SNAP) {
		fs_mutex_lock(&fh->lock);
		rc = fh->snap_w ? store_snapshot_write(fh->snap_w, buf, size,
						       (uint64_t)off)
				: -EBADF;	/* committed: closed */
		if (rc > 0)
			atomic_store(&fh->node->snap_written,
				     store_snapshot_written(fh->snap_w));
		fs_mutex_unlock(&fh->lock);
		if (rc < 0)
			fuse_reply_err(req, (int)-rc);
		else
			fuse_reply_write(req, (size_t)rc);
		return;
	}
	if (fs_node_of(ino)->kind != FS_STREAM || !fh->writable) {
		fuse_reply_err(req, fs_node_of(ino)->kind == FS_VIEW ? EROFS : EBADF);
		return;
	}
	fs_mutex_lock(&fh->lock);
	fs_commit_node_set(fh->node);
	rc = stream_write(fs, fh, buf, size, off);
	fs_commit_node_set(NULL);
	fs_mutex_unlock(&fh->lock);
	/* Readers must see the bytes once write(2) returns. */
	fs_inval_wait(fs);
	if (rc < 0)
		fuse_reply_err(req, (int)-rc);
	else
		fuse_reply_write(req, (size_t)rc);
}
