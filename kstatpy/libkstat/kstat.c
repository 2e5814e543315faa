/*
 * The kstat_open(3KSTAT) family over kstatd's socket (see kstat.h for the contract,
 * impl.h for who owns what). Semantics and errnos follow illumos lib/libkstat:
 *
 *   - kc_chain is KID 0's headers in kid order; kstat_chain_update keeps the kstat_t
 *     (and its ks_data) of every kstat still in the chain, frees the others and adds
 *     the new ones with ks_data NULL;
 *   - kstat_read and kstat_write retry EAGAIN every 100 ms, for at most the request
 *     timeout ($KSTAT_TIMEOUT) in all, where illumos retries for ever (a kstat whose
 *     provider is stuck answers EAGAIN until it returns: docs/PROTOCOL.md §9.1);
 *   - the errno of a failed request is kstatd's (docs/PROTOCOL.md §3: Linux numbers,
 *     the same names as illumos), or the transport's (ECONNRESET, ETIMEDOUT, EPROTO).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "impl.h"

static void
free_chain(kstat_t *ksp)
{
	while (ksp) {
		kstat_t *next = ksp->ks_next;

		free(ksp->ks_data);
		free(ksp);
		ksp = next;
	}
}

static void
pack_kid(msgpack_packer *pk, kid_t kid)
{
	msgpack_pack_str(pk, 3);
	msgpack_pack_str_body(pk, "kid", 3);
	msgpack_pack_int64(pk, kid);
}

/* The string pointers of NAMED records copied from one buffer to another. */
static void
move_strings(kstat_named_t *knp, uint_t n, const char *from, char *to, size_t size)
{
	uint_t i;

	for (i = 0; i < n; i++, knp++) {
		char *s = KSTAT_NAMED_STR_PTR(knp);

		if (knp->data_type == KSTAT_DATA_STRING && s && s >= from && s < from + size)
			KSTAT_NAMED_STR_PTR(knp) = to + (s - from);
	}
}

/* EAGAIN: 1 when another try fits before *deadline (set on the first EAGAIN), after
 * the 100 ms pause; 0 otherwise. */
static int
again(struct lk_ctl *c, double *deadline)
{
	double now = lk_now();

	if (errno != EAGAIN)
		return 0;
	if (*deadline == 0)
		*deadline = now + c->timeout;
	if (now + LK_EAGAIN_PAUSE_MS / 1000.0 > *deadline)
		return 0;
	poll(NULL, 0, LK_EAGAIN_PAUSE_MS);
	errno = EAGAIN;
	return 1;
}

static kid_t
kcid_of(const msgpack_object *result)
{
	int64_t kcid;

	if (lk_int(lk_get(result, "kcid"), &kcid) < 0) {
		errno = EPROTO;
		return -1;
	}
	return (kid_t)kcid;
}

LK_API kid_t
kstat_read(kstat_ctl_t *kc, kstat_t *ksp, void *buf)
{
	struct lk_ctl *c = (struct lk_ctl *)kc;
	const msgpack_object *res;
	double deadline = 0;
	kid_t kcid;

	if (!kc || !ksp) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		lk_begin(c, KSTAT_IOC_READ);
		msgpack_pack_map(&c->pk, 1);
		pack_kid(&c->pk, ksp->ks_kid);
		if (lk_call(c, KSTAT_IOC_READ, &res) == 0)
			break;
		if (!again(c, &deadline))
			return -1;
	}
	kcid = kcid_of(res);
	if (kcid == -1)
		return -1;
	if (lk_fill(ksp, lk_get(res, "kstat")) < 0)
		return -1;
	if (buf && ksp->ks_data_size) {
		memcpy(buf, ksp->ks_data, ksp->ks_data_size);
		if (ksp->ks_type == KSTAT_TYPE_NAMED)
			move_strings(buf, ksp->ks_ndata, ksp->ks_data, buf, ksp->ks_data_size);
	}
	return kcid;
}

LK_API kid_t
kstat_write(kstat_ctl_t *kc, kstat_t *ksp, void *buf)
{
	struct lk_ctl *c = (struct lk_ctl *)kc;
	const msgpack_object *res;
	double deadline = 0;

	if (!kc || !ksp) {
		errno = EINVAL;
		return -1;
	}
	if (ksp->ks_data == NULL && ksp->ks_data_size > 0) {
		ksp->ks_data = calloc(1, ksp->ks_data_size);
		if (!ksp->ks_data)
			return -1;
	}
	if (buf && ksp->ks_data_size) {
		memcpy(ksp->ks_data, buf, ksp->ks_data_size);
		if (ksp->ks_type == KSTAT_TYPE_NAMED)
			move_strings(ksp->ks_data, ksp->ks_ndata, buf, ksp->ks_data, ksp->ks_data_size);
	}
	for (;;) {
		lk_begin(c, KSTAT_IOC_WRITE);
		msgpack_pack_map(&c->pk, 3);
		pack_kid(&c->pk, ksp->ks_kid);
		msgpack_pack_str(&c->pk, 5);
		msgpack_pack_str_body(&c->pk, "ndata", 5);
		msgpack_pack_uint32(&c->pk, ksp->ks_ndata);
		msgpack_pack_str(&c->pk, 4);
		msgpack_pack_str_body(&c->pk, "data", 4);
		if (ksp->ks_data == NULL && ksp->ks_type != KSTAT_TYPE_RAW) {
			errno = EINVAL;
			return -1;
		}
		if (lk_pack_data(&c->pk, ksp) < 0)
			return -1;
		if (lk_call(c, KSTAT_IOC_WRITE, &res) == 0)
			return kcid_of(res);
		if (!again(c, &deadline))
			return -1;
	}
}

static kid_t
chain_update(struct lk_ctl *c, int force)
{
	kstat_ctl_t *kc = &c->kc;
	const msgpack_object *res;
	kstat_t k0, *hdrs, *old, *head = NULL, **tail = &head;
	kid_t kcid;
	uint_t i;

	lk_begin(c, KSTAT_IOC_CHAIN_ID);
	msgpack_pack_nil(&c->pk);
	if (lk_call(c, KSTAT_IOC_CHAIN_ID, &res) < 0)
		return -1;
	kcid = kcid_of(res);
	if (kcid == -1)
		return -1;
	if (kcid == kc->kc_chain_id && !force)
		return 0;

	/* KID 0's data is the chain: every header, in kid order. */
	memset(&k0, 0, sizeof(k0));
	strcpy(k0.ks_module, "unix");
	strcpy(k0.ks_name, "kstat_headers");
	kcid = kstat_read(kc, &k0, NULL);
	if (kcid == -1) {
		free(k0.ks_data);
		return -1;
	}
	hdrs = k0.ks_data;
	old = kc->kc_chain;
	for (i = 0; i < k0.ks_ndata; i++) {
		kstat_t *h = &hdrs[i], *ksp;

		/* Both lists are in kid order: what old has below h's kid was deleted. A kid
		 * with another creation time is another kstat: the old one is dropped too. */
		while (old && (old->ks_kid < h->ks_kid || (old->ks_kid == h->ks_kid && old->ks_crtime != h->ks_crtime))) {
			kstat_t *next = old->ks_next;

			free(old->ks_data);
			free(old);
			old = next;
		}
		if (old && old->ks_kid == h->ks_kid) {
			ksp = old;
			old = old->ks_next;
		} else {
			ksp = malloc(sizeof(*ksp));
			if (!ksp) {
				/* Leave a consistent chain; kc_chain_id is unchanged, so the next
				 * update merges again. */
				*tail = old;
				kc->kc_chain = head;
				free(hdrs);
				errno = ENOMEM;
				return -1;
			}
			*ksp = *h;
			ksp->ks_data = NULL;
		}
		ksp->ks_next = NULL;
		*tail = ksp;
		tail = &ksp->ks_next;
	}
	free_chain(old);
	free(hdrs);
	kc->kc_chain = head;
	kc->kc_chain_id = kcid;
	return kcid;
}

LK_API kid_t
kstat_chain_update(kstat_ctl_t *kc)
{
	if (!kc) {
		errno = EINVAL;
		return -1;
	}
	return chain_update((struct lk_ctl *)kc, 0);
}

LK_API kstat_ctl_t *
kstat_open(void)
{
	struct lk_ctl *c = calloc(1, sizeof(*c));
	int e;

	if (!c)
		return NULL;
	c->kc.kc_kd = -1;
	msgpack_sbuffer_init(&c->req);
	msgpack_packer_init(&c->pk, &c->req, msgpack_sbuffer_write);
	msgpack_unpacked_init(&c->reply);
	if (lk_config(c) == 0 && lk_connect(c, lk_now() + c->timeout) == 0 && chain_update(c, 1) != -1)
		return &c->kc;
	e = errno;
	kstat_close(&c->kc);
	errno = e;
	return NULL;
}

LK_API int
kstat_close(kstat_ctl_t *kc)
{
	struct lk_ctl *c = (struct lk_ctl *)kc;
	int rc = 0;

	if (!kc) {
		errno = EINVAL;
		return -1;
	}
	free_chain(kc->kc_chain);
	if (kc->kc_kd >= 0)
		rc = close(kc->kc_kd);
	msgpack_sbuffer_destroy(&c->req);
	msgpack_unpacked_destroy(&c->reply);
	free(c->rbuf);
	free(c);
	return rc;
}

LK_API kstat_t *
kstat_lookup(kstat_ctl_t *kc, const char *module, int instance, const char *name)
{
	kstat_t *ksp;

	for (ksp = kc ? kc->kc_chain : NULL; ksp; ksp = ksp->ks_next) {
		if ((module == NULL || strcmp(ksp->ks_module, module) == 0) &&
		    (instance == -1 || ksp->ks_instance == instance) &&
		    (name == NULL || strcmp(ksp->ks_name, name) == 0))
			return ksp;
	}
	errno = ENOENT;
	return NULL;
}

LK_API void *
kstat_data_lookup(kstat_t *ksp, const char *name)
{
	size_t size;
	char *p;
	uint_t i;

	if (!ksp || !name) {
		errno = EINVAL;
		return NULL;
	}
	switch (ksp->ks_type) {
	case KSTAT_TYPE_NAMED:
		size = sizeof(kstat_named_t); /* name is each record's first member */
		break;
	case KSTAT_TYPE_TIMER:
		size = sizeof(kstat_timer_t);
		break;
	default:
		errno = EINVAL;
		return NULL;
	}
	for (i = 0, p = ksp->ks_data; p && i < ksp->ks_ndata; i++, p += size)
		if (strncmp(p, name, KSTAT_STRLEN) == 0)
			return p;
	errno = ENOENT;
	return NULL;
}
