/*
 * fs: streamfs mounted through libfuse3's low-level API.
 *
 * fs_opts_parse() reads SOURCE, MOUNTPOINT and the -o options of the
 * contract out of a fuse_args vector (libfuse's fuse_opt), leaving the
 * options libfuse itself understands in place.  fs_run() then locks SOURCE,
 * opens the store, mounts, serves until unmounted or signalled, and tears
 * everything down.  See docs/CACHING.md for how the kernel caches are used.
 */
#ifndef STREAMFS_FS_H
#define STREAMFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "store.h"

/* SOURCE's state when it becomes a data directory (source.c). */
enum fs_source_new {
	FS_SOURCE_FOUND,	/* a data directory already */
	FS_SOURCE_WAS_EMPTY,	/* an empty directory */
	FS_SOURCE_CREATED,	/* missing, made by -o create */
};

struct fs_opts {
	char *source;		/* owned */
	char *remote;		/* owned; remote= URL or NULL */
	char *remote_shown;	/* owned; remote with any user:password@ as
				 * ***@: the only form any message, log
				 * line or status may print */
	char *endpoint;		/* owned */
	char *region;		/* owned */
	char *credentials;	/* owned; path of a credentials file */
	char *log_file;		/* owned; log=FILE, or NULL */
	char *framing_str;	/* owned; "lines" or "raw" */
	char *sync_str;		/* owned; "none" or "always" */
	char *roll_str, *roll_size_str, *max_event_str;	/* owned */
	char *cache_size_str, *poll_str;	/* owned */
	char *flush_str;		/* owned: flush=DURATION|off */
	char *piece_keep_str;	/* owned: piece_keep=DURATION */
	char *max_snapshot_str;	/* owned */
	char *lease_str;	/* owned; lease= DURATION */
	int takeover;		/* take tenants whose lease expired */
	int risk_forks;		/* a writer on a remote that cannot fence */
	char *ca_file;		/* owned; extra CA bundle for https/s3 */
	char *metrics;		/* owned; metrics=ADDR:PORT or NULL */
	int query_slash_raw;	/* s3: see remote/backend.h */
	int path_style;
	int nodelete;
	int create;		/* -o create: a missing SOURCE is made */
	int io_uring;		/* FUSE requests over io_uring (ring.c) */
	int ro;
	int allow_other;	/* libfuse's options, seen on their way */
	int default_permissions;
	int allow_other_unchecked;	/* allow_other_without_permissions */
	int show_help;
	int show_version;

	/* Parsed values, filled by fs_opts_parse(). */
	struct store_config store;
	uint64_t cache_size;	/* 0: unbounded */
	uint64_t max_snapshot;	/* largest snapshot blob (default 64 MiB) */
	int64_t poll_ns;
	int64_t lease_ns;	/* 0: sync's default (60 s) */
	int64_t flush_ns;		/* 0: off */
	int64_t piece_keep_ns;	/* 0: sync's default (60 s) */
	bool replica;		/* remote= with ro: an analysis host */
	struct sockaddr_storage metrics_addr;	/* metrics= parsed */
	socklen_t metrics_addrlen;
	enum fs_source_new source_new;	/* by fs_source_resolve() */
};

/* Parses ARGS in place (libfuse options stay in ARGS).  Prints a message and
 * returns -EINVAL on a bad option.  O (OUT) owns strings freed by
 * fs_opts_release(). */
int fs_opts_parse(struct fuse_args *args, struct fs_opts *o);
void fs_opts_release(struct fs_opts *o);
void fs_usage(const char *prog);

/* source.c: SOURCE, a data directory (see there). */
enum fs_source_kind {
	FS_SOURCE_STORE,	/* holds tenants/ */
	FS_SOURCE_EMPTY,	/* nothing but what source.c ignores */
	FS_SOURCE_OTHER,	/* a directory with other things in it */
	FS_SOURCE_MOUNT,	/* the root of a streamfs mount */
};
/* What DIR is, or -errno: -ENOENT missing, -ENOTDIR not a directory. */
int fs_source_kind(const char *dir);
/* Takes a shared lock on DIR's streamfs.lock for a reader that no daemon
 * may write under (verify): returns the fd holding it (closing it
 * releases it), -ENOENT when DIR has no lock file (never mounted), or
 * -EWOULDBLOCK when a daemon holds it; then *holder (OUT, caller frees;
 * NULL when unknown) says which: "pid N, mounted on MNT". */
int fs_source_lock_shared(const char *dir, char **holder);

/* Mounts and serves.  Returns the process exit status. */
int fs_run(struct fs_opts *o, struct fuse_args *args);

#endif
