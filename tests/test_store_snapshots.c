/* Unit tests of store/'s snapshots (store.h, "snapshots"): committed whole
 * at close or not at all, immutable, their errors, removal, what recovery
 * leaves after a crash, and the choice of snapshot for a view.  The
 * fixture is store_fixture.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_fixture.h"
#include "unit.h"

#define MAX (1u << 20)

/* The path of F's snapshot directory of stream "s", with NAME below it. */
static void snap_path(struct fixture *f, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/tenants/t/snap/%016" PRIx64 "%s%s", f->dir, f->s,
		 name ? "/" : "", name ? name : "");
}

/* Files in the snapshot directory of stream "s" (0 when it is gone). */
static int count_files(struct fixture *f)
{
	char cmd[256], path[160];
	int n = -1;
	FILE *p;

	snap_path(f, NULL, path, sizeof(path));
	snprintf(cmd, sizeof(cmd), "ls -A '%s' 2>/dev/null | wc -l", path);
	p = popen(cmd, "r");
	if (p) {
		if (fscanf(p, "%d", &n) != 1)
			n = -1;
		pclose(p);
	}
	return n;
}

/* Stores DATA as the snapshot at VERSION. */
static int put(struct fixture *f, uint64_t version, const char *data)
{
	struct store_snap_writer *w;
	int rc = store_snapshot_begin(f->t, f->s, version, MAX, &w);

	if (rc)
		return rc;
	if (store_snapshot_write(w, data, strlen(data), 0) != (ssize_t)strlen(data)) {
		store_snapshot_abort(w);
		return -EIO;
	}
	return store_snapshot_commit(w);
}

/* The blob at VERSION as a string (static buffer), or "" if unreadable. */
static const char *blob(struct fixture *f, uint64_t version)
{
	static char buf[256];
	struct store_snapshot snap;
	ssize_t got = -1;
	int fd;

	buf[0] = '\0';
	if (store_snapshot_get(f->t, f->s, version, &snap) ||
	    store_snapshot_open(f->t, &snap, &fd))
		return buf;
	if (store_snapshot_verify(f->t, &snap, fd)) {
		close(fd);
		return buf;
	}
	got = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	buf[got > 0 ? got : 0] = '\0';
	return buf;
}

static void append_n(struct fixture *f, int n)
{
	for (int i = 0; i < n; i++)
		CHECK_EQ(fixture_append(f, "e\n", STORE_ANY_VERSION, false, NULL), 0);
}

static void test_atomic_at_close(void)
{
	struct store_snap_writer *w;
	struct store_snapshot snap;
	struct fixture f;

	fixture_setup(&f);
	append_n(&f, 3);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 2, MAX, &w), 0);
	CHECK_EQ(store_snapshot_write(w, "book", 4, 0), 4);
	CHECK_EQ(store_snapshot_write(w, "!", 1, 4), 1);
	CHECK_EQ(store_snapshot_written(w), 5);
	/* nothing is there before the commit */
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), -ENOENT);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 10, &snap), -ENOENT);
	CHECK_EQ(store_snapshot_commit(w), 0);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), 0);
	CHECK_EQ(snap.length, 5);
	CHECK(snap.time_ns > 0);
	CHECK_EQ(snap.state, STORE_SNAP_LOCAL);
	CHECK(!strcmp(blob(&f, 2), "book!"));
	CHECK_EQ(count_files(&f), 1);	/* no staging file left */
	/* an aborted one leaves nothing */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 3, MAX, &w), 0);
	CHECK_EQ(store_snapshot_write(w, "x", 1, 0), 1);
	store_snapshot_abort(w);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 3, &snap), -ENOENT);
	CHECK_EQ(count_files(&f), 1);
	/* committed ones outlast the process, fsynced or not */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 3, MAX, &w), 0);
	CHECK_EQ(store_snapshot_write(w, "three", 5, 0), 5);
	CHECK_EQ(store_snapshot_sync(w), 0);
	CHECK_EQ(store_snapshot_commit(w), 0);
	fixture_reopen(&f);
	CHECK(!strcmp(blob(&f, 2), "book!"));
	CHECK(!strcmp(blob(&f, 3), "three"));
	fixture_teardown(&f);
}

static void test_crash_while_writing(void)
{
	struct store_snap_writer *w;
	struct store_snapshot snap;
	struct fixture f;
	char path[200];
	int fd;

	fixture_setup(&f);
	append_n(&f, 3);
	CHECK_EQ(put(&f, 1, "one"), 0);
	/* a writer the process never closed: its staging file stays */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 2, MAX, &w), 0);
	CHECK_EQ(store_snapshot_write(w, "half", 4, 0), 4);
	/* a crash between the rename and the row: a blob no row names */
	snap_path(&f, "0000000000000003", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "orphan", 6), 6);
	close(fd);
	CHECK_EQ(count_files(&f), 3);
	fixture_reopen(&f);
	CHECK_EQ(count_files(&f), 1);	/* only the committed one */
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), -ENOENT);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 3, &snap), -ENOENT);
	CHECK(!strcmp(blob(&f, 1), "one"));
	store_snapshot_abort(w);
	/* a row whose blob a power cut lost is dropped */
	snap_path(&f, "0000000000000001", path, sizeof(path));
	CHECK_EQ(truncate(path, 1), 0);
	fixture_reopen(&f);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 1, &snap), -ENOENT);
	CHECK_EQ(count_files(&f), 0);
	CHECK_EQ(put(&f, 1, "again"), 0);
	CHECK(!strcmp(blob(&f, 1), "again"));
	fixture_teardown(&f);
}

static void test_errors(void)
{
	struct store_snap_writer *w, *w2;
	struct store_snapshot snap;
	struct fixture f;
	char big[64] = { 0 };

	fixture_setup(&f);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 1, MAX, &w), -EINVAL);	/* empty */
	append_n(&f, 2);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 0, MAX, &w), -EINVAL);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 3, MAX, &w), -EINVAL);
	CHECK_EQ(store_snapshot_begin(f.t, f.s + 100, 1, MAX, &w), -ENOENT);
	/* EEXIST: at begin once committed, at commit for the slower writer */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 1, MAX, &w), 0);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 1, MAX, &w2), 0);
	CHECK_EQ(store_snapshot_write(w, "first", 5, 0), 5);
	CHECK_EQ(store_snapshot_write(w2, "second", 6, 0), 6);
	CHECK_EQ(store_snapshot_commit(w), 0);
	CHECK_EQ(store_snapshot_commit(w2), -EEXIST);
	CHECK_EQ(put(&f, 1, "third"), -EEXIST);
	CHECK(!strcmp(blob(&f, 1), "first"));
	/* EFBIG: the write past the limit and the commit fail; nothing stays */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 2, 40, &w), 0);
	CHECK_EQ(store_snapshot_write(w, big, 32, 0), 32);
	CHECK_EQ(store_snapshot_write(w, big, 32, 32), -EFBIG);
	CHECK_EQ(store_snapshot_write(w, big, 1, 0), -EFBIG);
	CHECK_EQ(store_snapshot_commit(w), -EFBIG);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), -ENOENT);
	CHECK_EQ(count_files(&f), 1);
	/* exactly the limit is fine */
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 2, 40, &w), 0);
	CHECK_EQ(store_snapshot_write(w, big, 40, 0), 40);
	CHECK_EQ(store_snapshot_commit(w), 0);
	/* the stream removed under a writer */
	CHECK_EQ(store_snapshot_remove(f.t, f.s, 2), 0);
	CHECK_EQ(store_snapshot_begin(f.t, f.s, 2, MAX, &w), 0);
	CHECK_EQ(store_stream_remove(f.t, f.s), 0);
	CHECK_EQ(store_snapshot_commit(w), -ENOENT);
	fixture_teardown(&f);
}

static int count_snap(void *arg, const struct store_snapshot *snap)
{
	(void)snap;
	(*(int *)arg)++;
	return 0;
}

static void test_remove(void)
{
	struct store_snapshot snap;
	struct fixture f;
	uint64_t other;
	int n = 0;

	fixture_setup(&f);
	append_n(&f, 4);
	CHECK_EQ(put(&f, 2, "two"), 0);
	CHECK_EQ(put(&f, 4, "four"), 0);
	CHECK_EQ(store_snapshot_list(f.t, f.s, 0, count_snap, &n), 0);
	CHECK_EQ(n, 2);
	n = 0;
	CHECK_EQ(store_snapshot_list(f.t, f.s, 3, count_snap, &n), 0);
	CHECK_EQ(n, 1);
	CHECK_EQ(store_snapshot_remove(f.t, f.s, 2), 0);
	CHECK_EQ(store_snapshot_remove(f.t, f.s, 2), -ENOENT);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), -ENOENT);
	CHECK_EQ(count_files(&f), 1);
	/* it may be written again, once removed */
	CHECK_EQ(put(&f, 2, "two again"), 0);
	CHECK(!strcmp(blob(&f, 2), "two again"));
	/* removing the stream removes them all; a new stream starts clean */
	CHECK_EQ(store_stream_remove(f.t, f.s), 0);
	CHECK_EQ(count_files(&f), 0);
	CHECK_EQ(store_stream_create(f.t, "s", 0644, 0, 0, &other), 0);
	f.s = other;
	append_n(&f, 4);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), -ENOENT);
	CHECK_EQ(put(&f, 2, "new"), 0);
	fixture_reopen(&f);
	CHECK(!strcmp(blob(&f, 2), "new"));
	/* the tenant's removal takes them too */
	CHECK_EQ(store_stream_remove(f.t, f.s), 0);
	CHECK_EQ(store_tenant_remove(f.st, "t"), 0);
	fixture_teardown(&f);
}

static void test_selectors(void)
{
	struct store_snapshot snap;
	struct fixture f;

	fixture_setup(&f);
	append_n(&f, 10);
	CHECK_EQ(put(&f, 3, "three"), 0);
	CHECK_EQ(put(&f, 7, "seven"), 0);
	/* the newest strictly before the first event a selector reads */
	CHECK_EQ(store_snapshot_before(f.t, f.s, 1, &snap), -ENOENT);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 3, &snap), -ENOENT);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 4, &snap), 0);
	CHECK_EQ(snap.version, 3);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 7, &snap), 0);
	CHECK_EQ(snap.version, 3);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 8, &snap), 0);
	CHECK_EQ(snap.version, 7);
	CHECK_EQ(snap.length, 5);
	CHECK_EQ(store_snapshot_before(f.t, f.s, 11, &snap), 0);	/* end */
	CHECK_EQ(snap.version, 7);
	CHECK_EQ(store_snapshot_before(f.t, f.s, UINT64_MAX >> 1, &snap), 0);
	CHECK_EQ(snap.version, 7);
	fixture_teardown(&f);
}

/* store_verify checks snapshot blobs against their rows. */
static void test_verify(void)
{
	struct fixture f;
	char path[200];
	FILE *out = fopen("/dev/null", "w");
	int fd;

	fixture_setup(&f);
	append_n(&f, 3);
	CHECK_EQ(put(&f, 2, "the book"), 0);
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ(store_verify(f.dir, out), 0);
	snap_path(&f, "0000000000000002", path, sizeof(path));
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ(pwrite(fd, "l", 1, 4), 1);	/* same length, other bytes */
	close(fd);
	CHECK_EQ(store_verify(f.dir, out), 1);
	CHECK_EQ(unlink(path), 0);
	CHECK_EQ(store_verify(f.dir, out), 1);
	fclose(out);
	fixture_teardown(&f);
}

/* The snapshot fetch hook of test_evict: the remote's copy is ARG. */
static int fetch_blob(void *arg, struct store_tenant *t,
		      const struct store_snapshot *snap)
{
	const char *data = arg;
	struct store_snap_writer *w;
	int rc = store_snapshot_restore_begin(t, snap->stream, snap->version, &w);

	if (rc)
		return rc;
	if (store_snapshot_write(w, data, strlen(data), 0) != (ssize_t)strlen(data)) {
		store_snapshot_abort(w);
		return -EIO;
	}
	return store_snapshot_restore_commit(w);
}

/* A blob made here goes from the cache only once uploaded; its row then
 * says remote, across a restart too, and the next open fetches it. */
static void test_evict(void)
{
	static char remote_copy[] = "the book";
	struct store_snapshot snap;
	struct fixture f;

	fixture_setup(&f);
	append_n(&f, 3);
	CHECK_EQ(put(&f, 2, "the book"), 0);
	CHECK_EQ(store_snapshot_evict(f.t, f.s, 2), -EBUSY);
	CHECK_EQ(count_files(&f), 1);
	CHECK_EQ(store_snapshot_mark_uploaded(f.t, f.s, 2), 0);
	CHECK_EQ(store_snapshot_evict(f.t, f.s, 2), 0);
	CHECK_EQ(count_files(&f), 0);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), 0);
	CHECK_EQ(snap.state, STORE_SNAP_REMOTE);
	fixture_reopen(&f);
	CHECK_EQ(store_snapshot_get(f.t, f.s, 2, &snap), 0);
	store_set_snapshot_fetch_hook(f.st, fetch_blob, remote_copy);
	CHECK(!strcmp(blob(&f, 2), "the book"));
	CHECK_EQ(count_files(&f), 1);
	store_set_snapshot_fetch_hook(f.st, NULL, NULL);
	fixture_teardown(&f);
}

struct starts {
	uint64_t first[8];
	int n;
};

static int collect_start(void *arg, uint64_t first_version, int64_t time_ns)
{
	struct starts *s = arg;

	CHECK(time_ns > 0);
	if (s->n < 8)
		s->first[s->n++] = first_version;
	return 0;
}

static void test_segment_starts(void)
{
	struct starts s = { 0 };
	struct fixture f;

	fixture_setup(&f);
	append_n(&f, 2);
	CHECK_EQ(store_roll_all(f.st), 1);
	append_n(&f, 3);
	CHECK_EQ(store_roll_all(f.st), 1);
	append_n(&f, 1);
	CHECK_EQ(store_stream_segment_starts(f.t, f.s, 0, collect_start, &s), 0);
	CHECK_EQ(s.n, 3);
	CHECK_EQ(s.first[0], 1);
	CHECK_EQ(s.first[1], 3);
	CHECK_EQ(s.first[2], 6);
	s.n = 0;	/* only the segments starting at FROM or later */
	CHECK_EQ(store_stream_segment_starts(f.t, f.s, 2, collect_start, &s), 0);
	CHECK_EQ(s.n, 2);
	CHECK_EQ(s.first[0], 3);
	CHECK_EQ(s.first[1], 6);
	fixture_teardown(&f);
}

static const struct unit_test tests[] = {
	{ "atomic_at_close", test_atomic_at_close },
	{ "crash_while_writing", test_crash_while_writing },
	{ "errors", test_errors },
	{ "evict", test_evict },
	{ "remove", test_remove },
	{ "selectors", test_selectors },
	{ "segment_starts", test_segment_starts },
	{ "verify", test_verify },
};

int main(int argc, char **argv)
{
	return unit_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
