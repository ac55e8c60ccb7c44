/*
 * bench_gen: fills a data directory through the store API (no FUSE), for the
 * scale scenarios of tests/bench/run that need a big store before mounting.
 *
 *   bench_gen DIR TENANT events NAME EVENTS   stream NAME with EVENTS
 *                                             100-byte lines, 64 KiB appends
 *   bench_gen DIR TENANT streams N            N empty streams s0000000...
 *
 * The tenant is created if missing.  Prints the time it took.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_lines.h"
#include "store.h"

static int gen_events(struct store_tenant *t, const char *name, uint64_t events)
{
	static char buf[64 << 10];
	uint64_t id, seq = 0, done = 0;
	int rc = store_stream_create(t, name, 0644, 0, 0, &id);

	if (rc == -EEXIST)
		rc = store_stream_lookup(t, name, &id);
	while (!rc && done < events) {
		struct store_append app = { .buf = buf, .expected = STORE_ANY_VERSION };
		struct store_append_result r;
		size_t n = bench_fill(buf, sizeof(buf), false, &seq);

		if (n > events - done)
			n = events - done;
		app.len = n * LINE_LEN;
		rc = store_append(t, id, &app, &r);
		done += n;
	}
	return rc;
}

static int gen_streams(struct store_tenant *t, uint64_t n)
{
	char name[32];
	uint64_t id;
	int rc = 0;

	for (uint64_t i = 0; i < n && !rc; i++) {
		snprintf(name, sizeof(name), "s%07llu", (unsigned long long)i);
		rc = store_stream_create(t, name, 0644, 0, 0, &id);
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct store_config cfg;
	struct store_tenant *t;
	struct store *st = NULL;
	double t0 = bench_now();
	int rc;

	if (argc < 5 || (strcmp(argv[3], "events") == 0 && argc != 6)) {
		fprintf(stderr, "usage: see the comment at the top of bench_gen.c\n");
		return 2;
	}
	store_config_default(&cfg);
	rc = store_open(argv[1], &cfg, &st);
	if (!rc) {
		rc = store_tenant_create(st, argv[2], 0755, 0, 0);
		if (rc == -EEXIST)
			rc = 0;
	}
	if (!rc)
		rc = store_tenant_get(st, argv[2], &t);
	if (!rc && strcmp(argv[3], "events") == 0)
		rc = gen_events(t, argv[4], strtoull(argv[5], NULL, 10));
	else if (!rc)
		rc = gen_streams(t, strtoull(argv[4], NULL, 10));
	if (st)
		store_close(st);
	if (rc) {
		fprintf(stderr, "bench_gen: %s\n", strerror(-rc));
		return 1;
	}
	printf("seconds %.2f\n", bench_now() - t0);
	return 0;
}
