/* Unit tests of store/: framing, IDs, dedup, versions, lookups, rolling,
 * recovery and verify, through the public API of store.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <xxhash.h>

#include "store_sync.h"
#include "store_util.h"
#include "unit.h"

struct fixture {
	char dir[64];
	struct store_config cfg;
	struct store *st;
	struct store_tenant *t;
	uint64_t s;
};

static void rm_rf(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static void reopen(struct fixture *f)
{
	if (f->st)
		store_close(f->st);
	f->st = NULL;
	CHECK_EQ(store_open(f->dir, &f->cfg, &f->st), 0);
	CHECK_EQ(store_tenant_get(f->st, "t", &f->t), 0);
	CHECK_EQ(store_stream_lookup(f->t, "s", &f->s), 0);
}

static void setup_with(struct fixture *f, const struct store_config *cfg)
{
	memset(f, 0, sizeof(*f));
	strcpy(f->dir, "/tmp/streamfs-unit-XXXXXX");
	CHECK(mkdtemp(f->dir) != NULL);
	if (cfg)
		f->cfg = *cfg;
	else
		store_config_default(&f->cfg);
	CHECK_EQ(store_open(f->dir, &f->cfg, &f->st), 0);
	CHECK_EQ(store_tenant_create(f->st, "t", 0755, 0, 0), 0);
	CHECK_EQ(store_tenant_get(f->st, "t", &f->t), 0);
	CHECK_EQ(store_stream_create(f->t, "s", 0644, 0, 0, &f->s), 0);
}

static void setup(struct fixture *f)
{
	setup_with(f, NULL);
}

static void teardown(struct fixture *f)
{
	store_close(f->st);
	rm_rf(f->dir);
}

static int append(struct fixture *f, const char *data, uint64_t expected,
		  bool final, struct store_append_result *res)
{
	struct store_append app = {
		.buf = data,
		.len = strlen(data),
		.expected = expected,
		.final = final,
	};
	struct store_append_result r;

	return store_append(f->t, f->s, &app, res ? res : &r);
}

/* The whole stream as a NUL-terminated string (static buffer). */
static const char *contents(struct fixture *f)
{
	static char buf[1 << 16];
	ssize_t n = store_read(f->t, f->s, buf, sizeof(buf) - 1, 0);

	CHECK(n >= 0);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

static uint64_t version(struct fixture *f)
{
	struct store_attr a;

	CHECK_EQ(store_stream_stat(f->t, f->s, &a), 0);
	return a.version;
}

/* ---- framing ---- */

static void test_lines_framing(void)
{
	struct fixture f;
	struct store_append_result r;

	setup(&f);
	CHECK_EQ(append(&f, "a\nbb\nccc", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 2);
	CHECK_EQ(r.consumed, 5);	/* "ccc" stays with the caller */
	CHECK_EQ(r.version, 2);
	CHECK(!strcmp(contents(&f), "a\nbb\n"));
	/* the caller prepends its held tail: a line split across calls */
	CHECK_EQ(append(&f, "ccc", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 0);
	CHECK_EQ(r.consumed, 0);
	CHECK_EQ(append(&f, "cccdd\n\n\r\n", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 3);	/* "cccdd\n", "\n", "\r\n" */
	CHECK_EQ(append(&f, "tail", STORE_ANY_VERSION, true, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(r.consumed, 4);
	CHECK_EQ(r.version, 6);
	CHECK(!strcmp(contents(&f), "a\nbb\ncccdd\n\n\r\ntail\n"));
	CHECK_EQ(r.size, strlen("a\nbb\ncccdd\n\n\r\ntail\n"));
	teardown(&f);
}

static void test_raw_framing(void)
{
	struct fixture f;
	struct store_append app = { .expected = STORE_ANY_VERSION };
	struct store_append_result r;
	static const char bin[] = { 'x', '\n', 0, 'y', '\n' };
	char buf[16];
	uint64_t off;

	setup(&f);
	CHECK_EQ(store_stream_set_framing(f.t, f.s, STORE_RAW), 0);
	app.buf = bin;
	app.len = sizeof(bin);
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.version, 2);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 2 * sizeof(bin));
	CHECK(!memcmp(buf + sizeof(bin), bin, sizeof(bin)));
	/* framing is fixed once the stream has events */
	CHECK_EQ(store_stream_set_framing(f.t, f.s, STORE_LINES), -EPERM);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 2, &off), 0);
	CHECK_EQ(off, sizeof(bin));
	teardown(&f);
}

static void test_max_event(void)
{
	struct store_config cfg;
	struct fixture f;
	struct store_append_result r;

	store_config_default(&cfg);
	cfg.max_event = 8;
	setup_with(&f, &cfg);
	CHECK_EQ(append(&f, "ok\n123456789\n", STORE_ANY_VERSION, false, &r),
		 -EMSGSIZE);
	CHECK_EQ(version(&f), 0);	/* nothing of that write */
	CHECK_EQ(append(&f, "1234567\n", STORE_ANY_VERSION, false, &r), 0);
	/* a partial line that can no longer fit fails at once */
	CHECK_EQ(append(&f, "12345678", STORE_ANY_VERSION, false, &r), -EMSGSIZE);
	CHECK_EQ(append(&f, "1234567", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.consumed, 0);
	CHECK_EQ(version(&f), 1);
	teardown(&f);
}

/* ---- IDs and dedup ---- */

static void test_id_extraction(void)
{
	struct fixture f;
	struct store_append_result r;

	setup(&f);
	/* not JSON, no member, non-string member, nested member: no ID, so
	 * never deduplicated */
	static const char *no_id[] = {
		"plain text \"id\"\n",
		"{\"other\":\"x\"}\n",
		"{\"id\":42}\n",
		"{\"id\":null}\n",
		"{\"inner\":{\"id\":\"n1\"}}\n",
		"[\"id\",\"x\"]\n",
		"{\"id\":\"x\"} trailing\n",
		"{\"id\":\"broken\"\n",
	};
	for (int round = 0; round < 2; round++)
		for (size_t i = 0; i < sizeof(no_id) / sizeof(no_id[0]); i++)
			CHECK_EQ(append(&f, no_id[i], STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(version(&f), 16);
	/* a string member, with escapes and surrounding space, is an ID */
	CHECK_EQ(append(&f, "  {\"a\":1, \"\\u0069d\" : \"e\\u00e9\"}\r\n",
			STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(append(&f, "{\"id\":\"e\u00e9\",\"b\":2}\n",
			STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(version(&f), 17);
	teardown(&f);
}

static void test_custom_id_field(void)
{
	struct fixture f;
	struct store_append_result r;
	char field[64];

	setup(&f);
	CHECK_EQ(store_tenant_get_id_field(f.t, field, sizeof(field)), 0);
	CHECK(!strcmp(field, "id"));
	CHECK_EQ(store_tenant_set_id_field(f.t, "eventId"), 0);
	CHECK_EQ(append(&f, "{\"eventId\":\"a\",\"id\":\"1\"}\n"
			    "{\"eventId\":\"b\",\"id\":\"1\"}\n"
			    "{\"eventId\":\"a\",\"id\":\"2\"}\n",
			STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 2);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(store_tenant_set_id_field(f.t, ""), -EINVAL);
	reopen(&f);
	CHECK_EQ(store_tenant_get_id_field(f.t, field, sizeof(field)), 0);
	CHECK(!strcmp(field, "eventId"));
	teardown(&f);
}

static void test_dedup(void)
{
	struct fixture f;
	struct store_append_result r;
	uint32_t skipped[4];
	struct store_append app = {
		.buf = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"a\"}\nx\nx\n",
		.expected = STORE_ANY_VERSION,
		.skipped = skipped,
		.skipped_cap = 4,
	};

	setup(&f);
	app.len = strlen(app.buf);
	/* within one call */
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 4);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(skipped[0], 2);
	CHECK(!strcmp(contents(&f), "{\"id\":\"a\"}\n{\"id\":\"b\"}\nx\nx\n"));
	/* across calls: a retried append is stored once */
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 2);	/* only the two ID-less lines */
	CHECK_EQ(r.skipped, 3);
	CHECK_EQ(r.version, 6);
	/* across a reopen, from the active segment */
	reopen(&f);
	CHECK_EQ(append(&f, "{\"id\":\"b\"}\n{\"id\":\"c\"}\n", STORE_ANY_VERSION,
			false, &r), 0);
	CHECK_EQ(r.appended, 1);
	/* across a seal, from the sealed table, and again after reopen */
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	CHECK_EQ(append(&f, "{\"id\":\"a\"}\n{\"id\":\"d\"}\n", STORE_ANY_VERSION,
			false, &r), 0);
	CHECK_EQ(r.appended, 1);
	reopen(&f);
	CHECK_EQ(append(&f, "{\"id\":\"c\"}\n{\"id\":\"d\"}\n{\"id\":\"e\"}\n",
			STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(version(&f), 9);
	teardown(&f);
}

static int count_seg(void *arg, const struct store_segment *seg)
{
	(void)seg;
	(*(int *)arg)++;
	return 0;
}

/* The number of sealed segments of F, once the sealer thread has sealed
 * WANT of them (or after 10 s). */
static int wait_sealed(struct fixture *f, int want)
{
	int n = 0;

	for (int i = 0; i < 1000; i++) {
		n = 0;
		store_segment_list(f->t, STORE_SEG_SEALED, count_seg, &n);
		if (n >= want)
			break;
		usleep(10000);
	}
	return n;
}

/* Appends N events with unique IDs, about 16 KiB a call, to a store with
 * ROLL_SIZE segments; once SEALED of them are sealed (their tables the
 * sealer's), every STEPth ID is appended again, half after a reopen, and
 * skipped each time; a new ID still goes in. */
static void dedup_roundtrip(uint64_t roll_size, int n, int sealed, int step)
{
	struct store_config cfg;
	struct fixture f;
	struct store_append_result r;
	char line[64], *buf = malloc(1 << 15);
	size_t len = 0;

	store_config_default(&cfg);
	cfg.roll_size = roll_size;
	setup_with(&f, &cfg);
	for (int i = 0; i < n; i++) {
		len += (size_t)snprintf(buf + len, 64, "{\"id\":\"evt-%d\"}\n", i);
		if (len > 16000 || i == n - 1) {
			CHECK_EQ(append(&f, buf, STORE_ANY_VERSION, false, &r), 0);
			len = 0;
		}
	}
	CHECK_EQ(version(&f), (uint64_t)n);
	CHECK(wait_sealed(&f, sealed) >= sealed);
	for (int round = 0; round < 2; round++) {
		for (int i = round; i < n; i += step) {
			snprintf(line, sizeof(line), "{\"id\":\"evt-%d\"}\n", i);
			CHECK_EQ(append(&f, line, STORE_ANY_VERSION, false, &r), 0);
			CHECK_EQ(r.skipped, 1);
		}
		reopen(&f);
	}
	CHECK_EQ(append(&f, "{\"id\":\"new\"}\n", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.skipped, 0);
	CHECK_EQ(version(&f), (uint64_t)n + 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	free(buf);
	teardown(&f);
}

/* Several sealed segments. */
static void test_dedup_many(void)
{
	dedup_roundtrip(64 << 10, 20000, 5, 97);
}

/* A segment past 8 MiB (its writeback started by the sealer) and an ID
 * set past 2 MiB (huge pages), sealed while appends go on. */
static void test_dedup_big(void)
{
	dedup_roundtrip(9 << 20, 500000, 1, 997);
}

/* ---- versions ---- */

static void test_expected_version(void)
{
	struct fixture f;
	struct store_append_result r;

	setup(&f);
	CHECK_EQ(append(&f, "a\n", 0, false, &r), 0);
	CHECK_EQ(r.version, 1);
	CHECK_EQ(append(&f, "b\nc\n", 0, false, &r), -ESTALE);
	CHECK_EQ(version(&f), 1);
	CHECK(!strcmp(contents(&f), "a\n"));
	CHECK_EQ(append(&f, "b\nc\n", 1, false, &r), 0);
	CHECK_EQ(r.version, 3);
	CHECK_EQ(append(&f, "d\n", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.version, 4);
	teardown(&f);
}

static void test_lookups(void)
{
	struct fixture f;
	struct store_append_result r;
	struct timespec ts;
	uint64_t off, v;
	int64_t t_mid;

	setup(&f);
	CHECK_EQ(append(&f, "1\n22\n333\n", STORE_ANY_VERSION, false, &r), 0);
	usleep(20000);
	clock_gettime(CLOCK_REALTIME, &ts);
	t_mid = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	usleep(20000);
	CHECK_EQ(append(&f, "4444\n55555\n", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 1, &off), 0);
	CHECK_EQ(off, 0);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 3, &off), 0);
	CHECK_EQ(off, 5);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 4, &off), 0);
	CHECK_EQ(off, 9);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 5, &off), 0);
	CHECK_EQ(off, 14);
	CHECK_EQ(store_offset_of_version(f.t, f.s, 6, &off), 0);
	CHECK_EQ(off, 20);	/* past the end: the end */
	CHECK_EQ(store_offset_of_last(f.t, f.s, 2, &off), 0);
	CHECK_EQ(off, 9);
	CHECK_EQ(store_offset_of_last(f.t, f.s, 4, &off), 0);
	CHECK_EQ(off, 2);
	CHECK_EQ(store_offset_of_last(f.t, f.s, 99, &off), 0);
	CHECK_EQ(off, 0);
	CHECK_EQ(store_version_at_time(f.t, f.s, t_mid, &v), 0);
	CHECK_EQ(v, 4);
	CHECK_EQ(store_version_at_time(f.t, f.s, 0, &v), 0);
	CHECK_EQ(v, 1);
	CHECK_EQ(store_version_at_time(f.t, f.s, INT64_MAX, &v), 0);
	CHECK_EQ(v, 6);
	teardown(&f);
}

struct seg_ids {
	uint64_t v[16];
	int n;
};

static int collect_seg_id(void *arg, const struct store_segment *seg)
{
	struct seg_ids *ids = arg;

	if (ids->n < 16)
		ids->v[ids->n++] = seg->seg;
	return 0;
}

/* One event per append: a group commit stores a stream's batches as
 * merged rows, and every lookup still answers per event. */
#define MERGED_EVENTS 600

static int64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long batch_rows(const char *dir)
{
	char cmd[256];
	long n = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db"
		 " 'SELECT count(*) FROM batches'", dir);
	p = popen(cmd, "r");
	if (p && fscanf(p, "%ld", &n) != 1)
		n = -1;
	if (p)
		pclose(p);
	return n;
}

static void check_merged(struct fixture *f, const uint64_t *ids,
			 uint64_t (*offs)[MERGED_EVENTS + 1],
			 const int64_t *marks, const uint64_t *firsts)
{
	uint64_t off, v;

	for (int k = 0; k < 2; k++) {
		for (uint64_t i = 1; i <= MERGED_EVENTS; i++) {
			CHECK_EQ(store_offset_of_version(f->t, ids[k], i, &off), 0);
			CHECK_EQ(off, offs[k][i - 1]);
		}
		for (int b = 0; b < 3; b++) {
			CHECK_EQ(store_version_at_time(f->t, ids[k], marks[b], &v), 0);
			CHECK_EQ(v, firsts[b]);
		}
	}
}

/* A merged row goes to the remote as the batches it holds. */
struct expand {
	struct fixture *f;
	uint64_t id;
	const uint64_t *offs;
	size_t n;
	bool ok;
};

static int check_expanded(void *arg, const struct store_batch *b)
{
	struct expand *e = arg;
	char buf[64];

	e->ok = e->ok && e->n < MERGED_EVENTS && b->count == 1 &&
		b->offset == e->offs[e->n] &&
		b->length == e->offs[e->n + 1] - e->offs[e->n] &&
		b->length <= sizeof(buf) &&
		store_read(e->f->t, e->id, buf, b->length, b->offset) ==
			(ssize_t)b->length &&
		XXH3_64bits(buf, b->length) == b->hash;
	e->n++;
	return 0;
}

/* Checks each batch's recorded XXH3-64 against the segment's bytes. */
struct batch_sums {
	const char *bytes;	/* the whole segment */
	const struct store_segment *seg;
	size_t n;
	bool ok;
};

static int check_batch_sum(void *arg, const struct store_batch *b)
{
	struct batch_sums *c = arg;
	uint64_t at = b->offset - c->seg->offset;

	c->ok = c->ok && b->offset >= c->seg->offset &&
		at + b->length <= c->seg->length &&
		XXH3_64bits(c->bytes + at, b->length) == b->hash;
	c->n++;
	return 0;
}

/* Checks the XXH3-64 the store recorded for a segment, and for each of its
 * batches, against this file's own XXH3 of the bytes (docs/FORMAT.md). */
static int check_segment_sums(void *arg, const struct store_segment *seg)
{
	struct fixture *f = arg;
	char *path = store_segment_path(f->t, seg->seg);
	char *buf = malloc(seg->length ? seg->length : 1);
	int fd = path ? open(path, O_RDONLY) : -1;
	struct batch_sums c = { .bytes = buf, .seg = seg, .ok = true };

	CHECK(fd >= 0 && buf != NULL);
	CHECK_EQ(pread(fd, buf, seg->length, 0), (ssize_t)seg->length);
	CHECK_EQ(XXH3_64bits(buf, seg->length), seg->checksum);
	CHECK_EQ(store_segment_batches(f->t, seg->seg, check_batch_sum, &c), 0);
	CHECK(c.ok && c.n > 0);
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return 0;
}

/* Batches past the 128 KiB pieces the append writes, and segments past
 * the sealer's read size, carry the format's checksums. */
static void test_checksums(void)
{
	struct store_config cfg;
	struct fixture f;
	struct store_append app = { .expected = STORE_ANY_VERSION };
	struct store_append_result r;
	size_t len = 700 << 10;
	uint64_t x = 88172645463325252ull;
	char *big = malloc(len);

	CHECK(big != NULL);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		big[i] = (char)x;
	}
	store_config_default(&cfg);
	cfg.roll_size = 2 << 20;
	setup_with(&f, &cfg);
	CHECK_EQ(store_stream_set_framing(f.t, f.s, STORE_RAW), 0);
	app.buf = big;
	app.len = len;
	for (int i = 0; i < 7; i++) {
		big[i] ^= 1;	/* no two batches alike */
		CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	}
	CHECK_EQ(wait_sealed(&f, 3), 3);	/* 1.4 MiB each */
	CHECK_EQ(store_roll(f.t, INT64_MAX, true), 1);
	CHECK_EQ(store_segment_list(f.t, STORE_SEG_SEALED, check_segment_sums,
				    &f), 0);
	free(big);
	teardown(&f);
}

static void test_merged_rows(void)
{
	struct seg_ids sealed = { 0 };
	struct expand e;
	static uint64_t offs[2][MERGED_EVENTS + 1];
	uint64_t ids[2], firsts[3];
	int64_t marks[3];
	struct fixture f;
	char line[64];
	int n = 0;

	setup(&f);
	ids[0] = f.s;
	CHECK_EQ(store_tenant_set_framing(f.t, STORE_RAW), 0);
	CHECK_EQ(store_stream_create(f.t, "raw", 0644, 0, 0, &ids[1]), 0);
	for (int b = 0; b < 3; b++) {
		usleep(3000);
		marks[b] = wall_ns();
		usleep(3000);
		firsts[b] = (uint64_t)n + 1;
		for (int i = 0; i < MERGED_EVENTS / 3; i++, n++) {
			struct store_append_result r;

			snprintf(line, sizeof(line), "event %d.%d %.*s\n", b, i,
				 i % 7, "xxxxxxx");
			for (int k = 0; k < 2; k++) {
				struct store_append app = {
					.buf = line, .len = strlen(line),
					.expected = STORE_ANY_VERSION,
				};

				CHECK_EQ(store_append(f.t, ids[k], &app, &r), 0);
				offs[k][n + 1] = offs[k][n] + strlen(line);
			}
		}
	}
	check_merged(&f, ids, offs, marks, firsts);
	/* 1,200 appends in a few merged rows, not a row each */
	CHECK(batch_rows(f.dir) > 0 && batch_rows(f.dir) <= 12);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	reopen(&f);
	check_merged(&f, ids, offs, marks, firsts);
	ids[1] = 0;
	CHECK_EQ(store_stream_lookup(f.t, "raw", &ids[1]), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 2);
	CHECK_EQ(store_stream_segments(f.t, ids[1], collect_seg_id, &sealed), 0);
	CHECK_EQ(sealed.n, 1);
	e = (struct expand){ .f = &f, .id = ids[1], .offs = offs[1], .ok = true };
	CHECK_EQ(store_segment_batches(f.t, sealed.v[0], check_expanded, &e), 0);
	CHECK(e.ok);
	CHECK_EQ(e.n, MERGED_EVENTS);
	teardown(&f);
}

/* ---- namespace ---- */

static int count_cb(void *arg, const char *name, const struct store_attr *a)
{
	(void)name;
	(void)a;
	(*(int *)arg)++;
	return 0;
}

static void test_namespace(void)
{
	struct fixture f;
	uint64_t b, c;
	int n = 0;

	setup(&f);
	CHECK_EQ(store_stream_create(f.t, "s", 0644, 0, 0, &b), -EEXIST);
	CHECK_EQ(store_stream_create(f.t, "a@b", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "..", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "b", 0600, 7, 8, &b), 0);
	CHECK_EQ(store_stream_create(f.t, "c", 0600, 7, 8, &c), 0);
	CHECK_EQ(append(&f, "x\n", STORE_ANY_VERSION, false, NULL), 0);
	/* replacing a non-empty stream is refused; an empty one is replaced */
	CHECK_EQ(store_stream_rename(f.t, b, "s"), -EPERM);
	CHECK_EQ(store_stream_rename(f.t, f.s, "c"), 0);
	CHECK_EQ(store_stream_lookup(f.t, "s", &b), -ENOENT);
	CHECK_EQ(store_stream_lookup(f.t, "c", &c), 0);
	CHECK_EQ(c, f.s);
	store_stream_list(f.t, 0, count_cb, &n);
	CHECK_EQ(n, 2);
	CHECK_EQ(store_tenant_remove(f.st, "t"), -ENOTEMPTY);
	CHECK_EQ(store_stream_remove(f.t, f.s), 0);
	CHECK_EQ(store_stream_lookup(f.t, "b", &b), 0);
	CHECK_EQ(store_stream_remove(f.t, b), 0);
	CHECK_EQ(store_tenant_remove(f.st, "t"), 0);
	CHECK_EQ(store_tenant_get(f.st, "t", &f.t), -ENOENT);
	CHECK_EQ(store_tenant_create(f.st, "t", 0700, 0, 0), 0);
	CHECK_EQ(store_tenant_create(f.st, "t", 0700, 0, 0), -EEXIST);
	teardown(&f);
}

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
	setup_with(&f, &cfg);
	for (int i = 0; i < 100; i++) {
		snprintf(line, sizeof(line), "line %03d of the rolling test.....\n", i);
		CHECK_EQ(append(&f, line, STORE_ANY_VERSION, false, NULL), 0);
	}
	/* full segments are sealed by the sealer thread, off the append path */
	CHECK_EQ(wait_sealed(&f, 3), 3);
	/* age: nothing is old yet; force seals the active one */
	CHECK_EQ(store_roll(f.t, 0, false), 0);
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 1);
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 0);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	reopen(&f);
	CHECK_EQ(version(&f), 100);
	teardown(&f);
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
	setup_with(&f, &cfg);
	CHECK_EQ(append(&f, "before its age\n", STORE_ANY_VERSION, false,
			NULL), 0);
	CHECK_EQ(store_segment_list(f.t, STORE_SEG_SEALED, count_seg, &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(wait_sealed(&f, 1), 1);
	CHECK_EQ(append(&f, "after it\n", STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(version(&f), 2);
	CHECK_EQ(wait_sealed(&f, 2), 2);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	reopen(&f);
	CHECK_EQ(version(&f), 2);
	teardown(&f);
}

/* A segment that reaches roll_size exactly is sealed without waiting for
 * the next append; that append opens a new segment. */
static void test_full_segment(void)
{
	struct store_config cfg;
	struct fixture f;

	store_config_default(&cfg);
	cfg.roll_size = 10 * 5;
	setup_with(&f, &cfg);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(append(&f, "1234\n", STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(wait_sealed(&f, 1), 1);
	CHECK_EQ(append(&f, "after\n", 10, false, NULL), 0);
	CHECK_EQ(strcmp(contents(&f), "1234\n1234\n1234\n1234\n1234\n"
			"1234\n1234\n1234\n1234\n1234\nafter\n"), 0);
	reopen(&f);
	CHECK_EQ(version(&f), 11);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	teardown(&f);
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
	reopen(&f);
	CHECK_EQ(append(&f, "a1\n", 0, false, NULL), 0);
	CHECK_EQ(store_sync_stream(f.t, f.s), 0);
	snprintf(cmd, sizeof(cmd), "cd %s/tenants/t && cp index.db snap.db &&"
		 " cp index.db-wal snap.db-wal", dir);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(append(&f, "b2\n", 1, false, NULL), 0);
	CHECK_EQ(append(&f, "c3\n", 2, false, NULL), 0);
	CHECK_EQ(store_sync_stream(f.t, f.s), 0);
	CHECK_EQ(store_stream_segments(f.t, f.s, first_sealed, &id), 0);
	seg = store_segment_path(f.t, id);
	CHECK(getxattr(seg, "user.streamfs.durable1", NULL, 0) > 0);
	free(seg);
	CHECK_EQ(append(&f, "d4\n", 3, false, NULL), 0);
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
	reopen(f);
	return contents(f);
}

/* fsync(2) of a stream whose segment was synced before is one flush: a
 * durable mark on the segment file.  After a power cut that takes the
 * index back and the journal away, the marked events come back from the
 * bytes; a mark whose bytes do not hash to it is ignored. */
static void test_durable_mark(void)
{
	struct fixture f;

	setup(&f);
	CHECK_EQ(strcmp(mark_power_cut(&f, false), "a1\nb2\nc3\n"), 0);
	CHECK_EQ(version(&f), 3);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	CHECK_EQ(append(&f, "e5\n", 3, false, NULL), 0);
	reopen(&f);
	CHECK_EQ(version(&f), 4);
	teardown(&f);

	setup(&f);
	CHECK_EQ(strcmp(mark_power_cut(&f, true), "a1\n"), 0);
	CHECK_EQ(version(&f), 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	teardown(&f);
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
	setup_with(&f, &cfg);
	for (int i = 0; i < 100; i++) {
		snprintf(line, sizeof(line), "line %03d of the closing test.....\n", i);
		CHECK_EQ(append(&f, line, STORE_ANY_VERSION, false, NULL), 0);
		strcat(want, line);
	}
	CHECK_EQ(store_roll(f.t, INT64_MAX, false) >= 1, 1);
	store_segment_list(f.t, STORE_SEG_SEALED, collect_seg_id, &sealed);
	CHECK_EQ(sealed.n, 4);

	/* intact: nothing is lost, and the closing one is sealed again */
	unseal(&f, sealed.v[2], sealed.v[3], 0);
	reopen(&f);
	CHECK_EQ(version(&f), 100);
	CHECK_EQ(strcmp(contents(&f), want), 0);
	/* by the sealer: a roll that is not forced leaves closing ones to it */
	CHECK_EQ(store_roll(f.t, 0, false), 0);
	CHECK_EQ(wait_sealed(&f, 3), 3);
	CHECK_EQ(store_verify(f.dir, stderr), 0);

	/* torn: the stream ends inside segment 3 (29 lines of 34 bytes a
	 * segment; rows merged at group commit go whole), and segment 4 goes */
	CHECK_EQ(store_roll(f.t, INT64_MAX, false), 1);
	unseal(&f, sealed.v[2], sealed.v[3], 10);
	reopen(&f);
	v = version(&f);
	CHECK(v >= 2 * 29 && v <= 2 * 29 + 28);
	want[34 * v] = '\0';
	CHECK_EQ(strcmp(contents(&f), want), 0);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	CHECK_EQ(append(&f, "after the cut\n", v, false, NULL), 0);
	CHECK_EQ(version(&f), v + 1);
	reopen(&f);
	CHECK_EQ(version(&f), v + 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	teardown(&f);
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

	setup(&f);
	CHECK_EQ(append(&f, "one\ntwo\n", STORE_ANY_VERSION, false, NULL), 0);
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
	reopen(&f);
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
	reopen(&f);
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), -EIO);
	snprintf(cmd, sizeof(cmd), "mv '%s/saved' '%s'", f.dir, copy);
	CHECK_EQ(system(cmd), 0);
	CHECK_EQ(store_segment_restore(f.t, seg, copy), 0);
	CHECK_EQ(store_read(f.t, f.s, buf, sizeof(buf), 0), 8);
	CHECK(!memcmp(buf, "one\ntwo\n", 8));
	/* evicted again before the flush: the row says evicted, the file goes */
	CHECK_EQ(store_segment_evict(f.t, seg), 0);
	reopen(&f);
	CHECK_EQ(segment_state(&f, seg), STORE_SEG_EVICTED);
	CHECK(access(path, F_OK) != 0);
	snprintf(cmd, sizeof(cmd), "%s.bad", copy);
	unlink(cmd);
	free(copy);
	free(path);
	teardown(&f);
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

	CHECK_EQ(append(f, "one\ntwo\n", STORE_ANY_VERSION, false, NULL), 0);
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
	setup_with(&f, &cfg);
	seg = evict_and_restore(&f);
	usleep(200 * 1000);	/* time for a sealer that would flush now */
	CHECK_EQ(row_state(&f, seg), STORE_SEG_EVICTED);
	store_close(f.st);
	f.st = NULL;
	CHECK_EQ(row_state(&f, seg), STORE_SEG_UPLOADED);
	teardown(&f);

	cfg.restore_flush_ns = 50 * 1000000;
	setup_with(&f, &cfg);
	seg = evict_and_restore(&f);
	for (tries = 0; tries < 200 && row_state(&f, seg) != STORE_SEG_UPLOADED;
	     tries++)
		usleep(50 * 1000);
	CHECK(tries < 200);
	teardown(&f);
}

static void test_verify_damage(void)
{
	struct fixture f;
	uint64_t seg = 0;
	char *path, cmd[512];
	FILE *devnull = fopen("/dev/null", "w");

	setup(&f);
	CHECK_EQ(append(&f, "alpha\nbeta\n", STORE_ANY_VERSION, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	CHECK_EQ(append(&f, "gamma\n", STORE_ANY_VERSION, false, NULL), 0);
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
	teardown(&f);
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
	setup(&f);
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
	reopen(&f);
	for (int i = 0; i < 500; i += 7) {
		snprintf(name, sizeof(name), "stream-%d", i);
		CHECK_EQ(store_stream_lookup(f.t, name, &id), 0);
		CHECK_EQ(store_read(f.t, id, buf, sizeof(buf), 0), strlen(name) + 1);
	}
	CHECK_EQ(store_stream_count(f.t), 501);
	teardown(&f);
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

	setup(&w);
	setup(&r);
	store_set_fetch_hook(r.st, fetch_copy, reached_note, &hook);
	CHECK_EQ(append(&w, "a\nbb\n", 0, false, NULL), 0);
	CHECK_EQ(append(&w, "ccc\n", 2, false, NULL), 0);
	CHECK_EQ(store_roll(w.t, 0, true), 1);
	CHECK_EQ(append(&w, "dddd\neeeee\n", 3, false, NULL), 0);
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
	CHECK_EQ(version(&r), 5);
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
	reopen(&r);
	CHECK_EQ(version(&r), 5);
	CHECK_EQ(store_verify(r.dir, stderr), 0);
	teardown(&r);
	teardown(&w);
}

/* An index of schema version 1 is migrated on open (v2: segments.origin,
 * v3: batches.subs), its data kept. */
static void test_migration(void)
{
	struct fixture f;
	char cmd[256];

	setup(&f);
	CHECK_EQ(append(&f, "old\n", 0, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	store_close(f.st);
	f.st = NULL;
	snprintf(cmd, sizeof(cmd), "sqlite3 %s/tenants/t/index.db 'ALTER TABLE"
		 " segments DROP COLUMN origin; ALTER TABLE batches DROP COLUMN"
		 " subs; PRAGMA user_version = 1;'", f.dir);
	CHECK_EQ(system(cmd), 0);
	reopen(&f);
	CHECK(!strcmp(contents(&f), "old\n"));
	CHECK_EQ(append(&f, "new\n", 1, false, NULL), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	snprintf(cmd, sizeof(cmd), "test \"$(sqlite3 %s/tenants/t/index.db"
		 " 'PRAGMA user_version')\" = 3", f.dir);
	CHECK_EQ(system(cmd), 0);
	teardown(&f);
}

/* Batches still in the journal count as acknowledged for verify. */
static void test_verify_journal(void)
{
	struct fixture f;
	char report[4096] = "";
	FILE *out;
	size_t n;

	setup(&f);
	for (int i = 0; i < 3; i++)
		CHECK_EQ(append(&f, "one event\n", STORE_ANY_VERSION, false, NULL), 0);
	out = tmpfile();
	CHECK_EQ(store_verify(f.dir, out), 0);
	rewind(out);
	n = fread(report, 1, sizeof(report) - 1, out);
	report[n] = '\0';
	fclose(out);
	CHECK(strstr(report, "3 events in the journal") != NULL);
	CHECK(strstr(report, "unacknowledged") == NULL);
	teardown(&f);
}

static const struct unit_test tests[] = {
	{ "verify_journal", test_verify_journal },
	{ "replica", test_replica },
	{ "migration", test_migration },
	{ "many_streams", test_many_streams },
	{ "lines_framing", test_lines_framing },
	{ "raw_framing", test_raw_framing },
	{ "max_event", test_max_event },
	{ "id_extraction", test_id_extraction },
	{ "custom_id_field", test_custom_id_field },
	{ "dedup", test_dedup },
	{ "dedup_many", test_dedup_many },
	{ "dedup_big", test_dedup_big },
	{ "expected_version", test_expected_version },
	{ "lookups", test_lookups },
	{ "namespace", test_namespace },
	{ "merged_rows", test_merged_rows },
	{ "rolling", test_rolling },
	{ "roll_by_age", test_roll_by_age },
	{ "util", test_util },
	{ "checksums", test_checksums },
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
