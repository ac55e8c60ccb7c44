/*
 * The append journal: group commit for the index.
 *
 * An append writes its bytes to the segment (pwrite(2)) and one fixed-size
 * record to the tenant's journal, and returns.  The journal is a file
 * mapped shared into memory, so a record costs a memcpy, not a system
 * call: the page cache keeps it when the process dies, like a write.  The index rows the
 * records stand for are inserted into SQLite later, many per transaction
 * (store_journal_flush), after which the journal starts over.  A crash of the
 * daemon loses nothing: the records are in the file, and the next open
 * replays those the index lacks (store_journal_replay) before recovery checks
 * the bytes they name.  Every other index transaction flushes first, so a
 * stream's row in SQLite always agrees with its batch rows.
 *
 * A removed stream is a record too (store_journal_remove), so that `rm`
 * needs no room on the disk: the journal's first blocks are allocated at
 * open (store_journal_prepare).  When the index has no room to forget the
 * stream at once, the record is made durable before the stream's files go
 * (store_journal_remove_wait), and the index catches up at a later flush,
 * or at the next open's replay.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

#define JOURNAL_MAGIC 0x314a465300000000ull	/* "SFJ1" in the high bytes */
#define FLUSH_RECORDS 512	/* flush after this many pending rows */
#define FLUSH_AGE_NS 100000000	/* ... or when the oldest is this old */
/* Room for many flush intervals: it fills only while flushes fail. */
#define JOURNAL_CAP ((size_t)FLUSH_RECORDS * sizeof(struct jrec) * 16)
/* The last records are kept for removals, so that a disk too full for
 * the index to take the appends' rows still lets streams be removed. */
#define REMOVE_SLOTS 64
#define APPEND_CAP (JOURNAL_CAP - REMOVE_SLOTS * sizeof(struct jrec))
/* Allocated at open, for removals: appends allocate all of JOURNAL_CAP
 * when they first come, so that an idle tenant's journal stays small. */
#define REMOVE_ROOM ((size_t)16 << 10)

int store_journal_open(struct store_tenant *t)
{
	t->jfd = openat(t->dirfd, JOURNAL_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	return t->jfd < 0 ? -errno : 0;
}

/* Maps the journal, with its first ROOM bytes allocated first, so that a
 * full disk is an error here and never a SIGBUS on a store to the map
 * (which only ever touches those bytes).  Records start at 0; whatever
 * lies after the last one written is either zeros or records the index
 * already holds, which replay skips. */
static int journal_map(struct store_tenant *t, size_t room)
{
	void *map;
	int rc;

	if (t->jroom < room) {
		rc = posix_fallocate(t->jfd, 0, (off_t)room);
		if (rc)
			return -rc;
		t->jroom = room;
	}
	if (t->jmap)
		return 0;
	map = mmap(NULL, JOURNAL_CAP, PROT_READ | PROT_WRITE, MAP_SHARED,
		   t->jfd, 0);
	if (map == MAP_FAILED)
		return -errno;
	t->jmap = map;
	return 0;
}

void store_journal_close(struct store_tenant *t)
{
	free(t->pending);
	t->pending = NULL;
	t->npending = t->pendcap = 0;
	free(t->removals);
	t->removals = NULL;
	t->nremovals = t->removalcap = 0;
	if (t->jmap)
		munmap(t->jmap, JOURNAL_CAP);
	t->jmap = NULL;
	t->jroom = 0;
	if (t->jfd >= 0)
		close(t->jfd);
	t->jfd = -1;
}

static int pending_push(struct store_tenant *t, const struct pending *p)
{
	int rc = STORE_ARRAY_RESERVE(t->pending, t->pendcap, t->npending + 1,
				     64);

	if (rc)
		return rc;
	t->pending[t->npending++] = *p;
	return 0;
}

int store_journal_append(struct store_tenant *t, struct stream *s, struct seg *g,
			 const struct pending *p, bool has_ids)
{
	struct jrec r = {
		.magic = JOURNAL_MAGIC,
		.stream = s->id,
		.seg = g->id,
		.first_version = p->b.first_version,
		.count = p->b.count,
		.offset = p->b.offset,
		.length = p->b.length,
		.time_ns = p->b.time_ns,
		.hash = p->b.hash,
		.flags = has_ids ? JREC_HAS_IDS : 0,
	};
	int rc;

	STORE_ASSERT_WRLOCKED(t);
	r.check = XXH3_64bits(&r, offsetof(struct jrec, check));
	if ((rc = journal_map(t, JOURNAL_CAP)))
		return rc;
	if (t->jlen + sizeof(r) > APPEND_CAP && (rc = store_journal_flush(t)))
		return rc;	/* full, and the index refuses the rows */
	rc = pending_push(t, p);
	if (rc)
		return rc;
	memcpy(t->jmap + t->jlen, &r, sizeof(r));
	if (t->st->cfg.sync_always && fdatasync(t->jfd) < 0) {
		rc = -errno;
		memset(t->jmap + t->jlen, 0, sizeof(r));
		t->npending--;
		return rc;
	}
	if (t->npending + t->nremovals == 1)
		t->pending_since = p->b.time_ns;
	t->jlen += sizeof(r);
	return 0;
}

/* Forgets the pending rows of stream ID: it is removed. */
static void pending_drop(struct store_tenant *t, uint64_t id)
{
	size_t kept = 0;

	for (size_t i = 0; i < t->npending; i++)
		if (t->pending[i].stream != id)
			t->pending[kept++] = t->pending[i];
	t->npending = kept;
}

int store_journal_remove(struct store_tenant *t, struct stream *s)
{
	struct jrec r = {
		.magic = JOURNAL_MAGIC,
		.stream = s->id,
		.flags = JREC_REMOVE,
	};
	int rc;

	STORE_ASSERT_WRLOCKED(t);
	r.check = XXH3_64bits(&r, offsetof(struct jrec, check));
	/* room for it: in what is allocated, else in all of the journal,
	 * else (a full disk, or a full journal) after a flush that starts
	 * the journal over */
	if (t->jlen + sizeof(r) > t->jroom &&
	    (t->jlen + sizeof(r) > JOURNAL_CAP || journal_map(t, JOURNAL_CAP)) &&
	    (rc = store_journal_flush(t)))
		return rc;
	if ((rc = journal_map(t, t->jlen + sizeof(r))))
		return rc;
	rc = STORE_ARRAY_RESERVE(t->removals, t->removalcap, t->nremovals + 1,
				 8);
	if (rc)
		return rc;
	memcpy(t->jmap + t->jlen, &r, sizeof(r));
	t->removals[t->nremovals++] = s->id;
	if (t->npending + t->nremovals == 1)
		t->pending_since = store_now_ns();
	t->jlen += sizeof(r);
	return 0;
}

int store_journal_remove_wait(struct store_tenant *t, struct stream *s)
{
	STORE_ASSERT_WRLOCKED(t);
	assert(t->nremovals && t->removals[t->nremovals - 1] == s->id);
	/* The blocks exist: no room needed. */
	if (fdatasync(t->jfd) < 0) {
		int rc = -errno;

		t->jlen -= sizeof(struct jrec);
		memset(t->jmap + t->jlen, 0, sizeof(struct jrec));
		t->nremovals--;
		return rc;
	}
	pending_drop(t, s->id);
	return 0;
}

bool store_journal_due(const struct store_tenant *t, int64_t now)
{
	return t->npending >= FLUSH_RECORDS ||
	       (t->npending + t->nremovals &&
		now - t->pending_since >= FLUSH_AGE_NS);
}

/* ---- merging small batches into one row (index.c: merged rows) ---- */

/* Each stream's pending rows together, in version order. */
static int pending_cmp(const void *a, const void *b)
{
	const struct pending *x = *(const struct pending *const *)a;
	const struct pending *y = *(const struct pending *const *)b;

	if (x->stream != y->stream)
		return x->stream < y->stream ? -1 : 1;
	return (x->b.first_version > y->b.first_version) -
	       (x->b.first_version < y->b.first_version);
}

/* Does Q continue P in the same segment, with room in a merged row that
 * holds N batches and LEN bytes so far? */
static bool mergeable(const struct pending *p, const struct pending *q,
		      size_t n, uint64_t len)
{
	return q->stream == p->stream && q->seg == p->seg &&
	       q->b.first_version == p->b.first_version + p->b.count &&
	       q->b.offset == p->b.offset + p->b.length &&
	       n < MERGE_SUBS_MAX && len + q->b.length <= MERGE_BYTES_MAX;
}

/* XXH3 of the LEN bytes of segment SEG at stream offset OFF, read back
 * (they are in the page cache). */
static int hash_range(struct store_tenant *t, uint64_t seg, uint64_t off,
		      uint64_t len, uint64_t *hash)
{
	struct stream *s;
	struct seg *g = store_seg_find(t, seg, &s);
	char *buf = malloc(len);
	int fd, rc = 0;

	if (!g || !buf) {
		free(buf);
		return g ? -ENOMEM : -ENOENT;
	}
	fd = store_seg_fd(t, g);
	if (fd < 0)
		rc = fd;
	else
		rc = store_pread_all(fd, buf, len, off - g->offset);
	if (fd >= 0)
		store_seg_fd_put(t, g);
	if (!rc)
		*hash = XXH3_64bits(buf, len);
	free(buf);
	return rc;
}

/* Inserts the N rows V (LEN bytes) as one merged row. */
static int insert_merged(struct store_tenant *t, struct pending **v,
			 size_t n, uint64_t len)
{
	struct sub_batch *subs = malloc(n * sizeof(*subs));
	unsigned char *blob = malloc(SUBS_BLOB_MAX(n));
	struct store_batch row = {
		.first_version = v[0]->b.first_version,
		.offset = v[0]->b.offset,
		.length = len,
		.time_ns = v[n - 1]->b.time_ns,
	};
	int rc = subs && blob ? 0 : -ENOMEM;

	if (!rc)
		rc = hash_range(t, v[0]->seg, row.offset, len, &row.hash);
	for (size_t i = 0; !rc && i < n; i++)
		subs[i] = (struct sub_batch){
			.count = v[i]->b.count,
			.length = v[i]->b.length,
			.time_ns = v[i]->b.time_ns,
		};
	if (!rc)
		rc = store_index_batch_insert(t, v[0]->stream, &row, blob,
					      store_subs_encode(subs, n, blob));
	free(subs);
	free(blob);
	return rc;
}

static bool pending_sorted(struct pending *const *v, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (pending_cmp(&v[i - 1], &v[i]) > 0)
			return false;
	return true;
}

/* Inserts the pending rows, merging consecutive small batches. */
static int insert_pending(struct store_tenant *t)
{
	struct pending **v = malloc(t->npending * sizeof(*v));
	int rc = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < t->npending; i++)
		v[i] = &t->pending[i];
	/* The rows of one stream come in order: most flushes need no sort. */
	if (!pending_sorted(v, t->npending))
		qsort(v, t->npending, sizeof(*v), pending_cmp);
	for (size_t i = 0, j; !rc && i < t->npending; i = j) {
		uint64_t len = v[i]->b.length;

		for (j = i + 1; j < t->npending &&
				mergeable(v[j - 1], v[j], j - i, len); j++)
			len += v[j]->b.length;
		if (j - i > 1 && !insert_merged(t, v + i, j - i, len))
			continue;
		/* one batch, or the merge failed: a row each */
		for (size_t k = i; !rc && k < j; k++)
			rc = store_index_batch_insert(t, v[k]->stream, &v[k]->b,
						      NULL, 0);
	}
	free(v);
	return rc;
}

/* Writes the pending rows, and the rows of the streams they changed, in
 * the caller's transaction. */
int store_journal_flush_in(struct store_tenant *t)
{
	int rc;

	STORE_ASSERT_WRLOCKED(t);
	rc = t->npending ? insert_pending(t) : 0;
	for (size_t i = 0; !rc && i < t->npending; i++) {
		struct stream *s;

		/* consecutive rows of one stream need one look */
		if (i && t->pending[i].stream == t->pending[i - 1].stream)
			continue;
		s = store_stream_find(t, t->pending[i].stream);
		if (s && s->row_dirty) {
			rc = store_journal_stream_update(t, s);
			s->row_dirty = false;
		}
	}
	for (size_t i = 0; !rc && i < t->nremovals; i++)
		rc = store_index_stream_delete(t, t->removals[i]);
	return rc;
}

void store_journal_flushed(struct store_tenant *t, bool committed)
{
	if (!t->npending && !t->nremovals)
		return;
	if (!committed) {
		/* rows stay pending (and in the journal): a later flush or
		 * the next open's replay writes them */
		for (size_t i = 0; i < t->npending; i++) {
			uint64_t id = t->pending[i].stream;
			struct stream *s = store_stream_find(t, id);

			if (s)
				s->row_dirty = true;
		}
		return;
	}
	/* Start over at 0; the records left behind are in the index now. */
	t->npending = t->nremovals = 0;
	t->jlen = 0;
}

int store_journal_begin(struct store_tenant *t)
{
	int rc = store_journal_flush(t);

	return rc ? rc : store_index_begin(t);
}

int store_journal_stream_update(struct store_tenant *t, const struct stream *s)
{
	/* Outside a transaction, pending batch rows go first: the stream
	 * row must never get ahead of its batches in the index. */
	if (t->npending + t->nremovals && sqlite3_get_autocommit(t->db)) {
		int rc = store_journal_flush(t);

		if (rc)
			return rc;
	}
	return store_index_stream_update(t, s);
}

int store_journal_flush(struct store_tenant *t)
{
	int rc;

	if (!t->npending && !t->nremovals)
		return 0;
	rc = store_index_begin(t);
	if (!rc)
		rc = store_journal_flush_in(t);
	if (!rc)
		rc = store_index_commit(t);
	else
		store_index_rollback(t);
	store_journal_flushed(t, !rc);
	return rc;
}

/* ---- reading it back ---- */

static bool jrec_valid(const struct jrec *r)
{
	return r->magic == JOURNAL_MAGIC &&
	       ((r->count && r->length) || r->flags == JREC_REMOVE) &&
	       r->check == XXH3_64bits(r, offsetof(struct jrec, check));
}

int store_journal_read(int fd, struct jrec **out, size_t *n)
{
	struct jrec *recs;
	struct stat sb;
	size_t max, i;
	ssize_t got;

	*out = NULL;
	*n = 0;
	if (fstat(fd, &sb) < 0)
		return -errno;
	max = (size_t)sb.st_size / sizeof(*recs);
	if (!max)
		return 0;
	recs = malloc(max * sizeof(*recs));
	if (!recs)
		return -ENOMEM;
	got = pread(fd, recs, max * sizeof(*recs), 0);
	if (got != (ssize_t)(max * sizeof(*recs))) {
		free(recs);
		return got < 0 ? -errno : -EIO;
	}
	/* records after a torn or foreign one cannot be trusted */
	for (i = 0; i < max && jrec_valid(&recs[i]); i++)
		;
	*out = recs;
	*n = i;
	return 0;
}

/* ---- replay at open ---- */

/* Forgets stream S, which a removal record names: its rows go from the
 * index (in the caller's transaction) and it goes from memory; recovery
 * then removes any file of it left, which no segment names any more. */
static int replay_remove(struct store_tenant *t, struct stream *s)
{
	int rc = store_index_stream_delete(t, s->id);

	if (rc)
		return rc;
	store_stream_detach(t, s);
	store_stream_free(t, s);
	return 0;
}

/* Applies record R if it continues its stream where the index ends.
 * Inside the caller's transaction. */
static int replay_one(struct store_tenant *t, const struct jrec *r)
{
	struct stream *s = store_stream_find(t, r->stream), *owner;
	struct seg *g;
	int rc;

	if (s && r->flags == JREC_REMOVE)
		return replay_remove(t, s);
	if (!s || r->first_version <= s->version)
		return 0;	/* removed since, or already in the index */
	/* the active segment, or one closed after the record was written */
	g = store_seg_find(t, r->seg, &owner);
	if (r->first_version != s->version + 1 || r->offset != s->size ||
	    !g || owner != s || g->state != STORE_SEG_ACTIVE ||
	    r->offset < g->offset)
		return 0;	/* a gap: recovery keeps the prefix before it */
	rc = store_index_batch_insert(t, s->id, &(struct store_batch){
		.first_version = r->first_version,
		.count = r->count,
		.offset = r->offset,
		.length = r->length,
		.time_ns = r->time_ns,
		.hash = r->hash,
	}, NULL, 0);
	if (rc)
		return rc;
	s->version += r->count;
	s->size += r->length;
	s->last_ns = r->time_ns;
	s->mtime = s->ctime = store_ts(r->time_ns);
	if ((r->flags & JREC_HAS_IDS) && !g->has_ids) {
		g->has_ids = true;
		rc = store_index_segment_update(t, g);
	}
	return rc ? rc : store_journal_stream_update(t, s);
}

int store_journal_replay(struct store_tenant *t)
{
	struct jrec *recs;
	size_t n;
	int rc = store_journal_read(t->jfd, &recs, &n);

	if (!rc && n)
		rc = store_index_begin(t);
	for (size_t i = 0; !rc && i < n; i++)
		rc = replay_one(t, &recs[i]);
	if (!rc && n)
		rc = store_index_commit(t);
	else if (n)
		store_index_rollback(t);
	free(recs);
	/* An index held in memory keeps the records: they are not on disk. */
	if (rc || t->index_in_memory)
		return rc;
	if (ftruncate(t->jfd, 0) < 0)
		return -errno;
	/* at once, with the room just freed: recovery may take the rest */
	if (!t->st->cfg.read_only)
		(void)store_journal_prepare(t);
	return 0;
}

int store_journal_prepare(struct store_tenant *t)
{
	struct stat sb;
	int rc;

	if (fstat(t->jfd, &sb) < 0)
		return -errno;
	/* only ever grown by posix_fallocate(3): its size is allocated */
	t->jroom = (size_t)sb.st_size < JOURNAL_CAP ? (size_t)sb.st_size
						     : JOURNAL_CAP;
	if (t->jroom >= REMOVE_ROOM)
		return 0;
	rc = posix_fallocate(t->jfd, 0, (off_t)REMOVE_ROOM);
	if (!rc)
		t->jroom = REMOVE_ROOM;
	return -rc;
}
