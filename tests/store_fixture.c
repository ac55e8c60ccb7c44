/* The fixture of store/'s unit tests (store_fixture.h). */
#include <unistd.h>

#include "store_fixture.h"
#define UNIT_NO_MAIN
#include "unit.h"

static void rm_rf(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

void fixture_reopen(struct fixture *f)
{
	if (f->st)
		store_close(f->st);
	f->st = NULL;
	CHECK_EQ(store_open(f->dir, &f->cfg, &f->st), 0);
	CHECK_EQ(store_tenant_get(f->st, "t", &f->t), 0);
	CHECK_EQ(store_stream_lookup(f->t, "s", &f->s), 0);
}

void fixture_setup_with(struct fixture *f, const struct store_config *cfg)
{
	memset(f, 0, sizeof(*f));
	strcpy(f->dir, "/tmp/streamfs-unit-XXXXXX");
	CHECK(mkdtemp(f->dir) != NULL);
	if (cfg)
		f->cfg = *cfg;
	else
		store_config_default(&f->cfg);
	CHECK_EQ(store_open(f->dir, &f->cfg, &f->st), 0);
	CHECK_EQ(store_tenant_create(f->st, "t", 0755, 0, 0), 0);
	CHECK_EQ(store_tenant_get(f->st, "t", &f->t), 0);
	CHECK_EQ(store_stream_create(f->t, "s", 0644, 0, 0, &f->s), 0);
}

void fixture_setup(struct fixture *f)
{
	fixture_setup_with(f, NULL);
}

void fixture_teardown(struct fixture *f)
{
	store_close(f->st);
	rm_rf(f->dir);
}

int fixture_append(struct fixture *f, const char *data, uint64_t expected,
		   bool final, struct store_append_result *res)
{
	struct store_append app = {
		.buf = data,
		.len = strlen(data),
		.expected = expected,
		.final = final,
	};
	struct store_append_result r;

	return store_append(f->t, f->s, &app, res ? res : &r);
}

const char *fixture_contents(struct fixture *f)
{
	static char buf[1 << 16];
	ssize_t n = store_read(f->t, f->s, buf, sizeof(buf) - 1, 0);

	CHECK(n >= 0);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

uint64_t fixture_version(struct fixture *f)
{
	struct store_attr a;

	CHECK_EQ(store_stream_stat(f->t, f->s, &a), 0);
	return a.version;
}

int fixture_count_seg(void *arg, const struct store_segment *seg)
{
	(void)seg;
	(*(int *)arg)++;
	return 0;
}

int fixture_wait_sealed(struct fixture *f, int want)
{
	int n = 0;

	for (int i = 0; i < 1000; i++) {
		n = 0;
		store_segment_list(f->t, STORE_SEG_SEALED, fixture_count_seg,
				   &n);
		if (n >= want)
			break;
		usleep(10000);
	}
	return n;
}

int fixture_collect_seg_id(void *arg, const struct store_segment *seg)
{
	struct seg_ids *ids = arg;

	if (ids->n < 16)
		ids->v[ids->n++] = seg->seg;
	return 0;
}
