/*
 * libFuzzer target: the decoder of event-ID table objects
 * (sync_ids_decode, sync/ids_object.c), what a writer continuing another's
 * history reads from the remote for each segment with IDs.
 *
 * The input is decoded as it is, and again with its header, lengths and
 * checksum made right (the pairs' hashes too, from the IDs they point at),
 * so that the pairs, ends and IDs are read whatever the checksum (most
 * inputs would stop there).  Oracle beyond the sanitizers: what decodes
 * encodes back to the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sync.h"
#include "sync_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD 40

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
	struct ids_object o;
	int rc = sync_ids_decode(&buf, seg, &o);

	if (rc) {
		if (o.pairs || o.n)
			abort();
		return rc;
	}
	if (sync_ids_encode(&o, &again) || again.len != len ||
	    memcmp(again.data, in, len)) {
		fprintf(stderr, "fuzz_idtable: %zu IDs do not encode back\n", o.n);
		abort();
	}
	backend_buf_release(&again);
	sync_ids_release(&o);
	return 0;
}

/* Makes the pairs (N of them at P) hash their IDs and sort, the ends grow
 * and end at IDLEN: a well-formed body. */
static void fix_body(uint8_t *p, uint64_t n, uint64_t idlen)
{
	uint8_t *ends = p + 16 * n, *ids = p + 24 * n;
	uint64_t prev = 0;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t end = get64(ends + 8 * i) % (idlen + 1);

		if (end < prev || i + 1 == n)
			end = i + 1 == n ? idlen : prev;
		put64(ends + 8 * i, end);
		put64(p + 16 * i, XXH3_64bits(ids + prev, (size_t)(end - prev)));
		put64(p + 16 * i + 8, i);	/* offsets grow: ties sort */
		prev = end;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seg = size >= 16 ? get64(data + 8) : 0;
	struct backend_buf buf = { 0 };
	struct ids_object o = { .seg = seg };
	uint64_t n, idlen;
	uint8_t *fixed;

	(void)decode(data, size, seg);
	(void)decode(data, size, seg + 1);	/* another segment's: -EIO */
	if (size < HEAD + 8)
		return 0;
	/* One byte picks how many pairs; the rest is IDs. */
	n = (data[size - 1] % 16);
	if (HEAD + 24 * n + 8 > size)
		n = (size - HEAD - 8) / 24;
	idlen = size - HEAD - 8 - 24 * n;
	fixed = malloc(size);
	if (!fixed)
		abort();
	memcpy(fixed, data, size);
	memcpy(fixed, "SFIDT\0\0\1", 8);
	put64(fixed + 24, n);
	put64(fixed + 32, idlen);
	fix_body(fixed + HEAD, n, idlen);
	/* Sorted as the encoder sorts: re-encode what the fixed pairs say. */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t from = i ? get64(fixed + HEAD + 16 * n + 8 * (i - 1)) : 0;
		uint64_t end = get64(fixed + HEAD + 16 * n + 8 * i);

		if (sync_ids_add(&o, get64(fixed + HEAD + 16 * i),
				 get64(fixed + HEAD + 16 * i + 8),
				 (const char *)fixed + HEAD + 24 * n + from,
				 (size_t)(end - from)))
			abort();
	}
	o.field = get64(fixed + 16);
	if (sync_ids_encode(&o, &buf))
		abort();
	if (decode((const uint8_t *)buf.data, buf.len, seg))
		abort();	/* a well-formed object must decode */
	backend_buf_release(&buf);
	sync_ids_release(&o);
	free(fixed);
	return 0;
}
