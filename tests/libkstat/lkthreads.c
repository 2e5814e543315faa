/*
 * lkthreads NTHREADS ROUNDS: each thread opens its own kstat_ctl_t and, ROUNDS times,
 * updates the chain, reads every kstat in it, looks one up and reads it again, then
 * closes. libkstat is not thread-safe per handle (as illumos), but separate handles
 * share nothing: run under ThreadSanitizer this must report no race. Prints
 * "ok READS" or the first failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kstat.h>

static int rounds;

static void *
worker(void *arg)
{
	long reads = 0;
	kstat_ctl_t *kc = kstat_open();
	int r;

	(void)arg;
	if (!kc)
		return (void *)(long)-errno;
	for (r = 0; r < rounds; r++) {
		kstat_t *ksp;

		if (kstat_chain_update(kc) == -1)
			return (void *)(long)-errno;
		for (ksp = kc->kc_chain; ksp; ksp = ksp->ks_next)
			if (kstat_read(kc, ksp, NULL) != -1)
				reads++;
		ksp = kstat_lookup(kc, "test", 0, "strings");
		if (!ksp || kstat_read(kc, ksp, NULL) == -1 || !kstat_data_lookup(ksp, "s"))
			return (void *)(long)-EPROTO;
	}
	kstat_close(kc);
	return (void *)reads;
}

int
main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[1]) : 4, i;
	pthread_t t[64];
	long total = 0;

	rounds = argc > 2 ? atoi(argv[2]) : 10;
	for (i = 0; i < n && i < 64; i++)
		pthread_create(&t[i], NULL, worker, NULL);
	for (i = 0; i < n && i < 64; i++) {
		void *res;

		pthread_join(t[i], &res);
		if ((long)res < 0) {
			printf("thread %d: %s\n", i, strerror((int)-(long)res));
			return 1;
		}
		total += (long)res;
	}
	printf("ok %ld\n", total);
	return 0;
}
