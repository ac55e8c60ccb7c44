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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "config.h"
#include "fs.h"

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

static int cmd_verify(int argc, char *argv[])
{
	int rc, lock;

	if (argc != 3) {
		fprintf(stderr, "usage: %s verify DATADIR\n", argv[0]);
		return EXIT_USAGE;
	}
	if (check_data_dir(argv[2]))
		return EXIT_FAILURE;
	if (lock_for_verify(argv[2], &lock))
		return EXIT_USAGE;
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
	rc = read_xattr(mnt, name, &text);
	free(text);
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
