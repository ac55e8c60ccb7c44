/*
 * Mounting: SOURCE (source.c), the store, the FUSE session and its loop,
 * and an orderly teardown on unmount or SIGINT/SIGTERM/SIGHUP.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs_int.h"

static unsigned long read_ulong(const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long v = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lu", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

/* A parked follow read is a request the kernel may time out: with
 * /proc/sys/fs/fuse/{default,max}_request_timeout set (Linux 6.14+), a
 * request older than that aborts the whole connection.  The effective
 * timeout is the default, capped by the max, at least 15 s; the kernel
 * checks it every 15 s.  Parked reads are answered with EINTR at half of
 * it (docs/CACHING.md).  Returns that age in ns, 0 when no timeout is set.
 * STREAMFS_PARK_MAX_MS overrides it (tests). */
static int64_t park_limit_ns(void)
{
	unsigned long def = read_ulong("/proc/sys/fs/fuse/default_request_timeout");
	unsigned long max = read_ulong("/proc/sys/fs/fuse/max_request_timeout");
	unsigned long t = def;
	const char *env = getenv("STREAMFS_PARK_MAX_MS");

	if (env && *env)
		return strtoll(env, NULL, 10) * 1000000;
	if (max && (!t || max < t))
		t = max;
	if (!t)
		return 0;
	if (t < 15)
		t = 15;
	fs_log(LOG_WARNING, "warning: the kernel's FUSE request timeout "
		"is %lu s: a follow read that waits %lu s for new events is "
		"answered with EINTR (cat, dd, grep and Python retry it and keep "
		"following; other programs may stop)", t, t / 2);
	return (int64_t)t * 500000000;
}

/* ---- stale mount points ---- */

/* The absolute form of MNT without resolving its last component (which
 * may be a dead mount that cannot be stat'ed).  Caller frees. */
static char *mountpoint_abs(const char *mnt)
{
	char *copy = strdup(mnt), *slash, *dir, *out = NULL;
	const char *base;
	size_t len;

	if (!copy)
		return NULL;
	len = strlen(copy);
	while (len > 1 && copy[len - 1] == '/')
		copy[--len] = '\0';
	slash = strrchr(copy, '/');
	if (!slash) {
		dir = realpath(".", NULL);
		base = copy;
	} else if (slash == copy) {
		dir = strdup("/");
		base = slash + 1;
	} else {
		*slash = '\0';
		dir = realpath(copy, NULL);
		base = slash + 1;
	}
	if (dir && asprintf(&out, "%s%s%s", dir,
			    dir[strlen(dir) - 1] == '/' ? "" : "/", base) < 0)
		out = NULL;
	free(dir);
	free(copy);
	return out;
}

/* Undoes /proc/self/mountinfo's \ooo escapes in place. */
static void unescape_octal(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = '\0';
}

/* File system type mounted at the absolute path MNT (the topmost), or NULL.
 * Caller frees. */
static char *mount_type(const char *mnt)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL, *type = NULL;
	size_t cap = 0;

	if (!f)
		return NULL;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *field, *point = NULL;
		int i = 0;

		for (field = strtok_r(line, " ", &save); field;
		     field = strtok_r(NULL, " ", &save), i++) {
			if (i == 4)
				point = field;
			if (strcmp(field, "-") == 0)
				break;
		}
		field = strtok_r(NULL, " ", &save);
		if (!point || !field)
			continue;
		unescape_octal(point);
		if (strcmp(point, mnt) == 0) {
			free(type);
			type = strdup(field);
		}
	}
	free(line);
	fclose(f);
	return type;
}

/* Runs `fusermount3 -u -z MNT`; 0 when it succeeded. */
static int lazy_unmount(const char *mnt)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
		}
		execlp("fusermount3", "fusermount3", "-u", "-z", mnt,
		       (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* The mount point must be a directory: the kernel would mount streamfs's
 * root directory on a regular file too, and then answer every access with
 * EIO.
 * After a streamfs daemon was killed (kill -9, OOM), its mount point stays
 * mounted with no daemon behind it: every access fails with ENOTCONN and
 * libfuse cannot mount there again.  Such a dead streamfs mount is released
 * here (nothing can be served through it any more); anything else dead is
 * left alone, with the command that releases it. */
static int check_mountpoint(const char *mnt)
{
	struct stat st;
	char *abs, *type = NULL;
	int err;

	if (stat(mnt, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		fs_log(LOG_ERR, "cannot mount on %s: not a directory "
			"(a mount point must be a directory)", mnt);
		return -ENOTDIR;
	}
	err = errno;
	if (err != ENOTCONN && err != ECONNABORTED)
		return 0;	/* libfuse says what is wrong */
	abs = mountpoint_abs(mnt);
	if (abs)
		type = mount_type(abs);
	if (type && strcmp(type, "fuse.streamfs") == 0) {
		fs_log(LOG_NOTICE, "%s is the mount point of a streamfs "
			"that died; releasing it (fusermount3 -u -z %s)",
			mnt, mnt);
		if (lazy_unmount(abs ? abs : mnt) == 0 && stat(mnt, &st) == 0) {
			free(type);
			free(abs);
			return 0;
		}
	}
	fs_log(LOG_ERR, "cannot mount on %s: %s (a %s whose daemon "
		"died is still mounted there); run `fusermount3 -u %s` (or "
		"`umount -l %s` as root) and mount again", mnt, strerror(err),
		type ? type : "filesystem", mnt, mnt);
	free(type);
	free(abs);
	return -err;
}

/* ---- daemon ---- */

/* Without -f, forks before anything else (no thread exists yet): the parent
 * waits until the child reports that it mounted (or failed) and exits with
 * that status, so `streamfs ...` and `mount -t fuse.streamfs` fail
 * honestly when the store, the remote's lease or the mount fail.
 * *notify (OUT) is the pipe to report on, or -1 in the foreground. */
static int daemon_fork(bool foreground, int *notify)
{
	int p[2];
	pid_t pid;

	*notify = -1;
	if (foreground)
		return 0;
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0) {
		int err = errno;
		close(p[0]);
		close(p[1]);
		return -err;
	}
	if (pid > 0) {
		unsigned char c = 1;
		ssize_t n;

		close(p[1]);
		do
			n = read(p[0], &c, 1);
		while (n < 0 && errno == EINTR);
		_exit(n == 1 ? c : 1);
	}
	close(p[0]);
	setsid();
	*notify = p[1];
	return 0;
}

/* Reports STATUS to the waiting parent; on success detaches from the
 * terminal as fuse_daemonize() would. */
static void daemon_ready(int *notify, int status)
{
	unsigned char c = (unsigned char)status;

	if (*notify < 0)
		return;
	if (status == 0) {
		int null = open("/dev/null", O_RDWR);

		fs_log_detached();
		if (chdir("/")) {
			/* harmless: SOURCE is absolute */
		}
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			if (null > STDERR_FILENO)
				close(null);
		}
	}
	if (write(*notify, &c, 1) != 1) {
		/* the parent is gone: nobody to tell */
	}
	close(*notify);
	*notify = -1;
}

/* ---- sync ---- */

/* Starts the sync thread the mount needs: with remote= a writer's uploads,
 * and an analysis host's (remote=,ro) mirror of the remote.  A mount
 * without remote= has none (the store's sealer rolls segments).  Before the FUSE session exists, so that a lease held by another
 * writer refuses the mount. */
static int start_sync(struct fs *fs, struct fs_opts *o)
{
	struct sync_config cfg;
	struct sync *s = NULL;
	int rc;

	if (!o->remote)
		return 0;
	sync_config_default(&cfg);
	cfg.url = o->remote;
	cfg.state_dir = o->source;
	cfg.replica = o->replica;
	cfg.nodelete = o->nodelete;
	cfg.lease_ns = o->lease_ns;	/* 0: sync's default */
	cfg.takeover = o->takeover;
	cfg.risk_forks = o->risk_forks;
	cfg.cache_size = o->cache_size;
	/* Unless given, 2 s each (--help, README's cost table). */
	cfg.poll_ns = o->poll_str ? o->poll_ns : SYNC_POLL_DEFAULT_NS;
	cfg.flush_ns = o->flush_str ? o->flush_ns : SYNC_FLUSH_DEFAULT_NS;
	cfg.piece_keep_ns = o->piece_keep_ns;	/* 0: sync's default */
	cfg.opts.endpoint = o->endpoint;
	if (o->region)
		cfg.opts.region = o->region;
	cfg.opts.path_style = o->path_style;
	cfg.opts.credentials_file = o->credentials;
	cfg.opts.ca_file = o->ca_file;
	cfg.opts.query_slash_raw = o->query_slash_raw;
	rc = sync_start(fs->st, &cfg, &s);
	if (rc == -EBUSY) {
		fs_log(LOG_ERR, "another writer holds a tenant of %s "
			"(see above); refusing to mount a second writer",
			o->remote_shown);
		return rc;
	}
	if (rc == -EOPNOTSUPP && !o->replica) {
		fs_log(LOG_ERR, "remote %s does not enforce the conditional "
			"writes that keep two writers of a tenant apart (see "
			"above); refusing to run a writer there (-o risk_forks "
			"accepts the risk)", o->remote_shown);
		return rc;
	}
	if (rc) {
		fs_log(LOG_ERR, "cannot use remote %s: %s",
			o->remote_shown, strerror(-rc));
		return rc;
	}
	atomic_store(&fs->sync, s);
	return 0;
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
	fs->io_size = (size_t)fs->page_size;	/* until init says more */
	fs_mutex_init(&fs->lock, FS_LOCK_NODES);
	fs_mutex_init(&fs->park_lock, FS_LOCK_PARK);
	pthread_cond_init(&fs->wake_cond, NULL);
	fs_mutex_init(&fs->inval_lock, FS_LOCK_INVAL);
	pthread_cond_init(&fs->inval_cond, NULL);
	pthread_cond_init(&fs->inval_done_cond, NULL);
	fs_mutex_init(&fs->answer_lock, FS_LOCK_ALONE);
	pthread_cond_init(&fs->answer_cond, NULL);
	return fs_nodes_init(fs);
}

static void fs_release_all(struct fs *fs)
{
	fs_files_release(fs);
	fs_dirs_release(fs);
	fs_nodes_release(fs);
	pthread_cond_destroy(&fs->answer_cond);
	fs_mutex_destroy(&fs->answer_lock);
	pthread_cond_destroy(&fs->inval_done_cond);
	pthread_cond_destroy(&fs->inval_cond);
	fs_mutex_destroy(&fs->inval_lock);
	pthread_cond_destroy(&fs->wake_cond);
	fs_mutex_destroy(&fs->park_lock);
	fs_mutex_destroy(&fs->lock);
}

static int serve(struct fs *fs, struct fuse_cmdline_opts *co)
{
	struct fuse_loop_config *cfg;
	int rc;

	/* Keep one worker free of invalidation waits (fs_inval_wait);
	 * libfuse 3.14's pool defaults to 10 threads. */
	if (co->singlethread) {
		fs->inval_max_waiters = 0;
		return fuse_session_loop(fs->se);
	}
	fs->inval_max_waiters = co->max_threads != UINT_MAX &&
				co->max_threads > 0 ? co->max_threads - 1 : 9;
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

/* Names the mount point in SOURCE's lock, for verify and a second mount
 * to show. */
static void record_mountpoint(int lock_fd, const char *mnt)
{
	char *abs = realpath(mnt, NULL);

	fs_source_lock_record(lock_fd, abs ? abs : mnt);
	free(abs);
}

/* Runs the mounted session; returns the exit status. */
static int run_session(struct fs *fs, struct fuse_args *args,
		       struct fuse_cmdline_opts *co, int lock_fd, int *notify)
{
	const struct fuse_lowlevel_ops *ops = fs_lowlevel_ops();
	int rc, status = 1;

	fs->se = fuse_session_new(args, ops, sizeof(*ops), fs);
	if (!fs->se)
		return 1;
	if (fuse_set_signal_handlers(fs->se))
		goto out_destroy;
	if (fuse_session_mount(fs->se, co->mountpoint))
		goto out_signals;
	/* The ring runs handlers on threads of its own: not with -s. */
	if (fs->opts->io_uring && co->singlethread)
		fs_log(LOG_WARNING, "io_uring: not with -s (the ring serves "
		       "requests on threads of its own); requests go through "
		       "/dev/fuse");
	if (fs->opts->io_uring && !co->singlethread) {
		rc = fs_ring_attach(fs->se, &fs->ring);
		if (rc) {
			fs_log(LOG_ERR, "io_uring: %s", strerror(-rc));
			goto out_unmount;
		}
	}
	record_mountpoint(lock_fd, co->mountpoint);
	rc = fs_follow_start(fs);
	if (rc) {
		fs_log(LOG_ERR, "starting threads: %s", strerror(-rc));
		goto out_unmount;
	}
	if (fs_metrics_start(fs->metrics, fs))
		goto out_stop;
	fs_source_say_new(fs->opts);
	daemon_ready(notify, 0);
	fs_log(LOG_INFO, "mounted %s on %s (%s%s)", fs->opts->source,
	       co->mountpoint, fs->opts->remote ? "remote " : "no remote",
	       fs->opts->remote ? fs->opts->remote_shown : "");
	rc = serve(fs, co);
	/* A positive value is the signal that ended the loop: a clean stop. */
	status = rc < 0 ? 1 : 0;
	if (rc < 0)
		fs_log(LOG_ERR, "session ended: %s", strerror(-rc));
out_stop:
	/* The metrics server reads the ring and sync: it goes first. */
	fs_metrics_free(fs->metrics);
	fs->metrics = NULL;
	/* fs first: its wake thread may be inside sync's fetch hook (a
	 * store_read of an evicted segment).  Commits the replica's thread
	 * makes meanwhile find no thread to wake and queue nothing. */
	fs_follow_stop(fs);	/* with the ring still serving the last closes */
	fs_ring_stop(fs->ring);
	sync_stop(atomic_exchange(&fs->sync, NULL));
out_unmount:
	fuse_session_unmount(fs->se);
	if (status == 0)
		fs_log(LOG_INFO, "unmounted %s", co->mountpoint);
	fs_ring_free(fs->ring);
	fs->ring = NULL;
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
	int lock_fd, rc, status = 1, notify = -1;

	if (fuse_parse_cmdline(args, &co)) {
		free(co.mountpoint);	/* libfuse 3.14 keeps it on a bad argument */
		return 1;
	}
	if (!co.mountpoint) {
		fs_log(LOG_ERR, "missing MOUNTPOINT (see --help)");
		goto out;
	}
	if (check_mountpoint(co.mountpoint) || fs_source_resolve(o))
		goto out;
	/* Before the fork: a log=FILE that cannot be opened fails the
	 * command, and a relative FILE is taken from where it was given. */
	if (fs_log_start(o->log_file, co.foreground))
		goto out;
	rc = daemon_fork(co.foreground, &notify);
	if (rc) {
		fs_log(LOG_ERR, "fork: %s", strerror(-rc));
		goto out;
	}
	lock_fd = fs_source_lock(o->source);
	if (lock_fd < 0)
		goto out;
	rc = store_open(o->source, &o->store, &st);
	if (rc == -ENOSPC) {
		fs_log(LOG_ERR, "cannot open %s: its file system is full, and "
		       "opening the store needs room there (recovery after a "
		       "crash writes the index, and the reserve is used up); "
		       "free space on it, or mount with -o ro to read the data",
		       o->source);
		goto out_lock;
	}
	if (rc) {
		fs_log(LOG_ERR, "cannot open %s: %s", o->source,
			strerror(-rc));
		goto out_lock;
	}
	rc = fs_init(&fs, o, st);
	if (!rc)
		rc = fs_buffers_init();
	if (rc) {
		fs_log(LOG_ERR, "starting: %s", strerror(-rc));
		goto out_store;
	}
	fs.park_max_ns = park_limit_ns();
	store_set_commit_hook(st, fs_commit_hook, &fs);
	/* The metrics port is taken before mounting: a port in use
	 * refuses the mount. */
	if (start_sync(&fs, o) == 0 && fs_metrics_open(o, &fs.metrics) == 0)
		status = run_session(&fs, args, &co, lock_fd, &notify);
	/* Whatever run_session did not stop (it failed before serving). */
	fs_metrics_free(fs.metrics);
	sync_stop(atomic_exchange(&fs.sync, NULL));
	fs_release_all(&fs);
out_store:
	store_close(st);
out_lock:
	fs_source_unlock(lock_fd);
out:
	daemon_ready(&notify, status ? status : 1);
	fs_log_stop();
	free(co.mountpoint);
	return status;
}
