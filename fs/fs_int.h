/*
 * fs private declarations.
 *
 * Inode numbers are node pointers (FUSE_ROOT_ID is the static root node).
 * A node stands for a tenant, a stream (tenant + stream id, stable across
 * rename) or a view (stream + selector).  Nodes live while the kernel holds
 * lookups on them or an open file refers to them.
 *
 * Files, each calling only files below it:
 *   mount.c    the daemon: store, session, threads, teardown
 *   source.c   what SOURCE is (refused, new or a data directory); its lock
 *   ops.c      the FUSE operations table; lookup, create, attributes,
 *              directories
 *   metrics.c  -o metrics=: Prometheus metrics over libmicrohttpd
 *   xattr.c    extended attributes
 *   status.c   the state of the mount for status and metrics (ring.c's,
 *              follow.c's, store's and sync's counters)
 *   file.c     open files: open, read, write, flush, release
 *   follow.c   the commit hook: parked follow reads, page-cache
 *              invalidation; the per-thread read buffers
 *   view.c     selectors, and where a view starts in its stream
 *   node.c     the node table
 *   ring.c     FUSE over io_uring (ring.h; calls none of the above)
 *   lock.c     the per-thread record of lock.h's checks, used by all
 * main.c (the program) and opts.c (-o options) sit above them all.
 *
 * Locks: fh->lock, then fs->lock, then fs->park_lock, then fs->inval_lock;
 * fs->answer_lock is taken with no other lock held.  Each is declared with
 * its place in that order, which is lock.h's enum fs_lock_rank and which
 * debug builds check.  Every struct shared between threads names the lock
 * of each field, or says in one sentence why it needs none.
 */
#ifndef STREAMFS_FS_INT_H
#define STREAMFS_FS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "fs.h"
#include "lock.h"
#include "log.h"
#include "ring.h"
#include "store_util.h"
#include "sync.h"

#define FS_WARN_UNUSED __attribute__((warn_unused_result))

/* FS_SNAP: a snapshot, S@snap=V. */
enum fs_kind { FS_ROOT, FS_TENANT, FS_STREAM, FS_VIEW, FS_SNAP };

enum fs_sel_kind { SEL_VERSION, SEL_LAST, SEL_END, SEL_TIME };

struct fs_sel {
	enum fs_sel_kind kind;
	uint64_t n;		/* version or count */
	int64_t time_ns;
	bool follow;
	bool snap;		/* ",snap": a snapshot first (view.c) */
	/* ",snap" views: the snapshot chosen at lookup (version 0: none),
	 * its length and checksum, and the stream offset of the events
	 * after it.  Part of the node's identity (view.c). */
	uint64_t snap_version, snap_len, snap_sum, snap_base;
};

struct fs_wait;

/* Kind, tenant, id and selector are set at creation and never change;
 * every other field names its lock. */
struct fs_node {
	enum fs_kind kind;
	struct store_tenant *t;	/* borrowed from the store; NULL for root */
	uint64_t id;		/* stream id (streams and views) */
	char *sel_name;		/* owned; view selector text, or "snap=V" */
	struct fs_sel sel;	/* FS_SNAP: n is the version */

	uint64_t nlookup;	/* protected by fs->lock */
	uint64_t refs;		/* open files and views; protected by fs->lock */
	struct fs_node *hnext;	/* protected by fs->lock */

	/* Streams only. */
	uint64_t size_seen;	/* highest committed size; protected by fs->park_lock */
	struct fs_wait *parked;	/* parked follow reads; protected by fs->park_lock */
	bool removed;		/* the stream is gone; protected by fs->park_lock */
	atomic_bool cached;	/* some open used the page cache */
	atomic_uint writers;	/* descriptions open for writing (file.c) */
	/* Streams: its ",snap" views that use the page cache (fs_node_add_view),
	 * linked by view_next; views_cached says whether there are any, for a
	 * look without the lock.  Views: the stream whose list holds it (and
	 * a ref on it), or NULL.  Protected by fs->lock. */
	struct fs_node *views, *view_next, *view_of;
	atomic_bool views_cached;

	/* Snapshots (FS_SNAP): descriptions writing it, not committed yet,
	 * and the furthest end they wrote (for stat). */
	atomic_uint snap_writers;
	_Atomic uint64_t snap_written;
};

/* An open file description.  Node, stream, append, writable and follow
 * are set by fs_file_open() before the kernel knows the description and
 * never change; every other field names its lock. */
struct fs_file {
	struct fs_node *node;	/* holds a ref */
	struct fs_node *stream;	/* views: the stream node, holds a ref */
	/* Serializes writes and flush.  Taken before any lock of struct fs
	 * (a commit's hook takes them); never held while replying, but for
	 * the hook's out-of-memory answers (follow.c, answer_eof()). */
	struct fs_mutex lock;
	bool append;
	bool writable;
	bool counted_writer;	/* counted in node->writers */
	char *held;		/* owned; partial line; protected by lock */
	size_t held_len, held_cap;	/* protected by lock */
	bool dropping;		/* discarding a line past max_event up to its
				 * '\n'; protected by lock */
	uint64_t version;	/* non-O_APPEND: version seen; protected by lock */
	uint64_t end;		/* non-O_APPEND: where own bytes end; protected by lock */
	int error;		/* sticky error for flush; protected by lock */
	/* Views: stream offset of view offset 0, or FS_BASE_PENDING while
	 * the selector points past the end (S@N with N > version + 1, or a
	 * time no event is at or after yet): resolved on each read and
	 * wake-up until it is known, then fixed. */
	_Atomic uint64_t base;
	bool follow;
	/* Snapshot views and snapshots opened for reading: the blob (its
	 * descriptor, -1 when none, length and row), set at open; its bytes
	 * are checked whole before the first read that serves them
	 * (fs_view_read(); racing readers may both check, to the same end). */
	int snap_fd;
	uint64_t snap_len;
	struct store_snapshot snap_row;
	_Atomic bool snap_checked;
	/* A snapshot created by this description, until its commit at the
	 * first flush (then NULL).  Protected by lock. */
	struct store_snap_writer *snap_w;
	struct fs_file *next, *prev;	/* fs->files; protected by fs->lock */
};

/* A parked follow read.  Owned by whoever takes it off the list: the
 * fields without a lock are that owner's alone. */
enum fs_wait_state { WAIT_NEW, WAIT_PARKED, WAIT_INTERRUPTED, WAIT_DONE };
struct fs_wait {
	fuse_req_t req;
	struct fs_file *fh;
	uint64_t off;		/* view offset of the read */
	size_t size;
	bool nonblock;		/* O_NONBLOCK of this read's request */
	/* Pending base: the stream size when it was last tried. */
	uint64_t seen;
	/* Protected by fs->park_lock from the moment the request's interrupt
	 * function may see W (park()). */
	enum fs_wait_state state;
	/* The stream's n->parked, protected by fs->park_lock; once taken
	 * off, the owner's list (a wake-up's), then fs->answer_head's,
	 * protected by fs->answer_lock. */
	struct fs_wait *next, *prev;
	/* Every parked wait, oldest first (fs->parked_oldest), for the
	 * kernel's request timeout.  Protected by fs->park_lock. */
	int64_t parked_ns;	/* CLOCK_MONOTONIC at parking */
	struct fs_wait *anext, *aprev;
};

/* A queued invalidation: protected by fs->inval_lock while on
 * fs->inval_head, the invalidation thread's once taken off. */
struct fs_inval {
	struct fs_node *node;	/* holds a ref */
	uint64_t off;
	uint64_t seq;
	struct fs_inval *next;
};

/* A commit's wake-up: protected by fs->park_lock while on fs->wake_head,
 * the wake thread's once taken off. */
struct fs_wake {
	struct fs_wait *list;	/* detached waiters */
	uint64_t size;		/* UINT64_MAX: stream removed */
	struct fs_wake *next;
};

/* The mount.  Fields without a lock are set before the threads start
 * (fs_run(), op_init(), serve()) and only read after, or belong to the
 * mounting thread (the thread handles), or are atomics. */
struct fs {
	struct store *st;
	/* The sync thread (writer or replica), or NULL (a mount without
	 * remote=).  Set once before the session starts; read by the commit
	 * hook, which may run in sync's own threads meanwhile. */
	_Atomic(struct sync *) sync;
	struct fuse_session *se;
	struct fs_opts *opts;
	long page_size;
	/* st_blksize of streams (ops.c), so that stdio and cp write in
	 * requests that large. */
	_Atomic size_t io_size;
	/* The root directory is not in the store: its attributes live here,
	 * for the life of the mount.  Protected by lock. */
	struct store_attr root;

	/* The node table and the open files.  Lock order: fh->lock, then
	 * this, then park_lock, then inval_lock. */
	struct fs_mutex lock;
	struct fs_node **table;	/* protected by lock */
	size_t table_size, table_count;	/* protected by lock */
	/* Open files, released at unmount if the kernel did not (then with
	 * no other thread left).  Protected by lock. */
	struct fs_file *files;
	/* Listings of open root directories, freed at unmount likewise (a
	 * RELEASEDIR the unmount aborted never comes).  Protected by lock. */
	struct fs_dir_list *dirs;

	/* Parked reads and size_seen.  Taken after lock, before inval_lock. */
	struct fs_mutex park_lock;
	pthread_cond_t wake_cond;
	struct fs_wake *wake_head, *wake_tail;	/* protected by park_lock */
	uint64_t parked_count;	/* protected by park_lock */
	/* All parked waits in parking order; protected by park_lock. */
	struct fs_wait *parked_oldest, *parked_newest;
	/* A parked read older than this is answered with EINTR (0: never),
	 * to stay below the kernel's request timeout (docs/CACHING.md).
	 * Set before the threads start. */
	int64_t park_max_ns;
	bool stopping;		/* protected by park_lock */

	/* The invalidation queue.  Taken last: after lock and park_lock. */
	struct fs_mutex inval_lock;
	pthread_cond_t inval_cond;	/* work queued */
	pthread_cond_t inval_done_cond;	/* work finished */
	struct fs_inval *inval_head, *inval_tail;	/* protected by inval_lock */
	uint64_t inval_seq;	/* last queued; protected by inval_lock */
	uint64_t inval_done;	/* last finished; protected by inval_lock */
	bool inval_stop;	/* protected by inval_lock */
	uint64_t inval_waiters;	/* handlers in fs_inval_wait; protected by inval_lock */
	/* At most this many handlers wait for an invalidation at once (0 in
	 * single-threaded mode), so that a worker stays free for the reads
	 * whose page locks the invalidation may need.  Set before serving. */
	uint64_t inval_max_waiters;

	atomic_uint sync_now_callers;	/* user.streamfs.sync_now in progress */

	/* Woken reads to answer: store_read may block on a remote fetch, so
	 * the wake thread hands them to the answer_threads.
	 * answer_lock is taken with no other lock held. */
	struct fs_mutex answer_lock;
	pthread_cond_t answer_cond;
	struct fs_wait *answer_head, *answer_tail;	/* protected by answer_lock */
	bool answer_stop;	/* protected by answer_lock */
	pthread_t answer_threads[4];
	unsigned answer_started;

	pthread_t wake_thread, inval_thread;
	bool threads_started;

	struct fs_ring *ring;	/* owned; -o io_uring, else NULL */
	/* owned; -o metrics=, else NULL.  Its server runs while the session
	 * serves (run_session()), and reads the ring and sync then. */
	struct fs_metrics *metrics;
};

/* ops.c */
/* The operations of the session (fuse_session_new()). */
const struct fuse_lowlevel_ops *fs_lowlevel_ops(void);
/* Frees the root listings still open at unmount. */
void fs_dirs_release(struct fs *fs);
/* 0 when T may be written to: -EROFS on a read-only mount, and for a
 * tenant taken over by another writer (fenced, sync.h). */
int fs_tenant_writable(struct fs *fs, struct store_tenant *t);

/* xattr.c */
void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 const char *value, size_t size, int flags);
void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		 size_t size);
void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void fs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* Root xattrs read by `streamfs status` and `streamfs sync`. */
#define FS_XATTR_STATUS "user.streamfs.status"
#define FS_XATTR_STATUS_JSON "user.streamfs.status.json"
#define FS_XATTR_SYNC_NOW "user.streamfs.sync_now"
/* Largest status, text or JSON (an xattr value holds at most 64 KiB). */
#define FS_STATUS_MAX (60u << 10)

/* metrics.c: -o metrics=ADDR:PORT */
struct fs_metrics;
/* Binds and listens on O's metrics address, before the mount: a message
 * and -errno when it cannot (a port in use).  *OUT is NULL without
 * metrics=. */
int fs_metrics_open(const struct fs_opts *o,
		    struct fs_metrics **out) FS_WARN_UNUSED;
/* Starts serving /metrics of FS on M's socket, on a thread of its own
 * (NULL M: nothing to do). */
int fs_metrics_start(struct fs_metrics *m, struct fs *fs) FS_WARN_UNUSED;
/* Stops the server and frees M; NULL is fine. */
void fs_metrics_free(struct fs_metrics *m);

/* status.c: the state of the mount, for status and metrics */
struct fs_status {
	const struct fs_opts *opts;	/* borrowed from the mount */
	int64_t now_ns;			/* CLOCK_REALTIME when taken */
	unsigned ring_queues;		/* 0: /dev/fuse */
	uint64_t ring_served;
	struct store_counters store;
	uint64_t followers_parked;	/* follow reads waiting */
	struct sync *sync;		/* NULL: no remote; then sy, leases
					 * are empty */
	struct sync_status sy;
	struct sync_lease *leases;	/* owned; writers only */
	size_t nleases;
};
/* Takes the snapshot into *OUT (released with fs_status_release()): each
 * value under its owner's lock for a moment.  0, or -ENOMEM (leases
 * missing). */
int fs_status_get(struct fs *fs, struct fs_status *out) FS_WARN_UNUSED;
void fs_status_release(struct fs_status *st);
/* "writer", "writer (no remote)", "read-only", "analysis (read-only
 * replica)". */
const char *fs_status_mode(const struct fs_status *st);
/* The text of `streamfs status`, one "key: value" a line, into BUF. */
void fs_status_text(const struct fs_status *st, char *buf, size_t cap);
/* The same fields as one JSON object: a malloc'd string, NULL without
 * memory. */
char *fs_status_json(const struct fs_status *st);

/* file.c */
/* Opens N for FI's flags: *out (OUT) is the new description, owned by the
 * caller until FI carries it to the kernel; fs_file_free() undoes it. */
int fs_file_open(struct fs *fs, struct fs_node *n, struct fuse_file_info *fi,
		 struct fs_file **out) FS_WARN_UNUSED;
void fs_file_free(struct fs *fs, struct fs_file *fh);
/* Opens node N of S@snap=V, just made by create, to write the snapshot. */
int fs_snap_create(struct fs *fs, struct fs_node *n, struct fuse_file_info *fi,
		   struct fs_file **out) FS_WARN_UNUSED;
void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi);
void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi);
void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi);
/* Frees the files still open at unmount. */
void fs_files_release(struct fs *fs);

/* What one request carries at most as this daemon negotiates it: libfuse's
 * max_write with 4 KiB pages, and what op_init() holds io_size to. */
#define FS_REQUEST_MAX (1024u << 10)
size_t fs_raw_event_max(size_t page, size_t request_max);
/* st_blksize of what is read only through the page cache (ops.c): the
 * kernel's FUSE readahead window, coreutils' smallest buffer. */
#define FS_CACHED_IO_SIZE (128u << 10)

/* source.c */
/* Checks SOURCE (o->source) and makes it absolute: a data directory, an
 * empty directory, or with o->create a missing one (made here), else
 * refused with a message.  Sets o->source_new. */
int fs_source_resolve(struct fs_opts *o) FS_WARN_UNUSED;
/* The one log line saying SOURCE became a new data directory, if it did. */
void fs_source_say_new(const struct fs_opts *o);
/* The daemon's exclusive lock on SOURCE, with its pid written in: the fd,
 * or -errno after a message (naming the holder when it is held). */
int fs_source_lock(const char *source) FS_WARN_UNUSED;
/* Writes this process's pid and MOUNTPOINT (may be NULL) into the lock. */
void fs_source_lock_record(int fd, const char *mountpoint);
/* Empties the lock file and releases the lock. */
void fs_source_unlock(int fd);

/* follow.c */
/* Per-thread read buffer of at least LEN bytes, or NULL. */
void *fs_read_buffer(size_t len);
int fs_buffers_init(void) FS_WARN_UNUSED;
int fs_follow_start(struct fs *fs) FS_WARN_UNUSED;
void fs_follow_stop(struct fs *fs);
void fs_commit_hook(void *arg, struct store_tenant *t, uint64_t stream,
		    uint64_t size);
/* N, held by the caller until it calls this again with NULL, is the node
 * this thread's next commits are to: the hook needs no lookup for it. */
void fs_commit_node_set(struct fs_node *n);
/* Answers W by reading; parks it again when there is nothing yet. */
void fs_wait_answer(struct fs *fs, struct fs_wait *w);
/* Waits until invalidations queued by this thread's commits are done. */
void fs_inval_wait(struct fs *fs);

/* view.c */
/* Parses a selector (the text after '@') into SEL (OUT); -EINVAL if bad. */
int fs_sel_parse(const char *s, struct fs_sel *sel) FS_WARN_UNUSED;
#define FS_BASE_PENDING UINT64_MAX
/* Stream offset where view N starts now, or FS_BASE_PENDING when its
 * selector points past the end.  *base (OUT); *size (OUT, may be NULL):
 * the stream's size seen meanwhile. */
int fs_view_base(struct fs_node *n, uint64_t *base, uint64_t *size)
	FS_WARN_UNUSED;
/* Attributes of view N (OUT A): its stream's, with the view's size. */
int fs_view_stat(struct fs_node *n, struct store_attr *a) FS_WARN_UNUSED;
/* "snap=V" (the name of S@snap=V after '@'): *version (OUT). */
int fs_snap_name_parse(const char *s, uint64_t *version) FS_WARN_UNUSED;
/* A ",snap" view's node name: SEL (the text after '@') with the snapshot
 * it starts with now chosen into SEL (OUT), as "SEL#VERSION-XXH3" in BUF:
 * a view whose snapshot changes is another node, with a page cache of its
 * own. */
int fs_view_snap_name(struct store_tenant *t, uint64_t id, const char *text,
		      struct fs_sel *sel, char *buf, size_t len) FS_WARN_UNUSED;
/* Opens the snapshot ",snap" view N starts with, if any, into FH
 * (snap_fd, snap_len, base). */
int fs_view_open_snap(struct fs_node *n, struct fs_file *fh) FS_WARN_UNUSED;
/* The stream offset of view offset OFF of FH, whose base is BASE (BASE
 * itself inside the snapshot). */
uint64_t fs_file_stream_off(const struct fs_file *fh, uint64_t base,
			    uint64_t off);
/* Reads up to SIZE bytes of FH's view at OFF (snapshot, then events), BASE
 * resolved: the count (short only at the end) or -errno. */
ssize_t fs_view_read(struct fs_file *fh, uint64_t base, char *buf, size_t size,
		     uint64_t off);
/* FH's view base, resolving it if still pending (may stay pending).
 * *size (OUT, may be NULL) as above; 0 when already resolved. */
int fs_file_base(struct fs_file *fh, uint64_t *base, uint64_t *size)
	FS_WARN_UNUSED;

/* node.c */
int fs_nodes_init(struct fs *fs) FS_WARN_UNUSED;
void fs_nodes_release(struct fs *fs);
struct fs_node *fs_node_of(fuse_ino_t ino);
fuse_ino_t fs_ino_of(const struct fs_node *n);
/* Finds or creates the node, adds one lookup (LOOKUP) or one ref. */
int fs_node_get(struct fs *fs, enum fs_kind kind, struct store_tenant *t,
		uint64_t id, const char *sel_name, const struct fs_sel *sel,
		bool lookup, struct fs_node **out) FS_WARN_UNUSED;
/* Stream node if the kernel or an open file knows it, with a ref; or NULL. */
struct fs_node *fs_node_find_stream(struct fs *fs, struct store_tenant *t,
				    uint64_t id);
void fs_node_ref(struct fs *fs, struct fs_node *n);
/* Puts ",snap" view V, which uses the page cache, on the list of its
 * stream's node STREAM (once), which it then holds. */
void fs_node_add_view(struct fs *fs, struct fs_node *stream, struct fs_node *v);
/* The views on STREAM's list, each with a ref: an array (the caller frees
 * it) of *COUNT (OUT) nodes; fewer when out of memory. */
struct fs_node **fs_node_cached_views(struct fs *fs, struct fs_node *stream,
				      size_t *count);
void fs_node_unref(struct fs *fs, struct fs_node *n);
void fs_node_forget(struct fs *fs, struct fs_node *n, uint64_t nlookup);

#endif
