/*
 * What sync/ needs beyond segment states: the event index of a sealed
 * segment (shipped beside it to the remote), and, on analysis hosts,
 * extending a local replica of a stream with a segment that lives on the
 * remote.  A replica segment starts evicted; the first read fetches it
 * through the fetch hook.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

struct batch_list {
	struct store_tenant *t;
	struct stream *s;
	struct store_batch *v;
	size_t n, cap;
	uint64_t end_version;	/* first version past the segment */
};

static int list_push(struct batch_list *l, const struct store_batch *b)
{
	int rc = STORE_ARRAY_RESERVE(l->v, l->cap, l->n + 1, 64);

	if (rc)
		return rc;
	l->v[l->n++] = *b;
	return 0;
}

/* A merged row travels as the batches it holds, each with the hash of its
 * own bytes: what the remote's event index has always listed. */
struct merged {
	struct batch_list *l;
	const char *bytes;	/* the row's */
	uint64_t offset;	/* where they start in the stream */
};

static int push_sub(void *arg, const struct sub_batch *b)
{
	struct merged *m = arg;

	return list_push(m->l, &(struct store_batch){
		.first_version = b->first_version,
		.offset = b->offset,
		.length = b->length,
		.time_ns = b->time_ns,
		.hash = XXH3_64bits(m->bytes + (b->offset - m->offset), b->length),
	});
}

static int push_merged(struct batch_list *l, const struct index_batch *b)
{
	char *buf = malloc(b->length);
	struct merged m = { .l = l, .bytes = buf, .offset = b->offset };
	ssize_t got = buf ? store_seg_read(l->t, l->s, buf, b->length, b->offset)
			  : -ENOMEM;
	int rc = got == (ssize_t)b->length ? 0 : got < 0 ? (int)got : -EIO;

	if (!rc)
		rc = store_subs_walk(b, push_sub, &m);
	free(buf);
	return rc < 0 ? rc : 0;
}

static int batch_push(void *arg, const struct index_batch *b)
{
	struct batch_list *l = arg;

	if (b->first_version >= l->end_version)
		return 1;	/* past the segment: stop */
	if (b->subs)
		return push_merged(l, b);
	return list_push(l, &(struct store_batch){
		.first_version = b->first_version,
		.offset = b->offset,
		.length = b->length,
		.time_ns = b->time_ns,
		.hash = b->hash,
	});
}

int store_segment_batches(struct store_tenant *t, uint64_t seg,
			  int (*fn)(void *arg, const struct store_batch *b),
			  void *arg)
{
	struct batch_list l = { .t = t };
	struct stream *s;
	struct seg *g;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	rc = g ? store_journal_flush(t) : -ENOENT;
	if (!rc) {
		l.s = s;
		l.end_version = g->first_version + g->count;
		rc = store_index_batch_scan(t, s->id, g->first_version,
					    batch_push, &l);
	}
	pthread_rwlock_unlock(&t->lock);
	/* a batch's count is the distance to the next one's first version */
	for (size_t i = 0; i < l.n; i++)
		l.v[i].count = (i + 1 < l.n ? l.v[i + 1].first_version
					   : l.end_version) - l.v[i].first_version;
	for (size_t i = 0; !rc && i < l.n; i++)
		rc = fn(arg, &l.v[i]);
	free(l.v);
	return rc;
}

/* Do SEG and its batches continue stream S without a gap? */
static bool replica_fits(const struct stream *s, const struct store_segment *seg,
			 const struct store_batch *b, size_t n)
{
	uint64_t version = seg->first_version, offset = seg->offset;

	if (seg->first_version != s->version + 1 || seg->offset != s->size ||
	    !n || !seg->count || !seg->length)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (b[i].first_version != version || b[i].offset != offset ||
		    !b[i].count || !b[i].length)
			return false;
		version += b[i].count;
		offset += b[i].length;
	}
	return version == seg->first_version + seg->count &&
	       offset == seg->offset + seg->length;
}

/* The rows of segment G (already pushed on S) and its batches. */
static int replica_rows(struct store_tenant *t, struct stream *s,
			const struct store_batch *b, size_t n)
{
	int rc = 0;

	for (size_t i = 0; !rc && i < n; i++)
		rc = store_index_batch_insert(t, s->id, &b[i], NULL, 0);
	if (!rc)
		rc = store_journal_stream_update(t, s);
	return rc;
}

int store_replica_add(struct store_tenant *t, uint64_t id,
		      const struct store_segment *seg,
		      const struct store_batch *batches, size_t n)
{
	struct seg *g = calloc(1, sizeof(*g));
	struct stream *s, old;
	uint64_t size = 0;
	int rc;

	if (!g)
		return -ENOMEM;
	g->fd = -1;
	g->origin = seg->origin ? seg->origin : seg->seg;
	g->first_version = seg->first_version;
	g->offset = seg->offset;
	g->length = g->synced = seg->length;
	g->count = seg->count;
	g->checksum = seg->checksum;
	g->created_ns = seg->created_ns;
	g->state = STORE_SEG_EVICTED;
	if (seg->keep_id) {
		g->id = g->origin;
		/* From the published manifest (true when it does not say):
		 * its table is installed from the remote, or rebuilt from
		 * the bytes when dedup needs it. */
		g->has_ids = seg->has_ids;
	}

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (store_seg_active(s))
		rc = -EBUSY;	/* a replica is never appended to here */
	else if (!replica_fits(s, seg, batches, n))
		rc = -EINVAL;
	else
		rc = store_journal_begin(t);
	if (!rc)
		rc = store_index_segment_insert(t, s->id, g);	/* gives g->id */
	if (!rc)
		/* before the commit: nothing fails after it */
		rc = store_seg_push(t, s, g);
	if (rc) {
		if (s)
			store_index_rollback(t);
		goto out;
	}
	old = *s;
	s->version += seg->count;
	s->size += seg->length;
	s->last_ns = batches[n - 1].time_ns;
	s->mtime = s->ctime = store_ts(s->last_ns);
	rc = replica_rows(t, s, batches, n);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (rc) {
		store_stream_restore(s, &old);
		store_seg_pop(t, s);
		goto out;
	}
	size = s->size;
	g = NULL;
out:
	pthread_rwlock_unlock(&t->lock);
	free(g);
	if (!rc && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, size);
	return rc;
}

/* ---- tail segments: bytes shipped before their segment sealed ----
 *
 * A writer ships the bytes its active segments take every `flush`, in tail
 * pieces (docs/FORMAT.md).  On an analysis host they land in a local
 * segment with the writer's segment id as origin, grown as pieces come: a
 * local copy (state uploaded) with no checksum yet, never evicted (no
 * remote object could bring it back).  When the sealed segment is
 * published, its checksum is checked against these bytes and becomes the
 * segment's: from then on it is an ordinary replica segment.  Bytes once
 * added never change. */

/* Do the rows B continue S without a gap, and add up to LEN bytes? */
static bool tail_fits(const struct stream *s, const struct store_batch *b,
		      size_t n, size_t len)
{
	uint64_t version = s->version + 1, offset = s->size;

	for (size_t i = 0; i < n; i++) {
		if (b[i].first_version != version || b[i].offset != offset ||
		    !b[i].count || !b[i].length)
			return false;
		version += b[i].count;
		offset += b[i].length;
	}
	return n && offset - s->size == len;
}

/* A new segment of ORIGIN at S's end in STATE, its row inserted and its
 * file created (held as by store_seg_fd(): *FD): a replica's tail segment
 * (STORE_SEG_UPLOADED, a new id), or a seeded writer's active segment
 * (STORE_SEG_ACTIVE, id ORIGIN, holding IDs as far as anyone knows). */
static int tail_new(struct store_tenant *t, struct stream *s, uint64_t origin,
		    int64_t created_ns, enum store_seg_state state,
		    struct seg **out, int *fd)
{
	struct seg *g = calloc(1, sizeof(*g));
	char name[64];
	int rc;

	if (!g)
		return -ENOMEM;
	g->fd = -1;
	g->origin = origin;
	g->first_version = s->version + 1;
	g->offset = s->size;
	g->created_ns = created_ns;
	g->state = state;
	if (state == STORE_SEG_ACTIVE) {
		g->id = origin;
		g->has_ids = true;
	}
	rc = store_index_segment_insert(t, s->id, g);
	if (rc) {
		free(g);
		return rc;
	}
	store_seg_name(name, sizeof(name), g->id, ".seg");
	*fd = openat(t->segfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	rc = *fd < 0 ? -errno : store_seg_push(t, s, g);
	if (rc) {
		if (*fd >= 0) {
			close(*fd);
			unlinkat(t->segfd, name, 0);
		}
		free(g);
		return rc;
	}
	store_seg_fd_adopt(t, g, *fd);
	*out = g;
	return 0;
}

/* Undoes a failed store_replica_tail_append() after its rollback: G (its
 * file held as FD) back to LENGTH bytes and COUNT events, or gone when
 * FRESH. */
static void tail_undo(struct store_tenant *t, struct stream *s, struct seg *g,
		      int fd, bool fresh, uint64_t length, uint64_t count)
{
	char name[64];

	g->length = g->synced = length;
	g->count = count;
	if (ftruncate(fd, (off_t)length) < 0)
		store_log(LOG_WARNING, "%s: tail segment %" PRIu64 " not cut back: %s",
			  t->name, g->id, strerror(errno));
	store_seg_fd_put(t, g);
	if (!fresh)
		return;
	store_seg_name(name, sizeof(name), g->id, ".seg");
	store_seg_pop(t, s);
	store_seg_fd_close(t, g);
	unlinkat(t->segfd, name, 0);
	store_seg_free(t, g);
}

/* Writes LEN bytes (N batches of COUNT events) at the end of tail segment
 * G of S (FD its file; FRESH when just made by tail_new()) and commits its
 * rows, the index transaction begun; on failure undoes all of it (G is
 * then gone when FRESH).  DURABLE: on disk before the index names them. */
static int tail_write(struct store_tenant *t, struct stream *s, struct seg *g,
		      int fd, bool fresh, bool durable, const void *bytes,
		      size_t len, uint64_t count, const struct store_batch *b,
		      size_t n)
{
	uint64_t length = g->length, gcount = g->count;
	struct stream old = *s;
	int rc = store_pwrite_all(fd, bytes, len, length);

	if (!rc && durable && fdatasync(fd) < 0)
		rc = -errno;
	if (!rc) {
		g->length = g->synced = length + len;
		g->count += count;
		s->version += count;
		s->size += len;
		s->last_ns = b[n - 1].time_ns;
		s->mtime = s->ctime = store_ts(s->last_ns);
		rc = store_index_segment_update(t, g);
	}
	if (!rc)
		rc = replica_rows(t, s, b, n);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (rc) {
		store_stream_restore(s, &old);
		tail_undo(t, s, g, fd, fresh, length, gcount);
	}
	return rc;
}

int store_replica_tail_append(struct store_tenant *t, uint64_t id,
			      uint64_t origin, int64_t created_ns,
			      const void *bytes, size_t len,
			      const struct store_batch *b, size_t n)
{
	struct stream *s;
	struct seg *g = NULL;
	uint64_t size = 0, count = 0;
	bool fresh = false;
	int fd = -1, rc;

	for (size_t i = 0; i < n; i++)
		count += b[i].count;
	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (store_seg_active(s))
		rc = -EBUSY;
	else if (!tail_fits(s, b, n, len))
		rc = -EINVAL;
	else
		rc = store_journal_begin(t);
	if (rc)
		goto out;
	g = s->nsegs ? s->segs[s->nsegs - 1] : NULL;
	fresh = !g || !store_seg_is_tail(g) || g->origin != origin;
	if (fresh) {
		rc = tail_new(t, s, origin, created_ns, STORE_SEG_UPLOADED, &g,
			      &fd);
	} else {
		fd = store_seg_fd(t, g);
		rc = fd < 0 ? fd : 0;
	}
	if (rc) {
		g = NULL;
		store_index_rollback(t);
		goto out;
	}
	rc = tail_write(t, s, g, fd, fresh, false, bytes, len, count, b, n);
	if (rc)
		goto out;
	for (size_t i = 0; i < n; i++)
		store_seg_rows_grew(t, g, b[i].offset - g->offset, b[i].hash);
	store_seg_fd_put(t, g);
	size = s->size;
out:
	pthread_rwlock_unlock(&t->lock);
	if (!rc && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, size);
	return rc;
}

/* The tail segment of stream ID with origin ORIGIN, with T's lock. */
static struct seg *tail_find(struct store_tenant *t, uint64_t id,
			     uint64_t origin)
{
	struct stream *s = t->removed ? NULL : store_stream_find(t, id);

	for (size_t i = 0; s && i < s->nsegs; i++)
		if (s->segs[i]->origin == origin && store_seg_is_tail(s->segs[i]))
			return s->segs[i];
	return NULL;
}

int store_replica_tail_seal(struct store_tenant *t, uint64_t id,
			    const struct store_segment *seg)
{
	uint64_t sum = 0;
	struct seg *g;
	int fd, rc;

	/* The sync thread alone appends to a tail segment, and it is the
	 * caller: its bytes hold still while they are hashed unlocked. */
	pthread_rwlock_rdlock(&t->lock);
	g = tail_find(t, id, seg->origin);
	if (!g)
		rc = -ENOENT;
	else if (g->offset != seg->offset || g->length != seg->length ||
		 g->first_version != seg->first_version || g->count != seg->count)
		rc = -EINVAL;
	else
		rc = fd = store_seg_fd(t, g);
	pthread_rwlock_unlock(&t->lock);
	if (rc < 0)
		return rc;
	rc = store_file_checksum(fd, seg->length, &sum);
	pthread_rwlock_wrlock(&t->lock);
	store_seg_fd_put(t, g);
	if (!rc && sum != seg->checksum)
		rc = -EIO;
	if (!rc && tail_find(t, id, seg->origin) != g)
		rc = -ENOENT;	/* removed meanwhile */
	if (!rc) {
		g->checksum = sum;
		rc = store_index_segment_update(t, g);
		if (rc)
			g->checksum = 0;
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* ---- a writer continuing another writer's tail pieces (sync/seed.c) ----
 *
 * A writer that takes a tenant over finds, past the published segments of
 * a stream, the bytes its predecessor shipped in tail pieces from
 * segments it never uploaded whole.  They become the new writer's own
 * segments under the same ids: the last one its active segment, which
 * its appends continue (so its next tail pieces carry on the same segment
 * for analysis hosts), the ones before it closed and sealed as usual. */

int store_seed_tail_append(struct store_tenant *t, uint64_t id,
			   uint64_t seg, uint64_t seg_offset,
			   int64_t created_ns, const void *bytes, size_t len,
			   const struct store_batch *b, size_t n)
{
	struct stream *s;
	struct seg *g = NULL, *prev;
	uint64_t size = 0, count = 0;
	bool fresh = false;
	int fd = -1, rc;

	for (size_t i = 0; i < n; i++)
		count += b[i].count;
	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	prev = s ? store_seg_active(s) : NULL;
	fresh = !prev || prev->full || prev->id != seg;
	if (!s)
		rc = -ENOENT;
	else if (!tail_fits(s, b, n, len) || (fresh && seg_offset != s->size) ||
		 (!fresh && prev->offset != seg_offset))
		rc = -EINVAL;
	else if (fresh && prev && !prev->full)
		rc = store_seg_close(t, s, prev);	/* the sealer's now */
	else
		rc = 0;
	if (!rc)
		rc = store_journal_begin(t);
	if (rc)
		goto out;
	if (fresh) {
		rc = tail_new(t, s, seg, created_ns, STORE_SEG_ACTIVE, &g, &fd);
	} else {
		g = prev;
		fd = store_seg_fd(t, g);
		rc = fd < 0 ? fd : 0;
	}
	if (rc) {
		g = NULL;
		store_index_rollback(t);
		goto out;
	}
	/* on disk before the index names them, as an append's are once
	 * fsynced: a seeding is not repeated once it succeeded */
	rc = tail_write(t, s, g, fd, fresh, true, bytes, len, count, b, n);
	if (rc)
		goto out;
	store_seg_hash_update(g, bytes, len);
	for (size_t i = 0; i < n; i++)
		store_seg_rows_grew(t, g, b[i].offset - g->offset, b[i].hash);
	store_seg_fd_put(t, g);
	/* its IDs are found from its bytes by the next append with one */
	store_stream_ids_release(s);
	size = s->size;
out:
	pthread_rwlock_unlock(&t->lock);
	if (!rc && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, size);
	return rc;
}
