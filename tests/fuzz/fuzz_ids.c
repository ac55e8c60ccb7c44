/*
 * libFuzzer target: the event ID of a JSON line (store_ids_extract).
 *
 * Besides what the sanitizers see, two oracles, on every line json-c can
 * judge whole (one that does not nest past its depth limit):
 *  - the walk of the top level that store_ids_extract() falls back on
 *    past json-c's depth (store_ids_find_top) finds the same ID, or none;
 *  - the line with a member nested 40 deep put in front of its own
 *    members, which json-c cannot judge whole, has the same ID, or none.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELD "id"
#define DEEP 40

struct verdict {
	int rc;
	char *id;	/* a copy, when rc is 1 */
	size_t len;
};

static struct verdict judge(int (*fn)(struct ids_scratch *, const char *,
				      size_t, const char **, size_t *),
			    const char *line, size_t len)
{
	struct ids_scratch sc;
	struct verdict v = { 0 };
	const char *id;
	size_t idlen;

	store_ids_scratch_init(&sc, FIELD);
	v.rc = fn(&sc, line, len, &id, &idlen);
	if (v.rc == 1) {
		v.id = malloc(idlen + 1);
		if (!v.id)
			abort();
		memcpy(v.id, id, idlen);	/* the sanitizers check ID */
		v.len = idlen;
	}
	store_ids_scratch_release(&sc);
	return v;
}

static void same(const struct verdict *a, const struct verdict *b,
		 const char *what)
{
	if (a->rc == b->rc && a->len == b->len &&
	    (a->rc != 1 || !memcmp(a->id, b->id, a->len)))
		return;
	fprintf(stderr, "fuzz_ids: %s: %d \"%.*s\" vs %d \"%.*s\"\n", what,
		a->rc, (int)a->len, a->id ? a->id : "", b->rc, (int)b->len,
		b->id ? b->id : "");
	abort();
}

/* Whether json-c stops at its depth limit on LINE, as store_ids_extract()'s
 * own parse does. */
static bool too_deep(const char *line, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
	struct json_object *obj;
	bool deep;

	if (!tok)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, line, (int)len);
	deep = !obj && json_tokener_get_error(tok) == json_tokener_error_depth;
	json_object_put(obj);
	json_tokener_free(tok);
	return deep;
}

/* LINE, an object with members, with a deep member put first (caller
 * frees); NULL when LINE is no such object. */
static char *deepened(const char *line, size_t len, size_t *outlen)
{
	static const char head[] = "{\"deep\":";
	size_t i = 0, n;
	char *out, *p;

	while (i < len && strchr(" \t\r\n", line[i]) && line[i])
		i++;
	if (i == len || line[i] != '{')
		return NULL;
	for (n = i + 1; n < len && line[n] && strchr(" \t\r\n", line[n]); n++)
		;
	if (n == len || line[n] == '}')
		return NULL;
	n = sizeof(head) - 1 + 2 * DEEP + 1 + (len - i - 1);
	out = malloc(n);
	if (!out)
		abort();
	p = (char *)memcpy(out, head, sizeof(head) - 1) + sizeof(head) - 1;
	p = (char *)memset(p, '[', DEEP) + DEEP;
	p = (char *)memset(p, ']', DEEP) + DEEP;
	*p++ = ',';
	memcpy(p, line + i + 1, len - i - 1);
	*outlen = n;
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct verdict got, top, deep;
	size_t dlen;
	char *d;

	if (size > 1 << 20)
		return 0;
	got = judge(store_ids_extract, line, size);
	if (got.rc < 0)
		abort();
	if (!too_deep(line, size)) {
		top = judge(store_ids_find_top, line, size);
		same(&got, &top, "json-c and the top-level walk disagree");
		free(top.id);
		d = deepened(line, size, &dlen);
		if (d) {
			deep = judge(store_ids_extract, d, dlen);
			same(&got, &deep, "a deep member changed the ID");
			free(deep.id);
			free(d);
		}
	}
	free(got.id);
	return 0;
}
