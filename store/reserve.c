/*
 * The reserve: a file of STORE_RESERVE_BYTES under the data directory,
 * allocated while the disk has room, so that a disk that fills up later
 * still has room for what recovery writes to an index after a crash.
 * store.c releases it for that recovery and takes back at once whatever
 * recovery left free, so that appends find the disk as full as before;
 * the sealer tops it up once the disk has its size free besides.  It
 * holds no data: a missing, short or half-made one is only less reserve.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store_int.h"

/* Allocated in steps, smaller ones once the disk is nearly full: a file
 * system may undo a whole fallocate(2) that failed (tmpfs does), and a
 * short reserve is better than none. */
#define RESERVE_STEP (256u << 10)
#define RESERVE_STEP_MIN (4u << 10)

/* Only ever grown by posix_fallocate(3), from 0 on: its size is what it
 * holds (st_blocks would count the file system's own blocks too). */
static uint64_t reserve_size(const struct store *st)
{
	struct stat sb;

	if (fstatat(st->dirfd, STORE_RESERVE_FILE, &sb, 0) < 0)
		return 0;
	return (uint64_t)sb.st_size;
}

static uint64_t disk_free(const struct store *st)
{
	struct statvfs sv;

	if (fstatvfs(st->dirfd, &sv) < 0)
		return 0;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Allocates FD's STORE_RESERVE_BYTES, as much of it as there is room for;
 * 0 or a positive errno. */
static int allocate(int fd)
{
	uint64_t off = 0, step = RESERVE_STEP;
	int rc = 0;

	while (off < STORE_RESERVE_BYTES) {
		rc = posix_fallocate(fd, (off_t)off, (off_t)step);
		if (!rc)
			off += step;
		else if (rc == ENOSPC && step > RESERVE_STEP_MIN)
			step /= 4;
		else
			break;
	}
	return rc;
}

void store_reserve_keep(struct store *st, bool grab)
{
	uint64_t have = reserve_size(st);
	int fd, rc = 0;

	if (st->cfg.read_only || have >= STORE_RESERVE_BYTES)
		return;
	if (!grab && disk_free(st) < STORE_RESERVE_BYTES - have +
				     STORE_RESERVE_BYTES)
		return;
	fd = openat(st->dirfd, STORE_RESERVE_FILE,
		    O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		store_log(LOG_WARNING, "reserve: %s", strerror(errno));
		return;
	}
	rc = allocate(fd);
	if (rc && rc != ENOSPC)
		store_log(LOG_WARNING, "reserve: %s", strerror(rc));
	close(fd);
}

bool store_reserve_release(struct store *st)
{
	bool had = reserve_size(st) > 0;

	return !unlinkat(st->dirfd, STORE_RESERVE_FILE, 0) && had;
}
