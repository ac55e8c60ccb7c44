/*
 * libFuzzer target: the decoder of event index objects
 * (sync_index_decode, sync/index_object.c), what a replica reads from the
 * remote for each segment.
 *
 * The input is decoded as it is, and again with its header, row count and
 * checksum made right, so that the rows are read whatever the checksum
 * (most inputs would stop there).  Oracle beyond the sanitizers: what
 * decodes encodes back to the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sync.h"
#include "sync_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD 24
#define REC 48

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Decodes IN for segment SEG; when it decodes, it must encode back to IN. */
static int decode(const uint8_t *in, size_t len, uint64_t seg)
{
	struct backend_buf buf = { .data = (char *)in, .len = len };
	struct backend_buf again = { .max = 1u << 30 };
	struct store_batch *rows;
	size_t n;
	int rc = sync_index_decode(&buf, seg, &rows, &n);

	if (rc) {
		if (rows || n)
			abort();
		return rc;
	}
	if (sync_index_begin(&again, seg))
		abort();
	for (size_t i = 0; i < n; i++)
		if (sync_index_add(&again, &rows[i]))
			abort();
	if (sync_index_end(&again) || again.len != len ||
	    memcmp(again.data, in, len)) {
		fprintf(stderr, "fuzz_index: %zu rows do not encode back\n", n);
		abort();
	}
	backend_buf_release(&again);
	free(rows);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seg = size >= 16 ? get64(data + 8) : 0;
	size_t rows, len;
	uint8_t *fixed;

	(void)decode(data, size, seg);
	(void)decode(data, size, seg + 1);	/* another segment's: -EIO */
	if (size < HEAD + 8)
		return 0;
	rows = (size - HEAD - 8) / REC;
	len = HEAD + rows * REC + 8;
	fixed = malloc(len);
	if (!fixed)
		abort();
	memcpy(fixed, data, len - 8);
	memcpy(fixed, "SFIDX\0\0\1", 8);
	put64(fixed + 16, rows);
	put64(fixed + len - 8, XXH3_64bits(fixed, len - 8));
	if (decode(fixed, len, seg))
		abort();	/* a well-formed object must decode */
	free(fixed);
	return 0;
}
