/*
 * Segment files: one chain per stream, the last one active (appended to),
 * the others sealed (immutable, checksummed).  Reading a stream offset walks
 * the chain.  Sealed segments are what sync/ uploads, evicts and restores.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"


void store_seg_name(char *buf, size_t len, uint64_t id, const char *ext)
{
	snprintf(buf, len, "%016" PRIx64 "%s", id, ext);
}

/* ---- the open-file cache ----
 * 100,000 streams must not mean 100,000 open files: files are opened on
 * demand and the least recently used idle ones are closed once the store
 * holds more than its budget.  References keep a file open while a reader
 * (under the shared lock) or the appender uses it. */

static void lru_unlink(struct store_tenant *t, struct seg *g)
{
	if (g->lru_prev)
		g->lru_prev->lru_next = g->lru_next;
	else if (t->lru_head == g)
		t->lru_head = g->lru_next;
	if (g->lru_next)
		g->lru_next->lru_prev = g->lru_prev;
	else if (t->lru_tail == g)
		t->lru_tail = g->lru_prev;
	g->lru_prev = g->lru_next = NULL;
}

static void lru_push(struct store_tenant *t, struct seg *g)
{
	g->lru_next = t->lru_head;
	if (t->lru_head)
		t->lru_head->lru_prev = g;
	t->lru_head = g;
	if (!t->lru_tail)
		t->lru_tail = g;
}

static void unmap_window(struct store_tenant *t, struct seg *g);

/* A segment's batch rows, which checked reads load (read.c). */
static void rows_free(struct seg *g)
{
	struct seg_rows *r = atomic_exchange(&g->rows, NULL);

	if (r)
		free(r->v);
	free(r);
}

void store_seg_rows_grew(struct store_tenant *t, struct seg *g,
			 uint64_t start, uint64_t hash)
{
	struct seg_rows *r = atomic_load(&g->rows);

	STORE_ASSERT_WRLOCKED(t);
	if (!r)
		return;
	if (STORE_ARRAY_RESERVE(r->v, r->cap, r->n + 1, 64)) {
		pthread_mutex_lock(&t->fd_lock);
		rows_free(g);	/* the next read loads them anew */
		pthread_mutex_unlock(&t->fd_lock);
		return;
	}
	r->v[r->n++] = (struct seg_row){ .start = start, .hash = hash };
}

static void close_locked(struct store_tenant *t, struct seg *g)
{
	if (g->fd < 0)
		return;
	unmap_window(t, g);
	rows_free(g);
	close(g->fd);
	g->fd = -1;
	lru_unlink(t, g);
	atomic_fetch_sub_explicit(&t->st->open_fds, 1, memory_order_relaxed);
}

/* Closes idle files from the cold end while over budget. fd_lock held. */
static void trim_locked(struct store_tenant *t)
{
	struct seg *g = t->lru_tail;

	STORE_ASSERT_MUTEX(&t->fd_lock);
	while (g && atomic_load_explicit(&t->st->open_fds, memory_order_relaxed) >
			    t->st->fd_budget) {
		struct seg *prev = g->lru_prev;

		if (!g->fd_refs)
			close_locked(t, g);
		g = prev;
	}
}

static void hold_locked(struct store_tenant *t, struct seg *g)
{
	atomic_store_explicit(&g->used_ns, store_now_ns(), memory_order_relaxed);
	g->fd_refs++;
	lru_unlink(t, g);
	lru_push(t, g);
	trim_locked(t);
}

/* The evicted segment this thread last needed (see store_seg_fetch_wanted), and
 * the restored one its read used first (see store_seg_reached_tell). */
static __thread uint64_t wanted_seg;
static __thread bool wanted_ids;	/* ... its event-ID table, not bytes */
static __thread struct {
	struct store_tenant *t;	/* NULL: none since the last tell */
	uint64_t seg;
} first_read;

int store_seg_fd(struct store_tenant *t, struct seg *g)
{
	char name[64];
	int fd;

	pthread_mutex_lock(&t->fd_lock);
	if (g->fd < 0) {
		if (g->state == STORE_SEG_EVICTED) {
			pthread_mutex_unlock(&t->fd_lock);
			wanted_seg = g->id;
			wanted_ids = false;	/* its bytes */
			return -ENODATA;
		}
		store_seg_name(name, sizeof(name), g->id, ".seg");
		fd = openat(t->segfd, name, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			int err = errno;

			pthread_mutex_unlock(&t->fd_lock);
			store_log(LOG_ERR, "segment %s of tenant %s: %s", name, t->name,
				  strerror(err));
			return err == ENOENT ? -EIO : -err;
		}
		g->fd = fd;
		atomic_fetch_add_explicit(&t->st->open_fds, 1, memory_order_relaxed);
	}
	hold_locked(t, g);
	fd = g->fd;
	pthread_mutex_unlock(&t->fd_lock);
	return fd;
}

int store_seg_fd_read(struct store_tenant *t, struct seg *g)
{
	int fd = store_seg_fd(t, g);

	if (fd >= 0 && atomic_load_explicit(&g->unread, memory_order_relaxed) &&
	    atomic_exchange_explicit(&g->unread, false, memory_order_relaxed)) {
		first_read.t = t;
		first_read.seg = g->id;
	}
	return fd;
}

/* Every thread that opens, closes or holds a segment's file holds its
 * tenant's lock, shared or exclusive (or owns a tenant not yet shared, in
 * recovery); fd_lock only orders the readers that share it.  So the
 * appender, which holds it exclusive, may take the file of its active
 * segment without fd_lock while the file is open and first in the LRU
 * (as it is after the last append): a reference and the time of use.
 * That was a tenth of the daemon's own work for one event per write(2),
 * with a clock read for the time. */
int store_seg_fd_append(struct store_tenant *t, struct seg *g, int64_t now)
{
	STORE_ASSERT_WRLOCKED(t);
	if (g->fd < 0 || t->lru_head != g)
		return store_seg_fd(t, g);
	g->fd_refs++;
	atomic_store_explicit(&g->used_ns, now, memory_order_relaxed);
	return g->fd;
}

void store_seg_fd_append_put(struct store_tenant *t, struct seg *g)
{
	STORE_ASSERT_WRLOCKED(t);
	g->fd_refs--;
}

void store_seg_fd_put(struct store_tenant *t, struct seg *g)
{
	pthread_mutex_lock(&t->fd_lock);
	g->fd_refs--;
	pthread_mutex_unlock(&t->fd_lock);
}

void store_seg_fd_adopt(struct store_tenant *t, struct seg *g, int fd)
{
	pthread_mutex_lock(&t->fd_lock);
	g->fd = fd;
	atomic_fetch_add_explicit(&t->st->open_fds, 1, memory_order_relaxed);
	hold_locked(t, g);
	pthread_mutex_unlock(&t->fd_lock);
}

void store_seg_fd_close(struct store_tenant *t, struct seg *g)
{
	pthread_mutex_lock(&t->fd_lock);
	close_locked(t, g);
	pthread_mutex_unlock(&t->fd_lock);
}

/* ---- small appends through a mapped window ----
 * With one event per write(2), the pwrite(2) that stores it was the
 * largest part of the daemon's own work.  A segment that keeps taking
 * small appends gets a shared mapping of SEG_WINDOW bytes of its file from
 * the page its end is in, and appends copy into it.  The bytes land in the
 * page cache as with a write(2): a crash of the daemon loses nothing, and
 * fdatasync(2) and the readers' pread(2) see them the same.
 * The window's blocks are allocated (fallocate(2)) before it is mapped, so
 * a full disk is an error here, never a SIGBUS on a store, as for the
 * journal.  The file then runs past the segment's bytes, in zeros, until
 * store_seg_trim() cuts it: when the segment closes or the store does, or in
 * recovery after a crash.
 * A segment that is fsync(2)ed, and every one under sync=always, takes
 * its appends with pwrite(2): each flush write-protects the mapped page
 * again and the next copy faults, which costs more than the pwrite it
 * saves next to a flush.
 * A window is made only for a segment that took SEG_HOT small appends
 * since it last had one, and a store maps at most SEG_MAPS of them: the
 * pages a window has touched count in the daemon's RSS, and 100,000
 * streams of one event each must not mean 100,000 mappings.  It is used
 * by the appender alone, under the tenant's lock and holding the file, and
 * goes with the file (close_locked). */
#define SEG_WINDOW (256u << 10)
#define SEG_SMALL (16u << 10)	/* larger appends: a pwrite(2) costs little */
#define SEG_HOT 16
#define SEG_MAPS 64

static void unmap_window(struct store_tenant *t, struct seg *g)
{
	if (!g->map)
		return;
	munmap(g->map, SEG_WINDOW);
	g->map = NULL;
	g->small_writes = 0;
	atomic_fetch_sub_explicit(&t->st->seg_maps, 1, memory_order_relaxed);
}

/* Maps the window of G's file (FD) that starts at the page of OFF. */
static int map_window(struct store_tenant *t, struct seg *g, int fd,
		      uint64_t off)
{
	uint64_t start = off - off % (uint64_t)sysconf(_SC_PAGESIZE);
	void *map;

	if (g->map)
		munmap(g->map, SEG_WINDOW);	/* moved on: the count stays */
	else if (atomic_fetch_add_explicit(&t->st->seg_maps, 1,
					   memory_order_relaxed) >= SEG_MAPS) {
		atomic_fetch_sub_explicit(&t->st->seg_maps, 1, memory_order_relaxed);
		return -EBUSY;
	}
	g->map = NULL;
	g->extended = true;	/* even a failed fallocate may have grown it */
	if (fallocate(fd, 0, (off_t)start, SEG_WINDOW) < 0) {
		int err = errno;

		atomic_fetch_sub_explicit(&t->st->seg_maps, 1, memory_order_relaxed);
		return -err;
	}
	map = mmap(NULL, SEG_WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   (off_t)start);
	if (map == MAP_FAILED) {
		atomic_fetch_sub_explicit(&t->st->seg_maps, 1, memory_order_relaxed);
		return -errno;
	}
	g->map = map;
	g->map_off = start;
	return 0;
}

/* Whether an append of LEN bytes at OFF goes into G's window, moving the
 * window or making one when G has earned it. */
static bool window_takes(struct store_tenant *t, struct seg *g, int fd,
			 uint64_t off, size_t len)
{
	if (g->fsynced || t->st->cfg.sync_always)
		return false;
	if (g->map && off >= g->map_off &&
	    off + len <= g->map_off + SEG_WINDOW)
		return true;
	if (len > SEG_SMALL)
		return false;
	if (!g->map && g->small_writes < SEG_HOT) {
		g->small_writes++;
		return false;
	}
	if (map_window(t, g, fd, off)) {
		g->small_writes = 0;	/* try again SEG_HOT appends later */
		return false;
	}
	return off + len <= g->map_off + SEG_WINDOW;
}

int store_seg_write(struct store_tenant *t, struct seg *g, int fd, const void *p,
		    size_t len, uint64_t off)
{
	STORE_ASSERT_WRLOCKED(t);
	if (!window_takes(t, g, fd, off, len))
		return store_pwrite_all(fd, p, len, off);
	memcpy(g->map + (off - g->map_off), p, len);
	return 0;
}

int store_seg_trim(struct store_tenant *t, struct seg *g)
{
	struct stat sb;
	int fd, rc = 0;

	STORE_ASSERT_WRLOCKED(t);
	if (!g->extended)
		return 0;
	fd = store_seg_fd(t, g);
	if (fd < 0)
		return fd;
	unmap_window(t, g);
	if (fstat(fd, &sb) < 0)
		rc = -errno;
	else if ((uint64_t)sb.st_size > g->length &&
		 ftruncate(fd, (off_t)g->length) < 0)
		rc = -errno;
	if (!rc)
		g->extended = false;
	store_seg_fd_put(t, g);
	return rc;
}

int store_seg_trim_tenant(struct store_tenant *t)
{
	int rc = 0;

	pthread_rwlock_wrlock(&t->lock);
	for (size_t i = 0; !t->removed && i < t->nstreams; i++) {
		struct seg *g = store_seg_active(t->streams[i]);
		int err = g ? store_seg_trim(t, g) : 0;

		if (!rc)
			rc = err;	/* the first; the others are still cut */
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* ---- segments by id ---- */

static struct seg **id_bucket(struct store_tenant *t, uint64_t id)
{
	return &t->seg_ids[(id * 0x9E3779B97F4A7C15ull >> 20) & t->segmask];
}

static int ids_grow(struct store_tenant *t)
{
	size_t n = t->seg_ids ? (t->segmask + 1) * 2 : 256;
	struct seg **old = t->seg_ids, *g, *next;
	size_t oldn = old ? t->segmask + 1 : 0;

	t->seg_ids = calloc(n, sizeof(*t->seg_ids));
	if (!t->seg_ids) {
		t->seg_ids = old;
		return -ENOMEM;
	}
	t->segmask = n - 1;
	for (size_t i = 0; i < oldn; i++) {
		for (g = old[i]; g; g = next) {
			struct seg **b = id_bucket(t, g->id);

			next = g->id_next;
			g->id_next = *b;
			*b = g;
		}
	}
	free(old);
	return 0;
}

struct seg *store_seg_find(struct store_tenant *t, uint64_t seg, struct stream **sp)
{
	struct seg *g = t->seg_ids && !t->removed ? *id_bucket(t, seg) : NULL;

	STORE_ASSERT_LOCKED(t);
	while (g && g->id != seg)
		g = g->id_next;
	if (g)
		*sp = g->stream;
	return g;
}

static void id_unlink(struct store_tenant *t, struct seg *g)
{
	struct seg **pp;

	if (!t->seg_ids)
		return;
	for (pp = id_bucket(t, g->id); *pp; pp = &(*pp)->id_next) {
		if (*pp == g) {
			*pp = g->id_next;
			t->nsegs--;
			return;
		}
	}
}

struct seg *store_seg_pop(struct store_tenant *t, struct stream *s)
{
	struct seg *g = s->segs[--s->nsegs];

	id_unlink(t, g);
	return g;
}

void store_seg_free(struct store_tenant *t, struct seg *g)
{
	if (!g)
		return;
	id_unlink(t, g);
	store_seg_fd_close(t, g);
	store_idtable_release(&g->ids);
	store_seg_hash_release(g);
	free(g);
}

int store_seg_push(struct store_tenant *t, struct stream *s, struct seg *g)
{
	struct seg **b;

	if (t->nsegs + 1 > t->segmask + 1 || !t->seg_ids) {
		int rc = ids_grow(t);

		if (rc)
			return rc;
	}
	if (STORE_ARRAY_RESERVE(s->segs, s->segcap, s->nsegs + 1, 4))
		return -ENOMEM;
	s->segs[s->nsegs++] = g;
	g->stream = s;
	b = id_bucket(t, g->id);
	g->id_next = *b;
	*b = g;
	t->nsegs++;
	return 0;
}

size_t store_seg_first_unsealed(const struct stream *s)
{
	size_t i = s->nsegs;

	while (i > 0 && s->segs[i - 1]->state == STORE_SEG_ACTIVE)
		i--;
	return i;
}

bool store_seg_closing(const struct stream *s, const struct seg *g)
{
	return g->state == STORE_SEG_ACTIVE &&
	       (g->full || g != s->segs[s->nsegs - 1]);
}

/* A replica's segment that came in tail pieces has an origin and no
 * checksum until its sealed segment gives one (replica.c). */
bool store_seg_is_tail(const struct seg *g)
{
	return g->origin && !g->checksum && g->state == STORE_SEG_UPLOADED;
}

struct seg *store_seg_active(struct stream *s)
{
	struct seg *g = s->nsegs ? s->segs[s->nsegs - 1] : NULL;

	return g && g->state == STORE_SEG_ACTIVE ? g : NULL;
}

struct seg *store_seg_at(struct stream *s, uint64_t off)
{
	size_t lo = 0, hi = s->nsegs;

	/* last segment whose offset <= off */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->segs[mid]->offset <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? s->segs[lo - 1] : NULL;
}

ssize_t store_seg_read_by(struct store_tenant *t, struct stream *s, void *buf,
			  size_t len, uint64_t off, store_seg_reader check,
			  void *arg)
{
	char *p = buf;
	size_t done = 0;

	while (done < len) {
		struct seg *g = store_seg_at(s, off + done);
		uint64_t in = off + done - (g ? g->offset : 0);
		size_t want;
		ssize_t n;
		int fd;

		if (!g || in >= g->length)
			break;
		want = len - done;
		if (want > g->length - in)
			want = (size_t)(g->length - in);
		fd = store_seg_fd_read(t, g);
		if (fd < 0)
			return done ? (ssize_t)done : fd;
		if (check)
			n = check(arg, t, g, fd, p + done, want, in);
		else if ((n = pread(fd, p + done, want, (off_t)in)) < 0)
			n = -errno;
		store_seg_fd_put(t, g);
		if (n == -EINTR)
			continue;
		if (n == -EBADMSG)	/* damage: CHECK's caller says it */
			return done ? (ssize_t)done : -EBADMSG;
		if (n <= 0) {
			int err = n < 0 ? (int)-n : EIO;

			store_log(LOG_ERR, "read of segment %016" PRIx64 " of %s: %s",
				  g->id, t->name, n < 0 ? strerror(err) : "short file");
			return done ? (ssize_t)done : -err;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t store_seg_read(struct store_tenant *t, struct stream *s, void *buf,
		       size_t len, uint64_t off)
{
	return store_seg_read_by(t, s, buf, len, off, NULL, NULL);
}

/* The running hash of a segment fsynced through a durable mark (mark.c). */
void store_seg_hash_release(struct seg *g)
{
	if (g->running)
		XXH3_freeState(g->running);
	g->running = NULL;
}

void store_seg_hash_update(struct seg *g, const void *p, size_t len)
{
	if (g->running)
		XXH3_64bits_update(g->running, p, len);
}

/* Starts G's running hash from the bytes it holds. */
void store_seg_fill(const struct stream *s, const struct seg *g,
		    struct store_segment *out)
{
	out->seg = g->id;
	out->stream = s->id;
	out->first_version = g->first_version;
	out->count = g->count;
	out->offset = g->offset;
	out->length = g->length;
	out->checksum = g->checksum;
	out->created_ns = g->created_ns;
	out->used_ns = atomic_load_explicit(&g->used_ns, memory_order_relaxed);
	out->origin = g->origin;
	out->state = g->state;
	out->tail = store_seg_is_tail(g);
	out->has_ids = g->has_ids;
}

/* The hook and its argument change together under st->lock, and a change
 * returns only when no reader is still inside the old hook: sync/ clears
 * it at stop and then frees what ARG points to. */
void store_set_fetch_hook(struct store *st, store_fetch_fn fn,
			  store_reached_fn reached, void *arg)
{
	pthread_mutex_lock(&st->lock);
	st->fetch_fn = fn;
	st->reached_fn = reached;
	st->fetch_arg = arg;
	while (st->fetch_users)
		pthread_cond_wait(&st->fetch_idle, &st->lock);
	pthread_mutex_unlock(&st->lock);
}

/* SEG of T, for the fetch hook: 1 when it is not evicted (any more). */
static int hook_segment(struct store_tenant *t, uint64_t seg,
			struct store_segment *info)
{
	struct stream *s;
	struct seg *g;

	pthread_rwlock_rdlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (g)
		store_seg_fill(s, g, info);
	pthread_rwlock_unlock(&t->lock);
	if (!g)
		return -ENOENT;
	return info->state != STORE_SEG_EVICTED;
}

/* Enters the fetch hook (false when there is none): store_set_fetch_hook()
 * waits for hook_leave(). */
static bool hook_enter(struct store *st, store_fetch_fn *fn,
		       store_reached_fn *reached, void **arg)
{
	pthread_mutex_lock(&st->lock);
	*fn = st->fetch_fn;
	*reached = st->reached_fn;
	*arg = st->fetch_arg;
	st->fetch_users += *fn != NULL;
	pthread_mutex_unlock(&st->lock);
	return *fn != NULL;
}

bool store_seg_can_fetch(struct store *st)
{
	bool can;

	pthread_mutex_lock(&st->lock);
	can = st->fetch_fn != NULL;
	pthread_mutex_unlock(&st->lock);
	return can;
}

static void hook_leave(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	if (!--st->fetch_users)
		pthread_cond_broadcast(&st->fetch_idle);
	pthread_mutex_unlock(&st->lock);
}

/* One line naming what a read of T wanted (SEG) and why it gets -EIO. */
static void wanted_log(struct store_tenant *t, uint64_t seg, const char *why)
{
	struct stream *s = NULL;
	char *stream;

	pthread_rwlock_rdlock(&t->lock);
	(void)store_seg_find(t, seg, &s);
	stream = s && s->name ? strdup(s->name) : NULL;
	pthread_rwlock_unlock(&t->lock);
	store_log(LOG_ERR, "%s/%s: segment %016" PRIx64 " is evicted and %s: "
		  "the read or append gets EIO", t->name, stream ? stream : "?",
		  seg, why);
	free(stream);
}

void store_set_ids_fetch_hook(struct store *st, store_ids_fetch_fn fn,
			      void *arg)
{
	pthread_mutex_lock(&st->lock);
	st->ids_fetch_fn = fn;
	st->ids_fetch_arg = arg;
	atomic_store(&st->ids_fetch_set, fn != NULL);
	while (st->fetch_users)
		pthread_cond_wait(&st->fetch_idle, &st->lock);
	pthread_mutex_unlock(&st->lock);
}

int store_seg_want_ids(struct store_tenant *t, uint64_t seg)
{
	/* No store->lock here: the caller holds T's. */
	if (!atomic_load(&t->st->ids_fetch_set))
		return 0;
	wanted_seg = seg;
	wanted_ids = true;
	return -ENODATA;
}

/* The ID fetch hook for SEG of T (store_seg_want_ids()); whatever it
 * answers, SEG is not asked again: dedup reads its bytes if it brought no
 * table. */
static int fetch_ids(struct store_tenant *t, uint64_t seg)
{
	struct store *st = t->st;
	struct store_segment info;
	store_ids_fetch_fn fn;
	struct stream *s;
	struct seg *g;
	void *arg;
	int rc = hook_segment(t, seg, &info);

	if (rc < 0)
		return rc == -ENOENT ? 0 : rc;	/* gone: the append sees */
	pthread_mutex_lock(&st->lock);
	fn = st->ids_fetch_fn;
	arg = st->ids_fetch_arg;
	st->fetch_users += fn != NULL;
	pthread_mutex_unlock(&st->lock);
	if (fn) {
		(void)fn(arg, t, &info);
		pthread_mutex_lock(&st->lock);
		if (!--st->fetch_users)
			pthread_cond_broadcast(&st->fetch_idle);
		pthread_mutex_unlock(&st->lock);
	}
	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (g)
		g->ids_asked = true;
	pthread_rwlock_unlock(&t->lock);
	return 0;
}

int store_seg_fetch_wanted(struct store_tenant *t, struct fetch_tries *tries)
{
	uint64_t seg = wanted_seg;
	struct store_segment info;
	store_reached_fn reached;
	store_fetch_fn fn;
	void *arg;
	int rc;

	if (wanted_ids) {
		wanted_ids = false;
		return fetch_ids(t, seg);
	}

	if (!tries->n || tries->seg != seg)
		*tries = (struct fetch_tries){ .seg = seg };
	if (tries->n == FETCH_TRIES) {
		char why[64];

		snprintf(why, sizeof(why), "still wanted after %u fetches of it",
			 tries->n);
		wanted_log(t, seg, why);
		return -EIO;
	}
	tries->n++;
	rc = hook_segment(t, seg, &info);
	if (rc)
		return rc > 0 ? 0 : rc;	/* >0: another reader brought it back */
	if (!hook_enter(t->st, &fn, &reached, &arg)) {
		wanted_log(t, seg, "nothing can fetch it");
		return -EIO;
	}
	rc = fn(arg, t, &info);
	hook_leave(t->st);
	if (rc == -EIO)
		wanted_log(t, seg, "its fetch failed");
	else if (rc)
		wanted_log(t, seg, strerror(-rc));
	return rc;
}

void store_seg_reached_tell(struct store_tenant *t)
{
	struct store_segment info;
	store_reached_fn reached;
	store_fetch_fn fn;
	void *arg;

	if (first_read.t != t)
		return;
	first_read.t = NULL;
	if (hook_segment(t, first_read.seg, &info) <= 0)
		return;		/* gone, or evicted again already */
	if (!hook_enter(t->st, &fn, &reached, &arg))
		return;
	if (reached)
		reached(arg, t, &info);
	hook_leave(t->st);
}
