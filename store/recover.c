/*
 * Recovery on open.  The append order (segment bytes first, then the index
 * commit) and the sync order (segment fdatasync first, then an index commit
 * at synchronous=FULL) mean that after any crash:
 *   - segment bytes past the last committed batch are not acknowledged:
 *     they are cut off;
 *   - after a power cut, batches committed to the index may name bytes that
 *     never reached the disk, or reached it torn: each batch past the
 *     segment's synced mark is checked against its hash, and the first bad
 *     one is dropped with everything after it.
 * The segments checked are those not sealed: closing ones (full, waiting
 * for the sealer, which seals them in order) and the active one, in
 * order; a closing segment must hold every byte up to where the next one
 * starts, or the stream ends inside it and the segments after it go.
 * Sealed segments were fsynced before they were marked sealed and are left
 * to store_verify().  See docs/STORE.md.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

struct batches {
	struct index_batch *v;
	size_t n, cap;
};

static int collect(void *arg, const struct index_batch *b)
{
	struct batches *bs = arg;
	int rc = STORE_ARRAY_RESERVE(bs->v, bs->cap, bs->n + 1, 64);

	if (rc)
		return rc;
	bs->v[bs->n++] = *b;
	return 0;
}

/* Are the LEN bytes at segment offset IN those the batch hashed?  Bytes
 * below the synced mark were fsynced before and are trusted. */
static bool bytes_intact(struct seg *g, int fd, uint64_t in, uint64_t len,
			 uint64_t hash, uint64_t file_size)
{
	char *buf;
	bool ok;

	if (in + len > file_size)
		return false;
	if (in + len <= g->synced)
		return true;
	buf = malloc(len ? len : 1);
	ok = buf && !store_pread_all(fd, buf, len, in) &&
	     XXH3_64bits(buf, len) == hash;
	free(buf);
	return ok;
}

/* The batches of one segment: a window on the stream's, and the first
 * version after them. */
struct window {
	const struct index_batch *v;
	size_t n;
	uint64_t next_version;
};

/* How many of the batches W of segment G are whole, in order. */
static size_t good_batches(struct seg *g, int fd, const struct window *w,
			   uint64_t file_size, uint64_t *len)
{
	uint64_t version = g->first_version;
	size_t i;

	*len = 0;
	for (i = 0; i < w->n; i++) {
		const struct index_batch *b = &w->v[i];
		uint64_t next = i + 1 < w->n ? w->v[i + 1].first_version
					     : w->next_version;

		if (b->offset != g->offset + *len || b->first_version != version ||
		    next <= version ||
		    !bytes_intact(g, fd, *len, b->length, b->hash, file_size))
			break;
		*len += b->length;
		version = next;
	}
	return i;
}

static int drop_segment(struct store_tenant *t, struct stream *s)
{
	struct seg *g = s->segs[s->nsegs - 1];
	char name[64];
	int rc = store_index_segment_delete(t, g->id);

	if (rc)
		return rc;
	store_seg_name(name, sizeof(name), g->id, ".seg");
	unlinkat(t->segfd, name, 0);
	store_seg_free(t, store_seg_pop(t, s));
	return 0;
}

/* Ends S inside its segment I, LEN bytes into it, before VERSION: later
 * batches and segments go, in the index and in memory. */
static int cut_stream(struct store_tenant *t, struct stream *s, size_t i,
		      uint64_t version, uint64_t len)
{
	struct seg *g = s->segs[i];
	int rc = 0;

	if (version <= s->version)
		store_log("%s/%s: recovery drops versions %" PRIu64 "-%" PRIu64
			  ": their bytes in segment %016" PRIx64 " are missing"
			  " or torn", t->name, s->name, version, s->version, g->id);
	while (!rc && s->nsegs > i + 1)
		rc = drop_segment(t, s);
	s->version = version - 1;
	s->size = g->offset + len;
	if (!rc)
		rc = store_index_batch_delete_from(t, s->id, version);
	if (!rc)
		rc = store_journal_stream_update(t, s);
	return rc;
}

/* After a clean stop (or a sync with nothing appended since) the index
 * says how long each unsealed segment is and that all of it was synced. */
static bool seg_clean(struct store_tenant *t, struct stream *s, size_t i)
{
	struct seg *g = s->segs[i];
	uint64_t end = i + 1 < s->nsegs ? s->segs[i + 1]->offset : s->size;
	char name[64];
	struct stat sb;

	store_seg_name(name, sizeof(name), g->id, ".seg");
	return g->length && g->synced == g->length &&
	       end == g->offset + g->length &&
	       !fstatat(t->segfd, name, &sb, 0) &&
	       (uint64_t)sb.st_size == g->length;
}

/* Checks segment I of S (not sealed) against its batches W.  A closing
 * segment must hold all of its bytes; where a batch is missing or torn,
 * the stream ends (*cut).  Inside the caller's transaction. */
static int recover_segment(struct store_tenant *t, struct stream *s,
			   size_t i, const struct window *w, bool *cut)
{
	struct seg *g = s->segs[i];
	bool last = i + 1 == s->nsegs;
	uint64_t len, version, end = last ? 0 : s->segs[i + 1]->offset;
	struct stat sb;
	size_t good;
	int fd, rc;

	fd = store_seg_fd(t, g);
	if (fd < 0 || fstat(fd, &sb) < 0)
		sb.st_size = 0;	/* a lost file: every batch is dropped */
	good = good_batches(g, fd, w, (uint64_t)sb.st_size, &len);
	version = good < w->n ? w->v[good].first_version : w->next_version;
	/* an fsync may have made more durable than the index knows */
	rc = store_recover_from_mark(t, s, g, fd, (uint64_t)sb.st_size,
				     w->next_version, &len, &version);
	*cut = version != w->next_version || (!last && g->offset + len != end);
	if (!rc && *cut)
		rc = cut_stream(t, s, i, version, len);
	if (!rc) {
		g->length = len;
		g->count = s->version + 1 - g->first_version;
		if (!*cut && !last)
			g->count = s->segs[i + 1]->first_version - g->first_version;
		if (g->synced > g->length)
			g->synced = g->length;
		if ((uint64_t)sb.st_size > len && ftruncate(fd, (off_t)len) < 0)
			rc = -errno;
	}
	if (fd >= 0)
		store_seg_fd_put(t, g);
	if (!rc)
		rc = len ? store_index_segment_update(t, g) : drop_segment(t, s);
	return rc;
}

/* Brings S's unsealed segments (closing ones, then the active one) and the
 * index back to agreement, inside the caller's transaction, and queues
 * the closing ones for the sealer. */
static int recover_stream(struct store_tenant *t, struct stream *s)
{
	size_t first = store_seg_first_unsealed(s), i, at = 0;
	struct batches bs = { 0 };
	bool clean = true, cut = false;
	int rc = 0;

	for (i = first; clean && i < s->nsegs; i++)
		clean = seg_clean(t, s, i);
	if (!clean)
		rc = store_index_batch_scan(t, s->id, s->segs[first]->first_version,
					    collect, &bs);
	for (i = first; !clean && !rc && !cut && i < s->nsegs; i++) {
		uint64_t end = i + 1 < s->nsegs ? s->segs[i + 1]->offset
						: UINT64_MAX;
		struct window w = { .v = bs.v + at };

		while (at + w.n < bs.n && bs.v[at + w.n].offset < end)
			w.n++;
		w.next_version = at + w.n < bs.n ? bs.v[at + w.n].first_version
						 : s->version + 1;
		rc = recover_segment(t, s, i, &w, &cut);
		at += w.n;
	}
	free(bs.v);
	for (i = store_seg_first_unsealed(s); !rc && i < s->nsegs; i++) {
		struct seg *g = s->segs[i];

		g->full = i + 1 < s->nsegs ||
			  g->length >= t->st->cfg.roll_size;
		if (g->full)
			rc = store_seg_queue_closing(t, g);
	}
	return rc;
}

/* Whether NAME in seg/ is a file a segment row names and needs: its ID
 * table, or its bytes unless the row says evicted. */
static bool file_needed(struct store_tenant *t, const char *name)
{
	struct stream *s;
	struct seg *g;
	char *end;
	uint64_t id = strtoull(name, &end, 16);

	if (strlen(name) < 16 || end != name + 16)
		return false;
	g = store_seg_find(t, id, &s);
	if (!g)
		return false;
	if (!strcmp(end, ".ids"))
		return true;
	return !strcmp(end, ".seg") && g->state != STORE_SEG_EVICTED;
}

/* Files in seg/ that no segment row names: a segment created by an append
 * that never committed, an ID table of a removed stream, a temporary; and
 * the copy of an evicted segment, left by a power cut before its flush (or
 * during an eviction): it would be fetched again anyway, and meanwhile
 * take room that cache_size does not see. */
static int remove_orphans(struct store_tenant *t)
{
	DIR *d = fdopendir(dup(t->segfd));
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && !file_needed(t, de->d_name))
			unlinkat(t->segfd, de->d_name, 0);
	closedir(d);
	return 0;
}

int store_recover_tenant(struct store_tenant *t)
{
	int rc = store_journal_begin(t);

	for (size_t i = 0; i < t->nstreams && !rc; i++)
		rc = recover_stream(t, t->streams[i]);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (!rc)
		rc = remove_orphans(t);
	if (!rc)
		rc = store_snapshot_recover(t);
	return rc;
}
