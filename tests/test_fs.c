/*
 * Unit tests of fs/ parts that need no mount: the selector parser of views
 * (fs/view.c) and the debug checks of fs/lock.h: holder and lock order.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs_int.h"
#include "unit.h"

static void test_sel_kinds(void)
{
	struct fs_sel sel;

	CHECK_EQ(fs_sel_parse("7", &sel), 0);
	CHECK_EQ(sel.kind, SEL_VERSION);
	CHECK_EQ(sel.n, 7);
	CHECK(!sel.follow);

	CHECK_EQ(fs_sel_parse("-10,follow", &sel), 0);
	CHECK_EQ(sel.kind, SEL_LAST);
	CHECK_EQ(sel.n, 10);
	CHECK(sel.follow);

	CHECK_EQ(fs_sel_parse("end,follow", &sel), 0);
	CHECK_EQ(sel.kind, SEL_END);
	CHECK(sel.follow);

	CHECK_EQ(fs_sel_parse("18446744073709551615", &sel), 0);
	CHECK(sel.n == UINT64_MAX);
}

/* ",snap" and ",follow" after the selector, in any order, once each. */
static void test_sel_words(void)
{
	struct fs_sel sel;
	uint64_t v;

	CHECK_EQ(fs_sel_parse("7,snap", &sel), 0);
	CHECK(sel.snap && !sel.follow);
	CHECK_EQ(sel.n, 7);
	CHECK_EQ(fs_sel_parse("-2,snap,follow", &sel), 0);
	CHECK(sel.snap && sel.follow);
	CHECK_EQ(sel.kind, SEL_LAST);
	CHECK_EQ(fs_sel_parse("end,follow,snap", &sel), 0);
	CHECK(sel.snap && sel.follow);
	CHECK_EQ(sel.kind, SEL_END);
	CHECK_EQ(fs_sel_parse("2026-11-22T10:00:00Z,snap", &sel), 0);
	CHECK_EQ(sel.kind, SEL_TIME);
	CHECK(sel.snap);
	CHECK_EQ(fs_sel_parse("7,snap,snap", &sel), -EINVAL);
	CHECK_EQ(fs_sel_parse("snap,7", &sel), -EINVAL);
	CHECK_EQ(fs_sel_parse(",snap", &sel), -EINVAL);
	CHECK_EQ(fs_sel_parse("7,", &sel), -EINVAL);
	CHECK_EQ(fs_snap_name_parse("snap=12", &v), 0);
	CHECK_EQ(v, 12);
	CHECK_EQ(fs_snap_name_parse("snap=0", &v), -EINVAL);
	CHECK_EQ(fs_snap_name_parse("snap=", &v), -EINVAL);
	CHECK_EQ(fs_snap_name_parse("12", &v), -EINVAL);
}

static void test_sel_time(void)
{
	struct fs_sel sel;

	CHECK_EQ(fs_sel_parse("2026-11-22T10:00:00Z", &sel), 0);
	CHECK_EQ(sel.kind, SEL_TIME);
	CHECK_EQ(sel.time_ns, 1795341600ll * 1000000000);
	CHECK_EQ(fs_sel_parse("2026-11-22T10:00:00.25+00:00,follow", &sel), 0);
	CHECK_EQ(sel.time_ns, 1795341600ll * 1000000000 + 250000000);
	CHECK(sel.follow);
	/* Far future: clamped, still a valid point past the end. */
	CHECK_EQ(fs_sel_parse("9999-12-31T23:59:59Z", &sel), 0);
	CHECK(sel.time_ns > 0);
}

static void test_sel_bad(void)
{
	static const char *const bad[] = {
		"", ",follow", "0", "-0", "-", "007", "x", "1x", "-3x",
		"18446744073709551616", "2026-11-22T10:00:00",
		"2026-11-22T10:00:00+01:00", "2026-13-01T00:00:00Z",
		"follow", "end,", "1,follow,follow",
	};
	struct fs_sel sel;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = fs_sel_parse(bad[i], &sel);

		if (rc != -EINVAL)
			fprintf(stderr, "selector '%s': %d\n", bad[i], rc);
		CHECK_EQ(rc, -EINVAL);
	}
}

#ifndef NDEBUG
struct other {
	struct fs_mutex *mu;
	bool held;
};

static void *held_elsewhere(void *arg)
{
	struct other *o = arg;

	o->held = fs_mutex_held(o->mu);
	return NULL;
}

static void test_mutex_holder(void)
{
	struct fs_mutex mu;
	pthread_cond_t cond;
	struct timespec ts;
	struct other o = { .mu = &mu, .held = true };
	pthread_t t;

	fs_mutex_init(&mu, FS_LOCK_NODES);
	pthread_cond_init(&cond, NULL);
	CHECK(!fs_mutex_held(&mu));
	fs_mutex_lock(&mu);
	CHECK(fs_mutex_held(&mu));
	/* Held, but by this thread: another one is told no. */
	CHECK_EQ(pthread_create(&t, NULL, held_elsewhere, &o), 0);
	pthread_join(t, NULL);
	CHECK(!o.held);
	/* A wait gives the mutex up and takes it back. */
	clock_gettime(CLOCK_REALTIME, &ts);
	CHECK_EQ(fs_cond_timedwait(&cond, &mu, &ts), ETIMEDOUT);
	CHECK(fs_mutex_held(&mu));
	fs_mutex_unlock(&mu);
	CHECK(!fs_mutex_held(&mu));
	pthread_cond_destroy(&cond);
	fs_mutex_destroy(&mu);
}

/* Whether taking FIRST, then SECOND, fails an assertion (in a child). */
static bool order_aborts(enum fs_lock_rank first, enum fs_lock_rank second)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		struct fs_mutex a, b;

		fs_mutex_init(&a, first);
		fs_mutex_init(&b, second);
		fs_mutex_lock(&a);
		fs_mutex_lock(&b);
		fs_mutex_unlock(&b);
		fs_mutex_unlock(&a);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return false;
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void test_lock_order(void)
{
	CHECK(!order_aborts(FS_LOCK_FILE, FS_LOCK_NODES));
	CHECK(!order_aborts(FS_LOCK_NODES, FS_LOCK_INVAL));
	CHECK(order_aborts(FS_LOCK_PARK, FS_LOCK_NODES));
	CHECK(order_aborts(FS_LOCK_FILE, FS_LOCK_FILE));
	CHECK(order_aborts(FS_LOCK_ALONE, FS_LOCK_INVAL));
	CHECK(order_aborts(FS_LOCK_INVAL, FS_LOCK_ALONE));
	CHECK_EQ(fs_lock_ranks_held, 0);
}
#endif

static const struct unit_test tests[] = {
	{ "sel_kinds", test_sel_kinds },
	{ "sel_words", test_sel_words },
	{ "sel_time", test_sel_time },
	{ "sel_bad", test_sel_bad },
#ifndef NDEBUG
	{ "mutex_holder", test_mutex_holder },
	{ "lock_order", test_lock_order },
#endif
};

int main(int argc, char **argv)
{
	return unit_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
