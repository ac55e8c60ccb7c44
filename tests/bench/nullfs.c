/*
 * nullfs: the FUSE round-trip floor for tests/bench/run.
 *
 * A libfuse3 low-level filesystem that keeps only names and sizes: writes
 * are accepted and discarded (the file grows), reads serve zeros up to the
 * size.  One flat directory, files only.  It makes the same caching choices
 * as streamfs (docs/CACHING.md): direct_io on descriptions opened for
 * writing, page cache kept across opens for read-only ones, attributes not
 * cached, names cached 1 s, no writeback cache, the multi-threaded loop,
 * and the same preferred I/O size (st_blksize), which sets cp's writes.
 * So the difference between streamfs and nullfs is what streamfs itself
 * costs, not what FUSE costs.
 *
 * --io-uring takes requests over io_uring as streamfs's -o io_uring does
 * (fs/ring.c), for the floor of that transport.
 *
 * Usage: nullfs MOUNTPOINT [-f] [--io-uring] [-o FUSE options]
 */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

#define MAX_FILES (1u << 20)

struct nfile {
	char *name;
	off_t size;	/* protected by lock */
	mode_t mode;
	struct timespec mtime;
};

/* One lock for the table: the floor is measured on one file at a time. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct nfile *files;	/* index + 2 is the inode; protected by lock */
static size_t nfiles;		/* protected by lock */
static char *zeros;		/* read replies, never written */
#define ZEROS_LEN (1u << 20)

static struct nfile *file_of(fuse_ino_t ino)
{
	if (ino < 2 || ino - 2 >= nfiles)
		return NULL;
	return &files[ino - 2];
}

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		return;
	}
	struct nfile *f = file_of(ino);

	st->st_mode = S_IFREG | f->mode;
	st->st_nlink = 1;
	st->st_blksize = 1 << 20;	/* streamfs's preferred I/O size */
	st->st_size = f->size;
	st->st_blocks = (f->size + 511) / 512;
	st->st_mtim = f->mtime;
	st->st_ctim = f->mtime;
	st->st_atim = f->mtime;
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.generation = 1;
	e.attr_timeout = 0;
	e.entry_timeout = 1.0;
	pthread_mutex_lock(&lock);
	fill_attr(ino, &e.attr);
	pthread_mutex_unlock(&lock);
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

static fuse_ino_t find(const char *name)
{
	for (size_t i = 0; i < nfiles; i++)
		if (files[i].name && strcmp(files[i].name, name) == 0)
			return i + 2;
	return 0;
}

static void nl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_ino_t ino;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	pthread_mutex_lock(&lock);
	ino = find(name);
	pthread_mutex_unlock(&lock);
	if (!ino)
		fuse_reply_err(req, ENOENT);
	else
		reply_entry(req, ino, NULL);
}

static void nl_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	pthread_mutex_lock(&lock);
	if (ino != FUSE_ROOT_ID && !file_of(ino)) {
		pthread_mutex_unlock(&lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(ino, &st);
	pthread_mutex_unlock(&lock);
	fuse_reply_attr(req, &st, 0);
}

static void nl_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct nfile *f;

	pthread_mutex_lock(&lock);
	f = file_of(ino);
	if (f && (to_set & FUSE_SET_ATTR_SIZE))
		f->size = attr->st_size;
	if (f && (to_set & FUSE_SET_ATTR_MODE))
		f->mode = attr->st_mode & 07777;
	pthread_mutex_unlock(&lock);
	nl_getattr(req, ino, fi);
}

static void nl_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	fuse_ino_t ino;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_mutex_lock(&lock);
	ino = find(name);
	if (!ino) {
		if (nfiles == MAX_FILES) {
			pthread_mutex_unlock(&lock);
			fuse_reply_err(req, ENOSPC);
			return;
		}
		files[nfiles].name = strdup(name);
		files[nfiles].mode = mode & 07777;
		clock_gettime(CLOCK_REALTIME, &files[nfiles].mtime);
		ino = ++nfiles + 1;
	}
	pthread_mutex_unlock(&lock);
	fi->direct_io = 1;
	reply_entry(req, ino, fi);
}

static void nl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		fi->direct_io = 1;
	else
		fi->keep_cache = 1;
	(void)ino;
	fuse_reply_open(req, fi);
}

static void nl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	off_t end;

	(void)fi;
	pthread_mutex_lock(&lock);
	end = file_of(ino) ? file_of(ino)->size : 0;
	pthread_mutex_unlock(&lock);
	if (off >= end)
		size = 0;
	else if ((off_t)size > end - off)
		size = (size_t)(end - off);
	if (size > ZEROS_LEN)
		size = ZEROS_LEN;
	fuse_reply_buf(req, zeros, size);
}

static void nl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct nfile *f;

	(void)buf;
	pthread_mutex_lock(&lock);
	f = file_of(ino);
	if (f) {
		/* Appends land at the end, whatever the kernel's offset. */
		if (fi->flags & O_APPEND)
			off = f->size;
		if (off + (off_t)size > f->size)
			f->size = off + (off_t)size;
		clock_gettime(CLOCK_REALTIME, &f->mtime);
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_write(req, size);
}

static void nl_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void nl_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	(void)datasync;
	nl_ok(req, ino, fi);
}

static void nl_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_ino_t ino;

	(void)parent;
	pthread_mutex_lock(&lock);
	ino = find(name);
	if (ino) {
		free(files[ino - 2].name);
		files[ino - 2].name = NULL;
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_err(req, ino ? 0 : ENOENT);
}

static void nl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char *buf = malloc(size);
	size_t used = 0;

	(void)fi;
	if (!buf || ino != FUSE_ROOT_ID) {
		free(buf);
		fuse_reply_err(req, buf ? ENOTDIR : ENOMEM);
		return;
	}
	pthread_mutex_lock(&lock);
	for (size_t i = (size_t)off; i < nfiles + 2; i++) {
		struct stat st = { 0 };
		const char *name;
		size_t n;

		if (i == 0)
			name = ".";
		else if (i == 1)
			name = "..";
		else if (!(name = files[i - 2].name))
			continue;
		st.st_ino = i < 2 ? FUSE_ROOT_ID : i;
		st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
		n = fuse_add_direntry(req, buf + used, size - used, name, &st,
				      (off_t)i + 1);
		if (n > size - used)
			break;
		used += n;
	}
	pthread_mutex_unlock(&lock);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = nl_lookup,
	.getattr = nl_getattr,
	.setattr = nl_setattr,
	.create = nl_create,
	.open = nl_open,
	.read = nl_read,
	.write = nl_write,
	.flush = nl_ok,
	.release = nl_ok,
	.fsync = nl_fsync,
	.unlink = nl_unlink,
	.readdir = nl_readdir,
};

int main(int argc, char **argv)
{
	struct fuse_args args;
	struct fuse_cmdline_opts co;
	struct fuse_session *se;
	struct fs_ring *ring = NULL;
	int rc = 1, in, kept, io_uring = 0;

	for (in = kept = 0; in < argc; in++)	/* ours, not libfuse's */
		if (strcmp(argv[in], "--io-uring") == 0)
			io_uring = 1;
		else
			argv[kept++] = argv[in];
	args = (struct fuse_args)FUSE_ARGS_INIT(kept, argv);
	if (fuse_parse_cmdline(&args, &co))
		return 1;
	if (co.show_help || !co.mountpoint) {
		printf("usage: %s MOUNTPOINT [-f] [--io-uring] [-o OPT,...]\n", argv[0]);
		fuse_cmdline_help();
		return co.show_help ? 0 : 1;
	}
	files = calloc(MAX_FILES, sizeof(*files));
	zeros = calloc(1, ZEROS_LEN);
	if (!files || !zeros)
		return 1;
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out_destroy;
	if (fuse_session_mount(se, co.mountpoint))
		goto out_signals;
	if (io_uring && !co.singlethread && fs_ring_attach(se, &ring))
		goto out_unmount;
	if (fuse_daemonize(co.foreground))
		goto out_unmount;
	if (co.singlethread) {
		rc = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();

		fuse_loop_cfg_set_clone_fd(cfg, (unsigned)co.clone_fd);
		rc = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	fs_ring_stop(ring);
	rc = rc < 0 ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
	fs_ring_free(ring);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	free(co.mountpoint);
	fuse_opt_free_args(&args);
	for (size_t i = 0; i < nfiles; i++)
		free(files[i].name);
	free(files);
	free(zeros);
	return rc;
}
