/*
 * bench_db: the database baselines of tests/bench/run.  The usual events
 * table of an event store on a database:
 *
 *   events(stream, version, event_id UNIQUE, payload, PRIMARY KEY(stream, version))
 *
 * filled with the same 100-byte JSON lines streamfs gets (bench_lines.h),
 * one transaction per batch of BATCH events (655 = one 64 KiB write).
 *
 *   sqlite DB EVENTS BATCH   WAL, synchronous=NORMAL (an acknowledged
 *                            commit survives a crash of the process, as
 *                            streamfs promises for write(2)), prepared INSERT
 *   pg CONNINFO EVENTS BATCH one COPY per batch; the server decides
 *                            durability (tests/bench/run starts it with
 *                            synchronous_commit=off: the kindest setting)
 *
 * Prints events_per_s.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#include "bench_lines.h"

static const char schema[] =
	"CREATE TABLE events (stream TEXT NOT NULL, version BIGINT NOT NULL, "
	"event_id TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, "
	"PRIMARY KEY (stream, version))";

static int sq_exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "bench_db: %s: %s\n", sql, err);
		sqlite3_free(err);
		return -1;
	}
	return 0;
}

static int run_sqlite(const char *path, uint64_t events, size_t batch)
{
	char line[LINE_LEN], id[17];
	sqlite3_stmt *ins = NULL;
	uint64_t seq = 0;
	sqlite3 *db;
	double t0;

	unlink(path);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		return 1;
	if (sq_exec(db, "PRAGMA journal_mode=WAL") ||
	    sq_exec(db, "PRAGMA synchronous=NORMAL") || sq_exec(db, schema))
		return 1;
	if (sqlite3_prepare_v2(db, "INSERT INTO events VALUES ('orders', ?, ?, ?)",
			       -1, &ins, NULL) != SQLITE_OK)
		return 1;
	t0 = bench_now();
	while (seq < events) {
		if (sq_exec(db, "BEGIN"))
			return 1;
		for (size_t i = 0; i < batch && seq < events; i++, seq++) {
			bench_line(line, seq, true);
			memcpy(id, line + 7, 16);	/* {"id":"<16 hex>" */
			id[16] = 0;
			sqlite3_bind_int64(ins, 1, (sqlite3_int64)seq + 1);
			sqlite3_bind_text(ins, 2, id, 16, SQLITE_STATIC);
			sqlite3_bind_text(ins, 3, line, LINE_LEN - 1, SQLITE_STATIC);
			if (sqlite3_step(ins) != SQLITE_DONE) {
				fprintf(stderr, "bench_db: insert: %s\n",
					sqlite3_errmsg(db));
				return 1;
			}
			sqlite3_reset(ins);
		}
		if (sq_exec(db, "COMMIT"))
			return 1;
	}
	printf("events_per_s %.0f\n", (double)events / (bench_now() - t0));
	sqlite3_finalize(ins);
	sqlite3_close(db);
	return 0;
}

#ifdef HAVE_LIBPQ
static int pg_ok(PGconn *c, PGresult *r, ExecStatusType want, const char *what)
{
	int ok = PQresultStatus(r) == want;

	if (!ok)
		fprintf(stderr, "bench_db: %s: %s\n", what, PQerrorMessage(c));
	PQclear(r);
	return ok ? 0 : -1;
}

static int run_pg(const char *conninfo, uint64_t events, size_t batch)
{
	PGconn *c = PQconnectdb(conninfo);
	size_t cap = batch * (LINE_LEN + 64);
	char *buf = malloc(cap), line[LINE_LEN];
	uint64_t seq = 0;
	double t0;

	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "bench_db: connect: %s\n", PQerrorMessage(c));
		return 1;
	}
	if (pg_ok(c, PQexec(c, "DROP TABLE IF EXISTS events"), PGRES_COMMAND_OK,
		  "drop") ||
	    pg_ok(c, PQexec(c, schema), PGRES_COMMAND_OK, "create"))
		return 1;
	t0 = bench_now();
	while (seq < events) {
		size_t len = 0;

		for (size_t i = 0; i < batch && seq < events; i++, seq++) {
			bench_line(line, seq, true);
			len += (size_t)snprintf(buf + len, cap - len,
						"orders\t%llu\t%.16s\t%.*s\n",
						(unsigned long long)seq + 1,
						line + 7, LINE_LEN - 1, line);
		}
		if (pg_ok(c, PQexec(c, "COPY events FROM STDIN"), PGRES_COPY_IN,
			  "copy"))
			return 1;
		if (PQputCopyData(c, buf, (int)len) != 1 ||
		    PQputCopyEnd(c, NULL) != 1) {
			fprintf(stderr, "bench_db: copy data: %s\n",
				PQerrorMessage(c));
			return 1;
		}
		if (pg_ok(c, PQgetResult(c), PGRES_COMMAND_OK, "copy end"))
			return 1;
	}
	printf("events_per_s %.0f\n", (double)events / (bench_now() - t0));
	PQfinish(c);
	free(buf);
	return 0;
}
#endif

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: bench_db sqlite|pg DB EVENTS BATCH\n");
		return 2;
	}
	uint64_t events = strtoull(argv[3], NULL, 10);
	size_t batch = strtoull(argv[4], NULL, 10);

	if (!strcmp(argv[1], "sqlite"))
		return run_sqlite(argv[2], events, batch);
#ifdef HAVE_LIBPQ
	if (!strcmp(argv[1], "pg"))
		return run_pg(argv[2], events, batch);
#endif
	fprintf(stderr, "bench_db: %s not built in\n", argv[1]);
	return 2;
}
