/*
 * The illumos base types that <sys/kstat.h>, <sys/sysinfo.h> and <sys/var.h> use,
 * for a Linux (LP64) build of libkstat from kstatpy.
 *
 * illumos gets these from <sys/types.h>; glibc's <sys/types.h> lacks them, so the
 * libkstat headers define them here, once. A program that defines them itself can
 * define _KSTATPY_NO_ILLUMOS_TYPES first.
 */
#ifndef _SYS_KSTATPY_TYPES_H
#define _SYS_KSTATPY_TYPES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef _KSTATPY_NO_ILLUMOS_TYPES
typedef unsigned char uchar_t;
typedef unsigned short ushort_t;
typedef unsigned int uint_t;
typedef unsigned long ulong_t;
typedef long long longlong_t;
typedef unsigned long long u_longlong_t;
/* Nanoseconds of a monotonic clock (illumos gethrtime(); kstatd: CLOCK_MONOTONIC). */
typedef long long hrtime_t;
#endif

#endif /* _SYS_KSTATPY_TYPES_H */
