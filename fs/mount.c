/*
 * Mounting: the SOURCE lock, the store, the FUSE session and its loop,
 * and an orderly teardown on unmount or SIGINT/SIGTERM/SIGHUP.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "fs_int.h"

struct fs *fs_global;

/* Holds an exclusive flock on SOURCE/streamfs.lock for the daemon's life
 * (inherited across fuse_daemonize's fork).  Returns the fd or -errno. */
static int lock_source(const char *source)
{
	char path[PATH_MAX], pid[32];
	int fd;

	snprintf(path, sizeof(path), "%s/streamfs.lock", source);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "streamfs: cannot open %s: %s\n", path,
			strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int err = errno;
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		if (err == EWOULDBLOCK)
			fprintf(stderr, "streamfs: %s is already mounted by "
				"another streamfs (pid %s)\n", source,
				n > 0 ? strtok(pid, "\n") : "?");
		else
			fprintf(stderr, "streamfs: cannot lock %s: %s\n", path,
				strerror(err));
		close(fd);
		return -err;
	}
	return fd;
}

static void lock_write_pid(int fd)
{
	char pid[32];
	int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

	if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) < 0)
		fprintf(stderr, "streamfs: writing the lock's pid: %s\n",
			strerror(errno));
}

/* A parked follow read is a request the kernel may time out (Linux 6.14+
 * aborts the whole connection), so say so when a timeout is configured. */
static void check_request_timeout(void)
{
	static const char *files[] = {
		"/proc/sys/fs/fuse/default_request_timeout",
		"/proc/sys/fs/fuse/max_request_timeout",
	};

	for (size_t i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "r");
		unsigned long v = 0;

		if (!f)
			continue;
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
		if (v)
			fprintf(stderr, "streamfs: warning: %s is %lu s: a "
				"follow read waiting longer than that makes the "
				"kernel abort the connection\n", files[i], v);
	}
}

static int fs_init(struct fs *fs, struct fs_opts *o, struct store *st)
{
	memset(fs, 0, sizeof(*fs));
	fs->st = st;
	fs->opts = o;
	fs->root.mode = 0755;
	fs->root.uid = getuid();
	fs->root.gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->root.mtime);
	fs->root.atime = fs->root.ctime = fs->root.mtime;
	fs->page_size = sysconf(_SC_PAGESIZE);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->park_lock, NULL);
	pthread_cond_init(&fs->wake_cond, NULL);
	pthread_mutex_init(&fs->inval_lock, NULL);
	pthread_cond_init(&fs->inval_cond, NULL);
	pthread_cond_init(&fs->inval_done_cond, NULL);
	return fs_nodes_init(fs);
}

static void fs_release_all(struct fs *fs)
{
	fs_files_release(fs);
	fs_nodes_release(fs);
	pthread_cond_destroy(&fs->inval_done_cond);
	pthread_cond_destroy(&fs->inval_cond);
	pthread_mutex_destroy(&fs->inval_lock);
	pthread_cond_destroy(&fs->wake_cond);
	pthread_mutex_destroy(&fs->park_lock);
	pthread_mutex_destroy(&fs->lock);
}

static int serve(struct fs *fs, struct fuse_cmdline_opts *co)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (co->singlethread)
		return fuse_session_loop(fs->se);
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, (unsigned)co->clone_fd);
	/* UINT_MAX: not given; libfuse's defaults keep the pool bounded. */
	if (co->max_threads != UINT_MAX)
		fuse_loop_cfg_set_max_threads(cfg, co->max_threads);
	if (co->max_idle_threads != UINT_MAX)
		fuse_loop_cfg_set_idle_threads(cfg, co->max_idle_threads);
	rc = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc;
}

/* Runs the mounted session; returns the exit status. */
static int run_session(struct fs *fs, struct fuse_args *args,
		       struct fuse_cmdline_opts *co, int lock_fd)
{
	int rc, status = 1;

	fs->se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
	if (!fs->se)
		return 1;
	if (fuse_set_signal_handlers(fs->se))
		goto out_destroy;
	if (fuse_session_mount(fs->se, co->mountpoint))
		goto out_signals;
	if (fuse_daemonize(co->foreground))
		goto out_unmount;
	lock_write_pid(lock_fd);
	rc = fs_follow_start(fs);
	if (rc) {
		fprintf(stderr, "streamfs: starting threads: %s\n",
			strerror(-rc));
		goto out_unmount;
	}
	rc = serve(fs, co);
	/* A positive value is the signal that ended the loop: a clean stop. */
	status = rc < 0 ? 1 : 0;
	if (rc < 0)
		fprintf(stderr, "streamfs: session ended: %s\n", strerror(-rc));
	fs_follow_stop(fs);
out_unmount:
	fuse_session_unmount(fs->se);
out_signals:
	fuse_remove_signal_handlers(fs->se);
out_destroy:
	fuse_session_destroy(fs->se);
	fs->se = NULL;
	return status;
}

int fs_run(struct fs_opts *o, struct fuse_args *args)
{
	struct fuse_cmdline_opts co;
	struct store *st = NULL;
	struct fs fs;
	int lock_fd, rc, status = 1;

	if (fuse_parse_cmdline(args, &co))
		return 1;
	if (!co.mountpoint) {
		fprintf(stderr, "streamfs: missing MOUNTPOINT (see --help)\n");
		goto out;
	}
	if (o->remote) {
		fprintf(stderr, "streamfs: remote= is not supported by this "
			"build yet (no sync module); refusing to mount\n");
		goto out;
	}
	lock_fd = lock_source(o->source);
	if (lock_fd < 0)
		goto out;
	check_request_timeout();
	rc = store_open(o->source, &o->store, &st);
	if (rc) {
		fprintf(stderr, "streamfs: cannot open %s: %s\n", o->source,
			strerror(-rc));
		goto out_lock;
	}
	rc = fs_init(&fs, o, st);
	if (!rc)
		rc = fs_buffers_init();
	if (rc) {
		fprintf(stderr, "streamfs: %s\n", strerror(-rc));
		goto out_store;
	}
	fs_global = &fs;
	store_set_commit_hook(st, fs_commit_hook, &fs);
	status = run_session(&fs, args, &co, lock_fd);
	fs_global = NULL;
	fs_release_all(&fs);
out_store:
	store_close(st);
out_lock:
	close(lock_fd);
out:
	free(co.mountpoint);
	return status;
}
