/*
 * check.h: the TAP-like checks shared by the C test programs of
 * tests/remote/ (backend_conformance, sync_test, replica_test).
 *
 * CHECK(cond, fmt, ...) prints "ok - ..." or "not ok (line N) - ..." and
 * counts; check_summary() prints the closing "N passed, N failed" line
 * the pytest drivers look for and returns the exit status (1 on any
 * failure).  Include it once per program: the counters are static.
 */
#ifndef STREAMFS_TESTS_CHECK_H
#define STREAMFS_TESTS_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (cond) {                                                 \
			passed++;                                           \
			printf("ok - ");                                    \
		} else {                                                    \
			failed++;                                           \
			printf("not ok (line %d) - ", __LINE__);            \
		}                                                           \
		printf(__VA_ARGS__);                                        \
		printf("\n");                                               \
		fflush(stdout);                                             \
	} while (0)

static inline int check_summary(void)
{
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
