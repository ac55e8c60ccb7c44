/*
 * store_util: small helpers of store/'s lowest layer (util.c) that sync/
 * and fs/ may use too: whole reads and writes at an offset, the XXH3-64 of
 * a file's bytes, and a growable array.  They return 0 or -errno, take no
 * lock and keep no state.
 */
#ifndef STREAMFS_STORE_UTIL_H
#define STREAMFS_STORE_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct XXH3_state_s;

/* Writes all LEN bytes of BUF at OFF, through short writes and EINTR;
 * -EIO when the file takes no byte more. */
int store_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
/* Reads exactly LEN bytes at OFF into BUF; -EIO when the file ends first. */
int store_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* The same at FD's position (a pipe, a socket). */
int store_read_all(int fd, void *buf, size_t len);

/* Calls FN on the first LEN bytes of the file behind FD, in order, at most
 * 1 MiB at a time; FN returns 0 to go on or -errno, which stops the walk
 * and is returned.  -EIO when the file is shorter than LEN. */
int store_file_chunks(int fd, uint64_t len,
		      int (*fn)(void *arg, const void *p, size_t n),
		      void *arg);
/* Feeds those bytes to STATE, an XXH3-64 state the caller has reset. */
int store_file_hash(int fd, uint64_t len, struct XXH3_state_s *state);
/* *SUM (OUT): their XXH3-64, the checksum of a segment. */
int store_file_checksum(int fd, uint64_t len, uint64_t *sum);

/* The capacity a growable array of CAP elements takes to hold WANT: FIRST
 * when empty, then doubled; WANT itself where doubling would overflow. */
static inline size_t store_array_cap(size_t cap, size_t want, size_t first)
{
	size_t ncap = cap ? cap : first;

	while (ncap < want) {
		if (ncap > SIZE_MAX / 2)
			return want;
		ncap *= 2;
	}
	return ncap;
}

/* Makes room in the array V, of CAP (a size_t) elements allocated, for
 * WANT elements: 0, or -ENOMEM with V and CAP as they were.  An empty
 * array starts at FIRST elements.  The caller keeps the count. */
#define STORE_ARRAY_RESERVE(v, cap, want, first) __extension__({	\
	size_t want_ = (want);						\
	int rc_ = 0;							\
									\
	if (want_ > (cap)) {						\
		size_t ncap_ = store_array_cap((cap), want_, (first));	\
		__typeof__(v) nv_ = reallocarray((v), ncap_, sizeof(*(v))); \
									\
		if (nv_) {						\
			(v) = nv_;					\
			(cap) = ncap_;					\
		} else {						\
			rc_ = -ENOMEM;					\
		}							\
	}								\
	rc_;								\
})

#endif
