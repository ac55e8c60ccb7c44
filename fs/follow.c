/*
 * Commit notifications: parked follow reads and page-cache invalidation.
 *
 * The store calls fs_commit_hook() in the committing thread after every
 * commit.  The hook only moves work onto two queues:
 *  - the wake thread answers follow reads parked on the stream (no FUSE
 *    thread waits for data: a parked read is just a struct fs_wait);
 *  - the invalidation thread tells the kernel to drop the stream's pages
 *    from the old end on (the last partial page was cached short) and its
 *    attributes.  A FUSE handler must not do that itself: the kernel may
 *    hold the very page locks the invalidation needs.  Handlers that
 *    committed wait for their invalidation before replying, so a reader
 *    never sees stale bytes once write(2) has returned.
 *
 * It also keeps the per-thread buffers that reads are answered from, here
 * and in file.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_int.h"

/* Sequence number of the last invalidation this thread's commits queued. */
static __thread uint64_t inval_mine;
/* The node this thread is writing to (fs_commit_node_set). */
static __thread struct fs_node *commit_node;

/* ---- invalidation ---- */

static void inval_queue(struct fs *fs, struct fs_node *n, uint64_t off)
{
	struct fs_inval *iv = calloc(1, sizeof(*iv));
	uint64_t seq;

	if (!iv) {
		fs_node_unref(fs, n);
		return;
	}
	iv->node = n;	/* takes the caller's ref */
	iv->off = off;
	fs_mutex_lock(&fs->inval_lock);
	if (fs->inval_stop) {
		/* Stopped (unmount): nothing is cached any more. */
		fs_mutex_unlock(&fs->inval_lock);
		fs_node_unref(fs, n);
		free(iv);
		return;
	}
	iv->seq = seq = ++fs->inval_seq;
	if (fs->inval_tail)
		fs->inval_tail->next = iv;
	else
		fs->inval_head = iv;
	fs->inval_tail = iv;
	pthread_cond_signal(&fs->inval_cond);
	fs_mutex_unlock(&fs->inval_lock);
	inval_mine = seq;	/* IV belongs to the invalidation thread now */
}

static void *inval_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_inval *iv;
	bool stop;

	fs_mutex_lock(&fs->inval_lock);
	for (;;) {
		while (!fs->inval_head && !fs->inval_stop)
			fs_cond_wait(&fs->inval_cond, &fs->inval_lock);
		iv = fs->inval_head;
		if (!iv)
			break;
		fs->inval_head = iv->next;
		if (!fs->inval_head)
			fs->inval_tail = NULL;
		stop = fs->inval_stop;
		fs_mutex_unlock(&fs->inval_lock);

		/* -ENOENT: the kernel no longer caches this inode.  This may
		 * block on a page lock until a reader's pending read is
		 * answered: no handler may depend on it finishing. */
		if (!stop)
			(void)fuse_lowlevel_notify_inval_inode(
				fs->se, fs_ino_of(iv->node), (off_t)iv->off, 0);
		fs_node_unref(fs, iv->node);

		fs_mutex_lock(&fs->inval_lock);
		fs->inval_done = iv->seq;
		free(iv);
		pthread_cond_broadcast(&fs->inval_done_cond);
	}
	fs_mutex_unlock(&fs->inval_lock);
	return NULL;
}

/* How long a handler waits for its invalidation before replying anyway. */
#define INVAL_WAIT_NS (20 * 1000000ll)

/* The invalidation may wait in the kernel for a page lock held by a read
 * that needs a worker thread to be answered, so the wait is bounded, is
 * skipped in single-threaded mode and when the other workers are already
 * waiting (docs/CACHING.md: what readers may then see). */
void fs_inval_wait(struct fs *fs)
{
	uint64_t seq = inval_mine;
	struct timespec ts;

	if (!seq)
		return;
	inval_mine = 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += INVAL_WAIT_NS;
	ts.tv_sec += ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	fs_mutex_lock(&fs->inval_lock);
	if (fs->inval_waiters < fs->inval_max_waiters) {
		fs->inval_waiters++;
		while (fs->inval_done < seq && !fs->inval_stop)
			if (fs_cond_timedwait(&fs->inval_done_cond,
						   &fs->inval_lock, &ts))
				break;	/* ETIMEDOUT: reply anyway */
		fs->inval_waiters--;
	}
	fs_mutex_unlock(&fs->inval_lock);
}

/* ---- per-thread read buffers (for file.c's reads too) ---- */

struct rbuf {
	size_t cap;
	char data[];
};

static pthread_key_t rbuf_key;

static void rbuf_free(void *p)
{
	free(p);
}

int fs_buffers_init(void)
{
	return -pthread_key_create(&rbuf_key, rbuf_free);
}

/* A fresh 128 KiB+ malloc per reply goes through mmap/munmap and costs far
 * more than the copy, so each thread keeps one buffer for its replies. */
void *fs_read_buffer(size_t len)
{
	struct rbuf *b = pthread_getspecific(rbuf_key);

	if (b && b->cap >= len)
		return b->data;
	free(b);
	pthread_setspecific(rbuf_key, NULL);
	b = malloc(sizeof(*b) + len);
	if (!b)
		return NULL;
	b->cap = len;
	pthread_setspecific(rbuf_key, b);
	return b->data;
}

/* ---- parked reads ---- */

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Called with fs->park_lock held. */
static void wait_link(struct fs *fs, struct fs_node *n, struct fs_wait *w)
{
	fs_assert_held(&fs->park_lock);
	w->prev = NULL;
	w->next = n->parked;
	if (n->parked)
		n->parked->prev = w;
	n->parked = w;
	w->parked_ns = mono_ns();
	w->anext = NULL;
	w->aprev = fs->parked_newest;
	if (fs->parked_newest)
		fs->parked_newest->anext = w;
	else
		fs->parked_oldest = w;
	fs->parked_newest = w;
	fs->parked_count++;
}

/* Called with fs->park_lock held. */
static void wait_unlink(struct fs *fs, struct fs_node *n, struct fs_wait *w)
{
	fs_assert_held(&fs->park_lock);
	if (w->prev)
		w->prev->next = w->next;
	else
		n->parked = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->next = w->prev = NULL;
	if (w->aprev)
		w->aprev->anext = w->anext;
	else
		fs->parked_oldest = w->anext;
	if (w->anext)
		w->anext->aprev = w->aprev;
	else
		fs->parked_newest = w->aprev;
	w->anext = w->aprev = NULL;
	fs->parked_count--;
}

/* libfuse calls this when the kernel interrupts W's request (Ctrl-C). */
static void on_interrupt(fuse_req_t req, void *data)
{
	struct fs_wait *w = data;
	struct fs *fs = fuse_req_userdata(req);
	bool mine = false;

	fs_mutex_lock(&fs->park_lock);
	if (w->state == WAIT_PARKED) {
		wait_unlink(fs, w->fh->stream, w);
		w->state = WAIT_DONE;
		mine = true;
	} else if (w->state == WAIT_NEW) {
		w->state = WAIT_INTERRUPTED;
	}
	fs_mutex_unlock(&fs->park_lock);
	if (mine) {
		fuse_reply_err(req, EINTR);
		free(w);
	}
}

/* Whether the thread that made REQ has a signal pending that it does not
 * block, one that ends its wait for the reply (the kernel shows a fatal
 * one as SIGKILL in SigPnd).  False when that cannot be told. */
static bool reader_signalled(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	unsigned long long pending = 0, blocked = 0, v;
	char path[32], line[256];
	FILE *f;

	if (ctx->pid <= 0)
		return false;	/* not in the daemon's pid namespace */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "SigPnd: %llx", &v) == 1 ||
		    sscanf(line, "ShdPnd: %llx", &v) == 1)
			pending |= v;
		else if (sscanf(line, "SigBlk: %llx", &v) == 1)
			blocked = v;
	}
	fclose(f);
	return (pending & ~blocked) != 0;
}

enum park_result { PARK_OWNED, PARK_RETRY };

/* Parks W unless data came meanwhile (PARK_RETRY, W still the caller's). */
static enum park_result park(struct fs *fs, struct fs_wait *w, bool check)
{
	struct fs_node *n = w->fh->stream;
	uint64_t base = atomic_load(&w->fh->base);
	/* A pending base is tried again after any commit it did not see. */
	uint64_t want = base == FS_BASE_PENDING ? w->seen
						: fs_file_stream_off(w->fh, base, w->off);
	int answer = -1;
	/* Over io_uring, Linux (6.18 still) sends no FUSE_INTERRUPT for a
	 * signal that comes between a request's hand-over to a ring entry and
	 * its marking as sent, which the ring thread does before it sees the
	 * request (a /dev/fuse read checks for such a signal, the ring does
	 * not).  libfuse may lose one too: it answers EAGAIN to an interrupt
	 * it reads before the request, when another request comes first, and
	 * that answer goes to /dev/fuse, which knows no ring request.
	 * The read would stay parked, and after a fatal signal (Ctrl-C of cat)
	 * its reader would wait for it uninterruptibly.  Such a signal is still
	 * pending here; one that comes later reaches on_interrupt(). */
	bool signalled = fs->ring && reader_signalled(w->req);

	w->state = WAIT_NEW;
	fuse_req_interrupt_func(w->req, on_interrupt, w);
	fs_mutex_lock(&fs->park_lock);
	if (w->state == WAIT_INTERRUPTED || signalled) {
		answer = EINTR;
	} else if (fs->stopping || n->removed) {
		answer = 0;	/* nothing would ever wake it */
	} else if (check && n->size_seen > want) {
		fs_mutex_unlock(&fs->park_lock);
		fuse_req_interrupt_func(w->req, NULL, NULL);
		return PARK_RETRY;
	} else {
		w->state = WAIT_PARKED;
		wait_link(fs, n, w);
		if (fs->park_max_ns && w == fs->parked_oldest)
			pthread_cond_signal(&fs->wake_cond);	/* arm the timer */
	}
	fs_mutex_unlock(&fs->park_lock);
	if (answer >= 0) {
		fuse_req_interrupt_func(w->req, NULL, NULL);
		if (answer)
			fuse_reply_err(w->req, answer);
		else
			fuse_reply_buf(w->req, NULL, 0);
		free(w);
	}
	return PARK_OWNED;
}

void fs_wait_answer(struct fs *fs, struct fs_wait *w)
{
	struct fs_file *fh = w->fh;
	struct fs_node *n = fh->stream;

	for (int tries = 0;; tries++) {
		void *buf = fs_read_buffer(w->size);
		ssize_t got;

		if (!buf) {
			fuse_reply_err(w->req, ENOMEM);
			break;
		}
		uint64_t base;
		int rc = fs_file_base(fh, &base, &w->seen);

		if (rc)
			got = rc;
		else if (base == FS_BASE_PENDING)
			got = 0;	/* starts past the end: nothing yet */
		else if (fh->snap_len)
			got = fs_view_read(fh, base, buf, w->size, w->off);
		else
			got = store_read(n->t, n->id, buf, w->size,
					 base + w->off);
		if (got == -ENOENT) {
			/* Removed: end of file now; parked, no commit would
			 * ever wake it. */
			fuse_reply_buf(w->req, NULL, 0);
			break;
		}
		if (got < 0) {
			fuse_reply_err(w->req, (int)-got);
			break;
		}
		if (got > 0) {
			fuse_reply_buf(w->req, buf, (size_t)got);
			break;
		}
		if (w->nonblock) {
			fuse_reply_err(w->req, EAGAIN);
			break;
		}
		if (park(fs, w, tries < 3) == PARK_OWNED)
			return;
	}
	free(w);
}

/* Called with fs->park_lock held: detaches N's waiters SIZE now satisfies. */
static struct fs_wait *detach_ready(struct fs *fs, struct fs_node *n,
				    uint64_t size)
{
	struct fs_wait *ready = NULL, *w, *next;

	fs_assert_held(&fs->park_lock);
	for (w = n->parked; w; w = next) {
		next = w->next;
		uint64_t base = atomic_load(&w->fh->base);

		/* A pending base may resolve with any commit. */
		if (size != UINT64_MAX && base != FS_BASE_PENDING &&
		    fs_file_stream_off(w->fh, base, w->off) >= size)
			continue;
		wait_unlink(fs, n, w);
		w->state = WAIT_DONE;
		w->next = ready;
		ready = w;
	}
	return ready;
}

/* Called with fs->park_lock held; WK was allocated before taking it. */
static void wake_queue(struct fs *fs, struct fs_wake *wk,
		       struct fs_wait *list, uint64_t size)
{
	fs_assert_held(&fs->park_lock);
	wk->list = list;
	wk->size = size;
	if (fs->wake_tail)
		fs->wake_tail->next = wk;
	else
		fs->wake_head = wk;
	fs->wake_tail = wk;
	pthread_cond_signal(&fs->wake_cond);
}

/* Out of memory for a wake entry: answers LIST with end of file rather
 * than lose it.  Called without fs->park_lock, but a writer's commit
 * (the hook's caller) may hold its fh->lock. */
static void answer_eof(struct fs_wait *list)
{
	for (struct fs_wait *w = list, *next; w; w = next) {
		next = w->next;
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fuse_reply_buf(w->req, NULL, 0);
		free(w);
	}
}

/* Hands W to the answer workers (never blocks on I/O). */
static void answer_queue(struct fs *fs, struct fs_wait *w)
{
	w->next = NULL;
	fs_mutex_lock(&fs->answer_lock);
	if (fs->answer_tail)
		fs->answer_tail->next = w;
	else
		fs->answer_head = w;
	fs->answer_tail = w;
	pthread_cond_signal(&fs->answer_cond);
	fs_mutex_unlock(&fs->answer_lock);
}

/* An answer worker: store_read may fetch from the remote and block, which
 * must stall neither the other wake-ups nor the wake thread's EINTR
 * answers before the kernel's request timeout. */
static void *answer_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_wait *w;

	fs_mutex_lock(&fs->answer_lock);
	for (;;) {
		while (!fs->answer_head && !fs->answer_stop)
			fs_cond_wait(&fs->answer_cond, &fs->answer_lock);
		w = fs->answer_head;
		if (!w)
			break;	/* stopping and drained */
		fs->answer_head = w->next;
		if (!fs->answer_head)
			fs->answer_tail = NULL;
		fs_mutex_unlock(&fs->answer_lock);
		w->next = NULL;
		fs_wait_answer(fs, w);
		fs_mutex_lock(&fs->answer_lock);
	}
	fs_mutex_unlock(&fs->answer_lock);
	return NULL;
}

static void wake_answer(struct fs *fs, struct fs_wake *wk)
{
	struct fs_wait *w, *next;

	for (w = wk->list; w; w = next) {
		next = w->next;
		w->next = NULL;
		/* Waits for a racing on_interrupt(), which now leaves W alone. */
		fuse_req_interrupt_func(w->req, NULL, NULL);
		if (wk->size == UINT64_MAX) {
			fuse_reply_buf(w->req, NULL, 0);
			free(w);
		} else {
			answer_queue(fs, w);
		}
	}
	free(wk);
}

/* Called with fs->park_lock held: detaches the parked waits older than
 * park_max_ns.  *next_ns (OUT) gets when the oldest remaining one expires,
 * or 0. */
static struct fs_wait *detach_expired(struct fs *fs, int64_t *next_ns)
{
	struct fs_wait *expired = NULL, *w;
	int64_t now = mono_ns();

	fs_assert_held(&fs->park_lock);
	*next_ns = 0;
	while ((w = fs->parked_oldest)) {
		if (now - w->parked_ns < fs->park_max_ns) {
			*next_ns = w->parked_ns + fs->park_max_ns;
			break;
		}
		wait_unlink(fs, w->fh->stream, w);
		w->state = WAIT_DONE;
		w->next = expired;
		expired = w;
	}
	return expired;
}

/* A read parked for park_max_ns is answered with EINTR before the kernel's
 * request timeout would abort the whole connection.  read(2) then fails
 * with EINTR, which cat, dd, grep (gnulib's safe_read) and Python retry:
 * the reader keeps following.  End of file would end them instead. */
static void answer_expired(struct fs_wait *list)
{
	for (struct fs_wait *w = list, *next; w; w = next) {
		next = w->next;
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fuse_reply_err(w->req, EINTR);
		free(w);
	}
}

/* Waits on wake_cond until MONO (CLOCK_MONOTONIC) at most.  Called with
 * fs->park_lock held. */
static void wait_until_ns(struct fs *fs, int64_t mono)
{
	struct timespec now_rt, ts;
	int64_t left = mono - mono_ns(), abs_ns;

	fs_assert_held(&fs->park_lock);
	/* The condition variable uses CLOCK_REALTIME: wait for the span. */
	clock_gettime(CLOCK_REALTIME, &now_rt);
	abs_ns = (int64_t)now_rt.tv_sec * 1000000000 + now_rt.tv_nsec +
		 (left > 0 ? left : 0) + 1000000;
	ts.tv_sec = (time_t)(abs_ns / 1000000000);
	ts.tv_nsec = (long)(abs_ns % 1000000000);
	fs_cond_timedwait(&fs->wake_cond, &fs->park_lock, &ts);
}

static void *wake_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_wake *wk;
	struct fs_wait *exp;
	int64_t next_ns = 0;

	fs_mutex_lock(&fs->park_lock);
	for (;;) {
		if (fs->park_max_ns && !fs->stopping &&
		    (exp = detach_expired(fs, &next_ns))) {
			fs_mutex_unlock(&fs->park_lock);
			answer_expired(exp);
			fs_mutex_lock(&fs->park_lock);
			continue;
		}
		if (!fs->wake_head && !fs->stopping) {
			if (fs->park_max_ns && next_ns)
				wait_until_ns(fs, next_ns);
			else
				fs_cond_wait(&fs->wake_cond, &fs->park_lock);
			continue;
		}
		wk = fs->wake_head;
		if (!wk)
			break;
		fs->wake_head = wk->next;
		if (!fs->wake_head)
			fs->wake_tail = NULL;
		fs_mutex_unlock(&fs->park_lock);
		wake_answer(fs, wk);
		fs_mutex_lock(&fs->park_lock);
	}
	fs_mutex_unlock(&fs->park_lock);
	return NULL;
}

/* The ",snap" views of STREAM's node that use the page cache: from the
 * page that held their end (the stream's END then) on. */
static void inval_views(struct fs *fs, struct fs_node *stream, uint64_t end)
{
	size_t n;
	struct fs_node **v = fs_node_cached_views(fs, stream, &n);

	for (size_t i = 0; i < n; i++) {
		uint64_t from = v[i]->sel.snap_len +
				(end > v[i]->sel.snap_base ? end - v[i]->sel.snap_base : 0);

		from -= from % (uint64_t)fs->page_size;
		inval_queue(fs, v[i], from);	/* takes the ref */
	}
	free(v);
}

void fs_commit_hook(void *arg, struct store_tenant *t, uint64_t stream,
		    uint64_t size)
{
	struct fs *fs = arg;
	struct sync *sy = atomic_load(&fs->sync);
	struct fs_wait *ready = NULL;
	struct fs_wake *wk;
	struct fs_node *n;
	bool borrowed;
	uint64_t old;

	/* Appends and removals are work for the sync thread (a commit made
	 * by the replica's own thread just wakes it once more). */
	if (sy)
		sync_kick(sy);
	/* A write's own node is held by its description: no lookup, no
	 * reference of our own. */
	borrowed = commit_node && commit_node->t == t &&
		   commit_node->id == stream;
	n = borrowed ? commit_node : fs_node_find_stream(fs, t, stream);
	if (!n)
		return;	/* nobody looked at it: nothing cached, nobody parked */
	fs_mutex_lock(&fs->park_lock);
	old = n->size_seen;
	if (size == UINT64_MAX)
		n->removed = true;	/* later parks answer EOF (park()) */
	if (size != UINT64_MAX && size > n->size_seen)
		n->size_seen = size;
	if (n->parked)
		ready = detach_ready(fs, n, size);
	/* Only a commit that wakes someone pays for the allocation. */
	if (ready && (wk = calloc(1, sizeof(*wk)))) {
		wake_queue(fs, wk, ready, size);
		ready = NULL;
	}
	fs_mutex_unlock(&fs->park_lock);
	answer_eof(ready);	/* only when out of memory: not under park_lock */

	if (size != UINT64_MAX && atomic_load(&n->views_cached))
		inval_views(fs, n, old < size ? old : size);
	if (size != UINT64_MAX && atomic_load(&n->cached)) {
		uint64_t from = old < size ? old : size;
		from -= from % (uint64_t)fs->page_size;
		if (borrowed)
			fs_node_ref(fs, n);
		inval_queue(fs, n, from);	/* takes the ref */
		return;
	}
	if (!borrowed)
		fs_node_unref(fs, n);
}

void fs_commit_node_set(struct fs_node *n)
{
	commit_node = n;
}

/* ---- start and stop ---- */

static void answer_stop(struct fs *fs)
{
	fs_mutex_lock(&fs->answer_lock);
	fs->answer_stop = true;
	pthread_cond_broadcast(&fs->answer_cond);
	fs_mutex_unlock(&fs->answer_lock);
	while (fs->answer_started)
		pthread_join(fs->answer_threads[--fs->answer_started], NULL);
}

int fs_follow_start(struct fs *fs)
{
	int rc = pthread_create(&fs->inval_thread, NULL, inval_main, fs);

	if (rc)
		return -rc;
	for (size_t i = 0; !rc && i < sizeof(fs->answer_threads) /
			sizeof(fs->answer_threads[0]); i++) {
		rc = pthread_create(&fs->answer_threads[i], NULL, answer_main,
				    fs);
		if (!rc)
			fs->answer_started++;
	}
	if (!rc)
		rc = pthread_create(&fs->wake_thread, NULL, wake_main, fs);
	if (rc) {
		answer_stop(fs);
		fs_mutex_lock(&fs->inval_lock);
		fs->inval_stop = true;
		pthread_cond_broadcast(&fs->inval_cond);
		fs_mutex_unlock(&fs->inval_lock);
		pthread_join(fs->inval_thread, NULL);
		return -rc;
	}
	fs->threads_started = true;
	return 0;
}

/* Ends every parked read with end-of-file (unmount). */
static void answer_all_parked(struct fs *fs)
{
	struct fs_wait *all = NULL;

	fs_mutex_lock(&fs->lock);
	fs_mutex_lock(&fs->park_lock);
	fs->stopping = true;
	for (size_t i = 0; i < fs->table_size; i++)
		for (struct fs_node *n = fs->table[i]; n; n = n->hnext) {
			struct fs_wait *w = detach_ready(fs, n, UINT64_MAX);
			while (w) {
				struct fs_wait *next = w->next;
				w->next = all;
				all = w;
				w = next;
			}
		}
	pthread_cond_broadcast(&fs->wake_cond);
	fs_mutex_unlock(&fs->park_lock);
	fs_mutex_unlock(&fs->lock);
	for (struct fs_wait *w = all, *next; w; w = next) {
		next = w->next;
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fuse_reply_buf(w->req, NULL, 0);
		free(w);
	}
}

/* How long drain_session serves after the loop ended: until no request
 * came for DRAIN_QUIET_MS, at most DRAIN_MAX_MS in all. */
#define DRAIN_QUIET_MS 100
#define DRAIN_MAX_MS 2000

/*
 * A signal ends the session loop with the kernel connection still up.
 * The followers just answered end-of-file now close their files; unserved,
 * their FLUSH would fail with ECONNABORTED at the unmount, and `cat` would
 * exit 1.  So serve what comes, in this thread, until it goes quiet; with
 * -o io_uring the ring's threads serve them (fs_run stops the ring after
 * fs_follow_stop), and quiet means they served nothing either.
 * After an unmount the device answers ENODEV (or POLLERR) at once.
 * A second signal (fuse_session_exit) cuts the drain short.
 */
static int64_t ms_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - start->tv_sec) * 1000 +
	       (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* Whether the io_uring threads (still running) served a request since
 * *SEEN, their count of requests then; updates *SEEN. */
static bool ring_served_more(struct fs *fs, uint64_t *seen)
{
	uint64_t served;
	unsigned queues;

	fs_ring_stats(fs->ring, &queues, &served);
	if (served == *seen)
		return false;
	*seen = served;
	return true;
}

static void drain_session(struct fs *fs)
{
	struct fuse_buf buf = { .mem = NULL };
	struct timespec start;
	uint64_t ring_seen = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	(void)ring_served_more(fs, &ring_seen);
	fuse_session_reset(fs->se);
	while (!fuse_session_exited(fs->se) && ms_since(&start) < DRAIN_MAX_MS) {
		struct pollfd p = { .fd = fuse_session_fd(fs->se), .events = POLLIN };
		int rc = poll(&p, 1, DRAIN_QUIET_MS);

		if ((rc < 0 && errno == EINTR) || (rc == 0 && ring_served_more(fs, &ring_seen)))
			continue;
		if (rc <= 0 || !(p.revents & POLLIN))
			break;	/* quiet, or the connection is gone */
		rc = fuse_session_receive_buf(fs->se, &buf);
		if (rc > 0)
			fuse_session_process_buf(fs->se, &buf);
		else if (rc != -EINTR && rc != -EAGAIN)
			break;
	}
	free(buf.mem);
}

void fs_follow_stop(struct fs *fs)
{
	if (!fs->threads_started)
		return;
	answer_all_parked(fs);
	pthread_join(fs->wake_thread, NULL);
	/* Drains the queue: with fs->stopping, a read with nothing to return
	 * answers end of file instead of parking. */
	answer_stop(fs);
	/* Before the invalidation thread stops: a write served here waits
	 * for its invalidation. */
	if (fs->se)
		drain_session(fs);
	fs_mutex_lock(&fs->inval_lock);
	fs->inval_stop = true;
	pthread_cond_broadcast(&fs->inval_cond);
	pthread_cond_broadcast(&fs->inval_done_cond);
	fs_mutex_unlock(&fs->inval_lock);
	pthread_join(fs->inval_thread, NULL);
	fs->threads_started = false;
}
