/*
 * Private declarations of store/.  The locks and their order are written
 * above the structs they guard ("in-memory state").
 *
 * The files of store/ stand in layers, lowest first.  A file calls into its
 * own layer or lower ones, never higher, and no files call each other round
 * in a cycle (tests/check_layers.py checks both on the built objects):
 *
 *   1 leaves: util.c (store_util.h) hash.h ids.c reserve.c lines.c
 *   2 segment files and the index: segment.c stream.c index.c
 *   3 journal and marks: journal.c mark.c dedup.c
 *   4 append, read, seal, replica: append.c read.c seal.c replica.c
 *     fsync.c evict.c names.c snapshot.c
 *   5 recovery and the store object: recover.c store.c verify.c
 */
#ifndef STREAMFS_STORE_INT_H
#define STREAMFS_STORE_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <sys/uio.h>
#include <syslog.h>	/* LOG_* priorities of store_log() */

#include "store_sync.h"
#include "store_util.h"

#define SEG_DIR "seg"
#define INDEX_DB "index.db"
#define TENANTS_DIR "tenants"
#define SNAP_DIR "snap"

/* ---- lines.c: the line ends of an append ---- */

struct lines_scan {
	size_t count;	/* '\n' bytes */
	size_t end;	/* just past the last '\n'; 0 when there is none */
	bool quote;	/* some '"': only then may a line name an ID member */
};
/* One pass over the LEN bytes of BUF (OUT). */
void store_lines_scan(const char *buf, size_t len, struct lines_scan *out);

/* ---- ids.c: event IDs and their sets ---- */

/* Hash of an event ID; equal IDs have equal hashes, the reverse is checked. */
uint64_t store_ids_hash(const char *id, size_t len);

/* Finds the ID of the JSON-lines event LINE (LEN bytes, '\n' excluded).
 * Returns 1 and sets *id and *idlen (owned by SC, valid until its next use) when
 * LINE is a JSON object with a top-level string member named FIELD (given to
 * store_ids_scratch_init), however deep the rest of it nests; 0 otherwise;
 * -ENOMEM.  A scratch serves one thread at a time. */
struct json_tokener;
struct json_object;
struct ids_scratch {
	struct json_tokener *tok;	/* made at the first line that needs it */
	struct json_object *last;	/* owns the string last returned */
	char pattern[STORE_ID_FIELD_MAX + 3];	/* "field", quotes included */
	size_t patlen;
	char field[STORE_ID_FIELD_MAX + 1];	/* the member's name */
};
/* False for a line that cannot hold an ID, being no JSON object: its first
 * byte FIRST is neither '{' nor JSON whitespace.  Rules out most lines of a
 * stream without IDs before a call to store_ids_extract(). */
static inline bool store_ids_may_be_object(char first)
{
	if ((unsigned char)first > ' ')
		return first == '{';
	return first == ' ' || first == '\t' || first == '\r' || first == '\n';
}
/* Init allocates nothing; release frees what store_ids_extract() made. */
void store_ids_scratch_init(struct ids_scratch *sc, const char *field);
void store_ids_scratch_release(struct ids_scratch *sc);
int store_ids_extract(struct ids_scratch *sc, const char *line, size_t len,
		      const char **id, size_t *idlen);
/* What store_ids_extract() falls back on when LINE nests deeper than json-c
 * goes: the same answer, found by walking the top level with a depth
 * counter (ids.c says what is checked past json-c's depth).  Exported for
 * tests/fuzz/fuzz_ids.c, which checks that it agrees with json-c. */
int store_ids_find_top(struct ids_scratch *sc, const char *line, size_t len,
		       const char **id, size_t *idlen);

/* The sets, filters and tables below belong to a stream and are guarded
 * as it is (its tenant's lock). */

/* An open-addressing set of (hash, stream offset) pairs. */
struct idset {
	uint64_t *slots;	/* 2 words a slot: hash, offset + 1 (0: empty) */
	size_t mask;		/* slots - 1, a power of two minus one */
	size_t used;
};

void store_idset_init(struct idset *s);
void store_idset_release(struct idset *s);
int store_idset_add(struct idset *s, uint64_t hash, uint64_t offset);
/* Keeps only the pairs at stream offsets from BELOW on. */
int store_idset_drop_below(struct idset *s, uint64_t below);
/* Iterates the offsets stored under HASH: *pos starts at 0; returns 1 and
 * sets *offset while there are more. */
int store_idset_next(const struct idset *s, uint64_t hash, size_t *pos,
		     uint64_t *offset);

/* A Bloom filter in front of the sealed ID tables of one stream. */
struct bloom {
	uint64_t *bits;
	uint64_t nbits;		/* a power of two */
};

int store_bloom_init(struct bloom *b, uint64_t expected);
void store_bloom_release(struct bloom *b);
void store_bloom_add(struct bloom *b, uint64_t hash);
bool store_bloom_maybe(const struct bloom *b, uint64_t hash);

/* The immutable ID table of a sealed segment, mapped from its .ids file:
 * (hash, offset) pairs sorted by hash.  A table installed from elsewhere
 * (store_segment_ids_install()) holds the IDs too: a hit is confirmed
 * against them, not against the segment's bytes. */
struct idtable {
	const uint64_t *pairs;
	uint64_t count;
	const uint64_t *ends;	/* pair i's ID ends at ends[i] in ids; or NULL */
	const char *ids;
	void *map;
	size_t maplen;
};

/* The (hash, offset) pairs of SET at stream offsets from FROM up to BELOW
 * (a closing segment's, not those of the segment after it): *OUT, caller
 * frees, and *COUNT. */
int store_idset_pairs(const struct idset *set, uint64_t from, uint64_t below,
		      uint64_t **out, size_t *count);
/* Writes COUNT PAIRS, sorted in place, as table NAME in DIRFD.  FIELD, the
 * ID member's name, is recorded: a table made for another name is stale
 * (-ESTALE on open) and gets rebuilt. */
int store_idtable_write(int dirfd, const char *name, const char *field,
			uint64_t *pairs, size_t count);
int store_idtable_open(int dirfd, const char *name, const char *field,
		       struct idtable *tab);
void store_idtable_release(struct idtable *tab);
/* First index with hash >= HASH. */
uint64_t store_idtable_find(const struct idtable *tab, uint64_t hash);
/* Writes a table with its IDs (see struct idtable) as NAME in DIRFD: the
 * pairs as given (sorted by the caller), ENDS and IDS. */
int store_idtable_write_ids(int dirfd, const char *name, uint64_t field_hash,
			    const uint64_t *pairs, const uint64_t *ends,
			    size_t n, const char *ids, size_t idlen);
/* With a table that holds its IDs: 1 when pair J's ID is ID (LEN bytes),
 * else 0. */
int store_idtable_id_is(const struct idtable *tab, uint64_t j, const char *id,
			size_t len);

/* ---- in-memory state ----
 * Locks, in the order they are taken: store->lock, a tenant's lock (a
 * rwlock), its fd_lock, store->seal_lock.  Each struct below says which
 * guards it.  No lock is held across a call out (commit and fetch
 * hooks). */

/* Segment ids, in the order queued.  Protected by the tenant's lock. */
struct seg_queue {
	uint64_t *ids;
	_Atomic size_t n;	/* also read without the lock (queued()) */
	size_t cap;
};

/* A segment: protected by its tenant's lock (readers hold it shared),
 * but for the fields marked otherwise. */
struct seg {
	uint64_t id;
	uint64_t first_version;
	uint64_t offset;	/* stream offset of byte 0 */
	uint64_t length;	/* committed bytes */
	uint64_t count;		/* committed events */
	uint64_t checksum;	/* sealed only */
	uint64_t synced;	/* bytes known to be on stable storage */
	int64_t created_ns;
	enum store_seg_state state;
	bool has_ids;		/* some event in it carries an ID */
	bool full;		/* closed: takes no more appends (seal.c) */
	uint64_t wb_started;	/* bytes the sealer started writing back */
	/* Restored from a fetched copy not flushed yet: its index row says
	 * evicted until the sealer has flushed it (seal.c). */
	bool row_evicted;
	int64_t restored_mono;	/* CLOCK_MONOTONIC: when, while row_evicted */
	/* Once fsynced through a durable mark (mark.c): XXH3 of its bytes so
	 * far, kept as appends come, and which of its two marks is newest. */
	struct XXH3_state_s *running;
	unsigned mark_slot;
	uint64_t origin;	/* replicas: id on the writer host */
	_Atomic int64_t used_ns;	/* last use (readers share the lock) */
	_Atomic bool unread;	/* restored, not read since */
	struct idtable ids;	/* sealed with IDs, once loaded */
	/* Evicted, no table here: the ID fetch hook was asked for one (an
	 * answer or not: dedup reads the bytes from then on). */
	bool ids_asked;
	/* Found damaged with no good copy to fetch: reads of it fail with
	 * -EIO, said once in the log (read.c). */
	bool damaged;

	/* The file, opened on demand and kept in the tenant's LRU of open
	 * segments; closed when idle and over the store's fd budget.
	 * Protected by the tenant's fd_lock, or by its lock held for
	 * writing (store_seg_fd_append). */
	int fd;			/* -1 when closed */
	unsigned fd_refs;	/* users between store_seg_fd() and _put() */
	struct seg *lru_prev, *lru_next;
	/* Its batch rows, loaded by the first checked read while it holds
	 * the file, grown by appends, freed with the file (read.c).  Set and
	 * freed under fd_lock, grown under the tenant's lock held for writing;
	 * a reader that holds the file may read them without fd_lock. */
	struct seg_rows *_Atomic rows;
	/* Small appends copy into a mapped window of the file (store_seg_write);
	 * the appender's alone, and dropped with the file. */
	char *map;		/* SEG_WINDOW bytes, or NULL */
	uint64_t map_off;	/* file offset of map[0] */
	unsigned small_writes;	/* written without a window since it went */
	bool extended;		/* the file may run past length, in zeros */
	bool fsynced;		/* fsync(2)ed as the active one: no window */

	struct stream *stream;	/* the owner; set by store_seg_push */
	struct seg *id_next;	/* chain of the tenant's id hash */
};

/* A stream: protected by its tenant's lock, dedup state included. */
/* An answer of store_snapshot_start() (snapshot.c). */
struct snap_pick {
	uint64_t gen;		/* the stream's snap_gen it holds for; 0: none */
	uint64_t first;		/* the question: the newest before this */
	int rc;			/* 0, or -ENOENT for none */
	struct store_snapshot snap;
	uint64_t base;		/* stream offset of version snap.version + 1 */
};

struct stream {
	uint64_t id;
	char *name;
	enum store_framing framing;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;
	uint64_t version, size;
	int64_t last_ns;	/* commit time of the last batch */
	bool row_dirty;		/* version/size/times newer than its index row */

	struct seg **segs;	/* in stream order; the last may be active */
	size_t nsegs, segcap;

	/* Dedup state, built on the first append that carries an ID. */
	bool ids_loaded;
	struct idset active_ids;	/* IDs of the active segment */
	struct bloom sealed_filter;	/* over every sealed segment's IDs */

	/* Snapshots (snapshot.c): snap_gen moves on with every change of
	 * this stream's snapshot rows; snap_pick is the last answer of
	 * store_snapshot_start(), good while its gen is snap_gen. */
	uint64_t snap_gen;
	struct snap_pick snap_pick;

	struct stream *name_next;	/* hash chain */
};

/* A tenant: its lock guards what it holds, but for the fields marked
 * otherwise; st, name and path do not change once made. */
struct store_tenant {
	struct store *st;
	char *name;
	char *path;		/* the tenant directory */
	/* Made with the tenant, closed (-1) when it is removed, with lock
	 * held for writing: work done without lock uses its own dup. */
	int dirfd;
	int segfd;		/* its seg/ directory */
	int snapfd;		/* its snap/ directory (snapshot.c) */
	_Atomic bool removed;	/* set under lock; also read without it */
	/* store_tenant_hold(): appends wait while set (hold_lock and
	 * hold_cond; the flag is also read without them). */
	_Atomic bool held;
	pthread_mutex_t hold_lock;
	pthread_cond_t hold_cond;

	/* Writers (append, namespace, lookups that use the index) take it
	 * exclusively; store_read takes it shared. */
	pthread_rwlock_t lock;

	/* Open segment files, most recently used first.  Lock order: lock,
	 * then rows_lock, then fd_lock (taken under a shared or exclusive
	 * lock). */
	pthread_mutex_t fd_lock;
	/* protected by fd_lock (and see store_seg_fd_append) */
	struct seg *lru_head, *lru_tail;
	/* A reader loading a segment's batch rows from the index holds it:
	 * under the shared lock no writer uses db, and this keeps readers
	 * from using it at once. */
	pthread_mutex_t rows_lock;

	/* Everything below is protected by lock. */
	sqlite3 *db;
	struct index_stmts *stmts;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec atime, mtime, ctime;
	bool times_dirty;	/* mtime/ctime not yet in the index */
	enum store_framing framing;
	char id_field[STORE_ID_FIELD_MAX + 1];

	struct stream **streams;	/* sorted by id */
	size_t nstreams, streamcap;
	struct stream **names;		/* hash buckets by name */
	size_t namemask;
	struct seg **seg_ids;		/* hash buckets by segment id */
	size_t segmask, nsegs;

	/* The append journal (journal.c): rows committed to the journal
	 * file, not yet to the index. */
	int jfd;
	char *jmap;		/* the journal file, mapped (journal.c) */
	size_t jroom;		/* its bytes known allocated */
	uint64_t jlen;
	struct pending *pending;
	size_t npending, pendcap;
	uint64_t *removals;	/* streams removed, still in the index */
	size_t nremovals, removalcap;
	int64_t pending_since;	/* of the oldest pending row or removal */
	/* The index is a copy in memory (a read-only store on a full disk,
	 * store.c): nothing of it reaches the disk, nor does replay clear
	 * the journal. */
	bool index_in_memory;

	/* The sealer's work (seal.c): closing segments (full, not sealed
	 * yet) in roll order, and restored segments to make durable.  Their
	 * counts are also read without the lock. */
	struct seg_queue closing, restored;
	/* Active segments with bytes to start writing back (seal.c). */
	struct seg_queue writeback;
	/* When (realtime) the sealer next looks for segments of roll age
	 * (seal.c); 0 at first. */
	int64_t roll_due;

	struct store_tenant *next;	/* protected by store->lock */
};

/* The store: dir, dirfd, tenantsfd, cfg, fd_budget and the commit hook
 * are set by store_open() before any other thread runs and do not change;
 * the rest says its lock. */
struct store {
	char *dir;
	int dirfd;
	int tenantsfd;
	struct store_config cfg;
	store_commit_fn commit_fn;
	void *commit_arg;
	store_fetch_fn fetch_fn;	/* protected by lock */
	store_snap_fetch_fn snap_fetch_fn;	/* protected by lock */
	void *snap_fetch_arg;		/* protected by lock */
	store_ids_fetch_fn ids_fetch_fn;	/* protected by lock */
	void *ids_fetch_arg;		/* protected by lock */
	/* Whether ids_fetch_fn is set, read without lock (under a tenant's
	 * lock, which comes after lock). */
	atomic_bool ids_fetch_set;
	store_reached_fn reached_fn;	/* protected by lock */
	void *fetch_arg;		/* protected by lock */
	unsigned fetch_users;		/* callers inside either; by lock */
	pthread_cond_t fetch_idle;	/* fetch_users reached 0 */
	unsigned long fd_budget;	/* segment files kept open, at most */
	bool reserve_used;		/* released for recovery (store_open) */
	_Atomic unsigned long open_fds;
	_Atomic unsigned long seg_maps;	/* windows mapped (seg_write) */
	/* store_get_counters()'s, relaxed atomics: append.c and fsync.c
	 * count, store.c reads. */
	_Atomic uint64_t n_events, n_bytes, n_fsyncs, latency_sum_ns;
	_Atomic uint64_t latency[STORE_LATENCY_BUCKETS + 1];
	/* Sealed segments whose bytes failed their hash on a read, and of
	 * those the ones fetched again from the remote (read.c). */
	_Atomic uint64_t damaged, healed;
	_Atomic uint64_t snap_damaged, snap_healed;	/* snapshot.c */

	pthread_mutex_t lock;
	struct store_tenant *tenants;	/* sorted by name; protected by lock */

	/* The sealer thread (seal.c).  seal_lock is a leaf: writers take it
	 * under their tenant's lock to wake the sealer, which takes no other
	 * lock while holding it. */
	pthread_t sealer;
	bool sealer_running;
	pthread_mutex_t seal_lock;
	pthread_cond_t seal_cond;
	_Atomic bool seal_stop;
	unsigned long seal_kicks;	/* by seal_lock */
	int64_t age_next;		/* the next age tick (CLOCK_MONOTONIC);
					 * the sealer's alone */
};

/* ---- util ---- */

/* Debug builds check the comments that say a lock is held: that some
 * thread holds it (pthreads cannot tell which).  WRITE: held for writing. */
static inline bool store_rwlock_held(pthread_rwlock_t *l, bool write)
{
	int rc = write ? pthread_rwlock_tryrdlock(l) : pthread_rwlock_trywrlock(l);

	if (!rc)
		pthread_rwlock_unlock(l);
	return rc != 0;
}

static inline bool store_mutex_held(pthread_mutex_t *m)
{
	int rc = pthread_mutex_trylock(m);

	if (!rc)
		pthread_mutex_unlock(m);
	return rc != 0;
}

#ifdef NDEBUG
#define STORE_ASSERT_WRLOCKED(t) ((void)(t))
#define STORE_ASSERT_LOCKED(t) ((void)(t))
#define STORE_ASSERT_MUTEX(m) ((void)(m))
#else
#define STORE_ASSERT_WRLOCKED(t) assert(store_rwlock_held(&(t)->lock, true))
#define STORE_ASSERT_LOCKED(t) assert(store_rwlock_held(&(t)->lock, false))
#define STORE_ASSERT_MUTEX(m) assert(store_mutex_held(m))
#endif

int64_t store_now_ns(void);
int64_t store_mono_ns(void);	/* CLOCK_MONOTONIC */
struct timespec store_ts(int64_t ns);
int64_t store_ns(struct timespec ts);
/* One line through the sink of store_log_set_sink(); PRIO as syslog(3). */
void store_log(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int store_errno_from_sqlite(sqlite3 *db, int rc, const char *what);

/* ---- reserve.c: room kept for recovery on a full disk ---- */

#define STORE_RESERVE_FILE "reserve"
#define STORE_RESERVE_BYTES (4ull << 20)

/* Allocates what the reserve lacks, when the disk has that much free and
 * the reserve's size besides; GRAB: whatever is free, up to its size.
 * Never on a read-only store.  The sealer's, or store_open()'s before the
 * sealer starts. */
void store_reserve_keep(struct store *st, bool grab);
/* Removes the reserve; whether there was one to free. */
bool store_reserve_release(struct store *st);

/* ---- index.c: the tenant's SQLite database ---- */

int store_index_open(struct store_tenant *t, bool create);
/* Opens the index at PATH for reading alone, needing no room on the disk
 * (verify, and a read-only store's copy in memory); an SQLite code. */
int store_index_open_reader(const char *path, sqlite3 **out);
void store_index_close(struct store_tenant *t);
/* Begins a transaction; store_journal_begin() flushes the journal first. */
int store_index_begin(struct store_tenant *t);
int store_index_commit(struct store_tenant *t);
void store_index_rollback(struct store_tenant *t);
int store_index_meta_set(struct store_tenant *t, const char *key, int64_t ival,
			 const char *sval);
int store_index_load_tenant(struct store_tenant *t);
/* These two keep S->id (G->id) when it is not 0, else give a new one. */
int store_index_stream_insert(struct store_tenant *t, struct stream *s);
/* Inside a transaction; store_journal_stream_update() also outside one. */
int store_index_stream_update(struct store_tenant *t, const struct stream *s);
int store_index_stream_delete(struct store_tenant *t, uint64_t id);
int store_index_segment_insert(struct store_tenant *t, uint64_t stream,
			       struct seg *g);
int store_index_segment_update(struct store_tenant *t, const struct seg *g);
int store_index_segment_delete(struct store_tenant *t, uint64_t id);
struct index_batch {
	uint64_t first_version, offset, length, hash;
	int64_t time_ns;
	/* A merged row: the blob of its sub-batches (index.c), else NULL.
	 * Valid while the row is (during a scan's callback). */
	const unsigned char *subs;
	size_t subs_len;
};

/* One batch as appended, inside a merged row or a row of its own. */
struct sub_batch {
	uint64_t first_version, offset, count, length;
	int64_t time_ns;
};

/* A group commit merges consecutive batches of a stream's segment while
 * they stay within these bounds (journal.c). */
#define MERGE_SUBS_MAX 512
#define MERGE_BYTES_MAX (64u << 10)
/* Room store_subs_encode() needs for N sub-batches. */
#define SUBS_BLOB_MAX(n) (10 + (size_t)(n) * 30)

size_t store_subs_encode(const struct sub_batch *v, size_t n, unsigned char *out);
/* Calls FN for each sub-batch of merged row ROW, in order; FN returns 0
 * to go on, > 0 to stop, < 0 to fail.  Returns how many FN saw, or -EIO
 * for a blob that does not add up to the row (checked when walked to its
 * end). */
int store_subs_walk(const struct index_batch *row,
		    int (*fn)(void *arg, const struct sub_batch *b), void *arg);
/* B's count is not stored: the next batch's first version implies it.
 * SUBS (SUBS_LEN bytes) makes the row a merged one. */
int store_index_batch_insert(struct store_tenant *t, uint64_t stream,
			     const struct store_batch *b, const void *subs,
			     size_t subs_len);
/* The batch holding VERSION (the sub-batch, in a merged row; its count is
 * not known here).  -ENOENT if none. */
int store_index_batch_find(struct store_tenant *t, uint64_t stream,
			   uint64_t version, struct sub_batch *out);

/* Calls FN for each batch of STREAM from version FROM on, in order; FN
 * returns 0 to go on, > 0 to stop (the scan then returns 0), < 0 to fail. */
int store_index_batch_scan(struct store_tenant *t, uint64_t stream, uint64_t from,
			   int (*fn)(void *arg, const struct index_batch *b),
			   void *arg);
int store_index_batch_delete_from(struct store_tenant *t, uint64_t stream,
				  uint64_t version);
/* The same for versions FROM up to (not including) TO. */
int store_index_batch_delete_range(struct store_tenant *t, uint64_t stream,
				   uint64_t from, uint64_t to);
/* Full durability for the next commit (synchronous=FULL) or back. */
int store_index_set_full_sync(struct store_tenant *t, bool full);

/* ---- journal.c: group commit of batch rows ---- */

#define JOURNAL_FILE "journal"
#define JREC_HAS_IDS 1u
#define JREC_REMOVE 2u		/* the stream is removed; no batch */

/* One record of the journal file: a batch, as appended. */
struct jrec {
	uint64_t magic;
	uint64_t stream;
	uint64_t seg;
	uint64_t first_version;
	uint64_t count;
	uint64_t offset;
	uint64_t length;
	int64_t time_ns;
	uint64_t hash;		/* of the batch's bytes */
	uint64_t flags;
	uint64_t check;		/* XXH3-64 of everything above */
};

/* Reads the journal behind FD: *out (caller frees) gets the records up to
 * the first torn or foreign one, *n their number. */
int store_journal_read(int fd, struct jrec **out, size_t *n);

/* A batch row of STREAM (in segment SEG) on its way to the index. */
struct pending {
	uint64_t stream;
	uint64_t seg;
	struct store_batch b;
};

int store_journal_open(struct store_tenant *t);
void store_journal_close(struct store_tenant *t);
/* Records P (a batch of S in segment G) in the journal file and the
 * pending rows.  0 or -errno; on failure nothing is recorded.  The pending
 * rows are T's: this and the flushes below run with T's lock held for
 * writing. */
int store_journal_append(struct store_tenant *t, struct stream *s, struct seg *g,
			 const struct pending *p, bool has_ids);
/* Records that S is removed, in the journal, with no room on the disk
 * needed; the index forgets it at the next flush, or at the next open's
 * replay.  T's lock held for writing, as for the next. */
int store_journal_remove(struct store_tenant *t, struct stream *s);
/* After store_journal_remove(S), when the flush that followed failed: makes
 * the record durable, so that S's files may go before the index forgets
 * it, and drops S's pending rows.  On failure the removal is undone. */
int store_journal_remove_wait(struct store_tenant *t, struct stream *s);
/* Allocates the journal's first blocks ahead (at open, after replay), so
 * that removals find room in it on a full disk later. */
int store_journal_prepare(struct store_tenant *t);
/* Whether enough is pending, or for long enough, to flush now. */
bool store_journal_due(const struct store_tenant *t, int64_t now);
/* Flushes the journal's pending rows, then begins a transaction: the
 * start of every change that must see all the batches in the index. */
int store_journal_begin(struct store_tenant *t);
/* Writes S's row; outside a transaction, the pending rows go first. */
int store_journal_stream_update(struct store_tenant *t, const struct stream *s);
/* Moves the pending rows into the index in one transaction. */
int store_journal_flush(struct store_tenant *t);
/* The same inside the caller's transaction; store_journal_flushed() must follow
 * with whether that transaction committed. */
int store_journal_flush_in(struct store_tenant *t);
void store_journal_flushed(struct store_tenant *t, bool committed);
/* At open, before recovery: adds the journal's rows the index lacks. */
int store_journal_replay(struct store_tenant *t);

/* ---- stream.c ---- */

struct stream *store_stream_find(struct store_tenant *t, uint64_t id);
struct stream *store_stream_by_name(struct store_tenant *t, const char *name);
/* Index in t->streams of the first stream whose id is ID or more. */
size_t store_stream_lower_bound(const struct store_tenant *t, uint64_t id);
/* Gives S the name NAME (S now owns it) in T's hash by name; the caller
 * frees the old one, which it has read from s->name before. */
void store_stream_set_name(struct store_tenant *t, struct stream *s, char *name);
int store_stream_attach(struct store_tenant *t, struct stream *s);
void store_stream_detach(struct store_tenant *t, struct stream *s);
void store_stream_free(struct store_tenant *t, struct stream *s);
void store_stream_ids_release(struct stream *s);
/* Puts back the commit-state fields (version, size, times) saved in OLD. */
void store_stream_restore(struct stream *s, const struct stream *old);

/* ---- segment.c ---- */

void store_seg_name(char *buf, size_t len, uint64_t id, const char *ext);
/* The segment's file descriptor, opened if needed, held until
 * store_seg_fd_put(); -errno (-EIO for an evicted or lost file). */
int store_seg_fd(struct store_tenant *t, struct seg *g);
void store_seg_fd_put(struct store_tenant *t, struct seg *g);
/* The same for the appender, T's lock held for writing, at NOW (a
 * CLOCK_REALTIME time it has); given back with store_seg_fd_append_put(). */
int store_seg_fd_append(struct store_tenant *t, struct seg *g, int64_t now);
void store_seg_fd_append_put(struct store_tenant *t, struct seg *g);
/* Takes FD, just created, as G's file, held as by store_seg_fd(). */
void store_seg_fd_adopt(struct store_tenant *t, struct seg *g, int fd);
/* Closes G's file; nobody may hold it: T's lock is held for writing, or T
 * is being freed. */
void store_seg_fd_close(struct store_tenant *t, struct seg *g);
void store_seg_free(struct store_tenant *t, struct seg *g);
/* Writes LEN bytes of P at OFF of G's file, held as FD: the appender's,
 * T's lock held for writing. */
int store_seg_write(struct store_tenant *t, struct seg *g, int fd, const void *p,
		    size_t len, uint64_t off);
/* Cuts G's file back to its length, if store_seg_write() took it further.  T's
 * lock held for writing. */
int store_seg_trim(struct store_tenant *t, struct seg *g);
/* store_seg_trim() for the active segment of every stream of T. */
int store_seg_trim_tenant(struct store_tenant *t);
/* Appends G to S's chain and to T's id hash; store_seg_free() takes it out. */
int store_seg_push(struct store_tenant *t, struct stream *s, struct seg *g);
/* Takes the last segment off S's chain and T's hash; the caller frees it. */
struct seg *store_seg_pop(struct store_tenant *t, struct stream *s);
struct seg *store_seg_active(struct stream *s);
/* A replica's tail segment: bytes shipped before their segment sealed
 * (replica.c); never evicted.  segment.c. */
bool store_seg_is_tail(const struct seg *g);
/* Index in S's chain of its first segment not sealed (s->nsegs if none):
 * the closing ones, then the active one. */
size_t store_seg_first_unsealed(const struct stream *s);
/* A closing segment: full (followed by another, or closed when it
 * reached roll_size), taking no appends, not sealed yet. */
bool store_seg_closing(const struct stream *s, const struct seg *g);
/* Segment SEG of T and its stream (*sp), or NULL (also once T is
 * removed).  T's lock held. */
struct seg *store_seg_find(struct store_tenant *t, uint64_t seg, struct stream **sp);
/* The segment holding stream offset OFF (OFF < s->size). */
struct seg *store_seg_at(struct stream *s, uint64_t off);
/* Reads LEN bytes of the stream at OFF through its segments, as they are
 * on disk.  T's lock held, shared or exclusive. */
ssize_t store_seg_read(struct store_tenant *t, struct stream *s, void *buf,
		       size_t len, uint64_t off);
/* Reads LEN bytes at IN of G, whose file FD the caller holds: LEN,
 * -errno, or -EBADMSG when they are damaged (read.c checks them). */
typedef ssize_t (*store_seg_reader)(void *arg, struct store_tenant *t,
				    struct seg *g, int fd, char *buf,
				    size_t len, uint64_t in);
/* store_seg_read() with CHECK (and ARG) reading each segment's bytes; its
 * -EBADMSG ends it (with the bytes read before, if any). */
ssize_t store_seg_read_by(struct store_tenant *t, struct stream *s, void *buf,
			  size_t len, uint64_t off, store_seg_reader check,
			  void *arg);
/* A segment's batch rows, for the checks of read.c: where each row starts
 * in the segment (it ends where the next starts, the last at the
 * segment's committed end) and the XXH3-64 of its bytes. */
struct seg_row {
	uint64_t start;
	uint64_t hash;
};

struct seg_rows {
	struct seg_row *v;
	size_t n, cap;
};

/* G, active, took a batch at START (in G) whose bytes hash to HASH: its
 * rows, if a read loaded them, grow by it.  T's lock held for writing. */
void store_seg_rows_grew(struct store_tenant *t, struct seg *g,
			 uint64_t start, uint64_t hash);
/* Reading stops with -ENODATA at an evicted segment.  With no lock held,
 * this asks the fetch hook for the segment this thread wanted; the caller
 * then retries.  One operation may need many evicted segments in turn
 * (dedup reads the IDs of every sealed one), so TRIES bounds only the
 * fetches of one segment that is still wanted after them: FETCH_TRIES of
 * them give -EIO, logged.  TRIES starts zeroed, one per operation. */
#define FETCH_TRIES 8
struct fetch_tries {
	uint64_t seg;		/* the segment last wanted */
	unsigned n;		/* fetches of it so far */
};
int store_seg_fetch_wanted(struct store_tenant *t, struct fetch_tries *tries);
/* Under T's lock: when the ID fetch hook is set, records that this thread
 * wants the event-ID table of evicted segment SEG and returns -ENODATA
 * (store_seg_fetch_wanted() then asks the hook); else 0. */
int store_seg_want_ids(struct store_tenant *t, uint64_t seg);
/* Whether a fetch hook is set: an evicted segment can be fetched. */
bool store_seg_can_fetch(struct store *st);
/* store_seg_fd() for a read of G: the first read after a restore is noted, and
 * store_seg_reached_tell() then passes it to the fetch hook, with no lock held. */
int store_seg_fd_read(struct store_tenant *t, struct seg *g);
void store_seg_reached_tell(struct store_tenant *t);
/* G of S as sync/ sees it. */
void store_seg_fill(const struct stream *s, const struct seg *g,
		    struct store_segment *out);
/* The running hash of G (mark.c), once fsynced: fed by the appender. */
void store_seg_hash_update(struct seg *g, const void *p, size_t len);
void store_seg_hash_release(struct seg *g);

/* ---- evict.c ---- */

/* A read found segment SEG of T damaged (read.c).  With FETCH, and SEG
 * uploaded, its local copy goes as eviction makes it go (the row says
 * evicted first, then the file is removed: after a crash between the two,
 * recovery removes the file), and a read then fetches it again: 0 (1 when
 * another reader dropped it already).  Otherwise SEG is marked damaged and
 * -EIO; -EALREADY when it was already.
 * *STREAM (OUT): its stream's name, which the caller frees, or NULL.
 * Takes T's lock. */
int store_seg_drop_damaged(struct store_tenant *t, uint64_t seg, bool fetch,
			   char **stream);

/* ---- fsync.c ---- */

/* Records the segments of S not sealed yet as synced; WHOLE_FS says a
 * syncfs(2) already made their bytes durable. */
int store_seg_sync(struct store_tenant *t, struct stream *s, bool whole_fs);
int store_tenant_sync(struct store_tenant *t);

/* ---- mark.c: fsync(2) of a stream in one flush ---- */

/* Makes S's active segment G durable, with a mark saying how much of it
 * is.  -ENOTSUP when this stream or file system cannot use marks (the
 * caller then syncs the segment and the index). */
int store_seg_mark_durable(struct store_tenant *t, struct stream *s, struct seg *g);
/* Recovery of G (its file at FD, FILE_SIZE bytes), whose whole batches end
 * LEN bytes in, before *VERSION: where a valid mark says more bytes are
 * durable, they become one batch (rows of versions from *VERSION up to
 * WINDOW_END, the first one past G, are replaced) and *LEN and *VERSION
 * move past them.  Inside the caller's transaction. */
int store_recover_from_mark(struct store_tenant *t, struct stream *s, struct seg *g,
			    int fd, uint64_t file_size, uint64_t window_end,
			    uint64_t *len, uint64_t *version);

/* ---- seal.c ---- */

/* Closes G, the active segment of S, which is full: it takes no more
 * appends and the sealer seals it. */
int store_seg_close(struct store_tenant *t, struct stream *s, struct seg *g);
/* Queues G, closing, for the sealer (recovery); 0 or -ENOMEM. */
int store_seg_queue_closing(struct store_tenant *t, struct seg *g);
/* G, active, grows by LEN bytes: has the sealer start writing back each
 * 8 MiB of it that is now whole. */
void store_seg_grew(struct store_tenant *t, struct seg *g, size_t len);
/* Queues G, just restored, for the sealer to flush; its row says evicted
 * until then. */
void store_seg_queue_restored(struct store_tenant *t, struct seg *g);
/* Flushes T's restored segments on this thread (store_close). */
int store_restored_durable_now(struct store_tenant *t);
int store_sealer_start(struct store *st);
void store_sealer_stop(struct store *st);

/* ---- dedup.c ---- */

/* Builds the stream's dedup state from its segments. */
int store_dedup_load(struct store_tenant *t, struct stream *s);
/* Makes S's Bloom filter anew from the ID tables of its segments, sized
 * for twice their IDs. */
int store_filter_build(struct stream *s);

/* ---- snapshot.c ---- */

/* Recovery: drops rows whose blob is missing or short, and removes files
 * no row names (staging leftovers, blobs of a commit or removal a crash
 * cut short).  Outside any transaction; T's lock held for writing. */
int store_snapshot_recover(struct store_tenant *t);
/* Removes the blobs of stream ID, whose rows are gone. */
void store_snapshot_unlink_stream(struct store_tenant *t, uint64_t id);

/* ---- recover.c ---- */

int store_recover_tenant(struct store_tenant *t);

#endif
