/*
 * sync: the background thread that ships sealed segments to a remote.
 *
 * What it does: every pass (at least every `interval`, and soon after a
 * commit), for each tenant it seals segments older than roll age, uploads
 * each sealed segment (streaming from its local file, size checked after),
 * marks it uploaded in the store, and then publishes the tenant manifest
 * (docs/FORMAT.md), in that order: a reader of the remote never sees a
 * manifest naming a missing or partial object.  Streams removed locally
 * vanish from the next manifest (with a tombstone), and their objects are
 * deleted after that.  Failures are retried with capped exponential backoff
 * for as long as it takes; each change of state (failing, with the cause;
 * working again) is logged once.  State lives in the store (segment states)
 * and on the remote, so a restart resumes where it stopped and never
 * re-uploads a segment marked uploaded.
 *
 * What it does not (yet): lazy fetch of evicted segments, leases, the event
 * index objects, analysis-host mounts.
 *
 * Threads: one thread of its own with its own backend (and CURL handle).
 * Writers never wait for it: it only calls store functions that take a
 * tenant lock briefly, and never holds its own lock across network I/O.
 */
#ifndef STREAMFS_SYNC_H
#define STREAMFS_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "store.h"

#define SYNC_WARN_UNUSED __attribute__((warn_unused_result))

struct sync_config {
	const char *url;		/* remote URL; borrowed for sync_start() */
	struct backend_options opts;	/* strings borrowed for sync_start() */
	int64_t interval_ns;		/* pass at least this often; default 1 s */
	int64_t backoff_min_ns;		/* first retry delay; default 200 ms */
	int64_t backoff_max_ns;		/* cap; default 30 s */
	bool nodelete;			/* never delete remote objects */
};

void sync_config_default(struct sync_config *cfg);

struct sync;

/* Opens the remote and starts the thread.  The remote being unreachable is
 * not an error (the thread keeps trying); a malformed URL or unusable
 * credentials are.  The caller owns *out; sync_stop() frees it. */
int sync_start(struct store *st, const struct sync_config *cfg,
	       struct sync **out) SYNC_WARN_UNUSED;
/* Stops the thread (an upload in flight is abandoned and redone on the
 * next start) and frees S.  NULL is fine. */
void sync_stop(struct sync *s);

/* Wakes the thread up (e.g. from the store's commit hook).  Cheap. */
void sync_kick(struct sync *s);

/* Seals every non-empty active segment, uploads everything, publishes the
 * manifests, and waits until that is done or TIMEOUT_NS passes.  0 when
 * everything sealed before the call is on the remote; -ETIMEDOUT; or the
 * last error of the remote when the deadline passed while it failed. */
int sync_now(struct sync *s, int64_t timeout_ns) SYNC_WARN_UNUSED;

struct sync_status {
	uint64_t pending_segments;	/* sealed, not yet uploaded */
	uint64_t pending_bytes;
	uint64_t uploaded_segments;	/* since start */
	uint64_t uploaded_bytes;
	int last_error;			/* -errno of the last failure, 0 when fine */
	char last_error_what[160];	/* what failed ("put t/x/seg/..."), "" */
	int64_t last_error_ns;		/* CLOCK_REALTIME, 0 if never */
	int64_t last_success_ns;	/* last pass that finished cleanly */
};

void sync_get_status(struct sync *s, struct sync_status *out);

/* ---- remote layout (docs/FORMAT.md) ---- */

/* Encodes NAME (a tenant or stream name) for use as one key component:
 * bytes other than [A-Za-z0-9_-] become ~XX (upper-case hex), so the
 * result needs no URL escaping, never holds
 * '/', never starts with '.', and decodes back to exactly NAME.  Returns
 * a malloc'd string or NULL. */
char *sync_key_encode(const char *name);

#endif
