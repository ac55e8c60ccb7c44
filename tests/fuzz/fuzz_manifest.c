/*
 * libFuzzer target: the decoder of tenant manifests (sync_manifest_decode,
 * sync/manifest.c), the JSON a replica reads from the remote, and what is
 * done next with what it decodes: the keys it names.
 *
 * Oracle beyond the sanitizers: a decoded manifest, encoded, decodes and
 * encodes again to the same text (encoding is stable after one round).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* M encoded, decoded and encoded again: the two texts must be the same. */
static void round_trip(const struct manifest *m, bool times)
{
	struct manifest again;
	char *text, *text2;

	if (sync_manifest_encode(m, times, &text))
		abort();
	if (sync_manifest_decode(text, strlen(text), &again) ||
	    sync_manifest_encode(&again, times, &text2))
		abort();
	if (strcmp(text, text2)) {
		fprintf(stderr, "fuzz_manifest: not stable:\n%s\n%s\n", text,
			text2);
		abort();
	}
	free(text);
	free(text2);
	sync_manifest_release(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sync_strvec keys = { 0 };
	struct manifest m;
	int rc = sync_manifest_decode((const char *)data, size, &m);

	if (rc) {
		if (rc != -EIO)
			abort();
		return 0;
	}
	round_trip(&m, true);
	round_trip(&m, false);
	if (sync_manifest_keys(&m, "tenants/t/", &keys) ||
	    sync_manifest_stale_keys(&m, &m, "tenants/t/", &keys))
		abort();
	sync_strvec_release(&keys);
	sync_manifest_release(&m);
	return 0;
}
