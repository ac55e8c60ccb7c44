/*
 * progress: the one line the long tools (verify, sync) draw on a terminal:
 *   verify: 1.2 GiB of 3.0 GiB, 18 of 48 segments, 210 MiB/s, 9 s left
 * redrawn in place (\r, then erase to the end of the line) at most five
 * times a second, and erased at the end.  When stderr is no terminal
 * (a pipe, a file, cron) nothing is drawn at all.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

#define REDRAW_NS 200000000	/* five times a second */

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void fs_progress_init(struct fs_progress *p, const char *what,
		      const char *objects)
{
	*p = (struct fs_progress){
		.what = what,
		.objects = objects,
		.on = isatty(STDERR_FILENO) == 1,
		.start_ns = mono_ns(),
	};
}

/* N bytes in binary units, as "512 B" or "1.5 MiB". */
static void human(char *buf, size_t cap, double n)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned u = 0;

	while (n >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		n /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%.0f B", n);
	else
		snprintf(buf, cap, "%.1f %s", n, units[u]);
}

/* What is left, as "9 s left", "3 min left" or "2.5 h left"; empty while
 * nothing tells yet. */
static void time_left(char *buf, size_t cap, double bytes_left, double rate)
{
	double secs;

	buf[0] = '\0';
	if (rate <= 0 || bytes_left <= 0)
		return;
	secs = bytes_left / rate;
	if (secs < 100)
		snprintf(buf, cap, ", %.0f s left", secs);
	else if (secs < 6000)
		snprintf(buf, cap, ", %.0f min left", secs / 60);
	else
		snprintf(buf, cap, ", %.1f h left", secs / 3600);
}

void fs_progress_show(struct fs_progress *p, const struct fs_progress_state *s,
		      bool now)
{
	char done[32], total[32], rate_s[32], left[32];
	int64_t t = mono_ns();
	double secs = (double)(t - p->start_ns) / 1e9;
	double rate = secs > 0 ? (double)s->bytes_done / secs : 0;

	if (!p->on || (!now && p->drawn && t - p->last_ns < REDRAW_NS))
		return;
	p->last_ns = t;
	p->drawn = true;
	human(done, sizeof(done), (double)s->bytes_done);
	human(total, sizeof(total), (double)s->bytes_total);
	human(rate_s, sizeof(rate_s), rate);
	time_left(left, sizeof(left),
		  (double)s->bytes_total - (double)s->bytes_done, rate);
	fprintf(stderr, "\r%s: %s of %s, %" PRIu64 " of %" PRIu64 " %s, %s/s%s"
		"\033[K", p->what, done, total, s->objects_done,
		s->objects_total, p->objects, rate_s, left);
	fflush(stderr);
}

void fs_progress_end(struct fs_progress *p)
{
	if (!p->drawn)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->drawn = false;
}
