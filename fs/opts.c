/*
 * Command line: SOURCE MOUNTPOINT and the -o options of the contract,
 * parsed with libfuse's fuse_opt so libfuse's own options pass through.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_int.h"

enum { KEY_HELP, KEY_VERSION, KEY_RO, KEY_ALLOW_OTHER,
       KEY_DEFAULT_PERMISSIONS };

#define OPT_STR(t, f) { t, offsetof(struct fs_opts, f), 0 }
#define OPT_FLAG(t, f) { t, offsetof(struct fs_opts, f), 1 }

static const struct fuse_opt fs_opt_specs[] = {
	OPT_STR("remote=%s", remote),
	OPT_STR("endpoint=%s", endpoint),
	OPT_STR("region=%s", region),
	OPT_STR("credentials=%s", credentials),
	OPT_STR("framing=%s", framing_str),
	OPT_STR("sync=%s", sync_str),
	OPT_STR("log=%s", log_file),
	OPT_STR("roll=%s", roll_str),
	OPT_STR("roll_size=%s", roll_size_str),
	OPT_STR("max_event=%s", max_event_str),
	OPT_STR("cache_size=%s", cache_size_str),
	OPT_STR("max_snapshot=%s", max_snapshot_str),
	OPT_STR("poll=%s", poll_str),
	OPT_STR("lease=%s", lease_str),
	OPT_FLAG("takeover", takeover),
	OPT_FLAG("risk_forks", risk_forks),
	OPT_STR("flush=%s", flush_str),
	OPT_STR("piece_keep=%s", piece_keep_str),
	OPT_STR("ca_file=%s", ca_file),
	OPT_STR("metrics=%s", metrics),
	OPT_FLAG("query_slash_raw", query_slash_raw),
	OPT_STR("query_slash_raw=%d", query_slash_raw),
	OPT_FLAG("path_style", path_style),
	OPT_STR("path_style=%d", path_style),
	OPT_FLAG("nodelete", nodelete),
	OPT_FLAG("create", create),
	OPT_FLAG("io_uring", io_uring),
	OPT_FLAG("allow_other_without_permissions", allow_other_unchecked),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

void fs_usage(const char *prog)
{
	printf("usage: %s SOURCE MOUNTPOINT [-f] [-d] [-o OPT[,OPT...]]\n"
	       "       %s verify DATADIR\n"
	       "       %s status [--json] MOUNTPOINT\n"
	       "       %s sync [--timeout SECS] MOUNTPOINT\n"
	       "\n"
	       "SOURCE is the data directory (segments and indexes): one that\n"
	       "streamfs made, or an empty directory, which becomes a new one.\n"
	       "A SOURCE that does not exist is refused unless -o create.\n"
	       "\n"
	       "streamfs options:\n"
	       "    -o remote=URL          sync sealed segments to URL (file://, s3://, http(s)://)\n"
	       "    -o endpoint=URL        S3 endpoint (MinIO, R2, B2, Ceph)\n"
	       "    -o region=NAME         S3 region\n"
	       "    -o path_style          S3 path-style addressing\n"
	       "    -o credentials=FILE    credentials file (mode 0600); else AWS_* variables\n"
	       "    -o ca_file=FILE        CA bundle (PEM) for https:// and s3://, used\n"
	       "                           instead of the system's CAs (a private CA)\n"
	       "    -o roll=DURATION       seal the active segment at this age (default 1h)\n"
	       "    -o roll_size=SIZE      ... or at this size (default 64M)\n"
	       "    -o cache_size=SIZE     bound on local copies of uploaded segments\n"
	       "    -o poll=DURATION       remote rescan interval on analysis hosts (default 2s)\n"
	       "    -o flush=DURATION|off  ship what active segments took this often\n"
	       "                           (default 2s; at most 5s)\n"
	       "    -o piece_keep=DURATION how long a tail piece stays once no manifest\n"
	       "                           names it (default 60s, at least 1s)\n"
	       "    -o lease=DURATION      how long a tenant's lease outlives its last\n"
	       "                           renewal (default 60s, at least 1s)\n"
	       "    -o takeover            take tenants whose lease expired (their\n"
	       "                           writer is gone) and continue their history\n"
	       "    -o risk_forks          write to a remote that does not enforce\n"
	       "                           conditional writes (two writers may fork)\n"
	       "    -o framing=lines|raw   framing of new streams (default lines)\n"
	       "    -o max_event=SIZE      largest event (default 1M; with framing=raw\n"
	       "                           at most and by default 255 pages, 1020K)\n"
	       "    -o max_snapshot=SIZE   largest snapshot, S@snap=V (default 64M)\n"
	       "    -o sync=none|always    fsync every write (default none)\n"
	       "    -o create              make SOURCE when it does not exist\n"
	       "    -o nodelete            refuse to delete streams (EPERM)\n"
	       "    -o metrics=ADDR:PORT   serve Prometheus metrics at /metrics there\n"
	       "                           (127.0.0.1:9567, [::1]:9567)\n"
	       "    -o io_uring            take requests over io_uring, on the CPU\n"
	       "                           that made them (kernel 6.14+, with the fuse\n"
	       "                           module parameter enable_uring set)\n"
	       "    -o log=FILE            log to FILE (appended, timestamped) instead\n"
	       "                           of syslog; with -f, to stderr as well\n"
	       "    -o ro                  read-only mount; with remote=, an analysis host\n"
	       "                           mirroring URL into SOURCE (a cache directory)\n"
	       "    -o allow_other         let other users in; needs default_permissions\n"
	       "                           (the kernel checks modes and owners) or:\n"
	       "    -o allow_other_without_permissions\n"
	       "                           allow_other with no permission checks at\n"
	       "                           all: every user may read, append to and\n"
	       "                           chown every tenant and stream\n"
	       "\n"
	       "SIZE: bytes with optional K, M or G; DURATION: seconds with\n"
	       "optional ms, s, m, h or d.\n"
	       "status prints the sync status of a mount; sync puts everything\n"
	       "acknowledged on the remote now (active segments in tail pieces;\n"
	       "with flush=off sealed and uploaded; an analysis mount: rescans the\n"
	       "remote) and waits, at most SECS seconds (1 to 86400, default 300).\n"
	       "On a terminal, verify and sync show their progress on stderr.\n"
	       "\n"
	       "verify refuses a DATADIR that a streamfs has mounted.\n"
	       "\n"
	       "exit status: verify, status and sync exit 0 on success, 1 on a\n"
	       "failure (damage found, no streamfs there, the sync did not finish)\n"
	       "and 2 on a usage error (for verify also: DATADIR is mounted);\n"
	       "mounting exits 0 once mounted, else 1.\n"
	       "\n", prog, prog, prog, prog);
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct fs_opts *o = data;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	case KEY_RO:
		o->ro = 1;
		return 1;	/* the kernel needs it too */
	case KEY_ALLOW_OTHER:
		o->allow_other = 1;
		return 1;	/* libfuse's, seen on the way */
	case KEY_DEFAULT_PERMISSIONS:
		o->default_permissions = 1;
		return 1;
	case FUSE_OPT_KEY_NONOPT:
		if (!o->source) {
			o->source = strdup(arg);
			return o->source ? 0 : -1;
		}
		return 1;	/* the mount point, for fuse_parse_cmdline */
	default:
		return 1;
	}
}

static int parse_size(const char *name, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		goto bad;
	switch (*end) {
	case 'k': case 'K': mult = 1ull << 10; end++; break;
	case 'm': case 'M': mult = 1ull << 20; end++; break;
	case 'g': case 'G': mult = 1ull << 30; end++; break;
	default: break;
	}
	if (*end == 'i' && mult > 1)
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > UINT64_MAX / mult)
		goto bad;
	*out = v * mult;
	return 0;
bad:
	fprintf(stderr, "streamfs: bad size for %s: '%s'\n", name, s);
	return -EINVAL;
}

static int parse_duration(const char *name, const char *s, int64_t *out)
{
	char *end;
	double v;
	double mult = 1e9;

	errno = 0;
	v = strtod(s, &end);
	/* !(v >= 0) also refuses NaN; inf is refused by the range check. */
	if (errno || end == s || !(v >= 0))
		goto bad;
	if (strcmp(end, "ms") == 0)
		mult = 1e6;
	else if (strcmp(end, "m") == 0)
		mult = 60e9;
	else if (strcmp(end, "h") == 0)
		mult = 3600e9;
	else if (strcmp(end, "d") == 0)
		mult = 86400e9;
	else if (*end && strcmp(end, "s") != 0)
		goto bad;
	/* 2^63 ns is about 292 years: anything at or past it overflows. */
	if (!(v * mult < 9.2e18))
		goto bad;
	*out = (int64_t)(v * mult);
	return 0;
bad:
	fprintf(stderr, "streamfs: bad duration for %s: '%s'\n", name, s);
	return -EINVAL;
}

/* flush=DURATION: 0 or "off" turns shipping of active segments off; more
 * than 5 s is refused, so that a lost writer never loses more (§7). */
static int parse_flush(struct fs_opts *o)
{
	int rc;

	if (strcmp(o->flush_str, "off") == 0) {
		o->flush_ns = 0;
		return 0;
	}
	rc = parse_duration("flush", o->flush_str, &o->flush_ns);
	if (!rc && o->flush_ns > 5000000000LL) {
		fprintf(stderr, "streamfs: flush=%s: at most 5s (or off)\n",
			o->flush_str);
		rc = -EINVAL;
	}
	return rc;
}

/* A raw write is one event only up to fs_raw_event_max(): with raw
 * framing by default, max_event defaults to that and may not exceed it. */
static int check_raw_max_event(struct fs_opts *o)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t most = fs_raw_event_max(page, FS_REQUEST_MAX);

	if (o->store.framing != STORE_RAW)
		return 0;
	if (!o->max_event_str) {
		if (o->store.max_event > most)
			o->store.max_event = (uint32_t)most;
		return 0;
	}
	if (o->store.max_event <= most)
		return 0;
	fprintf(stderr, "streamfs: max_event above %zu bytes with framing=raw: "
		"a larger write(2) may reach the daemon in two requests\n", most);
	return -EINVAL;
}

static int parse_values(struct fs_opts *o)
{
	uint64_t v;
	int rc = 0;

	if (o->framing_str) {
		if (strcmp(o->framing_str, "lines") == 0)
			o->store.framing = STORE_LINES;
		else if (strcmp(o->framing_str, "raw") == 0)
			o->store.framing = STORE_RAW;
		else
			goto bad_framing;
	}
	if (o->sync_str) {
		if (strcmp(o->sync_str, "always") == 0)
			o->store.sync_always = true;
		else if (strcmp(o->sync_str, "none") != 0)
			goto bad_sync;
	}
	if (!rc && o->roll_str)
		rc = parse_duration("roll", o->roll_str, &o->store.roll_age_ns);
	if (!rc && o->roll_size_str)
		rc = parse_size("roll_size", o->roll_size_str, &o->store.roll_size);
	if (!rc && o->max_event_str) {
		rc = parse_size("max_event", o->max_event_str, &v);
		if (!rc && (v == 0 || v > UINT32_MAX)) {
			fprintf(stderr, "streamfs: max_event=%s: out of range "
				"(1 byte to 4G - 1)\n", o->max_event_str);
			rc = -EINVAL;
		}
		o->store.max_event = (uint32_t)v;
	}
	if (!rc)
		rc = check_raw_max_event(o);
	if (!rc && o->cache_size_str)
		rc = parse_size("cache_size", o->cache_size_str, &o->cache_size);
	if (!rc && o->max_snapshot_str)
		rc = parse_size("max_snapshot", o->max_snapshot_str,
				&o->max_snapshot);
	if (!rc && o->poll_str)
		rc = parse_duration("poll", o->poll_str, &o->poll_ns);
	if (!rc && o->lease_str) {
		rc = parse_duration("lease", o->lease_str, &o->lease_ns);
		if (!rc && o->lease_ns < 1000000000LL) {
			fprintf(stderr, "streamfs: lease must be at least 1s\n");
			rc = -EINVAL;
		}
	}
	if (!rc && o->flush_str)
		rc = parse_flush(o);
	if (!rc && o->piece_keep_str) {
		rc = parse_duration("piece_keep", o->piece_keep_str,
				    &o->piece_keep_ns);
		/* a reader of the previous manifest needs some time */
		if (!rc && o->piece_keep_ns < 1000000000LL) {
			fprintf(stderr, "streamfs: piece_keep must be at least 1s\n");
			rc = -EINVAL;
		}
	}
	return rc;
bad_framing:
	fprintf(stderr, "streamfs: framing=%s: must be lines or raw\n",
		o->framing_str);
	return -EINVAL;
bad_sync:
	fprintf(stderr, "streamfs: sync=%s: must be none or always\n",
		o->sync_str);
	return -EINVAL;
}

/* metrics=ADDR:PORT: a numeric IPv4 address, or an IPv6 one in brackets,
 * and a port from 1 to 65535, into O->metrics_addr. */
static int parse_metrics(struct fs_opts *o)
{
	struct addrinfo hints = {
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
		.ai_socktype = SOCK_STREAM,
	};
	char host[INET6_ADDRSTRLEN + 1], *port, *end;
	const char *v = o->metrics;
	struct addrinfo *ai = NULL;
	size_t hlen;
	long n;

	if (*v == '[') {
		end = strchr(v, ']');
		port = end && end[1] == ':' ? end + 2 : NULL;
		v++;
		hlen = end ? (size_t)(end - v) : 0;
	} else {
		port = strrchr(v, ':');
		hlen = port ? (size_t)(port - v) : 0;
		port = port && !memchr(v, ':', hlen) ? port + 1 : NULL;
	}
	errno = 0;
	n = port ? strtol(port, &end, 10) : 0;
	if (!port || !hlen || hlen >= sizeof(host) || errno || end == port ||
	    *end || n < 1 || n > 65535)
		goto bad;
	memcpy(host, v, hlen);
	host[hlen] = '\0';
	if (getaddrinfo(host, port, &hints, &ai) || !ai)
		goto bad;
	memcpy(&o->metrics_addr, ai->ai_addr, ai->ai_addrlen);
	o->metrics_addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
bad:
	fprintf(stderr, "streamfs: metrics=%s: want ADDR:PORT, a numeric "
		"address and a port from 1 to 65535 (127.0.0.1:9567, "
		"[::1]:9567, 0.0.0.0:9567)\n", o->metrics);
	return -EINVAL;
}

/* The remote options: a known scheme, a private credentials file, and no
 * remote-only option without remote=. */
static int check_remote(struct fs_opts *o)
{
	static const char *schemes[] = { "file://", "s3://", "http://",
					 "https://" };
	struct stat st;
	bool known = false;

	if (!o->remote) {
		const char *what = o->endpoint ? "endpoint=" :
				   o->region ? "region=" :
				   o->credentials ? "credentials=" :
				   o->cache_size_str ? "cache_size=" :
				   o->poll_str ? "poll=" :
				   o->lease_str ? "lease=" :
				   o->takeover ? "takeover" :
				   o->risk_forks ? "risk_forks" :
				   o->flush_str ? "flush=" :
				   o->piece_keep_str ? "piece_keep=" :
				   o->ca_file ? "ca_file=" :
				   o->path_style ? "path_style" :
				   o->query_slash_raw ? "query_slash_raw" : NULL;
		if (what) {
			fprintf(stderr, "streamfs: %s needs remote=URL\n", what);
			return -EINVAL;
		}
		return 0;
	}
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strncmp(o->remote, schemes[i], strlen(schemes[i])) == 0 &&
		    o->remote[strlen(schemes[i])])
			known = true;
	if (!known) {
		fprintf(stderr, "streamfs: remote= must be file:///DIR, "
			"s3://BUCKET[/PREFIX] or http(s)://HOST/PATH, not '%s'\n",
			o->remote_shown);
		return -EINVAL;
	}
	/* Refused here, for every scheme, so that no URL that might hold a
	 * secret reaches sync/, whose log lines name the remote. */
	if (strcmp(o->remote, o->remote_shown) != 0) {
		fprintf(stderr, "streamfs: remote=%s: credentials do not belong "
			"in the URL (they would show in ps and in logs); give "
			"them in credentials=FILE or the environment, and write "
			"an '@' of a path as %%40\n", o->remote_shown);
		return -EINVAL;
	}
	if (o->credentials) {
		if (stat(o->credentials, &st)) {
			fprintf(stderr, "streamfs: credentials file %s: %s\n",
				o->credentials, strerror(errno));
			return -EINVAL;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, "streamfs: credentials file %s is not "
				"a regular file\n", o->credentials);
			return -EINVAL;
		}
		if (st.st_mode & 0044) {
			fprintf(stderr, "streamfs: credentials file %s is "
				"readable by group or others (mode %04o); "
				"refusing it: chmod 600 %s\n", o->credentials,
				(unsigned)(st.st_mode & 07777), o->credentials);
			return -EACCES;
		}
	}
	o->replica = o->ro;
	if (o->replica && (o->takeover || o->lease_str || o->risk_forks)) {
		fprintf(stderr, "streamfs: %s is for writer hosts, not with ro\n",
			o->takeover ? "takeover" : o->lease_str ? "lease=" :
			"risk_forks");
		return -EINVAL;
	}
	return 0;
}

/* allow_other without default_permissions lets every user read, append to
 * and chown every tenant, whatever its mode: the daemon checks no
 * permissions itself.  Only an option that says so opts in. */
static int check_permissions(const struct fs_opts *o)
{
	if (o->allow_other_unchecked && !o->allow_other) {
		fprintf(stderr, "streamfs: allow_other_without_permissions "
			"goes with allow_other\n");
		return -EINVAL;
	}
	if (!o->allow_other || o->default_permissions ||
	    o->allow_other_unchecked)
		return 0;
	fprintf(stderr, "streamfs: allow_other without default_permissions "
		"would let every user read, append to and chown every tenant "
		"and stream, whatever its mode; add default_permissions (the "
		"kernel then checks modes and owners), or "
		"allow_other_without_permissions to accept that\n");
	return -EPERM;
}

int fs_opts_parse(struct fuse_args *args, struct fs_opts *o)
{
	int rc;

	memset(o, 0, sizeof(*o));
	store_config_default(&o->store);
	o->max_snapshot = 64u << 20;
	if (fuse_opt_parse(args, o, fs_opt_specs, opt_proc) == -1)
		return -EINVAL;
	if (o->show_help || o->show_version)
		return 0;
	if (o->remote && !(o->remote_shown = backend_url_redacted(o->remote)))
		return -ENOMEM;
	rc = parse_values(o);
	if (!rc && o->metrics)
		rc = parse_metrics(o);
	if (!rc)
		rc = check_remote(o);
	if (!rc)
		rc = check_permissions(o);
	if (rc)
		return rc;
	/* with a remote, an analysis host's store takes the remote's data */
	o->store.read_only = o->ro && !o->remote;
	if (!o->source) {
		fprintf(stderr, "streamfs: missing SOURCE (see --help)\n");
		return -EINVAL;
	}
	return 0;
}

void fs_opts_release(struct fs_opts *o)
{
	free(o->source);
	free(o->remote);
	free(o->remote_shown);
	free(o->endpoint);
	free(o->region);
	free(o->credentials);
	free(o->log_file);
	free(o->framing_str);
	free(o->sync_str);
	free(o->roll_str);
	free(o->roll_size_str);
	free(o->max_event_str);
	free(o->cache_size_str);
	free(o->max_snapshot_str);
	free(o->poll_str);
	free(o->lease_str);
	free(o->flush_str);
	free(o->piece_keep_str);
	free(o->ca_file);
	free(o->metrics);
}
