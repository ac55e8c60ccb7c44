/*
 * Crash tests of store/ that really crash.
 *
 * kill9: a child appends to several streams in a loop and reports each
 * acknowledged version through a pipe; the parent SIGKILLs it at a random
 * moment, reopens the store and checks that every stream is exactly a
 * prefix of what was written, holding every acknowledged version, and that
 * verify passes.  Many iterations, the store carried over between them.
 *
 * powercut: the child syncs, notes the segment file sizes, appends more and
 * dies; the parent throws away (or zero-fills) the segment bytes written
 * after the sync, as a power cut could, and checks every synced event is
 * there and nothing torn is.
 *
 * kill9's random choices (writer seeds, crash delays) come from one seed,
 * printed at start and again on failure; powercut's writers are fixed.
 * CRASH_SEED=N replays the choices (`CRASH_SEED=N meson test -C BUILD
 * 'store crash'`); where the SIGKILL lands still depends on timing, so a
 * replay retries the same scenario, not the same instant.
 * CRASH_ITERATIONS=N sets kill9's iterations (default 40).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "unit.h"

#define NSTREAMS 4

struct ack {
	uint32_t stream;
	uint64_t version;
};

/* Event K (1-based) of stream I: self-describing, varied length, with an
 * ID so that the dedup state is rebuilt by recovery too. */
static int event(char *buf, size_t cap, int i, uint64_t k)
{
	static const char pad[] = "................................................";

	return snprintf(buf, cap, "{\"id\":\"s%d-e%llu\",\"pad\":\"%.*s\"}\n", i,
			(unsigned long long)k, (int)((k * 7919) % 40), pad);
}

/* kill9 rolls small segments so that seals happen around the crashes;
 * powercut keeps one active segment per stream, since a sealed one was
 * fsynced and a power cut cannot take its bytes. */
static uint64_t roll_size = 8 << 10;

static void config(struct store_config *cfg)
{
	store_config_default(cfg);
	cfg->roll_size = roll_size;
}

static void stream_name(char *buf, int i)
{
	sprintf(buf, "s%d", i);
}

/* Opens DIR with tenant t and its streams, creating what is missing. */
static struct store *open_all(const char *dir, struct store_tenant **t,
			      uint64_t ids[NSTREAMS])
{
	struct store_config cfg;
	struct store *st;
	char name[16];

	config(&cfg);
	if (store_open(dir, &cfg, &st))
		return NULL;
	if (store_tenant_get(st, "t", t) &&
	    (store_tenant_create(st, "t", 0755, 0, 0) ||
	     store_tenant_get(st, "t", t))) {
		store_close(st);
		return NULL;
	}
	for (int i = 0; i < NSTREAMS; i++) {
		stream_name(name, i);
		if (store_stream_lookup(*t, name, &ids[i]) &&
		    store_stream_create(*t, name, 0644, 0, 0, &ids[i])) {
			store_close(st);
			return NULL;
		}
	}
	return st;
}

/* Appends random batches to random streams, reporting acks on FD. */
static void writer(struct store_tenant *t, const uint64_t ids[NSTREAMS],
		   int fd, unsigned seed, int max_batches)
{
	char *buf = malloc(1 << 16);

	if (!buf)
		_exit(2);
	srand(seed);
	for (int b = 0; max_batches < 0 || b < max_batches; b++) {
		int i = rand() % NSTREAMS, n = 1 + rand() % 40;
		struct store_append_result r;
		struct store_attr a;
		struct store_append app = { .buf = buf };
		size_t len = 0;

		if (store_stream_stat(t, ids[i], &a))
			_exit(3);
		for (int k = 1; k <= n; k++)
			len += (size_t)event(buf + len, 256, i, a.version + (uint64_t)k);
		app.len = len;
		app.expected = a.version;
		if (store_append(t, ids[i], &app, &r) || r.version != a.version + (uint64_t)n)
			_exit(4);
		struct ack ack = { .stream = (uint32_t)i, .version = r.version };
		if (fd >= 0 && write(fd, &ack, sizeof(ack)) != sizeof(ack))
			_exit(5);
	}
	free(buf);
	/* no store_close: the caller decides how this process ends */
}

/* Checks stream I holds exactly events 1..version, version >= MIN. */
static void check_stream(struct store_tenant *t, uint64_t id, int i,
			 uint64_t min)
{
	struct store_attr a;
	char *buf, line[256];
	uint64_t off = 0;
	ssize_t n;

	CHECK_EQ(store_stream_stat(t, id, &a), 0);
	CHECK(a.version >= min);
	if (a.version < min)
		fprintf(stderr, "stream %d: version %llu < acknowledged %llu\n", i,
			(unsigned long long)a.version, (unsigned long long)min);
	buf = malloc(a.size + 1);
	n = store_read(t, id, buf, a.size, 0);
	CHECK_EQ(n, a.size);
	for (uint64_t k = 1; k <= a.version && n == (ssize_t)a.size; k++) {
		int len = event(line, sizeof(line), i, k);

		if (off + (uint64_t)len > a.size ||
		    memcmp(buf + off, line, (size_t)len)) {
			fprintf(stderr, "stream %d: event %llu differs\n", i,
				(unsigned long long)k);
			unit_failures++;
			break;
		}
		off += (uint64_t)len;
	}
	CHECK_EQ(off, a.size);
	free(buf);
}

static void check_store(const char *dir, const uint64_t min[NSTREAMS])
{
	struct store_tenant *t;
	uint64_t ids[NSTREAMS];
	struct store *st = open_all(dir, &t, ids);

	CHECK(st != NULL);
	if (!st)
		return;
	for (int i = 0; i < NSTREAMS; i++)
		check_stream(t, ids[i], i, min[i]);
	/* a retried append of an acknowledged event is still deduplicated */
	{
		char line[256];
		struct store_append_result r;
		struct store_append app = { .buf = line, .expected = STORE_ANY_VERSION };

		app.len = (size_t)event(line, sizeof(line), 0, 1);
		if (min[0] >= 1) {
			CHECK_EQ(store_append(t, ids[0], &app, &r), 0);
			CHECK_EQ(r.skipped, 1);
		}
	}
	store_close(st);
	CHECK_EQ(store_verify(dir, stderr), 0);
}

static void read_acks(int fd, uint64_t acked[NSTREAMS])
{
	struct ack ack;

	while (read(fd, &ack, sizeof(ack)) == sizeof(ack))
		if (ack.stream < NSTREAMS && ack.version > acked[ack.stream])
			acked[ack.stream] = ack.version;
}

/* The seed of every random choice here; main() sets it. */
static unsigned crash_seed;

/* CRASH_SEED from the environment (exits if it is not a number), else
 * one from the clock and pid. */
static unsigned pick_seed(void)
{
	const char *env = getenv("CRASH_SEED");
	char *end;

	if (env && *env) {
		unsigned long v = strtoul(env, &end, 0);

		if (!*end && v <= UINT32_MAX)
			return (unsigned)v;
		fprintf(stderr, "crash_store: bad CRASH_SEED=%s\n", env);
		exit(2);
	}
	return (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
}

static void test_kill9(void)
{
	char dir[] = "/tmp/streamfs-crash-XXXXXX";
	uint64_t acked[NSTREAMS] = { 0 };
	int iterations = getenv("CRASH_ITERATIONS") ? atoi(getenv("CRASH_ITERATIONS")) : 40;

	CHECK(mkdtemp(dir) != NULL);
	srand(crash_seed);
	for (int it = 0; it < iterations && !unit_failures; it++) {
		int p[2];
		pid_t pid;
		int status;

		CHECK_EQ(pipe(p), 0);
		pid = fork();
		if (pid == 0) {
			struct store_tenant *t;
			uint64_t ids[NSTREAMS];

			close(p[0]);
			if (!open_all(dir, &t, ids))
				_exit(2);
			writer(t, ids, p[1], (unsigned)rand(), -1);
			_exit(0);
		}
		close(p[1]);
		/* crash it at a random moment once it is appending */
		struct ack first;
		if (read(p[0], &first, sizeof(first)) == sizeof(first) &&
		    first.version > acked[first.stream])
			acked[first.stream] = first.version;
		usleep((useconds_t)(rand() % 30000));
		kill(pid, SIGKILL);
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFSIGNALED(status));
		read_acks(p[0], acked);
		close(p[0]);
		check_store(dir, acked);
	}
	printf("# kill9: %d iterations, versions %llu %llu %llu %llu\n",
	       iterations, (unsigned long long)acked[0],
	       (unsigned long long)acked[1], (unsigned long long)acked[2],
	       (unsigned long long)acked[3]);
	if (!unit_failures) {
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		CHECK_EQ(system(cmd), 0);
	}
}

/* Records NAME SIZE of every segment file of tenant t into LIST. */
static void note_sizes(const char *dir, const char *list)
{
	char path[256];
	struct dirent *de;
	FILE *out;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tenants/t/seg", dir);
	d = opendir(path);
	out = fopen(list, "w");
	while (d && out && (de = readdir(d))) {
		char file[512];
		struct stat sb;

		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		if (strstr(de->d_name, ".seg") && !stat(file, &sb))
			fprintf(out, "%s %lld\n", file, (long long)sb.st_size);
	}
	if (out)
		fclose(out);
	if (d)
		closedir(d);
}

/* What a power cut may leave: each segment cut back to its size at the
 * sync (ZERO: with the lost bytes zeroed instead), newer segments empty. */
static void power_cut(const char *dir, const char *list, bool zero)
{
	char path[256], file[512];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tenants/t/seg", dir);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		long long size = 0, noted;
		char name[512];
		struct stat sb;
		FILE *in = fopen(list, "r");

		if (!strstr(de->d_name, ".seg"))
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		while (in && fscanf(in, "%511s %lld", name, &noted) == 2)
			if (!strcmp(name, file))
				size = noted;
		if (in)
			fclose(in);
		if (stat(file, &sb) || sb.st_size <= size)
			continue;
		if (zero) {
			int fd = open(file, O_WRONLY);
			char *zeros = calloc(1, (size_t)(sb.st_size - size));

			CHECK(pwrite(fd, zeros, (size_t)(sb.st_size - size), size) ==
			      sb.st_size - size);
			free(zeros);
			close(fd);
		} else {
			CHECK_EQ(truncate(file, size), 0);
		}
	}
	if (d)
		closedir(d);
}

static void test_powercut(void)
{
	roll_size = 64 << 20;
	for (int zero = 0; zero < 2; zero++) {
		char dir[] = "/tmp/streamfs-power-XXXXXX", list[64], cmd[96];
		uint64_t synced[NSTREAMS] = { 0 };
		int p[2], status;
		pid_t pid;

		CHECK(mkdtemp(dir) != NULL);
		snprintf(list, sizeof(list), "%s.sizes", dir);
		CHECK_EQ(pipe(p), 0);
		pid = fork();
		if (pid == 0) {
			struct store_tenant *t;
			uint64_t ids[NSTREAMS];
			struct store *st;

			close(p[0]);
			st = open_all(dir, &t, ids);
			if (!st)
				_exit(2);
			writer(t, ids, p[1], 7, 60);
			close(p[1]);
			/* sync, as fsync(2) would, then note what is durable */
			if (store_sync(st))
				_exit(6);
			note_sizes(dir, list);
			writer(t, ids, -1, 8, 60);
			_exit(0);	/* no close, no final sync */
		}
		close(p[1]);
		read_acks(p[0], synced);
		close(p[0]);
		CHECK_EQ(waitpid(pid, &status, 0), pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		power_cut(dir, list, zero);
		check_store(dir, synced);
		snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir, list);
		CHECK_EQ(system(cmd), 0);
	}
}

static const struct unit_test tests[] = {
	{ "kill9", test_kill9 },
	{ "powercut", test_powercut },
};

int main(int argc, char **argv)
{
	int rc;

	crash_seed = pick_seed();
	printf("# crash_store: seed %u (replay: CRASH_SEED=%u)\n", crash_seed,
	       crash_seed);
	fflush(stdout);	/* shown even if a timeout kills this run */
	rc = unit_run(tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
	if (rc)
		fprintf(stderr, "crash_store: failed with seed %u; replay with "
			"CRASH_SEED=%u\n", crash_seed, crash_seed);
	return rc;
}
