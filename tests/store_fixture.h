/*
 * The fixture of store/'s unit tests (test_store.c, test_store_segments.c):
 * a store in a fresh /tmp directory with tenant "t" and stream "s", and
 * the helpers both files use.  A failed step is a CHECK failure of the
 * test that called it (unit.h).
 */
#ifndef STREAMFS_TESTS_STORE_FIXTURE_H
#define STREAMFS_TESTS_STORE_FIXTURE_H

#include "store_sync.h"

struct fixture {
	char dir[64];
	struct store_config cfg;
	struct store *st;
	struct store_tenant *t;
	uint64_t s;
};

/* Opens a new store in a new directory with CFG (NULL: the defaults) and
 * creates tenant "t" and stream "s" in it. */
void fixture_setup_with(struct fixture *f, const struct store_config *cfg);
void fixture_setup(struct fixture *f);
/* Closes F's store (if open) and opens it again: F->t and F->s anew. */
void fixture_reopen(struct fixture *f);
/* Closes F's store and removes its directory. */
void fixture_teardown(struct fixture *f);

/* Appends the string DATA to stream "s"; RES may be NULL. */
int fixture_append(struct fixture *f, const char *data, uint64_t expected,
		   bool final, struct store_append_result *res);
/* The whole stream as a NUL-terminated string (static buffer). */
const char *fixture_contents(struct fixture *f);
uint64_t fixture_version(struct fixture *f);

/* A store_segment_list() callback: counts into the int at ARG. */
int fixture_count_seg(void *arg, const struct store_segment *seg);
/* The number of sealed segments of F, once the sealer thread has sealed
 * WANT of them (or after 10 s). */
int fixture_wait_sealed(struct fixture *f, int want);

/* A segment listing callback that collects the first 16 segment ids. */
struct seg_ids {
	uint64_t v[16];
	int n;
};

int fixture_collect_seg_id(void *arg, const struct store_segment *seg);

#endif
