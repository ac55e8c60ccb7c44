/*
 * ids_object.c: the codec of event-ID table objects (docs/FORMAT.md,
 * "Event-ID table objects"), which go up beside each segment that holds
 * events with IDs, so that a writer continuing the history deduplicates a
 * retried ID without fetching the segment.  Little-endian throughout:
 *
 *   head    "SFIDT\0\0\1", segment id, XXH3 of the id_field name,
 *           N (IDs), B (bytes of IDs)                       (40 bytes)
 *   pairs   hash of the ID, stream offset of its event      (16 bytes each)
 *   ends    where each pair's ID ends in the IDs            (8 bytes each)
 *   ids     the IDs, in pair order                          (B bytes)
 *   tail    XXH3 of everything before it                    (8 bytes)
 *
 * Pairs are sorted by hash, then offset.  Decoding checks the magic, the
 * segment id, the length, the XXH3, the order, the ends and each ID's
 * hash, so a damaged object gives -EIO, never a table.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

#define IDS_MAGIC "SFIDT\0\0\1"
#define IDS_HEAD 40

void sync_ids_release(struct ids_object *o)
{
	free(o->pairs);
	free(o->ends);
	free(o->ids);
	*o = (struct ids_object){ 0 };
}

int sync_ids_add(struct ids_object *o, uint64_t hash, uint64_t offset,
		 const char *id, size_t len)
{
	if (STORE_ARRAY_RESERVE(o->pairs, o->apairs, 2 * (o->n + 1), 256) ||
	    STORE_ARRAY_RESERVE(o->ends, o->aends, o->n + 1, 128) ||
	    STORE_ARRAY_RESERVE(o->ids, o->aids, o->idlen + len + 1, 4096))
		return -ENOMEM;
	memcpy(o->ids + o->idlen, id, len);
	o->idlen += len;
	o->pairs[2 * o->n] = hash;
	o->pairs[2 * o->n + 1] = offset;
	o->ends[o->n++] = o->idlen;
	return 0;
}

/* Pair i of O with its ID's place, for sorting. */
struct ids_ent {
	uint64_t hash, offset, from, len;
};

static int ent_cmp(const void *a, const void *b)
{
	const struct ids_ent *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int sync_ids_encode(const struct ids_object *o, struct backend_buf *out)
{
	struct ids_ent *e = calloc(o->n ? o->n : 1, sizeof(*e));
	unsigned char head[IDS_HEAD], w[16];
	uint64_t end = 0;
	int rc = e ? 0 : -ENOMEM;

	for (size_t i = 0; !rc && i < o->n; i++) {
		uint64_t from = i ? o->ends[i - 1] : 0;

		e[i] = (struct ids_ent){ o->pairs[2 * i], o->pairs[2 * i + 1],
					 from, o->ends[i] - from };
	}
	if (!rc)
		qsort(e, o->n, sizeof(*e), ent_cmp);
	memcpy(head, IDS_MAGIC, 8);
	sync_put_le64(head + 8, o->seg);
	sync_put_le64(head + 16, o->field);
	sync_put_le64(head + 24, o->n);
	sync_put_le64(head + 32, o->idlen);
	if (!rc)
		rc = backend_buf_reserve(out, IDS_HEAD + 24 * o->n + o->idlen + 8);
	if (!rc)
		rc = backend_buf_append(out, head, sizeof(head));
	for (size_t i = 0; !rc && i < o->n; i++) {
		sync_put_le64(w, e[i].hash);
		sync_put_le64(w + 8, e[i].offset);
		rc = backend_buf_append(out, w, 16);
	}
	for (size_t i = 0; !rc && i < o->n; i++) {
		end += e[i].len;
		sync_put_le64(w, end);
		rc = backend_buf_append(out, w, 8);
	}
	for (size_t i = 0; !rc && i < o->n; i++)
		rc = backend_buf_append(out, o->ids + e[i].from, e[i].len);
	if (!rc) {
		sync_put_le64(w, XXH3_64bits(out->data, out->len));
		rc = backend_buf_append(out, w, 8);
	}
	free(e);
	return rc;
}

/* Whether D's N pairs, ends and IDS (IDLEN bytes) are in order, add up,
 * and each ID hashes to its pair's hash. */
static bool ids_fit(const unsigned char *d, uint64_t n, const char *ids,
		    uint64_t idlen)
{
	const unsigned char *ends = d + 16 * n;
	uint64_t prev = 0, ph = 0, po = 0;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t h = sync_get_le64(d + 16 * i);
		uint64_t off = sync_get_le64(d + 16 * i + 8);
		uint64_t end = sync_get_le64(ends + 8 * i);

		if (end < prev || end > idlen ||
		    (i && (h < ph || (h == ph && off <= po))) ||
		    XXH3_64bits(ids + prev, (size_t)(end - prev)) != h)
			return false;
		prev = end;
		ph = h;
		po = off;
	}
	return prev == idlen;
}

int sync_ids_decode(const struct backend_buf *in, uint64_t seg,
		    struct ids_object *out)
{
	const unsigned char *d = (const unsigned char *)in->data;
	uint64_t n, idlen;

	*out = (struct ids_object){ 0 };
	if (in->len < IDS_HEAD + 8 || memcmp(d, IDS_MAGIC, 8) ||
	    sync_get_le64(d + 8) != seg)
		return -EIO;
	n = sync_get_le64(d + 24);
	idlen = sync_get_le64(d + 32);
	if (n > (in->len - IDS_HEAD - 8) / 24 ||
	    idlen != in->len - IDS_HEAD - 8 - 24 * n ||
	    XXH3_64bits(d, in->len - 8) != sync_get_le64(d + in->len - 8) ||
	    !ids_fit(d + IDS_HEAD, n, (const char *)d + IDS_HEAD + 24 * n,
		     idlen))
		return -EIO;
	out->seg = seg;
	out->field = sync_get_le64(d + 16);
	out->pairs = malloc(n ? 16 * n : 1);
	out->ends = malloc(n ? 8 * n : 1);
	out->ids = malloc(idlen ? idlen : 1);
	if (!out->pairs || !out->ends || !out->ids) {
		sync_ids_release(out);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < n; i++) {
		out->pairs[2 * i] = sync_get_le64(d + IDS_HEAD + 16 * i);
		out->pairs[2 * i + 1] = sync_get_le64(d + IDS_HEAD + 16 * i + 8);
		out->ends[i] = sync_get_le64(d + IDS_HEAD + 16 * n + 8 * i);
	}
	memcpy(out->ids, d + IDS_HEAD + 24 * n, idlen);
	out->n = n;
	out->idlen = idlen;
	out->apairs = 2 * n;
	out->aends = n;
	out->aids = idlen;
	return 0;
}
