/*
 * keys.c: the keys of the remote layout (docs/FORMAT.md), each spelled
 * here and nowhere else:
 *
 *   streamfs-v1/tenants.json
 *   streamfs-v1/tenants/ENC/manifest.json
 *   streamfs-v1/tenants/ENC/lease.json
 *   streamfs-v1/tenants/ENC/segments/ID-XXH3        (ID and XXH3: 16 hex)
 *   streamfs-v1/tenants/ENC/segments/ID-XXH3.idx    (its event index)
 *
 * ENC is the tenant name through sync_key_encode().  Every function returns
 * a malloc'd string the caller frees, or NULL when out of memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync.h"
#include "sync_int.h"

const char sync_tenants_key[] = SYNC_ROOT "/tenants.json";

static bool key_byte_plain(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '-';
}

char *sync_key_encode(const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(name);

	/* '~' instead of '%': keys then hold only bytes that never need URL
	 * escaping, so no server can decode them differently. */
	char *out = malloc(3 * n + 1), *w = out;

	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (key_byte_plain(*p)) {
			*w++ = (char)*p;
		} else {
			*w++ = '~';
			*w++ = hex[*p >> 4];
			*w++ = hex[*p & 15];
		}
	}
	*w = '\0';
	return out;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sync_key_decode(const char *enc, char **out)
{
	char *name = malloc(strlen(enc) + 1), *w = name;

	*out = NULL;
	if (!name)
		return -ENOMEM;
	for (const char *p = enc; *p; p++) {
		int hi, lo;

		if (key_byte_plain((unsigned char)*p)) {
			*w++ = *p;
			continue;
		}
		/* Only what sync_key_encode() writes: "~XX", upper case,
		 * for a byte it would not keep as it is. */
		hi = *p == '~' ? hex_digit(p[1]) : -1;
		lo = hi >= 0 ? hex_digit(p[2]) : -1;
		if (lo < 0 || !(hi | lo) || key_byte_plain((unsigned char)(hi << 4 | lo))) {
			free(name);
			return -EINVAL;
		}
		*w++ = (char)(hi << 4 | lo);
		p += 2;
	}
	*w = '\0';
	*out = name;
	return 0;
}

char *sync_tenant_prefix(const char *tenant)
{
	char *enc = sync_key_encode(tenant), *out = NULL;

	if (enc && asprintf(&out, SYNC_ROOT "/tenants/%s/", enc) < 0)
		out = NULL;
	free(enc);
	return out;
}

char *sync_segment_key(const char *tprefix, uint64_t id, uint64_t checksum,
		       bool index)
{
	char *out;

	if (asprintf(&out, "%ssegments/%016" PRIx64 "-%016" PRIx64 "%s",
		     tprefix, id, checksum, index ? ".idx" : "") < 0)
		return NULL;
	return out;
}

char *sync_ids_key(const char *tprefix, uint64_t id, uint64_t checksum)
{
	char *out;

	if (asprintf(&out, "%ssegments/%016" PRIx64 "-%016" PRIx64 ".ids",
		     tprefix, id, checksum) < 0)
		return NULL;
	return out;
}

char *sync_snapshot_key(const char *tprefix, uint64_t version,
			uint64_t checksum)
{
	char *out;

	if (asprintf(&out, "%ssnapshots/%016" PRIx64 "-%016" PRIx64, tprefix,
		     version, checksum) < 0)
		return NULL;
	return out;
}

char *sync_manifest_key(const char *tprefix)
{
	char *out;

	if (asprintf(&out, "%smanifest.json", tprefix) < 0)
		return NULL;
	return out;
}

char *sync_lease_key(const char *tenant)
{
	char *tp = sync_tenant_prefix(tenant), *out = NULL;

	if (tp && asprintf(&out, "%slease.json", tp) < 0)
		out = NULL;
	free(tp);
	return out;
}
