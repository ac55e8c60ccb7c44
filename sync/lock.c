/*
 * lock.c: the mutexes of struct sync (lock, evict_lock).  Debug builds
 * (!NDEBUG) record which thread holds each, so that the functions whose
 * comment says "with s->lock" assert it (SYNC_ASSERT_HELD) rather than
 * trust it.  A thread is told apart by the address of a thread-local
 * variable of its own: cheaper than pthread_self() comparisons, and an
 * atomic pointer, so that a thread that does not hold the mutex may read
 * the holder without a data race.
 */
#include <pthread.h>

#include "sync.h"
#include "sync_int.h"

#ifndef NDEBUG
static _Thread_local char thread_tag;
#endif

static void set_owner(struct sync_mutex *mx, bool held)
{
#ifndef NDEBUG
	atomic_store_explicit(&mx->owner, held ? &thread_tag : NULL,
			      memory_order_relaxed);
#else
	(void)mx;
	(void)held;
#endif
}

void sync_mutex_init(struct sync_mutex *mx)
{
	pthread_mutex_init(&mx->m, NULL);
	set_owner(mx, false);
}

void sync_mutex_destroy(struct sync_mutex *mx)
{
	pthread_mutex_destroy(&mx->m);
}

void sync_mutex_lock(struct sync_mutex *mx)
{
	pthread_mutex_lock(&mx->m);
	set_owner(mx, true);
}

void sync_mutex_unlock(struct sync_mutex *mx)
{
	SYNC_ASSERT_HELD(mx);
	set_owner(mx, false);
	pthread_mutex_unlock(&mx->m);
}

void sync_cond_wait(pthread_cond_t *c, struct sync_mutex *mx)
{
	SYNC_ASSERT_HELD(mx);
	set_owner(mx, false);
	pthread_cond_wait(c, &mx->m);
	set_owner(mx, true);
}

int sync_cond_timedwait(pthread_cond_t *c, struct sync_mutex *mx,
			const struct timespec *abstime)
{
	int rc;

	SYNC_ASSERT_HELD(mx);
	set_owner(mx, false);
	rc = pthread_cond_timedwait(c, &mx->m, abstime);
	set_owner(mx, true);
	return rc;
}

bool sync_mutex_held(struct sync_mutex *mx)
{
#ifndef NDEBUG
	return atomic_load_explicit(&mx->owner, memory_order_relaxed) ==
	       &thread_tag;
#else
	(void)mx;
	return true;
#endif
}
