/*
 * The events every benchmark writes, so that streamfs and its baselines
 * store exactly the same bytes: 100-byte lines (99 bytes and a newline).
 * With IDs a line is a JSON object whose "id" is 16 hex digits of a
 * mixed 64-bit sequence number: unique, in random order, like UUIDs.
 */
#ifndef BENCH_LINES_H
#define BENCH_LINES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LINE_LEN 100

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: a bijection, so distinct sequence numbers give distinct IDs. */
static inline uint64_t bench_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Writes line number SEQ (LINE_LEN bytes, newline last) at OUT. */
static inline void bench_line(char *out, uint64_t seq, bool ids)
{
	char tmp[LINE_LEN + 1];
	int w;

	if (ids)
		w = snprintf(tmp, sizeof(tmp), "{\"id\":\"%016llx\",\"type\":"
			     "\"order-placed\",\"qty\":%04llu,\"note\":\"",
			     (unsigned long long)bench_mix(seq),
			     (unsigned long long)(seq % 10000));
	else
		w = snprintf(tmp, sizeof(tmp), "%016llx order-placed qty=%04llu ",
			     (unsigned long long)seq,
			     (unsigned long long)(seq % 10000));
	memcpy(out, tmp, (size_t)w);
	memset(out + w, 'x', (size_t)(LINE_LEN - 1 - w));
	if (ids)
		memcpy(out + LINE_LEN - 3, "\"}", 2);
	out[LINE_LEN - 1] = '\n';
}

/* Fills BUF with whole lines up to CAP bytes from *SEQ on; returns the
 * number of lines. */
static inline size_t bench_fill(char *buf, size_t cap, bool ids, uint64_t *seq)
{
	size_t n = 0;

	while ((n + 1) * LINE_LEN <= cap)
		bench_line(buf + LINE_LEN * n++, (*seq)++, ids);
	return n;
}

#endif
