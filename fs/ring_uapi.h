/*
 * ring_uapi: the kernel's FUSE-over-io_uring interface, for ring.c.
 *
 * linux/fuse.h has it from protocol 7.42 on; Debian 12's headers predate
 * it, so it is spelled out here when they lack it.
 */
#ifndef STREAMFS_RING_UAPI_H
#define STREAMFS_RING_UAPI_H

#include <linux/fuse.h>
#include <stdint.h>

#ifndef FUSE_URING_IN_OUT_HEADER_SZ
#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ 128

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* the request's unique */
	uint32_t payload_sz;	/* bytes used in the payload buffer */
	uint32_t padding;
	uint64_t reserved;
};

struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ];	/* fuse_in/out_header */
	char op_in[FUSE_URING_OP_IN_OUT_SZ];	/* the opcode's own header */
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
#endif

/* FUSE_OVER_IO_URING (1ULL << 41), as INIT's flags2 carries it. */
#define RING_INIT_FLAG2 (1u << 9)

#endif
