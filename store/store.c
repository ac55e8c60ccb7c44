/*
 * The data directory and its tenants.
 *
 *   DIR/tenants/NAME/index.db	the tenant's SQLite index (WAL)
 *   DIR/tenants/NAME/seg/	its segment files (%016x.seg, %016x.ids)
 *   DIR/staging/		tenants being created or removed
 *
 * A tenant is created in staging/ and renamed into tenants/ when complete,
 * so a crash never leaves half a tenant; removal renames it out first.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_int.h"

#define STAGING_DIR "staging"

void store_config_default(struct store_config *cfg)
{
	cfg->roll_size = 64ull << 20;
	cfg->roll_age_ns = 3600ll * 1000000000;
	cfg->max_event = 1u << 20;
	cfg->sync_always = false;
	cfg->framing = STORE_LINES;
	cfg->restore_flush_ns = 30ll * 1000000000;
	cfg->read_only = false;
}

void store_set_commit_hook(struct store *st, store_commit_fn fn, void *arg)
{
	st->commit_fn = fn;
	st->commit_arg = arg;
}

const char *store_tenant_name(const struct store_tenant *t)
{
	return t->name;
}

bool store_tenant_removed(const struct store_tenant *t)
{
	return atomic_load_explicit(&t->removed, memory_order_acquire);
}

/* ---- files ---- */

/* Removes DIRFD's entry NAME and, if it is a directory, all below it. */
static int remove_tree(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			remove_tree(dirfd(d), de->d_name);
	closedir(d);
	return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* Removes everything in the directory DIRFD.  The directory stays: on a
 * full disk, making it again could need a block there is no room for. */
static void empty_dir(int dirfd)
{
	DIR *d = fdopendir(dup(dirfd));
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			remove_tree(dirfd, de->d_name);
	closedir(d);
}

static int mkdir_open(int dirfd, const char *name)
{
	int fd;

	if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* ---- tenants ---- */

/* Closes T's directories.  T lives on until store_close(), removed; the
 * sealer, which works outside T's lock, uses descriptors of its own. */
static void tenant_close_dirs(struct store_tenant *t)
{
	if (t->segfd >= 0)
		close(t->segfd);
	if (t->snapfd >= 0)
		close(t->snapfd);
	if (t->dirfd >= 0)
		close(t->dirfd);
	t->segfd = t->snapfd = t->dirfd = -1;
}

static void tenant_free(struct store_tenant *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nstreams; i++)
		store_stream_free(t, t->streams[i]);
	free(t->streams);
	free(t->names);
	free(t->seg_ids);
	free(t->closing.ids);
	free(t->restored.ids);
	free(t->writeback.ids);
	store_journal_close(t);
	store_index_close(t);
	tenant_close_dirs(t);
	pthread_rwlock_destroy(&t->lock);
	pthread_mutex_destroy(&t->fd_lock);
	pthread_mutex_destroy(&t->rows_lock);
	pthread_mutex_destroy(&t->hold_lock);
	pthread_cond_destroy(&t->hold_cond);
	free(t->path);
	free(t->name);
	free(t);
}

static struct store_tenant *tenant_new(struct store *st, const char *name,
				       const char *parent)
{
	struct store_tenant *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->st = st;
	t->dirfd = t->segfd = t->snapfd = t->jfd = -1;
	t->framing = st->cfg.framing;
	t->mode = 0755;
	strcpy(t->id_field, "id");
	pthread_rwlock_init(&t->lock, NULL);
	pthread_mutex_init(&t->fd_lock, NULL);
	pthread_mutex_init(&t->rows_lock, NULL);
	pthread_mutex_init(&t->hold_lock, NULL);
	pthread_cond_init(&t->hold_cond, NULL);
	t->name = strdup(name);
	if (!t->name || asprintf(&t->path, "%s/%s/%s", st->dir, parent, name) < 0) {
		t->path = NULL;
		tenant_free(t);
		return NULL;
	}
	return t;
}

/* Allocates the first blocks of T's journal ahead, so that its streams can
 * be removed on a full disk (store_journal_remove).  A new tenant needs it; an old one on
 * a full disk gets it at a later open. */
static int journal_prepare(struct store_tenant *t, bool create)
{
	int rc = store_journal_prepare(t);

	if (rc && (create || rc != -ENOSPC))
		store_log(LOG_WARNING, "tenant %s: allocating the journal: %s", t->name,
			  strerror(-rc));
	return create ? rc : 0;
}

/* Opens the tenant directory T->path: its index, streams and segments. */
static int tenant_load(struct store_tenant *t, bool create)
{
	int rc;

	t->dirfd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->dirfd < 0)
		return -errno;
	t->segfd = mkdir_open(t->dirfd, SEG_DIR);
	if (t->segfd < 0)
		return t->segfd;
	t->snapfd = mkdir_open(t->dirfd, SNAP_DIR);
	if (t->snapfd < 0)
		return t->snapfd;
	/* Nobody else sees T yet: the lock is for what the layers below
	 * check in debug builds. */
	pthread_rwlock_wrlock(&t->lock);
	rc = store_index_open(t, create);
	if (!rc)
		rc = store_journal_open(t);
	if (!rc)
		rc = store_index_load_tenant(t);
	if (!rc && !create)
		rc = store_journal_replay(t);
	if (!rc && !create)
		rc = store_recover_tenant(t);
	pthread_rwlock_unlock(&t->lock);
	if (!rc && !t->st->cfg.read_only)
		rc = journal_prepare(t, create);
	return rc;
}

/* Inserts T into the name-sorted list.  st->lock held. */
static void tenant_link(struct store *st, struct store_tenant *t)
{
	struct store_tenant **pp = &st->tenants;

	STORE_ASSERT_MUTEX(&st->lock);
	while (*pp && strcmp((*pp)->name, t->name) < 0)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
}

static struct store_tenant *tenant_find(struct store *st, const char *name)
{
	for (struct store_tenant *t = st->tenants; t; t = t->next)
		if (!t->removed && !strcmp(t->name, name))
			return t;
	return NULL;
}

static int write_tenant_meta(struct store_tenant *t, int64_t now)
{
	int rc = store_journal_begin(t);

	if (!rc)
		rc = store_index_meta_set(t, "mode", t->mode, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "uid", t->uid, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "gid", t->gid, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "atime", now, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "mtime", now, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "ctime", now, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "framing", t->framing, NULL);
	if (!rc)
		rc = store_index_meta_set(t, "id_field", 0, t->id_field);
	if (!rc)
		return store_index_commit(t);
	store_index_rollback(t);
	return rc;
}

/* Builds tenant NAME in staging/, renames it into tenants/ and opens it. */
static int tenant_build(struct store *st, const char *name, mode_t mode,
			uid_t uid, gid_t gid, struct store_tenant **out)
{
	struct store_tenant *t = tenant_new(st, name, STAGING_DIR);
	int64_t now = store_now_ns();
	char *staged = NULL;
	int rc;

	if (!t)
		return -ENOMEM;
	remove_tree(AT_FDCWD, t->path);
	if (mkdir(t->path, 0755) < 0) {
		rc = -errno;
		tenant_free(t);
		return rc;
	}
	t->mode = mode & 07777;
	t->uid = uid;
	t->gid = gid;
	rc = tenant_load(t, true);
	if (!rc)
		rc = write_tenant_meta(t, now);
	staged = t->path;
	t->path = NULL;
	tenant_free(t);
	t = NULL;
	if (!rc) {
		t = tenant_new(st, name, TENANTS_DIR);
		rc = t ? 0 : -ENOMEM;
	}
	if (!rc && rename(staged, t->path) < 0)
		rc = errno == ENOTEMPTY ? -EEXIST : -errno;
	if (!rc && fsync(st->tenantsfd) < 0)
		rc = -errno;
	if (!rc)
		rc = tenant_load(t, false);
	if (rc) {
		remove_tree(AT_FDCWD, staged);
		tenant_free(t);
	} else {
		*out = t;
	}
	free(staged);
	return rc;
}

int store_tenant_create(struct store *st, const char *name, mode_t mode,
			uid_t uid, gid_t gid)
{
	struct store_tenant *t = NULL;
	int rc;

	if (!store_name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	if (tenant_find(st, name)) {
		rc = -EEXIST;
	} else {
		rc = tenant_build(st, name, mode, uid, gid, &t);
		if (!rc)
			tenant_link(st, t);
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

int store_tenant_get(struct store *st, const char *name,
		     struct store_tenant **out)
{
	pthread_mutex_lock(&st->lock);
	*out = tenant_find(st, name);
	pthread_mutex_unlock(&st->lock);
	return *out ? 0 : -ENOENT;
}

int store_tenant_remove(struct store *st, const char *name)
{
	struct store_tenant *t;
	char *gone = NULL;
	int rc = 0;

	pthread_mutex_lock(&st->lock);
	t = tenant_find(st, name);
	if (!t) {
		pthread_mutex_unlock(&st->lock);
		return -ENOENT;
	}
	pthread_rwlock_wrlock(&t->lock);
	if (t->nstreams)
		rc = -ENOTEMPTY;
	else if (asprintf(&gone, "%s/" STAGING_DIR "/removed-%p", st->dir,
			  (void *)t) < 0)
		rc = -ENOMEM;
	if (!rc) {
		store_journal_close(t);
		store_index_close(t);
		if (rename(t->path, gone) < 0)
			rc = -errno;
		else
			remove_tree(AT_FDCWD, gone);
	}
	if (!rc)
		tenant_close_dirs(t);
	if (!rc)
		atomic_store_explicit(&t->removed, true, memory_order_release);
	pthread_rwlock_unlock(&t->lock);
	pthread_mutex_unlock(&st->lock);
	free(gone);
	return rc;
}

int store_tenant_list(struct store *st,
		      int (*fn)(void *arg, const char *name), void *arg)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	/* Names are copied so that FN runs without the store lock. */
	pthread_mutex_lock(&st->lock);
	for (struct store_tenant *t = st->tenants; t && !rc; t = t->next) {
		if (t->removed)
			continue;
		rc = STORE_ARRAY_RESERVE(names, cap, n + 1, 16);
		if (rc)
			break;
		if (!(names[n] = strdup(t->name)))
			rc = -ENOMEM;
		else
			n++;
	}
	pthread_mutex_unlock(&st->lock);
	for (size_t i = 0; i < n; i++) {
		if (!rc)
			rc = fn(arg, names[i]);
		free(names[i]);
	}
	free(names);
	return rc;
}

int store_tenant_stat(struct store_tenant *t, struct store_attr *out)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&t->lock);
	out->mode = t->mode;
	out->uid = t->uid;
	out->gid = t->gid;
	out->atime = t->atime;
	out->mtime = t->mtime;
	out->ctime = t->ctime;
	out->framing = t->framing;
	out->version = t->nstreams;
	pthread_rwlock_unlock(&t->lock);
	return t->removed ? -ENOENT : 0;
}

static int set_meta(struct store_tenant *t, const char *key, int64_t ival,
		    const char *sval)
{
	return t->removed ? -ENOENT : store_index_meta_set(t, key, ival, sval);
}

int store_tenant_setattr(struct store_tenant *t, const struct store_attr *attr,
			 unsigned mask)
{
	int64_t now = store_now_ns();
	int rc;

	pthread_rwlock_wrlock(&t->lock);
	rc = t->removed ? -ENOENT : store_journal_begin(t);
	if (!rc && (mask & STORE_SET_MODE))
		rc = set_meta(t, "mode", attr->mode & 07777, NULL);
	if (!rc && (mask & STORE_SET_UID))
		rc = set_meta(t, "uid", attr->uid, NULL);
	if (!rc && (mask & STORE_SET_GID))
		rc = set_meta(t, "gid", attr->gid, NULL);
	if (!rc && (mask & STORE_SET_ATIME))
		rc = set_meta(t, "atime", store_ns(attr->atime), NULL);
	if (!rc && (mask & STORE_SET_MTIME))
		rc = set_meta(t, "mtime", store_ns(attr->mtime), NULL);
	if (!rc)
		rc = set_meta(t, "ctime", now, NULL);
	if (!rc)
		rc = store_index_commit(t);
	else if (!t->removed)
		store_index_rollback(t);
	if (!rc) {
		if (mask & STORE_SET_MODE)
			t->mode = attr->mode & 07777;
		if (mask & STORE_SET_UID)
			t->uid = attr->uid;
		if (mask & STORE_SET_GID)
			t->gid = attr->gid;
		if (mask & STORE_SET_ATIME)
			t->atime = attr->atime;
		if (mask & STORE_SET_MTIME)
			t->mtime = attr->mtime;
		t->ctime = store_ts(now);
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_tenant_set_framing(struct store_tenant *t, enum store_framing framing)
{
	int rc;

	if (framing != STORE_LINES && framing != STORE_RAW)
		return -EINVAL;
	pthread_rwlock_wrlock(&t->lock);
	rc = set_meta(t, "framing", framing, NULL);
	if (!rc)
		t->framing = framing;
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_tenant_get_id_field(struct store_tenant *t, char *buf, size_t len)
{
	int rc = 0;

	pthread_rwlock_rdlock(&t->lock);
	if (strlen(t->id_field) >= len)
		rc = -ERANGE;
	else
		strcpy(buf, t->id_field);
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

int store_tenant_set_id_field(struct store_tenant *t, const char *field)
{
	size_t len = strlen(field);
	int rc;

	if (!len || len > STORE_ID_FIELD_MAX)
		return -EINVAL;
	pthread_rwlock_wrlock(&t->lock);
	rc = set_meta(t, "id_field", 0, field);
	if (!rc && strcmp(t->id_field, field)) {
		strcpy(t->id_field, field);
		/* IDs are now another member: dedup state is rebuilt lazily */
		for (size_t i = 0; i < t->nstreams; i++)
			store_stream_ids_release(t->streams[i]);
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/* ---- the store ---- */

/* Opens tenant NAME of tenants/ into *OUT; IN_MEMORY: its index as a
 * copy in memory. */
static int tenant_open_as(struct store *st, const char *name, bool in_memory,
			  struct store_tenant **out)
{
	struct store_tenant *t = tenant_new(st, name, TENANTS_DIR);
	int rc;

	if (!t)
		return -ENOMEM;
	t->index_in_memory = in_memory;
	rc = tenant_load(t, false);
	if (rc)
		tenant_free(t);
	else
		*out = t;
	return rc;
}

/* Opens tenant NAME.  Recovery writes the index, and a full disk may have
 * no room for that: the reserve is released for it, and a read-only store
 * recovers into a copy of the index in memory instead, so that the data
 * can always be read.  A failed try changed nothing another would not. */
static int tenant_open(struct store *st, const char *name,
		       struct store_tenant **out)
{
	int rc = tenant_open_as(st, name, false, out);

	if (rc == -ENOSPC && st->cfg.read_only) {
		store_log(LOG_WARNING, "tenant %s: the disk is full: its index is read into"
			  " memory and recovered there (read-only)", name);
		rc = tenant_open_as(st, name, true, out);
	} else if (rc == -ENOSPC && store_reserve_release(st)) {
		st->reserve_used = true;
		store_log(LOG_WARNING, "tenant %s: the disk is full: released the reserve"
			  " (%s/" STORE_RESERVE_FILE ") for recovery", name,
			  st->dir);
		rc = tenant_open_as(st, name, false, out);
	}
	return rc;
}

static int load_tenants(struct store *st)
{
	DIR *d = fdopendir(dup(st->tenantsfd));
	struct dirent *de;
	int rc = 0;

	if (!d)
		return -errno;
	while (!rc && (de = readdir(d))) {
		struct store_tenant *t;

		if (!store_name_valid(de->d_name))
			continue;
		rc = tenant_open(st, de->d_name, &t);
		if (rc) {
			store_log(LOG_ERR, "tenant %s: cannot open: %s", de->d_name,
				  strerror(-rc));
			break;
		}
		pthread_mutex_lock(&st->lock);
		tenant_link(st, t);
		pthread_mutex_unlock(&st->lock);
	}
	closedir(d);
	return rc;
}

/* Half of the descriptors the process may open go to segment files. */
static unsigned long fd_budget(void)
{
	struct rlimit rl;
	unsigned long n = 256;

	if (!getrlimit(RLIMIT_NOFILE, &rl))
		n = rl.rlim_cur == RLIM_INFINITY ? 65536 : rl.rlim_cur / 2;
	return n < 32 ? 32 : n;
}

int store_open(const char *dir, const struct store_config *cfg,
	       struct store **out)
{
	struct store *st = calloc(1, sizeof(*st));
	pthread_condattr_t ca;
	int rc;

	if (!st)
		return -ENOMEM;
	st->cfg = *cfg;
	/* a deadline must stay representable: at most a day */
	if (st->cfg.restore_flush_ns < 0)
		st->cfg.restore_flush_ns = 0;
	if (st->cfg.restore_flush_ns > 86400ll * 1000000000)
		st->cfg.restore_flush_ns = 86400ll * 1000000000;
	st->fd_budget = fd_budget();
	st->dirfd = st->tenantsfd = -1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_cond_init(&st->fetch_idle, NULL);
	pthread_mutex_init(&st->seal_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->seal_cond, &ca);
	pthread_condattr_destroy(&ca);
	st->dir = realpath(dir, NULL);
	if (!st->dir) {
		rc = -errno;
		goto fail;
	}
	st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = mkdir_open(st->dirfd, STAGING_DIR);
	if (rc < 0)
		goto fail;
	empty_dir(rc);
	close(rc);
	st->tenantsfd = mkdir_open(st->dirfd, TENANTS_DIR);
	if (st->tenantsfd < 0) {
		rc = st->tenantsfd;
		goto fail;
	}
	rc = load_tenants(st);
	if (!rc)
		store_reserve_keep(st, st->reserve_used);
	if (!rc)
		rc = store_sealer_start(st);
	if (rc)
		goto fail;
	*out = st;
	return 0;
fail:
	/* what recovery left of the reserve is kept for the next try */
	if (st->reserve_used)
		store_reserve_keep(st, true);
	store_close(st);
	return rc;
}

int store_sync(struct store *st)
{
	int rc = 0;

	pthread_mutex_lock(&st->lock);
	for (struct store_tenant *t = st->tenants; t && !rc; t = t->next)
		rc = store_tenant_sync(t);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

int store_roll_all(struct store *st)
{
	int rc = 0, n = 0;

	pthread_mutex_lock(&st->lock);
	for (struct store_tenant *t = st->tenants; t && rc >= 0; t = t->next) {
		if (t->removed)
			continue;
		rc = store_roll(t, 0, true);
		n += rc > 0 ? rc : 0;
	}
	pthread_mutex_unlock(&st->lock);
	return rc < 0 ? rc : n;
}

void store_get_counters(struct store *st, struct store_counters *out)
{
	const memory_order relaxed = memory_order_relaxed;

	out->events_appended = atomic_load_explicit(&st->n_events, relaxed);
	out->bytes_appended = atomic_load_explicit(&st->n_bytes, relaxed);
	out->fsyncs = atomic_load_explicit(&st->n_fsyncs, relaxed);
	for (size_t i = 0; i <= STORE_LATENCY_BUCKETS; i++)
		out->append_latency[i] = atomic_load_explicit(&st->latency[i],
							      relaxed);
	out->append_latency_sum_ns = atomic_load_explicit(&st->latency_sum_ns,
							  relaxed);
	out->damaged_segments = atomic_load_explicit(&st->damaged, relaxed);
	out->healed_segments = atomic_load_explicit(&st->healed, relaxed);
	out->damaged_snapshots = atomic_load_explicit(&st->snap_damaged, relaxed);
	out->healed_snapshots = atomic_load_explicit(&st->snap_healed, relaxed);
}

void store_close(struct store *st)
{
	struct store_tenant *t, *next;

	if (!st)
		return;
	store_sealer_stop(st);
	for (t = st->tenants; t; t = next) {
		next = t->next;
		if (!t->removed && t->db && store_seal_closing_now(t))
			store_log(LOG_ERR, "tenant %s: sealing full segments failed", t->name);
		if (!t->removed && t->db && store_restored_durable_now(t))
			store_log(LOG_ERR, "tenant %s: flushing fetched segments failed",
				  t->name);
		/* a clean stop leaves every file as long as its row says */
		if (!t->removed && t->db && store_seg_trim_tenant(t))
			store_log(LOG_ERR, "tenant %s: cutting segment files back failed",
				  t->name);
		if (!t->removed && t->db && store_tenant_sync(t))
			store_log(LOG_ERR, "tenant %s: final sync failed", t->name);
		tenant_free(t);
	}
	if (st->tenantsfd >= 0)
		close(st->tenantsfd);
	if (st->dirfd >= 0)
		close(st->dirfd);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->fetch_idle);
	pthread_mutex_destroy(&st->seal_lock);
	pthread_cond_destroy(&st->seal_cond);
	free(st->dir);
	free(st);
}

