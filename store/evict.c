/*
 * Segments as sync/ sees them: listed by state, marked uploaded, evicted
 * (the file goes, the index row stays) and restored from a fetched copy,
 * which the sealer then makes durable (seal.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

int store_segment_list(struct store_tenant *t, enum store_seg_state state,
		       int (*fn)(void *arg, const struct store_segment *seg),
		       void *arg)
{
	struct store_segment *list = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	/* Collect under the lock, call out without it. */
	pthread_rwlock_rdlock(&t->lock);
	for (size_t i = 0; !t->removed && i < t->nstreams && !rc; i++) {
		struct stream *s = t->streams[i];

		for (size_t j = 0; j < s->nsegs; j++) {
			if (s->segs[j]->state != state)
				continue;
			rc = STORE_ARRAY_RESERVE(list, cap, n + 1, 16);
			if (rc)
				break;
			store_seg_fill(s, s->segs[j], &list[n++]);
		}
	}
	pthread_rwlock_unlock(&t->lock);
	for (size_t i = 0; !rc && i < n; i++)
		rc = fn(arg, &list[i]);
	free(list);
	return rc;
}

char *store_segment_path(struct store_tenant *t, uint64_t seg)
{
	char name[64], *path;

	store_seg_name(name, sizeof(name), seg, ".seg");
	if (asprintf(&path, "%s/" SEG_DIR "/%s", t->path, name) < 0)
		return NULL;
	return path;
}

static int set_state(struct store_tenant *t, struct seg *g,
		     enum store_seg_state state)
{
	enum store_seg_state old = g->state;
	int rc;

	g->state = state;
	rc = store_index_segment_update(t, g);
	if (rc)
		g->state = old;
	return rc;
}

int store_segment_mark_uploaded(struct store_tenant *t, uint64_t seg)
{
	struct stream *s;
	struct seg *g;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (!g)
		rc = -ENOENT;
	else if (g->state == STORE_SEG_ACTIVE)
		rc = -EBUSY;
	else if (g->state == STORE_SEG_SEALED)
		rc = set_state(t, g, STORE_SEG_UPLOADED);
	else
		rc = 0;
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

bool store_segment_evicted(struct store_tenant *t, uint64_t seg)
{
	struct stream *s;
	struct seg *g;
	bool evicted;

	pthread_rwlock_rdlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	evicted = g && g->state == STORE_SEG_EVICTED;
	pthread_rwlock_unlock(&t->lock);
	return evicted;
}

/* Evicts G, uploaded: its row says so first, then the file goes (a crash
 * between leaves a file recovery removes).  T's lock held for writing. */
static int evict_locked(struct store_tenant *t, struct seg *g)
{
	char name[64];
	int rc;

	STORE_ASSERT_WRLOCKED(t);
	if (g->state == STORE_SEG_EVICTED)
		return 0;
	if (g->state != STORE_SEG_UPLOADED || store_seg_is_tail(g))
		return -EBUSY;
	rc = set_state(t, g, STORE_SEG_EVICTED);
	if (rc)
		return rc;
	g->row_evicted = false;	/* true now */
	/* no reader: the lock is held for writing */
	store_seg_fd_close(t, g);
	store_seg_name(name, sizeof(name), g->id, ".seg");
	unlinkat(t->segfd, name, 0);
	return 0;
}

int store_segment_evict(struct store_tenant *t, uint64_t seg)
{
	struct stream *s;
	struct seg *g;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	rc = g ? evict_locked(t, g) : -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_seg_drop_damaged(struct store_tenant *t, uint64_t seg, bool fetch,
			   char **stream)
{
	struct stream *s;
	struct seg *g;
	int rc;

	*stream = NULL;
	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (!g) {
		rc = -EIO;	/* gone meanwhile (removed) */
		goto out;
	}
	*stream = strdup(s->name);
	if (g->damaged)
		rc = -EALREADY;
	else if (fetch && g->state == STORE_SEG_EVICTED)
		rc = 1;		/* another reader dropped it */
	else if (fetch && g->state == STORE_SEG_UPLOADED)
		rc = evict_locked(t, g);
	else
		rc = -EIO;
	if (rc < 0 && rc != -EALREADY) {
		g->damaged = true;
		rc = -EIO;
	}
out:
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* Checks the fetched copy at FD against what the index says of segment SEG
 * (length, XXH3), without T's lock: 16 MiB take long enough to hash that
 * readers and writers must not wait on it.  The sealer flushes it later.
 * Returns 1 when SEG needs no copy any more (restored meanwhile). */
static int restore_check(struct store_tenant *t, uint64_t seg, int fd,
			 const uint64_t *known)
{
	uint64_t length = 0, want = 0, sum = known ? *known : 0;
	bool evicted = false;
	struct stream *s;
	struct seg *g;
	struct stat sb;
	int rc;

	pthread_rwlock_rdlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (g) {
		evicted = g->state == STORE_SEG_EVICTED;
		length = g->length;
		want = g->checksum;
	}
	pthread_rwlock_unlock(&t->lock);
	if (!g)
		return -ENOENT;
	if (!evicted)
		return 1;
	rc = fstat(fd, &sb) < 0 ? -errno : 0;
	if (!rc && (uint64_t)sb.st_size != length)
		rc = -EIO;
	if (!rc && !known)
		rc = store_file_checksum(fd, length, &sum);
	if (!rc && sum != want)
		rc = -EIO;
	return rc;
}

static int restore(struct store_tenant *t, uint64_t seg, const char *path,
		   const uint64_t *known)
{
	struct stream *s;
	struct seg *g;
	char name[64];
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = restore_check(t, seg, fd, known);
	close(fd);
	if (rc)
		return rc < 0 ? rc : 0;
	pthread_rwlock_wrlock(&t->lock);
	g = store_seg_find(t, seg, &s);
	if (!g)
		rc = -ENOENT;
	else if (g->state != STORE_SEG_EVICTED)
		goto out;	/* another fetch restored it meanwhile */
	store_seg_name(name, sizeof(name), seg, ".seg");
	if (!rc && renameat(AT_FDCWD, path, t->segfd, name) < 0)
		rc = -errno;
	if (!rc) {
		g->state = STORE_SEG_UPLOADED;
		store_seg_queue_restored(t, g);	/* its row: once flushed */
		/* fetched for a reader: the most recently used */
		atomic_store_explicit(&g->used_ns, store_now_ns(), memory_order_relaxed);
		atomic_store_explicit(&g->unread, true, memory_order_relaxed);
	}
out:
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_segment_restore(struct store_tenant *t, uint64_t seg,
			  const char *path)
{
	return restore(t, seg, path, NULL);
}

int store_segment_restore_hashed(struct store_tenant *t, uint64_t seg,
				 const char *path, uint64_t sum)
{
	return restore(t, seg, path, &sum);
}

int store_stream_segments(struct store_tenant *t, uint64_t id,
			  int (*fn)(void *arg, const struct store_segment *seg),
			  void *arg)
{
	struct store_segment *list = NULL;
	struct stream *s;
	size_t n = 0;
	int rc = 0;

	pthread_rwlock_rdlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	if (!s)
		rc = -ENOENT;
	else if (s->nsegs && !(list = calloc(s->nsegs, sizeof(*list))))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < s->nsegs; i++)
		store_seg_fill(s, s->segs[i], &list[n++]);
	pthread_rwlock_unlock(&t->lock);
	for (size_t i = 0; !rc && i < n; i++)
		rc = fn(arg, &list[i]);
	free(list);
	return rc;
}
