/*
 * lease.c: one writer per tenant per remote (docs/FORMAT.md, "Leases").
 *
 * The writer's identity lives in STATE_DIR/sync-identity (created on first
 * start), so that a restart of the same writer re-takes its own leases.  A
 * lease is an object naming that identity, with a generation and an
 * expiry.  It is created with put_if_absent and read back (a server may
 * ignore the condition), and from then on changed only by compare-and-swap
 * on its version tag (backend put_if_match, del_if_match): renewals every
 * lease_ns / 3 and, where manifests are not swapped on their tag (WebDAV)
 * or the lease is no longer fresh, right before a publication; a takeover of an
 * expired lease (generation + 1), the release.  A renewal whose swap fails
 * because the lease now names another writer or a higher generation
 * fences the tenant (fence()).  sync_start() takes the lease of every
 * existing tenant; mkdir asks the thread through sync_tenant_claim(); the
 * thread takes the others before their first upload; sync_stop() releases
 * them.  Runs on the thread that owns s->b (sync_start(), the sync thread,
 * sync_stop()), and uses the tenant state, which is that thread's.
 *
 * Expiry compares wall clocks of different hosts: they must agree to well
 * within the lease (NTP does).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync.h"
#include "sync_int.h"

/* A new identity: the host name and 8 random bytes, in [A-Za-z0-9.-_]
 * only (it also goes into JSON and logs).  BUF holds LEN bytes. */
static int new_identity(const char *host, char *buf, size_t len)
{
	unsigned char rnd[8];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	size_t n;

	if (fd < 0 || read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd)) {
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	n = (size_t)snprintf(buf, len, "%.40s-", host);
	for (size_t i = 0; i < sizeof(rnd) && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%02x", rnd[i]);
	for (char *p = buf; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
			*p = '_';
	return 0;
}

/* Writes ID to PATH, which must not exist yet, durably. */
static int write_identity(const char *path, const char *id)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	if (write(fd, id, strlen(id)) != (ssize_t)strlen(id) ||
	    write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
		int rc = -errno;

		close(fd);
		unlink(path);
		return rc ? rc : -EIO;
	}
	close(fd);
	return 0;
}

int sync_identity_load(struct sync *s)
{
	char path[4096], buf[128];
	ssize_t n;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/sync-identity", s->cfg.state_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			return -EIO;
		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
	} else if (errno != ENOENT) {
		return -errno;
	} else {
		rc = new_identity(s->host, buf, sizeof(buf));
		if (!rc)
			rc = write_identity(path, buf);
		if (rc)
			return rc;
	}
	s->identity = strdup(buf);
	return s->identity ? 0 : -ENOMEM;
}

/* A lease object, decoded.  Strings borrowed from o. */
struct lease {
	json_object *o;			/* owned; json_object_put() */
	const char *writer, *host;	/* "?" when missing */
	int version;			/* 1: no generation, no expiry */
	uint64_t generation;		/* 0 in format 1 */
	int64_t expires_ns;		/* CLOCK_REALTIME; 0: never (format 1) */
	char tag[BACKEND_TAG_MAX];
};

static void lease_release(struct lease *l)
{
	json_object_put(l->o);
	*l = (struct lease){ 0 };
}

static const char *jstr(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *k)
{
	json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v)
						   : 0;
}

/* Reads the lease at KEY into *L (its tag too): 0, -ENOENT, -EIO when it
 * is not a lease, or the remote's -errno. */
static int lease_fetch(struct sync *s, const char *key, struct lease *l)
{
	struct backend_buf cur = { .max = 1 << 16 };
	int rc;

	*l = (struct lease){ 0 };
	rc = backend_get_tagged(s->b, key, &cur, l->tag);
	if (!rc)
		rc = backend_buf_terminate(&cur);
	if (!rc) {
		l->o = json_tokener_parse(cur.data);
		if (!l->o || !json_object_is_type(l->o, json_type_object)) {
			sync_log(LOG_ERR, "%s is not a lease (%zu bytes): held "
				 "by nobody we can name", key, cur.len);
			rc = -EIO;
		}
	}
	if (!rc) {
		l->writer = jstr(l->o, "writer");
		l->host = jstr(l->o, "host");
		l->writer = l->writer ? l->writer : "?";
		l->host = l->host ? l->host : "?";
		l->version = (int)jint(l->o, "version");
		l->generation = (uint64_t)jint(l->o, "generation");
		l->expires_ns = jint(l->o, "expires_ns");
		if (l->version < 2)	/* format 1: generation 0, never expires */
			l->generation = 0, l->expires_ns = 0;
	}
	backend_buf_release(&cur);
	if (rc)
		lease_release(l);
	return rc;
}

static bool lease_ours(const struct sync *s, const struct lease *l)
{
	return !strcmp(l->writer, s->identity);
}

static bool lease_expired(const struct lease *l)
{
	return l->expires_ns && sync_clock(CLOCK_REALTIME) >= l->expires_ns;
}

/* A lease of ours at GENERATION, expiring lease_ns from now, as text
 * (malloc'd), or NULL. */
static char *lease_text(struct sync *s, uint64_t generation)
{
	int64_t now = sync_clock(CLOCK_REALTIME);
	json_object *o = json_object_new_object();
	char *text = NULL;

	if (!o)
		return NULL;
	json_object_object_add(o, "format",
			       json_object_new_string("streamfs-lease"));
	json_object_object_add(o, "version", json_object_new_int(2));
	json_object_object_add(o, "writer", json_object_new_string(s->identity));
	json_object_object_add(o, "host", json_object_new_string(s->host));
	json_object_object_add(o, "pid", json_object_new_int64(getpid()));
	json_object_object_add(o, "generation",
			       json_object_new_uint64(generation));
	json_object_object_add(o, "renewed_ns", json_object_new_int64(now));
	json_object_object_add(o, "lease_ns",
			       json_object_new_int64(s->cfg.lease_ns));
	json_object_object_add(o, "expires_ns",
			       json_object_new_int64(now + s->cfg.lease_ns));
	if (asprintf(&text, "%s\n", json_object_to_json_string_ext(o,
		     JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)) < 0)
		text = NULL;
	json_object_put(o);
	return text;
}

/* "2026-12-07T03:25:00Z" of NS (CLOCK_REALTIME) into BUF. */
static void utc_text(int64_t ns, char *buf, size_t len)
{
	time_t secs = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Makes L, just written by us (generation GEN, sent at SENT_MONO), TS's. */
static void adopt(struct tenant_state *ts, uint64_t gen, const char *tag,
		  int64_t sent_mono)
{
	ts->leased = true;
	ts->refused = false;
	ts->generation = gen;
	snprintf(ts->lease_tag, sizeof(ts->lease_tag), "%s", tag);
	ts->renewed_mono = sent_mono;
}

/* The generation a new lease of TS starts at: one past that of the
 * tenant's published manifest, so that generations only grow even when a
 * lease was released in between. */
static uint64_t first_generation(struct sync *s, struct tenant_state *ts)
{
	struct backend_buf text = { .max = 256u << 20 };
	char *tp = sync_tenant_prefix(ts->name);
	char *key = tp ? sync_manifest_key(tp) : NULL;
	struct manifest m;
	uint64_t gen = 1;

	if (key && !backend_get(s->b, key, 0, BACKEND_TO_END, &text) &&
	    !backend_buf_terminate(&text) &&
	    !sync_manifest_decode(text.data, text.len, &m)) {
		gen = m.generation + 1;
		sync_manifest_release(&m);
	}
	backend_buf_release(&text);
	free(key);
	free(tp);
	return gen;
}

/* Writes TEXT over the lease at KEY, whose tag is TAG, for TS at GEN. */
static int lease_swap(struct sync *s, struct tenant_state *ts, const char *key,
		      const char *tag, uint64_t gen)
{
	char *text = lease_text(s, gen), newtag[BACKEND_TAG_MAX] = "";
	int64_t sent = sync_clock(CLOCK_MONOTONIC);
	int rc;

	if (!text)
		return -ENOMEM;
	rc = backend_put_if_match_buf(s->b, key, text, strlen(text), tag,
				      newtag);
	if (!rc)
		adopt(ts, gen, newtag, sent);
	free(text);
	return rc;
}

/* Creates TS's lease at KEY.  *WROTE (OUT) tells whether our put won. */
static int lease_create(struct sync *s, struct tenant_state *ts,
			const char *key, bool *wrote)
{
	uint64_t gen = first_generation(s, ts);
	char *text = lease_text(s, gen);
	int64_t sent = sync_clock(CLOCK_MONOTONIC);
	struct lease l;
	int rc;

	if (!text)
		return -ENOMEM;
	rc = backend_put_if_absent_buf(s->b, key, text, strlen(text));
	free(text);
	*wrote = !rc;
	if (rc)
		return rc;
	/* A conditional put that succeeded is not proof: a server that
	 * ignores If-None-Match lets two writers both "create" the lease.
	 * Read it back. */
	rc = lease_fetch(s, key, &l);
	if (!rc && (!lease_ours(s, &l) || l.generation != gen)) {
		sync_log(LOG_ERR, "tenant %s: the remote %s accepted our "
			 "conditional lease write, yet the lease names writer "
			 "%s: the server ignores If-None-Match and cannot keep "
			 "two writers apart; refusing", ts->name, s->url_shown,
			 l.writer);
		*wrote = false;	/* not ours: never delete it */
		rc = -EBUSY;
	}
	if (!rc)
		adopt(ts, gen, l.tag, sent);
	lease_release(&l);
	return rc;
}

/* Logs once why TS is refused: L, another writer's lease. */
static void say_refused(struct sync *s, struct tenant_state *ts,
			const char *key, const struct lease *l)
{
	char when[32];
	int64_t left;

	if (ts->refused)
		return;
	if (!l->expires_ns) {
		sync_log(LOG_ERR, "tenant %s on %s is held by writer %s (host "
			 "%s), a lease without expiry (format 1); refusing a "
			 "second writer: nothing of it is uploaded (remove %s "
			 "on the remote only if that writer is gone for good)",
			 ts->name, s->url_shown, l->writer, l->host, key);
		return;
	}
	utc_text(l->expires_ns, when, sizeof(when));
	left = (l->expires_ns - sync_clock(CLOCK_REALTIME)) / 1000000000;
	if (left >= 0)
		sync_log(LOG_ERR, "tenant %s on %s is held by writer %s (host "
			 "%s), generation %" PRIu64 ", until %s (in %" PRId64
			 " s unless renewed); refusing a second writer: "
			 "nothing of it is uploaded", ts->name, s->url_shown,
			 l->writer, l->host, l->generation, when, left);
	else
		sync_log(LOG_ERR, "tenant %s on %s: the lease of writer %s "
			 "(host %s), generation %" PRIu64 ", expired at %s; "
			 "refusing to take it without -o takeover (only once "
			 "that writer is gone for good)", ts->name,
			 s->url_shown, l->writer, l->host, l->generation, when);
}

/* One attempt at TS's lease at KEY: 0 (ours), -EBUSY, -ESTALE or -EEXIST
 * (lost a race: try again), or the remote's -errno. */
static int take_once(struct sync *s, struct tenant_state *ts, const char *key,
		     bool *wrote, char *holder, size_t hlen)
{
	struct lease l;
	int rc = lease_fetch(s, key, &l);

	if (rc == -ENOENT)
		return lease_create(s, ts, key, wrote);
	if (rc == -EIO)
		return -EBUSY;
	if (rc)
		return rc;
	snprintf(holder, hlen, "%s", l.writer);
	if (lease_ours(s, &l)) {
		/* Ours from before a restart (format 1 ones become 2). */
		rc = lease_swap(s, ts, key, l.tag,
				l.generation ? l.generation : 1);
	} else if (!lease_expired(&l) || !s->cfg.takeover) {
		say_refused(s, ts, key, &l);
		rc = -EBUSY;
	} else {
		rc = lease_swap(s, ts, key, l.tag, l.generation + 1);
		if (!rc)
			sync_log(LOG_WARNING, "tenant %s: took over the "
				 "expired lease of writer %s (host %s, "
				 "generation %" PRIu64 ") as generation "
				 "%" PRIu64 "; continuing its published "
				 "history", ts->name,
				 l.writer, l.host, l.generation,
				 ts->generation);
	}
	lease_release(&l);
	return rc;
}

int sync_lease_takeable(struct sync *s, const char *tenant)
{
	char *key = sync_lease_key(tenant);
	struct lease l;
	int rc = key ? lease_fetch(s, key, &l) : -ENOMEM;

	free(key);
	if (rc == -ENOENT)
		return 1;
	if (rc == -EIO)
		return 0;	/* unreadable: someone else's */
	if (rc)
		return rc;
	rc = lease_ours(s, &l) || (lease_expired(&l) && s->cfg.takeover);
	if (!rc && lease_expired(&l))
		sync_log(LOG_NOTICE, "tenant %s on %s: the lease of writer %s "
			 "expired; not continued without -o takeover",
			 tenant, s->url_shown, l.writer);
	lease_release(&l);
	return rc;
}

int sync_lease_take(struct sync *s, struct tenant_state *ts, char *what,
		    size_t wlen, bool *created)
{
	char *key = sync_lease_key(ts->name), holder[128] = "?";
	bool wrote = false;
	int rc = -ESTALE;

	if (!key)
		return -ENOMEM;
	snprintf(what, wlen, "take lease %s", key);
	if (ts->fenced) {
		free(key);
		return -EROFS;
	}
	/* A lost race (another writer created or changed it meanwhile)
	 * is decided by reading it again. */
	for (int i = 0; i < 3 && (rc == -ESTALE || rc == -EEXIST); i++)
		rc = take_once(s, ts, key, &wrote, holder, sizeof(holder));
	if (rc == -ESTALE || rc == -EEXIST)
		rc = -EAGAIN;
	if (created)
		*created = !rc && wrote;
	if (!rc) {
		sync_log(LOG_NOTICE, "tenant %s: lease taken on %s as writer "
			 "%s, generation %" PRIu64, ts->name, s->url_shown,
			 s->identity, ts->generation);
	} else if (rc == -EBUSY) {
		snprintf(what, wlen, "lease of tenant %s held by writer %s",
			 ts->name, holder);
		ts->refused = true;
	}
	free(key);
	return rc;
}

/* TS's lease is no longer ours: L took it (NULL: it was deleted). */
static void fence(struct sync *s, struct tenant_state *ts,
		  const struct lease *l)
{
	char note[256];

	if (l)
		snprintf(note, sizeof(note), "taken over by writer %s (host "
			 "%s) at generation %" PRIu64, l->writer, l->host,
			 l->generation);
	else
		snprintf(note, sizeof(note), "its lease was deleted on the "
			 "remote");
	sync_log(LOG_ERR, "tenant %s: FENCED: %s; this writer (%s, generation %"
		 PRIu64 ") stops writing it to %s; appends to it now fail with "
		 "EROFS, and what it did not publish stays in SOURCE (streamfs "
		 "status lists it)", ts->name, note, s->identity,
		 ts->generation, s->url_shown);
	ts->fenced = true;
	ts->leased = false;
	ts->mlock[0] = '\0';	/* expired, or never to be used again */
	free(ts->fence_note);
	ts->fence_note = strdup(note);
	sync_mutex_lock(&s->lock);
	if (!sync_strvec_push(&s->fenced, ts->name))
		atomic_fetch_add(&s->nfenced, 1);
	sync_mutex_unlock(&s->lock);
}

/* Renews TS's lease now.  0, -EROFS when it turned out not ours any
 * more (TS is fenced), or the remote's -errno. */
static int renew(struct sync *s, struct tenant_state *ts, char *what,
		 size_t wlen)
{
	char *key = sync_lease_key(ts->name);
	struct lease l = { 0 };
	bool had_tag;
	int rc;

	if (!key)
		return -ENOMEM;
	snprintf(what, wlen, "renew lease %s", key);
	had_tag = ts->lease_tag[0] != '\0';
	rc = lease_swap(s, ts, key, ts->lease_tag, ts->generation);
	if (rc == -ESTALE || rc == -ENOENT) {
		/* Changed: still ours (a tag we did not learn), or not. */
		int frc = lease_fetch(s, key, &l);

		if (!frc && lease_ours(s, &l) && l.generation == ts->generation) {
			/* ours, changed behind our back (a remote gone back
			 * in time?): its objects are checked (lost.c) */
			if (had_tag)
				sync_lost_suspect(s, ts);
			rc = lease_swap(s, ts, key, l.tag, ts->generation);
		} else if (!frc || frc == -ENOENT) {
			rc = -EROFS;
		} else {
			rc = frc;	/* unreadable now (-EIO): asked again at
					 * the next renewal; no publish meanwhile */
		}
		if (rc == -EROFS)
			fence(s, ts, frc ? NULL : &l);
	}
	lease_release(&l);
	free(key);
	return rc;
}

int sync_leases_renew_due(struct sync *s, char *what, size_t wlen)
{
	int64_t now = sync_clock(CLOCK_MONOTONIC);
	int first = 0;

	for (size_t i = 0; i < s->nts; i++) {
		struct tenant_state *ts = &s->ts[i];
		int rc;

		if (!ts->leased || now - ts->renewed_mono < s->cfg.lease_ns / 3)
			continue;
		rc = renew(s, ts, what, wlen);
		if (rc == -EROFS)
			rc = 0;		/* fenced: logged, not a failure */
		if (rc && !first)
			first = rc;
		if (backend_err_retryable(rc))
			break;		/* the remote is down: not each */
	}
	return first;
}

bool sync_lease_fresh(struct sync *s, const struct tenant_state *ts)
{
	return ts->leased && !ts->fenced &&
	       sync_clock(CLOCK_MONOTONIC) - ts->renewed_mono <
		       s->cfg.lease_ns / 2;
}

int sync_lease_confirm(struct sync *s, struct tenant_state *ts, char *what,
		       size_t wlen)
{
	int rc;

	if (ts->fenced || !ts->leased)
		return -EROFS;
	rc = renew(s, ts, what, wlen);
	/* The renewal took so long that the lease may be gone by the time
	 * the manifest lands: not now. */
	if (!rc && !sync_lease_fresh(s, ts))
		rc = -ETIMEDOUT;
	return rc;
}

int sync_lease_drop(struct sync *s, struct tenant_state *ts)
{
	char *key = sync_lease_key(ts->name);
	struct lease l = { 0 };
	int rc;

	if (!key)
		return -ENOMEM;
	sync_mlock_release(s, ts);	/* the manifest's lock goes with it */
	rc = ts->lease_tag[0] ? backend_del_if_match(s->b, key, ts->lease_tag)
			      : -ESTALE;
	if (rc == -ESTALE) {
		/* Ours with a tag we did not learn, or another's now. */
		rc = lease_fetch(s, key, &l);
		if (!rc && lease_ours(s, &l) && l.generation == ts->generation)
			rc = backend_del_if_match(s->b, key, l.tag);
		else if (!rc)
			rc = -ESTALE;
	}
	if (rc == -ESTALE)
		sync_log(LOG_WARNING, "tenant %s: lease %s is writer %s's now, "
			 "not ours: left in place", ts->name, key,
			 l.o ? l.writer : "?");
	if (rc == -ENOENT || rc == -ESTALE || rc == -EIO) {
		ts->leased = false;
		rc = rc == -ENOENT ? 0 : rc;
	}
	if (!rc)
		ts->leased = false;
	lease_release(&l);
	free(key);
	return rc;
}

void sync_lease_release(struct sync *s, const bool *only)
{
	for (size_t i = 0; i < s->nts; i++) {
		int rc;

		if (!s->ts[i].leased || (only && !only[i]))
			continue;
		rc = sync_lease_drop(s, &s->ts[i]);
		if (rc && rc != -ESTALE && rc != -EIO) {
			sync_log(LOG_WARNING, "tenant %s: lease not released: "
				 "%s", s->ts[i].name, strerror(-rc));
			break;	/* the remote is down: do not wait for each */
		}
	}
}

/* The seconds a manifest lock is asked for: the lease, rounded up.  A
 * writer that crashed holds the manifest no longer than its lease, if
 * the server grants what is asked (nginx's dav_ext has one timeout for
 * all, its lock zone's). */
long sync_mlock_seconds(const struct sync *s)
{
	return (long)((s->cfg.lease_ns + 999999999) / 1000000000);
}

/* With a backend that locks (WebDAV): the probe object KEY, locked, must
 * refuse a put without the token and take one with it, and the lock must
 * refresh.  0: enforced (s->mlocks set); -EOPNOTSUPP: not (*BROKEN says
 * how); else the remote's -errno. */
static int probe_locks(struct sync *s, const char *key, const char **broken)
{
	char token[BACKEND_TAG_MAX] = "";
	long granted = 0, g2;
	int rc = backend_lock(s->b, key, sync_mlock_seconds(s), token, &granted);

	if (rc == -EOPNOTSUPP) {
		*broken = "the server does not LOCK";
		return rc;
	}
	if (rc)
		return rc;
	rc = backend_put_buf(s->b, key, "d", 1);
	if (!rc)
		*broken = "a PUT without the lock token replaced a locked object";
	else if (rc == -EAGAIN)
		rc = 0;		/* 423 Locked, as it should */
	if (!rc && !*broken) {
		rc = backend_put_locked_buf(s->b, key, "e", 1, token);
		if (rc == -ESTALE)
			*broken = "a PUT with the lock token was refused (is the "
				  "If header dropped on the way?)";
	}
	if (!rc && !*broken) {
		rc = backend_lock(s->b, key, sync_mlock_seconds(s), token, &g2);
		if (rc == -ESTALE || rc == -EOPNOTSUPP)
			*broken = "a lock could not be refreshed";
		else if (!rc && g2)
			granted = g2;
	}
	(void)backend_unlock(s->b, key, token);
	if (*broken)
		return -EOPNOTSUPP;
	if (!rc) {
		int64_t period = s->cfg.lease_ns / 3;

		/* Refreshed well before the server lets it go. */
		if (granted > 0 && granted * 1000000000LL / 3 < period)
			period = granted * 1000000000LL / 3;
		s->mlocks = true;
		s->mlock_period_ns = period;
	}
	return rc;
}

/* The probe's steps: creation must refuse an existing object, a swap
 * must refuse a wrong tag.  0: enforced; -EOPNOTSUPP: not (logged);
 * else the remote's -errno. */
static int probe_steps(struct sync *s, const char *key)
{
	struct backend_buf cur = { .max = 4096 };
	char tag[BACKEND_TAG_MAX];
	int rc = backend_put_if_absent_buf(s->b, key, "a", 1);
	const char *broken = NULL;

	if (rc == -EEXIST) {		/* left by a crash: start again */
		rc = backend_del(s->b, key);
		rc = rc ? rc : backend_put_if_absent_buf(s->b, key, "a", 1);
	}
	if (!rc) {
		rc = backend_put_if_absent_buf(s->b, key, "b", 1);
		if (!rc)
			broken = "a create-if-absent replaced an existing object";
		else if (rc == -EEXIST)
			rc = 0;
	}
	if (!rc && !broken)
		rc = backend_get_tagged(s->b, key, &cur, tag);
	if (!rc && !broken) {
		rc = backend_put_if_match_buf(s->b, key, "c", 1,
					      "streamfs-no-such-tag", NULL);
		if (!rc)
			broken = "a replace conditional on a wrong tag went through";
		else if (rc == -ESTALE)
			rc = 0;
	}
	if (!rc && !broken && (backend_caps(s->b) & BACKEND_CAP_LOCK))
		rc = probe_locks(s, key, &broken);
	backend_buf_release(&cur);
	if (broken) {
		sync_log(LOG_ERR, "remote %s does not enforce conditional "
			 "writes (%s): it cannot keep two writers of a tenant "
			 "apart", s->url_shown, broken);
		rc = -EOPNOTSUPP;
	}
	return rc;
}

int sync_probe_fencing(struct sync *s)
{
	char *key = NULL;
	int rc, drc;

	if (asprintf(&key, SYNC_ROOT "/probes/%s-%ld", s->identity,
		     (long)getpid()) < 0)
		return -ENOMEM;
	rc = probe_steps(s, key);
	/* A remote down now is down for the delete too; a probe left
	 * behind is deleted by the next one (-EEXIST). */
	if (!backend_err_retryable(rc)) {
		drc = backend_del(s->b, key);
		if (!rc && drc)
			rc = drc;
	}
	free(key);
	if (rc == -EOPNOTSUPP && s->cfg.risk_forks) {
		sync_log(LOG_WARNING, "running as a writer anyway "
			 "(risk_forks): a second writer of a tenant is not "
			 "refused, and a writer taken over is not fenced");
		s->mlocks = false;
		sync_mutex_lock(&s->lock);
		s->status.fencing_off = true;
		sync_mutex_unlock(&s->lock);
		rc = 0;
	}
	return rc;
}

int sync_leases_at_start(struct sync *s)
{
	struct sync_strvec names = { 0 };
	bool *created = NULL;
	char what[160];
	int rc;

	rc = store_tenant_list(s->st, sync_strvec_collect, &names);
	if (!rc && names.n && !(created = calloc(names.n, sizeof(*created))))
		rc = -ENOMEM;
	for (size_t i = 0; !rc && i < names.n; i++) {
		struct tenant_state *ts = sync_tstate(s, names.v[i]);
		bool c = false;

		rc = ts ? sync_lease_take(s, ts, what, sizeof(what), &c) : -ENOMEM;
		/* s->ts starts empty and grows only here: ts - s->ts <= i. */
		if (c)
			created[ts - s->ts] = true;
		if (backend_err_retryable(rc)) {
			sync_log(LOG_WARNING, "remote %s unreachable at start "
				 "(%s: %s); leases are taken when it comes back",
				 s->url_shown, what, strerror(-rc));
			rc = 0;
			break;
		}
	}
	/* Refused: undo only the leases this call wrote.  A lease that
	 * already named us (held before a restart) stays: its tenant may
	 * have segments not uploaded yet, and no other writer may take
	 * it over. */
	if (rc == -EBUSY)
		sync_lease_release(s, created);
	free(created);
	sync_strvec_release(&names);
	return rc;
}
