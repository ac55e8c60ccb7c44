/*
 * retry.c: when a failing object may be tried again.
 *
 * A failing object (a segment, its event index, an index object a replica
 * reads) holds back only its own stream, and its retries do not wait for
 * the pass's backoff: each object that failed has an entry here, by its
 * remote key, saying when it may be tried next.  The first retry comes
 * RETRY_FIRST_NS after the failure, each further one waits twice as long,
 * up to cfg.backoff_max_ns; a failure that hurrying cannot mend (refused
 * credentials, a full remote) waits that cap at once.  A success removes
 * the entry; entries nobody looked at for RETRY_FORGET_NS go (their
 * stream was removed).
 *
 * The table (s->retries) belongs to the sync thread: upload helpers report
 * to sync_upload(), which records their outcomes here after the batch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

#define RETRY_FIRST_NS 1000000000LL
#define RETRY_FORGET_NS (600 * 1000000000LL)

struct sync_retry *sync_retry_get(struct sync_retries *r, const char *key)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->v[i].key, key)) {
			r->v[i].seen_ns = sync_clock(CLOCK_MONOTONIC);
			return &r->v[i];
		}
	return NULL;
}

bool sync_retry_due(const struct sync_retry *e, int64_t now)
{
	return !e || now >= e->next_ns;
}

/* The wait after the FAILS-th failure in a row of an object, RC the last
 * one. */
static int64_t retry_delay(const struct sync *s, unsigned fails, int rc)
{
	int64_t d = RETRY_FIRST_NS;

	if (!backend_err_retryable(rc))
		return s->cfg.backoff_max_ns;
	for (unsigned i = 1; i < fails && d < s->cfg.backoff_max_ns; i++)
		d *= 2;
	return d < s->cfg.backoff_max_ns ? d : s->cfg.backoff_max_ns;
}

struct sync_retry *sync_retry_failed(struct sync *s, struct sync_retries *r,
				     const char *key, int rc, const char *what)
{
	struct sync_retry *e = sync_retry_get(r, key);
	int64_t now = sync_clock(CLOCK_MONOTONIC);

	if (!e) {
		char *copy = strdup(key);

		if (!copy || STORE_ARRAY_RESERVE(r->v, r->alloc, r->n + 1, 8)) {
			free(copy);
			return NULL;	/* tried again at the next pass */
		}
		e = &r->v[r->n++];
		*e = (struct sync_retry){ .key = copy, .seen_ns = now };
	}
	e->fails++;
	e->rc = rc;
	snprintf(e->what, sizeof(e->what), "%s", what);
	e->next_ns = now + retry_delay(s, e->fails, rc);
	return e;
}

void sync_retry_done(struct sync_retries *r, const char *key)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->v[i].key, key)) {
			free(r->v[i].key);
			r->v[i] = r->v[--r->n];
			return;
		}
}

int64_t sync_retry_next(struct sync_retries *r)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC), next = 0;

	for (size_t i = 0; i < r->n;) {
		struct sync_retry *e = &r->v[i];

		if (now - e->seen_ns > RETRY_FORGET_NS) {
			free(e->key);
			*e = r->v[--r->n];
			continue;
		}
		if (!next || e->next_ns < next)
			next = e->next_ns;
		i++;
	}
	return next;
}

void sync_retries_release(struct sync_retries *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].key);
	free(r->v);
	*r = (struct sync_retries){ 0 };
}
