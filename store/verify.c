/*
 * store_verify: an offline check of a data directory that changes nothing.
 * For each stream it walks segments and batches together and checks that
 * versions and offsets are contiguous from 1 and 0, that every batch lies
 * inside a segment whose file holds it and hashes right, that a lines
 * batch holds as many lines as versions, and that sealed segments match
 * their checksums, and that each snapshot lies within its stream and its
 * blob (when here) has its length and checksum.  Bytes past the last batch
 * of an active segment are an unacknowledged tail (the next mount cuts
 * them), reported but not damage.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

struct vseg {
	uint64_t id, first_version, offset, length, checksum;
	int state;
	int fd;
	uint64_t file_size;
};

struct verify {
	FILE *out;
	const char *tenant;
	const char *stream;
	sqlite3 *db;
	int schema;		/* the index's user_version */
	int segfd;
	int snapfd;		/* snap/, or -1 when there is none */
	struct jrec *journal;	/* the tenant's journal records */
	size_t njournal;
	unsigned long problems;
	uint64_t streams, events, bytes;
};

static void damage(struct verify *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void damage(struct verify *v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(v->out, "DAMAGE %s/%s: ", v->tenant, v->stream ? v->stream : "");
	vfprintf(v->out, fmt, ap);
	fputc('\n', v->out);
	va_end(ap);
	v->problems++;
}

static int prepare(struct verify *v, const char *sql, int64_t arg,
		   sqlite3_stmt **stmt)
{
	int rc = sqlite3_prepare_v2(v->db, sql, -1, stmt, NULL);

	if (rc != SQLITE_OK) {
		fprintf(v->out, "ERROR %s: %s\n", v->tenant, sqlite3_errmsg(v->db));
		return -EIO;
	}
	sqlite3_bind_int64(*stmt, 1, arg);
	return 0;
}

static void open_seg(struct verify *v, struct vseg *g)
{
	char name[64];
	struct stat sb;

	g->fd = -1;
	if (g->state == STORE_SEG_EVICTED)
		return;
	store_seg_name(name, sizeof(name), g->id, ".seg");
	g->fd = openat(v->segfd, name, O_RDONLY | O_CLOEXEC);
	if (g->fd < 0 || fstat(g->fd, &sb) < 0) {
		damage(v, "segment %016" PRIx64 ": %s", g->id, strerror(errno));
		return;
	}
	g->file_size = (uint64_t)sb.st_size;
}

static void check_sealed(struct verify *v, struct vseg *g)
{
	uint64_t sum = 0;
	int rc;

	if (g->state == STORE_SEG_ACTIVE || g->fd < 0)
		return;
	if (g->file_size != g->length) {
		damage(v, "sealed segment %016" PRIx64 " holds %" PRIu64
		       " bytes, the index says %" PRIu64, g->id, g->file_size,
		       g->length);
		return;
	}
	rc = store_file_checksum(g->fd, g->length, &sum);
	if (rc != -ENOMEM && (rc || sum != g->checksum))
		damage(v, "sealed segment %016" PRIx64 ": checksum mismatch", g->id);
}

static int load_segs(struct verify *v, int64_t stream, struct vseg **segs,
		     size_t *n)
{
	sqlite3_stmt *stmt;
	size_t cap = 0;
	int rc = prepare(v, "SELECT id, first_version, offset, length,"
			 " checksum, state FROM segments WHERE stream = ?1"
			 " ORDER BY first_version", stream, &stmt);

	*segs = NULL;
	*n = 0;
	while (!rc && sqlite3_step(stmt) == SQLITE_ROW) {
		struct vseg *g;

		rc = STORE_ARRAY_RESERVE(*segs, cap, *n + 1, 8);
		if (rc)
			break;
		g = &(*segs)[(*n)++];
		g->id = (uint64_t)sqlite3_column_int64(stmt, 0);
		g->first_version = (uint64_t)sqlite3_column_int64(stmt, 1);
		g->offset = (uint64_t)sqlite3_column_int64(stmt, 2);
		g->length = (uint64_t)sqlite3_column_int64(stmt, 3);
		g->checksum = (uint64_t)sqlite3_column_int64(stmt, 4);
		g->state = sqlite3_column_int(stmt, 5);
		open_seg(v, g);
		check_sealed(v, g);
	}
	sqlite3_finalize(stmt);
	return rc;
}

/* The segment holding stream offset OFF. */
static struct vseg *seg_for(struct vseg *segs, size_t n, uint64_t off)
{
	for (size_t i = n; i-- > 0;)
		if (segs[i].offset <= off)
			return &segs[i];
	return NULL;
}

static uint64_t count_lines(const char *p, size_t len)
{
	uint64_t n = 0;
	const char *end = p + len;

	while ((p = memchr(p, '\n', (size_t)(end - p)))) {
		n++;
		p++;
	}
	return n;
}

struct vbatch {
	uint64_t first, offset, length, hash, count;
	uint64_t merged;	/* a merged row: the events its blob lists */
};

static void check_batch(struct verify *v, struct vseg *segs, size_t nsegs,
			const struct vbatch *b, int framing)
{
	struct vseg *g = seg_for(segs, nsegs, b->offset);
	uint64_t in;
	char *buf;

	if (!g) {
		damage(v, "version %" PRIu64 ": no segment holds offset %" PRIu64,
		       b->first, b->offset);
		return;
	}
	if (g->fd < 0)
		return;	/* evicted or already reported */
	in = b->offset - g->offset;
	if (in + b->length > g->file_size ||
	    (g->state != STORE_SEG_ACTIVE && in + b->length > g->length)) {
		damage(v, "version %" PRIu64 ": bytes %" PRIu64 "-%" PRIu64
		       " lie past the end of segment %016" PRIx64, b->first,
		       in, in + b->length, g->id);
		return;
	}
	buf = malloc(b->length ? b->length : 1);
	if (!buf || store_pread_all(g->fd, buf, b->length, in))
		damage(v, "version %" PRIu64 ": cannot read", b->first);
	else if (XXH3_64bits(buf, b->length) != b->hash)
		damage(v, "version %" PRIu64 ": bytes do not match their hash",
		       b->first);
	else if (framing == STORE_LINES &&
		 (count_lines(buf, b->length) != b->count ||
		  buf[b->length - 1] != '\n'))
		damage(v, "version %" PRIu64 ": %" PRIu64 " events indexed, "
		       "%" PRIu64 " lines stored", b->first, b->count,
		       count_lines(buf, b->length));
	free(buf);
}

/* Batches still in the journal, continuing stream ID from *version and
 * *offset: checked like indexed ones, and counted as acknowledged. */
static void check_journal(struct verify *v, struct vseg *segs, size_t nsegs,
			  int64_t id, int framing, uint64_t *version,
			  uint64_t *offset)
{
	uint64_t n = 0;

	for (size_t i = 0; i < v->njournal; i++) {
		const struct jrec *r = &v->journal[i];
		struct vbatch b = {
			.first = r->first_version,
			.offset = r->offset,
			.length = r->length,
			.hash = r->hash,
			.count = r->count,
		};

		if (r->stream != (uint64_t)id || r->first_version < *version)
			continue;
		if (r->first_version != *version || r->offset != *offset)
			break;	/* the next mount keeps the prefix before it */
		check_batch(v, segs, nsegs, &b, framing);
		*version += r->count;
		*offset += r->length;
		n += r->count;
	}
	if (n)
		fprintf(v->out, "note %s/%s: %" PRIu64 " events in the journal, "
			"indexed at the next mount\n", v->tenant, v->stream, n);
	v->events += n;
}

static void check_tail(struct verify *v, struct vseg *segs, size_t n,
		       uint64_t size)
{
	struct vseg *g = n ? &segs[n - 1] : NULL;

	if (!g || g->state != STORE_SEG_ACTIVE || g->fd < 0)
		return;
	if (g->file_size > size - g->offset)
		fprintf(v->out, "note %s/%s: %" PRIu64 " unacknowledged bytes "
			"after the last commit (cut at the next mount)\n",
			v->tenant, v->stream, g->file_size - (size - g->offset));
}

static int sum_events(void *arg, const struct sub_batch *b)
{
	*(uint64_t *)arg += b->count;
	return 0;
}

/* The events a merged row's blob lists (0: not a merged row), checked
 * against the row's own offset, length and time. */
static uint64_t merged_events(struct verify *v, sqlite3_stmt *stmt,
			      const struct vbatch *b)
{
	struct index_batch row = {
		.first_version = b->first,
		.offset = b->offset,
		.length = b->length,
		.time_ns = sqlite3_column_int64(stmt, 4),
		.subs = sqlite3_column_blob(stmt, 5),
		.subs_len = (size_t)sqlite3_column_bytes(stmt, 5),
	};
	uint64_t events = 0;

	if (row.subs && store_subs_walk(&row, sum_events, &events) < 0)
		damage(v, "merged batch at version %" PRIu64 ": its list of"
		       " batches does not add up to the row", b->first);
	return events;
}

/* The segments of a stream follow each other: sealed ones first, each
 * starting where the one before ends. */
static void check_chain(struct verify *v, const struct vseg *segs,
			size_t nsegs)
{
	for (size_t i = 0; i < nsegs; i++) {
		const struct vseg *prev = i ? &segs[i - 1] : NULL;

		/* unsealed ones (closing, then active) come last */
		if (prev && prev->state == STORE_SEG_ACTIVE &&
		    segs[i].state != STORE_SEG_ACTIVE)
			damage(v, "segment %016" PRIx64 " is sealed after the"
			       " unsealed %016" PRIx64, segs[i].id, prev->id);
		else if (segs[i].offset != (prev ? prev->offset + prev->length : 0))
			damage(v, "segment %016" PRIx64 " starts at %" PRIu64
			       ", not where the one before it ends", segs[i].id,
			       segs[i].offset);
	}
}

/* One snapshot row of stream ID: its version within the stream's, its
 * blob whole and hashing right (a replica's may not be fetched yet). */
static void check_snapshot(struct verify *v, int64_t id, uint64_t version,
			   sqlite3_stmt *stmt)
{
	uint64_t at = (uint64_t)sqlite3_column_int64(stmt, 0);
	uint64_t length = (uint64_t)sqlite3_column_int64(stmt, 1);
	uint64_t checksum = (uint64_t)sqlite3_column_int64(stmt, 2);
	int state = sqlite3_column_int(stmt, 3);
	char path[48];
	uint64_t sum;
	struct stat st;
	int fd;

	if (at < 1 || at > version)
		damage(v, "snapshot at version %" PRIu64 " outside the stream's"
		       " 1..%" PRIu64, at, version);
	snprintf(path, sizeof(path), "%016" PRIx64 "/%016" PRIx64, (uint64_t)id, at);
	fd = v->snapfd < 0 ? -1 : openat(v->snapfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (state != STORE_SNAP_REMOTE)
			damage(v, "snapshot at version %" PRIu64 ": blob missing", at);
		return;
	}
	if (fstat(fd, &st) || (uint64_t)st.st_size != length)
		damage(v, "snapshot at version %" PRIu64 ": %lld bytes, not %"
		       PRIu64, at, (long long)st.st_size, length);
	else if (store_file_checksum(fd, length, &sum) || sum != checksum)
		damage(v, "snapshot at version %" PRIu64 ": checksum mismatch", at);
	close(fd);
}

static int verify_snapshots(struct verify *v, int64_t id, uint64_t version)
{
	sqlite3_stmt *stmt;
	int rc;

	if (v->schema < 4)
		return 0;
	rc = prepare(v, "SELECT version, length, checksum, state FROM snapshots"
		     " WHERE stream = ?1 ORDER BY version", id, &stmt);
	while (!rc && sqlite3_step(stmt) == SQLITE_ROW)
		check_snapshot(v, id, version, stmt);
	if (!rc)
		sqlite3_finalize(stmt);
	return rc;
}

static int verify_stream(struct verify *v, int64_t id, int framing,
			 uint64_t version, uint64_t size)
{
	struct vseg *segs;
	struct vbatch b = { 0 }, next;
	sqlite3_stmt *stmt;
	uint64_t want_version = 1, want_offset = 0;
	bool have = false;
	size_t nsegs;
	int rc = load_segs(v, id, &segs, &nsegs);

	if (!rc)
		check_chain(v, segs, nsegs);
	if (!rc)
		rc = prepare(v, v->schema < 3 ?
			     "SELECT first_version, offset, length, hash,"
			     " time, NULL FROM batches WHERE stream = ?1"
			     " ORDER BY first_version" :
			     "SELECT first_version, offset, length, hash,"
			     " time, subs FROM batches WHERE stream = ?1"
			     " ORDER BY first_version", id, &stmt);
	/* A batch's count is the distance to the next one's first version. */
	while (!rc) {
		bool row = sqlite3_step(stmt) == SQLITE_ROW;

		if (row) {
			next.first = (uint64_t)sqlite3_column_int64(stmt, 0);
			next.offset = (uint64_t)sqlite3_column_int64(stmt, 1);
			next.length = (uint64_t)sqlite3_column_int64(stmt, 2);
			next.hash = (uint64_t)sqlite3_column_int64(stmt, 3);
			next.merged = merged_events(v, stmt, &next);
		}
		if (have) {
			b.count = (row ? next.first : version + 1) - b.first;
			if (b.merged && b.merged != b.count)
				damage(v, "merged batch at version %" PRIu64
				       " lists %" PRIu64 " events, not %" PRIu64,
				       b.first, b.merged, b.count);
			if (b.first != want_version || b.offset != want_offset)
				damage(v, "batch at version %" PRIu64 " offset %"
				       PRIu64 " breaks the sequence (expected %"
				       PRIu64 " at %" PRIu64 ")", b.first,
				       b.offset, want_version, want_offset);
			check_batch(v, segs, nsegs, &b, framing);
			want_version = b.first + b.count;
			want_offset = b.offset + b.length;
			v->events += b.count;
		}
		if (!row)
			break;
		b = next;
		have = true;
	}
	if (!rc)
		sqlite3_finalize(stmt);
	if (!rc && (want_version != version + 1 || want_offset != size))
		damage(v, "stream says version %" PRIu64 " size %" PRIu64
		       ", its batches end at %" PRIu64 " and %" PRIu64,
		       version, size, want_version - 1, want_offset);
	if (!rc)
		check_journal(v, segs, nsegs, id, framing, &want_version,
			      &want_offset);
	if (!rc)
		check_tail(v, segs, nsegs, want_offset);
	if (!rc)
		rc = verify_snapshots(v, id, version);
	for (size_t i = 0; i < nsegs; i++)
		if (segs[i].fd >= 0)
			close(segs[i].fd);
	free(segs);
	v->bytes += size;
	return rc;
}

static void load_journal(struct verify *v, const char *path)
{
	char *file;
	int fd;

	if (asprintf(&file, "%s/" JOURNAL_FILE, path) < 0)
		return;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	free(file);
	if (fd < 0)
		return;	/* none: nothing pending */
	if (store_journal_read(fd, &v->journal, &v->njournal))
		fprintf(v->out, "ERROR %s: cannot read the journal\n", v->tenant);
	close(fd);
}

static int verify_tenant(struct verify *v, const char *path)
{
	char *db = NULL, *seg = NULL, *snap = NULL;
	sqlite3_stmt *stmt = NULL;
	int rc = 0;

	if (asprintf(&db, "%s/" INDEX_DB, path) < 0 ||
	    asprintf(&seg, "%s/" SEG_DIR, path) < 0 ||
	    asprintf(&snap, "%s/" SNAP_DIR, path) < 0) {
		free(db);
		free(seg);
		return -ENOMEM;
	}
	v->segfd = open(seg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	v->snapfd = open(snap, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	load_journal(v, path);
	if (v->segfd < 0 ||
	    sqlite3_open_v2(db, &v->db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		damage(v, "cannot open the index or segments: %s",
		       v->db ? sqlite3_errmsg(v->db) : strerror(errno));
		goto out;
	}
	rc = prepare(v, "PRAGMA user_version", 0, &stmt);
	if (!rc && sqlite3_step(stmt) == SQLITE_ROW)
		v->schema = sqlite3_column_int(stmt, 0);
	if (!rc)
		sqlite3_finalize(stmt);
	if (!rc)
		rc = prepare(v, "SELECT id, name, framing, version, size"
			     " FROM streams ORDER BY id", 0, &stmt);
	while (!rc && sqlite3_step(stmt) == SQLITE_ROW) {
		char *name = strndup(sqlite3_column_blob(stmt, 1),
				     (size_t)sqlite3_column_bytes(stmt, 1));

		v->stream = name;
		rc = verify_stream(v, sqlite3_column_int64(stmt, 0),
				   sqlite3_column_int(stmt, 2),
				   (uint64_t)sqlite3_column_int64(stmt, 3),
				   (uint64_t)sqlite3_column_int64(stmt, 4));
		v->stream = NULL;
		v->streams++;
		free(name);
	}
	sqlite3_finalize(stmt);
out:
	sqlite3_close(v->db);
	v->db = NULL;
	free(v->journal);
	v->journal = NULL;
	v->njournal = 0;
	if (v->segfd >= 0)
		close(v->segfd);
	if (v->snapfd >= 0)
		close(v->snapfd);
	free(db);
	free(seg);
	free(snap);
	return rc;
}

int store_verify(const char *dir, FILE *out)
{
	struct verify v = { .out = out };
	unsigned long tenants = 0;
	struct dirent *de;
	char *path;
	DIR *d;
	int rc = 0;

	if (asprintf(&path, "%s/" TENANTS_DIR, dir) < 0)
		return -ENOMEM;
	d = opendir(path);
	if (!d) {
		rc = -errno;
		fprintf(out, "ERROR %s: %s\n", path, strerror(errno));
		free(path);
		return rc;
	}
	while (!rc && (de = readdir(d))) {
		char *tpath;

		if (!store_name_valid(de->d_name))
			continue;
		if (asprintf(&tpath, "%s/%s", path, de->d_name) < 0) {
			rc = -ENOMEM;
			break;
		}
		v.tenant = de->d_name;
		rc = verify_tenant(&v, tpath);
		tenants++;
		free(tpath);
	}
	closedir(d);
	free(path);
	if (rc)
		return rc;
	fprintf(out, "%lu tenants, %" PRIu64 " streams, %" PRIu64 " events, %"
		PRIu64 " bytes: %s (%lu problems)\n", tenants, v.streams,
		v.events, v.bytes, v.problems ? "DAMAGED" : "ok", v.problems);
	return v.problems ? 1 : 0;
}
