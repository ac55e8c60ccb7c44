/*
 * sync_int.h: declarations private to sync/.
 */
#ifndef STREAMFS_SYNC_INT_H
#define STREAMFS_SYNC_INT_H

#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <time.h>

#include <pthread.h>
#include <json-c/json.h>

#include "backend.h"
#include "store_sync.h"
#include "store_util.h"
#include "sync.h"

#define SYNC_ROOT "streamfs-v1"


/* Logging: remote/'s "streamfs: sync: " line serves sync/ too. */
#define sync_log remote_log

/* ---- string vectors ---- */

/* A growable array of malloc'd strings (tenant names and the like). */
struct sync_strvec {
	char **v;
	size_t n, alloc;
};
/* Appends a copy of STR: 0 or -ENOMEM. */
int sync_strvec_push(struct sync_strvec *sv, const char *str);
/* sync_strvec_push() with the shape of store's list callbacks (ARG: the
 * strvec). */
int sync_strvec_collect(void *arg, const char *name);
/* Frees the strings and the array (not SV itself). */
void sync_strvec_release(struct sync_strvec *sv);
/* A little-endian u64 at P (the index and piece objects' integers). */
void sync_put_le64(unsigned char *p, uint64_t v);
uint64_t sync_get_le64(const unsigned char *p);

/* ==== sync/: the sync thread and its files ====
 *
 * The files below share struct sync.  What each one is:
 *   lock.c          s->lock and s->evict_lock, their holder checked in
 *                   debug builds
 *   sync.c          the sync thread: passes, start, stop, now, status;
 *                   the helper-thread pool
 *   retry.c         when a failing object may be tried again
 *   keys.c          the keys of the remote layout
 *   index_object.c  the event index objects' codec
 *   ids_object.c    the event-ID table objects' codec
 *   ids_fetch.c     a continued history's ID tables, fetched when dedup
 *                   first needs them
 *   manifest.c      struct manifest: build, encode, decode, stale keys
 *   lease.c         the writer identity and its leases
 *   publish.c       a writer's manifests and tenants.json on the remote
 *   upload.c        sealed segments to the remote, several at once
 *   fetch.c         lazy fetch of evicted segments; eviction
 *   readahead.c     which segments fetch.c fetches ahead of a reader
 *   seed.c          a writer continuing another's published history
 *   replica.c       the analysis host's mirror of the remote
 *   snapshot.c      snapshots: upload, a replica's rows, lazy fetch
 *   piece.c         the tail pieces' codec, and the manifest's tail fields
 *   tail.c          a writer's flush: active segments' new bytes shipped
 *                   in one tail piece per tenant
 *   tail_replica.c  an analysis host's side: pieces appended to its
 *                   replica, and the switch to the sealed segment
 *   lost.c          objects the remote lost: confirmed before a manifest
 *                   names them, put again, or their stream frozen
 */

struct sync;

/* ---- lock.c ---- */

/* A mutex whose holder debug builds (!NDEBUG) record, so that a function
 * documented "with LOCK" can assert it: SYNC_ASSERT_HELD(&s->lock). */
struct sync_mutex {
	pthread_mutex_t m;
#ifndef NDEBUG
	_Atomic(const void *) owner;	/* the holder's tag, or NULL */
#endif
};
void sync_mutex_init(struct sync_mutex *mx);
void sync_mutex_destroy(struct sync_mutex *mx);
void sync_mutex_lock(struct sync_mutex *mx);
void sync_mutex_unlock(struct sync_mutex *mx);
/* pthread_cond_wait() and _timedwait() on MX, which the caller holds. */
void sync_cond_wait(pthread_cond_t *c, struct sync_mutex *mx);
int sync_cond_timedwait(pthread_cond_t *c, struct sync_mutex *mx,
			const struct timespec *abstime);
/* Whether the calling thread holds MX (always true under NDEBUG). */
bool sync_mutex_held(struct sync_mutex *mx);
#ifdef NDEBUG
#define SYNC_ASSERT_HELD(mx) ((void)(mx))
#else
#define SYNC_ASSERT_HELD(mx) assert(sync_mutex_held(mx))
#endif

/* ---- sync.c ---- */

/* Segments listed from the store. */
struct sync_seg_vec {
	struct store_segment *v;
	size_t n, alloc;
};
/* Appends SEG to ARG, a struct sync_seg_vec: store's list callback. */
int sync_seg_collect(void *arg, const struct store_segment *seg);
/* Orders by stream, then offset (qsort). */
int sync_seg_cmp(const void *a, const void *b);

/* A segment being fetched (fetch.c). */
struct fetch_req;
/* Readahead of one stream (readahead.c). */
struct fetch_ra;
/* GET buffers fetch.c keeps between fetches: a chunk for each of up to
 * eight GETs. */
#define SYNC_FETCH_BUFS 8

/* A helper thread with a backend (and so a CURL handle) of its own. */
struct sync_worker {
	struct sync *s;			/* set before the thread starts */
	struct backend *b;		/* the thread's only: opened on first
					 * use, closed by sync_pool_join() */
	pthread_t thread;		/* the starter's and joiner's */
};

/* Helper threads started together (uploaders, fetchers).  Written only
 * by the thread that starts and joins them (sync_start(), sync_stop()). */
struct sync_pool {
	struct sync_worker *v;
	unsigned n;			/* started */
};
/* Starts N threads, each running FN with its struct sync_worker.  On
 * failure the ones started stay in P: the caller tells them to stop and
 * calls sync_pool_join(). */
int sync_pool_start(struct sync *s, struct sync_pool *p, unsigned n,
		    void *(*fn)(void *)) SYNC_WARN_UNUSED;
/* Joins P's threads (told to stop before), closes their backends and
 * frees P's array. */
void sync_pool_join(struct sync_pool *p);

/* ---- retry.c (the sync thread's) ---- */

/* A failing object and when it may be tried again. */
struct sync_retry {
	char *key;		/* its remote key */
	unsigned fails;		/* failures in a row */
	int64_t next_ns;	/* CLOCK_MONOTONIC: not tried before */
	int64_t seen_ns;	/* last looked up */
	int rc;			/* the last failure */
	char what[160];		/* and what failed, with the remote's cause */
	bool body_done;		/* a segment that is up, its index not yet */
};

struct sync_retries {
	struct sync_retry *v;
	size_t n, alloc;
};

/* KEY's entry (marked seen), or NULL when it has no failure pending. */
struct sync_retry *sync_retry_get(struct sync_retries *r, const char *key);
/* Whether the object of E (NULL: no entry) may be tried at NOW. */
bool sync_retry_due(const struct sync_retry *e, int64_t now);
/* Records failure RC of KEY (WHAT: what failed) and when to try it next.
 * The entry, or NULL without memory (then it is simply tried again). */
struct sync_retry *sync_retry_failed(struct sync *s, struct sync_retries *r,
				     const char *key, int rc,
				     const char *what);
/* KEY succeeded: its entry goes. */
void sync_retry_done(struct sync_retries *r, const char *key);
/* CLOCK_MONOTONIC of the next retry due, 0 when none; entries not looked
 * up for a long while go first. */
int64_t sync_retry_next(struct sync_retries *r);
void sync_retries_release(struct sync_retries *r);

/* ---- manifest.c ---- */

/* A segment as a manifest lists it. */
struct manifest_seg {
	uint64_t seg;			/* the writer's segment id */
	uint64_t first_version, count;
	uint64_t offset, length;	/* in the stream */
	uint64_t checksum;		/* XXH3 of its bytes */
	int64_t created_ns;
	/* Its event-ID table object: 1 uploaded beside it, 0 none (no
	 * event of it has an ID), -1 not said (a writer that predates
	 * them). */
	int ids;
};

/* A snapshot as a manifest lists it. */
struct manifest_snap {
	uint64_t version;
	uint64_t length;
	uint64_t checksum;		/* XXH3 of the blob */
	int64_t time_ns;		/* its commit time on the writer */
};
/* A stream's share of one tail piece (piece.c), as the manifest lists it
 * after the stream's segments, in stream order: bytes of the writer's
 * segment SEG shipped before it sealed. */
struct manifest_tail {
	uint64_t piece;			/* the piece's seq */
	uint64_t seg;			/* the writer's segment id */
	uint64_t seg_offset;		/* where that segment starts */
	int64_t seg_created_ns;
	uint64_t first_version, count;
	uint64_t offset, length;	/* in the stream */
};

/* A tail piece object, as the manifest lists it. */
struct manifest_piece {
	uint64_t seq;			/* shipping order, per tenant */
	uint64_t length, checksum;	/* of the whole object */
	/* The generation of the writer's lease that shipped it. */
	uint64_t generation;
	int64_t created_ns;
};

struct manifest_stream {
	uint64_t id;			/* stable across renames */
	char *name;
	enum store_framing framing;
	uint32_t mode;
	int64_t uid, gid;
	int64_t mtime_ns;		/* 0: not given */
	uint64_t size, version;		/* what segs hold */
	struct manifest_seg *segs;	/* a gapless chain from offset 0 */
	size_t nsegs;
	struct manifest_snap *snaps;	/* uploaded, versions up to version */
	size_t nsnaps;
	struct manifest_tail *tails;	/* shipped early: from size on, a
					 * gapless chain (piece.c) */
	size_t ntails;
	/* Not encoded: the entry is the one last published, kept while
	 * the remote lacks one of its objects (lost.c); nothing is shipped
	 * for it. */
	bool frozen;
};

struct manifest_tombstone {
	uint64_t id;
	char *name;			/* may be NULL */
	int64_t removed_ns;
};

/* One tenant's manifest (docs/FORMAT.md); owns its strings and arrays. */
struct manifest {
	char *tenant, *writer;		/* NULL when not given */
	uint32_t mode;
	int64_t uid, gid;
	bool has_framing;
	enum store_framing framing;
	struct manifest_stream *streams;
	size_t nstreams, astreams;
	struct manifest_tombstone *tombs;
	size_t ntombs, atombs;
	int64_t updated_ns;		/* 0: not given */
	uint64_t generation;		/* its writer's lease; 0: not given */
	char *id_field;			/* the JSON member of event IDs;
					 * NULL: not given */
	struct manifest_piece *pieces;	/* those the tails name, by seq */
	size_t npieces;
};

void sync_manifest_release(struct manifest *m);
/* T's uploaded state, published by WRITER: its streams, each with the
 * uploaded segments that form a gapless chain from offset 0; no
 * tombstones.  0 or -errno (*OUT then empty). */
int sync_manifest_build(struct store_tenant *t, const char *writer,
			uint64_t generation, struct manifest *out) SYNC_WARN_UNUSED;
/* Gives M its tombstones: PREV's for a week after their removal unless
 * the stream is back, and the streams PREV lists and M lacks, removed
 * NOW. */
int sync_manifest_tombstones(struct manifest *m, const struct manifest *prev,
			     int64_t now) SYNC_WARN_UNUSED;
/* M as JSON text into *OUT (malloc'd).  Without TIMES, the streams'
 * mtime_ns and updated_ns are left out: the text to compare. */
int sync_manifest_encode(const struct manifest *m, bool times,
			 char **out) SYNC_WARN_UNUSED;
/* TEXT (LEN bytes) into *OUT.  Members it does not know are ignored, and
 * streams without a name or a segments array skipped.  -EIO when TEXT is
 * not one JSON object with a streams array, -ENOMEM; *OUT then empty. */
int sync_manifest_decode(const char *text, size_t len,
			 struct manifest *out) SYNC_WARN_UNUSED;
/* The last version R publishes: its segments' and its tail entries'. */
uint64_t sync_manifest_stream_end(const struct manifest_stream *r);
/* Appends to OUT the keys of the objects M names below TPREFIX: each
 * segment and its event index. */
int sync_manifest_keys(const struct manifest *m, const char *tprefix,
		       struct sync_strvec *out) SYNC_WARN_UNUSED;
/* Appends to OUT the keys OLD names and CUR does not: what can go once
 * CUR is published. */
int sync_manifest_stale_keys(const struct manifest *old,
			     const struct manifest *cur, const char *tprefix,
			     struct sync_strvec *out) SYNC_WARN_UNUSED;

/* ---- piece.c ---- */

/* One stream's bytes in a tail piece. */
struct piece_chunk {
	uint64_t stream;		/* the writer's stream id */
	struct manifest_tail tail;	/* piece is the piece's seq */
	struct store_batch *rows;	/* owned: the index rows of BYTES */
	size_t nrows;
	char *bytes;			/* tail.length bytes; owned when the
					 * piece was built, else into the
					 * decoded buffer */
};

/* A tail piece: every stream's new bytes of one flush of a tenant. */
struct piece {
	uint64_t seq, generation;
	bool owns_bytes;
	struct piece_chunk *chunks;
	size_t n, alloc;
};
void sync_piece_release(struct piece *p);
/* P as the piece object (docs/FORMAT.md) into OUT. */
int sync_piece_encode(const struct piece *p,
		      struct backend_buf *out) SYNC_WARN_UNUSED;
/* IN, a piece object whose length and XXH3 the caller checked, into *OUT
 * (its bytes point into IN).  -EIO when it does not add up. */
int sync_piece_decode(const struct backend_buf *in,
		      struct piece *out) SYNC_WARN_UNUSED;
/* The key of piece SEQ with CHECKSUM below TPREFIX (malloc'd). */
char *sync_piece_key(const char *tprefix, uint64_t seq, uint64_t checksum);
/* The manifest's tail fields, both ways: a stream's "tail" (O, its
 * object), the tenant's "pieces" (ROOT).  Decoding skips what it cannot
 * use. */
int sync_tail_encode(json_object *o, const struct manifest_stream *ms) SYNC_WARN_UNUSED;
int sync_tail_decode(struct manifest_stream *ms, json_object *o) SYNC_WARN_UNUSED;
int sync_pieces_encode(json_object *root, const struct manifest *m) SYNC_WARN_UNUSED;
int sync_pieces_decode(struct manifest *m, json_object *root) SYNC_WARN_UNUSED;
/* The piece SEQ lists in M, or NULL. */
const struct manifest_piece *sync_manifest_piece(const struct manifest *m,
						 uint64_t seq);
/* Appends to OUT the keys of the pieces M names. */
int sync_manifest_piece_keys(const struct manifest *m, const char *tprefix,
			     struct sync_strvec *out) SYNC_WARN_UNUSED;

/* ---- lost.c: key sets ---- */

/* A set of remote keys, each by its XXH3-64 with the object's size
 * (SYNC_SIZE_UNKNOWN when not known). */
#define SYNC_SIZE_UNKNOWN UINT64_MAX
struct sync_keyent {
	uint64_t hash, size;
};
struct sync_keyset {
	struct sync_keyent *v;
	size_t n, alloc;
	bool sorted;		/* v is sorted by hash, without duplicates */
};
/* A stream that publishes no more: the remote lost KEY, one of the
 * objects its published entry names, and no copy is left here. */
struct sync_frozen {
	uint64_t id;
	uint64_t version;	/* what its entry holds */
	char *name, *key;
	bool seen;		/* scratch flag of a check */
};

/* A put that succeeded, for lost.c. */
struct sync_put_note {
	char *key;
	uint64_t size;
};
/* A frozen stream, as sync_stream_status() tells it. */
struct sync_frozen_mark {
	char *tenant;
	uint64_t stream, version;
};

/* ---- sync.c: the sync object ---- */

/* Per-tenant state of the sync thread.  No lock: it belongs to the thread
 * that owns s->b (sync_start() before the thread runs, then the sync
 * thread, then sync_stop() after joining it). */
struct tenant_state {
	char *name;
	bool present;		/* scratch flag of a pass */
	/* Writer. */
	bool leased;		/* our lease is on the remote */
	bool refused;		/* another writer holds it (logged) */
	bool fenced;		/* taken over from us: never written again */
	uint64_t generation;	/* of our lease (leased or fenced) */
	char lease_tag[BACKEND_TAG_MAX];	/* our lease object's; "": ask */
	int64_t renewed_mono;	/* CLOCK_MONOTONIC when the last renewal
				 * that succeeded was sent */
	char *fence_note;	/* who took it over (fenced) */
	char *fence_text;	/* sync_lease.fence_note */
	/* The manifest as this writer last saw or wrote it (publish.c's
	 * compare-and-swap): its tag, "" when there is none; known: read. */
	char manifest_tag[BACKEND_TAG_MAX];
	bool manifest_tag_known;
	/* With s->mlocks: our lock on the manifest ("" none), when it was
	 * last taken or refreshed (CLOCK_MONOTONIC), and the XXH3 of the
	 * manifest text this writer last read or wrote (mtext_known; 0 with
	 * mtext_absent: there was none), compared when the lock is taken. */
	char mlock[BACKEND_TAG_MAX];
	int64_t mlock_mono;
	bool mlock_waits;	/* another's lock holds it (said) */
	uint64_t mtext_sum;
	bool mtext_known, mtext_absent;
	bool seeded;		/* our old manifest read from the remote */
	bool adopted;		/* made here from the remote at start */
	int64_t checked_ns;	/* CLOCK_MONOTONIC of the last check */
	struct manifest published;	/* the last one published (or ours,
					 * found at seeding); empty: none */
	char *published_cmp;	/* its text without times; NULL: publish
				 * at the next check */
	uint64_t published_len;	/* the length of its text as put */
	/* objects to delete whose delete failed */
	struct sync_strvec stale;
	/* Writer, tail.c: the last flush, and pieces no manifest names
	 * any more, deleted once their time comes. */
	int64_t flushed_ns;		/* CLOCK_MONOTONIC */
	uint64_t tail_bytes;		/* its part of status.tail_bytes */
	bool tail_note_due;		/* published: sync_tail_note() after
					 * tenants.json */
	struct tail_stale *tail_stale;
	size_t ntail_stale;
	/* Writer, lost.c: the objects of the tenant this writer confirmed
	 * on the remote (listed, or put by it) since it last saw it whole,
	 * and those it found lost there and cannot put again. */
	struct sync_keyset confirmed;
	struct sync_keyset lost;
	bool whole;		/* confirmed holds since a listing, and no
				 * sign of loss came since */
	int64_t listed_ns;	/* CLOCK_MONOTONIC of that listing */
	struct sync_frozen *frozen;	/* streams frozen, by id */
	size_t nfrozen;
	struct manifest inherited;	/* another writer's manifest that
					 * this one continued (seeding): the
					 * entries a stream frozen before its
					 * first publication here keeps */
	/* Replica: the manifest applied last (XXH3 of its writer, its
	 * generation and updated_ns): one of the same writer and generation
	 * written before it is a remote gone back in time (a share mounted
	 * from an older state), never applied. */
	uint64_t applied_writer;
	uint64_t applied_gen;
	int64_t applied_ns;
	/* Replica. */
	uint64_t mhash;		/* XXH3 of the manifest applied */
	uint64_t *map;		/* pairs remote id, local id */
	size_t nmap;
	int err;		/* last failure of the tenant, 0 */
};

/* Lock order: evict_lock, then lock; the store's own locks after
 * evict_lock.  lock is a leaf: never held across store calls or network
 * I/O (sync_evict() takes it under evict_lock to update the status).
 * evict_lock is held across store calls (eviction), never across network
 * I/O, and never taken with lock held.
 *
 * Fields: set before the threads start and read-only after, unless a
 * comment names their lock or their thread. */
struct sync {
	struct store *st;
	struct backend *b;		/* the sync thread's (sync_start() and
					 * sync_stop() around it) */
	struct sync_config cfg;		/* strings owned; opts.abort is
					 * &abort */
	struct backend_abort abort;	/* atomic; set by sync_stop(): ends
					 * transfers */
	char *url_shown;		/* cfg.url as log lines show it
					 * (backend_url_redacted()) */
	char *identity;			/* writer identity, or NULL */
	char host[64];
	pthread_t thread;

	struct sync_mutex lock;
	pthread_cond_t cond;		/* wakes the thread; with lock */
	pthread_cond_t done;		/* wakes sync_now() waiters; with lock */
	bool stop;			/* protected by lock */
	bool kicked;			/* protected by lock */
	uint64_t now_req;		/* protected by lock: sync_now() calls */
	uint64_t now_done;		/* protected by lock: calls satisfied */
	struct sync_status status;	/* protected by lock */
	struct tail_mark *marks;	/* protected by lock: how far each
					 * stream's tail reaches (tail.c) */
	size_t nmarks;
	struct sync_lease *leases;	/* protected by lock: pass_status()'s
					 * copy of the tenants' leases */
	size_t nleases;			/* protected by lock */

	/* Fetching (fetch.c, readahead.c). */
	struct sync_pool fetchers;	/* the worker threads */
	struct fetch_req *fq;		/* protected by lock: outstanding */
	pthread_cond_t fetch_cond;	/* wakes workers; with lock */
	pthread_cond_t fetch_done;	/* wakes hook waiters, and
					 * sync_fetch_stop() when the last
					 * leaves; with lock */
	struct snap_req *sq;		/* protected by lock: snapshots to
					 * fetch (snapshot.c) */
	struct ids_req *iq;		/* protected by lock: event-ID tables
					 * to fetch (ids_fetch.c) */
	unsigned hook_waiters;		/* protected by lock: threads inside
					 * sync_fetch_hook() or
					 * sync_fetch_reached() */
	struct sync_mutex evict_lock;	/* one eviction round at a time */
	/* Protected by lock: GET buffers kept for the next fetch, streams
	 * being read ahead and when to look at them next. */
	struct backend_buf fetch_bufs[SYNC_FETCH_BUFS];
	unsigned nfetch_bufs;
	struct fetch_ra *fetch_ra;
	int64_t fetch_ra_due;		/* CLOCK_MONOTONIC */

	/* Uploading (upload.c). */
	struct sync_pool uploaders;	/* cfg.upload_parallel - 1 helpers */
	struct upload_batch *ub;	/* protected by lock: the segments a
					 * pass is uploading, or NULL */
	pthread_cond_t upload_cond;	/* wakes helpers; with lock */
	pthread_cond_t upload_done;	/* wakes sync_upload(); with lock */

	/* Tenant claims (sync_tenant_claim()), protected by lock: one at a
	 * time; the thread answers in claim_rc and bumps claim_done. */
	char *claim_name;		/* asked, not yet answered; or NULL */
	int claim_rc;
	uint64_t claim_req, claim_done;
	pthread_cond_t claim_cond;	/* wakes claimers; with lock */
	/* Names of fenced tenants, protected by lock; nfenced is read
	 * without it first (sync_tenant_fenced() is on every append). */
	struct sync_strvec fenced;
	atomic_uint nfenced;
	/* lost.c, protected by lock: keys put (by any thread) that the
	 * sync thread did not take yet; the frozen streams of every tenant
	 * (sync_stream_status()), their number read without it first. */
	struct sync_put_note *put_notes;
	size_t nput_notes, aput_notes;
	struct sync_frozen_mark *frozen_marks;
	size_t nfrozen_marks, afrozen_marks;
	atomic_uint nfrozen;

	/* The sync thread's only (sync_start() before it runs). */
	bool probed;			/* sync_probe_fencing() answered */
	bool unfenceable;		/* ... that the remote cannot fence */
	/* Manifests are written under a WebDAV lock held with the lease
	 * (publish.c): the backend locks and the probe found the locks
	 * enforced.  Refreshed every mlock_period_ns. */
	bool mlocks;
	int64_t mlock_period_ns;
	bool remote_used;		/* STATE_DIR/sync-remote names the URL */
	bool adopted;			/* sync_seed_tenants() left nothing
					 * to do later */

	/* The sync thread's only. */
	struct sync_retries retries;	/* failing objects (retry.c) */
	char *tenants_json;		/* tenant set last published */
	int64_t tenants_checked_ns;	/* CLOCK_MONOTONIC of that */
	struct tenant_state *ts;
	size_t nts;
};

int64_t sync_clock(clockid_t clk);
/* Records the outcome of one step; logs only changes of state. */
void sync_note(struct sync *s, int rc, const char *what);
/* Appends to WHAT (WLEN bytes) what B's remote said of its last failed
 * call ("HTTP status 503"), when it said anything. */
void sync_what_why(char *what, size_t wlen, const struct backend *b);

/* The cause of failure RC (-errno) of a step. */
enum sync_cause sync_cause_of(int rc);
/* NAME's state, added when new; NULL: out of memory.  The thread's. */
struct tenant_state *sync_tstate(struct sync *s, const char *name);
/* Whether sync_stop() has begun: long loops stop early (-ECANCELED). */
bool sync_stopping(struct sync *s);

/* ---- keys.c ---- */

/* SYNC_ROOT "/tenants.json". */
extern const char sync_tenants_key[];
/* Decodes what sync_key_encode() made into *OUT (malloc'd): -EINVAL for
 * text it would not have written, -ENOMEM. */
int sync_key_decode(const char *enc, char **out) SYNC_WARN_UNUSED;
/* The keys below return a malloc'd string, or NULL (out of memory). */
/* "streamfs-v1/tenants/ENC/". */
char *sync_tenant_prefix(const char *tenant);
/* Key of segment ID with CHECKSUM below TPREFIX; ".idx" for its index. */
char *sync_segment_key(const char *tprefix, uint64_t id, uint64_t checksum,
		       bool index);
/* Key of the event-ID table object of segment ID with CHECKSUM. */
char *sync_ids_key(const char *tprefix, uint64_t id, uint64_t checksum);
/* The manifest below TPREFIX. */
char *sync_manifest_key(const char *tprefix);
/* Key of the snapshot at VERSION with CHECKSUM below TPREFIX. */
char *sync_snapshot_key(const char *tprefix, uint64_t version,
			uint64_t checksum);
/* The lease of TENANT. */
char *sync_lease_key(const char *tenant);

/* ---- index_object.c ---- */

/* Encodes the event index object of segment SEG of T into OUT. */
int sync_index_encode(struct store_tenant *t, uint64_t seg,
		      struct backend_buf *out) SYNC_WARN_UNUSED;
/* The same in steps: the head, each row in stream order, the tail. */
int sync_index_begin(struct backend_buf *out, uint64_t seg) SYNC_WARN_UNUSED;
int sync_index_add(struct backend_buf *out,
		   const struct store_batch *b) SYNC_WARN_UNUSED;
int sync_index_end(struct backend_buf *out) SYNC_WARN_UNUSED;
/* The rows of IN, the index object of segment SEG, into *OUT (malloc'd,
 * *N of them).  -EIO when IN is damaged or another segment's. */
int sync_index_decode(const struct backend_buf *in, uint64_t seg,
		      struct store_batch **out, size_t *n) SYNC_WARN_UNUSED;

/* ---- ids_object.c ---- */

/* An event-ID table object: the IDs of one segment's events, each with
 * its hash (as the store's dedup hashes it) and its event's stream
 * offset.  Pair i's ID is bytes ends[i - 1] (0 for the first) up to
 * ends[i] of ids.  Owns its arrays. */
struct ids_object {
	uint64_t seg;			/* the segment's id */
	uint64_t field;			/* XXH3-64 of the id_field name */
	uint64_t *pairs;		/* hash, offset; 2 * n */
	uint64_t *ends;
	char *ids;
	size_t n, idlen;
	size_t apairs, aends, aids;	/* allocated */
};
void sync_ids_release(struct ids_object *o);
/* Appends one ID (any order: encoding sorts). */
int sync_ids_add(struct ids_object *o, uint64_t hash, uint64_t offset,
		 const char *id, size_t len) SYNC_WARN_UNUSED;
/* O as the object (docs/FORMAT.md) into OUT, its pairs sorted by hash,
 * then offset. */
int sync_ids_encode(const struct ids_object *o,
		    struct backend_buf *out) SYNC_WARN_UNUSED;
/* IN, the ID table object of segment SEG, into *OUT (sorted as encoded).
 * -EIO when it is damaged or another segment's. */
int sync_ids_decode(const struct backend_buf *in, uint64_t seg,
		    struct ids_object *out) SYNC_WARN_UNUSED;

/* ---- lease.c ---- */

/* Reads or creates STATE_DIR/sync-identity into s->identity. */
int sync_identity_load(struct sync *s) SYNC_WARN_UNUSED;
/* Takes (or finds already ours) the lease of TS, with a new expiry.
 * -EBUSY when another writer holds it, live, or expired without
 * cfg.takeover (logged once per tenant, with the holder and the expiry).
 * An expired lease of another writer is taken with cfg.takeover, at the
 * next generation.  *CREATED (when not NULL) tells whether this call
 * wrote the lease object, as opposed to finding one that already named us
 * (a restart). */
int sync_lease_take(struct sync *s, struct tenant_state *ts, char *what,
		    size_t wlen, bool *created);
/* Renews the leases held whose last renewal is lease_ns / 3 old, each
 * with a conditional write; a lease found taken over fences its tenant.
 * 0 or the first failure (in WHAT). */
int sync_leases_renew_due(struct sync *s, char *what, size_t wlen);
/* Before a publication of TS: renews its lease now.  0 when it is ours
 * and that renewal is younger than lease_ns / 2; -EROFS when TS is (now)
 * fenced; else the remote's failure. */
int sync_lease_confirm(struct sync *s, struct tenant_state *ts, char *what,
		       size_t wlen);
/* Whether TS's lease was confirmed within lease_ns / 2: what deleting
 * objects that only older manifests named needs. */
bool sync_lease_fresh(struct sync *s, const struct tenant_state *ts);
/* Deletes TS's lease if it is still ours (a conditional delete): 0, or
 * -errno (-ESTALE: it is another's now; left in place, logged). */
int sync_lease_drop(struct sync *s, struct tenant_state *ts);
/* Deletes the leases we hold; with ONLY (an array of nts flags, or NULL
 * for all), only those flagged. */
void sync_lease_release(struct sync *s, const bool *only);
/* Whether the remote enforces the conditional writes leases rely on:
 * creates and replaces a probe object under SYNC_ROOT/probes/ with a
 * condition that must fail, then deletes it.  0 (also when it does not
 * but cfg.risk_forks accepts that, logged); -EOPNOTSUPP when it does not
 * (logged); or the remote's -errno (retryable: ask again later). */
int sync_probe_fencing(struct sync *s) SYNC_WARN_UNUSED;
/* Whether a writer at start may take TENANT's lease to continue it: 1
 * when there is none, it is ours, or it expired and cfg.takeover; 0 when
 * it is another's; or the remote's -errno. */
int sync_lease_takeable(struct sync *s, const char *tenant) SYNC_WARN_UNUSED;
/* The seconds a manifest lock is asked for (the lease, rounded up). */
long sync_mlock_seconds(const struct sync *s);
/* At start: the lease of every existing tenant, so that a second writer
 * is refused at mount.  An unreachable remote is left to the thread. */
int sync_leases_at_start(struct sync *s) SYNC_WARN_UNUSED;

/* ---- publish.c (the sync thread) ---- */

/* Reads TS's manifest from the remote once: when this writer wrote it,
 * it becomes TS->published, so that its objects are deleted once no
 * longer named and its streams get tombstones.  Another writer's is
 * continued: its streams that T lacks are seeded (sync_seed_streams()).
 * 0 when there is none. */
int sync_seed_from_remote(struct sync *s, struct store_tenant *t,
			  struct tenant_state *ts, const char *tprefix,
			  char *what, size_t wlen);
/* With s->mlocks: refreshes the manifest locks held whose refresh is
 * due (a lock that is gone is taken again, with a check, at the next
 * publication).  0 or the first failure (in WHAT). */
int sync_mlocks_refresh_due(struct sync *s, char *what, size_t wlen);
/* Releases TS's lock on its manifest, if it holds one. */
void sync_mlock_release(struct sync *s, struct tenant_state *ts);
/* What a manifest publication ships of the active segments first. */
enum sync_flush {
	SYNC_FLUSH_NONE,	/* nothing */
	SYNC_FLUSH_STEP,	/* a flush: one tail piece, at most 32 MiB */
	SYNC_FLUSH_ALL,		/* sync_now: everything, in as many pieces
				 * as it takes */
};
/* Writes T's manifest when it changed, then deletes the objects only
 * older manifests named.  With FLUSH, what active segments took since the
 * last flush goes up first, in tail pieces (tail.c). */
int sync_publish_manifest(struct sync *s, struct store_tenant *t,
			  struct tenant_state *ts, const char *tprefix,
			  enum sync_flush flush, char *what, size_t wlen);
/* Writes tenants.json when our set of tenants (NAMES, with their
 * leases) changed, and once a minute; then drops tenants gone here. */
int sync_publish_tenants(struct sync *s, const struct sync_strvec *names,
			 char *what, size_t wlen);

/* ---- fetch.c ---- */

int sync_fetch_hook(void *arg, struct store_tenant *t,
		    const struct store_segment *seg);
void sync_fetch_reached(void *arg, struct store_tenant *t,
			const struct store_segment *seg);
int sync_fetch_start(struct sync *s);
void sync_fetch_stop(struct sync *s);
/* Queues a request for SEG of T, with s->lock.  NULL: -ENOMEM. */
struct fetch_req *sync_fetch_add(struct sync *s, struct store_tenant *t,
				 const struct store_segment *seg, bool waited);
/* The request for segment SEG of T not done yet, or NULL; with s->lock. */
struct fetch_req *sync_fetch_find(struct sync *s, struct store_tenant *t,
				  uint64_t seg);
/* Evicts uploaded segments LRU while they exceed cache_size, never
 * KEEP_SEG of KEEP_T. */
void sync_evict(struct sync *s, struct store_tenant *keep_t, uint64_t keep_seg);

/* ---- readahead.c (with fetch.c's workers and readers) ---- */

/* A reader of SEG's stream is in SEG, with s->lock: its window starts
 * there, or moves there. */
void sync_ra_reader_at(struct sync *s, struct store_tenant *t,
		       const struct store_segment *seg);
/* Lists the segments of T's stream STREAM (a store call: without
 * s->lock) and moves its readahead window, if it has one. */
void sync_ra_step(struct sync *s, struct store_tenant *t, uint64_t stream);
/* Every RA_POLL_NS while streams are read ahead, with s->lock (dropped
 * meanwhile): windows whose reader stopped go. */
void sync_ra_poll(struct sync *s);
/* Drops every window, with s->lock (sync_fetch_stop()). */
void sync_ra_clear(struct sync *s);

/* ---- snapshot.c ---- */
struct snap_req;
/* Puts T's snapshots whose segment is uploaded and marks them uploaded;
 * *N (OUT) counts them, *LEFT (OUT) those still waiting. */
/* Puts SNAP of T (its local blob) as its object below TPREFIX: 0, -ENOENT
 * when the blob is not here, or the remote's -errno. */
int sync_snapshot_put(struct sync *s, struct store_tenant *t,
		      const char *tprefix, const struct store_snapshot *snap,
		      char *what, size_t wlen) SYNC_WARN_UNUSED;
int sync_snapshots_upload(struct sync *s, struct store_tenant *t,
			  const char *tprefix, uint64_t *n, uint64_t *left,
			  char *what, size_t wlen) SYNC_WARN_UNUSED;
/* Makes the snapshots of local stream LID those that R lists. */
int sync_replica_snapshots(struct store_tenant *t, uint64_t lid,
			   const struct manifest_stream *r) SYNC_WARN_UNUSED;
/* The store's snapshot fetch hook (ARG: the struct sync). */
int sync_snapshot_fetch_hook(void *arg, struct store_tenant *t,
			     const struct store_snapshot *snap);
/* A fetch worker, with s->lock: fetches one queued snapshot (dropping the
 * lock meanwhile) and returns true, or returns false when none waits. */
bool sync_snapshot_fetch_next(struct sync_worker *f);
/* With s->lock: fails what waits (stop); frees the queue (after the
 * workers are joined). */
void sync_snapshot_fetch_stop(struct sync *s);
void sync_snapshot_fetch_release(struct sync *s);

/* ---- upload.c ---- */

/* Helper threads for the writer's uploads (none when cfg.upload_parallel
 * is 1).  sync_upload_stop() sets s->stop. */
int sync_upload_start(struct sync *s) SYNC_WARN_UNUSED;
void sync_upload_stop(struct sync *s);
/* What sync_upload() did. */
struct sync_upload_out {
	uint64_t done, done_bytes;	/* segments done (uploaded, or their
					 * stream gone) */
	int64_t oldest_left_ns;		/* creation of the oldest segment not
					 * done; 0: none */
	bool down;			/* stopped early: several failed and
					 * none went up (the remote looks down) */
};
/* Uploads SEGS, sealed segments of T (tenant prefix TPREFIX), up to
 * cfg.upload_parallel at once: each one's bytes are checked, then it and
 * its event index object are put and it is marked uploaded.  A segment
 * that failed lately waits for its time in s->retries (retry.c) unless
 * RETRY_ALL; the failure of one does not stop the others (but see
 * OUT->down).  Returns once none is in flight: 0 when every segment is
 * done, else the first failure in segment order (one that waited counts
 * with its last failure), described in WHAT, or -ECANCELED when
 * sync_stop() cut the batch short. */
int sync_upload(struct sync *s, struct store_tenant *t, const char *tprefix,
		const struct sync_seg_vec *segs, bool retry_all,
		struct sync_upload_out *out, char *what, size_t wlen);

/* ---- seed.c ---- */

/* A writer continues M, the manifest another writer published for T
 * (below TPREFIX): each stream SOURCE lacks is made from it, with its id,
 * versions, segments (evicted: fetched when read), index rows and
 * snapshots, so appends continue at the next version and the next
 * manifest names all of it again. */
int sync_seed_streams(struct sync *s, struct store_tenant *t,
		      const char *tprefix, const struct manifest *m,
		      char *what, size_t wlen) SYNC_WARN_UNUSED;
/* Installs the event-ID table of seeded segment SEG (CHECKSUM) of T from
 * its object below TPREFIX, through B.  0, or -errno when there is none,
 * or it is damaged or of another id_field (logged, but for none): dedup
 * then reads the segment's bytes. */
int sync_seed_ids(struct backend *b, struct store_tenant *t,
		  const char *tprefix, uint64_t seg,
		  uint64_t checksum) SYNC_WARN_UNUSED;

/* ---- ids_fetch.c ---- */

struct ids_req;
/* The store's ID fetch hook (ARG: the struct sync). */
int sync_ids_fetch_hook(void *arg, struct store_tenant *t,
			const struct store_segment *seg);
/* A fetch worker, with s->lock: fetches one queued ID table (dropping the
 * lock meanwhile) and returns true, or returns false when none waits. */
bool sync_ids_fetch_next(struct sync_worker *f);
/* With s->lock: fails what waits (stop); frees the queue (after the
 * workers are joined). */
void sync_ids_fetch_stop(struct sync *s);
void sync_ids_fetch_release(struct sync *s);
/* At a writer's start: each tenant the remote lists and SOURCE lacks
 * whose lease is free (none, ours, or expired with cfg.takeover) is
 * created here, leased and seeded.  Live leases of others are left alone:
 * 1 when, with cfg.takeover, one of them may expire (call again later). */
int sync_seed_tenants(struct sync *s) SYNC_WARN_UNUSED;
/* TS, just leased for a mkdir: when the remote has its manifest, the
 * tenant is made here and seeded (1), so that no append lands before its
 * published history; 0 when there is none. */
int sync_seed_claimed(struct sync *s, struct tenant_state *ts, char *what,
		      size_t wlen) SYNC_WARN_UNUSED;

/* ---- tail.c (a writer's sync thread) ---- */

/* A piece to delete at DUE_NS (CLOCK_MONOTONIC). */
struct tail_stale {
	char *key;
	int64_t due_ns;
};
/* Whether TS's tail is to be shipped now: flush is on and due (or FORCE),
 * and some stream of T grew past what TS's published manifest holds. */
bool sync_tail_due(struct sync *s, struct store_tenant *t,
		   struct tenant_state *ts, bool force);
/* Gives M (just built: segments only) the tails PREV listed that its
 * segments do not cover yet, and the pieces they name. */
int sync_tail_carry(const struct manifest *prev,
		    struct manifest *m) SYNC_WARN_UNUSED;
/* Ships what T's streams took past M's tails in one piece (put to the
 * remote) and adds it to M; with ALL, in as many pieces as it takes, else
 * one piece of at most PIECE_MAX_BYTES (the rest waits for the next
 * flush).  Nothing when nothing grew. */
int sync_tail_ship(struct sync *s, struct store_tenant *t,
		   struct tenant_state *ts, const char *tprefix,
		   struct manifest *m, bool all, char *what,
		   size_t wlen) SYNC_WARN_UNUSED;
/* CUR replaced OLD on the remote: the pieces only OLD named are deleted
 * cfg.piece_keep_ns later. */
int sync_tail_retire(struct sync *s, struct tenant_state *ts,
		     const struct manifest *old, const struct manifest *cur,
		     const char *tprefix) SYNC_WARN_UNUSED;
/* Deletes the retired pieces whose time came (all with ALL). */
int sync_tail_delete_due(struct sync *s, struct tenant_state *ts, bool all,
			 char *what, size_t wlen) SYNC_WARN_UNUSED;
void sync_tail_release(struct tenant_state *ts);
/* How far a stream's published tail reaches, for sync_stream_status(). */
struct tail_mark {
	char *tenant;
	uint64_t stream, version;
};
/* TS's manifest was published: its streams' marks and its tail bytes go
 * to S's status (takes s->lock). */
int sync_tail_note(struct sync *s, struct tenant_state *ts) SYNC_WARN_UNUSED;
/* The version stream STREAM of TENANT's tail reaches, 0 when none; with
 * s->lock. */
uint64_t sync_tail_mark(struct sync *s, const char *tenant, uint64_t stream);
/* Frees S's marks (sync_stop()). */
void sync_tail_marks_release(struct sync *s);

/* ---- tail_replica.c ---- */

/* Pieces fetched during one replica pass of a tenant. */
struct piece_cache {
	struct piece *v;
	struct backend_buf *bufs;
	size_t n;
};
void sync_piece_cache_release(struct piece_cache *pc);
/* *OUT: the chunk of remote stream RID that TL (an entry of M) lists, from
 * its piece in PC, or fetched, checked and decoded into PC; its rows
 * checked against its bytes.  -EIO when it does not match; -ENOENT when the
 * piece is gone (a newer manifest replaced it). */
int sync_tail_chunk(struct sync *s, const char *tprefix,
		    const struct manifest *m, uint64_t rid,
		    const struct manifest_tail *tl, struct piece_cache *pc,
		    const struct piece_chunk **out, char *what,
		    size_t wlen) SYNC_WARN_UNUSED;
/* Appends to local stream LID what R's tails hold past its end, from the
 * pieces M lists (fetched once into PC). */
int sync_replica_tails(struct sync *s, struct store_tenant *t,
		       const char *tprefix, uint64_t lid,
		       const struct manifest *m, const struct manifest_stream *r,
		       struct piece_cache *pc, char *what,
		       size_t wlen) SYNC_WARN_UNUSED;
/* Local stream LID, whose end A holds, reached sealed segment SEG
 * (origin set) or went into it: its tail segment of that origin takes the
 * rest of the bytes from the segment object (ranged GET) and its
 * checksum.  0 when LID has no such tail segment (nothing to do). */
int sync_replica_tail_seal(struct sync *s, struct store_tenant *t,
			   const char *tprefix, uint64_t lid,
			   const struct store_segment *seg,
			   struct store_attr *a, char *what,
			   size_t wlen) SYNC_WARN_UNUSED;

/* ---- lost.c (the sync thread, but sync_lost_note_put()) ---- */

int sync_keyset_add(struct sync_keyset *ks, const char *key,
		    uint64_t size) SYNC_WARN_UNUSED;
/* Whether KS holds KEY, with SIZE unless that is SYNC_SIZE_UNKNOWN (or
 * KS does not know it). */
bool sync_keyset_has(struct sync_keyset *ks, const char *key, uint64_t size);
void sync_keyset_release(struct sync_keyset *ks);

/* Any thread: KEY, of SIZE bytes, was put (the server said so). */
void sync_lost_note_put(struct sync *s, const char *key, uint64_t size);
/* A sign that TS's remote may have lost objects (a manifest or lease of
 * its own found changed, the remote down or gone): its objects are
 * listed again before the next manifest. */
void sync_lost_suspect(struct sync *s, struct tenant_state *ts);
void sync_lost_suspect_all(struct sync *s);
/* KEY of TS was deleted by this writer. */
void sync_lost_deleted(struct tenant_state *ts, const char *key);
/* Before TS's manifest M (just built from T, segments and snapshots
 * only) goes out: lists the tenant's objects when they are not all
 * confirmed (or loss was suspected, or VERIFY_NS passed), puts again the segments, event indexes
 * and snapshots the remote lost whose local copy is here, and freezes the
 * streams that name a lost object without one (their entry becomes the
 * one last published; logged, in the status).  -errno when the listing
 * or a put failed: nothing is to be published then. */
int sync_lost_check(struct sync *s, struct store_tenant *t,
		    struct tenant_state *ts, const char *tprefix,
		    struct manifest *m, char *what, size_t wlen) SYNC_WARN_UNUSED;
/* After sync_tail_carry(): each piece M names that the remote lost is
 * put again, made anew from the local segments when that gives the same
 * object; else the tails naming it are cut (the streams' bytes from there
 * go in a new piece: *RESHIP, OUT), but those of frozen streams. */
int sync_lost_pieces(struct sync *s, struct store_tenant *t,
		     struct tenant_state *ts, const char *tprefix,
		     struct manifest *m, bool *reship, char *what,
		     size_t wlen) SYNC_WARN_UNUSED;
/* Right before M is put: 0 when every object it names is confirmed on the
 * remote (frozen streams' entries aside), else -EAGAIN (WHAT says which:
 * the next pass lists the tenant). */
int sync_lost_confirmed(struct sync *s, struct tenant_state *ts,
			const char *tprefix, const struct manifest *m,
			char *what, size_t wlen) SYNC_WARN_UNUSED;
/* TS's frozen streams, for the status: how many, and NOTE (LEN bytes):
 * "S at version V (lost KEY), ...". */
size_t sync_lost_note(const struct tenant_state *ts, char *note, size_t len);
void sync_lost_release(struct tenant_state *ts);
/* Frees S's notes and marks (sync_stop(), once no thread is left). */
void sync_lost_free(struct sync *s);

/* ---- replica.c ---- */

/* True when the local segments of LID are the first ones of MS: same
 * origin segment id, and same checksum, offset and length (a tail
 * segment: the same origin and offset, and no more bytes).  Segment ids
 * alone are not enough: a tenant removed and created again between two
 * polls numbers its segments from 1 again. */
bool sync_replica_is_prefix(struct store_tenant *t, uint64_t lid,
			    const struct manifest_stream *ms);
/* Adds to local stream LID of T the segments of MS it lacks, each from
 * its event index object (the bytes stay remote: evicted); with KEEP_ID
 * (a writer seeded from the remote) they keep their published ids. */
int sync_replica_add_segments(struct sync *s, struct store_tenant *t,
			      const char *tprefix, uint64_t lid,
			      const struct manifest_stream *ms, bool keep_id,
			      char *what, size_t wlen) SYNC_WARN_UNUSED;
/* tenants.json into *ROOT (json_object_put() it); an empty object when
 * nothing is published yet. */
int sync_tenants_json_get(struct sync *s, json_object **root) SYNC_WARN_UNUSED;
/* One rescan of the remote into the store. */
int sync_replica_pass(struct sync *s, char *what, size_t wlen);

#endif
