/*
 * log: the daemon's log lines (log.c), for every file of fs/ (ring.c too,
 * which includes no more of fs/ than it needs).
 */
#ifndef STREAMFS_FS_LOG_H
#define STREAMFS_FS_LOG_H

#include <stdbool.h>
#include <syslog.h>	/* LOG_* priorities of fs_log() */

/* The one way out for log lines (see log.c's top).  PRIO is a syslog(3)
 * priority: LOG_ERR and LOG_WARNING for failures, LOG_NOTICE and LOG_INFO
 * for changes of state.  Before fs_log_start() and after fs_log_stop(),
 * lines go to stderr. */
void fs_log(int prio, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void fs_log_line(int prio, const char *msg);
/* Opens FILE (log=, may be NULL; a relative path is taken from the current
 * directory) or, without FILE and not FOREGROUND, syslog; routes store/'s
 * and remote/'s lines here.  Before any thread.  -errno, said on stderr. */
int fs_log_start(const char *file, bool foreground)
	__attribute__((warn_unused_result));
/* stderr is gone (the daemon detached): lines go to FILE or syslog only. */
void fs_log_detached(void);
void fs_log_stop(void);

#endif
