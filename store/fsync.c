/*
 * Durability: fsync(2) of one stream (its active segment and the index in
 * one device flush of latency) and of a whole tenant, and the synced
 * lengths the index records for recovery.
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

/* Records G as synced up to its end; WHOLE_FS says a syncfs(2) already
 * made its bytes (and directory entry) durable. */
static int sync_one(struct store_tenant *t, struct seg *g, bool whole_fs)
{
	int fd;

	if (g->synced == g->length)
		return 0;
	if (!whole_fs) {
		fd = store_seg_fd(t, g);
		if (fd < 0)
			return fd;
		fd = fdatasync(fd) < 0 ? -errno : 0;
		store_seg_fd_put(t, g);
		if (fd < 0)
			return fd;
		/* a new file's directory entry must reach the disk too */
		if (!g->synced && fsync(t->segfd) < 0)
			return -errno;
	}
	g->synced = g->length;
	return store_index_segment_update(t, g);
}

/* The same for every segment of S not sealed yet. */
int store_seg_sync(struct store_tenant *t, struct stream *s, bool whole_fs)
{
	int rc = 0;

	for (size_t i = store_seg_first_unsealed(s); !rc && i < s->nsegs; i++)
		rc = sync_one(t, s->segs[i], whole_fs);
	return rc;
}

static size_t count_unsynced(struct store_tenant *t)
{
	size_t n = 0;

	for (size_t i = 0; i < t->nstreams; i++) {
		struct stream *s = t->streams[i];

		for (size_t j = store_seg_first_unsealed(s); j < s->nsegs; j++)
			n += s->segs[j]->synced < s->segs[j]->length;
	}
	return n;
}

/* Syncs every stream of T and records it with one commit at
 * synchronous=FULL, which also makes the index's WAL durable.  With many
 * files to sync, one syncfs(2) costs less than an fdatasync(2) each. */
static int tenant_sync(struct store_tenant *t)
{
	bool whole_fs = count_unsynced(t) > 8 && !syncfs(t->segfd);
	int rc = store_index_set_full_sync(t, true);

	if (rc)
		return rc;
	rc = store_journal_begin(t);
	for (size_t i = 0; !rc && i < t->nstreams; i++)
		rc = store_seg_sync(t, t->streams[i], whole_fs);
	if (!rc && t->times_dirty)
		rc = store_index_meta_set(t, "mtime", store_ns(t->mtime), NULL);
	if (!rc && t->times_dirty)
		rc = store_index_meta_set(t, "ctime", store_ns(t->ctime), NULL);
	if (!rc)
		rc = store_index_meta_set(t, "synced", store_now_ns(), NULL);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (!rc)
		t->times_dirty = false;
	if (!t->st->cfg.sync_always)
		store_index_set_full_sync(t, false);
	return rc;
}

struct datasync {
	int fd, dirfd;		/* dirfd: also sync the directory, or -1 */
	int rc;
};

static void *datasync_main(void *arg)
{
	struct datasync *d = arg;

	d->rc = fdatasync(d->fd) < 0 ? -errno : 0;
	if (!d->rc && d->dirfd >= 0 && fsync(d->dirfd) < 0)
		d->rc = -errno;
	return NULL;
}

/* fsync(2) of one stream: its segment's bytes and the index (with the
 * rows pending in the journal) must both reach the disk, and neither write
 * depends on the other, because recovery checks every batch past the
 * recorded synced length against its hash.  So the segment's fdatasync
 * runs on a thread of its own while the index commits at FULL: one device
 * flush of latency, not two.  The new synced length is kept in memory and
 * reaches the index with a later commit, never before its bytes are on
 * the disk. */
static int stream_fsync(struct store_tenant *t, struct stream *s)
{
	struct seg *g = store_seg_active(s);
	uint64_t len = g ? g->length : 0;
	struct datasync d = { .fd = -1, .dirfd = -1 };
	pthread_t th;
	bool threaded = false;
	int rc = 0;

	if (g && !g->fsynced) {
		rc = store_seg_trim(t, g);	/* its appends leave the window */
		if (rc)
			return rc;
		g->fsynced = true;
	}
	/* One flush when the active segment is all there is to sync and its
	 * row is durable already (synced before): a durable mark (mark.c). */
	if (g && g->synced && g->synced < len &&
	    store_seg_first_unsealed(s) == s->nsegs - 1) {
		rc = store_seg_mark_durable(t, s, g);
		if (rc != -ENOTSUP)
			return rc;
		rc = 0;
	}
	/* closing segments the sealer has not reached yet: rare, in turn */
	for (size_t i = store_seg_first_unsealed(s); !rc && i + 1 < s->nsegs; i++)
		rc = sync_one(t, s->segs[i], false);
	if (rc)
		return rc;
	if (g && g->synced < len) {
		d.fd = store_seg_fd(t, g);
		if (d.fd < 0)
			return d.fd;
		if (!g->synced)
			d.dirfd = t->segfd;	/* a new file's entry too */
		threaded = !pthread_create(&th, NULL, datasync_main, &d);
		if (!threaded)
			datasync_main(&d);
	}
	rc = store_index_set_full_sync(t, true);
	if (!rc)
		rc = store_index_begin(t);
	if (!rc)
		rc = store_journal_flush_in(t);
	if (!rc)	/* a row written, so that the commit syncs the WAL */
		rc = store_index_meta_set(t, "synced", store_now_ns(), NULL);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	store_journal_flushed(t, !rc);
	if (!t->st->cfg.sync_always)
		store_index_set_full_sync(t, false);
	if (threaded)
		pthread_join(th, NULL);
	if (d.fd >= 0) {
		store_seg_fd_put(t, g);
		if (!d.rc)
			g->synced = len;
	}
	return rc ? rc : d.rc;
}

int store_sync_stream(struct store_tenant *t, uint64_t id)
{
	struct stream *s;
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	s = t->removed ? NULL : store_stream_find(t, id);
	rc = s ? stream_fsync(t, s) : -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	atomic_fetch_add_explicit(&t->st->n_fsyncs, 1, memory_order_relaxed);
	return rc;
}

int store_tenant_sync(struct store_tenant *t)
{
	int rc = 0;

	pthread_rwlock_wrlock(&t->lock);
	if (!t->removed)
		rc = tenant_sync(t);
	pthread_rwlock_unlock(&t->lock);
	atomic_fetch_add_explicit(&t->st->n_fsyncs, 1, memory_order_relaxed);
	return rc;
}
