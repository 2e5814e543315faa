/*
 * libkstat's insides, shared by kstat.c (the API), conn.c (finding, trusting and
 * talking to kstatd) and data.c (kstatd's values <-> illumos records).
 *
 * Ownership: a struct lk_ctl is what kstat_open returns (kstat_ctl_t first, so the
 * two pointers are the same); it owns the socket, the request and reply buffers, and
 * every kstat_t of kc_chain with its ks_data (malloc'd one by one; kstat_chain_update
 * and kstat_close free them). Nothing here is locked: the library is not thread-safe.
 */
#ifndef LK_IMPL_H
#define LK_IMPL_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>

#include "kstat.h"

#define LK_API __attribute__((visibility("default")))

#define LK_HELLO 0x4B10
/* The largest reply body accepted: 1 GiB (kstatpy.transport.MAX_REPLY). */
#define LK_MAX_REPLY (1u << 30)
/* Default deadline of one request (kstatpy: the client contract's 10 s). */
#define LK_DEFAULT_TIMEOUT 10.0
/* libkstat retries EAGAIN every 100 ms (illumos: poll(NULL, 0, 100)). */
#define LK_EAGAIN_PAUSE_MS 100
#define LK_MAX_TRUST 64

struct lk_ctl {
	kstat_ctl_t kc;               /* first: kstat_ctl_t * == struct lk_ctl * */
	char path[PATH_MAX];          /* the socket, for messages and reconnects */
	int named;                    /* 1: $KSTAT_SOCKET named it; 0: the default */
	double timeout;               /* seconds per request */
	uid_t trust[LK_MAX_TRUST];    /* $KSTAT_TRUST_UID (named sockets only) */
	int ntrust;
	uint32_t seq;
	msgpack_sbuffer req;          /* the request being built: 4-byte length, body */
	msgpack_packer pk;
	char *rbuf;                   /* the last reply's body */
	size_t rcap;
	msgpack_unpacked reply;       /* the last reply, decoded (zone freed per request) */
};

/* conn.c */
int lk_config(struct lk_ctl *c);
int lk_connect(struct lk_ctl *c, double deadline);
void lk_disconnect(struct lk_ctl *c);
double lk_now(void);
/* Start a request: [cmd, seq, then the caller packs arg with c->pk. */
void lk_begin(struct lk_ctl *c, uint32_t cmd);
/* Send it and wait for the reply; 0 and *result (a map) or -1 with errno (the
 * reply's errno when kstatd answered one). The result lives until the next request. */
int lk_call(struct lk_ctl *c, uint32_t cmd, const msgpack_object **result);

/* data.c */
const msgpack_object *lk_get(const msgpack_object *map, const char *key);
int lk_int(const msgpack_object *o, int64_t *out);
int lk_fill(kstat_t *ksp, const msgpack_object *kstat);
int lk_pack_data(msgpack_packer *pk, const kstat_t *ksp);
int lk_header(kstat_t *ksp, const msgpack_object *hdr);

#endif
