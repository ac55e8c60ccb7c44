/*
 * ring: FUSE requests over io_uring, for a libfuse 3.14 low-level session
 * (see ring.c).
 *
 * fs_ring_attach() routes the session's I/O through the ring's custom io;
 * call it after fuse_session_mount() and before serving, once per process.
 * The ring starts when INIT is answered, if the kernel offers it; until
 * then, and when it does not, requests go through /dev/fuse as usual.
 * fs_ring_stop() ends the ring's threads when the session loop returns
 * (replies sent after it go to /dev/fuse); fs_ring_free() after the
 * unmount, when no thread may reply any more.
 */
#ifndef STREAMFS_RING_H
#define STREAMFS_RING_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdint.h>

struct fs_ring;

int fs_ring_attach(struct fuse_session *se, struct fs_ring **out);
void fs_ring_stop(struct fs_ring *r);
void fs_ring_free(struct fs_ring *r);
/* Queues serving requests (0: none, all go through /dev/fuse) and the
 * requests taken from them so far. */
void fs_ring_stats(const struct fs_ring *r, unsigned *queues,
		   uint64_t *served);

#endif
