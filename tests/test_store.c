/* Unit tests of store/: a stream's events, through the public API of
 * store.h and store_sync.h: framing, IDs and dedup, versions, lookups,
 * merged rows and checksums, the namespace.  Segments, recovery and verify are in
 * test_store_segments.c; the fixture is store_fixture.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "store_fixture.h"
#include "unit.h"

/* ---- framing ---- */

static void test_lines_framing(void)
{
	struct fixture f;
	struct store_append_result r;

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "a\nbb\nccc",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 2);
	CHECK_EQ(r.consumed, 5);	/* "ccc" stays with the caller */
	CHECK_EQ(r.version, 2);
	CHECK(!strcmp(fixture_contents(&f), "a\nbb\n"));
	/* the caller prepends its held tail: a line split across calls */
	CHECK_EQ(fixture_append(&f, "ccc", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 0);
	CHECK_EQ(r.consumed, 0);
	CHECK_EQ(fixture_append(&f, "cccdd\n\n\r\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 3);	/* "cccdd\n", "\n", "\r\n" */
	CHECK_EQ(fixture_append(&f, "tail", STORE_ANY_VERSION, true, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(r.consumed, 4);
	CHECK_EQ(r.version, 6);
	CHECK(!strcmp(fixture_contents(&f), "a\nbb\ncccdd\n\n\r\ntail\n"));
	CHECK_EQ(r.size, strlen("a\nbb\ncccdd\n\n\r\ntail\n"));
	fixture_teardown(&f);
}

static void test_raw_framing(void)
{
	struct fixture f;
	struct store_append app = { .expected = STORE_ANY_VERSION };
	struct store_append_result r;
	static const char bin[] = { 'x', '\n', 0, 'y', '\n' };
	char buf[16];
	uint64_t off;

	fixture_setup(&f);
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
	fixture_teardown(&f);
}

static void test_max_event(void)
{
	struct store_config cfg;
	struct fixture f;
	struct store_append_result r;

	store_config_default(&cfg);
	cfg.max_event = 8;
	fixture_setup_with(&f, &cfg);
	CHECK_EQ(fixture_append(&f, "ok\n123456789\n",
				STORE_ANY_VERSION, false, &r), -EMSGSIZE);
	CHECK_EQ(fixture_version(&f), 0);	/* nothing of that write */
	CHECK_EQ(fixture_append(&f, "1234567\n",
				STORE_ANY_VERSION, false, &r), 0);
	/* a partial line that can no longer fit fails at once */
	CHECK_EQ(fixture_append(&f, "12345678",
				STORE_ANY_VERSION, false, &r), -EMSGSIZE);
	CHECK_EQ(fixture_append(&f, "1234567",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.consumed, 0);
	CHECK_EQ(fixture_version(&f), 1);
	fixture_teardown(&f);
}

/* Lines are counted 64 or 16 bytes a turn (127 or 255 turns per sum),
 * appends under 256 bytes by memchr(3), and appends up to 4 KiB are split
 * under the tenant's lock: buffers of every length around those sizes, of empty and long lines, with and without a
 * '"' (which sends the lines through the per-line split), with and
 * without a trailing partial line, give each line as an event. */
static void check_counted(struct fixture *f, const char *buf, size_t len,
			  bool final, uint64_t *version, uint64_t *size)
{
	struct store_append app = {
		.buf = buf, .len = len, .expected = STORE_ANY_VERSION,
		.final = final,
	};
	struct store_append_result r;
	size_t lines = 0, end = 0;

	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\n') {
			lines++;
			end = i + 1;
		}
	if (final && end < len) {
		lines++;
		end = len + 1;	/* with its '\n' */
	}
	CHECK_EQ(store_append(f->t, f->s, &app, &r), 0);
	CHECK_EQ(r.appended, lines);
	CHECK_EQ(r.consumed, final ? len : end);
	*version += lines;
	*size += end;
	CHECK_EQ(r.version, *version);
	CHECK_EQ(r.size, *size);
}

static void test_lines_counted(void)
{
	static const size_t lens[] = {
		1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 99, 100, 255, 256, 257,
		127 * 64 - 1, 127 * 64, 127 * 64 + 33, 255 * 32 - 1, 255 * 32,
		255 * 32 + 17, 4095, 4096, 4097, 65536, 100000,
	};
	size_t cap = 100000;
	char *buf = malloc(cap);
	uint64_t version = 0, size = 0;
	unsigned seed = 7;
	struct fixture f;

	fixture_setup(&f);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		for (int variant = 0; variant < 6; variant++) {
			size_t len = lens[k];

			/* lines of 0..(7 or 300) bytes; variant 4: all '\n' (the
			 * 8-bit sums at their 255), 5: no '\n' at all */
			for (size_t i = 0; i < len; i++) {
				seed = seed * 1103515245 + 12345;
				buf[i] = (char)('a' + (seed >> 16) % 26);
				if ((seed >> 8) % (variant & 1 ? 300 : 8) == 0)
					buf[i] = '\n';
				if (variant == 4)
					buf[i] = '\n';
				if (variant == 5 && buf[i] == '\n')
					buf[i] = 'n';
			}
			if (variant >= 2 && variant < 4)
				buf[(seed >> 4) % len] = '"';
			if (variant == 5 && len > 1)
				buf[len / 2] = '"';
			check_counted(&f, buf, len, variant == 3, &version,
				      &size);
		}
	}
	CHECK_EQ(fixture_version(&f), version);
	free(buf);
	fixture_teardown(&f);
}

/* ---- IDs and dedup ---- */

static void test_id_extraction(void)
{
	struct fixture f;
	struct store_append_result r;

	fixture_setup(&f);
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
			CHECK_EQ(fixture_append(&f, no_id[i],
						STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(fixture_version(&f), 16);
	/* a string member, with escapes and surrounding space, is an ID */
	CHECK_EQ(fixture_append(&f,
				"  {\"a\":1, \"\\u0069d\" : \"e\\u00e9\"}\r\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(fixture_append(&f, "{\"id\":\"e\u00e9\",\"b\":2}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(fixture_version(&f), 17);
	fixture_teardown(&f);
}

/* HEAD, DEPTH '[', MID, DEPTH ']', TAIL and '\n' (caller frees). */
static char *deep_line(const char *head, size_t depth, const char *mid,
		       const char *tail)
{
	size_t hl = strlen(head), ml = strlen(mid), tl = strlen(tail);
	char *line = malloc(hl + 2 * depth + ml + tl + 2), *p = line;

	CHECK(line);
	p = (char *)memcpy(p, head, hl) + hl;
	p = (char *)memset(p, '[', depth) + depth;
	p = (char *)memcpy(p, mid, ml) + ml;
	p = (char *)memset(p, ']', depth) + depth;
	p = (char *)memcpy(p, tail, tl) + tl;
	strcpy(p, "\n");
	return line;
}

/* Appends the deep_line() twice; returns the number of events added. */
static uint64_t twice(struct fixture *f, const char *head, size_t depth,
		      const char *mid, const char *tail)
{
	char *line = deep_line(head, depth, mid, tail);
	uint64_t before = fixture_version(f);

	for (int i = 0; i < 2; i++)
		CHECK_EQ(fixture_append(f, line, STORE_ANY_VERSION, false, NULL), 0);
	free(line);
	return fixture_version(f) - before;
}

/* json-c stops at 32 levels (an object holding 31 nested arrays passes,
 * 32 do not); past them the top level is walked with a counter
 * (store/ids.c), and the ID is found at any depth. */
static void test_id_deep(void)
{
	static const size_t depths[] = { 31, 32, 33, 1000, 100000 };
	static const char *invalid_tails[] = {
		",\"id\":\"t\",}", ",\"id\":\"t\"", ",\"id\":\"t\"} x",
		",\"id\":\"t\"}}", ",\"id\":\"t\" \"b\":1}", ",,\"id\":\"t\"}",
		",\"id\":\"t\",\"b\":tru}", ",\"id\":\"t\",\"b\":01}",
		",\"id\":\"t\",\"b\":1,2}", ",\"id\":\"t\\x\"}",
		",\"id\":\"t\",'b':1}", ",\"id\":\"t\",\"b\"}",
		",\"id\":\"t\",\"b\":[1,,2]}",
	};
	struct fixture f;
	uint64_t want = 0;
	char *line;

	fixture_setup(&f);
	for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		char head[64];

		snprintf(head, sizeof(head), "{\"id\":\"d%zu\",\"a\":", depths[i]);
		CHECK_EQ(twice(&f, head, depths[i], "", "}"), 1);
		/* the ID after the deep member, its name spelled with escapes */
		CHECK_EQ(twice(&f, " { \"a\" : ", depths[i], "",
			       " , \"\\u0069\\u0064\" : \"e\\u00e9\" } \r"),
			 i == 0);	/* the same ID each time */
		want += 1 + (i == 0);
	}
	/* the last member of the name wins, as json-c has it */
	CHECK_EQ(twice(&f, "{\"id\":\"x\",\"a\":", 40, "", ",\"id\":\"y\"}"), 1);
	CHECK_EQ(twice(&f, "{\"id\":\"x2\",\"a\":", 40, "", ",\"id\":7}"), 2);
	CHECK_EQ(twice(&f, "{\"id\":\"x3\",\"id\":", 40, "", "}"), 2);
	/* a nested "id" is no ID, nor is one in what is not an object */
	CHECK_EQ(twice(&f, "{\"a\":{\"id\":\"n\",\"b\":", 40, "", "}}"), 2);
	CHECK_EQ(twice(&f, "{\"a\":", 40, "{\"id\":\"n\"}", "}"), 2);
	CHECK_EQ(twice(&f, "[{\"id\":\"n\"},", 40, "", "]"), 2);
	want += 1 + 5 * 2;
	/* nor in a line whose top level, past the deep part, is no JSON */
	for (size_t i = 0; i < sizeof(invalid_tails) / sizeof(invalid_tails[0]); i++)
		CHECK_EQ(twice(&f, "{\"a\":", 40, "", invalid_tails[i]), 2);
	want += 2 * sizeof(invalid_tails) / sizeof(invalid_tails[0]);
	/* past json-c's depth: an unclosed string, brackets that do not
	 * balance */
	CHECK_EQ(twice(&f, "{\"a\":", 40, "\"", "}, \"id\":\"t\"}"), 2);
	CHECK_EQ(twice(&f, "{\"a\":[", 40, "", ", \"id\":\"t\"}"), 2);
	CHECK_EQ(twice(&f, "{\"a\":", 40, "", "], \"id\":\"t\"}"), 2);
	want += 3 * 2;
	CHECK_EQ(fixture_version(&f), want);
	/* a retry after a reopen finds the ID in the stored event */
	fixture_reopen(&f);
	line = deep_line("{\"id\":\"d100000\",\"a\":", 100000, "", "}");
	CHECK_EQ(fixture_append(&f, line, STORE_ANY_VERSION, false, NULL), 0);
	free(line);
	CHECK_EQ(fixture_version(&f), want);
	fixture_teardown(&f);
}

static void test_custom_id_field(void)
{
	struct fixture f;
	struct store_append_result r;
	char field[64];

	fixture_setup(&f);
	CHECK_EQ(store_tenant_get_id_field(f.t, field, sizeof(field)), 0);
	CHECK(!strcmp(field, "id"));
	CHECK_EQ(store_tenant_set_id_field(f.t, "eventId"), 0);
	CHECK_EQ(fixture_append(&f, "{\"eventId\":\"a\",\"id\":\"1\"}\n"
			    "{\"eventId\":\"b\",\"id\":\"1\"}\n"
			    "{\"eventId\":\"a\",\"id\":\"2\"}\n",
			STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 2);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(store_tenant_set_id_field(f.t, ""), -EINVAL);
	fixture_reopen(&f);
	CHECK_EQ(store_tenant_get_id_field(f.t, field, sizeof(field)), 0);
	CHECK(!strcmp(field, "eventId"));
	fixture_teardown(&f);
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

	fixture_setup(&f);
	app.len = strlen(app.buf);
	/* within one call */
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 4);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(skipped[0], 2);
	CHECK(!strcmp(fixture_contents(&f),
		      "{\"id\":\"a\"}\n{\"id\":\"b\"}\nx\nx\n"));
	/* across calls: a retried append is stored once */
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 2);	/* only the two ID-less lines */
	CHECK_EQ(r.skipped, 3);
	CHECK_EQ(r.version, 6);
	/* across a reopen, from the active segment */
	fixture_reopen(&f);
	CHECK_EQ(fixture_append(&f, "{\"id\":\"b\"}\n{\"id\":\"c\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	/* across a seal, from the sealed table, and again after reopen */
	CHECK_EQ(store_roll(f.t, 0, true), 1);
	CHECK_EQ(fixture_append(&f, "{\"id\":\"a\"}\n{\"id\":\"d\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	fixture_reopen(&f);
	CHECK_EQ(fixture_append(&f,
				"{\"id\":\"c\"}\n{\"id\":\"d\"}\n{\"id\":\"e\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(fixture_version(&f), 9);
	fixture_teardown(&f);
}

/* Lines without IDs between those with: a skipped event is reported by
 * its place among all the call's events, and an ID that went in is found
 * again at its own offset in the stream. */
static void test_dedup_among_plain_lines(void)
{
	struct fixture f;
	struct store_append_result r;
	uint32_t skipped[4];
	struct store_append app = {
		.buf = "x\n{\"id\":\"a\"}\n{\"id\":\"a\"}\ny\n{\"id\":\"b\"}\n",
		.expected = STORE_ANY_VERSION,
		.skipped = skipped,
		.skipped_cap = 4,
	};

	fixture_setup(&f);
	app.len = strlen(app.buf);
	CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	CHECK_EQ(r.appended, 4);
	CHECK_EQ(r.skipped, 1);
	CHECK_EQ(skipped[0], 2);
	CHECK(!strcmp(fixture_contents(&f),
		      "x\n{\"id\":\"a\"}\ny\n{\"id\":\"b\"}\n"));
	CHECK_EQ(fixture_append(&f, "{\"id\":\"b\"}\nz\n{\"id\":\"a\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.appended, 1);
	CHECK_EQ(r.skipped, 2);
	fixture_teardown(&f);
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
	fixture_setup_with(&f, &cfg);
	for (int i = 0; i < n; i++) {
		len += (size_t)snprintf(buf + len, 64, "{\"id\":\"evt-%d\"}\n", i);
		if (len > 16000 || i == n - 1) {
			CHECK_EQ(fixture_append(&f, buf,
						STORE_ANY_VERSION, false, &r), 0);
			len = 0;
		}
	}
	CHECK_EQ(fixture_version(&f), (uint64_t)n);
	CHECK(fixture_wait_sealed(&f, sealed) >= sealed);
	for (int round = 0; round < 2; round++) {
		for (int i = round; i < n; i += step) {
			snprintf(line, sizeof(line), "{\"id\":\"evt-%d\"}\n", i);
			CHECK_EQ(fixture_append(&f, line,
						STORE_ANY_VERSION, false, &r), 0);
			CHECK_EQ(r.skipped, 1);
		}
		fixture_reopen(&f);
	}
	CHECK_EQ(fixture_append(&f, "{\"id\":\"new\"}\n",
				STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.skipped, 0);
	CHECK_EQ(fixture_version(&f), (uint64_t)n + 1);
	CHECK_EQ(store_verify(f.dir, stderr), 0);
	free(buf);
	fixture_teardown(&f);
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

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "a\n", 0, false, &r), 0);
	CHECK_EQ(r.version, 1);
	CHECK_EQ(fixture_append(&f, "b\nc\n", 0, false, &r), -ESTALE);
	CHECK_EQ(fixture_version(&f), 1);
	CHECK(!strcmp(fixture_contents(&f), "a\n"));
	CHECK_EQ(fixture_append(&f, "b\nc\n", 1, false, &r), 0);
	CHECK_EQ(r.version, 3);
	CHECK_EQ(fixture_append(&f, "d\n", STORE_ANY_VERSION, false, &r), 0);
	CHECK_EQ(r.version, 4);
	fixture_teardown(&f);
}

static void test_lookups(void)
{
	struct fixture f;
	struct store_append_result r;
	struct timespec ts;
	uint64_t off, v;
	int64_t t_mid;

	fixture_setup(&f);
	CHECK_EQ(fixture_append(&f, "1\n22\n333\n",
				STORE_ANY_VERSION, false, &r), 0);
	usleep(20000);
	clock_gettime(CLOCK_REALTIME, &ts);
	t_mid = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	usleep(20000);
	CHECK_EQ(fixture_append(&f, "4444\n55555\n",
				STORE_ANY_VERSION, false, &r), 0);
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
	fixture_teardown(&f);
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
	fixture_setup_with(&f, &cfg);
	CHECK_EQ(store_stream_set_framing(f.t, f.s, STORE_RAW), 0);
	app.buf = big;
	app.len = len;
	for (int i = 0; i < 7; i++) {
		big[i] ^= 1;	/* no two batches alike */
		CHECK_EQ(store_append(f.t, f.s, &app, &r), 0);
	}
	CHECK_EQ(fixture_wait_sealed(&f, 3), 3);	/* 1.4 MiB each */
	CHECK_EQ(store_roll(f.t, INT64_MAX, true), 1);
	CHECK_EQ(store_segment_list(f.t, STORE_SEG_SEALED, check_segment_sums,
				    &f), 0);
	free(big);
	fixture_teardown(&f);
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

	fixture_setup(&f);
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
	fixture_reopen(&f);
	check_merged(&f, ids, offs, marks, firsts);
	ids[1] = 0;
	CHECK_EQ(store_stream_lookup(f.t, "raw", &ids[1]), 0);
	CHECK_EQ(store_roll(f.t, 0, true), 2);
	CHECK_EQ(store_stream_segments(f.t, ids[1], fixture_collect_seg_id,
				       &sealed), 0);
	CHECK_EQ(sealed.n, 1);
	e = (struct expand){ .f = &f, .id = ids[1], .offs = offs[1], .ok = true };
	CHECK_EQ(store_segment_batches(f.t, sealed.v[0], check_expanded, &e), 0);
	CHECK(e.ok);
	CHECK_EQ(e.n, MERGED_EVENTS);
	fixture_teardown(&f);
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

	fixture_setup(&f);
	CHECK_EQ(store_stream_create(f.t, "s", 0644, 0, 0, &b), -EEXIST);
	CHECK_EQ(store_stream_create(f.t, "a@b", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "..", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "", 0644, 0, 0, &b), -EINVAL);
	CHECK_EQ(store_stream_create(f.t, "b", 0600, 7, 8, &b), 0);
	CHECK_EQ(store_stream_create(f.t, "c", 0600, 7, 8, &c), 0);
	CHECK_EQ(fixture_append(&f, "x\n", STORE_ANY_VERSION, false, NULL), 0);
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
	fixture_teardown(&f);
}

static const struct unit_test tests[] = {
	{ "lines_framing", test_lines_framing },
	{ "raw_framing", test_raw_framing },
	{ "max_event", test_max_event },
	{ "lines_counted", test_lines_counted },
	{ "id_extraction", test_id_extraction },
	{ "id_deep", test_id_deep },
	{ "custom_id_field", test_custom_id_field },
	{ "dedup", test_dedup },
	{ "dedup_among_plain_lines", test_dedup_among_plain_lines },
	{ "dedup_many", test_dedup_many },
	{ "dedup_big", test_dedup_big },
	{ "expected_version", test_expected_version },
	{ "lookups", test_lookups },
	{ "namespace", test_namespace },
	{ "merged_rows", test_merged_rows },
	{ "checksums", test_checksums },
};

int main(int argc, char **argv)
{
	return unit_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
