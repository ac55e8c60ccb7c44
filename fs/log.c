/*
 * log: where the daemon's log lines go.  Every line of store/, remote/,
 * sync/, fs/ and libfuse arrives here, one line per message (store/,
 * remote/ and libfuse through the sinks fs_log_start() sets, so that they
 * need no header of fs/), and goes to
 *   - stderr as "streamfs: MSG", while the daemon has one (always with -f,
 *     until it detaches without), but for LOG_INFO lines (mounted,
 *     unmounted), which would only repeat what the user just did;
 *   - with -o log=FILE, FILE, appended as "TIME streamfs[PID] LEVEL: MSG",
 *     and opened again when logrotate moved it away (the next line checks
 *     the path still names the open file, as Python's WatchedFileHandler
 *     does: no signal, no postrotate script);
 *   - else, detached, syslog: facility daemon, ident streamfs, the
 *     message's priority (journald takes it from /dev/log).
 * Lines are rare (one per change of state), so a stat per line is cheap.
 * A line that comes back within ten minutes (the same request failing at
 * each retry while a remote is down) is counted instead of written again
 * to FILE or syslog; the next one written says how often it repeated.
 * Callers never pass secrets: URLs go through backend_url_redacted().
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_log.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "lock.h"
#include "log.h"
#include "store.h"

#define REPEAT_NS (600 * (int64_t)1000000000)	/* ten minutes */
#define REPEAT_SLOTS 16		/* distinct lines remembered */

/* A line written lately to FILE or syslog. */
struct repeat {
	uint64_t hash;		/* of its text */
	int64_t said_ns;	/* CLOCK_MONOTONIC of its last write; 0: free */
	unsigned dropped;	/* times it came again, unwritten, since */
};

static struct {
	/* Set by fs_log_start() before any thread, then read-only. */
	bool started;		/* lock is initialized */
	char *path;		/* absolute path of log=FILE, or NULL */
	bool to_syslog;
	/* Cleared once by fs_log_detached(); read by any thread. */
	atomic_bool to_stderr;
	struct fs_mutex lock;	/* rank FS_LOCK_LOG: a leaf */
	/* The open FILE and what it was when opened (to notice a rotation). */
	int fd;			/* protected by lock; -1 without log= */
	dev_t dev;		/* protected by lock */
	ino_t ino;		/* protected by lock */
	struct repeat repeats[REPEAT_SLOTS];	/* protected by lock */
} logger = { .to_stderr = true, .fd = -1 };

static const char *prio_name(int prio)
{
	switch (prio) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_NOTICE:
		return "notice";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

/* Opens logger.path for appending; -errno on failure.  With lock held (or
 * before any thread). */
static int open_file(void)
{
	struct stat st;
	int fd = open(logger.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
		      0640);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		int err = errno;
		close(fd);
		return -err;
	}
	if (logger.fd >= 0)
		close(logger.fd);
	logger.fd = fd;
	logger.dev = st.st_dev;
	logger.ino = st.st_ino;
	return 0;
}

/* logrotate renamed or removed FILE: the path no longer names our file. */
static bool file_moved(void)
{
	struct stat st;

	return stat(logger.path, &st) != 0 || st.st_dev != logger.dev ||
	       st.st_ino != logger.ino;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* FNV-1a: enough to tell a few log lines apart. */
static uint64_t text_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Whether MSG was written less than REPEAT_NS ago: then it is counted and
 * not written again.  Else OUT (CAP bytes) is the line to write: MSG, and
 * how often it was left out since it was written last.  With lock held. */
static bool repeated(const char *msg, char *out, size_t cap)
{
	struct repeat *r = NULL, *oldest = &logger.repeats[0];
	uint64_t h = text_hash(msg);
	int64_t now = mono_ns();

	for (size_t i = 0; i < REPEAT_SLOTS && !r; i++) {
		struct repeat *q = &logger.repeats[i];

		if (q->said_ns && q->hash == h)
			r = q;
		else if (q->said_ns < oldest->said_ns)
			oldest = q;
	}
	if (r && now - r->said_ns < REPEAT_NS) {
		r->dropped++;
		return true;
	}
	if (r && r->dropped)
		snprintf(out, cap, "%s (repeated %u times since it was logged "
			 "last)", msg, r->dropped);
	else
		snprintf(out, cap, "%s", msg);
	if (!r) {
		r = oldest;
		r->hash = h;
	}
	r->said_ns = now;
	r->dropped = 0;
	return false;
}

/* With lock held. */
static void write_file(int prio, const char *msg)
{
	char line[1200], stamp[32];
	struct timespec now;
	struct tm tm;
	int len;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	len = snprintf(line, sizeof(line), "%s.%03ldZ streamfs[%ld] %s: %s\n",
		       stamp, now.tv_nsec / 1000000, (long)getpid(),
		       prio_name(prio), msg);
	if (len >= (int)sizeof(line)) {
		len = (int)sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	if (file_moved())
		(void)open_file();	/* failing, the old fd takes it */
	/* One write with O_APPEND: lines of threads never interleave. */
	if (write(logger.fd, line, (size_t)len) < 0) {
		/* nowhere left to say it */
	}
}

void fs_log_line(int prio, const char *msg)
{
	char line[1100];

	if (prio <= LOG_NOTICE && atomic_load(&logger.to_stderr))
		fprintf(stderr, "streamfs: %s\n", msg);
	if (!logger.path && !logger.to_syslog)
		return;
	fs_mutex_lock(&logger.lock);
	if (!repeated(msg, line, sizeof(line))) {
		if (logger.path)
			write_file(prio, line);
		else
			syslog(LOG_DAEMON | prio, "%s", line);
	}
	fs_mutex_unlock(&logger.lock);
}

void fs_log(int prio, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fs_log_line(prio, msg);
}

/* libfuse's own messages: its errors and warnings (a lost connection, a
 * failed unmount) like ours; its debug output (-d, in the foreground)
 * to stderr as it would print it.  libfuse writes some lines in pieces
 * (an unknown option list, an option at a time): a piece without its
 * '\n' waits for the rest, on the thread that writes it. */
static void fuse_line(enum fuse_log_level level, const char *fmt, va_list ap)
{
	static __thread char msg[1024];
	static __thread size_t len;

	if (level >= FUSE_LOG_INFO) {
		if (atomic_load(&logger.to_stderr))
			vfprintf(stderr, fmt, ap);
		return;
	}
	vsnprintf(msg + len, sizeof(msg) - len, fmt, ap);
	len = strlen(msg);
	if (len && msg[len - 1] != '\n' && len < sizeof(msg) - 1)
		return;
	while (len && msg[len - 1] == '\n')
		msg[--len] = '\0';
	fs_log_line((int)level, msg);
	len = 0;
	msg[0] = '\0';
}

/* FILE as an absolute path: the daemon changes to / when it detaches. */
static char *absolute(const char *file)
{
	char cwd[PATH_MAX], *out;

	if (file[0] == '/')
		return strdup(file);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, file) < 0)
		return NULL;
	return out;
}

int fs_log_start(const char *file, bool foreground)
{
	int rc;

	fs_mutex_init(&logger.lock, FS_LOCK_LOG);
	logger.started = true;
	if (file) {
		logger.path = absolute(file);
		rc = logger.path ? open_file() : errno ? -errno : -ENOMEM;
		if (rc) {
			fprintf(stderr, "streamfs: log=%s: %s\n", file,
				strerror(-rc));
			free(logger.path);
			logger.path = NULL;
			return rc;
		}
	} else if (!foreground) {
		openlog("streamfs", LOG_PID, LOG_DAEMON);
		logger.to_syslog = true;
	}
	store_log_set_sink(fs_log_line);
	remote_log_set_sink(fs_log_line);
	fuse_set_log_func(fuse_line);
	return 0;
}

void fs_log_detached(void)
{
	atomic_store(&logger.to_stderr, false);
}

void fs_log_stop(void)
{
	if (!logger.started)
		return;
	logger.started = false;
	/* Whatever logs after this (nothing should) goes to stderr. */
	store_log_set_sink(NULL);
	remote_log_set_sink(NULL);
	fuse_set_log_func(NULL);
	if (logger.to_syslog)
		closelog();
	logger.to_syslog = false;
	if (logger.fd >= 0)
		close(logger.fd);
	logger.fd = -1;
	free(logger.path);
	logger.path = NULL;
	fs_mutex_destroy(&logger.lock);
}
