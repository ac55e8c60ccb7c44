/*
 * backend_file.c: file:///DIR, objects as files under DIR.
 *
 * put writes a temporary file beside the target, fsyncs it, renames it into
 * place and fsyncs the directory.  put_if_absent link()s the temporary
 * file to the target, which fails with EEXIST when another host won: link
 * is atomic on local filesystems and on NFS.  Temporary files start with
 * '.', which keys never do, so listings skip them.
 *
 * With options' file_layout (sync's writers and analysis hosts), the root
 * must be recognized as the remote before each call (root_check()): a NAS
 * mount point whose share is not mounted is an empty directory of its
 * parent's filesystem, and nothing may go there; a root that held the
 * layout once and no longer does is such a mount point too.  A root that
 * is not the remote is unreachable (-EAGAIN), never an error at open nor
 * "no such object".  backend.h says the rule.  DIR going away under a put
 * (unmounted meanwhile) is the same -EAGAIN.
 *
 * Compare-and-swap (put_if_match, del_if_match) holds an flock(2) on a lock
 * file beside the key (".lock.NAME", removed after) while it compares the
 * key's tag (its inode, size and mtime in ns) and renames the new object
 * into place or unlinks it.  The key never goes missing on the way (rename
 * replaces it in one step), so a put_if_absent racing with it fails as it
 * should.  flock is atomic between processes of one host and, on Linux,
 * over NFS (the client maps it to a POSIX lock).
 */
#include <sys/file.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "remote_int.h"

/* Used by one thread at a time (backend.h): no lock. */
struct backend_file {
	struct backend base;
	char *root;		/* absolute directory, no trailing '/' */
	char *layout;		/* ROOT/file_layout, or NULL: no checks */
	bool used;		/* the root held the layout (file_used, or
				 * seen since): required from then on */
	bool claim;		/* file_claim: may make the remote */
	const char *absent;	/* why the root was last found not to be the
				 * remote (logged), or NULL */
};

static struct backend_file *to_file(struct backend *b)
{
	return (struct backend_file *)b;
}

static void file_close(struct backend *b);

/* ---- is the root the remote? ---- */

/* PATH's parent directory, malloc'd (NULL: no memory). */
static char *parent_of(const char *path)
{
	char *copy = strdup(path), *out;

	if (!copy)
		return NULL;
	out = strdup(dirname(copy));
	free(copy);
	return out;
}

/* Whether directory PATH is a mount point: on another device than its
 * parent (or the root of all). */
static bool is_mount_point(const char *path)
{
	char *parent = parent_of(path);
	struct stat a, b;
	bool yes;

	yes = parent && stat(path, &a) == 0 && stat(parent, &b) == 0 &&
	      S_ISDIR(a.st_mode) &&
	      (a.st_dev != b.st_dev || a.st_ino == b.st_ino);
	free(parent);
	return yes;
}

/* Whether DIR is an empty directory of its parent's filesystem: what a
 * mount point looks like while nothing is mounted on it. */
static bool is_bare(const char *dir)
{
	struct dirent *de;
	bool empty = true;
	DIR *d;

	if (is_mount_point(dir) || !(d = opendir(dir)))
		return false;
	while (empty && (de = readdir(d)))
		empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
	closedir(d);
	return empty;
}

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Makes DIR unless it is there: 0 or -errno. */
static int make_dir(const char *dir)
{
	return mkdir(dir, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

/* Whether missing directory PATH may be made a new remote (F claims
 * it): its parent is there and is not what an unmounted mount point
 * looks like. */
static bool may_make(const struct backend_file *f, const char *path)
{
	char *parent = parent_of(path);
	bool yes = f->claim && parent && is_dir(parent) && !is_bare(parent);

	free(parent);
	return yes;
}

/* What F's root is now: the remote (0), a share or new remote without the
 * layout yet (1: a mount point, missing in one, or missing where F may
 * make it), or not the remote (-EAGAIN, *WHY saying why). */
static int root_state(struct backend_file *f, const char **why)
{
	char *parent;
	int rc;

	if (is_dir(f->layout)) {
		f->used = true;
		return 0;
	}
	if (f->used) {
		*why = "no longer holds its layout (a share not mounted?)";
		return -EAGAIN;
	}
	if (is_dir(f->root)) {
		if (is_mount_point(f->root))
			return 1;
		*why = is_bare(f->root) ?
			"is an empty directory of its parent's filesystem "
			"(a mount point whose share is not mounted?)" :
			"holds no layout and is no mount point";
		return -EAGAIN;
	}
	parent = parent_of(f->root);
	rc = (parent && is_mount_point(parent)) || may_make(f, f->root) ?
		1 : -EAGAIN;
	*why = "is missing";
	free(parent);
	return rc;
}

/* Before each call (WRITE: a put): 0 when the root is the remote (a
 * share gets its layout directory first, for a put), else -EAGAIN,
 * logged once for each new reason. */
static int root_check(struct backend_file *f, bool write)
{
	const char *why = NULL;
	int rc;

	if (!f->layout)
		return 0;
	rc = root_state(f, &why);
	if (rc == 1) {
		rc = write ? make_dir(f->root) : 0;
		if (!rc && write)
			rc = make_dir(f->layout);
		if (rc == -ENOENT)
			rc = -EAGAIN;	/* unmounted meanwhile */
	}
	if (rc != -EAGAIN || !why) {
		if (f->absent && !rc)
			remote_log(LOG_NOTICE, "file remote %s is there", f->root);
		if (!rc)
			f->absent = NULL;
		return rc;
	}
	if (f->absent != why)
		remote_log(LOG_WARNING, "file remote %s %s: nothing goes there; "
			   "waiting for it (mount the share, or mkdir %s to "
			   "make a plain directory the remote)", f->root, why,
			   f->layout);
	f->absent = why;
	return -EAGAIN;
}

/* At open with file_claim, for a remote not used yet: makes the remote
 * where the URL points unless that looks like a mount point whose share
 * is not mounted: the root when root_state() may make it, the layout in a
 * root just made or holding other things.  What is not made now is
 * waited for by root_check(). */
static int claim_at_open(struct backend_file *f)
{
	bool made = false;
	int rc = 0;

	if (f->used || is_dir(f->layout) || is_mount_point(f->root))
		return 0;
	if (!is_dir(f->root)) {
		if (!may_make(f, f->root))
			return 0;
		made = make_dir(f->root) == 0;
	}
	if (made || (is_dir(f->root) && !is_bare(f->root)))
		rc = make_dir(f->layout);
	return rc == -ENOENT ? 0 : rc;
}

static int file_open(const char *url, const struct backend_options *opts,
		     struct backend **out)
{
	struct backend_file *f;
	const char *path = url + strlen("file://");
	struct stat st;
	size_t len;

	if (path[0] != '/')
		return -EINVAL;	/* file://host/... is not supported */
	f = calloc(1, sizeof(*f));
	if (!f || !(f->root = strdup(path))) {
		free(f);
		return -ENOMEM;
	}
	f->base.ops = &backend_file_ops;
	len = strlen(f->root);
	while (len > 1 && f->root[len - 1] == '/')
		f->root[--len] = '\0';
	if (remote_urldecode(f->root) < 0) {
		free(f->root);
		free(f);
		return -EINVAL;
	}
	if (opts->file_layout) {
		int rc = -ENOMEM;

		if (asprintf(&f->layout, "%s/%s", f->root,
			     opts->file_layout) < 0)
			f->layout = NULL;
		else
			rc = 0;
		f->used = opts->file_used;
		f->claim = opts->file_claim;
		if (!rc && f->claim)
			rc = claim_at_open(f);
		if (rc) {
			file_close(&f->base);
			return rc;
		}
		*out = &f->base;
		return 0;
	}
	if (stat(f->root, &st) < 0) {
		int rc = -errno;

		/* Create the last level only: a missing mount stays missing. */
		if (rc == -ENOENT && mkdir(f->root, 0755) == 0)
			rc = 0;
		if (rc) {
			remote_log(LOG_ERR, "file backend %s: %s", f->root, strerror(-rc));
			file_close(&f->base);
			return rc;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		file_close(&f->base);
		return -ENOTDIR;
	}
	*out = &f->base;
	return 0;
}

static void file_close(struct backend *b)
{
	struct backend_file *f = to_file(b);

	if (!f)
		return;
	free(f->layout);
	free(f->root);
	free(f);
}

/* KEY's path into *OUT (malloc'd), once the root is the remote
 * (root_check(); WRITE: for a put). */
static int file_path(struct backend_file *f, const char *key, bool write,
		     char **out)
{
	int rc;

	if (!backend_key_valid(key))
		return -EINVAL;
	rc = root_check(f, write);
	if (rc)
		return rc;
	if (asprintf(out, "%s/%s", f->root, key) < 0)
		return -ENOMEM;
	return 0;
}

/* Creates the directories above PATH.  ENOENT can only mean the root
 * itself went away since root_check() (a NAS unmounted): that is an
 * unreachable remote (-EAGAIN), not "no such object", which callers take
 * for a stream removed meanwhile. */
static int mkdir_parents(char *path, size_t root_len)
{
	for (char *p = path + root_len + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			int rc = errno == ENOENT ? -EAGAIN : -errno;

			*p = '/';
			return rc;
		}
		*p = '/';
	}
	return 0;
}

static int fsync_parent(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, rc = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rc;
}

static int copy_body(int fd, const struct backend_body *body)
{
	char buf[65536];
	uint64_t off = 0;

	if (body->buf) {
		const char *p = body->buf;

		while (off < body->len) {
			ssize_t n = write(fd, p + off, body->len - off);

			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			off += (uint64_t)n;
		}
		return 0;
	}
	while (off < body->len) {
		size_t want = body->len - off < sizeof(buf) ?
			(size_t)(body->len - off) : sizeof(buf);
		ssize_t n = pread(body->fd, buf, want, (off_t)off), w;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		for (ssize_t done = 0; done < n; done += w) {
			w = write(fd, buf + done, (size_t)(n - done));
			if (w < 0) {
				if (errno == EINTR) {
					w = 0;
					continue;
				}
				return -errno;
			}
		}
		off += (uint64_t)n;
	}
	return 0;
}

/* Writes BODY to a fresh temporary file beside PATH; *tmp (OUT) names it. */
static int write_temp(struct backend_file *f, char *path,
		      const struct backend_body *body, char **tmp)
{
	char *slash;
	int fd, rc;

	rc = mkdir_parents(path, strlen(f->root));
	if (rc)
		return rc;
	slash = strrchr(path, '/');
	if (asprintf(tmp, "%.*s/.tmp.%s.XXXXXX", (int)(slash - path), path,
		     slash + 1) < 0)
		return -ENOMEM;
	fd = mkostemp(*tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		free(*tmp);
		*tmp = NULL;
		return rc;
	}
	rc = copy_body(fd, body);
	if (!rc && fchmod(fd, 0644) < 0)
		rc = -errno;
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (rc) {
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
	}
	return rc;
}

/* Writes BODY to a temporary beside KEY's path, then puts it in place:
 * rename(2) replaces an existing KEY, link(2) refuses it (-EEXIST). */
static int put_file(struct backend *b, const char *key,
		    const struct backend_body *body, bool if_absent)
{
	struct backend_file *f = to_file(b);
	char *path = NULL, *tmp = NULL;
	int rc;

	rc = file_path(f, key, true, &path);
	if (!rc)
		rc = write_temp(f, path, body, &tmp);
	if (!rc && if_absent) {
		if (link(tmp, path) < 0)
			rc = -errno;
		unlink(tmp);
	} else if (!rc && rename(tmp, path) < 0) {
		rc = -errno;
		unlink(tmp);
	}
	if (!rc)
		rc = fsync_parent(path);
	free(tmp);
	free(path);
	return rc;
}

static int file_put(struct backend *b, const char *key,
		    const struct backend_body *body)
{
	return put_file(b, key, body, false);
}

static int file_put_if_absent(struct backend *b, const char *key,
			      const struct backend_body *body)
{
	return put_file(b, key, body, true);
}

static int file_get(struct backend *b, const char *key, uint64_t off,
		    uint64_t len, struct backend_buf *out)
{
	struct backend_file *f = to_file(b);
	char *path = NULL;
	struct stat st;
	uint64_t end;
	int fd, rc;

	rc = file_path(f, key, false, &path);
	if (rc)
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	end = (uint64_t)st.st_size;
	if (len != BACKEND_TO_END && off + len < end)
		end = off + len;
	while (off < end) {
		size_t want = backend_buf_room(out, end - off > (1u << 20) ?
					       (1u << 20) : (size_t)(end - off));
		ssize_t n;

		rc = backend_buf_reserve(out, want);
		if (rc)
			goto out;
		n = pread(fd, out->data + out->len, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;	/* shorter than fstat said: it was replaced */
		}
		out->len += (size_t)n;
		off += (uint64_t)n;
		rc = backend_buf_pass(out);
		if (rc)
			goto out;
	}
	if (!rc)
		rc = backend_buf_terminate(out);
out:
	close(fd);
	return rc;
}

static int file_del(struct backend *b, const char *key)
{
	struct backend_file *f = to_file(b);
	char *path = NULL;
	int rc;

	rc = file_path(f, key, false, &path);
	if (rc)
		return rc;
	if (unlink(path) < 0 && errno != ENOENT)
		rc = -errno;
	free(path);
	return rc;
}

static int file_head(struct backend *b, const char *key,
		     struct backend_stat *st)
{
	struct backend_file *f = to_file(b);
	char *path = NULL;
	struct stat s;
	int rc;

	rc = file_path(f, key, false, &path);
	if (rc)
		return rc;
	if (stat(path, &s) < 0)
		rc = -errno;
	else if (!S_ISREG(s.st_mode))
		rc = -ENOENT;
	else
		*st = (struct backend_stat){ .size = (uint64_t)s.st_size,
					     .mtime = s.st_mtime };
	free(path);
	return rc;
}

/* Adds every regular file below DIR (KEY is its key, "" at the root) whose
 * key starts with PREFIX. */
static int walk(const char *dir, const char *key, const char *prefix,
		struct remote_entries *ev, int depth)
{
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (depth > 64)
		return -ELOOP;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	while ((de = readdir(d))) {
		char *sub = NULL, *subkey = NULL;
		struct stat st;
		size_t kl;

		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0 ||
		    asprintf(&subkey, "%s%s%s", key, *key ? "/" : "",
			     de->d_name) < 0) {
			free(sub);
			rc = -ENOMEM;
			break;
		}
		kl = strlen(subkey);
		if (lstat(sub, &st) < 0) {
			/* removed meanwhile */
		} else if (S_ISDIR(st.st_mode)) {
			/* Descend only where PREFIX can still match. */
			size_t pl = strlen(prefix);

			if (!strncmp(subkey, prefix, kl < pl ? kl : pl))
				rc = walk(sub, subkey, prefix, ev, depth + 1);
		} else if (S_ISREG(st.st_mode) &&
			   !strncmp(subkey, prefix, strlen(prefix))) {
			rc = remote_entries_add(ev, subkey, (uint64_t)st.st_size);
		}
		free(sub);
		free(subkey);
		if (rc)
			break;
	}
	closedir(d);
	return rc;
}

static int file_list(struct backend *b, const char *prefix,
		     backend_list_fn fn, void *arg)
{
	struct backend_file *f = to_file(b);
	struct remote_entries ev = { 0 };
	int rc = root_check(f, false);

	if (!rc)
		rc = walk(f->root, "", prefix ? prefix : "", &ev, 0);
	if (!rc)
		rc = remote_entries_emit(&ev, fn, arg);
	remote_entries_release(&ev);
	return rc;
}

/* KEY's tag from its stat S. */
static void stat_tag(const struct stat *s, char *tag)
{
	snprintf(tag, BACKEND_TAG_MAX, "%llx-%llx-%llx.%09ld",
		 (unsigned long long)s->st_ino, (unsigned long long)s->st_size,
		 (unsigned long long)s->st_mtim.tv_sec, s->st_mtim.tv_nsec);
}

static int file_get_tagged(struct backend *b, const char *key,
			   struct backend_buf *out, char *tag)
{
	struct backend_file *f = to_file(b);
	char *path = NULL;
	struct stat before, after;
	int rc;

	rc = file_path(f, key, false, &path);
	if (rc)
		return rc;
	/* The tag of what was read: stat around the read, again if the
	 * object was replaced meanwhile. */
	for (int tries = 0; tries < 8; tries++) {
		size_t start = out->len;

		if (stat(path, &before) < 0) {
			rc = -errno;
			break;
		}
		rc = file_get(b, key, 0, BACKEND_TO_END, out);
		if (!rc && stat(path, &after) < 0)
			rc = -errno;
		if (rc || (before.st_ino == after.st_ino &&
			   before.st_size == after.st_size &&
			   before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
			   before.st_mtim.tv_nsec == after.st_mtim.tv_nsec)) {
			if (!rc)
				stat_tag(&before, tag);
			break;
		}
		out->len = start;
		rc = -EAGAIN;
	}
	free(path);
	return rc;
}

/* Opens and flock()s the lock file of PATH, named in *LOCK (OUT, the
 * caller frees): an fd, or -errno.  The holder unlinks the file before it
 * lets go (unlock_key()), so a waiter may find its lock on a file that is
 * gone: it then tries again with the new one. */
static int lock_key(struct backend_file *f, char *path, char **lock)
{
	char *slash = strrchr(path, '/');
	struct stat held, named;
	int fd = -1, rc;

	rc = mkdir_parents(path, strlen(f->root));
	if (rc)
		return rc;
	if (asprintf(lock, "%.*s/.lock.%s", (int)(slash - path), path,
		     slash + 1) < 0) {
		*lock = NULL;
		return -ENOMEM;
	}
	for (;;) {
		fd = open(*lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				rc = -errno;
				close(fd);
				return rc;
			}
		if (fstat(fd, &held) == 0 && stat(*lock, &named) == 0 &&
		    held.st_ino == named.st_ino && held.st_dev == named.st_dev)
			return fd;
		close(fd);	/* its holder unlinked it meanwhile */
	}
}

/* Lets go of the lock taken by lock_key(). */
static void unlock_key(int fd, char *lock)
{
	if (fd >= 0) {
		unlink(lock);
		close(fd);	/* drops the flock */
	}
	free(lock);
}

/* With the lock of PATH: 0 when its tag is TAG, -ESTALE or -ENOENT. */
static int tag_matches(const char *path, const char *tag)
{
	char cur[BACKEND_TAG_MAX];
	struct stat s;

	if (stat(path, &s) < 0)
		return -errno;
	stat_tag(&s, cur);
	return strcmp(cur, tag) ? -ESTALE : 0;
}

static int file_put_if_match(struct backend *b, const char *key,
			     const struct backend_body *body, const char *tag,
			     char *new_tag)
{
	struct backend_file *f = to_file(b);
	char *path = NULL, *tmp = NULL, *lockname = NULL;
	struct stat s;
	int lock, rc;

	rc = file_path(f, key, true, &path);
	if (rc)
		return rc;
	lock = lock_key(f, path, &lockname);
	rc = lock < 0 ? lock : tag_matches(path, tag);
	if (!rc)
		rc = write_temp(f, path, body, &tmp);
	if (!rc && rename(tmp, path) < 0) {
		rc = -errno;
		unlink(tmp);
	}
	if (!rc && new_tag)
		rc = stat(path, &s) < 0 ? -errno : (stat_tag(&s, new_tag), 0);
	if (!rc)
		rc = fsync_parent(path);
	unlock_key(lock, lockname);
	free(tmp);
	free(path);
	return rc;
}

static int file_del_if_match(struct backend *b, const char *key,
			     const char *tag)
{
	struct backend_file *f = to_file(b);
	char *path = NULL, *lockname = NULL;
	int lock, rc;

	rc = file_path(f, key, false, &path);
	if (rc)
		return rc;
	lock = lock_key(f, path, &lockname);
	rc = lock < 0 ? lock : tag_matches(path, tag);
	if (!rc && unlink(path) < 0)
		rc = -errno;
	unlock_key(lock, lockname);
	free(path);
	return rc;
}

const struct backend_ops backend_file_ops = {
	.name = "file",
	.caps = BACKEND_CAP_ATOMIC_CREATE | BACKEND_CAP_RANGE | BACKEND_CAP_CAS,
	.open = file_open,
	.close = file_close,
	.put = file_put,
	.get = file_get,
	.del = file_del,
	.head = file_head,
	.list = file_list,
	.put_if_absent = file_put_if_absent,
	.get_tagged = file_get_tagged,
	.put_if_match = file_put_if_match,
	.del_if_match = file_del_if_match,
};
