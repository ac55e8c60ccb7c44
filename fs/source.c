/*
 * source: what SOURCE is, and the lock a mount holds on it.
 *
 * A data directory (a writer's, or an analysis host's cache) is one that
 * holds tenants/ (store/'s TENANTS_DIR; store_open() makes it).  A mount
 * takes one, or an empty directory (which becomes one, said in the log), or
 * with -o create a missing one.  Anything else is refused: a typo in SOURCE
 * must not quietly start an empty store beside the real one.
 *
 * SOURCE/streamfs.lock: a daemon holds an exclusive flock on it for its
 * life and writes "PID\nMOUNTPOINT\n" into it; `streamfs verify` holds a
 * shared one while it reads, so that neither runs while the other does,
 * and each can say who holds it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs_int.h"

#define LOCK_FILE "streamfs.lock"

/* Entries an empty directory may hold: a fresh file system's lost+found,
 * and what a first mount makes before tenants/ (so that a mount racing
 * another's first one is refused by the lock, not called "not empty"). */
static bool ignored_entry(const char *name)
{
	static const char *names[] = { ".", "..", "lost+found", LOCK_FILE,
				       "staging" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* 1 when DIR holds nothing but ignored entries, 0 when it holds more. */
static int dir_is_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int rc = 1;

	if (!d)
		return -errno;
	errno = 0;
	while (rc == 1 && (de = readdir(d)))
		if (!ignored_entry(de->d_name))
			rc = 0;
	if (rc == 1 && errno)
		rc = -errno;
	closedir(d);
	return rc;
}

int fs_source_kind(const char *dir)
{
	struct stat st;
	char *tenants;
	int rc;

	if (stat(dir, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (getxattr(dir, "user.streamfs.status", NULL, 0) >= 0)
		return FS_SOURCE_MOUNT;
	if (asprintf(&tenants, "%s/tenants", dir) < 0)
		return -ENOMEM;
	rc = stat(tenants, &st) == 0 && S_ISDIR(st.st_mode);
	free(tenants);
	if (rc)
		return FS_SOURCE_STORE;
	rc = dir_is_empty(dir);
	if (rc < 0)
		return rc;
	return rc ? FS_SOURCE_EMPTY : FS_SOURCE_OTHER;
}

/* Says why SOURCE, of KIND (fs_source_kind()), is no SOURCE to mount.
 * Returns -errno. */
static int refuse(const char *source, int kind)
{
	switch (kind) {
	case -ENOENT:
		fs_log(LOG_ERR, "%s: no such directory; pass -o "
			"create to make a new data directory there", source);
		return kind;
	case -ENOTDIR:
		fs_log(LOG_ERR, "%s: not a directory (SOURCE is a "
			"data directory)", source);
		return kind;
	case FS_SOURCE_OTHER:
		fs_log(LOG_ERR, "%s is not a streamfs data directory "
			"(it has no tenants/) and is not empty; refusing to start "
			"a new store among other files: give a data directory, "
			"an empty directory, or a new one with -o create",
			source);
		return -ENOTEMPTY;
	case FS_SOURCE_MOUNT:
		fs_log(LOG_ERR, "%s is the root of a streamfs mount; "
			"SOURCE is a data directory (the 'source:' line of "
			"`streamfs status %s`)", source, source);
		return -EINVAL;
	default:
		fs_log(LOG_ERR, "%s: %s", source, strerror(-kind));
		return kind;
	}
}

int fs_source_resolve(struct fs_opts *o)
{
	int kind = fs_source_kind(o->source);
	char *abs;

	if (kind == -ENOENT && o->create) {
		/* its parent must exist, as for mkdir */
		if (mkdir(o->source, 0755) == 0) {
			o->source_new = FS_SOURCE_CREATED;
		} else if (errno != EEXIST) {
			int err = errno;

			fs_log(LOG_ERR, "cannot create %s: %s",
				o->source, strerror(err));
			return -err;
		}
		kind = fs_source_kind(o->source);
	}
	if (kind != FS_SOURCE_STORE && kind != FS_SOURCE_EMPTY)
		return refuse(o->source, kind);
	if (kind == FS_SOURCE_EMPTY && !o->source_new)
		o->source_new = FS_SOURCE_WAS_EMPTY;
	/* Absolute: the daemon changes to /. */
	abs = realpath(o->source, NULL);
	if (!abs) {
		int err = errno;

		fs_log(LOG_ERR, "%s: %s", o->source, strerror(err));
		return -err;
	}
	free(o->source);
	o->source = abs;
	return 0;
}

void fs_source_say_new(const struct fs_opts *o)
{
	const char *what = o->replica ? "cache" : "data";

	if (o->source_new == FS_SOURCE_CREATED)
		fs_log(LOG_NOTICE, "%s: created (-o create); it is a new "
			"%s directory", o->source, what);
	else if (o->source_new == FS_SOURCE_WAS_EMPTY)
		fs_log(LOG_NOTICE, "%s was empty; it is a new %s "
			"directory now", o->source, what);
}

/* ---- the lock ---- */

/* "pid N[, mounted on MNT]" from the lock file FD, or NULL.  Caller frees. */
static char *lock_holder(int fd)
{
	char buf[PATH_MAX + 32], *nl, *out;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long pid;
	int rc;

	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	pid = strtol(buf, &nl, 10);
	if (pid <= 0 || *nl != '\n')
		return NULL;
	/* a daemon killed with SIGKILL left its pid behind */
	if (kill((pid_t)pid, 0) && errno == ESRCH)
		return NULL;
	nl++;
	nl[strcspn(nl, "\n")] = '\0';
	rc = *nl ? asprintf(&out, "pid %ld, mounted on %s", pid, nl) :
		   asprintf(&out, "pid %ld", pid);
	return rc < 0 ? NULL : out;
}

int fs_source_lock(const char *source)
{
	char path[PATH_MAX], *holder;
	int fd, err;

	snprintf(path, sizeof(path), "%s/" LOCK_FILE, source);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = errno;
		fs_log(LOG_ERR, "cannot open %s: %s", path,
			strerror(err));
		return -err;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		fs_source_lock_record(fd, NULL);
		return fd;
	}
	err = errno;
	if (err != EWOULDBLOCK) {
		fs_log(LOG_ERR, "cannot lock %s: %s", path,
			strerror(err));
	} else if ((holder = lock_holder(fd))) {
		fs_log(LOG_ERR, "%s is already mounted by another "
			"streamfs (%s)", source, holder);
		free(holder);
	} else {
		fs_log(LOG_ERR, "%s is in use by another streamfs "
			"(a `streamfs verify`, or a mount starting)", source);
	}
	close(fd);
	return -err;
}

void fs_source_lock_record(int fd, const char *mountpoint)
{
	char *text;
	int len = mountpoint ? asprintf(&text, "%ld\n%s\n", (long)getpid(),
					mountpoint) :
			       asprintf(&text, "%ld\n", (long)getpid());

	if (len < 0)
		return;
	/* written over the old one, then cut: no new block on a full disk */
	if (pwrite(fd, text, (size_t)len, 0) != len || ftruncate(fd, len))
		fs_log(LOG_ERR, "writing %s: %s", LOCK_FILE,
			strerror(errno));
	free(text);
}

void fs_source_unlock(int fd)
{
	if (fd < 0)
		return;
	/* No pid of a daemon that is gone for the next one to show. */
	if (ftruncate(fd, 0)) {
		/* the lock goes with the close all the same */
	}
	close(fd);
}

int fs_source_lock_shared(const char *dir, char **holder)
{
	char *path;
	int fd, err;

	*holder = NULL;
	if (asprintf(&path, "%s/" LOCK_FILE, dir) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	err = errno;
	free(path);
	if (fd < 0)
		return -err;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0)
		return fd;
	err = errno;
	if (err == EWOULDBLOCK)
		*holder = lock_holder(fd);
	close(fd);
	return -err;
}
