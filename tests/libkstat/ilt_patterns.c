/*
 * ilt_patterns: the ways illumos' own stat tools use libkstat, checked against a
 * running kstatd with the system provider (our code, written from the tools' facts:
 * usr/src/cmd/stat/common/acquire.c, mpstat.c, vmstat.c, kstat/kstat.c).
 *
 * Prints one line per check, "ok NAME" or "FAIL NAME: why", and exits 1 if any failed.
 * The patterns:
 *   - acquire_sys() reads unix:0:sysinfo and unix:0:vminfo into sysinfo_t and vminfo_t,
 *     and unix:0:dnlcstats into illumos' struct nc_stats (28 kstat_named_t): kstat_read
 *     copies ks_data_size bytes into the caller's buffer, so the kstat must be exactly
 *     that struct, records in its order (vmstat -s reads ncs_hits and ncs_misses by
 *     position; dnlc.c names every record);
 *   - it takes clk_intr and deficit from unix:0:system_misc through value.l (64 bits)
 *     although illumos declares them UINT32: the upper half must be zero;
 *   - it copies cpu:N:sys and cpu:N:vm (kstat_copy: a struct copy plus a malloc'd
 *     ks_data) and sums them across CPUs with kstat_add, record by record BY POSITION,
 *     reading value.ui64; mpstat and vmstat then kstat_data_lookup the copies. So every
 *     CPU's records are the same names in the same order, all UINT64;
 *   - kstat(8) decodes the RAW kstats it knows only when ks_data_size is the struct's;
 *   - iostat -e takes a device_error kstat's first three records, by position, as the
 *     soft, hard and transport error counts (illumos' 32-bit iostat: KSTAT_DATA_ULONG,
 *     i.e. UINT32);
 *   - fsstat finds unix:0:vopstats_FSTYPE and vopstats_FSID with kstat_lookup(kc, NULL,
 *     -1, name) and kstat_reads them into illumos' vopstats_t (sys/vnode.h: 49 counters,
 *     read by member). Checked for every vopstats_ kstat the provider publishes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kstat.h>
#include <sys/sysinfo.h>
#include <sys/var.h>

static int failed;

#define CHECK(name, cond, ...)                                  \
	do {                                                    \
		if (cond) {                                     \
			printf("ok %s\n", name);                \
		} else {                                        \
			printf("FAIL %s: ", name);              \
			printf(__VA_ARGS__);                    \
			printf("\n");                           \
			failed = 1;                             \
		}                                               \
	} while (0)

/* illumos uts/common/fs/dnlc.c: the records of struct nc_stats, in order */
static const char *const dnlc_names[] = {
	"hits", "misses", "negative_cache_hits", "enters", "double_enters",
	"purge_total_entries", "purge_all", "purge_vp", "purge_vfs", "purge_fs1",
	"pick_free", "pick_heuristic", "pick_last", "dir_hits", "dir_misses",
	"dir_cached_current", "dir_entries_cached_current", "dir_cached_total",
	"dir_start_no_memory", "dir_add_no_memory", "dir_add_abort", "dir_add_max",
	"dir_remove_entry_fail", "dir_remove_space_fail", "dir_update_fail",
	"dir_fini_purge", "dir_reclaim_last", "dir_reclaim_any",
};
#define NDNLC (sizeof (dnlc_names) / sizeof (dnlc_names[0]))

/* what mpstat and vmstat (-s, -p, -S) look up in the per-CPU copies */
static const char *const sys_names[] = {
	"cpu_ticks_idle", "cpu_ticks_user", "cpu_ticks_kernel", "cpu_ticks_wait",
	"xcalls", "intr", "intrthread", "pswitch", "inv_swtch", "cpumigrate",
	"mutex_adenters", "rw_rdfails", "rw_wrfails", "syscall", "sysfork",
	"sysvfork", "sysexec", "trap",
};
static const char *const vm_names[] = {
	"hat_fault", "as_fault", "maj_fault", "pgrec", "pgfrec", "pgin", "pgout",
	"pgpgin", "pgpgout", "swapin", "swapout", "pgswapin", "pgswapout", "dfree",
	"scan", "rev", "zfod", "cow_fault", "execpgin", "execpgout", "execfree",
	"anonpgin", "anonpgout", "anonfree", "fspgin", "fspgout", "fsfree",
};

static kstat_t *
lookup_read(kstat_ctl_t *kc, const char *m, int i, const char *n, void *buf)
{
	kstat_t *ksp = kstat_lookup(kc, m, i, n);

	if (ksp == NULL || kstat_read(kc, ksp, buf) == -1)
		return (NULL);
	return (ksp);
}

static void
check_sys(kstat_ctl_t *kc)
{
	sysinfo_t si;
	vminfo_t vi;
	kstat_named_t nc[NDNLC];
	kstat_t *ksp;
	kstat_named_t *knp;
	size_t i, bad = NDNLC;

	ksp = lookup_read(kc, "unix", 0, "sysinfo", &si);
	CHECK("sysinfo", ksp && ksp->ks_data_size == sizeof (si), "%s", ksp ? "size" : strerror(errno));
	ksp = lookup_read(kc, "unix", 0, "vminfo", &vi);
	CHECK("vminfo", ksp && ksp->ks_data_size == sizeof (vi), "%s", ksp ? "size" : strerror(errno));

	ksp = kstat_lookup(kc, "unix", 0, "dnlcstats");
	CHECK("dnlcstats size", ksp && ksp->ks_data_size == sizeof (nc) && ksp->ks_ndata == NDNLC,
	    "%zu records, %zu bytes; struct nc_stats has %zu", ksp ? (size_t)ksp->ks_ndata : 0,
	    ksp ? ksp->ks_data_size : 0, NDNLC);
	if (ksp != NULL && ksp->ks_data_size == sizeof (nc) && kstat_read(kc, ksp, nc) != -1) {
		for (i = 0; i < NDNLC && bad == NDNLC; i++)
			if (strcmp(nc[i].name, dnlc_names[i]) != 0)
				bad = i;
		CHECK("dnlcstats names", bad == NDNLC, "record %zu is %s, dnlc.c's is %s", bad,
		    nc[bad < NDNLC ? bad : 0].name, dnlc_names[bad < NDNLC ? bad : 0]);
	}

	ksp = lookup_read(kc, "unix", 0, "system_misc", NULL);
	CHECK("system_misc", ksp != NULL, "%s", strerror(errno));
	/* fsstat's lookup by name alone, acquire.c's by module and instance alone */
	CHECK("lookup by name", ksp && kstat_lookup(kc, NULL, -1, "system_misc") == ksp, "%s",
	    "kstat_lookup(NULL, -1, \"system_misc\") is not unix:0:system_misc");
	CHECK("lookup by module", kstat_lookup(kc, "cpu_info", 0, NULL) != NULL, "%s", strerror(errno));
	if (ksp == NULL)
		return;
	for (i = 0; i < 2; i++) {
		const char *n = i ? "deficit" : "clk_intr";
		knp = kstat_data_lookup(ksp, n);
		CHECK(n, knp && knp->data_type == KSTAT_DATA_UINT32 && (uint64_t)knp->value.l == knp->value.ui32,
		    "%s", knp ? "not a UINT32 whose value.l is its value" : "missing");
	}
}

/* kstat_copy and kstat_add as acquire.c writes them */
static int
copy(const kstat_t *src, kstat_t *dst)
{
	*dst = *src;
	if ((dst->ks_data = malloc(src->ks_data_size)) == NULL)
		return (-1);
	memcpy(dst->ks_data, src->ks_data, src->ks_data_size);
	return (0);
}

static void
add(const kstat_t *src, kstat_t *dst)
{
	const kstat_named_t *from = src->ks_data;
	kstat_named_t *to = dst->ks_data;
	size_t i;

	for (i = 0; i < src->ks_ndata && i < dst->ks_ndata; i++)
		to[i].value.ui64 += from[i].value.ui64;
}

static void
check_cpu_kind(kstat_ctl_t *kc, const char *kind, const char *const *names, size_t nnames)
{
	kstat_t agg, first, *ksp, *ci;
	kstat_named_t *a, *k;
	char what[64];
	size_t i, ncpu = 0;
	int same = 1, u64 = 1;

	memset(&agg, 0, sizeof (agg));
	memset(&first, 0, sizeof (first));
	for (ci = kc->kc_chain; ci != NULL; ci = ci->ks_next) {
		if (strcmp(ci->ks_module, "cpu_info") != 0)
			continue;
		snprintf(what, sizeof (what), "cpu:%d:%s", ci->ks_instance, kind);
		ksp = lookup_read(kc, "cpu", ci->ks_instance, kind, NULL);
		CHECK(what, ksp != NULL && strcmp(ksp->ks_class, "misc") == 0, "%s",
		    ksp ? ksp->ks_class : strerror(errno));
		if (ksp == NULL)
			continue;
		k = ksp->ks_data;
		for (i = 0; i < ksp->ks_ndata; i++)
			u64 &= k[i].data_type == KSTAT_DATA_UINT64;
		if (ncpu++ == 0) {
			copy(ksp, &first);
			copy(ksp, &agg);
			continue;
		}
		a = first.ks_data;
		same &= ksp->ks_ndata == first.ks_ndata;
		for (i = 0; same && i < ksp->ks_ndata; i++)
			same &= strcmp(a[i].name, k[i].name) == 0;
		add(ksp, &agg);
	}
	snprintf(what, sizeof (what), "cpu:N:%s same records in the same order", kind);
	CHECK(what, ncpu > 0 && same, "%zu CPUs", ncpu);
	snprintf(what, sizeof (what), "cpu:N:%s all UINT64", kind);
	CHECK(what, u64, "a record of another type (kstat_add and kstat_delta read value.ui64)");
	for (i = 0; ncpu > 0 && i < nnames; i++) {
		/* the lookups mpstat and vmstat make on acquire.c's copies */
		kstat_named_t *one = kstat_data_lookup(&first, names[i]);
		kstat_named_t *all = kstat_data_lookup(&agg, names[i]);
		snprintf(what, sizeof (what), "cpu:N:%s:%s", kind, names[i]);
		CHECK(what, one && all && all->value.ui64 >= one->value.ui64, "%s",
		    one && all ? "the sum over CPUs is below CPU 0's" : "not found in the copy");
	}
	free(first.ks_data);
	free(agg.ks_data);
}

static void
check_raw(kstat_ctl_t *kc)
{
	kstat_t *ksp;
	char what[64];
	int n = 0;

	ksp = lookup_read(kc, "unix", 0, "var", NULL);
	CHECK("unix:0:var", ksp && ksp->ks_data_size == sizeof (struct var), "%s",
	    ksp ? "size is not sizeof (struct var)" : strerror(errno));
	for (ksp = kc->kc_chain; ksp != NULL; ksp = ksp->ks_next) {
		if (strcmp(ksp->ks_module, "cpu_stat") != 0)
			continue;
		snprintf(what, sizeof (what), "cpu_stat:%d", ksp->ks_instance);
		CHECK(what, kstat_read(kc, ksp, NULL) != -1 && ksp->ks_data_size == sizeof (cpu_stat_t),
		    "%zu bytes", ksp->ks_data_size);
		n++;
	}
	CHECK("cpu_stat kstats", n > 0, "none");
}

static void
check_device_errors(kstat_ctl_t *kc)
{
	static const char *const first[] = { "Soft Errors", "Hard Errors", "Transport Errors" };
	kstat_t *ksp;
	kstat_named_t *knp;
	char what[64];
	int i, good;

	for (ksp = kc->kc_chain; ksp != NULL; ksp = ksp->ks_next) {
		if (ksp->ks_type != KSTAT_TYPE_NAMED || strcmp(ksp->ks_class, "device_error") != 0)
			continue;
		snprintf(what, sizeof (what), "%s:%d:%s", ksp->ks_module, ksp->ks_instance, ksp->ks_name);
		good = kstat_read(kc, ksp, NULL) != -1 && ksp->ks_ndata >= 3;
		knp = ksp->ks_data;
		for (i = 0; good && i < 3; i++)
			good = strcmp(knp[i].name, first[i]) == 0 && knp[i].data_type == KSTAT_DATA_UINT32;
		CHECK(what, good, "not Soft, Hard, Transport Errors (UINT32) first");
	}
}

/* illumos sys/vnode.h: vopstats_t's members, in order (fsstat reads them by member) */
static const char *const vop_names[] = {
	"nopen", "nclose", "nread", "read_bytes", "nwrite", "write_bytes", "nioctl", "nsetfl",
	"ngetattr", "nsetattr", "naccess", "nlookup", "ncreate", "nremove", "nlink", "nrename",
	"nmkdir", "nrmdir", "nreaddir", "readdir_bytes", "nsymlink", "nreadlink", "nfsync",
	"ninactive", "nfid", "nrwlock", "nrwunlock", "nseek", "ncmp", "nfrlock", "nspace",
	"nrealvp", "ngetpage", "nputpage", "nmap", "naddmap", "ndelmap", "npoll", "ndump",
	"npathconf", "npageio", "ndumpctl", "ndispose", "nsetsecattr", "ngetsecattr",
	"nshrlock", "nvnevent", "nreqzcbuf", "nretzcbuf",
};
#define NVOP (sizeof (vop_names) / sizeof (vop_names[0]))

static void
check_vopstats(kstat_ctl_t *kc)
{
	kstat_named_t vs[NVOP];
	kstat_t *ksp, *found;
	char what[64];
	size_t i;
	int good;

	for (ksp = kc->kc_chain; ksp != NULL; ksp = ksp->ks_next) {
		if (strncmp(ksp->ks_name, "vopstats_", 9) != 0)
			continue;
		snprintf(what, sizeof (what), "%s:%d:%s", ksp->ks_module, ksp->ks_instance, ksp->ks_name);
		found = kstat_lookup(kc, NULL, -1, ksp->ks_name);
		good = found == ksp && strcmp(ksp->ks_module, "unix") == 0 && ksp->ks_instance == 0 &&
		    strcmp(ksp->ks_class, "misc") == 0 && ksp->ks_type == KSTAT_TYPE_NAMED &&
		    ksp->ks_ndata == NVOP && ksp->ks_data_size == sizeof (vs) &&
		    kstat_read(kc, ksp, vs) != -1;
		for (i = 0; good && i < NVOP; i++)
			good = strcmp(vs[i].name, vop_names[i]) == 0 && vs[i].data_type == KSTAT_DATA_UINT64;
		CHECK(what, good, "not unix:0 misc with vopstats_t's 49 UINT64 counters in order%s",
		    found == ksp ? "" : " (or kstat_lookup(NULL, -1, name) finds another)");
	}
}

int
main(void)
{
	kstat_ctl_t *kc = kstat_open();

	if (kc == NULL) {
		perror("kstat_open");
		return (2);
	}
	check_sys(kc);
	check_cpu_kind(kc, "sys", sys_names, sizeof (sys_names) / sizeof (sys_names[0]));
	check_cpu_kind(kc, "vm", vm_names, sizeof (vm_names) / sizeof (vm_names[0]));
	check_raw(kc);
	check_device_errors(kc);
	check_vopstats(kc);
	(void) kstat_close(kc);
	return (failed);
}
