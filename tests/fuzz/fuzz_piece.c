/*
 * libFuzzer target: the decoder of tail pieces (sync_piece_decode,
 * sync/piece.c), what an analysis host, and a writer taking a tenant over,
 * read from the remote every flush.
 *
 * The input is decoded as it is, and again with its magic made right and
 * its chunk count made one that fits, so that most inputs reach the chunk
 * heads and rows.  Oracles beyond the sanitizers: a decoded piece has
 * chunks whose rows cover each chunk's range exactly and whose bytes lie
 * inside the input, in order, ending at its end; and it encodes back to
 * the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD 32
#define CHUNK 72

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* What a decoded P must be, IN its LEN bytes. */
static void check(const struct piece *p, const uint8_t *in, size_t len)
{
	const char *at = NULL;

	if (!p->n)
		abort();
	for (size_t i = 0; i < p->n; i++) {
		const struct piece_chunk *c = &p->chunks[i];
		uint64_t version = c->tail.first_version, off = c->tail.offset;

		for (size_t j = 0; j < c->nrows; j++) {
			if (c->rows[j].first_version != version ||
			    c->rows[j].offset != off)
				abort();
			version += c->rows[j].count;
			off += c->rows[j].length;
		}
		if (version != c->tail.first_version + c->tail.count ||
		    off != c->tail.offset + c->tail.length)
			abort();
		if (c->bytes < (const char *)in ||
		    c->bytes > (const char *)in + len ||
		    c->tail.length > len - (size_t)(c->bytes - (const char *)in) ||
		    (at && c->bytes != at))
			abort();
		at = c->bytes + c->tail.length;
	}
	if (at != (const char *)in + len)
		abort();
}

/* Decodes IN; when it decodes, it must hold together and encode back. */
static int decode(const uint8_t *in, size_t len)
{
	struct backend_buf buf = { .data = (char *)in, .len = len };
	struct backend_buf again = { .max = 1u << 30 };
	struct piece p;
	int rc = sync_piece_decode(&buf, &p);

	if (rc) {
		if (p.chunks || p.n)
			abort();	/* a failure leaves nothing behind */
		return rc;
	}
	check(&p, in, len);
	if (sync_piece_encode(&p, &again) || again.len != len ||
	    memcmp(again.data, in, len)) {
		fprintf(stderr, "fuzz_piece: %zu chunks do not encode back\n",
			p.n);
		abort();
	}
	backend_buf_release(&again);
	sync_piece_release(&p);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	(void)decode(data, size);
	if (size < HEAD + CHUNK)
		return 0;
	fixed = malloc(size);
	if (!fixed)
		abort();
	memcpy(fixed, data, size);
	memcpy(fixed, "SFPIECE\1", 8);
	/* 1 to as many chunk heads as fit, from the input's own count */
	put64(fixed + 24, 1 + (uint64_t)data[24] % ((size - HEAD) / CHUNK));
	(void)decode(fixed, size);
	free(fixed);
	return 0;
}
