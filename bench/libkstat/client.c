/*
 * bench/bench_libkstat.py's C consumer.
 *
 *   client rtt MODULE INSTANCE NAME N   N kstat_read round trips of one kstat; prints
 *                                       the median in ns
 *   client dump                         reads every kstat of the chain and prints it as
 *                                       kstat -p does (module:instance:name:stat\tvalue)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <kstat.h>

static long long
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

#define P(fmt, stat, v) printf("%s:%d:%s:%s\t" fmt "\n", ksp->ks_module, ksp->ks_instance, ksp->ks_name, stat, v)

static void
dump(kstat_t *ksp)
{
	uint_t i;

	P("%s", "class", ksp->ks_class);
	P("%lld", "crtime", ksp->ks_crtime);
	P("%lld", "snaptime", ksp->ks_snaptime);
	if (ksp->ks_type == KSTAT_TYPE_NAMED) {
		kstat_named_t *knp = KSTAT_NAMED_PTR(ksp);

		for (i = 0; i < ksp->ks_ndata; i++, knp++) {
			switch (knp->data_type) {
			case KSTAT_DATA_CHAR:
				printf("%s:%d:%s:%s\t%.16s\n", ksp->ks_module, ksp->ks_instance, ksp->ks_name, knp->name, knp->value.c);
				break;
			case KSTAT_DATA_INT32:
				P("%d", knp->name, knp->value.i32);
				break;
			case KSTAT_DATA_UINT32:
				P("%u", knp->name, knp->value.ui32);
				break;
			case KSTAT_DATA_INT64:
				P("%lld", knp->name, (long long)knp->value.i64);
				break;
			case KSTAT_DATA_STRING:
				P("%s", knp->name, KSTAT_NAMED_STR_PTR(knp) ? KSTAT_NAMED_STR_PTR(knp) : "");
				break;
			default:
				P("%llu", knp->name, (unsigned long long)knp->value.ui64);
			}
		}
	} else if (ksp->ks_type == KSTAT_TYPE_IO) {
		kstat_io_t *io = KSTAT_IO_PTR(ksp);

		P("%llu", "nread", io->nread);
		P("%llu", "nwritten", io->nwritten);
		P("%u", "reads", io->reads);
		P("%u", "writes", io->writes);
		P("%lld", "wtime", io->wtime);
		P("%lld", "rtime", io->rtime);
	} else if (ksp->ks_type == KSTAT_TYPE_RAW) {
		P("%zu", "raw_bytes", ksp->ks_data_size);
	}
}

int
main(int argc, char **argv)
{
	kstat_ctl_t *kc = kstat_open();

	if (!kc) {
		perror("kstat_open");
		return 1;
	}
	if (argc == 6 && strcmp(argv[1], "rtt") == 0) {
		kstat_t *ksp = kstat_lookup(kc, argv[2], atoi(argv[3]), argv[4]);
		int i, n = atoi(argv[5]);
		long long *t = malloc(sizeof(*t) * (size_t)n);

		if (!ksp || !t || kstat_read(kc, ksp, NULL) == -1)
			return 1;
		for (i = 0; i < n; i++) {
			long long t0 = now_ns();

			if (kstat_read(kc, ksp, NULL) == -1)
				return 1;
			t[i] = now_ns() - t0;
		}
		qsort(t, (size_t)n, sizeof(*t), cmp);
		printf("%lld\n", t[n / 2]);
		free(t);
	} else if (argc == 2 && strcmp(argv[1], "dump") == 0) {
		kstat_t *ksp;

		for (ksp = kc->kc_chain; ksp; ksp = ksp->ks_next)
			if (ksp->ks_kid != 0 && kstat_read(kc, ksp, NULL) != -1)
				dump(ksp);
	} else {
		return 2;
	}
	return kstat_close(kc);
}
