/*
 * Views: S@SEL, looked up beside a stream S, is a read-only window on S
 * that starts where the selector SEL points (README.md and streamfs(1),
 * "Views") and ends where S ends, so it grows with S.  With ",follow", a
 * read at its end waits for the next commit (follow.c) instead of
 * returning end of file.
 *
 * A view node keeps the selector; an open view keeps the stream offset of
 * its first byte (its base), fixed once known.  This file parses selectors
 * and finds bases; it calls only the store.
 *
 * With ",snap" (S@SEL,snap), a view starts with a snapshot: the newest one
 * at a version before the first event SEL selects, chosen at lookup, then
 * the events after that snapshot's version (base is their offset).  The
 * choice is part of the node's name (fs_view_snap_name()): while it
 * holds, the node's bytes only grow at the end, so it may use the page
 * cache as a stream does (file.c, follow.c).  View
 * offset O is byte O of the blob while O < snap_len, else stream offset
 * base + O - snap_len.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_int.h"

/* Parses "2026-11-22T10:00:00Z" with optional fraction.  -EINVAL if bad. */
static int parse_time(const char *s, int64_t *ns)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	int64_t frac = 0, scale = 100000000;

	if (!p)
		return -EINVAL;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			frac += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
		return -EINVAL;
	time_t secs = timegm(&tm);
	if (secs == (time_t)-1)
		return -EINVAL;
	if (secs >= INT64_MAX / 1000000000 - 1)
		secs = INT64_MAX / 1000000000 - 1;	/* far future: past the end */
	*ns = (int64_t)secs * 1000000000 + frac;
	return 0;
}

static int parse_count(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '1' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Takes the words after the selector ("follow", "snap"; any order, each
 * at most once) off the end of BUF (LEN bytes) into SEL.  Returns the
 * selector's length. */
static ssize_t take_words(char *buf, size_t len, struct fs_sel *sel)
{
	char *comma;

	buf[len] = '\0';
	while ((comma = strrchr(buf, ','))) {
		const char *word = comma + 1;

		if (strcmp(word, "follow") == 0 && !sel->follow)
			sel->follow = true;
		else if (strcmp(word, "snap") == 0 && !sel->snap)
			sel->snap = true;
		else
			return -EINVAL;
		*comma = '\0';
	}
	return (ssize_t)strlen(buf);
}

int fs_sel_parse(const char *s, struct fs_sel *sel)
{
	char buf[128];
	size_t len = strlen(s);
	ssize_t slen;

	memset(sel, 0, sizeof(*sel));
	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	slen = take_words(buf, len, sel);
	if (slen <= 0)
		return -EINVAL;
	if (strcmp(buf, "end") == 0) {
		sel->kind = SEL_END;
		return 0;
	}
	if (buf[0] == '-') {
		sel->kind = SEL_LAST;
		return parse_count(buf + 1, &sel->n);
	}
	if (strchr(buf, 'T')) {
		sel->kind = SEL_TIME;
		return parse_time(buf, &sel->time_ns);
	}
	sel->kind = SEL_VERSION;
	return parse_count(buf, &sel->n);
}

int fs_snap_name_parse(const char *s, uint64_t *version)
{
	static const char prefix[] = "snap=";

	if (strncmp(s, prefix, sizeof(prefix) - 1) != 0)
		return -EINVAL;
	return parse_count(s + sizeof(prefix) - 1, version);
}

/* Stream offset where view N starts now, or FS_BASE_PENDING when its
 * selector points past the end: resolving it to the end offset now would
 * let events committed before version N (or before TIME) in.  A: the
 * stream's attributes. */
static int view_base(const struct fs_node *n, const struct store_attr *a,
		     uint64_t *base)
{
	uint64_t v;
	int rc;

	switch (n->sel.kind) {
	case SEL_END:
		*base = a->size;
		return 0;
	case SEL_LAST:
		return store_offset_of_last(n->t, n->id, n->sel.n, base);
	case SEL_VERSION:
		if (n->sel.n > a->version + 1) {
			*base = FS_BASE_PENDING;
			return 0;
		}
		return store_offset_of_version(n->t, n->id, n->sel.n, base);
	case SEL_TIME:
		rc = store_version_at_time(n->t, n->id, n->sel.time_ns, &v);
		if (rc)
			return rc;
		if (v > a->version) {	/* no event at or after TIME yet */
			*base = FS_BASE_PENDING;
			return 0;
		}
		return store_offset_of_version(n->t, n->id, v, base);
	}
	return -EINVAL;
}

/* The version of the first event view N selects now (A: its stream's
 * attributes): past the end, version + 1. */
static int first_version(const struct fs_node *n, const struct store_attr *a,
			 uint64_t *first)
{
	switch (n->sel.kind) {
	case SEL_END:
		*first = a->version + 1;
		return 0;
	case SEL_LAST:
		*first = n->sel.n >= a->version ? 1 : a->version - n->sel.n + 1;
		return 0;
	case SEL_VERSION:
		*first = n->sel.n;
		return 0;
	case SEL_TIME:
		return store_version_at_time(n->t, n->id, n->sel.time_ns, first);
	}
	return -EINVAL;
}

/* Snapshot views: the snapshot a view of SEL on stream ID starts with now
 * (OUT SNAP; version 0 and length 0 when there is none) and the stream
 * offset of the first event after it (OUT BASE). */
static int snap_view_start(struct fs_node *n, const struct store_attr *a,
			   struct store_snapshot *snap, uint64_t *base)
{
	uint64_t first;
	int rc = first_version(n, a, &first);

	if (rc)
		return rc;
	rc = store_snapshot_start(n->t, n->id, first, snap, base);
	if (rc == -ENOENT) {
		memset(snap, 0, sizeof(*snap));
		*base = 0;
		return 0;
	}
	return rc;
}

int fs_view_snap_name(struct store_tenant *t, uint64_t id, const char *text,
		      struct fs_sel *sel, char *buf, size_t len)
{
	struct fs_node probe = { .kind = FS_VIEW, .t = t, .id = id, .sel = *sel };
	struct store_snapshot snap;
	struct store_attr a;
	uint64_t base;
	int rc = store_stream_stat(t, id, &a);

	if (!rc)
		rc = snap_view_start(&probe, &a, &snap, &base);
	if (rc)
		return rc;
	sel->snap_version = snap.version;
	sel->snap_len = snap.length;
	sel->snap_sum = snap.checksum;
	sel->snap_base = base;
	if ((size_t)snprintf(buf, len, "%s#%" PRIu64 "-%016" PRIx64, text,
			     snap.version, snap.checksum) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int fs_view_base(struct fs_node *n, uint64_t *base, uint64_t *size)
{
	struct store_attr a;
	int rc = store_stream_stat(n->t, n->id, &a);

	if (rc)
		return rc;
	if (size)
		*size = a.size;
	return view_base(n, &a, base);
}

int fs_view_stat(struct fs_node *n, struct store_attr *a)
{
	uint64_t base;
	int rc = store_stream_stat(n->t, n->id, a);

	if (rc)
		return rc;
	if (n->sel.snap) {
		/* The snapshot chosen at lookup, then the events after it. */
		a->size = n->sel.snap_len + (a->size - n->sel.snap_base);
		return 0;
	}
	rc = view_base(n, a, &base);
	if (rc)
		return rc;
	/* Pending (FS_BASE_PENDING): nothing yet. */
	a->size = a->size > base ? a->size - base : 0;
	return 0;
}

int fs_view_open_snap(struct fs_node *n, struct fs_file *fh)
{
	int rc = 0;

	if (n->sel.snap_version) {
		/* -ENOENT when removed, or removed and stored again, since
		 * the lookup: this node's bytes are gone. */
		fh->snap_row = (struct store_snapshot){
			.stream = n->id, .version = n->sel.snap_version,
			.checksum = n->sel.snap_sum };
		rc = store_snapshot_open(n->t, &fh->snap_row, &fh->snap_fd);
	}
	if (rc)
		return rc;
	fh->snap_len = n->sel.snap_len;
	atomic_store(&fh->base, n->sel.snap_base);
	return 0;
}

int fs_file_base(struct fs_file *fh, uint64_t *base, uint64_t *size)
{
	uint64_t b = atomic_load(&fh->base);
	int rc;

	if (size)
		*size = 0;
	if (b != FS_BASE_PENDING) {
		*base = b;
		return 0;
	}
	rc = fs_view_base(fh->node, &b, size);
	if (rc)
		return rc;
	/* Once known it never changes: racing resolvers store the same. */
	if (b != FS_BASE_PENDING)
		atomic_store(&fh->base, b);
	*base = b;
	return 0;
}

uint64_t fs_file_stream_off(const struct fs_file *fh, uint64_t base,
			    uint64_t off)
{
	return off < fh->snap_len ? base : base + (off - fh->snap_len);
}

/* Checks FH's blob once, before its bytes are first served: a blob never
 * changes, and warm reads come from the page cache without asking. */
static int fs_file_snap_check(struct fs_file *fh)
{
	int rc;

	if (atomic_load(&fh->snap_checked))
		return 0;
	rc = store_snapshot_verify(fh->node->t, &fh->snap_row, fh->snap_fd);
	if (!rc)
		atomic_store(&fh->snap_checked, true);
	return rc;
}

ssize_t fs_view_read(struct fs_file *fh, uint64_t base, char *buf, size_t size,
		     uint64_t off)
{
	struct fs_node *n = fh->node;
	size_t done = 0;
	ssize_t got;

	if (off < fh->snap_len) {
		size_t want = fh->snap_len - off < size ? (size_t)(fh->snap_len - off)
							: size;
		int rc = fs_file_snap_check(fh);

		if (!rc)
			rc = store_pread_all(fh->snap_fd, buf, want, off);

		if (rc)
			return rc;
		done = want;
	}
	while (done < size) {
		got = store_read(n->t, n->id, buf + done, size - done,
				 fs_file_stream_off(fh, base, off + done));
		if (got == -ENOENT)
			break;	/* removed: end of file */
		if (got < 0)
			return got;	/* never a short count before the end */
		if (got == 0)
			break;
		done += (size_t)got;
	}
	return (ssize_t)done;
}
