/*
 * fetch.c: lazy fetch of evicted segments, readahead, and eviction under
 * cache_size.
 *
 * The store calls sync_fetch_hook() from a reading (FUSE) thread.  That
 * thread never touches libcurl: it queues a request (or joins one already
 * queued for the same segment) and waits on s->fetch_done in a loop.
 *
 * Worker threads, started with the sync and each with a backend of its own
 * (one CURL handle, whose connection is kept where the server allows it),
 * download requests into a temporary file beside the segment: a segment of
 * at most cfg.fetch_whole bytes in one GET without a Range (some servers,
 * moto among them, pay for the whole object on every ranged GET), a larger
 * one in ranges of cfg.fetch_range, at most cfg.fetch_parallel at once.
 * A GET passes its bytes on in chunks of about 2 MiB as they come (struct
 * part_out), each written to the temporary through the page cache, so that
 * it holds one chunk of memory, not its object, and the reader finds the
 * bytes in memory rather than on the disk (docs/CACHING.md).  The worker
 * that writes the last bytes of an attempt hands the file to
 * store_segment_restore(), which checks length and XXH3 before renaming it
 * into place, so wrong bytes never reach a reader (for a segment that came
 * in one GET, it compares the hash taken of the bytes as they came).  A failed attempt is retried after a backoff,
 * cfg.fetch_attempts times in all; then the read gets -EIO.
 *
 * Order: GETs of segments a reader waits for go first, in the order asked.
 * Readahead sends GETs, in stream order, only while no waited-for segment
 * has a GET left to send and fewer than RA_ON_WIRE segments are on the
 * wire: the first byte of one GET then overlaps the body of another (moto
 * answers two at once about a quarter faster than one after the other),
 * and the next GET starts as soon as the bytes of the previous one are in,
 * while they are written and restored.  A reader that reaches a segment being read ahead
 * joins it, and from then on that segment is waited for.
 *
 * Which segments are fetched ahead of a reader, and when: readahead.c.
 *
 * Lock order: s->evict_lock, then s->lock (a leaf); see sync_int.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

#define FETCH_WORKERS_MAX 16
#define FETCH_WHOLE_DEFAULT (16u << 20)
#define FETCH_BUF_IDLE_NS 1000000000LL	/* kept GET buffers go when idle */
#define HUGE_PAGE ((size_t)2 << 20)
#define PAGE 4096u
#define RA_ON_WIRE 2		/* segments downloaded at once, readahead
				 * included */

enum req_state {
	REQ_IDLE,		/* no attempt running (maybe backing off) */
	REQ_OPENING,		/* a worker creates the temporary */
	REQ_RUNNING,		/* GETs to hand out, in flight, or written */
	REQ_FINISHING,		/* one worker restores, or gives up */
};

/* A segment to fetch.  On s->fq until done; every field is protected by
 * s->lock, except that t and seg never change, and that the workers of an
 * attempt read key, tmp, part, nparts and fd without it (set before the
 * attempt is RUNNING, unchanged until it is FINISHING). */
struct fetch_req {
	struct fetch_req *next;
	struct store_tenant *t;
	struct store_segment seg;
	unsigned refs;		/* the queue's and each waiter's */
	bool waited;		/* a reader waits (or waited) for it */
	bool done;
	int rc;			/* when done */
	enum req_state state;
	unsigned attempts;	/* attempts that failed */
	int64_t not_before;	/* CLOCK_MONOTONIC: end of the backoff */
	int64_t backoff;	/* the next backoff */
	uint64_t part;		/* bytes per GET; 0: the whole object */
	uint64_t nparts, next_part;	/* of this attempt */
	unsigned inflight;	/* GETs running (and an OPENING worker) */
	unsigned writing;	/* parts being written to the temporary */
	int err;		/* first failure of this attempt */
	char why[96];		/* what the remote said of it, or "" */
	bool hashed;		/* one GET, hashed as written: sum is its XXH3 */
	uint64_t sum;
	int fd;			/* the temporary, during an attempt */
	char *key, *tmp;	/* named by the first attempt */
};

/* ---- requests and the hook ---- */

struct fetch_req *sync_fetch_add(struct sync *s, struct store_tenant *t,
				 const struct store_segment *seg, bool waited)
{
	struct fetch_req *r = calloc(1, sizeof(*r)), **tail;

	SYNC_ASSERT_HELD(&s->lock);
	if (!r)
		return NULL;
	r->t = t;
	r->seg = *seg;
	r->refs = 1;		/* the queue's */
	r->waited = waited;
	r->fd = -1;
	r->backoff = s->cfg.backoff_min_ns;
	for (tail = &s->fq; *tail; tail = &(*tail)->next)
		;
	*tail = r;
	pthread_cond_signal(&s->fetch_cond);
	return r;
}

struct fetch_req *sync_fetch_find(struct sync *s, struct store_tenant *t,
				  uint64_t seg)
{
	SYNC_ASSERT_HELD(&s->lock);
	for (struct fetch_req *r = s->fq; r; r = r->next)
		if (r->t == t && r->seg.seg == seg && !r->done)
			return r;
	return NULL;
}

/* With s->lock.  A request freed during an attempt (the sync stopped) still
 * has its temporary. */
static void req_unref(struct sync *s, struct fetch_req *r)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (--r->refs)
		return;
	if (r->fd >= 0) {
		close(r->fd);
		unlink(r->tmp);
	}
	free(r->key);
	free(r->tmp);
	free(r);
}

/* A reading thread comes into fetch.c, with s->lock: false when the sync
 * is stopping.  sync_fetch_stop() waits for the last to leave before it
 * frees anything. */
static bool reader_enter(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (s->stop)
		return false;
	s->hook_waiters++;
	return true;
}

static void reader_leave(struct sync *s)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (--s->hook_waiters == 0 && s->stop)
		pthread_cond_broadcast(&s->fetch_done);
}

int sync_fetch_hook(void *arg, struct store_tenant *t,
		    const struct store_segment *seg)
{
	struct sync *s = arg;
	struct fetch_req *r;
	int rc = -EIO;		/* stopping: nothing will fetch it */

	sync_mutex_lock(&s->lock);
	if (!reader_enter(s))
		goto out;
	r = sync_fetch_find(s, t, seg->seg);
	if (!r && !(r = sync_fetch_add(s, t, seg, true))) {
		rc = -ENOMEM;
		goto leave;
	}
	if (!r->waited) {
		/* Read ahead, and now a reader is here: it goes first. */
		r->waited = true;
		pthread_cond_signal(&s->fetch_cond);
	}
	r->refs++;
	/* The reader is here: its readahead moves now, not once R is in, so
	 * that the next GET follows R's on the wire. */
	sync_ra_reader_at(s, t, seg);
	sync_mutex_unlock(&s->lock);
	sync_ra_step(s, t, seg->stream);
	sync_mutex_lock(&s->lock);
	while (!r->done && !s->stop)
		sync_cond_wait(&s->fetch_done, &s->lock);
	rc = r->done ? r->rc : -EIO;
	req_unref(s, r);
leave:
	reader_leave(s);
out:
	sync_mutex_unlock(&s->lock);
	return rc;
}

void sync_fetch_reached(void *arg, struct store_tenant *t,
			const struct store_segment *seg)
{
	struct sync *s = arg;

	sync_mutex_lock(&s->lock);
	if (!reader_enter(s)) {
		sync_mutex_unlock(&s->lock);
		return;
	}
	sync_ra_reader_at(s, t, seg);
	sync_mutex_unlock(&s->lock);
	sync_ra_step(s, t, seg->stream);
	sync_mutex_lock(&s->lock);
	reader_leave(s);
	sync_mutex_unlock(&s->lock);
}

/* ---- choosing the next GET ---- */

/* Whether a worker can do something for R now; if not because of a
 * backoff, lowers *WAKE (0: none yet) to its end. */
static bool req_ready(const struct sync *s, const struct fetch_req *r,
		      int64_t now, int64_t *wake)
{
	if (r->done)
		return false;
	if (r->state == REQ_RUNNING)
		return !r->err && r->next_part < r->nparts &&
		       r->inflight < s->cfg.fetch_parallel;
	if (r->state != REQ_IDLE)
		return false;
	if (r->not_before <= now)
		return true;
	if (!*wake || r->not_before < *wake)
		*wake = r->not_before;
	return false;
}

/* Whether R has a GET in flight or still to send in this attempt. */
static bool req_on_wire(const struct fetch_req *r)
{
	if (r->done)
		return false;
	return r->state == REQ_OPENING ||
	       (r->state == REQ_RUNNING &&
		(r->inflight || (!r->err && r->next_part < r->nparts)));
}

/* Whether R has GETs of this attempt still to send (its first one is
 * taken with the attempt). */
static bool req_parts_left(const struct fetch_req *r)
{
	return !r->done && !r->err && r->next_part < r->nparts &&
	       (r->state == REQ_OPENING || r->state == REQ_RUNNING);
}

/* Takes the next part of R, or starts an attempt on it (REQ_OPENING: the
 * taker creates the temporary, then GETs part 0). */
static struct fetch_req *req_take(const struct sync *s, struct fetch_req *r,
				  uint64_t *part)
{
	if (r->state == REQ_IDLE) {
		uint64_t whole = s->cfg.fetch_whole ? s->cfg.fetch_whole :
			FETCH_WHOLE_DEFAULT;
		uint64_t len = r->seg.length, range = s->cfg.fetch_range;

		r->part = len <= whole ? 0 : range;
		r->nparts = r->part ? (len + range - 1) / range : 1;
		r->next_part = 0;
		r->err = 0;
		r->why[0] = '\0';
		r->hashed = false;
		r->state = REQ_OPENING;
	}
	*part = r->next_part++;
	r->inflight++;
	return r;
}

/* The next GET for a worker, with s->lock: a part of R (*PART), or the
 * start of an attempt (R in REQ_OPENING).  NULL when there is none now;
 * *WAKE then gets the end of the nearest backoff (0: none).  Segments that
 * readers wait for come first; readahead only when none of them has a GET
 * to send, and while fewer than RA_ON_WIRE segments are on the wire. */
static struct fetch_req *pick(struct sync *s, uint64_t *part, int64_t *wake)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	bool waited_left = false;
	unsigned on_wire = 0;
	struct fetch_req *r;

	SYNC_ASSERT_HELD(&s->lock);
	*wake = 0;
	for (r = s->fq; r; r = r->next) {
		if (!r->waited)
			continue;
		if (req_ready(s, r, now, wake))
			return req_take(s, r, part);
		waited_left |= req_parts_left(r);	/* fetch_parallel */
		on_wire += req_on_wire(r);
	}
	if (waited_left)
		return NULL;
	for (r = s->fq; r; r = r->next) {
		if (r->waited || !req_on_wire(r))
			continue;
		if (req_ready(s, r, now, wake))
			return req_take(s, r, part);
		on_wire++;
	}
	if (on_wire >= RA_ON_WIRE)
		return NULL;
	for (r = s->fq; r; r = r->next)
		if (!r->waited && req_ready(s, r, now, wake))
			return req_take(s, r, part);
	return NULL;
}

/* ---- GET buffers ---- */

/* A buffer for LEN bytes of a GET (and one more, to see an object longer
 * than asked): one kept from an earlier GET when there is one, else a new
 * one, whole pages, of 2 MiB pages when large.  Page faults are what a
 * fresh buffer costs: on this VM a 16 MiB GET from moto took 80 ms
 * into new 4 KiB pages, 30 ms into new 2 MiB pages, 15 ms into pages
 * already mapped; hence chunks (FETCH_CHUNK), kept between GETs. */
static int buf_get(struct sync *s, size_t len, struct backend_buf *out)
{
	struct backend_buf b = { 0 };
	size_t alloc = (len + 1 + PAGE - 1) & ~(size_t)(PAGE - 1);
	size_t align = alloc >= HUGE_PAGE ? HUGE_PAGE : PAGE;
	void *p;

	alloc = (alloc + align - 1) & ~(align - 1);
	sync_mutex_lock(&s->lock);
	if (s->nfetch_bufs)
		b = s->fetch_bufs[--s->nfetch_bufs];
	sync_mutex_unlock(&s->lock);
	if (b.alloc < len + 1) {
		backend_buf_release(&b);
		if (posix_memalign(&p, align, alloc))
			return -ENOMEM;
		if (align == HUGE_PAGE)
			(void)madvise(p, alloc, MADV_HUGEPAGE);	/* a hint */
		b = (struct backend_buf){ .data = p, .alloc = alloc };
	}
	b.len = 0;
	b.max = len + 1;
	b.sink = NULL;
	b.passed = 0;
	*out = b;
	return backend_buf_reserve(out, len);
}

/* Keeps B for the next GET, or frees it when enough are kept. */
static void buf_put(struct sync *s, struct backend_buf *b)
{
	sync_mutex_lock(&s->lock);
	if (b->data && s->nfetch_bufs < SYNC_FETCH_BUFS) {
		s->fetch_bufs[s->nfetch_bufs++] = *b;
		*b = (struct backend_buf){ 0 };
	}
	sync_mutex_unlock(&s->lock);
	backend_buf_release(b);
}

/* Frees the kept buffers, with s->lock (dropped meanwhile). */
static void bufs_release(struct sync *s)
{
	struct backend_buf kept[SYNC_FETCH_BUFS];
	unsigned n = s->nfetch_bufs;

	SYNC_ASSERT_HELD(&s->lock);
	memcpy(kept, s->fetch_bufs, n * sizeof(*kept));
	s->nfetch_bufs = 0;
	sync_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < n; i++)
		backend_buf_release(&kept[i]);
	sync_mutex_lock(&s->lock);
}

/* ---- downloading ---- */

/* Names R's object and temporary (first attempt). */
static int req_names(struct fetch_req *r)
{
	const struct store_segment *seg = &r->seg;
	char *tp = sync_tenant_prefix(store_tenant_name(r->t));
	char *path = store_segment_path(r->t, seg->seg);
	int rc = -ENOMEM;

	if (!tp || !path)
		goto out;
	r->key = sync_segment_key(tp, seg->origin ? seg->origin : seg->seg,
				  seg->checksum, false);
	if (r->key && asprintf(&r->tmp, "%s.fetch-%p", path, (void *)r) >= 0)
		rc = 0;
	else
		r->tmp = NULL;
out:
	free(tp);
	free(path);
	return rc;
}

/* The worker that took R in REQ_OPENING: creates the temporary, then lets
 * other workers take R's other parts.  Returns 1 when R's segment is not
 * evicted any more, or -errno. */
static int begin_attempt(struct sync *s, struct fetch_req *r)
{
	int fd = -1, rc = r->tmp ? 0 : req_names(r);

	/* A reader may have asked just as another fetch of it ended. */
	if (!rc && !store_segment_evicted(r->t, r->seg.seg))
		return 1;
	if (!rc) {
		fd = open(r->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			  0644);
		if (fd < 0)
			rc = -errno;
	}
	sync_mutex_lock(&s->lock);
	r->fd = fd;
	if (!rc) {
		r->state = REQ_RUNNING;
		if (r->nparts > 1)
			pthread_cond_broadcast(&s->fetch_cond);
	}
	sync_mutex_unlock(&s->lock);
	return rc;
}

/* ---- writing a GET's bytes ---- */

/* Bytes of a GET held at once: whole pages, so that each chunk's write
 * starts and ends on a page of the copy, and a page less than 2 MiB, so
 * that a chunk and the buffer's NUL fit in one huge page. */
#define FETCH_CHUNK (HUGE_PAGE - PAGE)

/* Where one GET's bytes go: R's temporary from OFF on, and for a whole
 * segment into its hash as well.  A GET longer than a chunk passes them
 * here a chunk at a time as they come (BUF's sink), so that it holds one
 * chunk, not up to 16 MiB, and that chunk's pages are warm from the GET
 * before. */
struct part_out {
	struct fetch_req *r;
	struct backend_buf buf;		/* what the GET fills */
	struct backend_sink sink;
	uint64_t off;			/* of BUF's first byte in the segment */
	XXH3_state_t *hash;		/* a whole segment's, else NULL */
};

/* Puts BUF's bytes where O says (the sink's put()).  Through the page
 * cache: the reader wants them next, and finds them in memory. */
static int put_bytes(void *arg, struct backend_buf *buf)
{
	struct part_out *o = arg;
	int rc;

	if (o->hash)	/* while the chunk is in the CPU's cache */
		XXH3_64bits_update(o->hash, buf->data, buf->len);
	rc = store_pwrite_all(o->r->fd, buf->data, buf->len, o->off);
	if (!rc)
		o->off += buf->len;
	return rc;
}

/* GETs part PART of R, exactly its length, into O: passed on a chunk at a
 * time when it is longer than one.  O's last bytes are left in O->buf. */
static int get_part(struct sync_worker *f, struct fetch_req *r, uint64_t part,
		    struct part_out *o)
{
	uint64_t off = part * r->part, len = r->seg.length - off;
	int rc = 0;

	if (!f->b)
		rc = backend_open_url(f->s->cfg.url, &f->s->cfg.opts, &f->b);
	if (r->part && len > r->part)
		len = r->part;
	if (!rc)
		rc = buf_get(f->s, len > FETCH_CHUNK ? FETCH_CHUNK : (size_t)len,
			     &o->buf);
	if (rc)
		return rc;
	o->buf.max = (size_t)len + 1;	/* to see an object longer than asked */
	if (len > FETCH_CHUNK) {
		o->sink = (struct backend_sink){ .put = put_bytes, .arg = o,
						 .chunk = FETCH_CHUNK };
		o->buf.sink = &o->sink;
	}
	rc = backend_get(f->b, r->key, off, r->part ? len : BACKEND_TO_END,
			 &o->buf);
	if (!rc && o->buf.passed + o->buf.len != len)
		rc = -EBADMSG;	/* not the length the manifest says */
	return rc;
}

/* ---- ending an attempt ---- */

/* R is done with RC, with s->lock: wakes its waiters, drops the queue's
 * reference. */
static void req_settle(struct sync *s, struct fetch_req *r, int rc)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (!r->done) {		/* sync_fetch_stop() may have failed it */
		r->done = true;
		r->rc = rc;
	}
	for (struct fetch_req **p = &s->fq; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	req_unref(s, r);
	pthread_cond_broadcast(&s->fetch_done);
}

/* The same, counted in the status. */
static void req_complete(struct sync *s, struct fetch_req *r, int rc)
{
	SYNC_ASSERT_HELD(&s->lock);
	if (rc)
		s->status.fetch_failures++;
	else
		s->status.fetched_segments++;
	req_settle(s, r, rc);
}

/* Ends an attempt on R once its last part is written (the caller put R in
 * REQ_FINISHING): restores the segment, or backs off for the next attempt,
 * or fails R for good.  Called and returns with s->lock. */
static void finish(struct sync *s, struct fetch_req *r)
{
	struct store_tenant *t = r->t;
	struct store_segment seg = r->seg;
	int fd = r->fd, rc = r->err, get_rc = r->err;
	bool hashed = r->hashed;
	uint64_t sum = r->sum;
	const char *key = r->key ? r->key : "a segment";
	enum sync_cause cause;
	bool last, waited;

	SYNC_ASSERT_HELD(&s->lock);
	r->fd = -1;
	sync_mutex_unlock(&s->lock);
	if (fd >= 0)
		close(fd);
	if (!rc && hashed)
		rc = store_segment_restore_hashed(t, seg.seg, r->tmp, sum);
	else if (!rc)
		rc = store_segment_restore(t, seg.seg, r->tmp);
	/* After good GETs, restore's -EIO is bytes that fail their length
	 * or checksum. */
	if (rc == -EIO && !get_rc)
		rc = -EBADMSG;
	cause = sync_cause_of(rc);
	if (r->tmp)
		unlink(r->tmp);	/* gone already when restored */
	sync_mutex_lock(&s->lock);
	if (rc && s->stop) {
		req_complete(s, r, -EIO);	/* cut short: not worth a log */
		return;
	}
	if (!rc) {
		waited = r->waited;
		req_complete(s, r, 0);
		sync_mutex_unlock(&s->lock);
		if (waited)	/* the reader is here now */
			sync_ra_step(s, t, seg.stream);
		sync_evict(s, t, seg.seg);
		sync_mutex_lock(&s->lock);
		return;
	}
	s->status.fetch_errors[cause]++;
	r->attempts++;
	last = rc == -ENOENT || rc == -ENOSPC ||
	       r->attempts >= s->cfg.fetch_attempts;
	sync_log(LOG_WARNING, "fetch of %s failed (try %u of %u): %s%s%s", key,
		 r->attempts, s->cfg.fetch_attempts, r->why, r->why[0] ? ": " : "",
		 cause == SYNC_CAUSE_CHECKSUM ?
		 "checksum mismatch (the bytes fetched are not the ones the "
		 "manifest names)" : sync_strerror(rc));
	if (!last) {
		r->state = REQ_IDLE;
		r->not_before = sync_clock(CLOCK_MONOTONIC) + r->backoff;
		r->backoff = r->backoff * 2 > s->cfg.backoff_max_ns ?
			s->cfg.backoff_max_ns : r->backoff * 2;
		pthread_cond_signal(&s->fetch_cond);
		return;
	}
	if (rc != -ENOSPC) {
		sync_log(LOG_ERR, "fetch of %s failed for good%s", key, r->waited ?
			 ": reads of it give EIO" : " (readahead)");
		rc = -EIO;
	}
	req_complete(s, r, rc);
}

/* A GET of R returned RC (WHY: what the remote said), with s->lock.  Returns whether a reader waits
 * for R and that was the last of the attempt's GETs, all good: the wire is
 * free for the next one, so the reader's readahead moves now. */
static bool got_part(struct sync *s, struct fetch_req *r, int rc,
		     const char *why)
{
	SYNC_ASSERT_HELD(&s->lock);
	r->inflight--;
	r->writing++;
	if (rc && !r->err) {
		r->err = rc;
		snprintf(r->why, sizeof(r->why), "%s", why);
	}
	/* A part or (the wire free) readahead may go now. */
	pthread_cond_signal(&s->fetch_cond);
	if (!r->waited || req_on_wire(r) || r->err || s->stop)
		return false;
	sync_ra_reader_at(s, r->t, &r->seg);
	return true;
}

/* A part of R is written (or not: RC), with s->lock.  The last one of an
 * attempt ends it (unlocks meanwhile). */
static void part_done(struct sync *s, struct fetch_req *r, int rc)
{
	SYNC_ASSERT_HELD(&s->lock);
	r->writing--;
	if (rc && !r->err)
		r->err = rc;
	if (r->inflight || r->writing || s->stop)
		return;	/* stopping: sync_fetch_stop() frees R */
	if (!r->err && r->next_part < r->nparts)
		return;
	r->state = REQ_FINISHING;
	finish(s, r);
}

/* ---- workers ---- */

/* Does part PART of R (OPENING: first creates its temporary), with s->lock
 * (dropped meanwhile). */
static void run_part(struct sync_worker *f, struct fetch_req *r,
		     uint64_t part, bool opening)
{
	struct sync *s = f->s;
	struct part_out o = { .r = r, .off = part * r->part };
	XXH3_state_t hash;
	uint64_t sum = 0;
	bool ahead;
	int rc = 0;

	SYNC_ASSERT_HELD(&s->lock);
	sync_mutex_unlock(&s->lock);
	if (opening)
		rc = begin_attempt(s, r);
	if (rc > 0) {		/* here already: nothing to fetch */
		sync_mutex_lock(&s->lock);
		r->inflight--;
		req_settle(s, r, 0);
		return;
	}
	if (r->nparts == 1) {	/* hashed as it comes: no reading back */
		XXH3_64bits_reset(&hash);
		o.hash = &hash;
	}
	if (!rc)
		rc = get_part(f, r, part, &o);
	sync_mutex_lock(&s->lock);
	ahead = got_part(s, r, rc, rc && f->b ? backend_why(f->b) : "");
	sync_mutex_unlock(&s->lock);
	if (ahead)	/* t and seg never change: no lock needed */
		sync_ra_step(s, r->t, r->seg.stream);
	if (!rc && o.buf.len)
		rc = put_bytes(&o, &o.buf);	/* the last chunk */
	if (!rc && o.hash)
		sum = XXH3_64bits_digest(o.hash);
	buf_put(s, &o.buf);
	sync_mutex_lock(&s->lock);
	r->hashed = !rc && o.hash;
	r->sum = sum;
	part_done(s, r, rc);
}

/* Waits for something to do until WAKE (CLOCK_MONOTONIC; 0: no limit),
 * or until readahead is to be looked at, with s->lock.  With nothing
 * queued, kept buffers go after a second. */
static void wait_for_work(struct sync *s, int64_t wake)
{
	bool idle = !s->fq && s->nfetch_bufs;
	struct timespec ts;

	SYNC_ASSERT_HELD(&s->lock);
	if (idle)
		wake = sync_clock(CLOCK_MONOTONIC) + FETCH_BUF_IDLE_NS;
	if (s->fetch_ra_due && (!wake || s->fetch_ra_due < wake))
		wake = s->fetch_ra_due;
	if (!wake) {
		sync_cond_wait(&s->fetch_cond, &s->lock);
		return;
	}
	ts = (struct timespec){ .tv_sec = wake / 1000000000,
				.tv_nsec = wake % 1000000000 };
	if (sync_cond_timedwait(&s->fetch_cond, &s->lock, &ts) == ETIMEDOUT &&
	    idle && !s->fq && !s->fetch_ra)
		bufs_release(s);
}

static void *worker_main(void *arg)
{
	struct sync_worker *f = arg;
	struct sync *s = f->s;

	sync_mutex_lock(&s->lock);
	while (!s->stop) {
		struct fetch_req *r;
		uint64_t part;
		int64_t wake;

		if (sync_snapshot_fetch_next(f) || sync_ids_fetch_next(f))
			continue;
		sync_ra_poll(s);
		r = pick(s, &part, &wake);
		if (r)
			run_part(f, r, part, r->state == REQ_OPENING);
		else
			wait_for_work(s, wake);
	}
	sync_mutex_unlock(&s->lock);
	return NULL;
}

static unsigned nworkers(const struct sync *s)
{
	unsigned n = s->cfg.fetch_threads * s->cfg.fetch_parallel;

	return n > FETCH_WORKERS_MAX ? FETCH_WORKERS_MAX : n;
}

int sync_fetch_start(struct sync *s)
{
	int rc = sync_pool_start(s, &s->fetchers, nworkers(s), worker_main);

	if (rc)
		sync_fetch_stop(s);
	return rc;
}

void sync_fetch_stop(struct sync *s)
{
	sync_mutex_lock(&s->lock);
	s->stop = true;
	/* Fail what is pending: its waiters get -EIO now, not after a
	 * transfer that may never end. */
	for (struct fetch_req *r = s->fq; r; r = r->next) {
		if (!r->done) {
			r->done = true;
			r->rc = -EIO;
		}
	}
	sync_snapshot_fetch_stop(s);
	sync_ids_fetch_stop(s);
	pthread_cond_broadcast(&s->fetch_cond);
	pthread_cond_broadcast(&s->fetch_done);
	while (s->hook_waiters)
		sync_cond_wait(&s->fetch_done, &s->lock);
	sync_mutex_unlock(&s->lock);
	sync_pool_join(&s->fetchers);
	/* Requests left in the queue: their waiters are gone (counted
	 * above), so only the queue's reference remains. */
	sync_mutex_lock(&s->lock);
	bufs_release(s);
	sync_ra_clear(s);
	sync_snapshot_fetch_release(s);
	sync_ids_fetch_release(s);
	while (s->fq) {
		struct fetch_req *r = s->fq;

		s->fq = r->next;
		req_unref(s, r);
	}
	sync_mutex_unlock(&s->lock);
}

/* ---- eviction ---- */

/* A local copy that may go: a segment, or a snapshot blob on the remote
 * (SNAP_VERSION not 0; then SEG is its stream). */
struct lru_seg {
	struct store_tenant *t;
	uint64_t seg, length;
	uint64_t snap_version;
	int64_t used_ns;
};

struct lru_vec {
	struct lru_seg *v;
	size_t n, alloc;
	struct store_tenant *t;		/* being listed */
	uint64_t total;
};

static int lru_collect(void *arg, const struct store_segment *seg)
{
	struct lru_vec *lv = arg;

	if (STORE_ARRAY_RESERVE(lv->v, lv->alloc, lv->n + 1, 64))
		return -ENOMEM;
	lv->v[lv->n++] = (struct lru_seg){ .t = lv->t, .seg = seg->seg,
					   .length = seg->length,
					   .used_ns = seg->used_ns };
	lv->total += seg->length;
	return 0;
}

struct lru_walk {
	struct sync *s;
	struct lru_vec *lv;
};

static int lru_collect_snap(void *arg, const struct store_snapshot *snap,
			    int64_t used_ns)
{
	struct lru_vec *lv = arg;

	if (STORE_ARRAY_RESERVE(lv->v, lv->alloc, lv->n + 1, 64))
		return -ENOMEM;
	lv->v[lv->n++] = (struct lru_seg){ .t = lv->t, .seg = snap->stream,
					   .length = snap->length,
					   .snap_version = snap->version,
					   .used_ns = used_ns };
	lv->total += snap->length;
	return 0;
}

static int lru_walk_tenant(void *arg, const char *name)
{
	struct lru_walk *w = arg;
	struct store_tenant *t;
	int rc;

	if (store_tenant_get(w->s->st, name, &t) || store_tenant_removed(t))
		return 0;
	w->lv->t = t;
	rc = store_segment_list(t, STORE_SEG_UPLOADED, lru_collect, w->lv);
	if (!rc)
		rc = store_snapshot_list_cached(t, lru_collect_snap, w->lv);
	return rc;
}

/* Evicts E: 0, or non-zero when it is busy or gone. */
static int lru_evict(const struct lru_seg *e)
{
	if (e->snap_version)
		return store_snapshot_evict(e->t, e->seg, e->snap_version);
	return store_segment_evict(e->t, e->seg);
}

static int lru_cmp(const void *a, const void *b)
{
	const struct lru_seg *x = a, *y = b;

	if (x->used_ns != y->used_ns)
		return x->used_ns < y->used_ns ? -1 : 1;
	return x->seg < y->seg ? -1 : x->seg > y->seg;
}

void sync_evict(struct sync *s, struct store_tenant *keep_t, uint64_t keep_seg)
{
	struct lru_vec lv = { 0 };
	struct lru_walk w = { .s = s, .lv = &lv };
	uint64_t evicted = 0;

	sync_mutex_lock(&s->evict_lock);
	if (store_tenant_list(s->st, lru_walk_tenant, &w))
		goto out;
	if (s->cfg.cache_size && lv.total > s->cfg.cache_size) {
		qsort(lv.v, lv.n, sizeof(*lv.v), lru_cmp);
		for (size_t i = 0; i < lv.n && lv.total > s->cfg.cache_size; i++) {
			if (lv.v[i].t == keep_t && lv.v[i].seg == keep_seg &&
			    !lv.v[i].snap_version)
				continue;
			if (lru_evict(&lv.v[i]))
				continue;	/* busy or gone: the next one */
			lv.total -= lv.v[i].length;
			evicted++;
		}
	}
	sync_mutex_lock(&s->lock);
	s->status.cached_bytes = lv.total;
	s->status.evicted_segments += evicted;
	sync_mutex_unlock(&s->lock);
out:
	sync_mutex_unlock(&s->evict_lock);
	free(lv.v);
}
