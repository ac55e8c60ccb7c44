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
 * the sync did not finish) and 2 on a usage error (EXIT_USAGE).
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "config.h"
#include "fs.h"

/* Beside stdlib's EXIT_SUCCESS (0) and EXIT_FAILURE (1). */
#define EXIT_USAGE 2

/* Says why DIR cannot be a data directory, or returns 0 when it may be one:
 * a directory holding tenants/ (where store/ keeps its tenants: TENANTS_DIR
 * of store_int.h; every mount creates it). */
static int check_data_dir(const char *dir)
{
	struct stat st;
	char *tenants;
	int rc;

	if (stat(dir, &st)) {
		fprintf(stderr, "streamfs: verify %s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "streamfs: verify %s: not a directory\n", dir);
		return -1;
	}
	if (asprintf(&tenants, "%s/tenants", dir) < 0) {
		fprintf(stderr, "streamfs: verify: out of memory\n");
		return -1;
	}
	rc = stat(tenants, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
	free(tenants);
	if (rc)
		fprintf(stderr, "streamfs: verify %s: not a streamfs data "
			"directory (it has no tenants/ directory)\n", dir);
	return rc;
}

static int cmd_verify(int argc, char *argv[])
{
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: %s verify DATADIR\n", argv[0]);
		return EXIT_USAGE;
	}
	if (check_data_dir(argv[2]))
		return EXIT_FAILURE;
	rc = store_verify(argv[2], stdout);
	if (rc < 0) {
		fprintf(stderr, "streamfs: verify %s: %s\n", argv[2],
			strerror(-rc));
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

static void explain(const char *mnt, int err)
{
	if (err == -ENOTSUP || err == -ENODATA)
		fprintf(stderr, "streamfs: %s is not the root of a streamfs "
			"mount\n", mnt);
	else
		fprintf(stderr, "streamfs: %s: %s\n", mnt, strerror(-err));
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
