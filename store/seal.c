/*
 * Sealing.  A segment that reaches roll_size is closed by the append that
 * fills it: it takes no more bytes, the next batch opens a new segment,
 * and the store's sealer thread seals it off the writer's path (flush and
 * checksum without the tenant's lock, the state change under it).  The
 * sealer also closes active segments that reach roll_age, on its own
 * schedule (age_pass), and seals them the same way; store_roll() still
 * seals by age, or by force, on its caller's thread.
 *
 * The segments of a stream are sealed in order, so a sealed segment never
 * follows an unsealed one: after a power cut recovery may cut a stream
 * inside a closing segment and drop what follows, which must not include
 * bytes that were promised durable.  See docs/STORE.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_int.h"

/* ---- the sealer's queues (T's lock held) ---- */

static int queue_push(struct seg_queue *q, uint64_t id)
{
	if (q->n && q->ids[q->n - 1] == id)
		return 0;
	if (STORE_ARRAY_RESERVE(q->ids, q->cap, q->n + 1, 8))
		return -ENOMEM;
	q->ids[q->n] = id;
	atomic_store_explicit(&q->n, q->n + 1, memory_order_release);
	return 0;
}

static void queue_forget(struct seg_queue *q, uint64_t id)
{
	for (size_t i = 0; i < q->n; i++) {
		if (q->ids[i] != id)
			continue;
		memmove(&q->ids[i], &q->ids[i + 1],
			(q->n - i - 1) * sizeof(*q->ids));
		atomic_store_explicit(&q->n, q->n - 1, memory_order_release);
		return;
	}
}

static size_t queued(struct seg_queue *q)
{
	return atomic_load_explicit(&q->n, memory_order_acquire);
}

static void sealer_kick(struct store *st)
{
	pthread_mutex_lock(&st->seal_lock);
	st->seal_kicks++;
	pthread_cond_signal(&st->seal_cond);
	pthread_mutex_unlock(&st->seal_lock);
}

/* ---- sealing one segment ---- */

/* The pairs of G's ID table: those of S's active set below G's end (the
 * set holds the next segment's too).  *PAIRS: caller frees. */
static int ids_collect(struct store_tenant *t, struct stream *s,
		       struct seg *g, uint64_t **pairs, size_t *n)
{
	int rc = s->ids_loaded ? 0 : store_dedup_load(t, s);

	return rc ? rc : store_idset_pairs(&s->active_ids, 0, g->offset + g->length,
					   pairs, n);
}

/* The sealer's own name for the ID table of segment ID, written without
 * T's lock: a seal on another thread (store_roll) writes NNN.ids itself. */
static void sealer_table_name(char *name, size_t size, uint64_t id)
{
	store_seg_name(name, size, id, ".ids.seal");
}

/* Writes the sealer's ID table of segment ID for FIELD in DIRFD, the
 * sealer's own descriptor of the segment directory; needs no lock. */
static int ids_write(int dirfd, uint64_t id, const char *field,
		     uint64_t *pairs, size_t n)
{
	char name[64];

	sealer_table_name(name, sizeof(name), id);
	return store_idtable_write(dirfd, name, field, pairs, n);
}

static void ids_discard(int dirfd, uint64_t id)
{
	char name[64];

	sealer_table_name(name, sizeof(name), id);
	unlinkat(dirfd, name, 0);
}

/* Puts G's ID table in place: the sealer's, when WRITTEN (for the tenant's
 * id_field now), else one made here. */
static int ids_place(struct store_tenant *t, struct stream *s, struct seg *g,
		     bool written)
{
	uint64_t *pairs = NULL;
	char from[64], to[64];
	size_t n;
	int rc;

	store_seg_name(to, sizeof(to), g->id, ".ids");
	if (written) {
		sealer_table_name(from, sizeof(from), g->id);
		return renameat(t->segfd, from, t->segfd, to) < 0 ? -errno : 0;
	}
	rc = ids_collect(t, s, g, &pairs, &n);
	if (!rc)
		rc = store_idtable_write(t->segfd, to, t->id_field, pairs, n);
	free(pairs);
	return rc;
}

/* Makes G's ID table (see ids_place), then hands its pairs over from the
 * stream's active set to its filter. */
static int seal_ids(struct store_tenant *t, struct stream *s, struct seg *g,
		    bool written)
{
	uint64_t end = g->offset + g->length, sealed = 0;
	char name[64];
	int rc = ids_place(t, s, g, written);

	if (rc)
		return rc;
	if (!s->ids_loaded)
		return 0;	/* dedup_load maps it when an ID comes */
	store_seg_name(name, sizeof(name), g->id, ".ids");
	rc = store_idtable_open(t->segfd, name, t->id_field, &g->ids);
	if (rc)
		return rc;
	/* Past 12 bits an ID a filter loses precision: it is made anew from
	 * the tables, twice as big (releasing all made the next append
	 * parse the active segment again: 220 ms). */
	for (size_t i = 0; i < s->nsegs; i++)
		sealed += s->segs[i]->ids.count;	/* G's included */
	if (s->sealed_filter.nbits < 12 * sealed) {
		rc = store_filter_build(s);
	} else {
		for (uint64_t i = 0; i < g->ids.count; i++)
			store_bloom_add(&s->sealed_filter, g->ids.pairs[2 * i]);
	}
	if (s->segs[s->nsegs - 1] == g)
		/* none left: free its slots */
		store_idset_release(&s->active_ids);
	else if (!rc)
		rc = store_idset_drop_below(&s->active_ids, end);
	if (rc)
		store_stream_ids_release(s);	/* rebuilt at the next ID */
	return 0;
}

/* Marks G sealed with checksum SUM; its bytes are on stable storage, and
 * its ID table too when IDS_WRITTEN.  Its rows and the new state are
 * committed at synchronous=FULL: an fsync of the stream later may rely on
 * them (mark.c) and sync only what follows. */
static int seal_finish(struct store_tenant *t, struct stream *s,
		       struct seg *g, uint64_t sum, bool ids_written)
{
	uint64_t synced = g->synced;
	int rc = store_index_set_full_sync(t, true);

	if (!rc)
		rc = store_index_begin(t);
	if (rc)
		goto out;
	rc = store_journal_flush_in(t);	/* its batch rows first */
	if (!rc && g->has_ids)
		rc = seal_ids(t, s, g, ids_written);
	if (!rc) {
		g->checksum = sum;
		g->synced = g->length;
		g->state = STORE_SEG_SEALED;
		rc = store_index_segment_update(t, g);
	}
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	store_journal_flushed(t, !rc);
	if (rc) {
		g->state = STORE_SEG_ACTIVE;
		g->synced = synced;
	} else {
		queue_forget(&t->closing, g->id);
		store_seg_hash_release(g);
	}
out:
	if (!t->st->cfg.sync_always)
		store_index_set_full_sync(t, false);
	return rc;
}

/* Seals G now, on this thread, with T's lock held for writing. */
static int seg_seal(struct store_tenant *t, struct stream *s, struct seg *g)
{
	uint64_t sum;
	int fd, rc;

	STORE_ASSERT_WRLOCKED(t);
	rc = store_seg_trim(t, g);	/* an active one may run past its bytes */
	if (rc)
		return rc;
	fd = store_seg_fd(t, g);
	if (fd < 0)
		return fd;
	rc = fdatasync(fd) < 0 ? -errno : 0;
	if (!rc)
		rc = store_file_checksum(fd, g->length, &sum);
	store_seg_fd_put(t, g);
	if (!rc && !g->synced && fsync(t->segfd) < 0)
		rc = -errno;	/* the new file's directory entry */
	return rc ? rc : seal_finish(t, s, g, sum, false);
}

int store_seg_close(struct store_tenant *t, struct stream *s, struct seg *g)
{
	int rc = store_seg_trim(t, g);	/* what is sealed is its bytes alone */

	if (rc)
		return rc;
	rc = queue_push(&t->closing, g->id);
	g->full = true;
	if (rc)
		rc = seg_seal(t, s, g);	/* no memory to queue it */
	else if ((rc = store_index_segment_update(t, g)))	/* final length */
		queue_forget(&t->closing, g->id);
	else
		sealer_kick(t->st);
	if (rc)
		g->full = false;	/* the next append closes it again */
	return rc;
}

int store_seg_queue_closing(struct store_tenant *t, struct seg *g)
{
	return queue_push(&t->closing, g->id);
}

/* ---- the sealer thread ---- */

/* A descriptor of G's file for the sealer's own use, to work on without
 * T's lock, or -errno. */
static int seg_fd_own(struct store_tenant *t, struct seg *g)
{
	int fd = store_seg_fd(t, g), own;

	if (fd < 0)
		return fd;
	own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	store_seg_fd_put(t, g);
	return own < 0 ? -errno : own;
}

/* Whether G, found again by ID under T's lock, is still the segment to
 * seal next in its stream. */
static struct seg *next_to_seal(struct store_tenant *t, uint64_t id,
				struct stream **sp)
{
	struct seg *g = store_seg_find(t, id, sp);

	if (!g || !store_seg_closing(*sp, g) ||
	    (*sp)->segs[store_seg_first_unsealed(*sp)] != g)
		return NULL;
	return g;
}

/* A segment sealed outside T's lock, and the sealer's own descriptors of
 * its file and of the segment directory (T's may be closed meanwhile: a
 * tenant's are when it is removed). */
struct sealing {
	uint64_t id, length, sum;
	int fd, dirfd;
	uint64_t *pairs;	/* its ID table's, or NULL */
	size_t npairs;
	char field[STORE_ID_FIELD_MAX + 1];	/* what PAIRS are IDs of */
};

/* Takes G, the segment of S to seal next, into W.  T's lock is held. */
static int sealing_take(struct store_tenant *t, struct stream *s,
			struct seg *g, struct sealing *w)
{
	w->id = g->id;
	w->length = g->length;
	memcpy(w->field, t->id_field, sizeof(w->field));
	w->fd = seg_fd_own(t, g);
	if (w->fd < 0)
		return w->fd;
	w->dirfd = fcntl(t->segfd, F_DUPFD_CLOEXEC, 0);
	if (w->dirfd < 0)
		return -errno;
	return g->has_ids ? ids_collect(t, s, g, &w->pairs, &w->npairs) : 0;
}

/* The work of a seal that needs no lock: the checksum (W->sum), the flush
 * of the file and of its directory entry, the sealer's ID table. */
static int sealing_write(struct sealing *w)
{
	int rc = store_file_checksum(w->fd, w->length, &w->sum);

	if (!rc && fdatasync(w->fd) < 0)
		rc = -errno;
	if (!rc && fsync(w->dirfd) < 0)
		rc = -errno;
	if (!rc && w->pairs)
		rc = ids_write(w->dirfd, w->id, w->field, w->pairs, w->npairs);
	return rc;
}

static void sealing_release(struct sealing *w)
{
	if (w->fd >= 0)
		close(w->fd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	free(w->pairs);
}

/* Seals T's oldest closing segment: checksum, flush and ID table without
 * T's lock (its bytes and IDs no longer change; sorting and writing a
 * segment's IDs held appends up for 200-300 ms), then the state change
 * under it.  Returns 1 when one was taken off the queue, 0 when none is
 * left, or -errno. */
static int seal_next(struct store_tenant *t)
{
	struct sealing w = { .fd = -1, .dirfd = -1 };
	bool ids = false;
	struct stream *s;
	struct seg *g;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	if (t->removed || !t->closing.n) {
		pthread_rwlock_unlock(&t->lock);
		return 0;
	}
	g = next_to_seal(t, t->closing.ids[0], &s);
	if (!g) {	/* gone, or sealed by store_roll */
		queue_forget(&t->closing, t->closing.ids[0]);
		pthread_rwlock_unlock(&t->lock);
		return 1;
	}
	rc = sealing_take(t, s, g, &w);
	pthread_rwlock_unlock(&t->lock);
	if (!rc)
		rc = sealing_write(&w);
	if (rc)
		goto out;
	pthread_rwlock_wrlock(&t->lock);
	g = next_to_seal(t, w.id, &s);
	/* the table is for the field it was made for, and only while the
	 * segment is still to be sealed (removed, or sealed by store_roll) */
	ids = w.pairs && g && g->length == w.length &&
	      !strcmp(w.field, t->id_field);
	if (!g)
		queue_forget(&t->closing, w.id);
	else if (g->length == w.length)
		rc = seal_finish(t, s, g, w.sum, ids);
	pthread_rwlock_unlock(&t->lock);
out:
	if (w.pairs && (!ids || rc))
		ids_discard(w.dirfd, w.id);	/* not renamed into place */
	sealing_release(&w);
	return rc ? rc : 1;
}

/* ---- writeback of active segments ----
 * Each WRITEBACK_CHUNK of an active segment is handed to the kernel to
 * write as it fills, so that the seal's fdatasync finds little left to
 * write and the disk sees a steady stream rather than a burst per segment.
 * The sealer does it, not the append: starting writeback waits for room in
 * the device's queue, which a flush in progress holds (the writer of a
 * `cp` stalled 10-30 ms each time, measured). */

#define WRITEBACK_CHUNK (8u << 20)

void store_seg_grew(struct store_tenant *t, struct seg *g, size_t len)
{
	if (t->st->cfg.sync_always ||
	    (g->length + len) / WRITEBACK_CHUNK == g->length / WRITEBACK_CHUNK)
		return;
	if (!queue_push(&t->writeback, g->id))	/* a hint: none without memory */
		sealer_kick(t->st);
}

/* Starts writeback of the whole chunks of T's oldest queued segment that
 * are not yet started.  Returns 1 when one was taken off the queue, 0 when
 * none is left. */
static int writeback_next(struct store_tenant *t)
{
	uint64_t from = 0, to = 0;
	struct stream *s;
	struct seg *g;
	int fd = -1;

	pthread_rwlock_wrlock(&t->lock);
	if (t->removed || !t->writeback.n) {
		pthread_rwlock_unlock(&t->lock);
		return 0;
	}
	g = store_seg_find(t, t->writeback.ids[0], &s);
	queue_forget(&t->writeback, t->writeback.ids[0]);
	if (g && g->state == STORE_SEG_ACTIVE && !g->full) {
		from = g->wb_started;
		to = g->length / WRITEBACK_CHUNK * WRITEBACK_CHUNK;
		if (to > from && (fd = seg_fd_own(t, g)) >= 0)
			g->wb_started = to;
	}
	pthread_rwlock_unlock(&t->lock);
	if (fd >= 0) {
		sync_file_range(fd, (off_t)from, (off_t)(to - from),
				SYNC_FILE_RANGE_WRITE);
		close(fd);
	}
	return 1;
}

/* ---- restored segments ----
 * A fetched copy is checked and renamed into place, and readers use it at
 * once; the sealer flushes it afterwards, off the reader's path.  Until
 * then its index row still says evicted, so after a power cut the copy is
 * fetched again rather than trusted.
 *
 * The flush waits cfg.restore_flush_ns (30 s, when the kernel starts
 * writing dirty pages back on its own), so that a reader going through a
 * cold stream does not share the disk with a flush per segment (10% of
 * its speed, measured).  A power cut meanwhile costs a fetch, not bytes:
 * recovery removes a copy whose row says evicted. */

#define SEC_NS 1000000000ll

void store_seg_queue_restored(struct store_tenant *t, struct seg *g)
{
	g->row_evicted = true;
	g->restored_mono = store_mono_ns();
	/* restored again before its flush: it goes to the back, in time order */
	queue_forget(&t->restored, g->id);
	if (queue_push(&t->restored, g->id))
		store_log(LOG_WARNING, "%s: no memory to queue a fetched segment; it is "
			  "fetched again after a restart", t->name);
	else
		sealer_kick(t->st);
}

/* The restored segment ID of T, if its row still waits for the flush. */
static struct seg *restored_pending(struct store_tenant *t, uint64_t id)
{
	struct stream *s;
	struct seg *g = store_seg_find(t, id, &s);

	return g && g->row_evicted ? g : NULL;
}

/* Whether FD is the file named NAME in T's segment directory now: a copy
 * evicted and fetched again while we flushed it is another file. */
static bool same_file(struct store_tenant *t, int fd, const char *name)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && fstatat(t->segfd, name, &b, 0) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Records restored segment G, flushed through FD, as present: unless it
 * was replaced meanwhile (then its new copy stays queued).  Returns 1 when
 * G is done with, 0 when it is to be flushed again, or -errno. */
static int durable_record(struct store_tenant *t, struct seg *g, int fd,
			  const char *name)
{
	int rc;

	if (!g)
		return 1;	/* evicted or gone since */
	if (!same_file(t, fd, name))
		return 0;
	g->row_evicted = false;
	rc = store_index_segment_update(t, g);
	g->row_evicted = rc != 0;
	return rc ? rc : 1;
}

/* Flushes T's oldest restored segment, if it is due (FORCE: even if not),
 * then records it present.  Returns 1 when one was dealt with, 0 when none
 * is left or due (*DUE: when the next is, CLOCK_MONOTONIC), or -errno
 * (that segment then waits at the back of the queue, as if restored now). */
static int durable_next(struct store_tenant *t, bool force, int64_t *due)
{
	char name[64];
	struct seg *g;
	uint64_t id;
	int fd, dirfd, rc;

	pthread_rwlock_wrlock(&t->lock);
	if (t->removed || !t->restored.n) {
		pthread_rwlock_unlock(&t->lock);
		return 0;
	}
	id = t->restored.ids[0];
	g = restored_pending(t, id);
	if (g && !force &&
	    store_mono_ns() - g->restored_mono < t->st->cfg.restore_flush_ns) {
		*due = g->restored_mono + t->st->cfg.restore_flush_ns;
		pthread_rwlock_unlock(&t->lock);
		return 0;
	}
	/* not store_seg_fd(), which would count as a use (sync/ evicts and reads
	 * ahead by them) */
	store_seg_name(name, sizeof(name), id, ".seg");
	fd = g ? openat(t->segfd, name, O_RDONLY | O_CLOEXEC) : -1;
	if (!g || fd < 0) {
		if (g)	/* removed behind our back: its row stays evicted */
			store_log(LOG_ERR, "%s: fetched segment %s: %s", t->name, name,
				  strerror(errno));
		queue_forget(&t->restored, id);
		pthread_rwlock_unlock(&t->lock);
		return 1;
	}
	/* the directory's, of our own: T's are closed when it is removed */
	dirfd = fcntl(t->segfd, F_DUPFD_CLOEXEC, 0);
	rc = dirfd < 0 ? -errno : 0;
	pthread_rwlock_unlock(&t->lock);
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	if (!rc && fsync(dirfd) < 0)
		rc = -errno;	/* the rename */
	if (dirfd >= 0)
		close(dirfd);
	pthread_rwlock_wrlock(&t->lock);
	if (!rc)
		rc = durable_record(t, restored_pending(t, id), fd, name);
	if (rc) {
		queue_forget(&t->restored, id);
		if (rc < 0 && queue_push(&t->restored, id))
			store_log(LOG_WARNING, "%s: no memory to queue a fetched segment; "
				  "it is fetched again after a restart", t->name);
		else if (rc < 0 && (g = restored_pending(t, id)))
			g->restored_mono = store_mono_ns();
	}
	pthread_rwlock_unlock(&t->lock);
	close(fd);
	return rc ? rc : 1;
}

int store_restored_durable_now(struct store_tenant *t)
{
	int64_t due;
	int rc;

	while ((rc = durable_next(t, true, &due)) > 0)
		;
	return rc;
}

static bool stopping(struct store *st)
{
	return atomic_load_explicit(&st->seal_stop, memory_order_relaxed);
}

/* ---- rolling by age ---- */

/* How often the sealer looks at ages and at journal rows that wait: at
 * most roll_age, within [10 ms, 1 s]. */
static int64_t age_tick(const struct store *st)
{
	int64_t tick = st->cfg.roll_age_ns;

	if (tick > SEC_NS)
		return SEC_NS;
	return tick < SEC_NS / 100 ? SEC_NS / 100 : tick;
}

/* T + D, or INT64_MAX past it: roll_age may be near 292 years. */
static int64_t later(int64_t t, int64_t d)
{
	return d > INT64_MAX - t ? INT64_MAX : t + d;
}

/* Closes T's active segments that are roll_age old at NOW (realtime), for
 * the sealer to seal like full ones.  Returns when the next of them comes
 * of age; one made later comes of age later than NOW + roll_age.  T's lock
 * held for writing. */
static int64_t close_aged(struct store_tenant *t, int64_t now)
{
	int64_t age = t->st->cfg.roll_age_ns, next = later(now, age);

	STORE_ASSERT_WRLOCKED(t);
	for (size_t i = 0; i < t->nstreams; i++) {
		struct stream *s = t->streams[i];
		struct seg *g = store_seg_active(s);

		if (!g || g->full || !g->length)
			continue;
		if (now - g->created_ns < age) {
			if (later(g->created_ns, age) < next)
				next = later(g->created_ns, age);
			continue;
		}
		if (store_seg_close(t, s, g)) {
			store_log(LOG_WARNING, "%s/%s: cannot close a segment of roll age;"
				  " retrying", t->name, s->name);
			next = now;	/* at the next tick */
		}
	}
	return next;
}

/* The sealer's look at T at NOW (realtime): journal rows that waited long
 * enough go to the index (an idle writer leaves them otherwise), and
 * segments of roll age are closed, when one may be. */
static void age_pass(struct store_tenant *t, int64_t now)
{
	if (t->index_in_memory)
		return;	/* read-only: nothing to flush or close */
	pthread_rwlock_wrlock(&t->lock);
	if (!t->removed && store_journal_due(t, now) && store_journal_flush(t))
		store_log(LOG_WARNING, "%s: index flush failed; rows stay in the journal",
			  t->name);
	if (!t->removed && now >= t->roll_due)
		t->roll_due = close_aged(t, now);
	pthread_rwlock_unlock(&t->lock);
}

/* Seals T's closing segments, starts writeback of its active ones and
 * flushes its restored ones that are due.
 * Returns whether one failed; lowers *DUE (0: none yet) to when the next
 * restored one is due. */
static bool tenant_pass(struct store_tenant *t, int64_t *due)
{
	struct store *st = t->st;
	bool failed = false;
	int64_t next = 0;
	int rc;

	while ((rc = seal_next(t)) > 0 && !stopping(st))
		;
	if (rc < 0) {
		store_log(LOG_WARNING, "%s: sealing a segment failed: %s; retrying",
			  t->name, strerror(-rc));
		failed = true;
	}
	while (writeback_next(t) > 0 && !stopping(st))
		;
	while ((rc = durable_next(t, false, &next)) > 0 && !stopping(st))
		;
	if (rc < 0) {
		store_log(LOG_WARNING, "%s: flushing a fetched segment failed: %s; "
			  "retrying", t->name, strerror(-rc));
		failed = true;
	}
	if (next && (!*due || next < *due))
		*due = next;
	return failed;
}

/* One pass over the tenants with work for the sealer: every tenant once
 * an age tick is due, else those with queued work.  Tenants live until
 * store_close(), which stops this thread first.  Returns whether any seal
 * or flush failed (and is to be retried later); *DUE gets when the next
 * restored segment is to be flushed or the next age tick is due
 * (CLOCK_MONOTONIC). */
static bool seal_pass(struct store *st, int64_t *due)
{
	int64_t mono = store_mono_ns();
	bool ages = mono >= st->age_next;
	struct store_tenant **ts = NULL;
	size_t n = 0, cap = 0;
	bool failed = false;

	if (ages) {
		st->age_next = mono + age_tick(st);
		store_reserve_keep(st, false);
	}
	*due = st->age_next;
	pthread_mutex_lock(&st->lock);
	for (struct store_tenant *t = st->tenants; t; t = t->next) {
		if (!ages && !queued(&t->closing) && !queued(&t->restored) &&
		    !queued(&t->writeback))
			continue;
		if (STORE_ARRAY_RESERVE(ts, cap, n + 1, 8)) {
			failed = true;
			break;
		}
		ts[n++] = t;
	}
	pthread_mutex_unlock(&st->lock);
	for (size_t i = 0; i < n && !stopping(st); i++) {
		if (ages)
			age_pass(ts[i], store_now_ns());
		failed |= tenant_pass(ts[i], due);
	}
	free(ts);
	return failed;
}

static void *sealer_main(void *arg)
{
	struct store *st = arg;

	pthread_mutex_lock(&st->seal_lock);
	while (!st->seal_stop) {
		unsigned long kicks = st->seal_kicks;
		int64_t wake = 0, retry;
		struct timespec ts;

		pthread_mutex_unlock(&st->seal_lock);
		/* retry failed seals in a second (a failed flush waits its
		 * delay again, in WAKE) */
		if (seal_pass(st, &wake)) {
			retry = store_mono_ns() + SEC_NS;
			if (!wake || wake > retry)
				wake = retry;
		}
		pthread_mutex_lock(&st->seal_lock);
		if (st->seal_stop || kicks != st->seal_kicks)
			continue;
		if (!wake) {
			pthread_cond_wait(&st->seal_cond, &st->seal_lock);
			continue;
		}
		ts = store_ts(wake);
		pthread_cond_timedwait(&st->seal_cond, &st->seal_lock, &ts);
	}
	pthread_mutex_unlock(&st->seal_lock);
	return NULL;
}

int store_sealer_start(struct store *st)
{
	int rc = pthread_create(&st->sealer, NULL, sealer_main, st);

	if (rc)
		return -rc;
	st->sealer_running = true;
	return 0;
}

void store_sealer_stop(struct store *st)
{
	if (!st->sealer_running)
		return;
	pthread_mutex_lock(&st->seal_lock);
	atomic_store_explicit(&st->seal_stop, true, memory_order_relaxed);
	pthread_cond_signal(&st->seal_cond);
	pthread_mutex_unlock(&st->seal_lock);
	pthread_join(st->sealer, NULL);
	st->sealer_running = false;
}

/* ---- rolling ---- */

/* Seals S's unsealed segments in order: the closing ones, and the active
 * one when SEAL_ACTIVE.  Returns how many, or -errno. */
static int seal_stream(struct store_tenant *t, struct stream *s,
		       bool seal_active)
{
	int sealed = 0;

	for (size_t i = store_seg_first_unsealed(s); i < s->nsegs; i++) {
		struct seg *g = s->segs[i];
		int rc;

		if (!store_seg_closing(s, g) && (!seal_active || !g->length))
			break;
		rc = seg_seal(t, s, g);
		if (rc)
			return rc;
		sealed++;
	}
	return sealed;
}

int store_roll(struct store_tenant *t, int64_t now_ns, bool force)
{
	int64_t age = t->st->cfg.roll_age_ns;
	int sealed = 0, rc = 0;

	pthread_rwlock_wrlock(&t->lock);
	/* the roller's tick also bounds how long rows wait in the journal */
	if (!t->removed && store_journal_due(t, now_ns))
		rc = store_journal_flush(t);
	for (size_t i = 0; !t->removed && i < t->nstreams && !rc; i++) {
		struct stream *s = t->streams[i];
		struct seg *g = store_seg_active(s);
		bool old = g && (force || now_ns - g->created_ns >= age);
		int n;

		/* Closing segments are the sealer's: sealing one here holds
		 * the lock through its flush (a writer waited 145 ms).  Only
		 * a forced roll, or an old segment behind them (a stream is
		 * sealed in order), seals them on this thread. */
		if (!old && !(force && t->closing.n))
			continue;
		n = seal_stream(t, s, old);
		if (n < 0)
			rc = n;
		else
			sealed += n;
	}
	pthread_rwlock_unlock(&t->lock);
	return rc ? rc : sealed;
}

int store_roll_stream(struct store_tenant *t, uint64_t id)
{
	struct stream *s;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	rc = s ? seal_stream(t, s, true) : -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_seal_closing_now(struct store_tenant *t)
{
	int rc = 0;

	pthread_rwlock_wrlock(&t->lock);
	for (size_t i = 0; !t->removed && t->closing.n && i < t->nstreams &&
			   rc >= 0; i++)
		rc = seal_stream(t, t->streams[i], false);
	pthread_rwlock_unlock(&t->lock);
	return rc < 0 ? rc : 0;
}
