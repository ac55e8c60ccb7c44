/*
 * streamfs: the event store as a filesystem.
 *   streamfs SOURCE MOUNTPOINT [-f] [-d] [-o OPT,...]
 *   streamfs verify DATADIR
 *   streamfs status [--json] MOUNTPOINT
 *   streamfs sync [--timeout SECS] MOUNTPOINT
 *
 * The tools talk to a running mount through read-only xattrs on its root
 * (fs/xattr.c), so no socket is needed and permissions are the mount's.
 * They exit 0 on success, 1 on a failure (damage found, no mount there,
 * the sync did not finish) and 2 on a usage error (EXIT_USAGE), which for
 * verify includes a DATADIR a mounted streamfs is using.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <time.h>

#include "config.h"
#include "fs.h"
#include "progress.h"

/* Beside stdlib's EXIT_SUCCESS (0) and EXIT_FAILURE (1). */
#define EXIT_USAGE 2

/* Says why DIR cannot be a data directory, or returns 0 when it is one. */
static int check_data_dir(const char *dir)
{
	int kind = fs_source_kind(dir);

	if (kind == FS_SOURCE_STORE)
		return 0;
	if (kind == -ENOTDIR)
		fprintf(stderr, "streamfs: verify %s: not a directory\n", dir);
	else if (kind < 0)
		fprintf(stderr, "streamfs: verify %s: %s\n", dir,
			strerror(-kind));
	else if (kind == FS_SOURCE_MOUNT)
		fprintf(stderr, "streamfs: verify %s: this is a streamfs mount "
			"point; verify takes its data directory (SOURCE, the "
			"'source:' line of `streamfs status %s`), unmounted\n",
			dir, dir);
	else
		fprintf(stderr, "streamfs: verify %s: not a streamfs data "
			"directory (it has no tenants/ directory)\n", dir);
	return -1;
}

/* A daemon writes into its SOURCE while verify would read it: verify takes
 * the SOURCE lock shared, so it refuses a mounted DIR and no mount starts
 * on DIR while it runs.  *fd (OUT): the lock to close after, or -1 when
 * there is none to hold (DIR never mounted, or its lock unreadable).
 * Returns -EBUSY, said, when a streamfs has DIR mounted. */
static int lock_for_verify(const char *dir, int *fd)
{
	char *holder;
	int rc = fs_source_lock_shared(dir, &holder);

	*fd = rc >= 0 ? rc : -1;
	if (rc != -EWOULDBLOCK)
		return 0;
	fprintf(stderr, "streamfs: verify %s: in use by a mounted streamfs "
		"(%s); unmount it first: verify checks a data directory no "
		"daemon is writing\n", dir, holder ? holder : "starting");
	free(holder);
	return -EBUSY;
}

static void verify_progress(void *arg, const struct store_verify_progress *v)
{
	struct fs_progress_state s = {
		.bytes_done = v->bytes_done,
		.bytes_total = v->bytes_total,
		.objects_done = v->segments_done,
		.objects_total = v->segments_total,
	};

	fs_progress_show(arg, &s, v->segments_done == 0);
}

/* Verify's report while a progress line may be on the terminal: each line
 * of it first erases the progress line (redrawn at the next step). */
static ssize_t report_write(void *cookie, const char *buf, size_t len)
{
	fs_progress_end(cookie);
	len = fwrite(buf, 1, len, stdout);
	fflush(stdout);
	return (ssize_t)len;
}

/* store_verify_with() and a progress line: for a terminal on stderr. */
static int verify_shown(const char *dir, struct fs_progress *progress)
{
	cookie_io_functions_t io = { .write = report_write };
	FILE *report = fopencookie(progress, "w", io);
	int rc;

	if (!report)
		return -errno;
	setvbuf(report, NULL, _IOLBF, 0);
	rc = store_verify_with(dir, report, verify_progress, progress);
	fclose(report);
	fs_progress_end(progress);
	return rc;
}

static int cmd_verify(int argc, char *argv[])
{
	struct fs_progress progress;
	int rc, lock;

	if (argc != 3) {
		fprintf(stderr, "usage: %s verify DATADIR\n", argv[0]);
		return EXIT_USAGE;
	}
	if (check_data_dir(argv[2]))
		return EXIT_FAILURE;
	if (lock_for_verify(argv[2], &lock))
		return EXIT_USAGE;
	fs_progress_init(&progress, "verify", "segments");
	if (progress.on)
		rc = verify_shown(argv[2], &progress);
	else
		rc = store_verify(argv[2], stdout);
	if (lock >= 0)
		close(lock);
	if (rc < 0) {
		fprintf(stderr, "streamfs: verify %s: %s%s\n", argv[2],
			strerror(-rc), rc == -EACCES ? " (see above; run verify "
			"as the owner of the data directory, or root)" : "");
		return EXIT_FAILURE;
	}
	return rc;	/* 1: damage found */
}

/* Reads xattr NAME of PATH into a malloc'd string.  -errno on failure. */
static int read_xattr(const char *path, const char *name, char **out)
{
	size_t cap = 4096;
	char *buf = NULL;
	ssize_t n;

	/* The status grows with the tenants: ask again with more room. */
	for (;;) {
		char *bigger = realloc(buf, cap + 1);

		if (!bigger) {
			free(buf);
			return -ENOMEM;
		}
		buf = bigger;
		n = getxattr(path, name, buf, cap);
		if (n >= 0 || errno != ERANGE || cap >= (1u << 16))
			break;
		cap *= 2;
	}
	if (n < 0) {
		int err = errno;
		free(buf);
		return -err;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* Says why the tools got ERR from MNT's root, and what to do. */
static void explain(const char *mnt, int err)
{
	const char *hint = "";

	switch (-err) {
	case ENOTSUP:
	case ENODATA:
		fprintf(stderr, "streamfs: %s is not the root of a streamfs "
			"mount\n", mnt);
		return;
	case ENOTCONN:
	case ECONNABORTED:
		hint = " (the daemon of this mount is gone; mounting again "
		       "releases it, or `fusermount3 -u` it)";
		break;
	case EACCES:
		hint = " (a FUSE mount lets in only the user who made it and "
		       "root, unless it has allow_other)";
		break;
	case EPERM:
		hint = " (only the user who made the mount and root may sync "
		       "it)";
		break;
	case EBUSY:
		hint = " (two syncs are running already; try again when one "
		       "ends)";
		break;
	}
	fprintf(stderr, "streamfs: %s: %s%s\n", mnt, strerror(-err), hint);
}

/* The daemon writes the status, text or JSON (fs/status.c). */
static int cmd_status(int argc, char *argv[])
{
	bool json = argc == 4 && strcmp(argv[2], "--json") == 0;
	const char *mnt = argv[argc - 1];
	char *text;
	int rc;

	if (argc != 3 && !json) {
		fprintf(stderr, "usage: %s status [--json] MOUNTPOINT\n",
			argv[0]);
		return EXIT_USAGE;
	}
	rc = read_xattr(mnt, json ? "user.streamfs.status.json" :
			"user.streamfs.status", &text);
	if (rc) {
		explain(mnt, rc);
		return EXIT_FAILURE;
	}
	fputs(text, stdout);
	if (json)
		fputc('\n', stdout);
	free(text);
	return 0;
}

/* SECS of --timeout: whole seconds from 1 to a day.  0 when bad. */
static long parse_timeout(const char *arg)
{
	char *end;
	long secs;

	errno = 0;
	secs = strtol(arg, &end, 10);
	if (errno || end == arg || *end || secs < 1 || secs > 86400)
		return 0;
	return secs;
}

/* The value of "KEY: N" in the status TEXT; false when it has none. */
static bool status_number(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	const char *l = text;

	while (l) {
		if (strncmp(l, key, klen) == 0 &&
		    strncmp(l + klen, ": ", 2) == 0)
			return sscanf(l + klen + 2, "%" SCNu64, out) == 1;
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	return false;
}

/* What a writer's mount has uploaded and has still to upload. */
struct upload_counts {
	uint64_t uploaded_bytes, uploaded_segments;
	uint64_t pending_bytes, pending_segments;
};

static bool upload_counts(const char *mnt, struct upload_counts *c)
{
	char *text;
	bool ok;

	if (read_xattr(mnt, "user.streamfs.status", &text))
		return false;
	ok = status_number(text, "uploaded_bytes", &c->uploaded_bytes) &&
	     status_number(text, "uploaded_segments", &c->uploaded_segments) &&
	     status_number(text, "pending_bytes", &c->pending_bytes) &&
	     status_number(text, "pending_segments", &c->pending_segments);
	free(text);
	return ok;
}

/* The sync_now read, on a thread of its own while the tool draws. */
struct sync_call {
	const char *mnt, *name;
	int rc;
	atomic_bool done;
};

static void *sync_call_run(void *arg)
{
	struct sync_call *c = arg;
	char *text = NULL;

	c->rc = read_xattr(c->mnt, c->name, &text);
	free(text);
	atomic_store(&c->done, true);
	return NULL;
}

/* Runs the sync_now read of NAME on MNT and, while it waits, shows what
 * was uploaded since it began of what there was and is to upload: sealing
 * the active segments adds to the pending set as it goes. */
static int sync_shown(const char *mnt, const char *name)
{
	struct sync_call call = { .mnt = mnt, .name = name };
	struct timespec tick = { .tv_nsec = 100000000 };
	struct upload_counts base, now;
	struct fs_progress progress;
	struct fs_progress_state s = { 0 };
	pthread_t thread;
	int rc;

	fs_progress_init(&progress, "sync", "segments");
	if (!progress.on || !upload_counts(mnt, &base)) {
		sync_call_run(&call);	/* quiet; or an analysis mount */
		return call.rc;
	}
	s.bytes_total = base.pending_bytes;
	s.objects_total = base.pending_segments;
	fs_progress_show(&progress, &s, true);
	rc = pthread_create(&thread, NULL, sync_call_run, &call);
	if (rc) {
		fs_progress_end(&progress);
		return -rc;
	}
	while (!atomic_load(&call.done)) {
		nanosleep(&tick, NULL);
		if (!upload_counts(mnt, &now))
			continue;
		s.bytes_done = now.uploaded_bytes - base.uploaded_bytes;
		s.objects_done = now.uploaded_segments - base.uploaded_segments;
		s.bytes_total = s.bytes_done + now.pending_bytes;
		s.objects_total = s.objects_done + now.pending_segments;
		fs_progress_show(&progress, &s, false);
	}
	pthread_join(thread, NULL);
	fs_progress_end(&progress);
	return call.rc;
}

static int cmd_sync(int argc, char *argv[])
{
	const char *mnt = NULL, *bad = NULL;
	long secs = 0;
	char name[64], *text = NULL;
	int rc;

	for (int i = 2; i < argc && !bad; i++) {
		const char *t = NULL;

		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			t = argv[++i];
		else if (strncmp(argv[i], "--timeout=", 10) == 0)
			t = argv[i] + 10;
		else if (!mnt && argv[i][0] != '-')
			mnt = argv[i];
		else
			bad = argv[i];
		if (t && !(secs = parse_timeout(t))) {
			fprintf(stderr, "streamfs: sync: --timeout wants whole "
				"seconds from 1 to 86400, not '%s'\n", t);
			bad = t;
		}
	}
	if (!mnt || bad) {
		fprintf(stderr, "usage: %s sync [--timeout SECS] MOUNTPOINT\n",
			argv[0]);
		return EXIT_USAGE;
	}
	if (secs)
		snprintf(name, sizeof(name), "user.streamfs.sync_now.%ld", secs);
	else
		snprintf(name, sizeof(name), "user.streamfs.sync_now");
	rc = sync_shown(mnt, name);
	if (rc == 0)
		return 0;
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "streamfs: sync of %s did not finish in time\n",
			mnt);
	else
		explain(mnt, rc);
	/* Say why, from the mount's own status. */
	if (rc != -ENOTSUP && read_xattr(mnt, "user.streamfs.status", &text) == 0) {
		fputs(text, stderr);
		free(text);
	}
	return EXIT_FAILURE;
}

static int cmd_mount(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fs_opts o;
	int status = 1;

	if (fs_opts_parse(&args, &o))
		goto out;
	if (o.show_version) {
		printf("streamfs %s (libfuse %s)\n", STREAMFS_VERSION,
		       fuse_pkgversion());
		status = 0;
	} else if (o.show_help) {
		fs_usage(argv[0]);
		printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		status = 0;
	} else {
		status = fs_run(&o, &args);
	}
out:
	fs_opts_release(&o);
	fuse_opt_free_args(&args);
	return status;
}

int main(int argc, char *argv[])
{
	int status;

	/* libfuse callocs a 128-byte struct fuse_req for every request, and
	 * glibc's calloc() never takes a chunk back from the thread cache:
	 * each came from the bins, through unlink_chunk(), 4% of the daemon's
	 * time for one event per write(2) (perf).  Chunks of up to 160 bytes
	 * freed past the full thread cache go to a fast bin instead, where
	 * calloc() finds them at once. */
	mallopt(M_MXFAST, 160);
	/* Before any thread exists (libcurl's thread-safety rules). */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "streamfs: curl_global_init failed\n");
		return 1;
	}
	if (argc > 1 && strcmp(argv[1], "verify") == 0)
		status = cmd_verify(argc, argv);
	else if (argc > 1 && strcmp(argv[1], "status") == 0)
		status = cmd_status(argc, argv);
	else if (argc > 1 && strcmp(argv[1], "sync") == 0)
		status = cmd_sync(argc, argv);
	else
		status = cmd_mount(argc, argv);
	curl_global_cleanup();
	return status;
}
