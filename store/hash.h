/*
 * XXH3-64, the checksum of batches and segments (docs/FORMAT.md) and the
 * hash of event IDs.  Where libxxhash carries its x86 runtime dispatch,
 * XXH3_64bits and XXH3_64bits_update pick the widest vector unit the CPU
 * has (AVX2, AVX-512): the same hashes, several times faster than the
 * library's baseline SSE2 code on large inputs.
 */
#ifndef STREAMFS_HASH_H
#define STREAMFS_HASH_H

#define XXH_STATIC_LINKING_ONLY	/* XXH3_state_t on the stack */
#include <xxhash.h>
#ifdef HAVE_XXH_X86DISPATCH
#include <xxh_x86dispatch.h>
#endif

#endif
