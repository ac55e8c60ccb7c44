/*
 * Event IDs: extraction from JSON lines (json-c, and past its depth limit
 * a walk of the top level that hands json-c each member), the in-memory
 * set of the active segment, the Bloom filter in front of the sealed
 * tables, and the sealed per-segment ID tables (sorted (hash, offset) pairs
 * in a .ids file).
 *
 * Hashes only narrow the search: a hash hit is confirmed by reading the
 * stored event and comparing its ID byte for byte (dedup_confirm).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <json-c/json.h>

#include "hash.h"
#include "store_int.h"

uint64_t store_ids_hash(const char *id, size_t len)
{
	return XXH3_64bits(id, len);
}

/* ---- extraction ---- */

/* Cheap: most appends carry no ID, and the tokener is made only for a
 * line that may have one (store_ids_extract). */
void store_ids_scratch_init(struct ids_scratch *sc, const char *field)
{
	size_t len = strnlen(field, STORE_ID_FIELD_MAX);

	sc->tok = NULL;
	sc->last = NULL;
	sc->pattern[0] = '"';
	memcpy(sc->pattern + 1, field, len);
	sc->pattern[len + 1] = '"';
	sc->patlen = len + 2;
	memcpy(sc->field, field, len);
	sc->field[len] = '\0';
}

void store_ids_scratch_release(struct ids_scratch *sc)
{
	json_object_put(sc->last);
	if (sc->tok)
		json_tokener_free(sc->tok);
}

static bool is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Cheap tests that rule out most lines without an ID before parsing: the
 * line must start with '{' and name the member literally, unless it uses
 * escapes (which could spell the member's name another way). */
static bool may_have_id(const struct ids_scratch *sc, const char *line,
			size_t len)
{
	size_t i = 0;

	while (i < len && is_json_space(line[i]))
		i++;
	if (i == len || line[i] != '{')
		return false;
	return memmem(line, len, sc->pattern, sc->patlen) ||
	       memchr(line, '\\', len);
}

static int tokener_ready(struct ids_scratch *sc)
{
	if (!sc->tok) {
		sc->tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
		if (!sc->tok)
			return -ENOMEM;
		json_tokener_set_flags(sc->tok, JSON_TOKENER_STRICT);
	}
	json_tokener_reset(sc->tok);
	return 0;
}

/* The member named as the ID in OBJ, a parsed line: 1 when it is a string
 * (*id, *idlen set), else 0. */
static int id_member(const struct ids_scratch *sc, struct json_object *obj,
		     const char **id, size_t *idlen)
{
	struct json_object *member;

	if (!json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, sc->field, &member) ||
	    !json_object_is_type(member, json_type_string))
		return 0;
	*id = json_object_get_string(member);
	*idlen = (size_t)json_object_get_string_len(member);
	return 1;
}

int store_ids_extract(struct ids_scratch *sc, const char *line, size_t len,
		      const char **id, size_t *idlen)
{
	struct json_object *obj;
	size_t end;
	int rc;

	json_object_put(sc->last);
	sc->last = NULL;
	if (!may_have_id(sc, line, len))
		return 0;
	if ((rc = tokener_ready(sc)))
		return rc;
	obj = json_tokener_parse_ex(sc->tok, line, (int)len);
	if (!obj) {
		/* json-c keeps a record per level: past its depth, the
		 * top level is walked with a counter instead */
		if (json_tokener_get_error(sc->tok) == json_tokener_error_depth)
			return store_ids_find_top(sc, line, len, id, idlen);
		return 0;
	}
	sc->last = obj;
	for (end = json_tokener_get_parse_end(sc->tok); end < len; end++)
		if (!is_json_space(line[end]))
			return 0;
	return id_member(sc, obj, id, idlen);
}

/* ---- the top level of a line too deep for json-c ----
 *
 * store_ids_find_top() walks the top-level object itself: the braces,
 * colons and commas between its members.  Each member's name and value
 * still go to json-c, which decodes the strings (escapes included) and
 * checks the values.  A value nested deeper than json-c's depth limit is
 * checked by json-c up to where it goes too deep; from there on only that
 * its brackets balance (a counter, not a stack: "[}" is not noticed), its
 * strings end and it holds no NUL byte.  Nothing else grows with the
 * depth.  As with json-c, the last member of the name wins. */

static size_t skip_space(const char *line, size_t len, size_t i)
{
	while (i < len && is_json_space(line[i]))
		i++;
	return i;
}

/* The end (past the closing quote) of the string opening at I, or 0. */
static size_t string_end(const char *line, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (line[i] == '"')
			return i + 1;
		if (line[i] == '\\')
			i++;
	}
	return 0;
}

/* The end of the array or object opening at I, by counting brackets, or 0. */
static size_t nested_end(const char *line, size_t len, size_t i)
{
	size_t depth = 0;

	for (; i < len; i++) {
		switch (line[i]) {
		case '"':
			i = string_end(line, len, i);
			if (!i)
				return 0;
			i--;
			break;
		case '[':
		case '{':
			depth++;
			break;
		case ']':
		case '}':
			if (--depth == 0)
				return i + 1;
			break;
		case '\0':
			return 0;
		}
	}
	return 0;
}

/* The end of the value starting at I: a string, a nested value, or a
 * scalar, which runs to the next delimiter (json-c judges it); 0 if it
 * does not end. */
static size_t value_end(const char *line, size_t len, size_t i)
{
	if (i == len)
		return 0;
	if (line[i] == '"')
		return string_end(line, len, i);
	if (line[i] == '[' || line[i] == '{')
		return nested_end(line, len, i);
	while (i < len && line[i] != ',' && line[i] != '}' &&
	       !is_json_space(line[i]))
		i++;
	return i;
}

/* Has json-c parse the whole of the value P (LEN bytes) into *OBJ (OUT,
 * caller puts; NULL for null).  1 when it is valid JSON, or valid as far
 * as json-c's depth reaches (*OBJ NULL then); 0 if not. */
static int parse_value(struct ids_scratch *sc, const char *p, size_t len,
		       struct json_object **obj)
{
	enum json_tokener_error err;
	int rc = tokener_ready(sc);

	*obj = NULL;
	if (rc)
		return rc;
	*obj = json_tokener_parse_ex(sc->tok, p, (int)len);
	err = json_tokener_get_error(sc->tok);
	if (err == json_tokener_continue) {
		/* all taken, and a number may go on: say that nothing does */
		*obj = json_tokener_parse_ex(sc->tok, "", 1);
		return json_tokener_get_error(sc->tok) == json_tokener_success;
	}
	if (err == json_tokener_success)
		return json_tokener_get_parse_end(sc->tok) == len;
	return err == json_tokener_error_depth;
}

/* Whether the member name at I (a string token ending at END) is the ID
 * field: 1 or 0, -EINVAL when it is no valid string, -ENOMEM.  json-c
 * decodes it, and it compares as json-c compares its own keys (up to a
 * NUL that an escape may put in). */
static int is_id_name(struct ids_scratch *sc, const char *line, size_t i,
		      size_t end)
{
	struct json_object *name;
	int rc = parse_value(sc, line + i, end - i, &name);

	if (rc == 0 || (rc > 0 && !json_object_is_type(name, json_type_string)))
		rc = -EINVAL;
	else if (rc > 0)
		rc = !strcmp(json_object_get_string(name), sc->field);
	json_object_put(name);
	return rc;
}

/* One member at *POS: name, colon, value; *POS (IN/OUT) moves past it.
 * Keeps in *FOUND (caller puts) the value of a member named as the ID.
 * 1, or 0 when the member is not valid JSON, or -ENOMEM. */
static int member(struct ids_scratch *sc, const char *line, size_t len,
		  size_t *pos, struct json_object **found)
{
	size_t i = *pos, end;
	struct json_object *value;
	int named, rc;

	end = line[i] == '"' ? string_end(line, len, i) : 0;
	if (!end)
		return 0;
	named = is_id_name(sc, line, i, end);
	if (named < 0)
		return named == -EINVAL ? 0 : named;
	i = skip_space(line, len, end);
	if (i == len || line[i] != ':')
		return 0;
	i = skip_space(line, len, i + 1);
	end = value_end(line, len, i);
	if (!end)
		return 0;
	rc = parse_value(sc, line + i, end - i, &value);
	if (rc > 0 && named) {
		json_object_put(*found);
		*found = value;
	} else {
		json_object_put(value);
	}
	*pos = end;
	return rc;
}

/* The members from *POS (IN/OUT) up to the object's closing brace, where
 * it leaves *POS.  1, or 0 when they are not valid JSON, or -ENOMEM. */
static int members(struct ids_scratch *sc, const char *line, size_t len,
		   size_t *pos, struct json_object **found)
{
	for (;;) {
		int rc = *pos < len ? member(sc, line, len, pos, found) : 0;

		if (rc <= 0)
			return rc;
		*pos = skip_space(line, len, *pos);
		if (*pos == len || line[*pos] != ',')
			return *pos < len && line[*pos] == '}';
		*pos = skip_space(line, len, *pos + 1);
	}
}

int store_ids_find_top(struct ids_scratch *sc, const char *line, size_t len,
		       const char **id, size_t *idlen)
{
	struct json_object *found = NULL;
	size_t i = skip_space(line, len, 0);
	int rc;

	json_object_put(sc->last);
	sc->last = NULL;
	if (i == len || line[i] != '{')
		return 0;
	i = skip_space(line, len, i + 1);
	rc = i < len && line[i] == '}' ? 1 : members(sc, line, len, &i, &found);
	if (rc > 0 && skip_space(line, len, i + 1) == len &&
	    json_object_is_type(found, json_type_string)) {
		sc->last = found;
		*id = json_object_get_string(found);
		*idlen = (size_t)json_object_get_string_len(found);
		return 1;
	}
	json_object_put(found);
	return rc < 0 ? rc : 0;
}

/* ---- the active segment's set ---- */

void store_idset_init(struct idset *s)
{
	memset(s, 0, sizeof(*s));
}

void store_idset_release(struct idset *s)
{
	free(s->slots);
	store_idset_init(s);
}

static void idset_put(uint64_t *slots, size_t mask, uint64_t hash,
		      uint64_t offset1)
{
	size_t i = hash & mask;

	while (slots[2 * i + 1])
		i = (i + 1) & mask;
	slots[2 * i] = hash;
	slots[2 * i + 1] = offset1;
}

#define HUGE_PAGE ((size_t)2 << 20)

/* Zeroed slots.  A table of 2 MiB or more is probed at random, an event
 * at a time: in 2 MiB pages its probes miss the TLB far less, and it is
 * faulted in 2 MiB at a time. */
static uint64_t *slots_alloc(size_t nslots)
{
	size_t size = nslots * 2 * sizeof(uint64_t);
	void *p;

	if (size < HUGE_PAGE)
		return calloc(nslots, 2 * sizeof(uint64_t));
	if (posix_memalign(&p, HUGE_PAGE, size))
		return NULL;
	(void)madvise(p, size, MADV_HUGEPAGE);	/* a hint */
	return memset(p, 0, size);
}

static int idset_grow(struct idset *s)
{
	size_t nslots = s->slots ? (s->mask + 1) * 2 : 1024;
	uint64_t *slots = slots_alloc(nslots);

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; s->slots && i <= s->mask; i++)
		if (s->slots[2 * i + 1])
			idset_put(slots, nslots - 1, s->slots[2 * i],
				  s->slots[2 * i + 1]);
	free(s->slots);
	s->slots = slots;
	s->mask = nslots - 1;
	return 0;
}

int store_idset_add(struct idset *s, uint64_t hash, uint64_t offset)
{
	if (!s->slots || (s->used + 1) * 2 > s->mask + 1) {
		int rc = idset_grow(s);

		if (rc)
			return rc;
	}
	idset_put(s->slots, s->mask, hash, offset + 1);
	s->used++;
	return 0;
}

/* Keeps its slots: the next segment's IDs fill it as the last one's did,
 * and growing a table of a million slots held an append up for 50 ms. */
int store_idset_drop_below(struct idset *s, uint64_t below)
{
	uint64_t *keep;
	size_t n;
	int rc;

	if (!s->slots)
		return 0;
	rc = store_idset_pairs(s, below, UINT64_MAX, &keep, &n);
	if (rc)
		return rc;
	memset(s->slots, 0, (s->mask + 1) * 2 * sizeof(uint64_t));
	s->used = 0;
	for (size_t i = 0; i < n && !rc; i++)
		rc = store_idset_add(s, keep[2 * i], keep[2 * i + 1]);
	free(keep);
	return rc;
}

int store_idset_next(const struct idset *s, uint64_t hash, size_t *pos,
		     uint64_t *offset)
{
	if (!s->slots)
		return 0;
	for (;;) {
		size_t i = (hash + *pos) & s->mask;

		if (!s->slots[2 * i + 1])
			return 0;
		(*pos)++;
		if (s->slots[2 * i] == hash) {
			*offset = s->slots[2 * i + 1] - 1;
			return 1;
		}
	}
}

/* ---- Bloom filter ---- */

#define BLOOM_K 7

int store_bloom_init(struct bloom *b, uint64_t expected)
{
	uint64_t nbits = 1024;

	while (nbits < expected * 12)
		nbits <<= 1;
	b->bits = calloc(nbits / 64, sizeof(uint64_t));
	if (!b->bits)
		return -ENOMEM;
	b->nbits = nbits;
	return 0;
}

void store_bloom_release(struct bloom *b)
{
	free(b->bits);
	b->bits = NULL;
	b->nbits = 0;
}

/* Double hashing: bit i is h1 + i * h2, from the two halves of HASH. */
void store_bloom_add(struct bloom *b, uint64_t hash)
{
	uint64_t h1 = hash, h2 = (hash >> 32) | 1;

	for (int i = 0; i < BLOOM_K; i++) {
		uint64_t bit = (h1 + (uint64_t)i * h2) & (b->nbits - 1);

		b->bits[bit / 64] |= 1ull << (bit % 64);
	}
}

bool store_bloom_maybe(const struct bloom *b, uint64_t hash)
{
	uint64_t h1 = hash, h2 = (hash >> 32) | 1;

	if (!b->bits)
		return false;
	for (int i = 0; i < BLOOM_K; i++) {
		uint64_t bit = (h1 + (uint64_t)i * h2) & (b->nbits - 1);

		if (!(b->bits[bit / 64] & (1ull << (bit % 64))))
			return false;
	}
	return true;
}

/* ---- sealed tables ---- */

#define IDS_MAGIC "SFIDS001"
/* The same, then each pair's ID: ends (8 bytes each), then the IDs; the
 * checksum covers all three. */
#define IDS_MAGIC_IDS "SFIDS002"

struct ids_header {
	char magic[8];
	uint64_t count;
	uint64_t checksum;	/* XXH3-64 of the pairs */
	uint64_t field;		/* hash of the ID member's name */
};

static int pair_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	if (x[0] != y[0])
		return x[0] < y[0] ? -1 : 1;
	return x[1] < y[1] ? -1 : x[1] > y[1];
}

int store_idset_pairs(const struct idset *set, uint64_t from, uint64_t below,
		      uint64_t **out, size_t *count)
{
	uint64_t *pairs = malloc((set->used ? set->used : 1) * 2 * sizeof(uint64_t));
	size_t n = 0;

	if (!pairs)
		return -ENOMEM;
	for (size_t i = 0; set->slots && i <= set->mask; i++) {
		uint64_t off1 = set->slots[2 * i + 1];

		if (!off1 || off1 - 1 < from || off1 - 1 >= below)
			continue;
		pairs[2 * n] = set->slots[2 * i];
		pairs[2 * n + 1] = off1 - 1;
		n++;
	}
	*out = pairs;
	*count = n;
	return 0;
}

/* Writes the NPARTS parts, one after the other, as table NAME in DIRFD:
 * a temporary file, fsync, rename. */
static int idtable_put(int dirfd, const char *name, const struct iovec *parts,
		       size_t nparts)
{
	char tmp[64];
	off_t at = 0;
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; !rc && i < nparts; i++) {
		rc = store_pwrite_all(fd, parts[i].iov_base, parts[i].iov_len, at);
		at += (off_t)parts[i].iov_len;
	}
	if (!rc && fdatasync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc && renameat(dirfd, tmp, dirfd, name) < 0)
		rc = -errno;
	if (rc)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

/* Sorts PAIRS and writes them as table NAME in DIRFD. */
int store_idtable_write(int dirfd, const char *name, const char *field,
			uint64_t *pairs, size_t n)
{
	struct ids_header hdr = {
		.magic = IDS_MAGIC,
		.field = XXH3_64bits(field, strlen(field)),
		.count = n,
	};
	struct iovec parts[] = {
		{ &hdr, sizeof(hdr) },
		{ pairs, n * 2 * sizeof(uint64_t) },
	};

	qsort(pairs, n, 2 * sizeof(uint64_t), pair_cmp);
	hdr.checksum = XXH3_64bits(pairs, n * 2 * sizeof(uint64_t));
	return idtable_put(dirfd, name, parts, 2);
}

int store_idtable_write_ids(int dirfd, const char *name, uint64_t field_hash,
			    const uint64_t *pairs, const uint64_t *ends,
			    size_t n, const char *ids, size_t idlen)
{
	struct ids_header hdr = {
		.magic = IDS_MAGIC_IDS,
		.field = field_hash,
		.count = n,
	};
	struct iovec parts[] = {
		{ &hdr, sizeof(hdr) },
		{ (void *)pairs, n * 2 * sizeof(uint64_t) },
		{ (void *)ends, n * sizeof(uint64_t) },
		{ (void *)ids, idlen },
	};
	XXH3_state_t *st = XXH3_createState();

	if (!st)
		return -ENOMEM;
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, pairs, n * 2 * sizeof(uint64_t));
	XXH3_64bits_update(st, ends, n * sizeof(uint64_t));
	XXH3_64bits_update(st, ids, idlen);
	hdr.checksum = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return idtable_put(dirfd, name, parts, 4);
}

/* Checks the mapped table TAB (its header HDR) and sets its pointers:
 * 0, or -EIO when it is damaged. */
static int idtable_check(struct idtable *tab, const struct ids_header *hdr)
{
	size_t rest = tab->maplen - sizeof(*hdr), pairs;
	uint64_t n = hdr->count, prev = 0;

	tab->pairs = (const uint64_t *)(hdr + 1);
	tab->count = n;
	if (!memcmp(hdr->magic, IDS_MAGIC, 8))
		return n <= rest / 16 && rest == n * 2 * sizeof(uint64_t) &&
		       XXH3_64bits(tab->pairs, rest) == hdr->checksum ? 0 : -EIO;
	if (memcmp(hdr->magic, IDS_MAGIC_IDS, 8) || n > rest / 24 ||
	    XXH3_64bits(tab->pairs, rest) != hdr->checksum)
		return -EIO;
	pairs = n * 2 * sizeof(uint64_t);
	tab->ends = tab->pairs + 2 * n;
	tab->ids = (const char *)(tab->ends + n);
	for (uint64_t i = 0; i < n; i++) {
		if (tab->ends[i] < prev)
			return -EIO;
		prev = tab->ends[i];
	}
	return prev == rest - pairs - n * sizeof(uint64_t) ? 0 : -EIO;
}

int store_idtable_id_is(const struct idtable *tab, uint64_t j, const char *id,
			size_t len)
{
	uint64_t from = j ? tab->ends[j - 1] : 0;

	return tab->ends[j] - from == len && !memcmp(tab->ids + from, id, len);
}

/* -ESTALE when the table was made for another ID member name. */
int store_idtable_open(int dirfd, const char *name, const char *field,
		       struct idtable *tab)
{
	const struct ids_header *hdr;
	struct stat sb;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	memset(tab, 0, sizeof(*tab));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0 || (size_t)sb.st_size < sizeof(*hdr)) {
		close(fd);
		return -EIO;
	}
	tab->maplen = (size_t)sb.st_size;
	tab->map = mmap(NULL, tab->maplen, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (tab->map == MAP_FAILED) {
		tab->map = NULL;
		return -errno;
	}
	hdr = tab->map;
	if (idtable_check(tab, hdr))
		rc = -EIO;
	else if (hdr->field != XXH3_64bits(field, strlen(field)))
		rc = -ESTALE;
	if (rc)
		store_idtable_release(tab);
	return rc;
}

void store_idtable_release(struct idtable *tab)
{
	if (tab->map)
		munmap(tab->map, tab->maplen);
	memset(tab, 0, sizeof(*tab));
}

uint64_t store_idtable_find(const struct idtable *tab, uint64_t hash)
{
	uint64_t lo = 0, hi = tab->count;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (tab->pairs[2 * mid] < hash)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
