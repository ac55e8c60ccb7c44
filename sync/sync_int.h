/*
 * sync_int.h: declarations private to sync/.
 */
#ifndef STREAMFS_SYNC_INT_H
#define STREAMFS_SYNC_INT_H

#include <pthread.h>
#include <json-c/json.h>

#include "backend.h"
#include "store.h"
#include "sync.h"

#define SYNC_ROOT "streamfs-v1"

#define SYNC_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Logging to stderr, prefixed "streamfs: sync: ".  Never pass secrets.
 * (util.c, with the string vectors.) */
void sync_log(const char *fmt, ...) SYNC_PRINTF(1, 2);

/* ---- string vectors ---- */

/* A growable array of malloc'd strings (tenant names and the like). */
struct strvec {
	char **v;
	size_t n, alloc;
};
/* Appends a copy of STR: 0 or -ENOMEM. */
int strvec_push(struct strvec *sv, const char *str);
/* strvec_push() with the shape of store's list callbacks (ARG: the
 * strvec). */
int strvec_collect(void *arg, const char *name);
/* Frees the strings and the array (not SV itself). */
void strvec_release(struct strvec *sv);

/* ---- the sync object (sync.c, fetch.c, replica.c) ---- */

struct seg_vec {
	struct store_segment *v;
	size_t n, alloc;
};
int seg_collect(void *arg, const struct store_segment *seg);
/* Orders by stream, then offset. */
int seg_cmp(const void *a, const void *b);

/* A segment being fetched (fetch.c). */
struct fetch_req;
/* Readahead of one stream (fetch.c). */
struct fetch_ra;
/* GET buffers fetch.c keeps between fetches: a chunk for each of up to
 * eight GETs. */
#define SYNC_FETCH_BUFS 8

/* Per-tenant state of the sync thread (thread-only). */
struct tenant_state {
	char *name;
	bool leased;		/* writer: our lease is on the remote */
	bool refused;		/* writer: another writer holds it (logged) */
	bool seeded;		/* writer: old keys read from the remote */
	char *last_cmp;		/* writer: manifest last published, w/o times */
	int64_t checked_ns;	/* writer: CLOCK_MONOTONIC of the last check */
	char **keys;		/* writer: objects the last manifest named */
	size_t nkeys;
	json_object *tombstones; /* writer: array, owned */
	uint64_t mhash;		/* replica: XXH3 of the manifest applied */
	uint64_t *map;		/* replica: pairs remote id, local id */
	size_t nmap;
	int err;		/* replica: last failure of the tenant, 0 */
	bool present;		/* scratch flag of a pass */
};

/* Lock order: evict_lock, then s->lock.  s->lock is a leaf (sync_evict
 * takes it under evict_lock to update the status) and is never held
 * across store calls; evict_lock is held across store calls (eviction)
 * but never taken with s->lock held.  Neither is held across network I/O.
 * The store's own locks come after evict_lock. */
struct sync {
	struct store *st;
	struct backend *b;		/* used by the sync thread only */
	struct sync_config cfg;		/* strings owned; opts.abort is
					 * &abort */
	struct backend_abort abort;	/* set by sync_stop(): ends transfers */
	char *identity;			/* writer identity, or NULL */
	char host[64];
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* wakes the thread; with lock */
	pthread_cond_t done;		/* wakes sync_now() waiters; with lock */
	bool stop;			/* protected by lock */
	bool kicked;			/* protected by lock */
	uint64_t now_req;		/* protected by lock: sync_now() calls */
	uint64_t now_done;		/* protected by lock: calls satisfied */
	struct sync_status status;	/* protected by lock */

	/* Fetching. */
	struct fetcher **fetchers;	/* fetch.c: the worker threads */
	unsigned nfetchers;
	struct fetch_req *fq;		/* protected by lock: outstanding */
	pthread_cond_t fetch_cond;	/* wakes workers; with lock */
	pthread_cond_t fetch_done;	/* wakes hook waiters, and
					 * sync_fetch_stop() when the last
					 * leaves; with lock */
	unsigned hook_waiters;		/* protected by lock: threads inside
					 * sync_fetch_hook() or
					 * sync_fetch_reached() */
	pthread_mutex_t evict_lock;	/* one eviction round at a time */
	/* fetch.c, protected by lock: GET buffers kept for the next fetch,
	 * streams being read ahead and when to look at them next. */
	struct backend_buf fetch_bufs[SYNC_FETCH_BUFS];
	unsigned nfetch_bufs;
	struct fetch_ra *fetch_ra;
	int64_t fetch_ra_due;		/* CLOCK_MONOTONIC */

	/* Uploading (upload.c). */
	struct uploader **uploaders;	/* cfg.upload_parallel - 1 helpers */
	unsigned nuploaders;
	struct upload_batch *ub;	/* protected by lock: the segments a
					 * pass is uploading, or NULL */
	pthread_cond_t upload_cond;	/* wakes helpers; with lock */
	pthread_cond_t upload_done;	/* wakes sync_upload(); with lock */

	/* Thread-only state. */
	bool published_once;		/* every manifest written since start */
	char *tenants_json;		/* tenant set last published */
	int64_t tenants_checked_ns;	/* CLOCK_MONOTONIC of that */
	struct tenant_state *ts;
	size_t nts;
};

int64_t sync_clock(clockid_t clk);
/* Records the outcome of one step; logs only changes of state. */
void sync_note(struct sync *s, int rc, const char *what);
/* "streamfs-v1/tenants/ENC/", malloc'd. */
char *sync_tenant_prefix(const char *tenant);
/* Key of segment ID with CHECKSUM below TPREFIX; ".idx" for its index. */
char *sync_segment_key(const char *tprefix, uint64_t id, uint64_t checksum,
		       bool index);
struct tenant_state *sync_tstate(struct sync *s, const char *name);
/* Whether sync_stop() has begun: long loops stop early (-ECANCELED). */
bool sync_stopping(struct sync *s);

/* fetch.c */
int sync_fetch_hook(void *arg, struct store_tenant *t,
		    const struct store_segment *seg);
void sync_fetch_reached(void *arg, struct store_tenant *t,
			const struct store_segment *seg);
int sync_fetch_start(struct sync *s);
void sync_fetch_stop(struct sync *s);
/* Evicts uploaded segments LRU while they exceed cache_size, never
 * KEEP_SEG of KEEP_T. */
void sync_evict(struct sync *s, struct store_tenant *keep_t, uint64_t keep_seg);

/* upload.c: helper threads for the writer's uploads (none when
 * cfg.upload_parallel is 1).  sync_upload_stop() sets s->stop. */
int sync_upload_start(struct sync *s);
void sync_upload_stop(struct sync *s);
/* Uploads SEGS, sealed segments of T (tenant prefix TPREFIX), up to
 * cfg.upload_parallel at once: each one's bytes are checked, then it and
 * its event index object are put and it is marked uploaded.  Returns once
 * none is in flight: 0, or the first failure (in segment order, described
 * in WHAT); no segment starts after a failure, and -ECANCELED when
 * sync_stop() cut the batch short.  *DONE and *DONE_BYTES (OUT) count the
 * segments done (uploaded, or their stream gone). */
int sync_upload(struct sync *s, struct store_tenant *t, const char *tprefix,
		const struct seg_vec *segs, uint64_t *done,
		uint64_t *done_bytes, char *what, size_t wlen);

/* Event index objects (docs/FORMAT.md). */
int sync_index_encode(struct store_tenant *t, uint64_t seg,
		      struct backend_buf *out);
int sync_index_decode(const struct backend_buf *in, uint64_t seg,
		      struct store_batch **out, size_t *n);

/* replica.c: one rescan of the remote into the store. */
int sync_replica_pass(struct sync *s, char *what, size_t wlen);

#endif
