/*
 * streamfs: the event store as a filesystem.
 *   streamfs SOURCE MOUNTPOINT [-f] [-d] [-o OPT,...]
 *   streamfs verify DATADIR
 */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "fs.h"

static int cmd_verify(int argc, char *argv[])
{
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: %s verify DATADIR\n", argv[0]);
		return 2;
	}
	rc = store_verify(argv[2], stdout);
	if (rc < 0) {
		fprintf(stderr, "streamfs: verify %s: %s\n", argv[2],
			strerror(-rc));
		return 2;
	}
	return rc;
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
	else
		status = cmd_mount(argc, argv);
	curl_global_cleanup();
	return status;
}
