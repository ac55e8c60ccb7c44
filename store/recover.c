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

#include <xxhash.h>

#include "store_int.h"

struct batches {
	struct index_batch *v;
	size_t n, cap;
};

static int collect(void *arg, const struct index_batch *b)
{
	struct batches *bs = arg;

	if (bs->n == bs->cap) {
		size_t cap = bs->cap ? bs->cap * 2 : 64;
		struct index_batch *v = realloc(bs->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		bs->v = v;
		bs->cap = cap;
	}
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
	ok = buf && pread(fd, buf, len, (off_t)in) == (ssize_t)len &&
	     XXH3_64bits(buf, len) == hash;
	free(buf);
	return ok;
}

/* How many of the batches BS of segment G are whole, in order. */
static size_t good_batches(struct stream *s, struct seg *g, int fd,
			   const struct batches *bs, uint64_t file_size,
			   uint64_t *len)
{
	uint64_t version = g->first_version;
	size_t i;

	*len = 0;
	for (i = 0; i < bs->n; i++) {
		const struct index_batch *b = &bs->v[i];
		uint64_t next = i + 1 < bs->n ? bs->v[i + 1].first_version
					      : s->version + 1;

		if (b->offset != g->offset + *len || b->first_version != version ||
		    next <= version ||
		    !bytes_intact(g, fd, *len, b->length, b->hash, file_size))
			break;
		*len += b->length;
		version = next;
	}
	return i;
}

static int drop_active(struct store_tenant *t, struct stream *s, struct seg *g)
{
	char name[64];
	int rc = index_segment_delete(t, g->id);

	if (rc)
		return rc;
	seg_name(name, sizeof(name), g->id, ".seg");
	unlinkat(t->segfd, name, 0);
	seg_free(t, seg_pop(t, s));
	return 0;
}

/* Drops the batches of S from GOOD on, in the index and in memory. */
static int cut_stream(struct store_tenant *t, struct stream *s,
		      const struct batches *bs, size_t good, uint64_t len)
{
	struct seg *g = seg_active(s);
	uint64_t version = s->version, size = s->size;
	int64_t last_ns = s->last_ns;
	int rc;

	store_log("%s/%s: recovery drops versions %" PRIu64 "-%" PRIu64
		  ": their bytes in segment %016" PRIx64 " are missing or torn",
		  t->name, s->name, bs->v[good].first_version, s->version, g->id);
	s->version = bs->v[good].first_version - 1;
	s->size = g->offset + len;
	if (good)
		s->last_ns = bs->v[good - 1].time_ns;
	rc = index_batch_delete_from(t, s->id, bs->v[good].first_version);
	if (!rc)
		rc = index_stream_update(t, s);
	if (rc) {
		s->version = version;
		s->size = size;
		s->last_ns = last_ns;
	}
	return rc;
}

/* After a clean stop (or a sync with nothing appended since) the index
 * says how long the active segment is and that all of it was synced. */
static bool seg_clean(struct store_tenant *t, struct stream *s, struct seg *g)
{
	char name[64];
	struct stat sb;

	seg_name(name, sizeof(name), g->id, ".seg");
	return g->length && g->synced == g->length &&
	       s->size == g->offset + g->length &&
	       !fstatat(t->segfd, name, &sb, 0) &&
	       (uint64_t)sb.st_size == g->length;
}

/* Brings S's active segment and the index back to agreement, inside the
 * caller's transaction. */
static int recover_stream(struct store_tenant *t, struct stream *s)
{
	struct seg *g = seg_active(s);
	struct batches bs = { 0 };
	struct stat sb;
	uint64_t len;
	size_t good;
	int fd, rc;

	if (!g || seg_clean(t, s, g))
		return 0;
	fd = seg_fd(t, g);
	if (fd < 0 || fstat(fd, &sb) < 0)
		sb.st_size = 0;	/* a lost file: every batch is dropped */
	rc = index_batch_scan(t, s->id, g->first_version, collect, &bs);
	if (rc)
		goto out;
	good = good_batches(s, g, fd, &bs, (uint64_t)sb.st_size, &len);
	if (good < bs.n)
		rc = cut_stream(t, s, &bs, good, len);
	if (rc)
		goto out;
	g->length = len;
	g->count = s->version + 1 - g->first_version;
	if (g->synced > g->length)
		g->synced = g->length;
	if ((uint64_t)sb.st_size > len && ftruncate(fd, (off_t)len) < 0)
		rc = -errno;
out:
	free(bs.v);
	if (fd >= 0)
		seg_fd_put(t, g);
	if (!rc)
		rc = len ? index_segment_update(t, g) : drop_active(t, s, g);
	return rc;
}

/* Files in seg/ that no segment row names: a segment created by an append
 * that never committed, an ID table of a removed stream, a temporary. */
static int remove_orphans(struct store_tenant *t)
{
	DIR *d = fdopendir(dup(t->segfd));
	struct stream *s;
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char *end;
		uint64_t id;

		if (de->d_name[0] == '.')
			continue;
		id = strtoull(de->d_name, &end, 16);
		if (strlen(de->d_name) >= 16 && end == de->d_name + 16 &&
		    (!strcmp(end, ".seg") || !strcmp(end, ".ids")) &&
		    seg_find(t, id, &s))
			continue;
		unlinkat(t->segfd, de->d_name, 0);
	}
	closedir(d);
	return 0;
}

int recover_tenant(struct store_tenant *t)
{
	int rc = index_begin(t);

	for (size_t i = 0; i < t->nstreams && !rc; i++)
		rc = recover_stream(t, t->streams[i]);
	if (!rc)
		rc = index_commit(t);
	else
		index_rollback(t);
	if (!rc)
		rc = remove_orphans(t);
	return rc;
}
