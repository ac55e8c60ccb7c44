/*
 * Durable marks: fsync(2) of a stream with one device flush.
 *
 * Making an append durable the plain way takes two files to the disk: the
 * segment's bytes and the index (or journal) rows that say what they are.
 * On this kind of disk two flushes, even concurrent, cost about 2.5 of one.
 * But in lines framing the bytes say what they are: every batch ends with
 * a newline, so the events up to a batch boundary can be counted again.
 * So fsync(2) of a stream records, in an extended attribute of the active
 * segment, how many of its bytes and events are durable, with the XXH3-64
 * of those bytes (kept as a running hash once a segment is fsynced), and
 * then fsync(2)s that one file: the data and the attribute reach the disk
 * in the same flush.  After a power cut that took index rows with it,
 * recovery trusts a mark only if the file's bytes still hash to it, and
 * re-creates the lost events from the bytes as one batch.
 *
 * Two attributes are written in turn, so that a mark torn or committed
 * before its bytes (the journal of the file system may commit the
 * attribute early) leaves the other one to fall back on.  Raw framing,
 * whose event boundaries the bytes do not show, and file systems without
 * user attributes take the two-flush path (fsync.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

#define MARK_MAGIC 0x314d4653ull	/* "SFM1" */
static const char *const mark_names[2] = {
	"user.streamfs.durable0", "user.streamfs.durable1",
};

struct durable_mark {
	uint64_t magic;
	uint64_t length;	/* durable bytes of the segment, from 0 */
	uint64_t count;		/* events in them */
	int64_t time_ns;	/* commit time of the last of them */
	uint64_t hash;		/* XXH3-64 of those bytes */
	uint64_t check;		/* XXH3-64 of the fields above */
};

static int hash_start(struct seg *g, int fd)
{
	int rc;

	g->running = XXH3_createState();
	if (!g->running)
		return -ENOMEM;
	XXH3_64bits_reset(g->running);
	rc = store_file_hash(fd, g->length, g->running);
	if (rc)
		store_seg_hash_release(g);
	return rc;
}

int store_seg_mark_durable(struct store_tenant *t, struct stream *s, struct seg *g)
{
	struct durable_mark m = { .magic = MARK_MAGIC };
	int fd, rc = 0;

	if (s->framing != STORE_LINES)
		return -ENOTSUP;
	fd = store_seg_fd(t, g);
	if (fd < 0)
		return fd;
	if (!g->running)
		rc = hash_start(g, fd);
	if (!rc) {
		m.length = g->length;
		m.count = g->count;
		m.time_ns = s->last_ns;
		m.hash = XXH3_64bits_digest(g->running);
		m.check = XXH3_64bits(&m, offsetof(struct durable_mark, check));
		g->mark_slot ^= 1;
		if (fsetxattr(fd, mark_names[g->mark_slot], &m, sizeof(m), 0) < 0)
			rc = errno == ENOTSUP || errno == EOPNOTSUPP ||
			     errno == ENOSPC || errno == E2BIG ? -ENOTSUP : -errno;
	}
	/* fsync, not fdatasync: the attribute must reach the disk too */
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	store_seg_fd_put(t, g);
	/* a new file's directory entry must reach the disk too */
	if (!rc && !g->synced && fsync(t->segfd) < 0)
		rc = -errno;
	if (!rc)
		g->synced = g->length;
	return rc;
}

/* The newer of G's two marks whose bytes are still there (length 0 if
 * none): a mark counts only if the file's first LENGTH bytes hash to it. */
static void best_mark(int fd, uint64_t file_size, struct durable_mark *best)
{
	memset(best, 0, sizeof(*best));
	for (int i = 0; i < 2; i++) {
		struct durable_mark m;
		uint64_t sum;

		if (fgetxattr(fd, mark_names[i], &m, sizeof(m)) != sizeof(m) ||
		    m.magic != MARK_MAGIC ||
		    m.check != XXH3_64bits(&m, offsetof(struct durable_mark, check)) ||
		    m.length > file_size || m.length <= best->length ||
		    store_file_checksum(fd, m.length, &sum) || sum != m.hash)
			continue;
		*best = m;
	}
}

static uint64_t count_newlines(const char *p, size_t len)
{
	uint64_t n = 0;

	for (const char *end = p + len; (p = memchr(p, '\n', (size_t)(end - p)));
	     p++)
		n++;
	return n;
}

int store_recover_from_mark(struct store_tenant *t, struct stream *s, struct seg *g,
			    int fd, uint64_t file_size, uint64_t window_end,
			    uint64_t *len, uint64_t *version)
{
	struct durable_mark m;
	uint64_t mark_version, n;
	char *buf;
	int rc;

	if (s->framing != STORE_LINES || fd < 0)
		return 0;
	best_mark(fd, file_size, &m);
	mark_version = g->first_version + m.count;
	if (m.length <= *len || mark_version <= *version)
		return 0;
	n = m.length - *len;
	buf = malloc(n);
	if (!buf)
		return -ENOMEM;
	rc = store_pread_all(fd, buf, n, *len) ? -EIO : 0;
	if (!rc && (buf[n - 1] != '\n' ||
		    count_newlines(buf, n) != mark_version - *version))
		rc = 1;	/* not what the mark says: leave it */
	if (!rc)
		rc = store_index_batch_delete_range(t, s->id, *version, window_end);
	if (!rc)
		rc = store_index_batch_insert(t, s->id, &(struct store_batch){
			.first_version = *version,
			.offset = g->offset + *len,
			.length = n,
			.time_ns = m.time_ns,
			.hash = XXH3_64bits(buf, n),
		}, NULL, 0);
	free(buf);
	if (rc)
		return rc > 0 ? 0 : rc;
	store_log(LOG_NOTICE, "%s/%s: recovery restores versions %" PRIu64 "-%" PRIu64
		  " from the fsync mark of segment %016" PRIx64, t->name,
		  s->name, *version, mark_version - 1, g->id);
	*len = m.length;
	*version = mark_version;
	if (s->last_ns < m.time_ns)
		s->last_ns = m.time_ns;
	return 0;
}
