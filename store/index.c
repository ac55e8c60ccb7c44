/*
 * The tenant's SQLite index: schema, migrations and the prepared statements
 * of the hot paths.  SQLite is the source of truth for streams, segments and
 * batches; see docs/STORE.md for why a row is a batch and not an event.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_int.h"

#define SCHEMA_VERSION 4

static const char schema_v1[] =
	"CREATE TABLE meta("
	"  key TEXT PRIMARY KEY,"
	"  ival INTEGER,"
	"  sval TEXT"
	") WITHOUT ROWID;"
	/* AUTOINCREMENT: a stream id is never reused, so it can name an
	 * inode for the life of the tenant. */
	"CREATE TABLE streams("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  name BLOB NOT NULL UNIQUE,"
	"  framing INTEGER NOT NULL,"
	"  mode INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL,"
	"  gid INTEGER NOT NULL,"
	"  atime INTEGER NOT NULL,"
	"  mtime INTEGER NOT NULL,"
	"  ctime INTEGER NOT NULL,"
	"  version INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  last_ns INTEGER NOT NULL"
	");"
	/* length and count are those of the committed batches; for the
	 * active segment they are recomputed from the batches on recovery. */
	"CREATE TABLE segments("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  stream INTEGER NOT NULL,"
	"  first_version INTEGER NOT NULL,"
	"  offset INTEGER NOT NULL,"
	"  length INTEGER NOT NULL,"
	"  count INTEGER NOT NULL,"
	"  checksum INTEGER NOT NULL,"
	"  synced INTEGER NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  has_ids INTEGER NOT NULL"
	");"
	"CREATE INDEX segments_by_stream ON segments(stream, first_version);"
	/* One row per append call (a batch of events), keyed so that the
	 * batch holding a version is one descending range probe away. */
	"CREATE TABLE batches("
	"  stream INTEGER NOT NULL,"
	"  first_version INTEGER NOT NULL,"
	"  offset INTEGER NOT NULL,"
	"  length INTEGER NOT NULL,"
	"  time INTEGER NOT NULL,"
	"  hash INTEGER NOT NULL,"
	"  PRIMARY KEY(stream, first_version)"
	") WITHOUT ROWID;";

/* v2: segments mirrored from a remote remember their id on the writer. */
static const char schema_v2[] =
	"ALTER TABLE segments ADD COLUMN origin INTEGER NOT NULL DEFAULT 0;";

/* v3: a batch row may stand for several consecutive small batches; the
 * blob lists them (see "merged rows" below).  NULL: the row is one batch. */
static const char schema_v3[] =
	"ALTER TABLE batches ADD COLUMN subs BLOB;";

/* v4: snapshots, one row per blob stored beside a stream at a version
 * (snapshot.c).  state: enum store_snap_state. */
static const char schema_v4[] =
	"CREATE TABLE snapshots("
	"  stream INTEGER NOT NULL,"
	"  version INTEGER NOT NULL,"
	"  length INTEGER NOT NULL,"
	"  checksum INTEGER NOT NULL,"
	"  time INTEGER NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  PRIMARY KEY(stream, version)"
	") WITHOUT ROWID;";

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_META_SET,
	ST_STREAM_INSERT,
	ST_STREAM_UPDATE,
	ST_STREAM_DELETE,
	ST_STREAM_DELETE_SEGS,
	ST_STREAM_DELETE_BATCHES,
	ST_STREAM_DELETE_SNAPS,
	ST_SEG_INSERT,
	ST_SEG_UPDATE,
	ST_SEG_DELETE,
	ST_BATCH_INSERT,
	ST_BATCH_FIND,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_META_SET] = "INSERT OR REPLACE INTO meta(key, ival, sval)"
			" VALUES(?1, ?2, ?3)",
	[ST_STREAM_INSERT] = "INSERT INTO streams(id, name, framing, mode, uid,"
			     " gid, atime, mtime, ctime, version, size, last_ns)"
			     " VALUES(NULLIF(?1, 0), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
			     " ?11, ?12)",
	[ST_STREAM_UPDATE] = "UPDATE streams SET name = ?2, framing = ?3,"
			     " mode = ?4, uid = ?5, gid = ?6, atime = ?7,"
			     " mtime = ?8, ctime = ?9, version = ?10, size = ?11,"
			     " last_ns = ?12 WHERE id = ?1",
	[ST_STREAM_DELETE] = "DELETE FROM streams WHERE id = ?1",
	[ST_STREAM_DELETE_SEGS] = "DELETE FROM segments WHERE stream = ?1",
	[ST_STREAM_DELETE_BATCHES] = "DELETE FROM batches WHERE stream = ?1",
	[ST_STREAM_DELETE_SNAPS] = "DELETE FROM snapshots WHERE stream = ?1",
	[ST_SEG_INSERT] = "INSERT INTO segments(id, stream, first_version,"
			  " offset, length, count, checksum, synced, created,"
			  " state, has_ids, origin)"
			  " VALUES(NULLIF(?1, 0), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
			  " ?12)",
	[ST_SEG_UPDATE] = "UPDATE segments SET length = ?5, count = ?6,"
			  " checksum = ?7, synced = ?8, state = ?10,"
			  " has_ids = ?11 WHERE id = ?1",
	[ST_SEG_DELETE] = "DELETE FROM segments WHERE id = ?1",
	[ST_BATCH_INSERT] = "INSERT INTO batches(stream, first_version, offset,"
			    " length, time, hash, subs)"
			    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_BATCH_FIND] = "SELECT first_version, offset, length, time, hash,"
			  " subs FROM batches WHERE stream = ?1"
			  " AND first_version <= ?2"
			  " ORDER BY first_version DESC LIMIT 1",
};

struct index_stmts {
	sqlite3_stmt *s[ST_COUNT];
};

/* Runs a prepared statement to completion and resets it. */
static int run(struct store_tenant *t, enum stmt_id id, const char *what)
{
	sqlite3_stmt *stmt = t->stmts->s[id];
	int rc = sqlite3_step(stmt);

	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return store_errno_from_sqlite(t->db, rc, what);
	return 0;
}

static int exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		store_log(LOG_ERR, "index: %s", msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return store_errno_from_sqlite(db, rc, "exec");
	}
	return 0;
}

static int user_version(sqlite3 *db, int *version)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(db, rc, "user_version");
	rc = sqlite3_step(stmt);
	*version = rc == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : 0;
	sqlite3_finalize(stmt);
	return rc == SQLITE_ROW ? 0 : store_errno_from_sqlite(db, rc, "user_version");
}

/* Creates the schema or migrates an older one, in one transaction. */
static int migrate(sqlite3 *db)
{
	char sql[64];
	int version, rc;

	rc = user_version(db, &version);
	if (rc)
		return rc;
	if (version == SCHEMA_VERSION)
		return 0;
	if (version > SCHEMA_VERSION) {
		store_log(LOG_ERR, "index: schema version %d is newer than this streamfs (%d)",
			  version, SCHEMA_VERSION);
		return -EPROTO;
	}
	rc = exec(db, "BEGIN IMMEDIATE");
	if (rc)
		return rc;
	/* Each step moves the schema from version N to N + 1. */
	if (version < 1)
		rc = exec(db, schema_v1);
	if (!rc && version < 2)
		rc = exec(db, schema_v2);
	if (!rc && version < 3)
		rc = exec(db, schema_v3);
	if (!rc && version < 4)
		rc = exec(db, schema_v4);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
	if (!rc)
		rc = exec(db, sql);
	if (!rc)
		return exec(db, "COMMIT");
	exec(db, "ROLLBACK");
	return rc;
}

static int prepare_all(struct store_tenant *t)
{
	t->stmts = calloc(1, sizeof(*t->stmts));
	if (!t->stmts)
		return -ENOMEM;
	for (int i = 0; i < ST_COUNT; i++) {
		int rc = sqlite3_prepare_v3(t->db, stmt_sql[i], -1,
					    SQLITE_PREPARE_PERSISTENT,
					    &t->stmts->s[i], NULL);
		if (rc != SQLITE_OK)
			return store_errno_from_sqlite(t->db, rc, stmt_sql[i]);
	}
	return 0;
}

/* WAL with synchronous=NORMAL: a commit reaches the WAL file with write(2)
 * before it returns, so a crash of the daemon loses nothing; fsync happens in
 * store_sync*() and at checkpoints.  See docs/STORE.md. */
static const char pragmas[] =
	"PRAGMA journal_mode = WAL;"
	"PRAGMA synchronous = NORMAL;"
	"PRAGMA foreign_keys = OFF;"
	"PRAGMA cache_size = -8192;"
	"PRAGMA wal_autocheckpoint = 4096;";

/* Says which URI parameter lets a read-only connection to the index at
 * PATH write nothing beside it.  With no WAL there, the index opens as an
 * immutable database: SQLite makes no -shm file, which a full disk may have
 * no room for.  A WAL left behind (a crash, or a checkpoint a full disk
 * refused) is read with its -shm opened read-only: the first connection to
 * a WAL index would otherwise cut the -shm short and grow it again, while
 * a read-only one reads the WAL into memory.  An empty -shm is made when
 * there is none (a file of no blocks, which even a full disk has room for). */
static const char *reader_param(const char *path)
{
	char wal[PATH_MAX], shm[PATH_MAX];
	struct stat sb;
	int fd;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	if (stat(wal, &sb) || sb.st_size == 0)
		return "?immutable=1";
	snprintf(shm, sizeof(shm), "%s-shm", path);
	fd = open(shm, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
		  sb.st_mode & 0666);
	if (fd < 0)
		return "";
	close(fd);
	return "?readonly_shm=1";
}

/* Opens the index at PATH for reading only (a URI, its path %-escaped). */
int store_index_open_reader(const char *path, sqlite3 **out)
{
	int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
	char *uri = malloc(3 * strlen(path) + 32), *p;
	int rc;

	if (!uri)
		return SQLITE_NOMEM;
	p = stpcpy(uri, "file:");
	for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
		if (isalnum(*c) || strchr("/._-", *c))
			*p++ = (char)*c;
		else
			p += sprintf(p, "%%%02X", *c);
	}
	strcpy(p, reader_param(path));
	rc = sqlite3_open_v2(uri, out, flags, NULL);
	free(uri);
	return rc;
}

/* Copies the index at PATH into T's database in memory (index_in_memory),
 * the WAL included, through a read-only connection that writes nothing. */
static int open_copy(struct store_tenant *t, const char *path)
{
	sqlite3 *disk = NULL;
	sqlite3_backup *b;
	int rc = store_index_open_reader(path, &disk);

	if (rc != SQLITE_OK) {
		rc = store_errno_from_sqlite(disk, rc, "open");
		sqlite3_close(disk);
		return rc;
	}
	rc = sqlite3_open_v2(":memory:", &t->db, SQLITE_OPEN_READWRITE |
			     SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		b = sqlite3_backup_init(t->db, "main", disk, "main");
		rc = b ? sqlite3_backup_step(b, -1) : sqlite3_errcode(t->db);
		if (b && sqlite3_backup_finish(b) != SQLITE_OK && rc == SQLITE_DONE)
			rc = sqlite3_errcode(t->db);
		if (rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	rc = rc == SQLITE_OK ? 0 : store_errno_from_sqlite(t->db, rc, "copy");
	sqlite3_close(disk);
	return rc;
}

int store_index_open(struct store_tenant *t, bool create)
{
	char *path;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	int rc;

	if (asprintf(&path, "%s/" INDEX_DB, t->path) < 0)
		return -ENOMEM;
	if (create)
		flags |= SQLITE_OPEN_CREATE;
	if (t->index_in_memory) {
		rc = open_copy(t, path);
		free(path);
		if (rc)
			goto fail;
	} else {
		rc = sqlite3_open_v2(path, &t->db, flags, NULL);
		free(path);
		if (rc != SQLITE_OK) {
			rc = store_errno_from_sqlite(t->db, rc, "open");
			goto fail;
		}
	}
	sqlite3_busy_timeout(t->db, 5000);
	rc = exec(t->db, pragmas);
	if (!rc)
		rc = migrate(t->db);
	if (!rc)
		rc = store_index_set_full_sync(t, t->st->cfg.sync_always);
	if (!rc)
		rc = prepare_all(t);
	if (!rc)
		return 0;
fail:
	store_index_close(t);
	return rc;
}

void store_index_close(struct store_tenant *t)
{
	if (t->stmts) {
		for (int i = 0; i < ST_COUNT; i++)
			sqlite3_finalize(t->stmts->s[i]);
		free(t->stmts);
		t->stmts = NULL;
	}
	if (t->db) {
		sqlite3_close(t->db);
		t->db = NULL;
	}
}

int store_index_set_full_sync(struct store_tenant *t, bool full)
{
	return exec(t->db, full ? "PRAGMA synchronous = FULL"
				: "PRAGMA synchronous = NORMAL");
}

int store_index_begin(struct store_tenant *t)
{
	return run(t, ST_BEGIN, "begin");
}

int store_index_commit(struct store_tenant *t)
{
	int rc = run(t, ST_COMMIT, "commit");

	if (rc)
		store_index_rollback(t);
	return rc;
}

void store_index_rollback(struct store_tenant *t)
{
	if (!sqlite3_get_autocommit(t->db))
		run(t, ST_ROLLBACK, "rollback");
}

int store_index_meta_set(struct store_tenant *t, const char *key, int64_t ival,
			 const char *sval)
{
	sqlite3_stmt *stmt = t->stmts->s[ST_META_SET];

	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 2, ival);
	if (sval)
		sqlite3_bind_text(stmt, 3, sval, -1, SQLITE_STATIC);
	return run(t, ST_META_SET, "meta");
}

static void bind_stream(sqlite3_stmt *stmt, const struct stream *s)
{
	sqlite3_bind_int64(stmt, 1, (int64_t)s->id);
	sqlite3_bind_blob(stmt, 2, s->name, strlen(s->name), SQLITE_STATIC);
	sqlite3_bind_int(stmt, 3, s->framing);
	sqlite3_bind_int64(stmt, 4, s->mode);
	sqlite3_bind_int64(stmt, 5, s->uid);
	sqlite3_bind_int64(stmt, 6, s->gid);
	sqlite3_bind_int64(stmt, 7, store_ns(s->atime));
	sqlite3_bind_int64(stmt, 8, store_ns(s->mtime));
	sqlite3_bind_int64(stmt, 9, store_ns(s->ctime));
	sqlite3_bind_int64(stmt, 10, (int64_t)s->version);
	sqlite3_bind_int64(stmt, 11, (int64_t)s->size);
	sqlite3_bind_int64(stmt, 12, s->last_ns);
}

int store_index_stream_insert(struct store_tenant *t, struct stream *s)
{
	int rc;

	bind_stream(t->stmts->s[ST_STREAM_INSERT], s);
	rc = run(t, ST_STREAM_INSERT, "insert stream");
	if (!rc)
		s->id = (uint64_t)sqlite3_last_insert_rowid(t->db);
	return rc;
}

int store_index_stream_update(struct store_tenant *t, const struct stream *s)
{
	bind_stream(t->stmts->s[ST_STREAM_UPDATE], s);
	return run(t, ST_STREAM_UPDATE, "update stream");
}

int store_index_stream_delete(struct store_tenant *t, uint64_t id)
{
	static const enum stmt_id steps[] = {
		ST_STREAM_DELETE_BATCHES, ST_STREAM_DELETE_SNAPS,
		ST_STREAM_DELETE_SEGS, ST_STREAM_DELETE
	};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int rc;

		sqlite3_bind_int64(t->stmts->s[steps[i]], 1, (int64_t)id);
		rc = run(t, steps[i], "delete stream");
		if (rc)
			return rc;
	}
	return 0;
}

static void bind_seg(sqlite3_stmt *stmt, uint64_t stream, const struct seg *g)
{
	sqlite3_bind_int64(stmt, 1, (int64_t)g->id);
	sqlite3_bind_int64(stmt, 2, (int64_t)stream);
	sqlite3_bind_int64(stmt, 3, (int64_t)g->first_version);
	sqlite3_bind_int64(stmt, 4, (int64_t)g->offset);
	sqlite3_bind_int64(stmt, 5, (int64_t)g->length);
	sqlite3_bind_int64(stmt, 6, (int64_t)g->count);
	sqlite3_bind_int64(stmt, 7, (int64_t)g->checksum);
	sqlite3_bind_int64(stmt, 8, (int64_t)g->synced);
	sqlite3_bind_int64(stmt, 9, g->created_ns);
	/* a restored copy counts once it is durable (seal.c) */
	sqlite3_bind_int(stmt, 10, g->row_evicted ? STORE_SEG_EVICTED : g->state);
	sqlite3_bind_int(stmt, 11, g->has_ids);
	sqlite3_bind_int64(stmt, 12, (int64_t)g->origin);
}

int store_index_segment_insert(struct store_tenant *t, uint64_t stream,
			       struct seg *g)
{
	int rc;

	bind_seg(t->stmts->s[ST_SEG_INSERT], stream, g);
	rc = run(t, ST_SEG_INSERT, "insert segment");
	if (!rc)
		g->id = (uint64_t)sqlite3_last_insert_rowid(t->db);
	return rc;
}

int store_index_segment_update(struct store_tenant *t, const struct seg *g)
{
	bind_seg(t->stmts->s[ST_SEG_UPDATE], 0, g);
	return run(t, ST_SEG_UPDATE, "update segment");
}

int store_index_segment_delete(struct store_tenant *t, uint64_t id)
{
	sqlite3_bind_int64(t->stmts->s[ST_SEG_DELETE], 1, (int64_t)id);
	return run(t, ST_SEG_DELETE, "delete segment");
}

/* ---- merged rows ----
 * One event per write(2) would cost a row per event.  So a group commit
 * stores consecutive small batches of one stream and segment as one row
 * (journal.c): its offset, length and hash cover them all, its time is
 * the last one's (a search by time can take the row as a whole), and its
 * subs blob lists them in order: the span from the first one's time to
 * the row's, then for each its event count, byte length and, from the
 * second on, the nanoseconds since the one before; all unsigned LEB128. */

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	*p++ = (unsigned char)v;
	return p;
}

static const unsigned char *get_varint(const unsigned char *p,
				       const unsigned char *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; p < end && shift < 64; shift += 7) {
		*v |= (uint64_t)(*p & 0x7f) << shift;
		if (!(*p++ & 0x80))
			return p;
	}
	return NULL;
}

size_t store_subs_encode(const struct sub_batch *v, size_t n, unsigned char *out)
{
	unsigned char *p = put_varint(out, (uint64_t)(v[n - 1].time_ns -
						      v[0].time_ns));

	for (size_t i = 0; i < n; i++) {
		p = put_varint(p, v[i].count);
		p = put_varint(p, v[i].length);
		if (i)
			p = put_varint(p, (uint64_t)(v[i].time_ns -
						     v[i - 1].time_ns));
	}
	return (size_t)(p - out);
}

int store_subs_walk(const struct index_batch *row,
		    int (*fn)(void *arg, const struct sub_batch *b), void *arg)
{
	const unsigned char *p = row->subs, *end = p + row->subs_len;
	struct sub_batch b = {
		.first_version = row->first_version,
		.offset = row->offset,
	};
	uint64_t span;
	int n = 0;

	p = get_varint(p, end, &span);
	if (!p)
		return -EIO;
	b.time_ns = row->time_ns - (int64_t)span;
	while (p < end) {
		uint64_t gap = 0;
		int rc;

		p = get_varint(p, end, &b.count);
		if (p)
			p = get_varint(p, end, &b.length);
		if (p && n)
			p = get_varint(p, end, &gap);
		if (!p || !b.count)
			return -EIO;
		b.time_ns += (int64_t)gap;
		rc = fn(arg, &b);
		if (rc)
			return rc < 0 ? rc : n + 1;
		n++;
		b.first_version += b.count;
		b.offset += b.length;
	}
	if (!n || b.offset != row->offset + row->length ||
	    b.time_ns != row->time_ns)
		return -EIO;
	return n;
}

int store_index_batch_insert(struct store_tenant *t, uint64_t stream,
			     const struct store_batch *b, const void *subs,
			     size_t subs_len)
{
	sqlite3_stmt *stmt = t->stmts->s[ST_BATCH_INSERT];

	sqlite3_bind_int64(stmt, 1, (int64_t)stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)b->first_version);
	sqlite3_bind_int64(stmt, 3, (int64_t)b->offset);
	sqlite3_bind_int64(stmt, 4, (int64_t)b->length);
	sqlite3_bind_int64(stmt, 5, b->time_ns);
	sqlite3_bind_int64(stmt, 6, (int64_t)b->hash);
	if (subs)
		sqlite3_bind_blob(stmt, 7, subs, (int)subs_len, SQLITE_STATIC);
	return run(t, ST_BATCH_INSERT, "insert batch");
}

static void batch_from_row(sqlite3_stmt *stmt, struct index_batch *b)
{
	*b = (struct index_batch){
		.first_version = (uint64_t)sqlite3_column_int64(stmt, 0),
		.offset = (uint64_t)sqlite3_column_int64(stmt, 1),
		.length = (uint64_t)sqlite3_column_int64(stmt, 2),
		.time_ns = sqlite3_column_int64(stmt, 3),
		.hash = (uint64_t)sqlite3_column_int64(stmt, 4),
		.subs = sqlite3_column_blob(stmt, 5),
		.subs_len = (size_t)sqlite3_column_bytes(stmt, 5),
	};
}

/* The sub-batch holding version *WANT: the last one starting at or before
 * it (into OUT); stops at the first one after it. */
struct sub_find {
	uint64_t want;
	struct sub_batch *out;
};

static int sub_find(void *arg, const struct sub_batch *b)
{
	struct sub_find *f = arg;

	if (b->first_version > f->want)
		return 1;
	*f->out = *b;
	return 0;
}

int store_index_batch_find(struct store_tenant *t, uint64_t stream,
			   uint64_t version, struct sub_batch *out)
{
	sqlite3_stmt *stmt = t->stmts->s[ST_BATCH_FIND];
	struct sub_find f = { .want = version, .out = out };
	struct index_batch b;
	int rc, walked = 0;

	sqlite3_bind_int64(stmt, 1, (int64_t)stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)version);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		batch_from_row(stmt, &b);
		*out = (struct sub_batch){
			.first_version = b.first_version,
			.offset = b.offset,
			.length = b.length,
			.time_ns = b.time_ns,
		};
		if (b.subs)
			walked = store_subs_walk(&b, sub_find, &f);
	}
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	if (walked < 0)
		return walked;
	if (rc == SQLITE_ROW)
		return 0;
	if (rc == SQLITE_DONE)
		return -ENOENT;
	return store_errno_from_sqlite(t->db, rc, "find batch");
}

static void load_meta_row(struct store_tenant *t, sqlite3_stmt *stmt)
{
	const char *key = (const char *)sqlite3_column_text(stmt, 0);
	int64_t ival = sqlite3_column_int64(stmt, 1);
	const char *sval = (const char *)sqlite3_column_text(stmt, 2);

	if (!strcmp(key, "mode"))
		t->mode = (mode_t)ival;
	else if (!strcmp(key, "uid"))
		t->uid = (uid_t)ival;
	else if (!strcmp(key, "gid"))
		t->gid = (gid_t)ival;
	else if (!strcmp(key, "atime"))
		t->atime = store_ts(ival);
	else if (!strcmp(key, "mtime"))
		t->mtime = store_ts(ival);
	else if (!strcmp(key, "ctime"))
		t->ctime = store_ts(ival);
	else if (!strcmp(key, "framing"))
		t->framing = ival == STORE_RAW ? STORE_RAW : STORE_LINES;
	else if (!strcmp(key, "id_field") && sval)
		snprintf(t->id_field, sizeof(t->id_field), "%s", sval);
}

static struct stream *stream_from_row(sqlite3_stmt *stmt)
{
	struct stream *s = calloc(1, sizeof(*s));
	int namelen = sqlite3_column_bytes(stmt, 1);

	if (!s)
		return NULL;
	s->name = strndup(sqlite3_column_blob(stmt, 1), namelen);
	if (!s->name) {
		free(s);
		return NULL;
	}
	s->id = (uint64_t)sqlite3_column_int64(stmt, 0);
	s->framing = sqlite3_column_int(stmt, 2);
	s->mode = (mode_t)sqlite3_column_int64(stmt, 3);
	s->uid = (uid_t)sqlite3_column_int64(stmt, 4);
	s->gid = (gid_t)sqlite3_column_int64(stmt, 5);
	s->atime = store_ts(sqlite3_column_int64(stmt, 6));
	s->mtime = store_ts(sqlite3_column_int64(stmt, 7));
	s->ctime = store_ts(sqlite3_column_int64(stmt, 8));
	s->version = (uint64_t)sqlite3_column_int64(stmt, 9);
	s->size = (uint64_t)sqlite3_column_int64(stmt, 10);
	s->last_ns = sqlite3_column_int64(stmt, 11);
	return s;
}

static struct seg *seg_from_row(sqlite3_stmt *stmt)
{
	struct seg *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->id = (uint64_t)sqlite3_column_int64(stmt, 0);
	g->first_version = (uint64_t)sqlite3_column_int64(stmt, 2);
	g->offset = (uint64_t)sqlite3_column_int64(stmt, 3);
	g->length = (uint64_t)sqlite3_column_int64(stmt, 4);
	g->count = (uint64_t)sqlite3_column_int64(stmt, 5);
	g->checksum = (uint64_t)sqlite3_column_int64(stmt, 6);
	g->synced = (uint64_t)sqlite3_column_int64(stmt, 7);
	g->created_ns = sqlite3_column_int64(stmt, 8);
	g->state = sqlite3_column_int(stmt, 9);
	g->has_ids = sqlite3_column_int(stmt, 10);
	g->origin = (uint64_t)sqlite3_column_int64(stmt, 11);
	g->fd = -1;
	return g;
}

typedef int (*row_fn)(struct store_tenant *t, sqlite3_stmt *stmt);

static int each_row(struct store_tenant *t, const char *sql, row_fn fn)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, sql, -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, sql);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		int err = fn(t, stmt);

		if (err) {
			sqlite3_finalize(stmt);
			return err;
		}
	}
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc, sql);
}

static int meta_row(struct store_tenant *t, sqlite3_stmt *stmt)
{
	load_meta_row(t, stmt);
	return 0;
}

static int stream_row(struct store_tenant *t, sqlite3_stmt *stmt)
{
	struct stream *s = stream_from_row(stmt);
	int rc;

	if (!s)
		return -ENOMEM;
	rc = store_stream_attach(t, s);
	if (rc)
		store_stream_free(t, s);
	return rc;
}

static int seg_row(struct store_tenant *t, sqlite3_stmt *stmt)
{
	uint64_t id = (uint64_t)sqlite3_column_int64(stmt, 1);
	struct stream *s = store_stream_find(t, id);
	struct seg *g;
	int rc;

	if (!s) {
		store_log(LOG_WARNING, "index: %s: segment %lld of a missing stream ignored",
			  t->name, sqlite3_column_int64(stmt, 0));
		return 0;
	}
	g = seg_from_row(stmt);
	if (!g)
		return -ENOMEM;
	rc = store_seg_push(t, s, g);
	if (rc)
		store_seg_free(t, g);
	return rc;
}

int store_index_load_tenant(struct store_tenant *t)
{
	int rc = each_row(t, "SELECT key, ival, sval FROM meta", meta_row);

	if (!rc)
		rc = each_row(t, "SELECT id, name, framing, mode, uid, gid,"
			      " atime, mtime, ctime, version, size, last_ns"
			      " FROM streams ORDER BY id", stream_row);
	if (!rc)
		rc = each_row(t, "SELECT id, stream, first_version, offset,"
			      " length, count, checksum, synced, created, state,"
			      " has_ids, origin FROM segments"
			      " ORDER BY stream, first_version", seg_row);
	return rc;
}

int store_index_batch_scan(struct store_tenant *t, uint64_t stream, uint64_t from,
			   int (*fn)(void *arg, const struct index_batch *b),
			   void *arg)
{
	static const char sql[] =
		"SELECT first_version, offset, length, time, hash, subs"
		" FROM batches WHERE stream = ?1 AND first_version >= ?2"
		" ORDER BY first_version";
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, sql, -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, "scan batches");
	sqlite3_bind_int64(stmt, 1, (int64_t)stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)from);
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		struct index_batch b;
		int err;

		batch_from_row(stmt, &b);
		err = fn(arg, &b);

		if (err) {
			sqlite3_finalize(stmt);
			return err > 0 ? 0 : err;
		}
	}
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc, "scan batches");
}

int store_index_batch_delete_range(struct store_tenant *t, uint64_t stream,
				   uint64_t from, uint64_t to)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, "DELETE FROM batches WHERE stream = ?1"
				    " AND first_version >= ?2 AND first_version < ?3",
				    -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, "delete batches");
	sqlite3_bind_int64(stmt, 1, (int64_t)stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)from);
	sqlite3_bind_int64(stmt, 3, (int64_t)(to > INT64_MAX ? INT64_MAX : to));
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc,
							       "delete batches");
}

int store_index_batch_delete_from(struct store_tenant *t, uint64_t stream,
				  uint64_t version)
{
	sqlite3_stmt *stmt;
	int rc = sqlite3_prepare_v2(t->db, "DELETE FROM batches WHERE stream = ?1"
				    " AND first_version >= ?2", -1, &stmt, NULL);

	if (rc != SQLITE_OK)
		return store_errno_from_sqlite(t->db, rc, "delete batches");
	sqlite3_bind_int64(stmt, 1, (int64_t)stream);
	sqlite3_bind_int64(stmt, 2, (int64_t)version);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : store_errno_from_sqlite(t->db, rc, "delete batches");
}
