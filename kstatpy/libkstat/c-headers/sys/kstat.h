/*
 * Kernel statistics as user programs see them: the kstat header, its data records
 * and the numbers that describe them, laid out exactly as illumos lays them out on
 * LP64 (amd64), so that programs written for illumos compile unchanged.
 *
 * Source of the names, values and layouts: illumos uts/common/sys/kstat.h (this text
 * is kstatpy's own). tests/test_libkstat_layout.py pins every size and offset.
 *
 * Data of a kstat, by ks_type (ks_ndata records, ks_data_size bytes in all):
 *   KSTAT_TYPE_RAW    bytes a provider documents (kstatpy's RAW structs: <sys/sysinfo.h>,
 *                     <sys/var.h>); KID 0 (unix:0:kstat_headers) is an array of kstat_t
 *   KSTAT_TYPE_NAMED  kstat_named_t[ks_ndata], then the bytes of the STRING values,
 *                     which KSTAT_NAMED_STR_PTR points at (inside ks_data)
 *   KSTAT_TYPE_INTR   one kstat_intr_t
 *   KSTAT_TYPE_IO     one kstat_io_t
 *   KSTAT_TYPE_TIMER  kstat_timer_t[ks_ndata]
 * All times are nanoseconds of the server's monotonic clock.
 */
#ifndef _SYS_KSTAT_H
#define _SYS_KSTAT_H

#include <sys/kstatpy_types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int kid_t; /* a kstat's id; also the chain id */

/* The /dev/kstat ioctls; kstatd carries the same numbers as its request commands. */
#define KSTAT_IOC_BASE ('K' << 8)
#define KSTAT_IOC_CHAIN_ID (KSTAT_IOC_BASE | 0x01)
#define KSTAT_IOC_READ (KSTAT_IOC_BASE | 0x02)
#define KSTAT_IOC_WRITE (KSTAT_IOC_BASE | 0x03)

/* Size of the name fields: at most 30 characters and the terminating NUL. */
#define KSTAT_STRLEN 31

/* The header of a kstat: the chain (kstat_ctl_t's kc_chain) is a list of these. */
typedef struct kstat {
	hrtime_t ks_crtime;          /* when the provider created it */
	struct kstat *ks_next;       /* next kstat in the chain, in kid order */
	kid_t ks_kid;                /* its id */
	char ks_module[KSTAT_STRLEN];
	uchar_t ks_resv;             /* padding */
	int ks_instance;
	char ks_name[KSTAT_STRLEN];
	uchar_t ks_type;             /* KSTAT_TYPE_* */
	char ks_class[KSTAT_STRLEN];
	uchar_t ks_flags;            /* KSTAT_FLAG_* */
	void *ks_data;               /* the data of the last kstat_read, owned by libkstat */
	uint_t ks_ndata;             /* number of records in ks_data */
	size_t ks_data_size;         /* bytes in ks_data */
	hrtime_t ks_snaptime;        /* when the last read's data was taken */
	/* The provider's side; meaningless to readers (always zero here). */
	int (*ks_update)(struct kstat *, int);
	void *ks_private;
	int (*ks_snapshot)(struct kstat *, void *, int);
	void *ks_lock;
} kstat_t;

/* ks_type */
#define KSTAT_TYPE_RAW 0
#define KSTAT_TYPE_NAMED 1
#define KSTAT_TYPE_INTR 2
#define KSTAT_TYPE_IO 3
#define KSTAT_TYPE_TIMER 4
#define KSTAT_NUM_TYPES 5

/* ks_flags: the creator sets the first four, the framework the rest. */
#define KSTAT_FLAG_VIRTUAL 0x01
#define KSTAT_FLAG_VAR_SIZE 0x02
#define KSTAT_FLAG_WRITABLE 0x04
#define KSTAT_FLAG_PERSISTENT 0x08
#define KSTAT_FLAG_DORMANT 0x10
#define KSTAT_FLAG_INVALID 0x20
#define KSTAT_FLAG_LONGSTRINGS 0x40

/* The rw argument of a provider's ks_update and ks_snapshot. */
#define KSTAT_READ 0
#define KSTAT_WRITE 1

/* One name=value statistic of a NAMED kstat: 48 bytes. */
typedef struct kstat_named {
	char name[KSTAT_STRLEN];
	uchar_t data_type;           /* KSTAT_DATA_*: which member of value holds it */
	union {
		char c[16];              /* KSTAT_DATA_CHAR: up to 16 bytes, NUL-padded */
		int32_t i32;
		uint32_t ui32;
		struct {
			union {
				char *ptr;       /* KSTAT_DATA_STRING: NUL-terminated, or NULL */
				char __pad[8];
			} addr;
			uint32_t len;        /* bytes at ptr, NUL included; 0 for NULL */
		} str;
		int64_t i64;
		uint64_t ui64;
		long l;
		ulong_t ul;
		/* obsolete */
		longlong_t ll;
		u_longlong_t ull;
		float f;
		double d;
	} value;
} kstat_named_t;

#define KSTAT_DATA_CHAR 0
#define KSTAT_DATA_INT32 1
#define KSTAT_DATA_UINT32 2
#define KSTAT_DATA_INT64 3
#define KSTAT_DATA_UINT64 4
/* LP64 user programs see long as 64 bits (the kernel's own 7 and 8 never reach them). */
#define KSTAT_DATA_LONG KSTAT_DATA_INT64
#define KSTAT_DATA_ULONG KSTAT_DATA_UINT64
#define KSTAT_DATA_STRING 9
/* obsolete */
#define KSTAT_DATA_LONGLONG KSTAT_DATA_INT64
#define KSTAT_DATA_ULONGLONG KSTAT_DATA_UINT64
#define KSTAT_DATA_FLOAT 5
#define KSTAT_DATA_DOUBLE 6

#define KSTAT_NAMED_PTR(kptr) ((kstat_named_t *)(kptr)->ks_data)
/* The string of a KSTAT_DATA_STRING statistic, and the size of its buffer. */
#define KSTAT_NAMED_STR_PTR(knptr) ((knptr)->value.str.addr.ptr)
#define KSTAT_NAMED_STR_BUFLEN(knptr) ((knptr)->value.str.len)

/* Interrupt counts of an INTR kstat, indexed by KSTAT_INTR_*: 20 bytes. */
#define KSTAT_INTR_HARD 0
#define KSTAT_INTR_SOFT 1
#define KSTAT_INTR_WATCHDOG 2
#define KSTAT_INTR_SPURIOUS 3
#define KSTAT_INTR_MULTSVC 4
#define KSTAT_NUM_INTRS 5

typedef struct kstat_intr {
	uint_t intrs[KSTAT_NUM_INTRS];
} kstat_intr_t;

#define KSTAT_INTR_PTR(kptr) ((kstat_intr_t *)(kptr)->ks_data)

/* An IO kstat: byte and operation counts, and the wait and run queues' accumulated
 * time (ns) and length x time products: 80 bytes. */
typedef struct kstat_io {
	u_longlong_t nread;
	u_longlong_t nwritten;
	uint_t reads;
	uint_t writes;
	hrtime_t wtime;
	hrtime_t wlentime;
	hrtime_t wlastupdate;
	hrtime_t rtime;
	hrtime_t rlentime;
	hrtime_t rlastupdate;
	uint_t wcnt;
	uint_t rcnt;
} kstat_io_t;

#define KSTAT_IO_PTR(kptr) ((kstat_io_t *)(kptr)->ks_data)

/* One event timer of a TIMER kstat: 80 bytes. */
typedef struct kstat_timer {
	char name[KSTAT_STRLEN];
	uchar_t resv;
	u_longlong_t num_events;
	hrtime_t elapsed_time;
	hrtime_t min_time;
	hrtime_t max_time;
	hrtime_t start_time;
	hrtime_t stop_time;
} kstat_timer_t;

#define KSTAT_TIMER_PTR(kptr) ((kstat_timer_t *)(kptr)->ks_data)

#ifdef __cplusplus
}
#endif

#endif /* _SYS_KSTAT_H */
