/*
 * lease.c: one writer per tenant per remote (docs/FORMAT.md, "Leases").
 *
 * The writer's identity lives in STATE_DIR/sync-identity (created on first
 * start), so that a restart of the same writer re-takes its own leases.  A
 * lease is an object naming that identity, written with a conditional put
 * and read back (a server may ignore the condition).  sync_start() takes
 * the lease of every existing tenant; the sync thread takes the others
 * before their first upload; sync_stop() releases them.  Runs on the
 * thread that owns s->b (sync_start(), the sync thread, sync_stop()), and
 * uses the tenant state, which is that thread's.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Reads the lease at KEY back: 0 when it names us, -EBUSY when another
 * writer (*HOLDER and *HOST, borrowed from *O, which the caller puts),
 * -EAGAIN when it is gone meanwhile, or the remote's -errno. */
static int lease_read(struct sync *s, const char *key, json_object **o,
		      const char **holder, const char **host)
{
	struct backend_buf cur = { .max = 1 << 16 };
	json_object *v;
	int rc;

	rc = backend_get(s->b, key, 0, BACKEND_TO_END, &cur);
	if (!rc)
		rc = backend_buf_terminate(&cur);
	if (rc == -ENOENT)
		rc = -EAGAIN;	/* released meanwhile: next pass */
	if (!rc) {
		*o = json_tokener_parse(cur.data);
		if (*o && json_object_object_get_ex(*o, "writer", &v))
			*holder = json_object_get_string(v);
		if (*o && json_object_object_get_ex(*o, "host", &v))
			*host = json_object_get_string(v);
		if (!*o || strcmp(*holder, s->identity))
			rc = -EBUSY;
	}
	backend_buf_release(&cur);
	return rc;
}

/* Logs and notes the outcome RC of taking TS's lease at KEY. */
static void lease_outcome(struct sync *s, struct tenant_state *ts, int rc,
			  const char *key, const char *holder, const char *host,
			  char *what, size_t wlen)
{
	if (!rc) {
		if (!ts->leased)
			sync_log(LOG_NOTICE, "tenant %s: lease taken on %s as writer %s",
				 ts->name, s->url_shown, s->identity);
		ts->leased = true;
		ts->refused = false;
	} else if (rc == -EBUSY) {
		snprintf(what, wlen, "lease of tenant %s held by writer %s",
			 ts->name, holder);
		if (!ts->refused)
			sync_log(LOG_ERR, "tenant %s on %s is held by writer %s (host %s); "
				 "refusing a second writer: nothing of it is "
				 "uploaded (remove %s on the remote only if "
				 "that writer is gone for good)", ts->name,
				 s->url_shown, holder, host, key);
		ts->refused = true;
	}
}

int sync_lease_take(struct sync *s, struct tenant_state *ts, char *what,
		    size_t wlen, bool *created)
{
	char *key = sync_lease_key(ts->name), *text = NULL;
	const char *holder = "?", *host = "?";
	json_object *o = NULL;
	bool wrote;
	int rc;

	if (!key || asprintf(&text, "{\"format\": \"streamfs-lease\", "
			     "\"version\": 1, \"writer\": \"%s\", \"host\": "
			     "\"%s\", \"pid\": %ld, \"taken_ns\": %" PRId64 "}\n",
			     s->identity, s->host, (long)getpid(),
			     sync_clock(CLOCK_REALTIME)) < 0) {
		free(key);
		return -ENOMEM;
	}
	snprintf(what, wlen, "take lease %s", key);
	rc = backend_put_if_absent_buf(s->b, key, text, strlen(text));
	wrote = !rc;
	/* A conditional put that succeeded is not proof: a server that
	 * ignores If-None-Match lets two writers both "create" the lease.
	 * Read it back; it is refused unless it names us. */
	if (!rc || rc == -EEXIST) {
		snprintf(what, wlen, "get %s", key);
		rc = lease_read(s, key, &o, &holder, &host);
	}
	if (rc == -EBUSY && wrote) {
		sync_log(LOG_ERR, "tenant %s: the remote %s accepted our conditional "
			 "lease write, yet the lease names writer %s: the "
			 "server ignores If-None-Match and cannot keep two "
			 "writers apart; refusing", ts->name, s->url_shown,
			 holder);
		wrote = false;	/* not ours: never delete it */
	}
	if (created)
		*created = !rc && wrote;
	lease_outcome(s, ts, rc, key, holder, host, what, wlen);
	json_object_put(o);
	free(text);
	free(key);
	return rc;
}

void sync_lease_release(struct sync *s, const bool *only)
{
	for (size_t i = 0; i < s->nts; i++) {
		char *key;
		int rc;

		if (!s->ts[i].leased || (only && !only[i]))
			continue;
		key = sync_lease_key(s->ts[i].name);
		rc = key ? backend_del(s->b, key) : -ENOMEM;
		if (rc) {
			sync_log(LOG_WARNING, "tenant %s: lease %s not released: %s",
				 s->ts[i].name, key ? key : "?", strerror(-rc));
			free(key);
			break;	/* the remote is down: do not wait for each */
		}
		s->ts[i].leased = false;
		free(key);
	}
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
			sync_log(LOG_WARNING, "remote %s unreachable at start (%s: %s); "
				 "leases are taken when it comes back",
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
