/*
 * cpustat: per-CPU time and interrupts, written as an illumos kstat consumer is
 * (mpstat's way): cpu_stat:N:cpu_statN through <sys/sysinfo.h>'s cpu_stat_t, and
 * the NAMED cpu:N:sys through kstat_data_lookup. It builds unchanged on illumos
 * (cc cpustat.c -lkstat) and on Linux against kstatpy's libkstat:
 *
 *	cc cpustat.c $(pkg-config --cflags --libs libkstat)
 *
 * usage: cpustat [interval [count]]
 *	without an interval, one report of the time since boot; with one, a report
 *	of each interval (the chain is updated first, so CPUs may come and go).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kstat.h>
#include <sys/sysinfo.h>

#define MAXCPU 1024

typedef struct snap {
	int present;
	cpu_stat_t cs;
	uint64_t intr;
	uint64_t xcalls;
} snap_t;

static snap_t prev[MAXCPU], cur[MAXCPU];

static uint64_t
named_u64(kstat_t *ksp, const char *name)
{
	kstat_named_t *knp = kstat_data_lookup(ksp, name);

	if (knp == NULL)
		return (0);
	switch (knp->data_type) {
	case KSTAT_DATA_UINT32:
		return (knp->value.ui32);
	case KSTAT_DATA_INT32:
		return ((uint64_t)knp->value.i32);
	default:
		return (knp->value.ui64);
	}
}

static int
take(kstat_ctl_t *kc)
{
	kstat_t *ksp;

	(void) memset(cur, 0, sizeof (cur));
	for (ksp = kc->kc_chain; ksp != NULL; ksp = ksp->ks_next) {
		int id = ksp->ks_instance;
		kstat_t *sys;

		if (strcmp(ksp->ks_module, "cpu_stat") != 0 || id < 0 || id >= MAXCPU)
			continue;
		if (kstat_read(kc, ksp, &cur[id].cs) == -1) {
			if (errno == ENXIO)
				continue;	/* the CPU went away */
			return (-1);
		}
		cur[id].present = 1;
		sys = kstat_lookup(kc, "cpu", id, "sys");
		if (sys != NULL && kstat_read(kc, sys, NULL) != -1) {
			cur[id].intr = named_u64(sys, "intr");
			cur[id].xcalls = named_u64(sys, "xcalls");
		}
	}
	return (0);
}

static void
report(void)
{
	int id, i;

	(void) printf("CPU   usr  sys  wt  idl         intr       xcalls\n");
	for (id = 0; id < MAXCPU; id++) {
		uint_t d[CPU_STATES], total = 0;

		if (!cur[id].present)
			continue;
		for (i = 0; i < CPU_STATES; i++) {
			d[i] = cur[id].cs.cpu_sysinfo.cpu[i] - prev[id].cs.cpu_sysinfo.cpu[i];
			total += d[i];
		}
		if (total == 0)
			total = 1;
		(void) printf("%3d  %4u %4u %3u %4u %12llu %12llu\n", id,
		    (d[CPU_USER] * 100 + total / 2) / total,
		    (d[CPU_KERNEL] * 100 + total / 2) / total,
		    (d[CPU_WAIT] * 100 + total / 2) / total,
		    (d[CPU_IDLE] * 100 + total / 2) / total,
		    (unsigned long long)(cur[id].intr - prev[id].intr),
		    (unsigned long long)(cur[id].xcalls - prev[id].xcalls));
	}
}

int
main(int argc, char **argv)
{
	kstat_ctl_t *kc;
	int interval = argc > 1 ? atoi(argv[1]) : 0;
	int count = argc > 2 ? atoi(argv[2]) : (interval ? -1 : 1);

	if ((kc = kstat_open()) == NULL) {
		(void) fprintf(stderr, "cpustat: kstat_open: %s\n", strerror(errno));
		return (1);
	}
	if (take(kc) == -1) {
		(void) fprintf(stderr, "cpustat: kstat_read: %s\n", strerror(errno));
		return (1);
	}
	if (interval == 0) {
		report();		/* since boot: prev is all zeros */
		return (kstat_close(kc) == 0 ? 0 : 1);
	}
	while (count == -1 || count-- > 0) {
		(void) memcpy(prev, cur, sizeof (cur));
		(void) sleep(interval);
		if (kstat_chain_update(kc) == -1 || take(kc) == -1) {
			(void) fprintf(stderr, "cpustat: %s\n", strerror(errno));
			return (1);
		}
		report();
		(void) fflush(stdout);
	}
	return (kstat_close(kc) == 0 ? 0 : 1);
}
