/*
 * log: where the daemon's log lines go.  Every line of store/, remote/,
 * sync/ and fs/ arrives here, one line per message (store/ and remote/
 * through the sinks fs_log_start() sets, so that they need no header of
 * fs/), and goes to
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
 * Callers never pass secrets: URLs go through backend_url_redacted().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdarg.h>
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

static struct {
	/* Set by fs_log_start() before any thread, then read-only. */
	char *path;		/* absolute path of log=FILE, or NULL */
	bool to_syslog;
	/* Cleared once by fs_log_detached(); read by any thread. */
	atomic_bool to_stderr;
	/* The open FILE and what it was when opened (to notice a rotation). */
	struct fs_mutex lock;	/* rank FS_LOCK_LOG: a leaf */
	int fd;			/* protected by lock; -1 without log= */
	dev_t dev;		/* protected by lock */
	ino_t ino;		/* protected by lock */
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
	fs_mutex_lock(&logger.lock);
	if (file_moved())
		(void)open_file();	/* on failure, the old fd still takes it */
	/* One write with O_APPEND: lines of threads never interleave. */
	if (write(logger.fd, line, (size_t)len) < 0) {
		/* nowhere left to say it */
	}
	fs_mutex_unlock(&logger.lock);
}

void fs_log_line(int prio, const char *msg)
{
	if (prio <= LOG_NOTICE && atomic_load(&logger.to_stderr))
		fprintf(stderr, "streamfs: %s\n", msg);
	if (logger.path)
		write_file(prio, msg);
	else if (logger.to_syslog)
		syslog(LOG_DAEMON | prio, "%s", msg);
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
	if (file) {
		logger.path = absolute(file);
		if (!logger.path)
			return -errno ? -errno : -ENOMEM;
		rc = open_file();
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
	return 0;
}

void fs_log_detached(void)
{
	atomic_store(&logger.to_stderr, false);
}

void fs_log_stop(void)
{
	/* Whatever logs after this (nothing should) goes to stderr. */
	store_log_set_sink(NULL);
	remote_log_set_sink(NULL);
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
