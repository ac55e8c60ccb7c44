/* Unit tests of store/: segments and what outlasts a process, through the
 * public API of store.h and store_sync.h: rolling and sealing by age,
 * store_util.h, durable marks and recovery, eviction and restore, verify,
 * replicas, schema migration.  A stream's events are in test_store.c; the
 * fixture is store_fixture.h. */
#include <errno.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <xxhash.h>

#include "store_fixture.h"
#include "store_util.h"
#include "unit.h"

/* ---- segments ---- */

static char *seg_file(struct fixture *f, uint64_t seg)
{
	return store_segment_path(f->t, seg);
}

static int first_sealed(void *arg, const struct store_segment *seg)
{
	uint64_t *out = arg;

	if (!*out)
		*out = seg->seg;
	return 0;
}

static void test_rolling(void)
{
	struct store_config cfg;
	struct fixture f;
	char line[128];

	store_config_default(&cfg);
	cfg.roll_size = 1000;
	fixture_setup_with(&f, &cfg);
	for (int i = 0; i < 100; i++) {
		snprintf(line, sizeof(line), "line %03d of the rolling test.....\n", i);
		CHECK_EQ(fixture_append(&f, line,
					STORE_ANY_VERSION, false, NULL), 0);
	}
	/* full segments are sealed by the sealer thread, off the append path */
	CHECK_EQ(fixture_wait_sealed(&f, 3), 3);
	/* age: nothing is old yet; force seals the active one */
	CHECK_EQ(store_roll(f.t, 0, false), 0);
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 1);
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 0);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), 100);
	fixture_teardown(&f);
}

static int count_chunk(void *arg, const void *p, size_t n)
{
	(void)p;
	*(size_t *)arg += n;
	return 0;
}

/* store_util.h: whole reads and writes, a file's XXH3 in chunks, and the
 * growable array. */
static void test_util(void)
{
	char path[] = "/tmp/streamfs-unit-util-XXXXXX";
	size_t len = (3u << 20) + 123, seen = 0, cap = 0;
	char *data = malloc(len), *back = malloc(len);
	uint64_t sum = 0, *v = NULL;
	int fd = mkstemp(path);

	CHECK(fd >= 0 && data && back);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 + i / 4096);
	CHECK_EQ(store_pwrite_all(fd, data, len, 0), 0);
	CHECK_EQ(store_pread_all(fd, back, len, 0), 0);
	CHECK_EQ(memcmp(data, back, len), 0);
	CHECK_EQ(store_pread_all(fd, back, 2, len - 1), -EIO);	/* past the end */
	CHECK_EQ(store_file_checksum(fd, len, &sum), 0);
	CHECK_EQ(sum, XXH3_64bits(data, len));
	CHECK_EQ(store_file_chunks(fd, len - 5, count_chunk, &seen), 0);
	CHECK_EQ(seen, len - 5);
	CHECK_EQ(store_file_checksum(fd, len + 1, &sum), -EIO);
	for (uint64_t i = 0; i < 1000; i++) {
		CHECK_EQ(STORE_ARRAY_RESERVE(v, cap, i + 1, 8), 0);
		v[i] = i * i;
	}
	CHECK(cap >= 1000 && cap < 2000);
	for (uint64_t i = 0; i < 1000; i++)
		CHECK_EQ(v[i], i * i);
	CHECK_EQ(STORE_ARRAY_RESERVE(v, cap, 10, 8), 0);	/* room already */
	CHECK(cap >= 1000 && cap < 2000);
	free(v);
	free(data);
	free(back);
	close(fd);
	unlink(path);
}

/* The sealer seals an active segment once it is roll_age old, with nobody
 * calling store_roll(); not before, and the next append opens a new one. */
static void test_roll_by_age(void)
{
	struct store_config cfg;
	struct fixture f;
	int n = 0;

	store_config_default(&cfg);
	cfg.roll_age_ns = 1000000000;
	fixture_setup_with(&f, &cfg);
	CHECK_EQ(fixture_append(&f, "before its age\n",
				STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(store_segment_list(f.t, STORE_SEG_SEALED, fixture_count_seg,
				    &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(fixture_wait_sealed(&f, 1), 1);
	CHECK_EQ(fixture_append(&f, "after it\n",
				STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(fixture_version(&f), 2);
	CHECK_EQ(fixture_wait_sealed(&f, 2), 2);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), 2);
	fixture_teardown(&f);
}

/* A segment that reaches roll_size exactly is sealed without waiting for
 * the next append; that append opens a new segment. */
static void test_full_segment(void)
{
	struct store_config cfg;
	struct fixture f;

	store_config_default(&cfg);
	cfg.roll_size = 10 * 5;
	fixture_setup_with(&f, &cfg);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(fixture_append(&f, "1234\n",
					STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(fixture_wait_sealed(&f, 1), 1);
	CHECK_EQ(fixture_append(&f, "after\n", 10, false, NULL), 0);
	CHECK_EQ(strcmp(fixture_contents(&f), "1234\n1234\n1234\n1234\n1234\n"
			"1234\n1234\n1234\n1234\n1234\nafter\n"), 0);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), 11);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	fixture_teardown(&f);
}

/* The child of test_durable_mark: a first fsync the usual way, a copy of
 * the index as the disk then holds it, two appends made durable by one
 * fsync (a mark), one more append, and death without a close. */
static void mark_child(const char *dir)
{
	struct fixture f;
	char cmd[512], *seg;
	uint64_t id = 0;

	memset(&f, 0, sizeof(f));
	strcpy(f.dir, dir);
	store_config_default(&f.cfg);
	fixture_reopen(&f);
	CHECK_EQ(fixture_append(&f, "a1\n", 0, false, NULL), 0);
	CHECK_EQ(store_sync_stream(f.t, f.s), 0);
	snprintf(cmd, sizeof(cmd), "cd %s/tenants/t && cp index.db snap.db &&"
		 " cp index.db-wal snap.db-wal", dir);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(fixture_append(&f, "b2\n", 1, false, NULL), 0);
	CHECK_EQ(fixture_append(&f, "c3\n", 2, false, NULL), 0);
	CHECK_EQ(store_sync_stream(f.t, f.s), 0);
	CHECK_EQ(store_stream_segments(f.t, f.s, first_sealed, &id), 0);
	seg = store_segment_path(f.t, id);
	CHECK(getxattr(seg, "user.streamfs.durable1", NULL, 0) > 0);
	free(seg);
	CHECK_EQ(fixture_append(&f, "d4\n", 3, false, NULL), 0);
	_exit(unit_failures ? 1 : 0);
}

/* A power cut after mark_child: the index as of the first fsync, no
 * journal, the bytes past the mark lost, and (TEAR) a byte of the marked
 * ones damaged.  Returns the stream after reopening. */
static const char *mark_power_cut(struct fixture *f, bool tear)
{
	char cmd[768];
	pid_t pid;
	int status;

	store_close(f->st);
	f->st = NULL;
	pid = fork();
	if (!pid)
		mark_child(f->dir);
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	snprintf(cmd, sizeof(cmd), "cd %s/tenants/t && mv snap.db index.db &&"
		 " mv snap.db-wal index.db-wal && rm -f index.db-shm &&"
		 " : > journal && truncate -s 9 seg/*.seg%s", f->dir,
		 tear ? " && printf X | dd of=$(ls seg/*.seg) bs=1 seek=4"
			" conv=notrunc status=none" : "");
	CHECK_EQ(system(cmd), 0);
	fixture_reopen(f);
	return fixture_contents(f);
}

/* fsync(2) of a stream whose segment was synced before is one flush: a
 * durable mark on the segment file.  After a power cut that takes the
 * index back and the journal away, the marked events come back from the
 * bytes; a mark whose bytes do not hash to it is ignored. */
static void test_durable_mark(void)
{
	struct fixture f;

	fixture_setup(&f);
	CHECK_EQ(strcmp(mark_power_cut(&f, false), "a1\nb2\nc3\n"), 0);
	CHECK_EQ(fixture_version(&f), 3);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	CHECK_EQ(fixture_append(&f, "e5\n", 3, false, NULL), 0);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), 4);
	fixture_teardown(&f);

	fixture_setup(&f);
	CHECK_EQ(strcmp(mark_power_cut(&f, true), "a1\n"), 0);
	CHECK_EQ(fixture_version(&f), 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	fixture_teardown(&f);
}

/* Puts segments A and B of F's store back in the state of full segments
 * the sealer had not reached (as a power cut could leave them) and takes
 * CUT bytes off the end of A's file. */
static void unseal(struct fixture *f, uint64_t a, uint64_t b, int cut)
{
	char *path = store_segment_path(f->t, a), cmd[512];
	struct stat sb;

	store_close(f->st);
	f->st = NULL;
	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db 'UPDATE segments"
		 " SET state = 0, synced = 0, checksum = 0 WHERE id IN (%llu, %llu)'",
		 f->dir, (unsigned long long)a, (unsigned long long)b);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(stat(path, &sb), 0);
	CHECK_EQ(truncate(path, sb.st_size - cut), 0);
	free(path);
}

/* Full segments not sealed yet at a crash: intact ones are sealed after
 * the next open; where one is torn, the stream ends inside it and the
 * segments after it go, so that what remains is a prefix. */
static void test_closing_recovery(void)
{
	struct store_config cfg;
	struct fixture f;
	struct seg_ids sealed = { 0 };
	char line[128], want[1 << 14] = "";
	uint64_t v;

	store_config_default(&cfg);
	cfg.roll_size = 1000;
	fixture_setup_with(&f, &cfg);
	for (int i = 0; i < 100; i++) {
		snprintf(line, sizeof(line), "line %03d of the closing test.....\n", i);
		CHECK_EQ(fixture_append(&f, line,
					STORE_ANY_VERSION, false, NULL), 0);
		strcat(want, line);
	}
	CHECK_EQ(store_roll(f.t, INT64_MAX, false) >= 1, 1);
	store_segment_list(f.t, STORE_SEG_SEALED, fixture_collect_seg_id,
			   &sealed);
	CHECK_EQ(sealed.n, 4);

	/* intact: nothing is lost, and the closing one is sealed again */
	unseal(&f, sealed.v[2], sealed.v[3], 0);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), 100);
	CHECK_EQ(strcmp(fixture_contents(&f), want), 0);
	/* by the sealer: a roll that is not forced leaves closing ones to it */
	CHECK_EQ(store_roll(f.t, 0, false), 0);
	CHECK_EQ(fixture_wait_sealed(&f, 3), 3);
	CHECK_EQ(store_verify(f.dir, stderr), 0);

	/* torn: the stream ends inside segment 3 (29 lines of 34 bytes a
	 * segment; rows merged at group commit go whole), and segment 4 goes */
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 1);
	unseal(&f, sealed.v[2], sealed.v[3], 10);
	fixture_reopen(&f);
	v = fixture_version(&f);
	CHECK(v >= 2 * 29 && v <= 2 * 29 + 28);
	want[34 * v] = '\0';
	CHECK_EQ(strcmp(fixture_contents(&f), want), 0);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	CHECK_EQ(fixture_append(&f, "after the cut\n", v, false, NULL), 0);
	CHECK_EQ(fixture_version(&f), v + 1);
	fixture_reopen(&f);
	CHECK_EQ(fixture_version(&f), v + 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	fixture_teardown(&f);
}

static int seg_state_of(void *arg, const struct store_segment *seg)
{
	struct store_segment *want = arg;

	if (seg->seg == want->seg)
		*want = *seg;
	return 0;
}

/* The state of segment SEG of F's stream, as the store sees it now. */
static int segment_state(struct fixture *f, uint64_t seg)
{
	struct store_segment g = { .seg = seg, .state = -1 };

	CHECK_EQ(store_stream_segments(f->t, f->s, seg_state_of, &g), 0);
	return (int)g.state;
}

static void test_evict_restore(void)
{
	struct fixture f;
	uint64_t seg = 0;
	char *path, *copy, buf[64], cmd[512];

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "one\ntwo\n",
				STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(store_segment_evict(f.t, 1), -EBUSY);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	store_segment_list(f.t, STORE_SEG_SEALED, first_sealed, &seg);
	CHECK(seg != 0);
	CHECK_EQ(store_segment_evict(f.t, seg), -EBUSY);	/* not uploaded */
	CHECK_EQ(store_segment_mark_uploaded(f.t, seg), 0);
	path = seg_file(&f, seg);
	CHECK(asprintf(&copy, "%s.fetched", path) > 0);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, copy);
	CHECK_EQ(system(cmd), 0);
	CHECK(!store_segment_evicted(f.t, seg));
	CHECK_EQ(store_segment_evict(f.t, seg), 0);
	CHECK(store_segment_evicted(f.t, seg));
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), -EIO);
	/* a damaged copy is refused, a good one restores the data */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s.bad' && printf X | dd of='%s.bad'"
		 " bs=1 seek=1 conv=notrunc status=none", copy, copy, copy);
	CHECK_EQ(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s.bad", copy);
	CHECK_EQ(store_segment_restore(f.t, seg, cmd), -EIO);
	/* a hash taken while writing the copy stands for reading it back */
	CHECK_EQ(store_segment_restore_hashed(f.t, seg, copy,
					      XXH3_64bits("one\ntwo", 7)), -EIO);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s.2'", copy, copy);
	CHECK_EQ(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s.2", copy);
	CHECK_EQ(store_segment_restore_hashed(f.t, seg, cmd,
					      XXH3_64bits("one\ntwo\n", 8)), 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 8);
	CHECK(!store_segment_evicted(f.t, seg));
	CHECK_EQ(store_segment_evict(f.t, seg), 0);
	snprintf(cmd, sizeof(cmd), "%s.bad", copy);
	CHECK_EQ(store_segment_restore(f.t, seg, copy), 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 8);
	CHECK(!memcmp(buf, "one\ntwo\n", 8));
	/* the sealer (or, at the latest, the close) flushes the copy and
	 * records it present */
	fixture_reopen(&f);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 8);
	CHECK_EQ(segment_state(&f, seg), STORE_SEG_UPLOADED);
	/* a power cut before that flush: the row still says evicted; the copy
	 * left behind is not trusted but removed at open, a new one replaces it */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/saved'", path, f.dir);
	CHECK_EQ(system(cmd), 0);
	store_close(f.st);
	f.st = NULL;
	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db 'UPDATE segments"
		 " SET state = %d WHERE id = %llu'", f.dir, STORE_SEG_EVICTED,
		 (unsigned long long)seg);
	CHECK_EQ(system(cmd), 0);
	fixture_reopen(&f);
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), -EIO);
	snprintf(cmd, sizeof(cmd), "mv '%s/saved' '%s'", f.dir, copy);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(store_segment_restore(f.t, seg, copy), 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 8);
	CHECK(!memcmp(buf, "one\ntwo\n", 8));
	/* evicted again before the flush: the row says evicted, the file goes */
	CHECK_EQ(store_segment_evict(f.t, seg), 0);
	fixture_reopen(&f);
	CHECK_EQ(segment_state(&f, seg), STORE_SEG_EVICTED);
	CHECK(access(path, F_OK) != 0);
	snprintf(cmd, sizeof(cmd), "%s.bad", copy);
	unlink(cmd);
	free(copy);
	free(path);
	fixture_teardown(&f);
}

/* The state the index row of SEG says, read by another process as a
 * power cut would leave it (WAL included). */
static int row_state(struct fixture *f, uint64_t seg)
{
	char cmd[512];
	int state = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db 'SELECT state"
		 " FROM segments WHERE id = %llu'", f->dir,
		 (unsigned long long)seg);
	p = popen(cmd, "r");
	CHECK(p != NULL);
	CHECK_EQ(fscanf(p, "%d", &state), 1);
	pclose(p);
	return state;
}

/* Evicts F's first sealed segment and restores it from a copy; returns it. */
static uint64_t evict_and_restore(struct fixture *f)
{
	uint64_t seg = 0;
	char *path, cmd[512], buf[16];

	CHECK_EQ(fixture_append(f, "one\ntwo\n",
				STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(store_roll(f->t, 0, true), 1);
	store_segment_list(f->t, STORE_SEG_SEALED, first_sealed, &seg);
	CHECK_EQ(store_segment_mark_uploaded(f->t, seg), 0);
	path = seg_file(f, seg);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s.fetched'", path, path);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(store_segment_evict(f->t, seg), 0);
	snprintf(cmd, sizeof(cmd), "%s.fetched", path);
	CHECK_EQ(store_segment_restore(f->t, seg, cmd), 0);
	CHECK_EQ(store_read(f->t, f->s, buf, sizeof(buf), 0), 8);
	free(path);
	return seg;
}

/* A restored copy is flushed and recorded present restore_flush_ns after
 * its restore, or at close if that comes first. */
static void test_restored_flush_delay(void)
{
	struct store_config cfg;
	struct fixture f;
	uint64_t seg;
	int tries;

	store_config_default(&cfg);
	CHECK_EQ(cfg.restore_flush_ns, 30ll * 1000000000);
	cfg.restore_flush_ns = 3600ll * 1000000000;
	fixture_setup_with(&f, &cfg);
	seg = evict_and_restore(&f);
	usleep(200 * 1000);	/* time for a sealer that would flush now */
	CHECK_EQ(row_state(&f, seg), STORE_SEG_EVICTED);
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ(row_state(&f, seg), STORE_SEG_UPLOADED);
	fixture_teardown(&f);

	cfg.restore_flush_ns = 50 * 1000000;
	fixture_setup_with(&f, &cfg);
	seg = evict_and_restore(&f);
	for (tries = 0; tries < 200 && row_state(&f, seg) != STORE_SEG_UPLOADED;
	     tries++)
		usleep(50 * 1000);
	CHECK(tries < 200);
	fixture_teardown(&f);
}

static void test_verify_damage(void)
{
	struct fixture f;
	uint64_t seg = 0;
	char *path, cmd[512];
	FILE *devnull = fopen("/dev/null", "w");

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "alpha\nbeta\n",
				STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	CHECK_EQ(fixture_append(&f, "gamma\n",
				STORE_ANY_VERSION, false, NULL), 0);
	store_segment_list(f.t, STORE_SEG_SEALED, first_sealed, &seg);
	path = seg_file(&f, seg);
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ(store_verify(f.dir, devnull), 0);
	/* a flipped byte in a sealed segment */
	snprintf(cmd, sizeof(cmd), "printf A | dd of='%s' bs=1 seek=2 conv=notrunc"
		 " status=none", path);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(store_verify(f.dir, devnull), 1);
	/* restored, then truncated */
	snprintf(cmd, sizeof(cmd), "printf p | dd of='%s' bs=1 seek=2 conv=notrunc"
		 " status=none", path);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(store_verify(f.dir, devnull), 0);
	CHECK_EQ(truncate(path, 4), 0);
	CHECK_EQ(store_verify(f.dir, devnull), 1);
	fclose(devnull);
	free(path);
	fixture_teardown(&f);
}

/* More streams with data than the process may open files: the store keeps
 * only a budget of segment files open. */
static void test_many_streams(void)
{
	struct rlimit old, low = { .rlim_cur = 128 };
	struct fixture f;
	char name[32], buf[64];
	uint64_t id;

	CHECK_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
	low.rlim_max = old.rlim_max;
	CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
	fixture_setup(&f);
	for (int i = 0; i < 500; i++) {
		struct store_append app = { .buf = name, .expected = 0 };
		struct store_append_result r;

		snprintf(name, sizeof(name), "stream-%d\n", i);
		app.len = strlen(name);
		name[app.len - 1] = '\0';
		CHECK_EQ(store_stream_create(f.t, name, 0644, 0, 0, &id), 0);
		name[app.len - 1] = '\n';
		CHECK_EQ(store_append(f.t, id, &app, &r), 0);
	}
	fixture_reopen(&f);
	for (int i = 0; i < 500; i += 7) {
		snprintf(name, sizeof(name), "stream-%d", i);
		CHECK_EQ(store_stream_lookup(f.t, name, &id), 0);
		CHECK_EQ(store_read(f.t, id, buf, sizeof(buf), 0), strlen(name) + 1);
	}
	CHECK_EQ(store_stream_count(f.t), 501);
	fixture_teardown(&f);
	CHECK_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* ---- replicas and fetching ---- */

struct copy_hook {
	struct fixture *from;	/* the writer's store */
	int calls;
	bool fail, corrupt;
	int reached;		/* first reads of restored segments */
	uint64_t reached_seg;
};

/* A fetch hook that "downloads" the writer's segment file. */
static int fetch_copy(void *arg, struct store_tenant *t,
		      const struct store_segment *seg)
{
	struct copy_hook *h = arg;
	char *src = store_segment_path(h->from->t, seg->origin);
	char *dst = store_segment_path(t, seg->seg), tmp[600], cmd[1400];
	int rc;

	h->calls++;
	snprintf(tmp, sizeof(tmp), "%s.fetch", dst);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, tmp);
	if (h->corrupt)
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && printf Z | dd of='%s'"
			 " bs=1 seek=0 conv=notrunc status=none", src, tmp, tmp);
	rc = h->fail ? -EIO : system(cmd) ? -EIO : store_segment_restore(t, seg->seg, tmp);
	unlink(tmp);
	free(src);
	free(dst);
	return rc;
}

static void reached_note(void *arg, struct store_tenant *t,
			 const struct store_segment *seg)
{
	struct copy_hook *h = arg;

	(void)t;
	CHECK(seg->state != STORE_SEG_EVICTED);
	h->reached++;
	h->reached_seg = seg->seg;
}

struct seg_list {
	struct store_segment v[16];
	size_t n;
};

static int collect_seg(void *arg, const struct store_segment *seg)
{
	struct seg_list *l = arg;

	if (l->n < 16)
		l->v[l->n++] = *seg;
	return 0;
}

struct batch_vec {
	struct store_batch v[64];
	size_t n;
};

static int collect_batch(void *arg, const struct store_batch *b)
{
	struct batch_vec *l = arg;

	if (l->n < 64)
		l->v[l->n++] = *b;
	return 0;
}

static void test_replica(void)
{
	struct fixture w, r;
	struct copy_hook hook = { .from = &w };
	struct seg_list segs = { 0 };
	struct batch_vec b0 = { 0 }, b1 = { 0 };
	char wbuf[256], rbuf[256];
	uint64_t off_w, off_r;

	fixture_setup(&w);
	fixture_setup(&r);
	store_set_fetch_hook(r.st, fetch_copy, reached_note, &hook);
	CHECK_EQ(fixture_append(&w, "a\nbb\n", 0, false, NULL), 0);
	CHECK_EQ(fixture_append(&w, "ccc\n", 2, false, NULL), 0);
	CHECK_EQ(store_roll(w.t, 0, true), 1);
	CHECK_EQ(fixture_append(&w, "dddd\neeeee\n", 3, false, NULL), 0);
	CHECK_EQ(store_roll(w.t, 0, true), 1);
	CHECK_EQ(store_stream_segments(w.t, w.s, collect_seg, &segs), 0);
	CHECK_EQ(segs.n, 2);
	CHECK_EQ(store_segment_batches(w.t, segs.v[0].seg, collect_batch, &b0), 0);
	CHECK_EQ(store_segment_batches(w.t, segs.v[1].seg, collect_batch, &b1), 0);
	CHECK_EQ(b0.n, 2);
	CHECK_EQ(b0.v[0].count, 2);
	CHECK_EQ(b0.v[1].count, 1);
	CHECK_EQ(b1.n, 1);
	CHECK_EQ(b1.v[0].count, 2);
	/* a segment that does not continue the stream is refused */
	CHECK_EQ(store_replica_add(r.t, r.s, &segs.v[1], b1.v, b1.n), -EINVAL);
	CHECK_EQ(store_replica_add(r.t, r.s, &segs.v[0], b0.v, b0.n), 0);
	CHECK_EQ(store_replica_add(r.t, r.s, &segs.v[1], b1.v, b1.n), 0);
	CHECK_EQ(fixture_version(&r), 5);
	CHECK_EQ(hook.calls, 0);	/* nothing fetched before a read */
	/* a fetch that fails, then one that brings a damaged copy: EIO */
	hook.fail = true;
	CHECK_EQ(store_read(r.t, r.s, rbuf, sizeof(rbuf), 0), -EIO);
	hook.fail = false;
	hook.corrupt = true;
	CHECK_EQ(store_read(r.t, r.s, rbuf, sizeof(rbuf), 0), -EIO);
	hook.corrupt = false;
	hook.calls = 0;
	CHECK_EQ(store_read(w.t, w.s, wbuf, sizeof(wbuf), 0), 20);
	CHECK_EQ(store_read(r.t, r.s, rbuf, 9, 0), 9);
	CHECK_EQ(hook.reached, 1);	/* the first read of each restored one */
	CHECK_EQ(store_read(r.t, r.s, rbuf + 9, sizeof(rbuf) - 9, 9), 11);
	CHECK(!memcmp(wbuf, rbuf, 20));
	CHECK_EQ(hook.calls, 2);
	CHECK_EQ(hook.reached, 2);
	CHECK_EQ(store_read(r.t, r.s, rbuf, sizeof(rbuf), 0), 20);
	CHECK_EQ(hook.reached, 2);
	for (uint64_t v = 1; v <= 6; v++) {
		CHECK_EQ(store_offset_of_version(w.t, w.s, v, &off_w), 0);
		CHECK_EQ(store_offset_of_version(r.t, r.s, v, &off_r), 0);
		CHECK_EQ(off_w, off_r);
	}
	/* segments of the replica can be evicted and come back */
	segs.n = 0;
	CHECK_EQ(store_stream_segments(r.t, r.s, collect_seg, &segs), 0);
	CHECK_EQ(segs.v[0].state, STORE_SEG_UPLOADED);
	CHECK(segs.v[0].origin != 0);
	CHECK_EQ(store_segment_evict(r.t, segs.v[0].seg), 0);
	CHECK_EQ(store_offset_of_version(r.t, r.s, 2, &off_r), 0);
	CHECK_EQ(off_r, 2);
	CHECK_EQ(hook.calls, 3);
	CHECK_EQ(hook.reached, 3);
	CHECK_EQ(hook.reached_seg, segs.v[0].seg);
	fixture_reopen(&r);
	CHECK_EQ(fixture_version(&r), 5);
	CHECK_EQ(store_verify(r.dir, stderr), 0);
	fixture_teardown(&r);
	fixture_teardown(&w);
}

/* A writer that takes a tenant over seeds its predecessor's tail pieces
 * (store_seed_tail_append): their bytes become its active segment under
 * the predecessor's id, its appends continue that segment, the IDs in it
 * deduplicate, the predecessor's next segment closes it, and all of it
 * survives a reopen and verifies. */
static void test_seed_tail(void)
{
	static const char first[] = "{\"id\":\"a\"}\nb\n";
	struct fixture w, r;
	struct seg_list segs = { 0 };
	struct batch_vec b = { 0 };
	struct store_append_result res;
	struct store_batch d;
	int64_t made;	/* now-ish: an old segment would be sealed by age */

	fixture_setup(&w);
	fixture_setup(&r);
	CHECK_EQ(fixture_append(&w, "{\"id\":\"a\"}\n", 0, false, NULL), 0);
	CHECK_EQ(fixture_append(&w, "b\n", 1, false, NULL), 0);
	CHECK_EQ(store_stream_segments(w.t, w.s, collect_seg, &segs), 0);
	CHECK_EQ(segs.n, 1);
	CHECK_EQ(store_segment_batches(w.t, segs.v[0].seg, collect_batch, &b), 0);
	CHECK_EQ(b.n, 2);
	made = segs.v[0].created_ns;
	/* not where the stream ends, or rows that do not add up: refused */
	CHECK_EQ(store_seed_tail_append(r.t, r.s, 7, 5, made, first, 13, b.v, 2), -EINVAL);
	CHECK_EQ(store_seed_tail_append(r.t, r.s, 7, 0, made, first, 12, b.v, 2), -EINVAL);
	CHECK_EQ(store_seed_tail_append(r.t, r.s, 7, 0, made, first, 11, b.v, 1), 0);
	CHECK_EQ(store_seed_tail_append(r.t, r.s, 7, 0, made, first + 11, 2, b.v + 1, 1), 0);
	CHECK_EQ(fixture_version(&r), 2);
	CHECK_EQ(strcmp(fixture_contents(&r), first), 0);
	/* a retried event of the predecessor is skipped; the rest goes on in
	 * segment 7 */
	CHECK_EQ(fixture_append(&r, "{\"id\":\"a\"}\nc\n", 2, false, &res), 0);
	CHECK_EQ(res.skipped, 1);
	CHECK_EQ(fixture_version(&r), 3);
	segs.n = 0;
	CHECK_EQ(store_stream_segments(r.t, r.s, collect_seg, &segs), 0);
	CHECK_EQ(segs.n, 1);
	CHECK_EQ(segs.v[0].seg, 7);
	CHECK_EQ(segs.v[0].state, STORE_SEG_ACTIVE);
	CHECK_EQ(segs.v[0].length, 15);
	/* the predecessor's next segment: 7 closes, 9 takes the appends */
	d = (struct store_batch){ .first_version = 4, .count = 1, .offset = 15,
				  .length = 2, .time_ns = 5,
				  .hash = XXH3_64bits("d\n", 2) };
	CHECK_EQ(store_seed_tail_append(r.t, r.s, 9, 15, made + 1, "d\n", 2, &d, 1), 0);
	fixture_reopen(&r);
	CHECK_EQ(fixture_version(&r), 4);
	CHECK_EQ(fixture_append(&r, "e\n", 4, false, NULL), 0);
	CHECK_EQ(strcmp(fixture_contents(&r), "{\"id\":\"a\"}\nb\nc\nd\ne\n"), 0);
	segs.n = 0;
	CHECK_EQ(store_stream_segments(r.t, r.s, collect_seg, &segs), 0);
	CHECK_EQ(segs.n, 2);
	CHECK_EQ(segs.v[0].seg, 7);
	CHECK(segs.v[0].state == STORE_SEG_SEALED);
	CHECK_EQ(segs.v[1].seg, 9);
	CHECK_EQ(segs.v[1].length, 4);
	CHECK_EQ(store_verify(r.dir, stderr), 0);
	fixture_teardown(&r);
	fixture_teardown(&w);
}

/* A fetch hook that restores a segment from the copy saved in the store's
 * directory (the segment directory keeps only its own files). */
struct saved_hook {
	const char *dir;
	int calls;
};

static int fetch_saved(void *arg, struct store_tenant *t,
		       const struct store_segment *seg)
{
	struct saved_hook *h = arg;
	char *path = store_segment_path(t, seg->seg), cmd[1400];
	int rc;

	h->calls++;
	snprintf(cmd, sizeof(cmd), "cp '%s/saved-%llu' '%s.fetch'", h->dir,
		 (unsigned long long)seg->seg, path);
	rc = system(cmd) ? -EIO : 0;
	snprintf(cmd, sizeof(cmd), "%s.fetch", path);
	if (!rc)
		rc = store_segment_restore(t, seg->seg, cmd);
	free(path);
	return rc;
}

static void reached_none(void *arg, struct store_tenant *t,
			 const struct store_segment *seg)
{
	(void)arg;
	(void)t;
	(void)seg;
}

/* Evicts every sealed segment of F, its ID table gone (as a seeded one
 * has none), its bytes saved for fetch_saved(). */
static void evict_all_saved(struct fixture *f)
{
	struct seg_ids ids = { 0 };
	char cmd[1400];

	CHECK_EQ(store_segment_list(f->t, STORE_SEG_SEALED,
				    fixture_collect_seg_id, &ids), 0);
	CHECK(ids.n >= 12);
	for (int i = 0; i < ids.n; i++) {
		char *path = seg_file(f, ids.v[i]);
		size_t len = strlen(path) - strlen(".seg");

		CHECK_EQ(store_segment_mark_uploaded(f->t, ids.v[i]), 0);
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s/saved-%llu' && rm -f '%.*s.ids'",
			 path, f->dir, (unsigned long long)ids.v[i], (int)len, path);
		CHECK_EQ(system(cmd), 0);
		CHECK_EQ(store_segment_evict(f->t, ids.v[i]), 0);
		free(path);
	}
}

/* Dedup of an append needs the IDs of every sealed segment: with more
 * evicted ones than FETCH_TRIES, each is fetched in turn. */
static void test_dedup_fetches_every_segment(void)
{
	struct store_append_result r;
	struct fixture f;
	struct saved_hook hook = { .dir = f.dir };
	char line[64];

	fixture_setup(&f);
	for (int i = 0; i < 12; i++) {
		snprintf(line, sizeof(line), "{\"id\":\"e%d\"}\n", i);
		CHECK_EQ(fixture_append(&f, line, STORE_ANY_VERSION, false, NULL), 0);
		CHECK_EQ(store_roll(f.t, 0, true), 1);
	}
	evict_all_saved(&f);
	fixture_reopen(&f);
	store_set_fetch_hook(f.st, fetch_saved, reached_none, &hook);
	CHECK_EQ(fixture_append(&f, "{\"id\":\"e11\"}\n{\"id\":\"e12\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(hook.calls, 12);
	store_set_fetch_hook(f.st, NULL, NULL, NULL);
	fixture_teardown(&f);
}

/* An index of schema version 1 is migrated on open (v2: segments.origin,
 * v3: batches.subs, v4: the snapshots table), its data kept. */
static void test_migration(void)
{
	struct fixture f;
	char cmd[256];

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "old\n", 0, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	store_close(f.st);
	f.st = NULL;
	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db 'ALTER TABLE"
		 " segments DROP COLUMN origin; ALTER TABLE batches DROP COLUMN"
		 " subs; DROP TABLE snapshots; PRAGMA user_version = 1;'", f.dir);
	CHECK_EQ(system(cmd), 0);
	fixture_reopen(&f);
	CHECK(!strcmp(fixture_contents(&f), "old\n"));
	CHECK_EQ(fixture_append(&f, "new\n", 1, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	snprintf(cmd, sizeof(cmd), "test \"$(sqlite3 %s/tenants/t/index.db"
		 " 'PRAGMA user_version')\" = 4", f.dir);
	CHECK_EQ(system(cmd), 0);
	fixture_teardown(&f);
}

/* Batches still in the journal count as acknowledged for verify. */
static void test_verify_journal(void)
{
	struct fixture f;
	char report[4096] = "";
	FILE *out;
	size_t n;

	fixture_setup(&f);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(fixture_append(&f, "one event\n",
					STORE_ANY_VERSION, false, NULL), 0);
	out = tmpfile();
	CHECK_EQ(store_verify(f.dir, out), 0);
	rewind(out);
	n = fread(report, 1, sizeof(report) - 1, out);
	report[n] = '\0';
	fclose(out);
	CHECK(strstr(report, "3 events in the journal") != NULL);
	CHECK(strstr(report, "unacknowledged") == NULL);
	fixture_teardown(&f);
}

static const struct unit_test tests[] = {
	{ "verify_journal", test_verify_journal },
	{ "replica", test_replica },
	{ "seed_tail", test_seed_tail },
	{ "dedup_fetches_every_segment", test_dedup_fetches_every_segment },
	{ "migration", test_migration },
	{ "many_streams", test_many_streams },
	{ "rolling", test_rolling },
	{ "roll_by_age", test_roll_by_age },
	{ "util", test_util },
	{ "full_segment", test_full_segment },
	{ "durable_mark", test_durable_mark },
	{ "closing_recovery", test_closing_recovery },
	{ "evict_restore", test_evict_restore },
	{ "restored_flush_delay", test_restored_flush_delay },
	{ "verify_damage", test_verify_damage },
};

int main(int argc, char **argv)
{
	return unit_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
