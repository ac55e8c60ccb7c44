/*
 * piece.c: tail pieces (docs/FORMAT.md, "Tail pieces"): the codec of the
 * piece object, which carries every stream's new bytes of one flush of a
 * tenant, and the manifest's fields that name pieces ("pieces") and each
 * stream's share of them ("tail").  Little-endian throughout:
 *
 *   head    "SFPIECE\1", seq, generation, chunk count N       (32 bytes)
 *   chunks  N x: stream, seg, seg_offset, seg_created_ns,
 *           first_version, count, offset, length, row count   (72 bytes)
 *   rows    each chunk's rows in turn, as in an event index
 *           object: first_version, count, offset, length,
 *           time_ns, hash                                      (48 bytes)
 *   bytes   each chunk's bytes in turn
 *
 * The object's length and XXH3 are in the manifest (and the XXH3 in its
 * key); decoding checks that everything adds up exactly.  Nothing here
 * talks to the remote.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "sync.h"
#include "sync_int.h"

#define PIECE_MAGIC "SFPIECE\1"
#define PIECE_HEAD 32
#define PIECE_CHUNK 72
#define PIECE_ROW 48

void sync_piece_release(struct piece *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->chunks[i].rows);
		if (p->owns_bytes)
			free(p->chunks[i].bytes);
	}
	free(p->chunks);
	*p = (struct piece){ 0 };
}

static int chunk_head(struct backend_buf *out, const struct piece_chunk *c)
{
	const struct manifest_tail *tl = &c->tail;
	unsigned char h[PIECE_CHUNK];

	sync_put_le64(h, c->stream);
	sync_put_le64(h + 8, tl->seg);
	sync_put_le64(h + 16, tl->seg_offset);
	sync_put_le64(h + 24, (uint64_t)tl->seg_created_ns);
	sync_put_le64(h + 32, tl->first_version);
	sync_put_le64(h + 40, tl->count);
	sync_put_le64(h + 48, tl->offset);
	sync_put_le64(h + 56, tl->length);
	sync_put_le64(h + 64, c->nrows);
	return backend_buf_append(out, h, sizeof(h));
}

int sync_piece_encode(const struct piece *p, struct backend_buf *out)
{
	unsigned char h[PIECE_HEAD];
	int rc;

	memcpy(h, PIECE_MAGIC, 8);
	sync_put_le64(h + 8, p->seq);
	sync_put_le64(h + 16, p->generation);
	sync_put_le64(h + 24, p->n);
	rc = backend_buf_append(out, h, sizeof(h));
	for (size_t i = 0; !rc && i < p->n; i++)
		rc = chunk_head(out, &p->chunks[i]);
	for (size_t i = 0; !rc && i < p->n; i++)
		for (size_t j = 0; !rc && j < p->chunks[i].nrows; j++)
			rc = sync_index_add(out, &p->chunks[i].rows[j]);
	for (size_t i = 0; !rc && i < p->n; i++)
		rc = backend_buf_append(out, p->chunks[i].bytes,
					p->chunks[i].tail.length);
	return rc;
}

/* Chunk I's head at H into C; its rows and bytes come later. */
static void chunk_decode(const unsigned char *h, uint64_t seq,
			 struct piece_chunk *c)
{
	c->stream = sync_get_le64(h);
	c->tail = (struct manifest_tail){
		.piece = seq, .seg = sync_get_le64(h + 8), .seg_offset = sync_get_le64(h + 16),
		.seg_created_ns = (int64_t)sync_get_le64(h + 24),
		.first_version = sync_get_le64(h + 32), .count = sync_get_le64(h + 40),
		.offset = sync_get_le64(h + 48), .length = sync_get_le64(h + 56) };
	c->nrows = (size_t)sync_get_le64(h + 64);
}

/* Rows of C at *P (advanced), which must cover its range exactly. */
static int rows_decode(struct piece_chunk *c, const unsigned char **p)
{
	uint64_t version = c->tail.first_version, offset = c->tail.offset;

	c->rows = calloc(c->nrows, sizeof(*c->rows));
	if (!c->rows)
		return -ENOMEM;
	for (size_t j = 0; j < c->nrows; j++, *p += PIECE_ROW) {
		struct store_batch *b = &c->rows[j];

		*b = (struct store_batch){
			.first_version = sync_get_le64(*p), .count = sync_get_le64(*p + 8),
			.offset = sync_get_le64(*p + 16), .length = sync_get_le64(*p + 24),
			.time_ns = (int64_t)sync_get_le64(*p + 32), .hash = sync_get_le64(*p + 40) };
		if (b->first_version != version || b->offset != offset ||
		    !b->count || !b->length)
			return -EIO;
		version += b->count;
		offset += b->length;
	}
	return version == c->tail.first_version + c->tail.count &&
	       offset == c->tail.offset + c->tail.length ? 0 : -EIO;
}

int sync_piece_decode(const struct backend_buf *in, struct piece *out)
{
	const unsigned char *d = (const unsigned char *)in->data, *p;
	uint64_t n, rows = 0, bytes = 0, need;
	char *data;
	int rc = 0;

	*out = (struct piece){ 0 };
	if (in->len < PIECE_HEAD || memcmp(d, PIECE_MAGIC, 8))
		return -EIO;
	n = sync_get_le64(d + 24);
	if (n == 0 || n > (in->len - PIECE_HEAD) / PIECE_CHUNK)
		return -EIO;
	out->seq = sync_get_le64(d + 8);
	out->generation = sync_get_le64(d + 16);
	out->chunks = calloc((size_t)n, sizeof(*out->chunks));
	if (!out->chunks)
		return -ENOMEM;
	out->n = out->alloc = (size_t)n;
	for (size_t i = 0; i < n; i++) {
		struct piece_chunk *c = &out->chunks[i];

		chunk_decode(d + PIECE_HEAD + i * PIECE_CHUNK, out->seq, c);
		if (c->nrows > in->len / PIECE_ROW || c->tail.length > in->len)
			rc = -EIO;
		rows += c->nrows;
		bytes += c->tail.length;
	}
	need = PIECE_HEAD + n * PIECE_CHUNK + rows * PIECE_ROW + bytes;
	if (rc || rows > in->len || bytes > in->len || need != in->len)
		rc = -EIO;
	p = d + PIECE_HEAD + n * PIECE_CHUNK;
	for (size_t i = 0; !rc && i < n; i++)
		rc = rows_decode(&out->chunks[i], &p);
	data = (char *)p;
	for (size_t i = 0; !rc && i < n; i++) {
		out->chunks[i].bytes = data;
		data += out->chunks[i].tail.length;
	}
	if (rc)
		sync_piece_release(out);
	return rc;
}

char *sync_piece_key(const char *tprefix, uint64_t seq, uint64_t checksum)
{
	char *out;

	if (asprintf(&out, "%spieces/%016" PRIx64 "-%016" PRIx64, tprefix,
		     seq, checksum) < 0)
		return NULL;
	return out;
}

/* ---- the manifest's fields ---- */

static int jadd(json_object *o, const char *k, json_object *v)
{
	if (!v || json_object_object_add(o, k, v)) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static json_object *tail_json(const struct manifest_tail *tl)
{
	json_object *o = json_object_new_object();
	int rc = o ? 0 : -ENOMEM;

	rc = rc ? rc : jadd(o, "piece", json_object_new_uint64(tl->piece));
	rc = rc ? rc : jadd(o, "seg", json_object_new_uint64(tl->seg));
	rc = rc ? rc : jadd(o, "seg_offset", json_object_new_uint64(tl->seg_offset));
	rc = rc ? rc : jadd(o, "seg_created_ns",
			    json_object_new_int64(tl->seg_created_ns));
	rc = rc ? rc : jadd(o, "first_version",
			    json_object_new_uint64(tl->first_version));
	rc = rc ? rc : jadd(o, "count", json_object_new_uint64(tl->count));
	rc = rc ? rc : jadd(o, "offset", json_object_new_uint64(tl->offset));
	rc = rc ? rc : jadd(o, "length", json_object_new_uint64(tl->length));
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static json_object *piece_json(const struct manifest_piece *pc)
{
	json_object *o = json_object_new_object();
	char *key = sync_piece_key("", pc->seq, pc->checksum);
	char sum[17];
	int rc = o && key ? 0 : -ENOMEM;

	snprintf(sum, sizeof(sum), "%016" PRIx64, pc->checksum);
	rc = rc ? rc : jadd(o, "seq", json_object_new_uint64(pc->seq));
	rc = rc ? rc : jadd(o, "key", json_object_new_string(key));
	rc = rc ? rc : jadd(o, "length", json_object_new_uint64(pc->length));
	rc = rc ? rc : jadd(o, "xxh3", json_object_new_string(sum));
	rc = rc ? rc : jadd(o, "generation",
			    json_object_new_uint64(pc->generation));
	rc = rc ? rc : jadd(o, "created_ns", json_object_new_int64(pc->created_ns));
	free(key);
	if (rc) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* An array of N items of SIZE bytes at V, each through FN, as K of O. */
static int jadd_items(json_object *o, const char *k, const void *v, size_t n,
		      size_t size, json_object *(*fn)(const void *))
{
	json_object *arr = json_object_new_array();

	for (size_t i = 0; arr && i < n; i++) {
		json_object *e = fn((const char *)v + i * size);

		if (!e || json_object_array_add(arr, e)) {
			json_object_put(e);
			json_object_put(arr);
			return -ENOMEM;
		}
	}
	return jadd(o, k, arr);
}

static json_object *tail_item(const void *p)
{
	return tail_json(p);
}

static json_object *piece_item(const void *p)
{
	return piece_json(p);
}

/* Only when there are some: manifests without stay as they were. */
int sync_tail_encode(json_object *o, const struct manifest_stream *ms)
{
	return ms->ntails ? jadd_items(o, "tail", ms->tails, ms->ntails,
				       sizeof(*ms->tails), tail_item) : 0;
}

int sync_pieces_encode(json_object *root, const struct manifest *m)
{
	return m->npieces ? jadd_items(root, "pieces", m->pieces, m->npieces,
				       sizeof(*m->pieces), piece_item) : 0;
}

static uint64_t jget_u64(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_uint64(v) : 0;
}

static int64_t jget_i64(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

/* K of O when it is a non-empty array, with its length in *N. */
static json_object *jget_items(json_object *o, const char *k, size_t *n)
{
	json_object *v;

	*n = 0;
	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_array))
		return NULL;
	*n = json_object_array_length(v);
	return *n ? v : NULL;
}

int sync_tail_decode(struct manifest_stream *ms, json_object *o)
{
	size_t n;
	json_object *arr = jget_items(o, "tail", &n);

	if (!arr)
		return 0;
	ms->tails = calloc(n, sizeof(*ms->tails));
	if (!ms->tails)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *t = json_object_array_get_idx(arr, i);

		if (!json_object_is_type(t, json_type_object))
			continue;
		ms->tails[ms->ntails++] = (struct manifest_tail){
			.piece = jget_u64(t, "piece"), .seg = jget_u64(t, "seg"),
			.seg_offset = jget_u64(t, "seg_offset"),
			.seg_created_ns = jget_i64(t, "seg_created_ns"),
			.first_version = jget_u64(t, "first_version"),
			.count = jget_u64(t, "count"),
			.offset = jget_u64(t, "offset"),
			.length = jget_u64(t, "length") };
	}
	return 0;
}

int sync_pieces_decode(struct manifest *m, json_object *root)
{
	size_t n;
	json_object *arr = jget_items(root, "pieces", &n);

	if (!arr)
		return 0;
	m->pieces = calloc(n, sizeof(*m->pieces));
	if (!m->pieces)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_object *p = json_object_array_get_idx(arr, i), *v;
		const char *sum = NULL;

		if (!json_object_is_type(p, json_type_object))
			continue;
		if (json_object_object_get_ex(p, "xxh3", &v) &&
		    json_object_is_type(v, json_type_string))
			sum = json_object_get_string(v);
		m->pieces[m->npieces++] = (struct manifest_piece){
			.seq = jget_u64(p, "seq"), .length = jget_u64(p, "length"),
			.checksum = sum ? strtoull(sum, NULL, 16) : 0,
			.generation = jget_u64(p, "generation"),
			.created_ns = jget_i64(p, "created_ns") };
	}
	return 0;
}

const struct manifest_piece *sync_manifest_piece(const struct manifest *m,
						 uint64_t seq)
{
	for (size_t i = 0; i < m->npieces; i++)
		if (m->pieces[i].seq == seq)
			return &m->pieces[i];
	return NULL;
}

int sync_manifest_piece_keys(const struct manifest *m, const char *tprefix,
			     struct sync_strvec *out)
{
	for (size_t i = 0; i < m->npieces; i++) {
		char *key = sync_piece_key(tprefix, m->pieces[i].seq,
					   m->pieces[i].checksum);
		int rc = key ? sync_strvec_push(out, key) : -ENOMEM;

		free(key);
		if (rc)
			return rc;
	}
	return 0;
}
