/*
 * libFuzzer target: the append path of store/ (framing, ID extraction,
 * dedup, commit) through store_append() on a real store in a temporary
 * directory, fed as the FUSE layer feeds it.
 *
 * The store lives in a directory below $TMPDIR (default /tmp), removed at
 * exit.  Input: a flags byte, then writes separated by 0xff bytes.  Flags bit 0:
 * raw framing.  Each write goes to store_append() after the partial line
 * the previous one left (as fs/ holds it); -EMSGSIZE drops that line, as
 * fs/ does; the last partial line is committed at the end as by close.
 *
 * Oracles beyond the sanitizers: every call ends in 0 or -EMSGSIZE; the
 * version grows by the events committed; what a call consumed ends where
 * a line does; at the end the stream holds each ID once, and every ID of
 * a line that was taken is there.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENT 512
#define SEP 0xff

static char dir[4096];
static struct store *st;
static struct store_tenant *tenant;

#define REQUIRE(cond)                                                     \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "fuzz_append: %s:%d: %s\n",       \
				__FILE__, __LINE__, #cond);               \
			abort();                                          \
		}                                                         \
	} while (0)

static int remove_one(const char *path, const struct stat *sb, int flag,
		      struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

/* At exit, also when libFuzzer ends the run: the store goes. */
static void remove_store(void)
{
	store_close(st);
	nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void open_store(void)
{
	const char *tmp = getenv("TMPDIR");
	struct store_config cfg;

	snprintf(dir, sizeof(dir), "%s/streamfs-fuzz-XXXXXX", tmp ? tmp : "/tmp");
	REQUIRE(mkdtemp(dir));
	store_config_default(&cfg);
	cfg.max_event = MAX_EVENT;
	REQUIRE(store_open(dir, &cfg, &st) == 0);
	REQUIRE(store_tenant_create(st, "t", 0755, 0, 0) == 0);
	REQUIRE(store_tenant_get(st, "t", &tenant) == 0);
	atexit(remove_store);
}

/* The IDs the harness saw taken, and those the stream holds. */
struct ids {
	char **v;
	size_t n, cap;
};

static void ids_add(struct ids *s, const char *id, size_t len)
{
	char *copy = malloc(len + 1);

	REQUIRE(copy);
	memcpy(copy, id, len);
	copy[len] = '\0';	/* IDs with a NUL compare shorter: fine here */
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 16;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		REQUIRE(s->v);
	}
	s->v[s->n++] = copy;
}

static void ids_free(struct ids *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds to S the IDs of the complete lines of BUF (LEN bytes). */
static void collect(struct ids *s, const char *buf, size_t len)
{
	struct ids_scratch sc;
	const char *p = buf, *end = buf + len, *nl;

	store_ids_scratch_init(&sc, "id");
	while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
		const char *id;
		size_t idlen;
		int rc = store_ids_extract(&sc, p, (size_t)(nl - p), &id, &idlen);

		REQUIRE(rc >= 0);
		if (rc == 1 && !memchr(id, '\0', idlen))
			ids_add(s, id, idlen);
		p = nl + 1;
	}
	store_ids_scratch_release(&sc);
}

struct writer {
	uint64_t stream, version, size;
	enum store_framing framing;
	char *held;		/* the partial line, as fs/ keeps it */
	size_t nheld;
	struct ids sent;	/* IDs of lines taken */
};

static void write_one(struct writer *w, const uint8_t *p, size_t n, bool final)
{
	struct store_append_result r;
	struct store_append app = { .expected = STORE_ANY_VERSION, .final = final };
	char *buf = malloc(w->nheld + n + 1);
	int rc;

	REQUIRE(buf);
	if (w->nheld)
		memcpy(buf, w->held, w->nheld);
	if (n)
		memcpy(buf + w->nheld, p, n);
	app.buf = buf;
	app.len = w->nheld + n;
	rc = store_append(tenant, w->stream, &app, &r);
	REQUIRE(rc == 0 || rc == -EMSGSIZE);
	free(w->held);
	w->held = NULL;
	w->nheld = 0;
	if (rc == 0) {
		REQUIRE(r.consumed <= app.len);
		REQUIRE(r.version == w->version + r.appended);
		REQUIRE(r.size >= w->size);
		if (w->framing == STORE_LINES) {
			REQUIRE(final ? r.consumed == app.len :
			       !r.consumed || buf[r.consumed - 1] == '\n');
			REQUIRE(!memchr(buf + r.consumed, '\n',
					app.len - r.consumed));
			if (final && r.consumed && buf[r.consumed - 1] != '\n')
				buf[app.len++] = '\n';
			collect(&w->sent, buf, app.len);
			w->nheld = app.len - r.consumed;
			w->held = malloc(w->nheld + 1);
			REQUIRE(w->held);
			memcpy(w->held, buf + r.consumed, w->nheld);
		}
		w->version = r.version;
		w->size = r.size;
	}
	free(buf);
}

/* The stream holds each ID once, and every ID the writer had taken. */
static void check_stream(struct writer *w)
{
	struct ids have = { 0 };
	char *all = malloc(w->size + 1);
	ssize_t n;

	REQUIRE(all);
	n = store_read(tenant, w->stream, all, w->size + 1, 0);
	REQUIRE(n >= 0 && (uint64_t)n == w->size);
	collect(&have, all, (size_t)n);
	if (!have.n) {
		REQUIRE(!w->sent.n);
		free(all);
		return;
	}
	qsort(have.v, have.n, sizeof(*have.v), cmp);
	for (size_t i = 1; i < have.n; i++)
		REQUIRE(strcmp(have.v[i - 1], have.v[i]));
	for (size_t i = 0; i < w->sent.n; i++)
		REQUIRE(bsearch(&w->sent.v[i], have.v, have.n,
				sizeof(*have.v), cmp));
	ids_free(&have);
	free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct writer w = { 0 };
	const uint8_t *p, *end = data + size, *sep;

	if (!size || size > 64 << 10)
		return 0;
	if (!st)
		open_store();
	w.framing = data[0] & 1 ? STORE_RAW : STORE_LINES;
	REQUIRE(store_stream_create(tenant, "s", 0644, 0, 0, &w.stream) == 0);
	REQUIRE(store_stream_set_framing(tenant, w.stream, w.framing) == 0);
	for (p = data + 1; p < end; p = sep + 1) {
		sep = memchr(p, SEP, (size_t)(end - p));
		if (!sep)
			sep = end;
		write_one(&w, p, (size_t)(sep - p), false);
	}
	if (w.nheld)
		write_one(&w, NULL, 0, true);
	if (w.framing == STORE_LINES)
		check_stream(&w);
	free(w.held);
	ids_free(&w.sent);
	REQUIRE(store_stream_remove(tenant, w.stream) == 0);
	return 0;
}
