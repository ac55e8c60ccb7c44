/*
 * store_sync: the half of the store that sync/ drives.  Sealed segments
 * and their states (sealed, uploaded, evicted), the batches that travel
 * with them, restore of a fetched copy, the hook that fetches an evicted
 * segment for a reader, and replicas.  Same threads and errors as store.h.
 */
#ifndef STREAMFS_STORE_SYNC_H
#define STREAMFS_STORE_SYNC_H

#include "store.h"

/* ---- segments ---- */

/* Seals the active segments of T that are older than roll_age at NOW_NS, or
 * every non-empty one when FORCE.  Returns the number sealed or -errno.
 * The store's sealer thread seals by age on its own as well. */
int store_roll(struct store_tenant *t, int64_t now_ns, bool force);
/* Seals stream ID's closing segments and its active one when not empty,
 * on this thread: what a snapshot of a version in it waits for (sync_now
 * with flush on).  The number sealed, or -errno (-ENOENT: no stream). */
int store_roll_stream(struct store_tenant *t, uint64_t id) STORE_WARN_UNUSED;
/* Seals T's closing segments on this thread (store_close; sync_now). */
int store_seal_closing_now(struct store_tenant *t) STORE_WARN_UNUSED;

enum store_seg_state {
	STORE_SEG_ACTIVE = 0,	/* being appended to */
	STORE_SEG_SEALED = 1,	/* immutable, not yet uploaded */
	STORE_SEG_UPLOADED = 2,	/* uploaded, local copy present */
	STORE_SEG_EVICTED = 3,	/* uploaded, local copy removed */
};

struct store_segment {
	uint64_t seg;		/* segment id, unique in the tenant */
	uint64_t origin;	/* replicas: the segment's id on the writer host
				 * (its remote key); 0 for segments made here */
	bool keep_id;		/* store_replica_add(): a seeded writer's
				 * segment, which keeps origin as its id and
				 * has an ID table rebuilt when dedup needs it */
	uint64_t stream;
	uint64_t first_version;	/* version of its first event */
	uint64_t count;		/* events */
	uint64_t offset;	/* stream offset of its first byte */
	uint64_t length;	/* bytes */
	uint64_t checksum;	/* XXH3-64 of the bytes, sealed segments only */
	int64_t created_ns;
	int64_t used_ns;	/* last read or write here (not persisted; 0
				 * when not used since open) */
	enum store_seg_state state;
	bool tail;		/* replicas: bytes shipped before the segment
				 * sealed, no checksum yet (never evicted) */
	/* Some event in it carries an ID.  store_replica_add() with keep_id
	 * takes it as given (true when not known). */
	bool has_ids;
};

/* Calls FN for each sealed segment in state STATE, in segment order. */
int store_segment_list(struct store_tenant *t, enum store_seg_state state,
		       int (*fn)(void *arg, const struct store_segment *seg),
		       void *arg);
/* Calls FN for each segment of stream ID, in stream order. */
int store_stream_segments(struct store_tenant *t, uint64_t id,
			  int (*fn)(void *arg, const struct store_segment *seg),
			  void *arg);
/* The event IDs of sealed segment SEG (a struct store_segment of T, whose
 * bytes FD holds from offset 0): FN gets each one's hash (as dedup
 * hashes it), the stream offset of its event and its bytes (valid for the
 * call), in stream order.  *FIELD_HASH (OUT): the XXH3-64 of T's id_field,
 * the JSON member the IDs are of.  Reads FD, takes no lock across it. */
int store_segment_ids(struct store_tenant *t, const struct store_segment *seg,
		      int fd, int (*fn)(void *arg, uint64_t hash,
					uint64_t offset, const char *id,
					size_t len),
		      void *arg, uint64_t *field_hash);
/* Gives sealed segment SEG of T an event-ID table made elsewhere (a
 * writer continuing another's history fetches it from the remote), so
 * that dedup neither fetches nor reads the segment's bytes: N (hash,
 * offset) PAIRS sorted by hash then offset, and the IDs themselves, pair
 * i's being bytes ENDS[i - 1] (0 for the first) up to ENDS[i] of IDS
 * (IDLEN bytes).  FIELD_HASH is the XXH3-64 of the member name they are
 * IDs of: -ESTALE when it is not T's id_field (then nothing is
 * installed: dedup reads the bytes).  -EINVAL when they do not add up. */
int store_segment_ids_install(struct store_tenant *t, uint64_t seg,
			      uint64_t field_hash, const uint64_t *pairs,
			      const uint64_t *ends, size_t n, const char *ids,
			      size_t idlen) STORE_WARN_UNUSED;
/* Called by an append, with no store lock held, when dedup needs the
 * event-ID table of SEG, an evicted segment without one here: it may bring
 * one with store_segment_ids_install() (0), or fail with -errno (none on
 * the remote...), and dedup then reads the segment (fetching it).  Asked
 * once per segment while the store is open.  May block.  Setting it (NULL
 * to clear) returns once no call to the previous one is still running. */
typedef int (*store_ids_fetch_fn)(void *arg, struct store_tenant *t,
				  const struct store_segment *seg);
void store_set_ids_fetch_hook(struct store *st, store_ids_fetch_fn fn,
			      void *arg);
/* Path of the segment's local file (exists unless evicted).  Caller frees. */
char *store_segment_path(struct store_tenant *t, uint64_t seg);
int store_segment_mark_uploaded(struct store_tenant *t,
				uint64_t seg) STORE_WARN_UNUSED;
/* Whether segment SEG of T is evicted now (false when it is gone). */
bool store_segment_evicted(struct store_tenant *t, uint64_t seg);
/* Removes the local copy of an uploaded segment.  -EBUSY if not uploaded. */
int store_segment_evict(struct store_tenant *t, uint64_t seg) STORE_WARN_UNUSED;
/* Puts back a fetched copy: the file at PATH must match the segment's length
 * and checksum (-EIO otherwise); it is renamed into place. */
int store_segment_restore(struct store_tenant *t, uint64_t seg,
			  const char *path) STORE_WARN_UNUSED;
/* The same for a caller that took the XXH3-64 of the bytes as it wrote
 * them: SUM is compared instead of reading the file back. */
int store_segment_restore_hashed(struct store_tenant *t, uint64_t seg,
				 const char *path,
				 uint64_t sum) STORE_WARN_UNUSED;

/* One index row: the events one append call committed. */
struct store_batch {
	uint64_t first_version;
	uint64_t count;
	uint64_t offset;	/* stream offset */
	uint64_t length;
	int64_t time_ns;	/* commit time */
	uint64_t hash;		/* XXH3-64 of the bytes */
};

/* Calls FN for each batch of segment SEG, in order (the event index that
 * travels with a sealed segment to the remote). */
int store_segment_batches(struct store_tenant *t, uint64_t seg,
			  int (*fn)(void *arg, const struct store_batch *b),
			  void *arg);

/* Called by store_read(), with no store lock held, when the bytes it needs
 * lie in an evicted segment: it must bring the segment back with
 * store_segment_restore() and return 0, or return -errno (the read then
 * fails with it; -EIO when the copy cannot be had).  May block.
 * Setting a hook (NULL to clear it) returns once no call to the previous
 * one is still running, so its ARG can then be freed. */
typedef int (*store_fetch_fn)(void *arg, struct store_tenant *t,
			      const struct store_segment *seg);
/* Called by a read, with no store lock held, the first time a read uses a
 * segment that store_segment_restore() brought back: readahead follows a
 * reader through segments it never had to wait for.  Must not block. */
typedef void (*store_reached_fn)(void *arg, struct store_tenant *t,
				 const struct store_segment *seg);
void store_set_fetch_hook(struct store *st, store_fetch_fn fn,
			  store_reached_fn reached, void *arg);

/* ---- replicas: analysis hosts mirror a remote into a local store ---- */

/* Creates stream NAME with id ID, as store_stream_create() does: a writer
 * that continues another writer's published history keeps its stream ids.
 * -EEXIST when the name or the id is taken. */
int store_replica_stream_create(struct store_tenant *t, const char *name,
				mode_t mode, uid_t uid, gid_t gid,
				uint64_t id) STORE_WARN_UNUSED;
/* Extends stream ID with a sealed segment that lives on the remote: SEG
 * gives its origin id, versions, offset, length and checksum (its first
 * version must be the stream's version + 1 and its offset the stream's
 * size: -EINVAL otherwise), BATCHES its N index rows.  With
 * SEG->keep_id its id is its origin (-EEXIST when taken).  The segment starts
 * evicted (fetched on first read).  Readers and followers see the new
 * events as after an append. */
int store_replica_add(struct store_tenant *t, uint64_t id,
		      const struct store_segment *seg,
		      const struct store_batch *batches,
		      size_t n) STORE_WARN_UNUSED;

/* Appends LEN bytes (BYTES) to stream ID, the tail pieces' share of the
 * writer's segment ORIGIN (created at CREATED_NS): to the stream's last
 * segment when it is ORIGIN's tail segment, else to a new one.  B's N rows
 * must continue the stream (-EINVAL otherwise) and hold exactly LEN bytes.
 * The bytes are kept locally (the segment is never evicted while a tail);
 * readers and followers see them as after an append. */
int store_replica_tail_append(struct store_tenant *t, uint64_t id,
			      uint64_t origin, int64_t created_ns,
			      const void *bytes, size_t len,
			      const struct store_batch *b,
			      size_t n) STORE_WARN_UNUSED;
/* A writer that continues another writer's published history (a
 * takeover) appends LEN bytes (BYTES) to stream ID: the bytes its
 * predecessor shipped in tail pieces from its segment SEG, which starts at
 * stream offset SEG_OFFSET and was created at CREATED_NS.  They go to the
 * stream's active segment when it is SEG, else to a new active segment
 * with the id SEG (-EEXIST when taken), which must start at the stream's
 * end (-EINVAL otherwise), the active one before it closed.  B's N rows
 * (their times kept) must continue the stream and hold exactly LEN bytes
 * (-EINVAL otherwise).  Appends then continue that segment; its IDs count
 * for dedup. */
int store_seed_tail_append(struct store_tenant *t, uint64_t id,
			   uint64_t seg, uint64_t seg_offset,
			   int64_t created_ns, const void *bytes, size_t len,
			   const struct store_batch *b,
			   size_t n) STORE_WARN_UNUSED;
/* The writer's segment SEG->origin sealed as SEG says: the tail segment of
 * that origin, which must hold exactly its range (-EINVAL otherwise; -ENOENT
 * without one), takes its checksum when its bytes match it (-EIO when they
 * do not).  Nothing a reader sees changes. */
int store_replica_tail_seal(struct store_tenant *t, uint64_t id,
			    const struct store_segment *seg) STORE_WARN_UNUSED;

/* ---- snapshots: upload, replicas, fetch ---- */

/* Calls FN for each snapshot of T in state STATE, by stream and version. */
int store_snapshot_list_state(struct store_tenant *t, enum store_snap_state state,
			      int (*fn)(void *arg, const struct store_snapshot *snap),
			      void *arg);
/* Path of the blob's local file (absent while a replica's is not fetched).
 * Caller frees. */
char *store_snapshot_path(struct store_tenant *t, uint64_t stream,
			  uint64_t version);
int store_snapshot_mark_uploaded(struct store_tenant *t, uint64_t stream,
				 uint64_t version) STORE_WARN_UNUSED;
/* Records SNAP (stream, version, length, checksum, time) as a replica's
 * snapshot, in state STORE_SNAP_REMOTE: -EEXIST if it has one, -EINVAL when
 * the version is outside the stream. */
int store_replica_snapshot_add(struct store_tenant *t,
			       const struct store_snapshot *snap) STORE_WARN_UNUSED;
/* Puts back a fetched blob, written as it comes into a staging file
 * beside it: begin (*out, OUT), store_snapshot_write() the bytes (EFBIG
 * past the row's length), then commit, which checks the file against the
 * row's length and checksum (-EIO otherwise) and renames it over the
 * blob's name; or store_snapshot_abort().  Either frees the writer. */
int store_snapshot_restore_begin(struct store_tenant *t, uint64_t stream,
				 uint64_t version,
				 struct store_snap_writer **out) STORE_WARN_UNUSED;
int store_snapshot_restore_commit(struct store_snap_writer *w) STORE_WARN_UNUSED;
/* Local copies of blobs that are on the remote (rows in state
 * STORE_SNAP_UPLOADED, and in STORE_SNAP_REMOTE whose file is here), for
 * eviction: FN gets each row and when it was last opened (USED_NS,
 * CLOCK_REALTIME). */
int store_snapshot_list_cached(struct store_tenant *t,
			       int (*fn)(void *arg, const struct store_snapshot *snap,
					 int64_t used_ns),
			       void *arg);
/* Drops the local copy of a blob that is on the remote (its row stays, in
 * state STORE_SNAP_REMOTE: the next open fetches it again).  Open
 * descriptors keep reading it.  -EBUSY for one not uploaded yet. */
int store_snapshot_evict(struct store_tenant *t, uint64_t stream,
			 uint64_t version) STORE_WARN_UNUSED;
/* Called by store_snapshot_open(), with no store lock held, for a
 * replica's blob not fetched yet: it must bring it back with
 * store_snapshot_restore_begin() and _commit() and return 0, or return
 * -errno.  May block.
 * Set and cleared as store_set_fetch_hook(). */
typedef int (*store_snap_fetch_fn)(void *arg, struct store_tenant *t,
				   const struct store_snapshot *snap);
void store_set_snapshot_fetch_hook(struct store *st, store_snap_fetch_fn fn,
				   void *arg);

#endif
