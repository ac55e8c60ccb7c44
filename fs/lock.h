/*
 * lock: a pthread mutex whose holder a debug build can check.
 *
 * Unless NDEBUG, struct fs_mutex records the thread that holds it, so that
 * a function whose comment says "called with X held" asserts it with
 * fs_assert_held(&X), and locking a mutex twice from one thread, or
 * unlocking one it does not hold, fails an assertion instead of hanging.
 * With NDEBUG it is a plain mutex and the checks compile to nothing.
 * Condition variables wait through fs_cond_wait()/fs_cond_timedwait(),
 * which keep the record true across the wait.
 */
#ifndef STREAMFS_FS_LOCK_H
#define STREAMFS_FS_LOCK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

struct fs_mutex {
	pthread_mutex_t m;
#ifndef NDEBUG
	/* Written by the holder; read by any thread that asks. */
	atomic_bool held;
	_Atomic pthread_t owner;	/* valid while held */
#endif
};

#ifndef NDEBUG
/* Whether the calling thread holds MU. */
static inline bool fs_mutex_held(struct fs_mutex *mu)
{
	return atomic_load(&mu->held) &&
	       pthread_equal(atomic_load(&mu->owner), pthread_self());
}

static inline void fs_mutex_taken(struct fs_mutex *mu)
{
	atomic_store(&mu->owner, pthread_self());
	atomic_store(&mu->held, true);
}

static inline void fs_mutex_leaving(struct fs_mutex *mu)
{
	assert(fs_mutex_held(mu));
	atomic_store(&mu->held, false);
}

#define fs_assert_held(mu) assert(fs_mutex_held(mu))
#else
static inline void fs_mutex_taken(struct fs_mutex *mu) { (void)mu; }
static inline void fs_mutex_leaving(struct fs_mutex *mu) { (void)mu; }
#define fs_assert_held(mu) ((void)(mu))
#endif

static inline void fs_mutex_init(struct fs_mutex *mu)
{
	pthread_mutex_init(&mu->m, NULL);
#ifndef NDEBUG
	atomic_init(&mu->held, false);
	atomic_init(&mu->owner, pthread_self());
#endif
}

static inline void fs_mutex_destroy(struct fs_mutex *mu)
{
	pthread_mutex_destroy(&mu->m);
}

static inline void fs_mutex_lock(struct fs_mutex *mu)
{
#ifndef NDEBUG
	assert(!fs_mutex_held(mu));	/* would deadlock */
#endif
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
