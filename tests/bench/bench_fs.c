/*
 * bench_fs: the timed loops of tests/bench/run, run the same way against a
 * streamfs mount, a nullfs mount and a plain directory, so that only the
 * filesystem differs.  Each subcommand prints "key value" lines.
 *
 *   append FILE lines|ids|one EVENTS [WRITE_SIZE]
 *       100-byte lines appended with O_APPEND, WRITE_SIZE bytes of whole
 *       lines per write(2) (default 64 KiB); "one": one line per write.
 *       -> events_per_s, mb_per_s
 *   fsync FILE N           N times: append one line, then time fsync(2).
 *       -> p50_us, p99_us
 *   follow WFILE RFILE N view|inotify
 *       a reader blocks on RFILE (a ",follow" view, or inotify on WFILE for
 *       a plain file); N times: append one line, time until the reader has
 *       it.  -> p50_us, p99_us, max_us
 *   followers WFILE RFILE N view|inotify
 *       N reader threads block as above; prints "parked" and waits for a
 *       line on stdin (the caller measures memory), then appends one line
 *       and times until every reader has it.  -> p50_ms, all_ms
 *   create DIR N           creates N empty files.  -> creates_per_s
 *   viewread FILE FIRST LAST N
 *       N times: open FILE@V for a random V in [FIRST, LAST], read 4 KiB,
 *       close.  -> p50_us, p99_us
 *   rawread FILE SIZE N    N times: open FILE, pread 4 KiB at a random
 *       offset in the last 1% of SIZE, close.  -> p50_us, p99_us
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "bench_lines.h"

static void die(const char *what, const char *path)
{
	fprintf(stderr, "bench_fs: %s %s: %s\n", what, path ? path : "",
		strerror(errno));
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);

	return v[i];
}

static void print_lat(const char *unit, double scale, double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	printf("p50_%s %.1f\np99_%s %.1f\nmax_%s %.1f\n", unit,
	       pct(v, n, 0.5) * scale, unit, pct(v, n, 0.99) * scale, unit,
	       v[n - 1] * scale);
}

static void write_all(int fd, const char *buf, size_t len, const char *path)
{
	ssize_t w = write(fd, buf, len);

	if (w < 0)
		die("write", path);
	if ((size_t)w != len) {
		fprintf(stderr, "bench_fs: short write on %s\n", path);
		exit(1);
	}
}

/* A sequence base per run, so that repeated runs never repeat an ID. */
static uint64_t seq_base(void)
{
	return (uint64_t)getpid() << 40 ^ (uint64_t)(bench_now() * 1e6) << 20;
}

static int cmd_append(int argc, char **argv)
{
	const char *path = argv[0], *mode = argv[1];
	uint64_t events = strtoull(argv[2], NULL, 10), done = 0;
	size_t wsize = argc > 3 ? strtoull(argv[3], NULL, 10) : 65536;
	bool one = strcmp(mode, "one") == 0, ids = strcmp(mode, "ids") == 0;
	uint64_t seq = seq_base();
	char *buf = malloc(wsize);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	double t0, dt;

	if (fd < 0)
		die("open", path);
	if (one)
		wsize = LINE_LEN;
	t0 = bench_now();
	while (done < events) {
		size_t n = bench_fill(buf, wsize, ids, &seq);

		if (n > events - done)
			n = events - done;
		write_all(fd, buf, n * LINE_LEN, path);
		done += n;
	}
	if (close(fd))
		die("close", path);
	dt = bench_now() - t0;
	printf("events_per_s %.0f\nmb_per_s %.1f\n", (double)done / dt,
	       (double)done * LINE_LEN / dt / 1e6);
	free(buf);
	return 0;
}

static int cmd_fsync(char **argv)
{
	const char *path = argv[0];
	size_t n = strtoull(argv[1], NULL, 10);
	double *lat = calloc(n, sizeof(*lat));
	uint64_t seq = seq_base();
	char line[LINE_LEN];
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);

	if (fd < 0)
		die("open", path);
	for (size_t i = 0; i < n; i++) {
		double t0;

		bench_line(line, seq++, false);
		write_all(fd, line, LINE_LEN, path);
		t0 = bench_now();
		if (fsync(fd))
			die("fsync", path);
		lat[i] = bench_now() - t0;
	}
	close(fd);
	print_lat("us", 1e6, lat, n);
	free(lat);
	return 0;
}

/* One blocked reader: a follow view, or inotify on a plain file. */
struct reader {
	const char *rpath, *wpath;
	bool inotify;
	int fd, ifd;
	off_t off;
	pthread_t th;
	double woke;		/* time of the last wake-up */
	atomic_int got;		/* wake-ups so far */
	sem_t sem;		/* posted at each wake-up */
};

static void reader_open(struct reader *r)
{
	r->fd = open(r->inotify ? r->wpath : r->rpath, O_RDONLY);
	if (r->fd < 0)
		die("open", r->rpath);
	if (r->inotify) {
		r->ifd = inotify_init1(0);
		if (r->ifd < 0 || inotify_add_watch(r->ifd, r->wpath, IN_MODIFY) < 0)
			die("inotify", r->wpath);
		r->off = lseek(r->fd, 0, SEEK_END);
	}
}

/* Blocks until new bytes arrive; returns their length (0: end). */
static ssize_t reader_wait(struct reader *r, char *buf, size_t cap)
{
	if (!r->inotify)
		return read(r->fd, buf, cap);
	for (;;) {
		char ev[4096];
		ssize_t n = pread(r->fd, buf, cap, r->off);

		if (n > 0) {
			r->off += n;
			return n;
		}
		if (n < 0 || read(r->ifd, ev, sizeof(ev)) < 0)
			return -1;
	}
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	char buf[4096];

	for (;;) {
		ssize_t n = reader_wait(r, buf, sizeof(buf));

		if (n <= 0)
			break;
		r->woke = bench_now();
		atomic_fetch_add(&r->got, 1);
		sem_post(&r->sem);
	}
	return NULL;
}

static int cmd_follow(char **argv)
{
	struct reader r = { .wpath = argv[0], .rpath = argv[1],
			    .inotify = strcmp(argv[3], "inotify") == 0 };
	size_t n = strtoull(argv[2], NULL, 10);
	double *lat = calloc(n, sizeof(*lat));
	uint64_t seq = seq_base();
	char line[LINE_LEN];
	int fd = open(r.wpath, O_WRONLY | O_APPEND);

	if (fd < 0)
		die("open", r.wpath);
	reader_open(&r);
	sem_init(&r.sem, 0, 0);
	if (pthread_create(&r.th, NULL, reader_main, &r))
		die("pthread_create", NULL);
	for (size_t i = 0; i < n; i++) {
		double t0;

		/* Let the reader reach the daemon and park again. */
		usleep(2000);
		bench_line(line, seq++, false);
		t0 = bench_now();
		write_all(fd, line, LINE_LEN, r.wpath);
		{
			struct timespec dl;

			clock_gettime(CLOCK_REALTIME, &dl);
			dl.tv_sec += 10;
			if (sem_timedwait(&r.sem, &dl)) {
				fprintf(stderr, "bench_fs: follower never woke\n");
				exit(1);
			}
		}
		lat[i] = r.woke - t0;
	}
	close(fd);
	print_lat("us", 1e6, lat, n);
	/* The reader stays blocked: exit ends it. */
	fflush(stdout);
	_exit(0);
}

static atomic_int opened;

static void *follower_main(void *arg)
{
	struct reader *r = arg;
	char buf[4096];

	reader_open(r);
	atomic_fetch_add(&opened, 1);
	if (reader_wait(r, buf, sizeof(buf)) > 0) {
		r->woke = bench_now();
		atomic_fetch_add(&r->got, 1);
	}
	return NULL;
}

static int cmd_followers(char **argv)
{
	size_t n = strtoull(argv[2], NULL, 10), woken;
	struct reader *rs = calloc(n, sizeof(*rs));
	double *lat = calloc(n, sizeof(*lat));
	uint64_t seq = seq_base();
	char line[LINE_LEN], ack[16];
	pthread_attr_t attr;
	double t0;
	int fd = open(argv[0], O_WRONLY | O_APPEND);

	if (fd < 0)
		die("open", argv[0]);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (size_t i = 0; i < n; i++) {
		rs[i].wpath = argv[0];
		rs[i].rpath = argv[1];
		rs[i].inotify = strcmp(argv[3], "inotify") == 0;
		if (pthread_create(&rs[i].th, &attr, follower_main, &rs[i]))
			die("pthread_create", NULL);
	}
	while (atomic_load(&opened) < (int)n)
		usleep(1000);
	sleep(1);	/* every read reaches the daemon and parks */
	printf("parked\n");
	fflush(stdout);
	if (!fgets(ack, sizeof(ack), stdin))
		return 1;
	bench_line(line, seq, false);
	t0 = bench_now();
	write_all(fd, line, LINE_LEN, argv[0]);
	do {
		woken = 0;
		for (size_t i = 0; i < n; i++)
			woken += atomic_load(&rs[i].got) > 0;
		if (bench_now() - t0 > 30) {
			fprintf(stderr, "bench_fs: %zu of %zu followers woke\n",
				woken, n);
			exit(1);
		}
		if (woken < n)
			usleep(100);
	} while (woken < n);
	for (size_t i = 0; i < n; i++)
		lat[i] = rs[i].woke - t0;
	qsort(lat, n, sizeof(*lat), cmp_double);
	printf("p50_ms %.2f\nall_ms %.2f\n", pct(lat, n, 0.5) * 1e3,
	       lat[n - 1] * 1e3);
	fflush(stdout);
	_exit(0);
}

static int cmd_create(char **argv)
{
	size_t n = strtoull(argv[1], NULL, 10);
	char path[4096];
	double t0 = bench_now();

	for (size_t i = 0; i < n; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/s%07zu", argv[0], i);
		fd = open(path, O_WRONLY | O_CREAT, 0644);
		if (fd < 0 || close(fd))
			die("create", path);
	}
	printf("creates_per_s %.0f\n", (double)n / (bench_now() - t0));
	return 0;
}

static int cmd_viewread(char **argv, bool raw)
{
	uint64_t first = strtoull(argv[1], NULL, 10);
	uint64_t last = strtoull(argv[2], NULL, 10);
	size_t n = strtoull(argv[raw ? 2 : 3], NULL, 10);
	double *lat = calloc(n, sizeof(*lat));
	char path[4096], buf[4096];

	srandom((unsigned)getpid());
	for (size_t i = 0; i < n; i++) {
		double t0 = bench_now();
		ssize_t got;
		int fd;

		if (raw) {
			/* argv[1] is the size: a random offset in its last 1% */
			uint64_t span = first / 100 + 1;
			off_t off = (off_t)(first - span + (uint64_t)random() % span);

			fd = open(argv[0], O_RDONLY);
			if (fd < 0)
				die("open", argv[0]);
			got = pread(fd, buf, sizeof(buf), off);
		} else {
			uint64_t v = first + (uint64_t)random() % (last - first + 1);

			snprintf(path, sizeof(path), "%s@%llu", argv[0],
				 (unsigned long long)v);
			fd = open(path, O_RDONLY);
			if (fd < 0)
				die("open", path);
			got = read(fd, buf, sizeof(buf));
		}
		if (got <= 0)
			die("read", argv[0]);
		close(fd);
		lat[i] = bench_now() - t0;
	}
	print_lat("us", 1e6, lat, n);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	int nargs = argc - 2;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(cmd, "append") && nargs >= 3)
		return cmd_append(nargs, argv + 2);
	if (!strcmp(cmd, "fsync") && nargs == 2)
		return cmd_fsync(argv + 2);
	if (!strcmp(cmd, "follow") && nargs == 4)
		return cmd_follow(argv + 2);
	if (!strcmp(cmd, "followers") && nargs == 4)
		return cmd_followers(argv + 2);
	if (!strcmp(cmd, "create") && nargs == 2)
		return cmd_create(argv + 2);
	if (!strcmp(cmd, "viewread") && nargs == 4)
		return cmd_viewread(argv + 2, false);
	if (!strcmp(cmd, "rawread") && nargs == 3)
		return cmd_viewread(argv + 2, true);
	fprintf(stderr, "usage: see the comment at the top of bench_fs.c\n");
	return 2;
}
