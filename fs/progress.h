/*
 * progress: a progress line on stderr for the long tools (progress.c),
 * drawn only when stderr is a terminal.
 */
#ifndef STREAMFS_FS_PROGRESS_H
#define STREAMFS_FS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct fs_progress {
	const char *what;	/* borrowed: "verify", "sync" */
	const char *objects;	/* borrowed: what is counted, "segments" */
	bool on;		/* stderr is a terminal */
	bool drawn;		/* a line is on the screen */
	int64_t start_ns, last_ns;	/* CLOCK_MONOTONIC */
};

struct fs_progress_state {
	uint64_t bytes_done, bytes_total;
	uint64_t objects_done, objects_total;
};

/* Starts the clock the rate is measured from. */
void fs_progress_init(struct fs_progress *p, const char *what,
		      const char *objects);
/* Draws S, unless drawn less than 200 ms ago and not NOW. */
void fs_progress_show(struct fs_progress *p, const struct fs_progress_state *s,
		      bool now);
/* Erases the line, leaving the cursor where it was before the first. */
void fs_progress_end(struct fs_progress *p);

#endif
