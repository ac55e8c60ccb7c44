/*
 * sync: the background thread between a store and a remote.
 *
 * Two modes, chosen by struct sync_config (a mount without remote= has no
 * sync thread: the store's sealer seals segments by size and age alone):
 *
 * - Writer (replica false): every pass (at least every `interval`, and
 *   soon after sync_kick()), for each tenant it takes the tenant's lease
 *   on the remote, uploads each sealed segment and then its event index
 *   object (docs/FORMAT.md), marks it uploaded in the store, and then
 *   publishes the tenant manifest, in that order: a reader of the remote never sees a manifest naming a missing or
 *   partial object.  Up to `upload_parallel` segments go up at once.  A
 *   segment (or event index) that fails holds back only its stream: the
 *   manifest names, for each stream, the segments confirmed up in an
 *   unbroken chain, so the failing stream keeps its previous entry while
 *   the others publish; the failing object is tried again on its own
 *   (1 s after its first failure, doubling to `backoff_max`), and only its
 *   index when its bytes went up already.  Streams removed locally vanish from
 *   the next manifest (listed as tombstones), and their objects are
 *   deleted after that (never with `nodelete`).  Uploaded segments are
 *   evicted, least recently used first, with uploaded snapshot blobs,
 *   while the local copies of what is on the remote exceed `cache_size`;
 *   a segment or snapshot not yet uploaded is never evicted.
 *
 * - Replica (replica true; the analysis host): every `poll` the
 *   thread reads tenants.json and the manifests and mirrors them into the
 *   store (a cache directory): creates tenants and streams, sets framing and
 *   attributes, adds new segments with store_replica_add() (they start
 *   evicted), follows renames by stream id, and removes streams and tenants
 *   that disappeared.  Nothing is ever written to the remote.
 *
 * Lazy fetch (writer and replica): sync_start() installs the store's fetch
 * hook.  The hook runs in the reading (FUSE) thread but never calls libcurl:
 * it queues the segment and waits on a condition variable for one of the
 * fetch worker threads, which download the object (in one GET, or in
 * ranges for segments larger than fetch_whole), write it beside the segment
 * as a temporary, a chunk at a time as it comes, and call
 * store_segment_restore(), which checks length and XXH3.  Once the bytes
 * of a segment a reader waits for have arrived, the four segments after
 * the one the reader is in are kept fetched or
 * coming in the background (readahead), as long as the reader moves on
 * and cache_size leaves room; readahead GETs wait while a reader waits
 * for one.  Failures are retried with backoff a few times, then the read
 * gets -EIO: never wrong or zero-filled bytes.
 *
 * Leases (writer): one writer per tenant per remote.  The lease object
 * (docs/FORMAT.md) names the writer's identity, which lives in
 * STATE_DIR/sync-identity (created on first start), so a restart of the same
 * writer re-takes its own lease.  sync_start() tries to take the lease of
 * every existing tenant: when the remote answers and another writer holds
 * one, it logs "streamfs: sync: tenant T on URL is held by writer ID (host
 * H); refusing a second writer" and returns -EBUSY (fs refuses the mount).
 * When the remote cannot be reached, sync_start() succeeds; the thread takes
 * the leases when it comes back, and for a tenant leased by another writer
 * it uploads nothing and logs that loudly (status last_error -EBUSY).
 * Tenants created later are leased through sync_tenant_claim() (mkdir) or
 * by the thread before their first upload.  A writer continues what the
 * remote published: sync_start() also creates each tenant the remote lists
 * and SOURCE lacks whose lease is free, and a tenant leased from another
 * writer's manifest gets that manifest's streams, versions and segments
 * (evicted) before any append (docs/FORMAT.md, Takeover).
 *
 * A lease carries a generation and an expiry (cfg.lease_ns after its last
 * renewal); the thread renews every lease_ns / 3 with a conditional write,
 * and again right before each manifest it publishes, which it publishes
 * only while that renewal is younger than lease_ns / 2.  A renewal that finds the lease changed (a
 * takeover) fences the tenant: nothing of it is written to the remote any
 * more, sync_tenant_fenced() says so, status lists its unpublished events.
 * sync_stop() releases the leases it still holds (conditional deletes).
 *
 * Objects the remote lost (writer, lost.c): a manifest names only objects
 * the writer confirmed on the remote since it last saw it whole (a
 * listing of the tenant, then its own puts); at a sign of loss it lists
 * the tenant again, puts back what is missing from the local copies, and
 * freezes a stream whose lost object has no copy here (its entry stays as
 * published; status and sync_stream_status() say so).
 *
 * Failures are retried with capped exponential backoff for as long as it
 * takes (a pass that failed as a whole: from `backoff_min`; an analysis
 * host's never waits longer than `poll`); each change of state (failing,
 * with the cause: the HTTP status, "checksum mismatch"; working again) is
 * logged once, as "streamfs: sync: ...".  State lives in the store (segment
 * states) and on the remote, so a restart resumes where it stopped and
 * never re-uploads a segment marked uploaded.
 *
 * Threads: one thread of its own plus upload helper and fetcher threads,
 * each with its own backend (and CURL handle).  Writers never wait for
 * them: they only call store functions that take a tenant lock briefly,
 * and never hold sync's own lock across network I/O.  Every function
 * here may be called from any thread.
 */
#ifndef STREAMFS_SYNC_H
#define STREAMFS_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "store.h"

#define SYNC_WARN_UNUSED __attribute__((warn_unused_result))

struct sync_config {
	/* Remote URL (required).  Borrowed for sync_start(). */
	const char *url;
	struct backend_options opts;	/* strings borrowed for sync_start() */
	/* Directory for sync's own state (the writer identity): the mount's
	 * SOURCE.  Borrowed for sync_start().  Required for writers; ignored
	 * for replicas. */
	const char *state_dir;
	bool replica;			/* analysis host: mirror the remote */
	int64_t interval_ns;		/* pass at least this often; default 1 s */
	int64_t poll_ns;		/* replica: rescan period; default 10 s */
	uint64_t cache_size;		/* bound on local uploaded bytes; 0: none */
	int64_t backoff_min_ns;		/* first retry delay; default 200 ms */
	int64_t backoff_max_ns;		/* cap; default 30 s */
	/* Fetch workers: fetch_threads * fetch_parallel threads (at most
	 * 16), each with its own connection. */
	unsigned fetch_threads;		/* default 2 */
	unsigned fetch_parallel;	/* ranges in flight per segment; default 4 */
	/* A segment of at most fetch_whole bytes is fetched in one GET
	 * without a Range (some servers pay for the whole object on every
	 * ranged GET); a larger one in ranges of fetch_range bytes. */
	uint64_t fetch_whole;		/* 0: 16 MiB */
	uint64_t fetch_range;		/* default 16 MiB */
	unsigned fetch_attempts;	/* tries before -EIO; default 4 */
	unsigned upload_parallel;	/* segments uploaded at once; default 3 */
	bool nodelete;			/* never delete remote objects */
	/* Writer: how long a lease outlives its last renewal (default 60 s,
	 * at least 1 s); the thread renews every third of it. */
	int64_t lease_ns;
	/* Writer: take the leases that expired (generation + 1), of tenants
	 * present at start and of tenants made by sync_tenant_claim(). */
	bool takeover;
	/* Writer: run on a remote that does not enforce conditional writes
	 * (checked at start, with a probe object): then nothing keeps a
	 * second writer of a tenant out.  Without it such a remote is
	 * refused (-EOPNOTSUPP from sync_start(), or, when it was
	 * unreachable at start, nothing is uploaded and the log says why). */
	bool risk_forks;
	/* Writer: ship what active segments took at least this often, in
	 * one tail piece per tenant (docs/FORMAT.md); 0 (the default here):
	 * off.  A mount's default is SYNC_FLUSH_DEFAULT_NS. */
	int64_t flush_ns;
	/* Writer: how long a tail piece stays on the remote after the first
	 * manifest that no longer names it (an analysis host may still be
	 * fetching it); 0: SYNC_PIECE_KEEP_DEFAULT_NS. */
	int64_t piece_keep_ns;
};
/* A minute: FORMAT.md, "Order of writes", says why. */
#define SYNC_PIECE_KEEP_DEFAULT_NS (60 * 1000000000LL)
/* The mount's defaults of flush= and poll= (README, "Cost"). */
#define SYNC_FLUSH_DEFAULT_NS 2000000000LL
#define SYNC_POLL_DEFAULT_NS 2000000000LL

void sync_config_default(struct sync_config *cfg);

struct sync;

/* Opens the remote and starts the threads (see the modes above).  The
 * remote being unreachable is not an error (the thread keeps trying); a
 * missing or malformed URL or unusable credentials are (-EINVAL,
 * -EPROTONOSUPPORT, -EACCES), and so is a tenant leased by another writer
 * (-EBUSY, logged with the holder), and, for a writer, a remote whose
 * probe shows it does not enforce conditional writes (-EOPNOTSUPP, unless
 * cfg.risk_forks).  Installs the store's fetch hook; the
 * caller keeps the commit hook and calls sync_kick() from it.  May block for the
 * backend's connect timeout while it takes leases.  The caller owns *out;
 * sync_stop() frees it. */
int sync_start(struct store *st, const struct sync_config *cfg,
	       struct sync **out) SYNC_WARN_UNUSED;
/* Stops the thread (an upload in flight is abandoned and redone on the
 * next start) and frees S.  NULL is fine. */
void sync_stop(struct sync *s);

/* Wakes the thread up (e.g. from the store's commit hook).  Cheap. */
void sync_kick(struct sync *s);

/* Writer: seals every non-empty active segment, uploads everything,
 * publishes the manifests, and waits until that is done or TIMEOUT_NS
 * passes.  0 when everything committed before the call is on the remote;
 * -ETIMEDOUT; or the last error of the remote when the deadline passed
 * while it failed; -EROFS when a tenant was taken over from this writer
 * (fenced: what it did not publish never will be); -EIO when a stream is
 * frozen (the remote lost an object of it, and no copy is left here:
 * sync_get_leases() says which).  Replica: one full
 * rescan of the remote, waited for the same way. */
int sync_now(struct sync *s, int64_t timeout_ns) SYNC_WARN_UNUSED;

/* Why a step against the remote failed, as far as its -errno and the
 * step tell (remote/http.c maps curl codes and HTTP statuses to errno: a
 * refused connection and a 5xx are both -EAGAIN, "unavailable"). */
enum sync_cause {
	SYNC_CAUSE_TIMEOUT,	/* -ETIMEDOUT */
	SYNC_CAUSE_UNAVAILABLE,	/* -EAGAIN: no connection, 5xx, 429 */
	SYNC_CAUSE_DENIED,	/* -EACCES, -EPERM: credentials, TLS,
				 * permissions of a file:// directory */
	SYNC_CAUSE_NOT_FOUND,	/* -ENOENT */
	SYNC_CAUSE_FULL,	/* -ENOSPC, -EDQUOT, -EFBIG */
	SYNC_CAUSE_CHECKSUM,	/* bytes that do not match their checksum or
				 * length (fetched, or the local copy) */
	SYNC_CAUSE_LEASE,	/* -EBUSY: another writer holds the lease */
	SYNC_CAUSE_OTHER,
	SYNC_CAUSES
};
/* The text of failure RC (-errno) of a step: strerror(-RC), but
 * "checksum mismatch" for -EBADMSG (bytes that do not match their length
 * or checksum). */
const char *sync_strerror(int rc);

/* The cause's label: "timeout", "unavailable", "denied", "not_found",
 * "full", "checksum", "lease", "other". */
const char *sync_cause_name(enum sync_cause c);

struct sync_status {
	uint64_t pending_segments;	/* sealed, not yet uploaded */
	uint64_t pending_bytes;
	uint64_t pending_snapshots;	/* waiting for upload (or for the
					 * segment holding their version) */
	uint64_t uploaded_segments;	/* since start */
	uint64_t uploaded_bytes;
	int last_error;			/* -errno of the last failure, 0 when fine */
	char last_error_what[160];	/* what failed ("put t/x/seg/..."), "" */
	int64_t last_error_ns;		/* CLOCK_REALTIME, 0 if never */
	int64_t last_success_ns;	/* last pass that finished cleanly */
	uint64_t cached_bytes;		/* local copies of uploaded segments
					 * (counted when cache_size is set) */
	uint64_t evicted_segments;	/* since start */
	uint64_t fetched_segments;	/* since start */
	uint64_t fetch_failures;	/* fetches that gave -EIO, since start */
	uint64_t leases_held;		/* tenants leased by this writer */
	uint64_t leases_refused;	/* tenants leased by another writer */
	uint64_t leases_fenced;		/* tenants taken over from this writer
					 * (sync_get_leases() says what each
					 * did not publish) */
	/* The remote does not enforce the conditional writes fencing
	 * relies on, and cfg.risk_forks accepted that: no fencing. */
	bool fencing_off;
	/* CLOCK_REALTIME creation of the oldest sealed segment not yet
	 * uploaded, as the last pass found it; 0 when none waits. */
	int64_t oldest_pending_ns;
	/* Since start, by cause: segment uploads that failed, fetch
	 * attempts that failed (each retry counts), and passes that failed
	 * (any step: lease, upload, manifest, listing). */
	uint64_t upload_failures[SYNC_CAUSES];
	/* Tail pieces (flush): bytes the published manifests list as
	 * tails now (shipped, their segments not uploaded whole yet); pieces
	 * and their bytes put since start; CLOCK_REALTIME of the last. */
	uint64_t tail_bytes;
	uint64_t tail_pieces;
	uint64_t tail_pieces_bytes;
	int64_t last_flush_ns;
	uint64_t fetch_errors[SYNC_CAUSES];
	uint64_t pass_failures[SYNC_CAUSES];
	/* Objects the remote lost (docs/FORMAT.md): found missing since
	 * start (those put again and those gone for good), put again since
	 * start, and the streams frozen now (a lost object with no copy
	 * here: sync_get_leases() names them). */
	uint64_t lost_objects;
	uint64_t reput_objects;
	uint64_t streams_frozen;
};

void sync_get_status(struct sync *s, struct sync_status *out);

/* A writer's lease of one tenant, as the last pass left it. */
struct sync_lease {
	char tenant[STORE_NAME_MAX + 1];
	bool held;			/* our lease is on the remote */
	bool refused;			/* another writer holds it */
	bool fenced;			/* taken over from this writer */
	uint64_t generation;		/* of our lease (held or fenced); 0:
					 * none taken yet */
	/* Fenced: who took it over, and which events of its streams this
	 * writer acknowledged but never published ("taken over by writer
	 * W (host H) at generation G; not published: S versions A-B, ...");
	 * "" otherwise.  Truncated with "..." when longer. */
	char fence_note[1024];
	/* Streams of the tenant that publish no more because the remote
	 * lost one of their objects and no copy is left here (their
	 * entries stay as last published), and which: "S at version V
	 * (lost KEY), ..."; "" when none.  Truncated with "...". */
	uint64_t frozen;
	char frozen_note[1024];
};
/* Copies the leases of every tenant the writer has met into *OUT
 * (malloc'd, the caller frees; NULL when *N is 0).  0 or -ENOMEM.  A
 * replica has none. */
int sync_get_leases(struct sync *s, struct sync_lease **out,
		    size_t *n) SYNC_WARN_UNUSED;

/* Whether TENANT was taken over from this writer (fenced): its writes are
 * refused (EROFS).  Cheap when none is; any thread, no network. */
bool sync_tenant_fenced(struct sync *s, const char *tenant);

/* Writer, before TENANT is created (mkdir): asks the sync thread to take
 * its lease on the remote and waits for the answer, at most TIMEOUT_NS.
 * 0 when taken (or the remote is unreachable: the thread takes it later,
 * as for a mount); -EBUSY when another writer holds it (live, or expired
 * without takeover; logged with the holder); 1 when the remote has the
 * tenant's published history, which the thread then made here (the tenant
 * exists, continuing it); -ETIMEDOUT when the thread did not answer in
 * time.  May be called from FUSE threads: it only waits
 * on a condition variable. */
int sync_tenant_claim(struct sync *s, const char *tenant,
		      int64_t timeout_ns) SYNC_WARN_UNUSED;

/* Text of the xattr user.streamfs.sync of stream STREAM of T, written to
 * BUF (NUL-terminated, at most LEN bytes with the NUL).  V is the stream's
 * version, R the version its remote copy reaches (segments uploaded, in an
 * unbroken chain from the start):
 *   "uploaded V"    R == V: every event is on the remote (always so on a
 *                   replica)
 *   "shipped T/V (sealed R)"  events up to T are on the remote, those
 *                   past R in tail pieces (flush); the rest is local
 *   "uploading R/V" some events are sealed and waiting for upload
 *   "frozen P/V"    the remote lost an object of the stream and no copy
 *                   is left here: published up to P, and no further
 *   "local R/V"     the rest is in the active segment (sealed at roll age
 *                   or by sync_now); also "local 0/V" without a remote,
 *                   and when S is NULL
 * Returns the text's length (without the NUL) or -errno (-ENOENT: no such
 * stream; -ERANGE: LEN too small; SYNC_STATUS_TEXT_MAX bytes always suffice).  Only reads
 * the store: no network, safe from FUSE threads. */
#define SYNC_STATUS_TEXT_MAX 96
int sync_stream_status(struct sync *s, struct store_tenant *t,
		       uint64_t stream, char *buf, size_t len) SYNC_WARN_UNUSED;

/* ---- remote layout (docs/FORMAT.md) ---- */

/* Encodes NAME (a tenant or stream name) for use as one key component:
 * bytes other than [A-Za-z0-9_-] become ~XX (upper-case hex), so the
 * result needs no URL escaping, never holds
 * '/', never starts with '.', and decodes back to exactly NAME.  Returns
 * a malloc'd string or NULL. */
char *sync_key_encode(const char *name);

#endif
