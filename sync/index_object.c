/*
 * index_object.c: the codec of event index objects (docs/FORMAT.md), which
 * go up beside each segment and let a replica add the segment without its
 * bytes.  Little-endian throughout:
 *
 *   head    "SFIDX\0\0\1", segment id, row count            (24 bytes)
 *   rows    first_version, count, offset, length, time_ns, hash
 *                                                    (48 bytes each)
 *   tail    XXH3 of everything before it                    (8 bytes)
 *
 * Decoding checks the magic, the segment id, the length and the XXH3, so a
 * damaged object gives -EIO, never rows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

#define IDX_MAGIC "SFIDX\0\0\1"
#define IDX_HEAD 24
#define IDX_REC 48

int sync_index_begin(struct backend_buf *out, uint64_t seg)
{
	unsigned char head[IDX_HEAD];

	memcpy(head, IDX_MAGIC, 8);
	sync_put_le64(head + 8, seg);
	sync_put_le64(head + 16, 0);	/* the count, once known */
	return backend_buf_append(out, head, sizeof(head));
}

int sync_index_add(struct backend_buf *out, const struct store_batch *b)
{
	unsigned char rec[IDX_REC];

	sync_put_le64(rec, b->first_version);
	sync_put_le64(rec + 8, b->count);
	sync_put_le64(rec + 16, b->offset);
	sync_put_le64(rec + 24, b->length);
	sync_put_le64(rec + 32, (uint64_t)b->time_ns);
	sync_put_le64(rec + 40, b->hash);
	return backend_buf_append(out, rec, sizeof(rec));
}

int sync_index_end(struct backend_buf *out)
{
	unsigned char sum[8];

	sync_put_le64((unsigned char *)out->data + 16, (out->len - IDX_HEAD) / IDX_REC);
	sync_put_le64(sum, XXH3_64bits(out->data, out->len));
	return backend_buf_append(out, sum, sizeof(sum));
}

/* sync_index_add() with the shape of store_segment_batches()'s callback. */
static int add_row(void *arg, const struct store_batch *b)
{
	return sync_index_add(arg, b);
}

int sync_index_encode(struct store_tenant *t, uint64_t seg,
		      struct backend_buf *out)
{
	int rc = sync_index_begin(out, seg);

	if (!rc)
		rc = store_segment_batches(t, seg, add_row, out);
	if (!rc)
		rc = sync_index_end(out);
	return rc;
}

int sync_index_decode(const struct backend_buf *in, uint64_t seg,
		      struct store_batch **out, size_t *n)
{
	const unsigned char *p = (const unsigned char *)in->data;
	uint64_t count;
	struct store_batch *v;

	*out = NULL;
	*n = 0;
	if (in->len < IDX_HEAD + 8 || memcmp(p, IDX_MAGIC, 8) ||
	    sync_get_le64(p + 8) != seg)
		return -EIO;
	count = sync_get_le64(p + 16);
	if (count > (in->len - IDX_HEAD - 8) / IDX_REC ||
	    in->len != IDX_HEAD + count * IDX_REC + 8 ||
	    sync_get_le64(p + in->len - 8) != XXH3_64bits(p, in->len - 8))
		return -EIO;
	v = calloc(count ? count : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++) {
		const unsigned char *r = p + IDX_HEAD + i * IDX_REC;

		v[i] = (struct store_batch){
			.first_version = sync_get_le64(r), .count = sync_get_le64(r + 8),
			.offset = sync_get_le64(r + 16), .length = sync_get_le64(r + 24),
			.time_ns = (int64_t)sync_get_le64(r + 32), .hash = sync_get_le64(r + 40) };
	}
	*out = v;
	*n = count;
	return 0;
}
