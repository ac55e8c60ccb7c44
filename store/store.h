/*
 * store: the event store under one data directory.
 *
 * A data directory holds tenants; a tenant holds streams; a stream is an
 * append-only sequence of events, numbered from version 1.  Each tenant has
 * one SQLite index (WAL mode) and a directory of segment files that hold the
 * streams' bytes, one chain of segments per stream.  See docs/STORE.md.
 *
 * What it does: splits appended bytes into events (framing), skips events
 * whose ID the stream already has, checks expected versions, commits all
 * events of one call atomically, rolls segments by size and age, recovers
 * to a consistent prefix after a crash, and exposes sealed segments to sync.
 * What it does not: hold partial lines between calls (the caller keeps the
 * unconsumed tail, see struct store_append), talk to the network, know FUSE.
 *
 * Threads: every function may be called from any thread.  Each tenant has one
 * lock; calls on different tenants run in parallel.  Pointers to tenants stay
 * valid until store_close(), even after store_tenant_remove().
 *
 * Errors: 0 (or a byte count) on success, -errno on failure.
 *
 * This is what fs/ uses.  The segments, their upload, eviction and restore,
 * the fetch hook and replicas serve sync/ alone: store_sync.h.
 */
#ifndef STREAMFS_STORE_H
#define STREAMFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#define STORE_WARN_UNUSED __attribute__((warn_unused_result))

/* Expected version meaning "append at the end, whatever it is". */
#define STORE_ANY_VERSION UINT64_MAX

#define STORE_NAME_MAX 255
#define STORE_ID_FIELD_MAX 255

enum store_framing {
	STORE_LINES = 0,	/* each '\n'-terminated line is one event */
	STORE_RAW = 1,		/* each append call is one event */
};

struct store_config {
	uint64_t roll_size;	/* seal the active segment at this size */
	int64_t roll_age_ns;	/* ... or when it is this old */
	uint32_t max_event;	/* larger events fail with -EMSGSIZE */
	bool sync_always;	/* fdatasync segment and index on each append */
	enum store_framing framing;	/* default framing of new tenants */
	/* A fetched copy is flushed, and its row says present, this long
	 * after its restore (or at close); see store_seg_queue_restored(). */
	int64_t restore_flush_ns;
	/* Nothing will be written through this store (a read-only mount
	 * without a remote): it keeps no reserve, and a tenant whose
	 * recovery finds the disk full is recovered in a copy of its index
	 * in memory, so that its data can still be read. */
	bool read_only;
};

/* Fills in the documented defaults: 64 MiB, 1 h, 1 MiB, no sync, lines,
 * fetched copies flushed after 30 s. */
void store_config_default(struct store_config *cfg);

struct store;
struct store_tenant;

/* Opens (creating if needed) the data directory DIR.  Recovers every tenant
 * found there.  The caller owns *out and frees it with store_close(). */
int store_open(const char *dir, const struct store_config *cfg,
	       struct store **out) STORE_WARN_UNUSED;
void store_close(struct store *st);

/* Where store/'s log lines go: PRIO is a syslog(3) priority (LOG_ERR,
 * LOG_WARNING, LOG_NOTICE, LOG_INFO), MSG one line without a newline and
 * without the "streamfs: " prefix.  Without a sink, lines go to stderr.
 * Set once, before any thread starts; the sink may be called from any
 * thread. */
typedef void (*store_log_fn)(int prio, const char *msg);
void store_log_set_sink(store_log_fn sink);

/* Called after every commit, with no store lock held, from the committing
 * thread: stream ID of tenant T now has SIZE bytes.  SIZE is UINT64_MAX when
 * the stream was removed.  Set once, before any other thread uses ST. */
typedef void (*store_commit_fn)(void *arg, struct store_tenant *t,
				uint64_t stream, uint64_t size);
void store_set_commit_hook(struct store *st, store_commit_fn fn, void *arg);

/* Counters of what the store did since store_open(), for the status and
 * metrics: cheap relaxed atomics, bumped by the appending and fsyncing
 * threads, read without a lock (each value is exact; they are not one
 * snapshot). */
#define STORE_LATENCY_BUCKETS 15
/* Upper bound of append latency bucket I (< STORE_LATENCY_BUCKETS), in
 * nanoseconds: 10 us to 1 s. */
int64_t store_latency_bound_ns(size_t i);
struct store_counters {
	uint64_t events_appended;	/* events committed (duplicates not) */
	uint64_t bytes_appended;	/* their bytes */
	uint64_t fsyncs;		/* fsync(2) of streams and tenants */
	/* Appends that committed events, by latency: [i] counts those at
	 * most store_latency_bound_ns(i) and above the bound before;
	 * [STORE_LATENCY_BUCKETS] those above the last bound. */
	uint64_t append_latency[STORE_LATENCY_BUCKETS + 1];
	uint64_t append_latency_sum_ns;
	/* Segments a read found damaged on disk (a batch that does not match
	 * its hash: the read fails with -EIO), and of those the ones fetched
	 * again from the remote (the read returned the right bytes). */
	uint64_t damaged_segments, healed_segments;
	/* The same for snapshot blobs (their length or XXH3 does not match
	 * at the first read after an open). */
	uint64_t damaged_snapshots, healed_snapshots;
};
void store_get_counters(struct store *st, struct store_counters *out);

/* Attributes of a tenant or a stream.  Streams fill in every field;
 * tenants leave size and version at 0 and set framing to their default. */
struct store_attr {
	uint64_t id;		/* stream id, stable across rename; 0 for tenants */
	mode_t mode;		/* permission bits only */
	uid_t uid;
	gid_t gid;
	uint64_t size;		/* committed bytes */
	uint64_t version;	/* committed events */
	struct timespec atime, mtime, ctime;
	enum store_framing framing;
};

/* Which fields of struct store_attr a setattr call changes. */
#define STORE_SET_MODE	(1u << 0)
#define STORE_SET_UID	(1u << 1)
#define STORE_SET_GID	(1u << 2)
#define STORE_SET_ATIME	(1u << 3)
#define STORE_SET_MTIME	(1u << 4)

/* Name rules of the contract: 1-255 bytes, no '/', NUL or '@', not "." or "..". */
bool store_name_valid(const char *name);

/* ---- tenants ---- */

/* -EEXIST if it exists, -EINVAL for a bad name. */
int store_tenant_create(struct store *st, const char *name, mode_t mode,
			uid_t uid, gid_t gid) STORE_WARN_UNUSED;
/* Borrowed pointer, valid until store_close().  -ENOENT if absent. */
int store_tenant_get(struct store *st, const char *name,
		     struct store_tenant **out) STORE_WARN_UNUSED;
/* -ENOTEMPTY while the tenant has streams. */
int store_tenant_remove(struct store *st, const char *name) STORE_WARN_UNUSED;
/* While a writer continues T's published history (sync/ seeds it from the
 * remote), appends to T wait: none may land before the history it
 * continues.  store_tenant_hold(T, false) lets them go on. */
void store_tenant_hold(struct store_tenant *t, bool hold);
/* Waits while T is held, at most TIMEOUT_NS: 0, or -EAGAIN still held. */
int store_tenant_wait_unheld(struct store_tenant *t, int64_t timeout_ns)
	STORE_WARN_UNUSED;
/* Calls FN for each tenant in name order until FN returns non-zero, which
 * is then returned. */
int store_tenant_list(struct store *st,
		      int (*fn)(void *arg, const char *name), void *arg);
const char *store_tenant_name(const struct store_tenant *t);
bool store_tenant_removed(const struct store_tenant *t);

int store_tenant_stat(struct store_tenant *t, struct store_attr *out);
int store_tenant_setattr(struct store_tenant *t, const struct store_attr *attr,
			 unsigned mask) STORE_WARN_UNUSED;
/* Default framing of new streams in T. */
int store_tenant_set_framing(struct store_tenant *t,
			     enum store_framing framing) STORE_WARN_UNUSED;
/* Name of the top-level JSON member that carries event IDs ("id").
 * Copies at most LEN bytes including the NUL into BUF. */
int store_tenant_get_id_field(struct store_tenant *t, char *buf, size_t len);
int store_tenant_set_id_field(struct store_tenant *t,
			      const char *field) STORE_WARN_UNUSED;

/* ---- streams ---- */

/* Creates an empty stream at version 0 with T's default framing.
 * -EEXIST, -EINVAL.  *id (OUT) gets its id. */
int store_stream_create(struct store_tenant *t, const char *name, mode_t mode,
			uid_t uid, gid_t gid, uint64_t *id) STORE_WARN_UNUSED;
int store_stream_lookup(struct store_tenant *t, const char *name,
			uint64_t *id) STORE_WARN_UNUSED;
int store_stream_stat(struct store_tenant *t, uint64_t id,
		      struct store_attr *out) STORE_WARN_UNUSED;
int store_stream_setattr(struct store_tenant *t, uint64_t id,
			 const struct store_attr *attr,
			 unsigned mask) STORE_WARN_UNUSED;
/* -EPERM unless the stream is empty. */
int store_stream_set_framing(struct store_tenant *t, uint64_t id,
			     enum store_framing framing) STORE_WARN_UNUSED;
/* Renames stream ID to NEWNAME.  An empty stream already called NEWNAME is
 * replaced (removed); a non-empty one gives -EPERM. */
int store_stream_rename(struct store_tenant *t, uint64_t id,
			const char *newname) STORE_WARN_UNUSED;
int store_stream_remove(struct store_tenant *t, uint64_t id) STORE_WARN_UNUSED;
/* Calls FN for each stream with id > AFTER, in id order, until FN returns
 * non-zero (which is returned).  Ids are the natural readdir cookies. */
int store_stream_list(struct store_tenant *t, uint64_t after,
		      int (*fn)(void *arg, const char *name,
				const struct store_attr *attr),
		      void *arg);
/* Number of streams in T. */
uint64_t store_stream_count(struct store_tenant *t);

/* One append: the bytes of one write(2). */
struct store_append {
	const void *buf;
	size_t len;
	uint64_t expected;	/* version the caller saw, or STORE_ANY_VERSION */
	/* Lines framing: a trailing line without '\n' is committed with a
	 * '\n' added when FINAL is set (close of the file); otherwise it is
	 * left unconsumed for the caller to hold and prepend next time. */
	bool final;
	/* Optional: indices (0-based, among the complete events of BUF) of
	 * events skipped as duplicates, up to SKIPPED_CAP of them. */
	uint32_t *skipped;
	size_t skipped_cap;
};

struct store_append_result {
	uint64_t version;	/* stream version after the call */
	uint64_t size;		/* stream size after the call */
	size_t consumed;	/* bytes of BUF committed or skipped */
	uint32_t appended;	/* events committed */
	uint32_t skipped;	/* events skipped as duplicates */
};

/* Appends to stream ID.  All events of the call are committed together or
 * none: -ESTALE when EXPECTED does not match, -EMSGSIZE when an event
 * (or a trailing partial line) exceeds max_event, -ENOSPC when the disk is
 * full, -ENOENT when the stream is gone.  RES (OUT) is filled on success. */
int store_append(struct store_tenant *t, uint64_t id,
		 const struct store_append *app,
		 struct store_append_result *res) STORE_WARN_UNUSED;

/* Reads up to LEN committed bytes at OFF.  Returns the byte count, 0 at the
 * end, or -errno (-EIO when an evicted segment cannot be read, or when
 * bytes of a sealed segment fail their hash and the remote has no good
 * copy: store_counters' damaged_segments).  A read that reaches an evicted segment after
 * some bytes returns those (short of LEN and of the end); the next call
 * fetches the segment. */
ssize_t store_read(struct store_tenant *t, uint64_t id, void *buf,
		   size_t len, uint64_t off) STORE_WARN_UNUSED;


/* Byte offset where event VERSION (1-based) starts; the end offset when
 * VERSION is past the last event.  *off (OUT). */
int store_offset_of_version(struct store_tenant *t, uint64_t id,
			    uint64_t version, uint64_t *off) STORE_WARN_UNUSED;
/* Whether stream ID ended at byte OFF at some version after SINCE (an
 * end seen by one who last looked at version SINCE, when others appended
 * since): 1, 0 or -errno. */
int store_stream_ended_at(struct store_tenant *t, uint64_t id, uint64_t since,
			  uint64_t off) STORE_WARN_UNUSED;
/* Offset of the first of the last N events (0 when N >= version). */
int store_offset_of_last(struct store_tenant *t, uint64_t id, uint64_t n,
			 uint64_t *off) STORE_WARN_UNUSED;
/* First version committed at or after TIME_NS (ns since the epoch), or
 * version + 1 when there is none. *version (OUT). */
int store_version_at_time(struct store_tenant *t, uint64_t id,
			  int64_t time_ns, uint64_t *version) STORE_WARN_UNUSED;

/* Makes every committed event of stream ID survive a power cut. */
int store_sync_stream(struct store_tenant *t, uint64_t id) STORE_WARN_UNUSED;
/* The same for everything in the store. */
int store_sync(struct store *st) STORE_WARN_UNUSED;
/* Seals every non-empty active segment of every tenant now (what
 * `streamfs sync` asks of a mount without a remote; with one, sync/ does
 * it tenant by tenant).  Returns the number sealed or -errno. */
int store_roll_all(struct store *st) STORE_WARN_UNUSED;

/* ---- snapshots (snapshot.c) ----
 * A snapshot is an opaque blob stored beside a stream at a version V
 * (1 <= V <= the stream's version): what a program computed from the events
 * up to V.  It is written through a staging file and committed whole at
 * store_snapshot_commit() or not at all, and never changes afterwards.
 * Removing the stream removes its snapshots.  See docs/STORE.md. */

enum store_snap_state {
	STORE_SNAP_LOCAL = 0,		/* made here, not uploaded yet */
	STORE_SNAP_UPLOADED = 1,	/* made here and on the remote */
	STORE_SNAP_REMOTE = 2,		/* on the remote, here only while
					 * fetched: a replica's, or evicted */
};

struct store_snapshot {
	uint64_t stream;
	uint64_t version;
	uint64_t length;	/* bytes of the blob */
	uint64_t checksum;	/* XXH3-64 of the blob */
	int64_t time_ns;	/* when it was committed (on the writer host) */
	enum store_snap_state state;
};

/* A snapshot being written: the writer's alone, one thread at a time. */
struct store_snap_writer;

/* Starts the snapshot of stream ID at VERSION, at most MAX bytes: -EINVAL
 * when VERSION is outside 1..version, -EEXIST when it has one.  *out (OUT)
 * is freed by store_snapshot_commit() or store_snapshot_abort(). */
int store_snapshot_begin(struct store_tenant *t, uint64_t id, uint64_t version,
			 uint64_t max, struct store_snap_writer **out)
	STORE_WARN_UNUSED;
/* Writes LEN bytes at OFF of the blob.  -EFBIG past MAX: the writer then
 * fails its commit with -EFBIG too. */
ssize_t store_snapshot_write(struct store_snap_writer *w, const void *buf,
			     size_t len, uint64_t off) STORE_WARN_UNUSED;
/* fsync(2) of the blob being written: its bytes reach the disk now, and
 * the commit will survive a power cut. */
int store_snapshot_sync(struct store_snap_writer *w) STORE_WARN_UNUSED;
/* Bytes written so far (the end of the furthest write). */
uint64_t store_snapshot_written(const struct store_snap_writer *w);
/* Commits the blob and frees W: 0, or the writer's error, -EEXIST (another
 * was committed at its version meanwhile), -ENOENT (the stream went). */
int store_snapshot_commit(struct store_snap_writer *w) STORE_WARN_UNUSED;
/* Drops the blob and frees W. */
void store_snapshot_abort(struct store_snap_writer *w);

/* The snapshot of stream ID at VERSION (OUT SNAP); -ENOENT if none. */
int store_snapshot_get(struct store_tenant *t, uint64_t id, uint64_t version,
		       struct store_snapshot *snap) STORE_WARN_UNUSED;
/* The newest snapshot of stream ID at a version before BEFORE; -ENOENT if
 * none. */
int store_snapshot_before(struct store_tenant *t, uint64_t id, uint64_t before,
			  struct store_snapshot *snap) STORE_WARN_UNUSED;
/* The snapshot a view whose first event is FIRST starts with: the newest
 * before FIRST (OUT SNAP, -ENOENT if none) and the stream offset of the
 * event after it (OUT BASE; 0 if none).  The last answer per stream is
 * kept until the stream's snapshots change, so asking again is cheap. */
int store_snapshot_start(struct store_tenant *t, uint64_t id, uint64_t first,
			 struct store_snapshot *snap,
			 uint64_t *base) STORE_WARN_UNUSED;
/* Opens the blob of SNAP (IN: stream, version and checksum; OUT: its row)
 * for reading: *fd (OUT, the caller closes it); -ENOENT when that stream
 * has no snapshot at that version with that checksum.  A replica's blob
 * is fetched first (the snapshot fetch hook); -EIO when it cannot be had.
 * Its bytes are not checked: store_snapshot_verify() does, once. */
int store_snapshot_open(struct store_tenant *t, struct store_snapshot *snap,
			int *fd) STORE_WARN_UNUSED;
/* Checks the blob of SNAP (a row from store_snapshot_open()) open at FD
 * against its length and XXH3, in one pass.  A damaged one the remote
 * holds is fetched again and FD made to name the good copy (dup2); -EIO
 * when no good copy can be had. */
int store_snapshot_verify(struct store_tenant *t,
			  const struct store_snapshot *snap,
			  int fd) STORE_WARN_UNUSED;
int store_snapshot_remove(struct store_tenant *t, uint64_t id,
			  uint64_t version) STORE_WARN_UNUSED;
/* Calls FN for each snapshot of stream ID at a version >= FROM, in version
 * order, until FN returns non-zero (which is returned). */
int store_snapshot_list(struct store_tenant *t, uint64_t id, uint64_t from,
			int (*fn)(void *arg, const struct store_snapshot *snap),
			void *arg);
/* Calls FN with the first version and the commit time of that version for
 * each segment of stream ID whose first version is >= FROM, in stream
 * order, until FN returns non-zero (which is returned). */
int store_stream_segment_starts(struct store_tenant *t, uint64_t id,
				uint64_t from,
				int (*fn)(void *arg, uint64_t first_version,
					  int64_t time_ns),
				void *arg);

/* ---- checking ---- */

/* Checks the data directory DIR without changing it: index rows inside their
 * segments, sealed checksums, contiguous versions.  Writes a report to OUT.
 * Returns 0 when clean, 1 on damage, -errno when it cannot check. */
int store_verify(const char *dir, FILE *out);

/* How far store_verify_with() is: segments (present ones: evicted segments
 * are not checked) and their bytes, done and in all.  Reported once when
 * the totals are known (nothing done yet) and after each segment. */
struct store_verify_progress {
	uint64_t segments_done, segments_total;
	uint64_t bytes_done, bytes_total;
};
typedef void (*store_verify_fn)(void *arg,
				const struct store_verify_progress *p);
/* store_verify(), calling FN (may be NULL) with ARG as it goes. */
int store_verify_with(const char *dir, FILE *out, store_verify_fn fn,
		      void *arg);

#endif
