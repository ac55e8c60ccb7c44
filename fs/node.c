/*
 * The node table: one node per tenant, stream and view the kernel knows.
 * A node is freed when both its kernel lookup count and its internal
 * refcount drop to zero.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

static struct fs_node root_node = { .kind = FS_ROOT, .nlookup = 1 };

struct fs_node *fs_node_of(fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &root_node;
	return (struct fs_node *)(uintptr_t)ino;
}

fuse_ino_t fs_ino_of(const struct fs_node *n)
{
	if (n == &root_node)
		return FUSE_ROOT_ID;
	return (fuse_ino_t)(uintptr_t)n;
}

int fs_nodes_init(struct fs *fs)
{
	fs->table_size = 1024;
	fs->table = calloc(fs->table_size, sizeof(*fs->table));
	return fs->table ? 0 : -ENOMEM;
}

static void node_free(struct fs_node *n)
{
	free(n->sel_name);
	free(n);
}

void fs_nodes_release(struct fs *fs)
{
	for (size_t i = 0; i < fs->table_size; i++) {
		struct fs_node *n = fs->table[i], *next;
		for (; n; n = next) {
			next = n->hnext;
			node_free(n);
		}
	}
	free(fs->table);
	fs->table = NULL;
}

static size_t key_hash(enum fs_kind kind, const struct store_tenant *t,
		       uint64_t id, const char *sel_name)
{
	uint64_t h = (uint64_t)(uintptr_t)t * 0x9e3779b97f4a7c15ull;
	h ^= (id + (uint64_t)kind) * 0xc2b2ae3d27d4eb4full;
	for (const char *p = sel_name; p && *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 29));
}

static bool key_eq(const struct fs_node *n, enum fs_kind kind,
		   const struct store_tenant *t, uint64_t id,
		   const char *sel_name)
{
	if (n->kind != kind || n->t != t || n->id != id)
		return false;
	if (!sel_name || !n->sel_name)
		return !sel_name && !n->sel_name;
	return strcmp(sel_name, n->sel_name) == 0;
}

static size_t node_slot(struct fs *fs, const struct fs_node *n)
{
	return key_hash(n->kind, n->t, n->id, n->sel_name) &
	       (fs->table_size - 1);
}

/* Called with fs->lock held. */
static void table_grow(struct fs *fs)
{
	size_t old_size = fs->table_size;
	struct fs_node **old = fs->table;
	struct fs_node **tab = calloc(old_size * 2, sizeof(*tab));

	fs_assert_held(&fs->lock);
	if (!tab)
		return;	/* longer chains, still correct */
	fs->table = tab;
	fs->table_size = old_size * 2;
	for (size_t i = 0; i < old_size; i++) {
		struct fs_node *n = old[i], *next;
		for (; n; n = next) {
			size_t s = node_slot(fs, n);
			next = n->hnext;
			n->hnext = tab[s];
			tab[s] = n;
		}
	}
	free(old);
}

/* Called with fs->lock held. */
static struct fs_node *table_find(struct fs *fs, enum fs_kind kind,
				  const struct store_tenant *t, uint64_t id,
				  const char *sel_name)
{
	size_t s = key_hash(kind, t, id, sel_name) & (fs->table_size - 1);

	fs_assert_held(&fs->lock);
	for (struct fs_node *n = fs->table[s]; n; n = n->hnext)
		if (key_eq(n, kind, t, id, sel_name))
			return n;
	return NULL;
}

static struct fs_node *node_new(enum fs_kind kind, struct store_tenant *t,
				uint64_t id, const char *sel_name,
				const struct fs_sel *sel)
{
	struct fs_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->kind = kind;
	n->t = t;
	n->id = id;
	if (sel_name) {
		n->sel_name = strdup(sel_name);
		if (!n->sel_name) {
			free(n);
			return NULL;
		}
		n->sel = *sel;
	}
	atomic_init(&n->cached, false);
	return n;
}

int fs_node_get(struct fs *fs, enum fs_kind kind, struct store_tenant *t,
		uint64_t id, const char *sel_name, const struct fs_sel *sel,
		bool lookup, struct fs_node **out)
{
	struct fs_node *n;

	fs_mutex_lock(&fs->lock);
	n = table_find(fs, kind, t, id, sel_name);
	if (!n) {
		n = node_new(kind, t, id, sel_name, sel);
		if (!n) {
			fs_mutex_unlock(&fs->lock);
			return -ENOMEM;
		}
		if (fs->table_count >= fs->table_size * 2)
			table_grow(fs);
		size_t s = node_slot(fs, n);
		n->hnext = fs->table[s];
		fs->table[s] = n;
		fs->table_count++;
	}
	if (lookup)
		n->nlookup++;
	else
		n->refs++;
	fs_mutex_unlock(&fs->lock);
	*out = n;
	return 0;
}

struct fs_node *fs_node_find_stream(struct fs *fs, struct store_tenant *t,
				    uint64_t id)
{
	struct fs_node *n;

	fs_mutex_lock(&fs->lock);
	n = table_find(fs, FS_STREAM, t, id, NULL);
	if (n)
		n->refs++;
	fs_mutex_unlock(&fs->lock);
	return n;
}

void fs_node_add_view(struct fs *fs, struct fs_node *stream, struct fs_node *v)
{
	fs_mutex_lock(&fs->lock);
	if (!v->view_of) {
		stream->refs++;		/* until V is freed */
		v->view_of = stream;
		v->view_next = stream->views;
		stream->views = v;
		atomic_store(&stream->views_cached, true);
	}
	fs_mutex_unlock(&fs->lock);
}

struct fs_node **fs_node_cached_views(struct fs *fs, struct fs_node *stream,
				      size_t *count)
{
	struct fs_node **out = NULL;
	size_t n = 0, cap = 0;

	fs_mutex_lock(&fs->lock);
	for (struct fs_node *v = stream->views; v; v = v->view_next) {
		if (STORE_ARRAY_RESERVE(out, cap, n + 1, 8))
			break;
		v->refs++;
		out[n++] = v;
	}
	fs_mutex_unlock(&fs->lock);
	*count = n;
	return out;
}

void fs_node_ref(struct fs *fs, struct fs_node *n)
{
	if (n == &root_node)
		return;
	fs_mutex_lock(&fs->lock);
	n->refs++;
	fs_mutex_unlock(&fs->lock);
}

static void node_maybe_free(struct fs *fs, struct fs_node *n);

/* Takes view V off its stream's list of cached views and drops the ref
 * that list held on the stream.  fs->lock held. */
static void view_unlink(struct fs *fs, struct fs_node *v)
{
	struct fs_node *stream = v->view_of, **pp = &stream->views;

	while (*pp && *pp != v)
		pp = &(*pp)->view_next;
	if (*pp)
		*pp = v->view_next;
	if (!stream->views)
		atomic_store(&stream->views_cached, false);
	stream->refs--;
	node_maybe_free(fs, stream);
}

/* Called with fs->lock held; frees N if nothing holds it. */
static void node_maybe_free(struct fs *fs, struct fs_node *n)
{
	fs_assert_held(&fs->lock);
	if (n->nlookup || n->refs)
		return;
	struct fs_node **pp = &fs->table[node_slot(fs, n)];
	while (*pp && *pp != n)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = n->hnext;
	fs->table_count--;
	if (n->view_of)
		view_unlink(fs, n);
	node_free(n);
}

void fs_node_unref(struct fs *fs, struct fs_node *n)
{
	if (n == &root_node)
		return;
	fs_mutex_lock(&fs->lock);
	n->refs--;
	node_maybe_free(fs, n);
	fs_mutex_unlock(&fs->lock);
}

void fs_node_forget(struct fs *fs, struct fs_node *n, uint64_t nlookup)
{
	if (n == &root_node)
		return;
	fs_mutex_lock(&fs->lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	node_maybe_free(fs, n);
	fs_mutex_unlock(&fs->lock);
}
