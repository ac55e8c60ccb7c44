/*
 * Unit tests of sync/'s codecs, which touch neither the network nor a
 * store: the tenant manifest (manifest.c), the keys of the remote layout
 * (keys.c), the event index objects (index_object.c), the event-ID table
 * objects (ids_object.c) and the tail pieces (piece.c).  Damaged input
 * must give -errno, never a crash: the sanitizer build checks the latter.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"
#include "unit.h"

#define WEEK_NS (7 * 86400 * 1000000000LL)

/* ---- manifests ---- */

static struct manifest_seg seg_of(uint64_t id, uint64_t first, uint64_t count,
				  uint64_t off, uint64_t len)
{
	return (struct manifest_seg){
		.seg = id, .first_version = first, .count = count,
		.offset = off, .length = len,
		.checksum = 0x0123456789abcdefULL ^ id,
		.created_ns = 1700000000000000000LL + (int64_t)id };
}

/* A manifest of two streams (one raw, three segments in all) and one
 * tombstone, as a writer would publish it. */
static void sample(struct manifest *m)
{
	struct manifest_stream *a, *b;

	*m = (struct manifest){
		.tenant = strdup("we ird.%"), .writer = strdup("host-00ff"),
		.mode = 0750, .uid = 1000, .gid = 100, .has_framing = true,
		.framing = STORE_LINES, .updated_ns = 1795361902000000000LL,
		.nstreams = 2, .ntombs = 1 };
	m->streams = calloc(2, sizeof(*m->streams));
	m->tombs = calloc(1, sizeof(*m->tombs));
	a = &m->streams[0];
	b = &m->streams[1];
	*a = (struct manifest_stream){
		.id = 1, .name = strdup("orders"), .framing = STORE_LINES,
		.mode = 0644, .uid = 1000, .gid = 100, .size = 10,
		.version = 5, .mtime_ns = 1795361901000000001LL, .nsegs = 2 };
	a->segs = calloc(2, sizeof(*a->segs));
	a->segs[0] = seg_of(1, 1, 2, 0, 4);
	a->segs[1] = seg_of(3, 3, 3, 4, 6);
	*b = (struct manifest_stream){
		.id = 7, .name = strdup("raw \"bin\"/x"), .framing = STORE_RAW,
		.mode = 0600, .size = 3, .version = 1, .nsegs = 1 };
	b->segs = calloc(1, sizeof(*b->segs));
	b->segs[0] = seg_of(2, 1, 1, 0, 3);
	m->tombs[0] = (struct manifest_tombstone){
		.id = 4, .name = strdup("old"),
		.removed_ns = 1795361800000000000LL };
}

static void check_same(const struct manifest *x, const struct manifest *y)
{
	CHECK(x->tenant && y->tenant && !strcmp(x->tenant, y->tenant));
	CHECK(x->writer && y->writer && !strcmp(x->writer, y->writer));
	CHECK_EQ(x->mode, y->mode);
	CHECK_EQ(x->uid, y->uid);
	CHECK_EQ(x->gid, y->gid);
	CHECK_EQ(x->has_framing, y->has_framing);
	CHECK_EQ(x->framing, y->framing);
	CHECK_EQ(x->updated_ns, y->updated_ns);
	CHECK_EQ(x->nstreams, y->nstreams);
	for (size_t i = 0; i < x->nstreams && i < y->nstreams; i++) {
		const struct manifest_stream *a = &x->streams[i];
		const struct manifest_stream *b = &y->streams[i];

		CHECK_EQ(a->id, b->id);
		CHECK(!strcmp(a->name, b->name));
		CHECK_EQ(a->framing, b->framing);
		CHECK_EQ(a->mode, b->mode);
		CHECK_EQ(a->uid, b->uid);
		CHECK_EQ(a->gid, b->gid);
		CHECK_EQ(a->mtime_ns, b->mtime_ns);
		CHECK_EQ(a->size, b->size);
		CHECK_EQ(a->version, b->version);
		CHECK_EQ(a->nsegs, b->nsegs);
		for (size_t j = 0; j < a->nsegs && j < b->nsegs; j++)
			CHECK(!memcmp(&a->segs[j], &b->segs[j],
				      sizeof(a->segs[j])));
	}
	CHECK_EQ(x->ntombs, y->ntombs);
	for (size_t i = 0; i < x->ntombs && i < y->ntombs; i++) {
		CHECK_EQ(x->tombs[i].id, y->tombs[i].id);
		CHECK(!strcmp(x->tombs[i].name, y->tombs[i].name));
		CHECK_EQ(x->tombs[i].removed_ns, y->tombs[i].removed_ns);
	}
}

static void test_manifest_round_trip(void)
{
	struct manifest m, d;
	char *text = NULL, *again = NULL;

	sample(&m);
	CHECK_EQ(sync_manifest_encode(&m, true, &text), 0);
	CHECK_EQ(sync_manifest_decode(text, strlen(text), &d), 0);
	check_same(&m, &d);
	/* Encoding what was decoded gives the same text. */
	CHECK_EQ(sync_manifest_encode(&d, true, &again), 0);
	CHECK(again && !strcmp(text, again));
	/* docs/FORMAT.md's members, keys relative to the tenant. */
	CHECK(strstr(text, "\"format\":\"streamfs-tenant-manifest\""));
	CHECK(strstr(text, "\"key\":\"segments/0000000000000003-"
		     "0123456789abcdec\""));
	CHECK(strstr(text, "\"xxh3\":\"0123456789abcdec\""));
	CHECK(strstr(text, "\"framing\":\"raw\""));
	sync_manifest_release(&d);
	free(text);
	free(again);
	sync_manifest_release(&m);
}

/* Snapshots: listed per stream, round-tripped, and their objects stale
 * once no entry names them (two streams may share one). */
static void test_manifest_snapshots(void)
{
	struct manifest m, d, cur;
	struct sync_strvec stale = { 0 };
	const char *tp = "streamfs-v1/tenants/t/";
	char *text = NULL;

	sample(&m);
	CHECK_EQ(sync_manifest_encode(&m, true, &text), 0);
	CHECK(text && !strstr(text, "snapshots"));	/* none: no member */
	free(text);
	m.streams[0].snaps = calloc(2, sizeof(struct manifest_snap));
	m.streams[0].nsnaps = 2;
	m.streams[0].snaps[0] = (struct manifest_snap){
		.version = 2, .length = 7, .checksum = 0xabcdef0123456789ull,
		.time_ns = 1795361901000000002LL };
	m.streams[0].snaps[1] = (struct manifest_snap){
		.version = 5, .length = 0, .checksum = 0x2d06800538d394c2ull,
		.time_ns = 1795361901000000003LL };
	CHECK_EQ(sync_manifest_encode(&m, true, &text), 0);
	CHECK(text && strstr(text, "\"key\":\"snapshots/0000000000000002-"
			     "abcdef0123456789\""));
	CHECK_EQ(sync_manifest_decode(text, strlen(text), &d), 0);
	check_same(&m, &d);
	CHECK_EQ(d.streams[0].nsnaps, 2);
	CHECK_EQ(d.streams[1].nsnaps, 0);
	if (d.streams[0].nsnaps == 2)
		CHECK(!memcmp(d.streams[0].snaps, m.streams[0].snaps,
			      2 * sizeof(struct manifest_snap)));
	/* cur: the snapshot at 2 removed; the one at 5 moved to stream 7
	 * (same version and bytes: the same object, kept). */
	sample(&cur);
	cur.streams[1].snaps = calloc(1, sizeof(struct manifest_snap));
	cur.streams[1].nsnaps = 1;
	cur.streams[1].snaps[0] = m.streams[0].snaps[1];
	CHECK_EQ(sync_manifest_stale_keys(&m, &cur, tp, &stale), 0);
	CHECK_EQ(stale.n, 1);
	if (stale.n == 1)
		CHECK(!strcmp(stale.v[0], "streamfs-v1/tenants/t/snapshots/"
			      "0000000000000002-abcdef0123456789"));
	sync_strvec_release(&stale);
	sync_manifest_release(&cur);
	sync_manifest_release(&d);
	sync_manifest_release(&m);
	free(text);
}

static void test_manifest_compare_text(void)
{
	struct manifest m;
	char *full = NULL, *cmp = NULL, *cmp2 = NULL;

	sample(&m);
	CHECK_EQ(sync_manifest_encode(&m, false, &cmp), 0);
	CHECK_EQ(sync_manifest_encode(&m, true, &full), 0);
	CHECK(cmp && !strstr(cmp, "mtime_ns") && !strstr(cmp, "updated_ns"));
	CHECK(full && strstr(full, "mtime_ns") && strstr(full, "updated_ns"));
	/* Times alone do not change the text compared. */
	m.updated_ns++;
	m.streams[0].mtime_ns++;
	CHECK_EQ(sync_manifest_encode(&m, false, &cmp2), 0);
	CHECK(cmp2 && !strcmp(cmp, cmp2));
	free(full);
	free(cmp);
	free(cmp2);
	sync_manifest_release(&m);
}

static void test_manifest_unknown_members(void)
{
	static const char text[] =
		"{\"format\":\"streamfs-tenant-manifest\",\"version\":1,"
		"\"future\":{\"a\":[1,2]},\"writer\":\"w\",\"mode\":448,"
		"\"streams\":[{\"id\":3,\"name\":\"s\",\"color\":\"red\","
		"\"segments\":[{\"seg\":9,\"xxh3\":\"00000000000000ff\","
		"\"length\":5,\"extra\":null}]},"
		"{\"id\":4,\"segments\":[]},"			/* no name */
		"{\"id\":5,\"name\":\"n\"},"			/* no segments */
		"{\"id\":6,\"name\":7,\"segments\":[]}],"	/* name not a string */
		"\"tombstones\":[{\"id\":2,\"why\":\"x\",\"removed_ns\":5}],"
		"\"more\":true}\n";
	struct manifest m;

	CHECK_EQ(sync_manifest_decode(text, strlen(text), &m), 0);
	CHECK(m.writer && !strcmp(m.writer, "w"));
	CHECK(!m.tenant);
	CHECK(!m.has_framing);
	CHECK_EQ(m.mode, 448);
	CHECK_EQ(m.nstreams, 1);
	if (m.nstreams == 1) {
		CHECK_EQ(m.streams[0].id, 3);
		CHECK_EQ(m.streams[0].framing, STORE_LINES);
		CHECK_EQ(m.streams[0].nsegs, 1);
		CHECK_EQ(m.streams[0].segs[0].seg, 9);
		CHECK_EQ(m.streams[0].segs[0].checksum, 0xff);
		CHECK_EQ(m.streams[0].segs[0].length, 5);
	}
	CHECK_EQ(m.ntombs, 1);
	if (m.ntombs == 1) {
		CHECK(!m.tombs[0].name);
		CHECK_EQ(m.tombs[0].removed_ns, 5);
	}
	sync_manifest_release(&m);
}

/* A mode is permission bits, whatever number the remote holds: one above
 * 2^31 once came back as another mode after a round (found by
 * tests/fuzz/fuzz_manifest). */
static void test_manifest_mode_bits(void)
{
	static const char text[] =
		"{\"mode\":4294967295,\"streams\":[{\"name\":\"a\","
		"\"mode\":2147484096,\"segments\":[]}]}";
	struct manifest m, again;
	char *enc = NULL, *enc2 = NULL;

	CHECK_EQ(sync_manifest_decode(text, strlen(text), &m), 0);
	CHECK_EQ(m.mode, 07777);
	CHECK_EQ(m.nstreams, 1);
	if (m.nstreams == 1)
		CHECK_EQ(m.streams[0].mode, 0700);
	CHECK_EQ(sync_manifest_encode(&m, true, &enc), 0);
	CHECK_EQ(sync_manifest_decode(enc, strlen(enc), &again), 0);
	CHECK_EQ(sync_manifest_encode(&again, true, &enc2), 0);
	CHECK(enc && enc2 && !strcmp(enc, enc2));
	free(enc);
	free(enc2);
	sync_manifest_release(&again);
	sync_manifest_release(&m);
}

static void check_damaged(const char *text, size_t len)
{
	struct manifest m;
	int rc = sync_manifest_decode(text, len, &m);

	CHECK(rc == 0 || rc == -EIO);
	sync_manifest_release(&m);
}

static void test_manifest_damaged(void)
{
	static const char *const bad[] = {
		"", "null", "[]", "42", "\"streams\"", "{}", "{\"streams\":5}",
		"{\"streams\":{}}", "{\"streams\":[]}x", "{\"streams\":[]",
		"{\"streams\":[{\"name\":\"a\",\"segments\":[]}]}{}",
	};
	struct manifest m, s;
	char *text = NULL;
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK_EQ(sync_manifest_decode(bad[i], strlen(bad[i]), &m), -EIO);
		CHECK(!m.nstreams && !m.streams && !m.writer);
	}
	sample(&s);
	CHECK_EQ(sync_manifest_encode(&s, true, &text), 0);
	sync_manifest_release(&s);
	if (!text)
		return;
	len = strlen(text);
	/* Every cut short is no manifest. */
	for (size_t n = 0; n < len; n++) {
		char *cut = malloc(n + 1);

		memcpy(cut, text, n);
		cut[n] = '\0';
		CHECK_EQ(sync_manifest_decode(cut, n, &m), -EIO);
		free(cut);
	}
	/* Any byte changed: an answer, never a crash. */
	for (size_t i = 0; i < len; i++) {
		static const char subst[] = { '\0', '"', '}', ']', '[', '{',
					      ',', ':', '9', '\\', '\xff' };

		for (size_t k = 0; k < sizeof(subst); k++) {
			char c = text[i];

			text[i] = subst[k];
			check_damaged(text, len);
			text[i] = c;
		}
	}
	free(text);
}

static void test_manifest_stale_keys(void)
{
	struct manifest old, cur;
	struct sync_strvec stale = { 0 }, all = { 0 };
	const char *tp = "streamfs-v1/tenants/t/";

	sample(&old);
	sample(&cur);
	/* cur: stream 1 lost its first segment (seg 1), stream 7 gone. */
	cur.streams[0].segs[0] = cur.streams[0].segs[1];
	cur.streams[0].nsegs = 1;
	cur.nstreams = 1;
	free(cur.streams[1].name);
	free(cur.streams[1].segs);
	CHECK_EQ(sync_manifest_stale_keys(&old, &cur, tp, &stale), 0);
	CHECK_EQ(stale.n, 4);
	if (stale.n == 4) {
		CHECK(!strcmp(stale.v[0], "streamfs-v1/tenants/t/segments/"
			      "0000000000000001-0123456789abcdee"));
		CHECK(!strcmp(stale.v[1], "streamfs-v1/tenants/t/segments/"
			      "0000000000000001-0123456789abcdee.idx"));
		CHECK(!strcmp(stale.v[2], "streamfs-v1/tenants/t/segments/"
			      "0000000000000002-0123456789abcded"));
		CHECK(!strcmp(stale.v[3], "streamfs-v1/tenants/t/segments/"
			      "0000000000000002-0123456789abcded.idx"));
	}
	CHECK_EQ(sync_manifest_keys(&old, tp, &all), 0);
	CHECK_EQ(all.n, 6);
	sync_strvec_release(&stale);
	/* Nothing is stale against itself. */
	CHECK_EQ(sync_manifest_stale_keys(&old, &old, tp, &stale), 0);
	CHECK_EQ(stale.n, 0);
	sync_strvec_release(&stale);
	sync_strvec_release(&all);
	sync_manifest_release(&old);
	sync_manifest_release(&cur);
}

static void test_manifest_tombstones(void)
{
	struct manifest prev, m;
	int64_t now = 1795361902000000000LL;

	sample(&prev);
	sample(&m);
	/* m: stream 7 removed; prev's tombstone of stream 4 is fresh. */
	free(m.streams[1].name);
	free(m.streams[1].segs);
	m.nstreams = 1;
	for (size_t i = 0; i < m.ntombs; i++)
		free(m.tombs[i].name);
	free(m.tombs);
	m.tombs = NULL;
	m.ntombs = 0;
	CHECK_EQ(sync_manifest_tombstones(&m, &prev, now), 0);
	CHECK_EQ(m.ntombs, 2);
	if (m.ntombs == 2) {
		CHECK_EQ(m.tombs[0].id, 4);
		CHECK_EQ(m.tombs[0].removed_ns, prev.tombs[0].removed_ns);
		CHECK_EQ(m.tombs[1].id, 7);
		CHECK(!strcmp(m.tombs[1].name, "raw \"bin\"/x"));
		CHECK_EQ(m.tombs[1].removed_ns, now);
	}
	sync_manifest_release(&m);
	/* A week later the old tombstone goes; a stream back by id loses
	 * its tombstone. */
	sample(&m);
	free(m.tombs[0].name);
	m.ntombs = 0;
	prev.tombs[0].id = 7;
	CHECK_EQ(sync_manifest_tombstones(&m, &prev, now), 0);
	CHECK_EQ(m.ntombs, 0);
	sync_manifest_release(&m);
	sample(&m);
	free(m.tombs[0].name);
	m.ntombs = 0;
	m.streams[1].id = 8;
	prev.tombs[0].id = 4;
	CHECK_EQ(sync_manifest_tombstones(&m, &prev,
					  prev.tombs[0].removed_ns + WEEK_NS + 1), 0);
	CHECK_EQ(m.ntombs, 1);
	if (m.ntombs == 1)
		CHECK_EQ(m.tombs[0].id, 7);
	sync_manifest_release(&m);
	sync_manifest_release(&prev);
}

/* ---- keys ---- */

static bool key_rules_hold(const char *enc)
{
	if (enc[0] == '.')
		return false;
	for (const char *p = enc; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
		      *p == '~'))
			return false;
	return true;
}

static void round_trip(const char *name)
{
	char *enc = sync_key_encode(name), *dec = NULL;

	CHECK(enc && key_rules_hold(enc));
	CHECK_EQ(enc ? sync_key_decode(enc, &dec) : -1, 0);
	CHECK(dec && !strcmp(dec, name));
	free(enc);
	free(dec);
}

static void test_key_round_trip(void)
{
	static const char *const names[] = {
		"acme", "we ird.%", ".", "..", ".hidden", "a/b", "~", "~41",
		"Ünïcødé", "tab\there", "-_-", "%2F", "",
	};
	char one[2] = { 0 }, all[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
		round_trip(names[i]);
	for (int c = 1; c < 256; c++) {
		one[0] = (char)c;
		round_trip(one);
		all[c - 1] = (char)c;
	}
	all[255] = '\0';
	round_trip(all);
}

static void test_key_encoding_rules(void)
{
	static const char *const bad[] = {
		"~", "~4", "~zz", "~4g", "~2e", "~41", "~00", "a/b", ".x",
		"a.b", "%20", "a b",
	};
	char *enc = sync_key_encode("we ird.%"), *dec = NULL;

	/* docs/FORMAT.md's example: upper-case hex after '~'. */
	CHECK(enc && !strcmp(enc, "we~20ird~2E~25"));
	free(enc);
	/* Only what the encoder writes decodes. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK_EQ(sync_key_decode(bad[i], &dec), -EINVAL);
		CHECK(!dec);
	}
}

static void check_key(char *key, const char *want)
{
	CHECK(key && !strcmp(key, want));
	if (key && strcmp(key, want))
		fprintf(stderr, "  got %s\n", key);
	free(key);
}

static void test_key_layout(void)
{
	char *tp = sync_tenant_prefix("a b");

	check_key(sync_tenant_prefix("a b"), "streamfs-v1/tenants/a~20b/");
	check_key(sync_segment_key(tp, 0x1f, 0xab8d57cb14572afaULL, false),
		  "streamfs-v1/tenants/a~20b/segments/000000000000001f-"
		  "ab8d57cb14572afa");
	check_key(sync_segment_key(tp, 0x1f, 0xab8d57cb14572afaULL, true),
		  "streamfs-v1/tenants/a~20b/segments/000000000000001f-"
		  "ab8d57cb14572afa.idx");
	check_key(sync_manifest_key(tp),
		  "streamfs-v1/tenants/a~20b/manifest.json");
	check_key(sync_lease_key("a b"), "streamfs-v1/tenants/a~20b/lease.json");
	CHECK(!strcmp(sync_tenants_key, "streamfs-v1/tenants.json"));
	free(tp);
}

/* ---- event index objects ---- */

static const struct store_batch rows[] = {
	{ 1, 2, 100, 10, 1700000000000000000LL, 0x1111 },
	{ 3, 1, 110, 5, 1700000000000000001LL, 0x2222 },
	{ 4, 7, 115, 70, -1, 0xffffffffffffffffULL },
};

static void encode_rows(struct backend_buf *out, uint64_t seg, size_t n)
{
	*out = (struct backend_buf){ .max = 1 << 20 };
	CHECK_EQ(sync_index_begin(out, seg), 0);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(sync_index_add(out, &rows[i]), 0);
	CHECK_EQ(sync_index_end(out), 0);
}

static void test_index_round_trip(void)
{
	for (size_t n = 0; n <= 3; n++) {
		struct backend_buf b;
		struct store_batch *v = NULL;
		size_t got = 99;

		encode_rows(&b, 42, n);
		CHECK_EQ(b.len, 24 + 48 * n + 8);
		CHECK(!memcmp(b.data, "SFIDX\0\0\1", 8));
		CHECK_EQ(sync_index_decode(&b, 42, &v, &got), 0);
		CHECK_EQ(got, n);
		for (size_t i = 0; v && i < n && i < got; i++)
			CHECK(!memcmp(&v[i], &rows[i], sizeof(rows[i])));
		free(v);
		backend_buf_release(&b);
	}
}

static void check_index_refused(const struct backend_buf *b, uint64_t seg)
{
	struct store_batch *v = (void *)1;
	size_t n = 99;

	CHECK_EQ(sync_index_decode(b, seg, &v, &n), -EIO);
	CHECK(!v && !n);
}

static void test_index_damaged(void)
{
	struct backend_buf b, d;

	encode_rows(&b, 42, 3);
	/* Another segment's. */
	check_index_refused(&b, 43);
	/* Every cut, and a byte more. */
	for (size_t n = 0; n < b.len; n++) {
		d = (struct backend_buf){ .data = b.data, .len = n };
		check_index_refused(&d, 42);
	}
	d = (struct backend_buf){ .max = 1 << 20 };
	CHECK_EQ(backend_buf_append(&d, b.data, b.len), 0);
	CHECK_EQ(backend_buf_append(&d, "", 1), 0);
	check_index_refused(&d, 42);
	backend_buf_release(&d);
	/* Any bit flipped, the count and the checksum included. */
	for (size_t i = 0; i < b.len; i++)
		for (int bit = 0; bit < 8; bit++) {
			b.data[i] ^= (char)(1 << bit);
			check_index_refused(&b, 42);
			b.data[i] ^= (char)(1 << bit);
		}
	backend_buf_release(&b);
}

/* ---- event-ID table objects (ids_object.c) ---- */

static void ids_sample(struct ids_object *o, uint64_t seg)
{
	static const char *const ids[] = { "o-3", "o-1", "", "o-2" };

	*o = (struct ids_object){ .seg = seg, .field = 0x1d };
	for (size_t i = 0; i < 4; i++)
		CHECK_EQ(sync_ids_add(o, XXH3_64bits(ids[i], strlen(ids[i])),
				      100 + 10 * i, ids[i], strlen(ids[i])), 0);
}

/* The IDs of O, each with its offset, as "offset=id" lines sorted. */
static char *ids_text(const struct ids_object *o)
{
	char *out = calloc(1, 4096);

	for (uint64_t off = 0; out && off < 1000; off++)
		for (size_t i = 0; i < o->n; i++) {
			uint64_t from = i ? o->ends[i - 1] : 0;

			if (o->pairs[2 * i + 1] == off)
				snprintf(out + strlen(out), 4096 - strlen(out),
					 "%" PRIu64 "=%.*s\n", off,
					 (int)(o->ends[i] - from), o->ids + from);
		}
	return out;
}

static void test_ids_round_trip(void)
{
	struct backend_buf b = { .max = 1 << 20 }, again = { .max = 1 << 20 };
	struct ids_object o, d;
	char *want, *got;

	ids_sample(&o, 42);
	CHECK_EQ(sync_ids_encode(&o, &b), 0);
	CHECK_EQ(b.len, 40 + 24 * 4 + 9 + 8);
	CHECK(!memcmp(b.data, "SFIDT\0\0\1", 8));
	CHECK_EQ(sync_ids_decode(&b, 42, &d), 0);
	CHECK_EQ(d.n, 4);
	CHECK_EQ(d.field, 0x1d);
	/* Sorted by hash, the same IDs at the same offsets. */
	for (size_t i = 1; i < d.n; i++)
		CHECK(d.pairs[2 * i - 2] <= d.pairs[2 * i]);
	want = ids_text(&o);
	got = ids_text(&d);
	CHECK(want && got && !strcmp(want, got));
	CHECK(got && !strcmp(got, "100=o-3\n110=o-1\n120=\n130=o-2\n"));
	/* What decodes encodes back to the same bytes. */
	CHECK_EQ(sync_ids_encode(&d, &again), 0);
	CHECK(again.len == b.len && !memcmp(again.data, b.data, b.len));
	free(want);
	free(got);
	sync_ids_release(&d);
	sync_ids_release(&o);
	backend_buf_release(&again);
	/* None at all. */
	o = (struct ids_object){ .seg = 5 };
	b.len = 0;
	CHECK_EQ(sync_ids_encode(&o, &b), 0);
	CHECK_EQ(sync_ids_decode(&b, 5, &d), 0);
	CHECK_EQ(d.n, 0);
	CHECK_EQ(d.idlen, 0);
	sync_ids_release(&d);
	backend_buf_release(&b);
}

static void check_ids_refused(const struct backend_buf *b, uint64_t seg)
{
	struct ids_object o;

	CHECK_EQ(sync_ids_decode(b, seg, &o), -EIO);
	CHECK(!o.pairs && !o.n);
}

static void test_ids_damaged(void)
{
	struct backend_buf b = { .max = 1 << 20 }, d;
	struct ids_object o;

	ids_sample(&o, 42);
	CHECK_EQ(sync_ids_encode(&o, &b), 0);
	sync_ids_release(&o);
	check_ids_refused(&b, 43);	/* another segment's */
	for (size_t n = 0; n < b.len; n++) {
		d = (struct backend_buf){ .data = b.data, .len = n };
		check_ids_refused(&d, 42);
	}
	d = (struct backend_buf){ .max = 1 << 20 };
	CHECK_EQ(backend_buf_append(&d, b.data, b.len), 0);
	CHECK_EQ(backend_buf_append(&d, "", 1), 0);
	check_ids_refused(&d, 42);
	backend_buf_release(&d);
	/* Any bit flipped (the field's hash is the caller's to judge). */
	for (size_t i = 0; i < b.len; i++)
		for (int bit = 0; bit < 8; bit++) {
			if (i >= 16 && i < 24)
				continue;
			b.data[i] ^= (char)(1 << bit);
			check_ids_refused(&b, 42);
			b.data[i] ^= (char)(1 << bit);
		}
	backend_buf_release(&b);
}

/* The manifest says which segments have an ID table object, and the
 * tenant's id_field; the table's key is a stale key with its segment. */
static void test_manifest_ids(void)
{
	struct manifest m, d, cur = { 0 };
	struct sync_strvec stale = { 0 };
	char *text = NULL;

	sample(&m);
	m.id_field = strdup("event_id");
	m.streams[0].segs[0].ids = 1;
	m.streams[0].segs[1].ids = -1;	/* not said */
	CHECK_EQ(sync_manifest_encode(&m, true, &text), 0);
	CHECK(strstr(text, "\"id_field\":\"event_id\""));
	CHECK(strstr(text, "\"ids\":true"));
	CHECK(strstr(text, "\"ids\":false"));	/* stream b's segment */
	CHECK_EQ(sync_manifest_decode(text, strlen(text), &d), 0);
	check_same(&m, &d);
	CHECK(d.id_field && !strcmp(d.id_field, "event_id"));
	CHECK_EQ(sync_manifest_stale_keys(&d, &cur, "t/", &stale), 0);
	CHECK_EQ(stale.n, 7);	/* 3 segments, 3 indexes, 1 ID table */
	CHECK(stale.n == 7 && !strcmp(stale.v[2],
		"t/segments/0000000000000001-0123456789abcdee.ids"));
	sync_strvec_release(&stale);
	sync_manifest_release(&d);
	sync_manifest_release(&m);
	free(text);
}

/* ---- tail pieces (piece.c) ---- */

/* A piece of two chunks: stream 1's 6 bytes in two rows, stream 7's 3. */
static void piece_sample(struct piece *p, char *a, char *b)
{
	static struct store_batch ra[2], rb[1];

	memcpy(a, "ab\ncd\n", 6);
	memcpy(b, "xyz", 3);
	ra[0] = (struct store_batch){ .first_version = 4, .count = 1, .offset = 10,
				      .length = 3, .time_ns = 5, .hash = 11 };
	ra[1] = (struct store_batch){ .first_version = 5, .count = 1, .offset = 13,
				      .length = 3, .time_ns = 6, .hash = 12 };
	rb[0] = (struct store_batch){ .first_version = 1, .count = 1, .offset = 0,
				      .length = 3, .time_ns = 7, .hash = 13 };
	*p = (struct piece){ .seq = 9, .generation = 2, .n = 2, .alloc = 2 };
	p->chunks = calloc(2, sizeof(*p->chunks));
	p->chunks[0] = (struct piece_chunk){
		.stream = 1, .rows = ra, .nrows = 2, .bytes = a,
		.tail = { .piece = 9, .seg = 3, .seg_offset = 4, .seg_created_ns = 8,
			  .first_version = 4, .count = 2, .offset = 10, .length = 6 } };
	p->chunks[1] = (struct piece_chunk){
		.stream = 7, .rows = rb, .nrows = 1, .bytes = b,
		.tail = { .piece = 9, .seg = 5, .first_version = 1, .count = 1,
			  .length = 3 } };
}

static void test_piece_round_trip(void)
{
	struct backend_buf buf = { .max = 1 << 20 };
	char a[6], b[3];
	struct piece p, d;

	piece_sample(&p, a, b);
	CHECK_EQ(sync_piece_encode(&p, &buf), 0);
	CHECK_EQ(buf.len, 32 + 2 * 72 + 3 * 48 + 9);
	CHECK_EQ(sync_piece_decode(&buf, &d), 0);
	CHECK_EQ(d.seq, 9);
	CHECK_EQ(d.generation, 2);
	CHECK_EQ(d.n, 2);
	for (size_t i = 0; i < d.n && i < 2; i++) {
		CHECK_EQ(d.chunks[i].stream, p.chunks[i].stream);
		CHECK(!memcmp(&d.chunks[i].tail, &p.chunks[i].tail,
			      sizeof(d.chunks[i].tail)));
		CHECK_EQ(d.chunks[i].nrows, p.chunks[i].nrows);
		CHECK(!memcmp(d.chunks[i].rows, p.chunks[i].rows,
			      p.chunks[i].nrows * sizeof(struct store_batch)));
		CHECK(!memcmp(d.chunks[i].bytes, p.chunks[i].bytes,
			      p.chunks[i].tail.length));
	}
	sync_piece_release(&d);
	/* damaged: cut short, one byte more, rows that do not add up */
	buf.len--;
	CHECK_EQ(sync_piece_decode(&buf, &d), -EIO);
	buf.len++;
	CHECK_EQ(backend_buf_append(&buf, "!", 1), 0);
	CHECK_EQ(sync_piece_decode(&buf, &d), -EIO);
	buf.len--;
	buf.data[32 + 2 * 72 + 8] ^= 1;		/* the first row's count */
	CHECK_EQ(sync_piece_decode(&buf, &d), -EIO);
	buf.data[0] ^= 1;			/* the magic */
	CHECK_EQ(sync_piece_decode(&buf, &d), -EIO);
	free(p.chunks);
	backend_buf_release(&buf);
}

static void test_manifest_tails(void)
{
	struct manifest m, d;
	char *text = NULL;

	sample(&m);
	m.streams[0].tails = calloc(1, sizeof(struct manifest_tail));
	m.streams[0].ntails = 1;
	m.streams[0].tails[0] = (struct manifest_tail){
		.piece = 9, .seg = 5, .seg_offset = 10, .seg_created_ns = 3,
		.first_version = 6, .count = 2, .offset = 10, .length = 7 };
	m.pieces = calloc(1, sizeof(struct manifest_piece));
	m.npieces = 1;
	m.pieces[0] = (struct manifest_piece){ .seq = 9, .length = 300,
		.checksum = 0xfedcba9876543210ull, .generation = 4, .created_ns = 5 };
	CHECK_EQ(sync_manifest_encode(&m, true, &text), 0);
	CHECK(text && strstr(text, "\"key\":\"pieces/0000000000000009-"
			     "fedcba9876543210\""));
	CHECK_EQ(sync_manifest_decode(text, strlen(text), &d), 0);
	check_same(&m, &d);
	CHECK_EQ(d.streams[0].ntails, 1);
	CHECK_EQ(d.streams[1].ntails, 0);
	if (d.streams[0].ntails == 1)
		CHECK(!memcmp(d.streams[0].tails, m.streams[0].tails,
			      sizeof(struct manifest_tail)));
	CHECK_EQ(d.npieces, 1);
	if (d.npieces == 1)
		CHECK(!memcmp(d.pieces, m.pieces, sizeof(struct manifest_piece)));
	sync_manifest_release(&d);
	sync_manifest_release(&m);
	free(text);
}

int main(int argc, char **argv)
{
	static const struct unit_test tests[] = {
		{ "manifest_round_trip", test_manifest_round_trip },
		{ "manifest_compare_text", test_manifest_compare_text },
		{ "manifest_unknown_members", test_manifest_unknown_members },
		{ "manifest_damaged", test_manifest_damaged },
		{ "manifest_mode_bits", test_manifest_mode_bits },
		{ "manifest_stale_keys", test_manifest_stale_keys },
		{ "manifest_snapshots", test_manifest_snapshots },
		{ "manifest_tombstones", test_manifest_tombstones },
		{ "key_round_trip", test_key_round_trip },
		{ "key_encoding_rules", test_key_encoding_rules },
		{ "key_layout", test_key_layout },
		{ "index_round_trip", test_index_round_trip },
		{ "index_damaged", test_index_damaged },
		{ "ids_round_trip", test_ids_round_trip },
		{ "ids_damaged", test_ids_damaged },
		{ "manifest_ids", test_manifest_ids },
		{ "piece_round_trip", test_piece_round_trip },
		{ "manifest_tails", test_manifest_tails },
	};

	return unit_run(tests, sizeof(tests) / sizeof(*tests), argc, argv);
}
