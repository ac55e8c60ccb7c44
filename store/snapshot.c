/*
 * Snapshots: opaque blobs stored beside a stream at a version.
 *
 * Files: snap/SSSSSSSSSSSSSSSS/VVVVVVVVVVVVVVVV under the tenant (stream id
 * and version, 16 hex digits each), and while one is written a staging file
 * tmp.N in the same directory.  Rows: the index's snapshots table, which is
 * the truth, as for segments.
 *
 * Commit order (store_snapshot_commit): the staging file is complete (and,
 * when fsync was asked, fdatasync'ed), then renamed to its final name (the
 * directory fsync'ed when asked), then its row committed.  A crash before
 * the row leaves a file no row names; recovery removes it, and staging
 * leftovers likewise.  Removal goes the other way: row first, then file.
 * So a snapshot is whole or absent, never torn.
 *
 * The SQLite connection is used under the tenant's lock held for writing,
 * as everywhere; blob bytes are read and written through descriptors
 * without it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

struct store_snap_writer {
	struct store_tenant *t;
	uint64_t stream, version;
	uint64_t max;		/* bytes allowed */
	uint64_t length;	/* end of the furthest write */
	int dirfd;		/* the stream's snapshot directory */
	int fd;			/* the staging file */
	char tmp[32];		/* its name in dirfd */
	bool durable;		/* fsync(2) asked */
	int error;		/* sticky: the commit fails with it */
};

static _Atomic unsigned long staging_seq;

static void dir_name(char *buf, size_t len, uint64_t stream)
{
	snprintf(buf, len, "%016" PRIx64, stream);
}

static void blob_name(char *buf, size_t len, uint64_t version)
{
	snprintf(buf, len, "%016" PRIx64, version);
}

/* ---- rows ---- */

#define SNAP_COLS "stream, version, length, checksum, time, state"

static void row_of(sqlite3_stmt *stmt, struct store_snapshot *out)
{
	out->stream = (uint64_t)sqlite3_column_int64(stmt, 0);
	out->version = (uint64_t)sqlite3_column_int64(stmt, 1);
	out->length = (uint64_t)sqlite3_column_int64(stmt, 2);
	out->checksum = (uint64_t)sqlite3_column_int64(stmt, 3);
	out->time_ns = sqlite3_column_int64(stmt, 4);
	out->state = (enum store_snap_state)sqlite3_column_int(stmt, 5);
}

/* Runs SQL with up to two integer parameters (A, B); FN gets each row.
 * T's lock held for writing. */
static int query(struct store_tenant *t, const char *sql, uint64_t a,
		 uint64_t b, int (*fn)(void *arg, const struct store_snapshot *s),
		 void *arg)
{
	struct store_snapshot snap;
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, sql, -1, &stmt, NULL);

	STORE_ASSERT_WRLOCKED(t);
	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, "snapshot query");
	if (sqlite3_bind_parameter_count(stmt) >= 1)
		sqlite3_bind_int64(stmt, 1, (int64_t)a);
	if (sqlite3_bind_parameter_count(stmt) >= 2)
		sqlite3_bind_int64(stmt, 2, (int64_t)b);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		int stop;

		if (!fn)
			continue;
		row_of(stmt, &snap);
		stop = fn(arg, &snap);
		if (stop) {
			sqlite3_finalize(stmt);
			return stop;
		}
	}
	rc = rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc, "snapshot query");
	sqlite3_finalize(stmt);
	return rc;
}

static int copy_one(void *arg, const struct store_snapshot *snap)
{
	*(struct store_snapshot *)arg = *snap;
	return 1;
}

/* The row of STREAM at VERSION (OUT SNAP): 0 or -ENOENT. */
static int row_get(struct store_tenant *t, uint64_t stream, uint64_t version,
		   struct store_snapshot *snap)
{
	int rc = query(t, "SELECT " SNAP_COLS " FROM snapshots"
			  " WHERE stream = ?1 AND version = ?2",
		       stream, version, copy_one, snap);

	return rc == 1 ? 0 : rc ? rc : -ENOENT;
}

/* Inside a transaction. */
static int row_insert(struct store_tenant *t, const struct store_snapshot *s)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, "INSERT INTO snapshots(" SNAP_COLS ")"
				    " VALUES(?1, ?2, ?3, ?4, ?5, ?6)", -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, "snapshot insert");
	sqlite3_bind_int64(stmt, 1, (int64_t)s->stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)s->version);
	sqlite3_bind_int64(stmt, 3, (int64_t)s->length);
	sqlite3_bind_int64(stmt, 4, (int64_t)s->checksum);
	sqlite3_bind_int64(stmt, 5, s->time_ns);
	sqlite3_bind_int(stmt, 6, (int)s->state);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc, "snapshot insert");
}

/* Runs one statement changing rows of stream A (or INSERT's), in a
 * transaction of its own (the journal's pending rows first).  DURABLE: at
 * synchronous=FULL. */
static int row_change(struct store_tenant *t, const char *sql, uint64_t a,
		      uint64_t b, const struct store_snapshot *insert,
		      bool durable)
{
	bool full = durable && !t->st->cfg.sync_always;
	int rc = full ? store_index_set_full_sync(t, true) : 0;

	struct stream *s = store_stream_find(t, insert ? insert->stream : a);

	if (s)
		s->snap_gen++;	/* whatever comes of it: store_snapshot_start() asks again */
	if (!rc)
		rc = store_journal_begin(t);
	if (!rc)
		rc = insert ? row_insert(t, insert) : query(t, sql, a, b, NULL, NULL);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (full)
		store_index_set_full_sync(t, false);
	return rc;
}

/* ---- writing ---- */

/* Takes T's lock for writing with stream ID there (OUT S), or fails. */
static int lock_stream(struct store_tenant *t, uint64_t id, struct stream **s)
{
	pthread_rwlock_wrlock(&t->lock);
	*s = t->removed ? NULL : store_stream_find(t, id);
	if (*s)
		return 0;
	pthread_rwlock_unlock(&t->lock);
	return -ENOENT;
}

/* Opens (making it) the snapshot directory of STREAM.  T's lock held. */
static int stream_dir(struct store_tenant *t, uint64_t stream)
{
	char name[32];
	int fd;

	dir_name(name, sizeof(name), stream);
	if (mkdirat(t->snapfd, name, 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(t->snapfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static void writer_free(struct store_snap_writer *w)
{
	if (w->fd >= 0) {
		close(w->fd);
		unlinkat(w->dirfd, w->tmp, 0);
	}
	if (w->dirfd >= 0)
		close(w->dirfd);
	free(w);
}

/* Checks that VERSION of S may take a snapshot.  T's lock held. */
static int check_new(struct store_tenant *t, struct stream *s, uint64_t version)
{
	struct store_snapshot old;
	int rc;

	if (version < 1 || version > s->version)
		return -EINVAL;
	rc = row_get(t, s->id, version, &old);
	return rc == -ENOENT ? 0 : rc ? rc : -EEXIST;
}

/* W fails with RC: freed, RC returned. */
static int writer_fail(struct store_snap_writer *w, int rc)
{
	writer_free(w);
	return rc;
}

/* Opens W's staging file in its stream's directory; *OUT is W, or W is
 * freed and -errno returned. */
static int open_staging(struct store_snap_writer *w,
			struct store_snap_writer **out)
{
	snprintf(w->tmp, sizeof(w->tmp), "tmp.%lu", ++staging_seq);
	w->fd = openat(w->dirfd, w->tmp, O_RDWR | O_CREAT | O_EXCL |
		       O_CLOEXEC, 0644);
	if (w->fd < 0)
		return writer_fail(w, -errno);
	*out = w;
	return 0;
}

int store_snapshot_begin(struct store_tenant *t, uint64_t id, uint64_t version,
			 uint64_t max, struct store_snap_writer **out)
{
	struct store_snap_writer *w = calloc(1, sizeof(*w));
	struct stream *s;
	int rc;

	if (!w)
		return -ENOMEM;
	w->t = t;
	w->stream = id;
	w->version = version;
	w->max = max;
	w->dirfd = w->fd = -1;
	rc = lock_stream(t, id, &s);
	if (rc) {
		free(w);
		return rc;
	}
	rc = check_new(t, s, version);
	if (!rc) {
		w->dirfd = stream_dir(t, id);
		rc = w->dirfd < 0 ? w->dirfd : 0;
	}
	pthread_rwlock_unlock(&t->lock);
	return rc ? writer_fail(w, rc) : open_staging(w, out);
}

ssize_t store_snapshot_write(struct store_snap_writer *w, const void *buf,
			     size_t len, uint64_t off)
{
	int rc;

	if (w->error)
		return w->error;
	if (off > w->max || len > w->max - off) {
		w->error = -EFBIG;
		return -EFBIG;
	}
	rc = store_pwrite_all(w->fd, buf, len, off);
	if (rc) {
		w->error = rc;
		return rc;
	}
	if (off + len > w->length)
		w->length = off + len;
	return (ssize_t)len;
}

int store_snapshot_sync(struct store_snap_writer *w)
{
	if (w->error)
		return w->error;
	if (fdatasync(w->fd) < 0)
		return -errno;
	w->durable = true;
	return 0;
}

uint64_t store_snapshot_written(const struct store_snap_writer *w)
{
	return w->length;
}

void store_snapshot_abort(struct store_snap_writer *w)
{
	if (w)
		writer_free(w);
}

/* Renames W's staging file to its final name and commits its row.  T's
 * lock held. */
static int publish(struct store_snap_writer *w, struct stream *s,
		   const struct store_snapshot *snap)
{
	struct store_tenant *t = w->t;
	char name[32];
	int rc = check_new(t, s, w->version);

	if (rc)
		return rc;
	blob_name(name, sizeof(name), w->version);
	if (renameat(w->dirfd, w->tmp, w->dirfd, name) < 0)
		return -errno;
	close(w->fd);
	w->fd = -1;
	if (w->durable && (fsync(w->dirfd) < 0 || fsync(t->snapfd) < 0))
		rc = -errno;
	if (!rc)
		rc = row_change(t, NULL, 0, 0, snap, w->durable);
	if (rc)
		unlinkat(w->dirfd, name, 0);
	return rc;
}

int store_snapshot_commit(struct store_snap_writer *w)
{
	struct store_snapshot snap = {
		.stream = w->stream, .version = w->version,
		.length = w->length, .state = STORE_SNAP_LOCAL,
	};
	struct stream *s;
	int rc = w->error;

	/* The slow part, the checksum and the flush, without the lock. */
	if (!rc)
		rc = store_file_checksum(w->fd, w->length, &snap.checksum);
	if (!rc && w->durable && fdatasync(w->fd) < 0)
		rc = -errno;
	if (!rc)
		rc = lock_stream(w->t, w->stream, &s);
	if (!rc) {
		snap.time_ns = store_now_ns();
		rc = publish(w, s, &snap);
		pthread_rwlock_unlock(&w->t->lock);
	}
	writer_free(w);
	return rc;
}

/* ---- reading ---- */

int store_snapshot_get(struct store_tenant *t, uint64_t id, uint64_t version,
		       struct store_snapshot *snap)
{
	struct stream *s;
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	rc = row_get(t, id, version, snap);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_snapshot_before(struct store_tenant *t, uint64_t id, uint64_t before,
			  struct store_snapshot *snap)
{
	struct stream *s;
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	rc = query(t, "SELECT " SNAP_COLS " FROM snapshots WHERE stream = ?1"
		      " AND version < ?2 ORDER BY version DESC LIMIT 1",
		   id, before, copy_one, snap);
	pthread_rwlock_unlock(&t->lock);
	return rc == 1 ? 0 : rc ? rc : -ENOENT;
}

/* The cached answer of store_snapshot_start() for FIRST, if it holds:
 * 1.  T's lock held. */
static int pick_cached(struct stream *s, uint64_t first,
		       struct store_snapshot *snap, uint64_t *base, int *rc)
{
	if (!s->snap_pick.gen || s->snap_pick.gen != s->snap_gen ||
	    s->snap_pick.first != first)
		return 0;
	*snap = s->snap_pick.snap;
	*base = s->snap_pick.base;
	*rc = s->snap_pick.rc;
	return 1;
}

int store_snapshot_start(struct store_tenant *t, uint64_t id, uint64_t first,
			 struct store_snapshot *snap, uint64_t *base)
{
	struct stream *s;
	uint64_t gen;
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	if (pick_cached(s, first, snap, base, &rc)) {
		pthread_rwlock_unlock(&t->lock);
		return rc;
	}
	gen = ++s->snap_gen;	/* a change from now on moves it past */
	rc = query(t, "SELECT " SNAP_COLS " FROM snapshots WHERE stream = ?1"
		      " AND version < ?2 ORDER BY version DESC LIMIT 1",
		   id, first, copy_one, snap);
	rc = rc == 1 ? 0 : rc ? rc : -ENOENT;
	pthread_rwlock_unlock(&t->lock);
	*base = 0;
	if (!rc)
		rc = store_offset_of_version(t, id, snap->version + 1, base);
	if (rc && rc != -ENOENT)
		return rc;
	if (!lock_stream(t, id, &s)) {
		if (s->snap_gen == gen)
			s->snap_pick = (struct snap_pick){
				.gen = gen, .first = first, .rc = rc,
				.snap = *snap, .base = *base };
		pthread_rwlock_unlock(&t->lock);
	}
	return rc;
}

int store_snapshot_list(struct store_tenant *t, uint64_t id, uint64_t from,
			int (*fn)(void *arg, const struct store_snapshot *snap),
			void *arg)
{
	struct stream *s;
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	rc = query(t, "SELECT " SNAP_COLS " FROM snapshots WHERE stream = ?1"
		      " AND version >= ?2 ORDER BY version", id, from, fn, arg);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* Opens the blob of SNAP if it is here: *fd, or -ENODATA for a replica's
 * not fetched yet.  T's lock held. */
static int open_blob(struct store_tenant *t, const struct store_snapshot *snap,
		     int *fd)
{
	char path[48];

	snprintf(path, sizeof(path), "%016" PRIx64 "/%016" PRIx64, snap->stream,
		 snap->version);
	*fd = openat(t->snapfd, path, O_RDONLY | O_CLOEXEC);
	if (*fd >= 0 && snap->state != STORE_SNAP_LOCAL) {
		/* On the remote, so the copy may go: its access time orders
		 * eviction. */
		(void)futimens(*fd, (struct timespec[2]){
			{ .tv_nsec = UTIME_NOW }, { .tv_nsec = UTIME_OMIT } });
	}
	if (*fd >= 0)
		return 0;
	if (errno == ENOENT && snap->state == STORE_SNAP_REMOTE)
		return -ENODATA;
	store_log(LOG_ERR, "%s: snapshot %s: %s", t->name, path, strerror(errno));
	return errno == ENOENT ? -EIO : -errno;
}

/* Calls the snapshot fetch hook for SNAP, with no lock held. */
static int fetch(struct store_tenant *t, const struct store_snapshot *snap)
{
	struct store *st = t->st;
	store_snap_fetch_fn fn;
	void *arg;
	int rc;

	pthread_mutex_lock(&st->lock);
	fn = st->snap_fetch_fn;
	arg = st->snap_fetch_arg;
	st->fetch_users += fn != NULL;
	pthread_mutex_unlock(&st->lock);
	if (!fn) {
		store_log(LOG_ERR, "%s: snapshot %" PRIu64 " of stream %" PRIu64 " is on"
			  " the remote and nothing can fetch it", t->name,
			  snap->version, snap->stream);
		return -EIO;
	}
	rc = fn(arg, t, snap);
	pthread_mutex_lock(&st->lock);
	if (!--st->fetch_users)
		pthread_cond_broadcast(&st->fetch_idle);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* The row of SNAP (IN: stream and version; OUT: the row), from the last
 * pick when it is that one.  T's lock held. */
static int row_lookup(struct store_tenant *t, struct stream *s,
		      struct store_snapshot *snap)
{
	if (s->snap_pick.gen && s->snap_pick.gen == s->snap_gen &&
	    !s->snap_pick.rc && s->snap_pick.snap.version == snap->version) {
		*snap = s->snap_pick.snap;
		return 0;
	}
	return row_get(t, snap->stream, snap->version, snap);
}

/* One try of store_snapshot_open(): -ENODATA when SNAP (OUT) must be
 * fetched first. */
static int open_once(struct store_tenant *t, struct store_snapshot *snap,
		     int *fd)
{
	uint64_t checksum = snap->checksum;
	struct stream *s;
	int rc = lock_stream(t, snap->stream, &s);

	if (rc)
		return rc;
	rc = row_lookup(t, s, snap);
	if (!rc && snap->checksum != checksum)
		rc = -ENOENT;	/* removed, maybe stored anew: another one */
	if (!rc)
		rc = open_blob(t, snap, fd);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_snapshot_open(struct store_tenant *t, struct store_snapshot *snap,
			int *fd)
{
	struct store_snapshot want = *snap;

	for (int tries = 0; tries < FETCH_TRIES; tries++) {
		int rc;

		*snap = want;
		rc = open_once(t, snap, fd);
		if (rc != -ENODATA)
			return rc;
		rc = fetch(t, snap);
		if (rc)
			return rc;
	}
	return -EIO;
}

/* Whether the blob open at FD is SNAP's, whole: its length and XXH3, in
 * one pass. */
static int blob_check(struct store_tenant *t, const struct store_snapshot *snap,
		      int fd)
{
	struct stat sb;
	uint64_t sum;
	int rc = fstat(fd, &sb) < 0 ? -errno : 0;

	if (!rc && (uint64_t)sb.st_size != snap->length)
		rc = -EBADMSG;
	if (!rc)
		rc = store_file_checksum(fd, snap->length, &sum);
	if (!rc && sum != snap->checksum)
		rc = -EBADMSG;
	if (rc == -EBADMSG)
		store_log(LOG_ERR, "%s: snapshot %" PRIu64 " of stream %" PRIu64
			  " is damaged on disk (its length or checksum does not"
			  " match)%s", t->name, snap->version, snap->stream,
			  snap->state == STORE_SNAP_LOCAL ? "; reads of it fail"
			  : "; fetching it again from the remote");
	return rc;
}

int store_snapshot_verify(struct store_tenant *t,
			  const struct store_snapshot *snap, int fd)
{
	struct store_snapshot again = *snap;
	int rc = blob_check(t, snap, fd), fresh;

	if (rc != -EBADMSG)
		return rc;
	atomic_fetch_add(&t->st->snap_damaged, 1);
	/* Damaged: the remote's copy, once, if it has one.  The fetch
	 * renames it over the damaged file; FD is made to name it. */
	if (snap->state == STORE_SNAP_LOCAL)
		return -EIO;
	rc = fetch(t, snap);
	if (!rc)
		rc = store_snapshot_open(t, &again, &fresh);
	if (rc)
		return -EIO;
	rc = blob_check(t, &again, fresh);
	if (!rc && dup2(fresh, fd) < 0)
		rc = -errno;
	close(fresh);
	if (rc)
		return -EIO;
	atomic_fetch_add(&t->st->snap_healed, 1);
	store_log(LOG_WARNING, "%s: snapshot %" PRIu64 " of stream %" PRIu64
		  " healed: fetched again from the remote", t->name,
		  snap->version, snap->stream);
	return 0;
}

void store_set_snapshot_fetch_hook(struct store *st, store_snap_fetch_fn fn,
				   void *arg)
{
	pthread_mutex_lock(&st->lock);
	st->snap_fetch_fn = fn;
	st->snap_fetch_arg = arg;
	while (st->fetch_users)
		pthread_cond_wait(&st->fetch_idle, &st->lock);
	pthread_mutex_unlock(&st->lock);
}

/* ---- removal ---- */

int store_snapshot_remove(struct store_tenant *t, uint64_t id, uint64_t version)
{
	struct store_snapshot snap;
	struct stream *s;
	char path[48];
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	rc = row_get(t, id, version, &snap);
	if (!rc)
		rc = row_change(t, "DELETE FROM snapshots WHERE stream = ?1"
				   " AND version = ?2", id, version, NULL, false);
	if (!rc) {
		snprintf(path, sizeof(path), "%016" PRIx64 "/%016" PRIx64, id,
			 version);
		unlinkat(t->snapfd, path, 0);
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* Removes directory NAME of PARENT and the files in it. */
static void remove_dir(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0) {
		unlinkat(parent, name, 0);
		return;
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	unlinkat(parent, name, AT_REMOVEDIR);
}

void store_snapshot_unlink_stream(struct store_tenant *t, uint64_t id)
{
	char name[32];

	dir_name(name, sizeof(name), id);
	remove_dir(t->snapfd, name);
}

/* ---- recovery ---- */

struct snap_rows {
	struct store_snapshot *v;
	size_t n, cap;
};

static int collect(void *arg, const struct store_snapshot *snap)
{
	struct snap_rows *rows = arg;

	if (STORE_ARRAY_RESERVE(rows->v, rows->cap, rows->n + 1, 64))
		return -ENOMEM;
	rows->v[rows->n++] = *snap;
	return 0;
}

/* Drops the row of SNAP when its blob, which should be here, is not whole
 * (a power cut before its fsync); a replica's is fetched again instead. */
static int check_blob(struct store_tenant *t, const struct store_snapshot *snap)
{
	char path[48];
	struct stat sb;
	bool here;

	snprintf(path, sizeof(path), "%016" PRIx64 "/%016" PRIx64, snap->stream,
		 snap->version);
	here = !fstatat(t->snapfd, path, &sb, 0);
	if (here && (uint64_t)sb.st_size == snap->length)
		return 0;
	if (here)
		unlinkat(t->snapfd, path, 0);
	if (snap->state == STORE_SNAP_REMOTE)
		return 0;
	store_log(LOG_ERR, "%s: snapshot %s lost", t->name, path);
	return query(t, "DELETE FROM snapshots WHERE stream = ?1 AND"
		     " version = ?2", snap->stream, snap->version, NULL, NULL);
}

/* Whether file NAME in the snapshot directory of STREAM is a blob a row
 * names. */
static bool blob_needed(struct store_tenant *t, uint64_t stream,
			const char *name)
{
	struct store_snapshot snap;
	char *end;
	uint64_t version = strtoull(name, &end, 16);

	if (strlen(name) != 16 || *end)
		return false;
	return !row_get(t, stream, version, &snap);
}

static void clean_stream_dir(struct store_tenant *t, const char *name)
{
	char *end;
	uint64_t stream = strtoull(name, &end, 16);
	struct dirent *de;
	DIR *d;
	int fd;

	if (strlen(name) != 16 || *end || !store_stream_find(t, stream)) {
		remove_dir(t->snapfd, name);
		return;
	}
	fd = openat(t->snapfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && !blob_needed(t, stream, de->d_name))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
}

int store_snapshot_recover(struct store_tenant *t)
{
	struct snap_rows rows = { 0 };
	struct dirent *de;
	int rc = store_journal_begin(t);
	DIR *d;

	if (!rc)
		rc = query(t, "SELECT " SNAP_COLS " FROM snapshots", 0, 0,
			   collect, &rows);
	for (size_t i = 0; i < rows.n && !rc; i++)
		rc = check_blob(t, &rows.v[i]);
	free(rows.v);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	if (rc)
		return rc;
	d = fdopendir(dup(t->snapfd));
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			clean_stream_dir(t, de->d_name);
	closedir(d);
	return 0;
}

/* ---- what sync/ drives ---- */

int store_snapshot_list_state(struct store_tenant *t, enum store_snap_state state,
			      int (*fn)(void *arg, const struct store_snapshot *snap),
			      void *arg)
{
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	rc = t->removed ? -ENOENT
			: query(t, "SELECT " SNAP_COLS " FROM snapshots WHERE"
				   " state = ?1 ORDER BY stream, version",
				(uint64_t)state, 0, fn, arg);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

char *store_snapshot_path(struct store_tenant *t, uint64_t stream,
			  uint64_t version)
{
	char *path;

	if (asprintf(&path, "%s/" SNAP_DIR "/%016" PRIx64 "/%016" PRIx64,
		     t->path, stream, version) < 0)
		return NULL;
	return path;
}

int store_snapshot_mark_uploaded(struct store_tenant *t, uint64_t stream,
				 uint64_t version)
{
	struct stream *s;
	int rc = lock_stream(t, stream, &s);

	if (rc)
		return rc;
	rc = row_change(t, "UPDATE snapshots SET state = 1 WHERE stream = ?1"
			   " AND version = ?2", stream, version, NULL, false);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_replica_snapshot_add(struct store_tenant *t,
			       const struct store_snapshot *snap)
{
	struct store_snapshot row = *snap;
	struct stream *s;
	int rc = lock_stream(t, snap->stream, &s);

	if (rc)
		return rc;
	row.state = STORE_SNAP_REMOTE;
	rc = check_new(t, s, snap->version);
	if (!rc)
		rc = row_change(t, NULL, 0, 0, &row, false);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_snapshot_restore_begin(struct store_tenant *t, uint64_t stream,
				 uint64_t version, struct store_snap_writer **out)
{
	struct store_snap_writer *w = calloc(1, sizeof(*w));
	struct store_snapshot snap;
	struct stream *s;
	int rc;

	if (!w)
		return -ENOMEM;
	*w = (struct store_snap_writer){ .t = t, .stream = stream,
					 .version = version, .dirfd = -1, .fd = -1 };
	rc = lock_stream(t, stream, &s);
	if (rc) {
		free(w);
		return rc;
	}
	rc = row_get(t, stream, version, &snap);
	if (!rc) {
		w->max = snap.length;
		w->dirfd = stream_dir(t, stream);
		rc = w->dirfd < 0 ? w->dirfd : 0;
	}
	pthread_rwlock_unlock(&t->lock);
	return rc ? writer_fail(w, rc) : open_staging(w, out);
}

int store_snapshot_restore_commit(struct store_snap_writer *w)
{
	struct store_tenant *t = w->t;
	struct store_snapshot snap;
	uint64_t sum = 0;
	struct stream *s;
	char name[32];
	int rc = w->error;

	/* The hash without the lock: the file may be large. */
	if (!rc)
		rc = store_file_checksum(w->fd, w->length, &sum);
	if (!rc)
		rc = lock_stream(t, w->stream, &s);
	if (rc) {
		writer_free(w);
		return rc;
	}
	rc = row_get(t, w->stream, w->version, &snap);
	if (!rc && (w->length != snap.length || sum != snap.checksum)) {
		store_log(LOG_ERR, "%s: fetched snapshot %" PRIu64 " of stream %" PRIu64
			  " does not match its length and checksum", t->name,
			  w->version, w->stream);
		rc = -EIO;
	}
	blob_name(name, sizeof(name), w->version);
	if (!rc && renameat(w->dirfd, w->tmp, w->dirfd, name) < 0)
		rc = -errno;
	if (!rc) {
		close(w->fd);
		w->fd = -1;
	}
	pthread_rwlock_unlock(&t->lock);
	writer_free(w);
	return rc;
}

/* ---- copies of uploaded and fetched blobs, in the cache ---- */

int store_snapshot_list_cached(struct store_tenant *t,
			       int (*fn)(void *arg, const struct store_snapshot *snap,
					 int64_t used_ns),
			       void *arg)
{
	struct snap_rows rows = { 0 };
	int rc = store_snapshot_list_state(t, STORE_SNAP_UPLOADED, collect, &rows);

	if (!rc)
		rc = store_snapshot_list_state(t, STORE_SNAP_REMOTE, collect, &rows);
	/* Without the lock: a blob evicted or fetched meanwhile is counted
	 * or not, to be seen right at the next call. */
	for (size_t i = 0; i < rows.n && !rc; i++) {
		char *path = store_snapshot_path(t, rows.v[i].stream,
						 rows.v[i].version);
		struct stat sb;

		if (!path) {
			rc = -ENOMEM;
			break;
		}
		if (!stat(path, &sb))
			rc = fn(arg, &rows.v[i], (int64_t)sb.st_atim.tv_sec *
				1000000000 + sb.st_atim.tv_nsec);
		free(path);
	}
	free(rows.v);
	return rc;
}

int store_snapshot_evict(struct store_tenant *t, uint64_t stream,
			 uint64_t version)
{
	struct store_snapshot snap;
	struct stream *s;
	char path[48];
	int rc = lock_stream(t, stream, &s);

	if (rc)
		return rc;
	rc = row_get(t, stream, version, &snap);
	if (!rc && snap.state == STORE_SNAP_LOCAL)
		rc = -EBUSY;
	/* One made here goes as a fetched one: the row first, so that after
	 * a crash before the unlink the blob is a fetched copy. */
	if (!rc && snap.state == STORE_SNAP_UPLOADED)
		rc = row_change(t, "UPDATE snapshots SET state = 2 WHERE"
				   " stream = ?1 AND version = ?2", stream,
				version, NULL, false);
	if (!rc) {
		snprintf(path, sizeof(path), "%016" PRIx64 "/%016" PRIx64, stream,
			 version);
		if (unlinkat(t->snapfd, path, 0) < 0 && errno != ENOENT)
			rc = -errno;
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* ---- segments, for snapshot writers ---- */

int store_stream_segment_starts(struct store_tenant *t, uint64_t id,
				uint64_t from,
				int (*fn)(void *arg, uint64_t first_version,
					  int64_t time_ns),
				void *arg)
{
	struct sub_batch b;
	struct stream *s;
	uint64_t *firsts = NULL;
	int64_t *times = NULL;
	size_t n = 0;
	int rc = lock_stream(t, id, &s);

	if (rc)
		return rc;
	rc = store_journal_flush(t);
	if (!rc && s->nsegs) {
		firsts = calloc(s->nsegs, sizeof(*firsts));
		times = calloc(s->nsegs, sizeof(*times));
		if (!firsts || !times)
			rc = -ENOMEM;
	}
	for (size_t i = 0; i < s->nsegs && !rc; i++) {
		if (!s->segs[i]->count || s->segs[i]->first_version < from)
			continue;	/* before FROM, or active with no event yet */
		rc = store_index_batch_find(t, id, s->segs[i]->first_version, &b);
		firsts[n] = s->segs[i]->first_version;
		times[n++] = b.time_ns;
	}
	pthread_rwlock_unlock(&t->lock);
	/* FN runs without the lock: it may call the store. */
	for (size_t i = 0; i < n && !rc; i++)
		rc = fn(arg, firsts[i], times[i]);
	free(firsts);
	free(times);
	return rc;
}
