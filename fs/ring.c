/*
 * FUSE requests over io_uring (-o io_uring; kernel 6.14+ with the fuse
 * module's enable_uring set).
 *
 * The kernel keeps one queue of request slots ("ring entries") per CPU and
 * hands a request to the queue of the CPU that made it.  A daemon thread
 * pinned to that CPU takes it, so a write(2) is served on the writer's own
 * CPU instead of waking a thread on another one; the reply and the wait for
 * the next request are one io_uring command (COMMIT_AND_FETCH).
 *
 * libfuse 3.14 knows nothing of this.  streamfs gives the session a custom
 * io: its read() sees INIT go by, its writev() and splice_send() catch every
 * reply.  A ring request is fed to fuse_session_process_buf() like one read
 * from /dev/fuse; its reply, from whichever thread sends it, is copied into
 * the entry that carried the request and committed.  What the kernel still
 * sends through /dev/fuse (INIT, FORGET, INTERRUPT, anything queued before
 * the ring is ready) keeps going through libfuse's own loop.
 *
 * Each queue has one io_uring and one thread at a time in charge of it (the
 * waiter), which takes a request, runs its handler and replies: no other
 * thread is woken on the way.  A handler may block (a sync_now, a remote
 * fetch, an invalidation that waits for a read on the same queue), so a
 * watchdog that ticks every RING_TICK_MS while requests come in puts a
 * standby thread in charge when the waiter has been in one handler for a
 * whole tick (up to RING_THREADS per queue); the old one becomes a
 * standby when its handler returns.  A request answered later (a parked
 * follow read) keeps its entry; a queue registers new entries so that
 * RING_SPARE are always waiting (see there why so many).
 *
 * Only the queues' own threads hand commands to the kernel: io_uring
 * cancels a command when the thread that submitted it exits, which would
 * take the entry away.  A reply from any other thread is copied into its
 * entry and left on q->replied for them, with a no-op to wake one.
 */
#include <errno.h>
#include <linux/fuse.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lock.h"
#include "log.h"
#include "ring.h"
#include "ring_uapi.h"
#include "store_util.h"

#define RING_DEPTH 64		/* SQEs of one queue's io_uring */
/* Entries kept waiting for requests.  A request that finds none waits in
 * the kernel until an entry is committed: Linux 6.18 hands it to an entry
 * being recycled (COMMIT_AND_FETCH), never to one registered later.  A
 * request that parks (a follow read) commits nothing, so if every entry is
 * taken when a burst of them arrives, the rest could wait until the next
 * request on that CPU.  So many wait that a burst does not find them all
 * taken: untouched, an entry costs the kernel a few hundred bytes and this
 * process only address space. */
#define RING_SPARE 1024
#define RING_THREADS 8		/* threads per queue at most */
#define RING_TICK_MS 5		/* the watchdog's period */
#define RING_IDLE_TICKS 100	/* ticks without requests: the watchdog sleeps */

/* An entry's mapping: the kernel's header at the start, the payload one
 * page in.  The request is rebuilt in the bytes just before the payload,
 * so that fuse_session_process_buf() reads it as one buffer. */
#define RING_HEAD_SPACE 4096

struct ring_queue;

/* A request slot.  Q, the mapping and IOV are set when it is added; the
 * mapping's bytes are the thread's that serves or answers its request;
 * the rest is protected by q->lock. */
struct ring_ent {
	struct ring_queue *q;
	struct fuse_uring_req_header *hdr;	/* start of the mapping */
	char *payload;
	struct iovec iov[2];
	uint64_t unique;	/* the request it carries; 0 when waiting */
	/* q->busy, or q->replied (next only); protected by q->lock */
	struct ring_ent *prev, *next;
	struct ring_ent *all_next;	/* q->all */
};

/* Ring, qid and uring_ready are set before its first thread starts. */
struct ring_queue {
	struct fs_ring *ring;
	unsigned qid;
	struct io_uring uring;
	bool uring_ready;
	/* The io_uring and all below.  Taken after r->watch_lock, never
	 * with another queue's. */
	struct fs_mutex lock;
	struct ring_ent *busy;	/* entries whose request is in userspace */
	struct ring_ent *replied;	/* answered by other threads, to commit */
	struct ring_ent *all;	/* every entry, unmapped at the end */
	unsigned waiting;	/* entries submitted, completion not seen */
	pthread_t waiter;	/* the thread in charge, if has_waiter */
	bool has_waiter;
	bool in_handler;	/* the waiter is running a handler */
	uint64_t handlers;	/* handlers the waiters started */
	uint64_t handlers_seen;	/* ... at the watchdog's last tick */
	pthread_cond_t standby_cond;
	unsigned standby;	/* threads waiting on standby_cond */
	/* Read without lock by fs_ring_stop() once the watchdog, which
	 * starts threads, is joined. */
	unsigned nthreads;
	pthread_t threads[RING_THREADS];
	bool dead;		/* the kernel refused or dropped this queue */
};

/* Se and fd are set at attach; payload_size, nqueues and queues by the
 * thread that answers INIT before it sets started (read only after it),
 * watchdog and watchdog_started after (read only once the session loop has
 * joined that thread).  Atomics and watch_lock do the rest. */
struct fs_ring {
	struct fuse_session *se;
	int fd;			/* /dev/fuse */
	size_t payload_size;
	_Atomic uint64_t init_unique;	/* INIT, until it is answered */
	atomic_bool offered;	/* INIT offered FUSE_OVER_IO_URING */
	atomic_bool started, stopping;
	atomic_uint_fast64_t served;	/* requests taken from the ring */
	unsigned nqueues;
	struct ring_queue *queues;

	pthread_t watchdog;
	bool watchdog_started;
	struct fs_mutex watch_lock;	/* taken before any q->lock */
	pthread_cond_t watch_cond;
	atomic_bool watch_asleep;	/* waits for watch_cond, no timeout */
};

/* Completion tags that are not entries. */
#define RING_TAG_STOP 0		/* fs_ring_stop() */
#define RING_TAG_REPLIED 1	/* q->replied has entries */

/* In a queue's thread: the queue, and the entry whose request it is
 * running (for the common case of a handler that replies before it
 * returns). */
static __thread struct ring_queue *ring_thread_queue;
static __thread struct ring_ent *ring_current;

/* ---- entries ---- */

static void ring_prep_cmd(struct io_uring_sqe *sqe, struct ring_ent *e,
			  uint32_t op)
{
	struct fuse_uring_cmd_req *cmd;

	memset(sqe, 0, 2 * sizeof(*sqe));	/* SQE128 */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = e->q->ring->fd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	cmd = (struct fuse_uring_cmd_req *)sqe->cmd;
	cmd->qid = (uint16_t)e->q->qid;
	cmd->commit_id = e->unique;
	io_uring_sqe_set_data(sqe, e);
	e->unique = 0;
}

/* Queues a command for E and hands it to the kernel.  With q->lock. */
static int ring_submit(struct ring_ent *e, uint32_t op)
{
	struct ring_queue *q = e->q;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->uring);
	int rc;

	fs_assert_held(&q->lock);
	if (!sqe)
		return -EBUSY;	/* submitted at once: the SQ never fills */
	ring_prep_cmd(sqe, e, op);
	rc = io_uring_submit(&q->uring);
	if (rc < 0)
		return rc;
	q->waiting++;
	return 0;
}

static int ring_ent_add(struct ring_queue *q)
{
	size_t len = RING_HEAD_SPACE + q->ring->payload_size;
	struct ring_ent *e = calloc(1, sizeof(*e));
	void *map;

	if (!e)
		return -ENOMEM;
	map = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (map == MAP_FAILED) {
		free(e);
		return -errno;
	}
	e->q = q;
	e->hdr = map;
	e->payload = (char *)map + RING_HEAD_SPACE;
	e->iov[0] = (struct iovec){ e->hdr, sizeof(*e->hdr) };
	e->iov[1] = (struct iovec){ e->payload, q->ring->payload_size };
	e->all_next = q->all;
	q->all = e;
	return ring_submit(e, FUSE_IO_URING_CMD_REGISTER);
}

/* With q->lock, as for busy_unlink(). */
static void busy_link(struct ring_queue *q, struct ring_ent *e)
{
	fs_assert_held(&q->lock);
	e->prev = NULL;
	e->next = q->busy;
	if (q->busy)
		q->busy->prev = e;
	q->busy = e;
}

static void busy_unlink(struct ring_queue *q, struct ring_ent *e)
{
	fs_assert_held(&q->lock);
	if (e->prev)
		e->prev->next = e->next;
	else
		q->busy = e->next;
	if (e->next)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

/* ---- replies ---- */

/* Finds the entry carrying request UNIQUE and takes it off its busy list;
 * returns it with its queue's lock held, or NULL (a request that came
 * through /dev/fuse, or the ring is stopping). */
static struct ring_ent *ring_claim(struct fs_ring *r, uint64_t unique)
{
	struct ring_ent *e = ring_current;
	unsigned i;

	if (!unique || !atomic_load(&r->started) || atomic_load(&r->stopping))
		return NULL;
	if (e) {
		fs_mutex_lock(&e->q->lock);
		if (e->unique == unique) {
			busy_unlink(e->q, e);
			return e;
		}
		fs_mutex_unlock(&e->q->lock);
	}
	for (i = 0; i < r->nqueues; i++) {
		struct ring_queue *q = &r->queues[i];

		fs_mutex_lock(&q->lock);
		for (e = q->busy; e; e = e->next)
			if (e->unique == unique) {
				busy_unlink(q, e);
				return e;
			}
		fs_mutex_unlock(&q->lock);
	}
	return NULL;
}

static void ring_commit_now(struct ring_ent *e)
{
	int rc = ring_submit(e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);

	if (rc)
		fs_log(LOG_ERR, "io_uring: commit: %s", strerror(-rc));
}

/* Commits E's reply (already in its buffers) and lets it wait for the next
 * request; from another thread, leaves it to the queue's threads (see the
 * top).  Releases q->lock. */
static void ring_commit(struct ring_ent *e)
{
	struct ring_queue *q = e->q;
	struct io_uring_sqe *sqe;

	fs_assert_held(&q->lock);
	if (ring_thread_queue) {
		ring_commit_now(e);
	} else {
		e->next = q->replied;
		q->replied = e;
		sqe = io_uring_get_sqe(&q->uring);
		if (sqe) {
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, RING_TAG_REPLIED);
			(void)io_uring_submit(&q->uring);
		}
	}
	fs_mutex_unlock(&q->lock);
}

static void ring_put_header(struct ring_ent *e,
			    const struct fuse_out_header *out, size_t payload)
{
	memcpy(e->hdr->in_out, out, sizeof(*out));
	e->hdr->ring_ent_in_out.payload_sz = (uint32_t)payload;
}

/* Answers E's request with EIO: a request this code does not understand,
 * or a reply too large for the entry (neither can happen with the sizes
 * from INIT).  With q->lock, which it releases. */
static void ring_reply_eio(struct ring_ent *e, uint64_t unique)
{
	struct fuse_out_header out = {
		.len = sizeof(out), .error = -EIO, .unique = unique };

	fs_assert_held(&e->q->lock);
	ring_put_header(e, &out, 0);
	ring_commit(e);
}

static ssize_t ring_reply_iov(struct ring_ent *e, const struct iovec *iov,
			      int count)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	size_t len = 0;
	int i;

	for (i = 1; i < count; i++) {
		if (iov[i].iov_len > e->q->ring->payload_size - len) {
			ring_reply_eio(e, out->unique);
			errno = EIO;
			return -1;
		}
		memcpy(e->payload + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	ring_put_header(e, out, len);
	ring_commit(e);
	return (ssize_t)(sizeof(*out) + len);
}

/* ---- the session's io ---- */

/* The ring of this process's session (libfuse passes the io callbacks the
 * file system's userdata, not the io's). */
static struct fs_ring *ring_attached;

static ssize_t ring_io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fs_ring *r = ring_attached;
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;

	(void)userdata;
	if (n >= (ssize_t)(sizeof(*in) + sizeof(struct fuse_init_in)) &&
	    in->opcode == FUSE_INIT) {
		const struct fuse_init_in *arg = (const void *)(in + 1);

		atomic_store(&r->offered, (arg->flags & FUSE_INIT_EXT) &&
			     (arg->flags2 & RING_INIT_FLAG2));
		atomic_store(&r->init_unique, in->unique);
	}
	return n;
}

static void ring_start(struct fs_ring *r, const struct iovec *iov, int count);

static ssize_t ring_io_writev(int fd, struct iovec *iov, int count,
			      void *userdata)
{
	struct fs_ring *r = ring_attached;
	const struct fuse_out_header *out = iov[0].iov_base;
	struct ring_ent *e = ring_claim(r, out->unique);
	ssize_t n;

	(void)userdata;
	if (e)
		return ring_reply_iov(e, iov, count);
	n = writev(fd, iov, count);
	/* Once the kernel has INIT's answer, entries can be registered. */
	if (n >= 0 && out->unique &&
	    out->unique == atomic_load(&r->init_unique)) {
		atomic_store(&r->init_unique, 0);
		ring_start(r, iov, count);
	}
	return n;
}

/* libfuse's splice reply: the header and the data are in the pipe FDIN.
 * A ring reply is read out of it into the entry; one that came through
 * /dev/fuse goes back there whole. */
static ssize_t ring_io_splice_send(int fdin, off_t *offin, int fdout,
				   off_t *offout, size_t len,
				   unsigned int flags, void *userdata)
{
	struct fs_ring *r = ring_attached;
	struct fuse_out_header out;
	struct ring_ent *e;
	struct iovec iov[2];
	ssize_t n;
	int rc;

	(void)userdata;
	(void)offin;
	(void)offout;
	(void)flags;
	if (len < sizeof(out) || (rc = store_read_all(fdin, &out, sizeof(out)))) {
		errno = len < sizeof(out) ? EINVAL : -rc;
		return -1;
	}
	len -= sizeof(out);
	e = ring_claim(r, out.unique);
	if (e && len > r->payload_size) {
		ring_reply_eio(e, out.unique);
		errno = EIO;
		return -1;
	}
	if (e) {
		rc = store_read_all(fdin, e->payload, len);
		if (rc) {
			out.error = rc;
			len = 0;
		}
		ring_put_header(e, &out, len);
		ring_commit(e);
		return rc ? (errno = -rc, -1) : (ssize_t)(sizeof(out) + len);
	}
	iov[0] = (struct iovec){ &out, sizeof(out) };
	iov[1] = (struct iovec){ malloc(len ? len : 1), len };
	if (!iov[1].iov_base) {
		errno = ENOMEM;
		return -1;
	}
	rc = store_read_all(fdin, iov[1].iov_base, len);
	n = rc ? (errno = -rc, -1) : writev(fdout, iov, 2);
	free(iov[1].iov_base);
	return n;
}

static const struct fuse_custom_io ring_io = {
	.read = ring_io_read,
	.writev = ring_io_writev,
	.splice_send = ring_io_splice_send,
};

/* ---- the queues' threads ---- */

/* Runs E's request through libfuse, as if read from /dev/fuse. */
static void ring_serve(struct fs_ring *r, struct ring_ent *e)
{
	const struct fuse_in_header *in = (const void *)e->hdr->in_out;
	size_t payload = e->hdr->ring_ent_in_out.payload_sz;
	struct fuse_buf buf = { .size = in->len };
	size_t op_len;

	if (in->len < sizeof(*in) + payload || payload > r->payload_size ||
	    in->len - sizeof(*in) - payload > FUSE_URING_OP_IN_OUT_SZ) {
		fs_mutex_lock(&e->q->lock);
		busy_unlink(e->q, e);
		ring_reply_eio(e, in->unique);
		return;
	}
	op_len = in->len - sizeof(*in) - payload;
	buf.mem = e->payload - sizeof(*in) - op_len;
	memcpy(buf.mem, in, sizeof(*in));
	memcpy((char *)buf.mem + sizeof(*in), e->hdr->op_in, op_len);
	ring_current = e;
	fuse_session_process_buf(r->se, &buf);
	ring_current = NULL;
}

static void *ring_thread(void *arg);

/* A request came in: the watchdog ticks again if it had gone to sleep. */
static void ring_watch_wake(struct fs_ring *r)
{
	if (atomic_load(&r->watch_asleep)) {
		fs_mutex_lock(&r->watch_lock);
		atomic_store(&r->watch_asleep, false);
		pthread_cond_signal(&r->watch_cond);
		fs_mutex_unlock(&r->watch_lock);
	}
}

/* Keeps RING_SPARE entries waiting for requests.  In a queue's thread,
 * with q->lock. */
static void ring_keep_entries(struct ring_queue *q)
{
	fs_assert_held(&q->lock);
	while (!q->dead && q->waiting < RING_SPARE) {
		int rc = ring_ent_add(q);

		if (rc) {
			fs_log(LOG_WARNING, "io_uring: queue %u: %s",
				q->qid, strerror(-rc));
			q->dead = true;
		}
	}
}

/* The waiter has been in one handler for a whole tick: a standby takes
 * charge of the ring.  With q->lock. */
static void ring_rescue(struct ring_queue *q)
{
	fs_assert_held(&q->lock);
	if (q->standby) {
		pthread_cond_signal(&q->standby_cond);
	} else {
		/* None to spare: the queue waits for this handler (the
		 * watchdog tries again at its next tick). */
		if (q->nthreads == RING_THREADS ||
		    pthread_create(&q->threads[q->nthreads], NULL, ring_thread,
				   q) != 0)
			return;
		q->nthreads++;
	}
	q->has_waiter = false;
	q->in_handler = false;
}

/* Commits what other threads answered.  With q->lock. */
static void ring_commit_replied(struct ring_queue *q)
{
	fs_assert_held(&q->lock);
	while (q->replied) {
		struct ring_ent *e = q->replied;

		q->replied = e->next;
		e->next = NULL;
		ring_commit_now(e);
	}
}

/* A command failed: the entry is no longer in the kernel's hands. */
static void ring_ent_failed(struct ring_queue *q, int res)
{
	/* -ENOENT: a commit whose request the kernel no longer has; the
	 * queue itself is fine. */
	if (res == -ENOENT)
		return;
	/* -ENOTCONN, -ECONNABORTED: unmounted, or the daemon is going. */
	if (!q->dead && !atomic_load(&q->ring->stopping) &&
	    res != -ENOTCONN && res != -ECONNABORTED)
		fs_log(LOG_WARNING, "io_uring: queue %u: %s; "
			"its requests go through /dev/fuse", q->qid,
			strerror(-res));
	q->dead = true;
}

static void pin_to_cpu(unsigned cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* An offline CPU: its queue is served from anywhere. */
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *ring_thread(void *arg)
{
	struct ring_queue *q = arg;
	struct fs_ring *r = q->ring;
	pthread_t me = pthread_self();
	struct io_uring_cqe *cqe;

	ring_thread_queue = q;
	pin_to_cpu(q->qid);
	fs_mutex_lock(&q->lock);
	ring_keep_entries(q);
	while (!atomic_load(&r->stopping)) {
		struct ring_ent *e;
		uint64_t tag;
		int res;

		if (q->has_waiter && !pthread_equal(q->waiter, me)) {
			q->standby++;
			fs_cond_wait(&q->standby_cond, &q->lock);
			q->standby--;
			continue;
		}
		q->has_waiter = true;
		q->waiter = me;
		if (io_uring_peek_cqe(&q->uring, &cqe) != 0) {
			fs_mutex_unlock(&q->lock);
			(void)io_uring_enter(q->uring.ring_fd, 0, 1,
					     IORING_ENTER_GETEVENTS, NULL);
			fs_mutex_lock(&q->lock);
			continue;
		}
		tag = io_uring_cqe_get_data64(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&q->uring, cqe);
		if (tag == RING_TAG_REPLIED)
			ring_commit_replied(q);
		if (tag == RING_TAG_STOP || tag == RING_TAG_REPLIED)
			continue;
		e = (struct ring_ent *)(uintptr_t)tag;
		q->waiting--;
		if (res < 0) {
			ring_ent_failed(q, res);
			continue;
		}
		e->unique = ((struct fuse_in_header *)e->hdr->in_out)->unique;
		busy_link(q, e);
		atomic_fetch_add(&r->served, 1);
		ring_keep_entries(q);
		q->in_handler = true;
		q->handlers++;
		fs_mutex_unlock(&q->lock);
		ring_watch_wake(r);
		ring_serve(r, e);
		fs_mutex_lock(&q->lock);
		if (q->has_waiter && pthread_equal(q->waiter, me))
			q->in_handler = false;
	}
	fs_mutex_unlock(&q->lock);
	return NULL;
}

/* Ticks while requests come in; see the top. */
static void *ring_watchdog(void *arg)
{
	struct fs_ring *r = arg;
	unsigned idle = 0, i;
	uint64_t served = 0;
	struct timespec ts;

	fs_mutex_lock(&r->watch_lock);
	while (!atomic_load(&r->stopping)) {
		if (idle >= RING_IDLE_TICKS) {
			atomic_store(&r->watch_asleep, true);
			fs_cond_wait(&r->watch_cond, &r->watch_lock);
			idle = 0;
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += RING_TICK_MS * 1000000l;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		fs_cond_timedwait(&r->watch_cond, &r->watch_lock, &ts);
		for (i = 0; i < r->nqueues; i++) {
			struct ring_queue *q = &r->queues[i];

			fs_mutex_lock(&q->lock);
			if (q->in_handler && q->handlers == q->handlers_seen)
				ring_rescue(q);
			q->handlers_seen = q->handlers;
			fs_mutex_unlock(&q->lock);
		}
		idle = served == atomic_load(&r->served) ? idle + 1 : 0;
		served = atomic_load(&r->served);
	}
	fs_mutex_unlock(&r->watch_lock);
	return NULL;
}

/* ---- start and stop ---- */

static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	unsigned lo = 0, hi = 0;
	int n = f ? fscanf(f, "%u-%u", &lo, &hi) : 0;

	if (f)
		fclose(f);
	if (n == 1)
		hi = lo;
	return n >= 1 ? hi + 1 : (unsigned)sysconf(_SC_NPROCESSORS_CONF);
}

static int queue_start(struct ring_queue *q)
{
	/* Room for a completion from every entry at once. */
	struct io_uring_params p = {
		.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE,
		.cq_entries = 4 * RING_SPARE,
	};
	int rc = io_uring_queue_init_params(RING_DEPTH, &q->uring, &p);

	if (rc)
		return rc;
	q->uring_ready = true;
	/* The thread registers the entries (see the top). */
	fs_mutex_lock(&q->lock);
	rc = pthread_create(&q->threads[0], NULL, ring_thread, q);
	if (!rc)
		q->nthreads = 1;
	fs_mutex_unlock(&q->lock);
	return -rc;
}

/* The payload an entry needs: the largest write or read the kernel may
 * send, from the INIT reply in IOV. */
static size_t init_payload_size(const struct iovec *iov, int count)
{
	const struct fuse_init_out *arg = iov[1].iov_base;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), pages = 32, size;

	if (count < 2 || iov[1].iov_len < offsetof(struct fuse_init_out, max_pages) +
	    sizeof(arg->max_pages))
		return 0;
	if (arg->flags & FUSE_MAX_PAGES)
		pages = arg->max_pages ? arg->max_pages : 1;
	size = pages * page > arg->max_write ? pages * page : arg->max_write;
	return size > 8192 ? (size + page - 1) / page * page : 8192;
}

#define ENABLE_URING "/sys/module/fuse/parameters/enable_uring"

/* Why INIT did not offer the ring.  The fuse module has enable_uring only
 * when it has the ring, and offers the ring to a mount only if the
 * parameter was set when the mount was made (its value now may differ). */
static const char *not_offered_why(void)
{
	if (access(ENABLE_URING, F_OK))
		return "this kernel has no FUSE over io_uring (it needs Linux "
		       "6.14+ built with CONFIG_FUSE_IO_URING)";
	return "the fuse module's enable_uring was off when this mount was "
	       "made (as root: echo Y > " ENABLE_URING ")";
}

static void ring_start(struct fs_ring *r, const struct iovec *iov, int count)
{
	unsigned i;
	int rc = 0;

	if (!atomic_load(&r->offered)) {
		fs_log(LOG_WARNING, "io_uring: not offered by the kernel: "
			"%s; requests go through /dev/fuse", not_offered_why());
		return;
	}
	r->payload_size = init_payload_size(iov, count);
	r->nqueues = possible_cpus();
	r->queues = calloc(r->nqueues, sizeof(*r->queues));
	if (!r->payload_size || !r->queues) {
		fs_log(LOG_ERR, "io_uring: cannot start");
		return;
	}
	for (i = 0; i < r->nqueues; i++) {
		r->queues[i].ring = r;
		r->queues[i].qid = i;
		fs_mutex_init(&r->queues[i].lock, FS_LOCK_RING_QUEUE);
		pthread_cond_init(&r->queues[i].standby_cond, NULL);
	}
	fs_mutex_init(&r->watch_lock, FS_LOCK_RING_WATCH);
	pthread_cond_init(&r->watch_cond, NULL);
	atomic_store(&r->started, true);
	for (i = 0; i < r->nqueues && !rc; i++)
		rc = queue_start(&r->queues[i]);
	if (!rc)
		rc = -pthread_create(&r->watchdog, NULL, ring_watchdog, r);
	r->watchdog_started = !rc;
	if (rc)
		fs_log(LOG_WARNING, "io_uring: %s; requests go through "
			"/dev/fuse", strerror(-rc));
}

int fs_ring_attach(struct fuse_session *se, struct fs_ring **out)
{
	struct fs_ring *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	if (ring_attached) {
		free(r);
		return -EBUSY;
	}
	r->se = se;
	r->fd = fuse_session_fd(se);
	ring_attached = r;
	rc = fuse_session_custom_io(se, &ring_io, r->fd);
	if (rc) {
		ring_attached = NULL;
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void fs_ring_stop(struct fs_ring *r)
{
	unsigned i, j;

	if (!r || !atomic_load(&r->started))
		return;
	if (atomic_exchange(&r->stopping, true))
		return;
	/* The watchdog first: it is what starts threads. */
	if (r->watchdog_started) {
		fs_mutex_lock(&r->watch_lock);
		pthread_cond_signal(&r->watch_cond);
		fs_mutex_unlock(&r->watch_lock);
		pthread_join(r->watchdog, NULL);
	}
	for (i = 0; i < r->nqueues; i++) {
		struct ring_queue *q = &r->queues[i];
		struct io_uring_sqe *sqe;

		fs_mutex_lock(&q->lock);
		pthread_cond_broadcast(&q->standby_cond);
		/* Wakes the waiter out of io_uring_enter(). */
		sqe = q->uring_ready ? io_uring_get_sqe(&q->uring) : NULL;
		if (sqe) {
			io_uring_prep_nop(sqe);
			io_uring_sqe_set_data64(sqe, RING_TAG_STOP);
			(void)io_uring_submit(&q->uring);
		}
		fs_mutex_unlock(&q->lock);
	}
	for (i = 0; i < r->nqueues; i++) {
		struct ring_queue *q = &r->queues[i];

		for (j = 0; j < q->nthreads; j++)
			pthread_join(q->threads[j], NULL);
		if (q->uring_ready)
			io_uring_queue_exit(&q->uring);
		q->uring_ready = false;
	}
}

void fs_ring_free(struct fs_ring *r)
{
	unsigned i;

	if (!r)
		return;
	fs_ring_stop(r);
	for (i = 0; i < r->nqueues; i++) {
		struct ring_queue *q = &r->queues[i];

		while (q->all) {
			struct ring_ent *e = q->all;

			q->all = e->all_next;
			munmap(e->hdr, RING_HEAD_SPACE + r->payload_size);
			free(e);
		}
		pthread_cond_destroy(&q->standby_cond);
		fs_mutex_destroy(&q->lock);
	}
	if (atomic_load(&r->started)) {
		pthread_cond_destroy(&r->watch_cond);
		fs_mutex_destroy(&r->watch_lock);
	}
	free(r->queues);
	if (ring_attached == r)
		ring_attached = NULL;
	free(r);
}

void fs_ring_stats(const struct fs_ring *r, unsigned *queues,
		   uint64_t *served)
{
	unsigned i, n = 0;

	for (i = 0; r && atomic_load(&r->started) && i < r->nqueues; i++) {
		fs_mutex_lock(&r->queues[i].lock);
		n += !r->queues[i].dead;
		fs_mutex_unlock(&r->queues[i].lock);
	}
	*queues = n;
	*served = r ? atomic_load(&r->served) : 0;
}
