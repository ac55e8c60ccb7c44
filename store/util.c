/* Small helpers shared by store/: time, logging, error mapping, names,
 * and those of store_util.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "store_int.h"

int64_t store_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return store_ns(ts);
}

int64_t store_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return store_ns(ts);
}

struct timespec store_ts(int64_t ns)
{
	struct timespec ts = {
		.tv_sec = ns / 1000000000,
		.tv_nsec = ns % 1000000000,
	};

	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

int64_t store_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Set once, before any thread starts (store_log_set_sink()). */
static store_log_fn log_sink;

void store_log_set_sink(store_log_fn sink)
{
	log_sink = sink;
}

void store_log(int prio, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_sink)
		log_sink(prio, line);
	else
		fprintf(stderr, "streamfs: %s\n", line);
}

/* The one mapping from SQLite result codes to errno; logs the original. */
int store_errno_from_sqlite(sqlite3 *db, int rc, const char *what)
{
	int err;

	switch (rc & 0xff) {
	case SQLITE_FULL:
		err = ENOSPC;
		break;
	case SQLITE_NOMEM:
		err = ENOMEM;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		err = EBUSY;
		break;
	case SQLITE_READONLY:
		err = EROFS;
		break;
	case SQLITE_CONSTRAINT:
		err = EEXIST;
		break;
	case SQLITE_CANTOPEN:
		err = ENOENT;
		break;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		err = EACCES;
		break;
	case SQLITE_IOERR:
		/* a full disk also fails growing the -shm file, as an I/O error */
		err = db && sqlite3_system_errno(db) == ENOSPC ? ENOSPC : EIO;
		break;
	default:
		err = EIO;
		break;
	}
	if (err != EEXIST)
		store_log(LOG_ERR, "index: %s: %s (sqlite %d)", what,
			  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
	return -err;
}

int store_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)	/* no progress: never spin on it */
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* pread() at OFF, or read() at the file position when OFF is -1. */
static int read_all(int fd, char *p, size_t len, off_t off)
{
	while (len) {
		ssize_t n = off < 0 ? read(fd, p, len) : pread(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return 0;
}

int store_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	return read_all(fd, buf, len, (off_t)off);
}

int store_read_all(int fd, void *buf, size_t len)
{
	return read_all(fd, buf, len, -1);
}

#define FILE_CHUNK (1u << 20)

int store_file_chunks(int fd, uint64_t len,
		      int (*fn)(void *arg, const void *p, size_t n),
		      void *arg)
{
	char *buf = malloc(FILE_CHUNK);
	uint64_t off = 0;
	int rc = buf ? 0 : -ENOMEM;

	while (!rc && off < len) {
		size_t want = len - off < FILE_CHUNK ? (size_t)(len - off)
						     : FILE_CHUNK;
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		rc = fn(arg, buf, (size_t)n);
		off += (uint64_t)n;
	}
	free(buf);
	return rc;
}

static int hash_chunk(void *arg, const void *p, size_t n)
{
	return XXH3_64bits_update(arg, p, n) == XXH_OK ? 0 : -EINVAL;
}

int store_file_hash(int fd, uint64_t len, struct XXH3_state_s *state)
{
	return store_file_chunks(fd, len, hash_chunk, state);
}

int store_file_checksum(int fd, uint64_t len, uint64_t *sum)
{
	XXH3_state_t *state = XXH3_createState();
	int rc = state ? 0 : -ENOMEM;

	if (!rc) {
		XXH3_64bits_reset(state);
		rc = store_file_hash(fd, len, state);
	}
	if (!rc)
		*sum = XXH3_64bits_digest(state);
	XXH3_freeState(state);
	return rc;
}

bool store_name_valid(const char *name)
{
	size_t len = strnlen(name, STORE_NAME_MAX + 1);

	if (len == 0 || len > STORE_NAME_MAX)
		return false;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	return !strpbrk(name, "/@");
}
