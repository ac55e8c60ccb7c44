/*
 * Append and lookup rates through the store API, without FUSE: the
 * ceiling the mounted filesystem can reach.  Prints one line per figure:
 *   name value unit
 * Usage: bench_store DIR [events]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Fills BUF with whole 100-byte lines up to CAP bytes; IDS gives each a
 * unique JSON ID.  Returns the bytes used and *n (OUT) the lines. */
static size_t fill(char *buf, size_t cap, bool ids, uint64_t *seq,
		   uint64_t *n)
{
	size_t len = 0;

	*n = 0;
	while (len + 100 <= cap) {
		int w;

		if (ids)
			w = snprintf(buf + len, 101, "{\"id\":\"%016llx\",\"type\":"
				     "\"order-placed\",\"qty\":%04llu,\"note\":\"",
				     (unsigned long long)*seq,
				     (unsigned long long)(*seq % 10000));
		else
			w = snprintf(buf + len, 101, "%016llx order-placed qty=%04llu ",
				     (unsigned long long)*seq,
				     (unsigned long long)(*seq % 10000));
		memset(buf + len + w, 'x', (size_t)(99 - w - (ids ? 2 : 0)));
		if (ids)
			memcpy(buf + len + 97, "\"}", 2);
		buf[len + 99] = '\n';
		len += 100;
		(*seq)++;
		(*n)++;
	}
	return len;
}

static int run(struct store_tenant *t, const char *name, bool ids,
	       uint64_t events)
{
	static char buf[64 << 10];
	uint64_t id, seq = 0, done = 0, n;
	struct store_append_result r;
	double t0, dt;
	int rc = store_stream_create(t, name, 0644, 0, 0, &id);

	if (rc)
		return rc;
	t0 = now();
	while (done < events) {
		struct store_append app = { .buf = buf, .expected = STORE_ANY_VERSION };

		app.len = fill(buf, sizeof(buf), ids, &seq, &n);
		rc = store_append(t, id, &app, &r);
		if (rc)
			return rc;
		done += n;
	}
	dt = now() - t0;
	printf("append_%s %.0f events/s\n", name, (double)done / dt);
	t0 = now();
	for (int i = 0; i < 1000; i++) {
		uint64_t off;

		rc = store_offset_of_version(t, id, 1 + (uint64_t)rand() % done, &off);
		if (rc)
			return rc;
	}
	printf("lookup_%s %.1f us\n", name, (now() - t0) * 1e3);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t events = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000000;
	struct store_config cfg;
	struct store_tenant *t;
	struct store *st;
	int rc;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_store DIR [events]\n");
		return 2;
	}
	store_config_default(&cfg);
	rc = store_open(argv[1], &cfg, &st);
	if (!rc)
		rc = store_tenant_create(st, "bench", 0755, 0, 0);
	if (!rc)
		rc = store_tenant_get(st, "bench", &t);
	if (!rc)
		rc = run(t, "lines", false, events);
	if (!rc)
		rc = run(t, "json_ids", true, events / 4);
	if (st)
		store_close(st);
	if (rc) {
		fprintf(stderr, "bench_store: %s\n", strerror(-rc));
		return 1;
	}
	return 0;
}
