/*
 * A minimal unit-test harness: CHECK records a failure and goes on, each
 * test is a function, main() runs them and prints "N passed, N failed".
 * A test program of several files counts its failures once: the files
 * without main() define UNIT_NO_MAIN before including this.
 */
#ifndef STREAMFS_TESTS_UNIT_H
#define STREAMFS_TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef UNIT_NO_MAIN
extern int unit_failures;
#else
int unit_failures;
#endif

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: %s: check failed: %s\n",     \
				__FILE__, __LINE__, __func__, #cond);        \
			unit_failures++;                                     \
		}                                                            \
	} while (0)

#define CHECK_EQ(a, b)                                                       \
	do {                                                                 \
		long long _a = (long long)(a), _b = (long long)(b);          \
		if (_a != _b) {                                              \
			fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s "  \
				"== %lld\n", __FILE__, __LINE__, __func__,   \
				#a, _a, #b, _b);                             \
			unit_failures++;                                     \
		}                                                            \
	} while (0)

struct unit_test {
	const char *name;
	void (*fn)(void);
};

#ifndef UNIT_NO_MAIN
static int unit_run(const struct unit_test *tests, size_t n, int argc,
		    char **argv)
{
	int passed = 0, failed = 0;

	for (size_t i = 0; i < n; i++) {
		int before = unit_failures;

		if (argc > 1 && strcmp(argv[1], tests[i].name))
			continue;
		tests[i].fn();
		if (unit_failures == before) {
			passed++;
			printf("ok - %s\n", tests[i].name);
		} else {
			failed++;
			printf("not ok - %s\n", tests[i].name);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
#endif

#endif
