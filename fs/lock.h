/*
 * lock: the mutexes of fs/, which a debug build checks.
 *
 * Unless NDEBUG, struct fs_mutex records the thread that holds it, so that
 * a function whose comment says "called with X held" asserts it with
 * fs_assert_held(&X); and each thread records the ranks of the mutexes it
 * holds, so that taking one out of the lock order below (or twice, or
 * unlocking one it does not hold) fails an assertion instead of hanging
 * one day.  With NDEBUG it is a plain mutex and the checks compile to
 * nothing.  Condition variables wait through fs_cond_wait() and
 * fs_cond_timedwait(), which keep both records true across the wait.
 */
#ifndef STREAMFS_FS_LOCK_H
#define STREAMFS_FS_LOCK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

/* The lock order: a thread holding a mutex takes only mutexes of a later
 * rank.  The ring's locks are never held with the others. */
enum fs_lock_rank {
	FS_LOCK_FILE,		/* struct fs_file.lock */
	FS_LOCK_NODES,		/* struct fs.lock */
	FS_LOCK_PARK,		/* struct fs.park_lock */
	FS_LOCK_INVAL,		/* struct fs.inval_lock */
	FS_LOCK_RING_WATCH,	/* struct fs_ring.watch_lock (ring.c) */
	FS_LOCK_RING_QUEUE,	/* struct ring_queue.lock (ring.c) */
	FS_LOCK_ALONE,		/* struct fs.answer_lock: with no other held */
	FS_LOCK_LOG,		/* log.c's: a leaf, taken last */
};

struct fs_mutex {
	pthread_mutex_t m;
#ifndef NDEBUG
	enum fs_lock_rank rank;
	/* Written by the holder; read by any thread that asks.  Owner is
	 * stored before held is set (release), read after (acquire): cheap
	 * enough to leave on in the default build. */
	atomic_bool held;
	_Atomic pthread_t owner;	/* valid while held */
#endif
};

/* Debug builds: a bit per rank this thread holds (lock.c). */
extern _Thread_local unsigned fs_lock_ranks_held;

#ifndef NDEBUG
/* Whether the calling thread holds MU. */
static inline bool fs_mutex_held(struct fs_mutex *mu)
{
	return atomic_load_explicit(&mu->held, memory_order_acquire) &&
	       pthread_equal(atomic_load_explicit(&mu->owner,
						  memory_order_relaxed),
			     pthread_self());
}

/* Called before taking MU: nothing of its rank or later is held. */
static inline void fs_mutex_taking(struct fs_mutex *mu)
{
	unsigned later = ~((1u << mu->rank) - 1);

	assert(!(fs_lock_ranks_held & later));
	assert(mu->rank != FS_LOCK_ALONE || !fs_lock_ranks_held);
}

static inline void fs_mutex_taken(struct fs_mutex *mu)
{
	atomic_store_explicit(&mu->owner, pthread_self(), memory_order_relaxed);
	atomic_store_explicit(&mu->held, true, memory_order_release);
	fs_lock_ranks_held |= 1u << mu->rank;
}

static inline void fs_mutex_leaving(struct fs_mutex *mu)
{
	assert(fs_mutex_held(mu));
	atomic_store_explicit(&mu->held, false, memory_order_release);
	fs_lock_ranks_held &= ~(1u << mu->rank);
}

#define fs_assert_held(mu) assert(fs_mutex_held(mu))
#else
static inline void fs_mutex_taking(struct fs_mutex *mu) { (void)mu; }
static inline void fs_mutex_taken(struct fs_mutex *mu) { (void)mu; }
static inline void fs_mutex_leaving(struct fs_mutex *mu) { (void)mu; }
#define fs_assert_held(mu) ((void)(mu))
#endif

static inline void fs_mutex_init(struct fs_mutex *mu, enum fs_lock_rank rank)
{
	pthread_mutex_init(&mu->m, NULL);
#ifndef NDEBUG
	mu->rank = rank;
	atomic_init(&mu->held, false);
	atomic_init(&mu->owner, pthread_self());
#else
	(void)rank;
#endif
}

static inline void fs_mutex_destroy(struct fs_mutex *mu)
{
	pthread_mutex_destroy(&mu->m);
}

static inline void fs_mutex_lock(struct fs_mutex *mu)
{
	fs_mutex_taking(mu);
	pthread_mutex_lock(&mu->m);
	fs_mutex_taken(mu);
}

static inline void fs_mutex_unlock(struct fs_mutex *mu)
{
	fs_mutex_leaving(mu);
	pthread_mutex_unlock(&mu->m);
}

static inline void fs_cond_wait(pthread_cond_t *c, struct fs_mutex *mu)
{
	fs_mutex_leaving(mu);
	pthread_cond_wait(c, &mu->m);
	fs_mutex_taken(mu);
}

/* Returns pthread_cond_timedwait()'s result (ETIMEDOUT). */
static inline int fs_cond_timedwait(pthread_cond_t *c, struct fs_mutex *mu,
				    const struct timespec *abstime)
{
	int rc;

	fs_mutex_leaving(mu);
	rc = pthread_cond_timedwait(c, &mu->m, abstime);
	fs_mutex_taken(mu);
	return rc;
}

#endif
