/*
 * The namespace operations on the streams of a tenant: create, look up,
 * stat, setattr, rename, remove, list.  Each change commits to the index
 * first, then to memory (the registry of stream.c).
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

/* Removes the files of S's segments; the index no longer names them. */
static void unlink_segments(struct store_tenant *t, struct stream *s)
{
	char name[64];

	for (size_t i = 0; i < s->nsegs; i++) {
		store_seg_name(name, sizeof(name), s->segs[i]->id, ".seg");
		unlinkat(t->segfd, name, 0);
		store_seg_name(name, sizeof(name), s->segs[i]->id, ".ids");
		unlinkat(t->segfd, name, 0);
	}
}

/* Directory semantics: creating, removing or renaming an entry changes
 * the tenant's mtime and ctime.  They reach the index at the next sync
 * (tenant_sync), not in every namespace transaction: after a crash the
 * tenant's times may be those of the last sync. */
static void tenant_touch(struct store_tenant *t, int64_t now)
{
	t->mtime = t->ctime = store_ts(now);
	t->times_dirty = true;
}

static int lock_stream(struct store_tenant *t, uint64_t id, bool write,
		       struct stream **out)
{
	if (write)
		pthread_rwlock_wrlock(&t->lock);
	else
		pthread_rwlock_rdlock(&t->lock);
	*out = t->removed ? NULL : store_stream_find(t, id);
	if (*out)
		return 0;
	pthread_rwlock_unlock(&t->lock);
	return -ENOENT;
}

static void fill_attr(const struct stream *s, struct store_attr *a)
{
	a->id = s->id;
	a->mode = s->mode;
	a->uid = s->uid;
	a->gid = s->gid;
	a->size = s->size;
	a->version = s->version;
	a->atime = s->atime;
	a->mtime = s->mtime;
	a->ctime = s->ctime;
	a->framing = s->framing;
}

/* ---- public ---- */

/* store_stream_create(), with id WANT when not 0. */
static int stream_create(struct store_tenant *t, const char *name, mode_t mode,
			 uid_t uid, gid_t gid, uint64_t want, uint64_t *id)
{
	int64_t now = store_now_ns();
	struct stream *s;
	int rc;

	if (!store_name_valid(name))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		return -ENOMEM;
	}
	s->mode = mode & 07777;
	s->uid = uid;
	s->gid = gid;
	s->atime = s->mtime = s->ctime = store_ts(now);
	s->id = want;

	pthread_rwlock_wrlock(&t->lock);
	rc = t->removed ? -ENOENT : store_stream_by_name(t, name) ? -EEXIST : 0;
	if (!rc && want && store_stream_find(t, want))
		rc = -EEXIST;
	if (rc)
		goto out;
	s->framing = t->framing;
	rc = store_journal_begin(t);
	if (rc)
		goto out;
	rc = store_index_stream_insert(t, s);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (!rc) {
		tenant_touch(t, now);
		rc = store_stream_attach(t, s);
	}
	if (!rc) {
		*id = s->id;
		s = NULL;
	}
out:
	pthread_rwlock_unlock(&t->lock);
	store_stream_free(t, s);
	return rc;
}

int store_stream_create(struct store_tenant *t, const char *name, mode_t mode,
			uid_t uid, gid_t gid, uint64_t *id)
{
	return stream_create(t, name, mode, uid, gid, 0, id);
}

int store_replica_stream_create(struct store_tenant *t, const char *name,
				mode_t mode, uid_t uid, gid_t gid, uint64_t id)
{
	uint64_t got;

	return id ? stream_create(t, name, mode, uid, gid, id, &got) : -EINVAL;
}

int store_stream_lookup(struct store_tenant *t, const char *name, uint64_t *id)
{
	struct stream *s;

	pthread_rwlock_rdlock(&t->lock);
	s = t->removed ? NULL : store_stream_by_name(t, name);
	if (s)
		*id = s->id;
	pthread_rwlock_unlock(&t->lock);
	return s ? 0 : -ENOENT;
}

int store_stream_stat(struct store_tenant *t, uint64_t id,
		      struct store_attr *out)
{
	struct stream *s;
	int rc = lock_stream(t, id, false, &s);

	if (rc)
		return rc;
	fill_attr(s, out);
	pthread_rwlock_unlock(&t->lock);
	return 0;
}

int store_stream_setattr(struct store_tenant *t, uint64_t id,
			 const struct store_attr *attr, unsigned mask)
{
	struct stream *s, old;
	int rc = lock_stream(t, id, true, &s);

	if (rc)
		return rc;
	old = *s;
	if (mask & STORE_SET_MODE)
		s->mode = attr->mode & 07777;
	if (mask & STORE_SET_UID)
		s->uid = attr->uid;
	if (mask & STORE_SET_GID)
		s->gid = attr->gid;
	if (mask & STORE_SET_ATIME)
		s->atime = attr->atime;
	if (mask & STORE_SET_MTIME)
		s->mtime = attr->mtime;
	s->ctime = store_ts(store_now_ns());
	rc = store_journal_stream_update(t, s);
	if (rc)
		*s = old;
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_stream_set_framing(struct store_tenant *t, uint64_t id,
			     enum store_framing framing)
{
	struct stream *s;
	int rc = lock_stream(t, id, true, &s);

	if (rc)
		return rc;
	if (s->framing != framing) {
		if (s->size || s->version) {
			rc = -EPERM;
		} else {
			s->framing = framing;
			rc = store_journal_stream_update(t, s);
			if (rc)
				s->framing = !framing;
		}
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}


int store_stream_rename(struct store_tenant *t, uint64_t id,
			const char *newname)
{
	int64_t now = store_now_ns();
	struct stream *s, *target;
	char *name, *oldname;
	int rc;

	if (!store_name_valid(newname))
		return -EINVAL;
	name = strdup(newname);
	if (!name)
		return -ENOMEM;
	rc = lock_stream(t, id, true, &s);
	if (rc) {
		free(name);
		return rc;
	}
	target = store_stream_by_name(t, newname);
	if (target == s)
		goto out;
	if (target && (target->size || target->version)) {
		rc = -EPERM;
		goto out;
	}
	rc = store_journal_begin(t);
	if (rc)
		goto out;
	if (target)
		rc = store_index_stream_delete(t, target->id);
	oldname = s->name;
	s->name = name;
	s->ctime = store_ts(now);
	if (!rc)
		rc = store_journal_stream_update(t, s);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	s->name = oldname;
	if (rc)
		goto out;
	tenant_touch(t, now);
	if (target) {
		unlink_segments(t, target);
		store_stream_detach(t, target);
		store_stream_free(t, target);
	}
	store_stream_set_name(t, s, name);
	name = oldname;
out:
	pthread_rwlock_unlock(&t->lock);
	free(name);
	return rc;
}

/* Removing a stream must work on a full disk, where the index may have no
 * room for the transaction.  The removal is a journal record (whose blocks
 * exist) and, with room, the index forgets the stream at once, before its
 * files go, as for any change of the namespace.  Without room the record
 * is made durable instead (a power cut must not leave an index naming
 * files that are gone), the files go, freeing their room, and the index
 * catches up at a later flush, or at the next open's replay. */
int store_stream_remove(struct store_tenant *t, uint64_t id)
{
	struct stream *s;
	bool waits = false;
	int rc = lock_stream(t, id, true, &s);

	if (rc)
		return rc;
	rc = store_journal_remove(t, s);
	if (!rc && store_journal_flush(t)) {
		rc = store_journal_remove_wait(t, s);
		waits = !rc;
	}
	if (!rc) {
		tenant_touch(t, store_now_ns());
		unlink_segments(t, s);
		store_snapshot_unlink_stream(t, s->id);
		store_stream_detach(t, s);
		store_stream_free(t, s);
		if (waits && store_journal_flush(t))
			store_log(LOG_WARNING, "%s: index flush failed; the removal stays in"
				  " the journal", t->name);
	}
	pthread_rwlock_unlock(&t->lock);
	if (!rc && t->st->commit_fn)
		t->st->commit_fn(t->st->commit_arg, t, id, UINT64_MAX);
	return rc;
}

int store_stream_list(struct store_tenant *t, uint64_t after,
		      int (*fn)(void *arg, const char *name,
				const struct store_attr *attr),
		      void *arg)
{
	struct store_attr a = { 0 };
	int rc = 0;

	pthread_rwlock_rdlock(&t->lock);
	if (!t->removed) {
		for (size_t i = store_stream_lower_bound(t, after + 1);
		     !rc && i < t->nstreams; i++) {
			fill_attr(t->streams[i], &a);
			rc = fn(arg, t->streams[i]->name, &a);
		}
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

uint64_t store_stream_count(struct store_tenant *t)
{
	uint64_t n;

	pthread_rwlock_rdlock(&t->lock);
	n = t->nstreams;
	pthread_rwlock_unlock(&t->lock);
	return n;
}
