/*
 * libkstat: the illumos kstat_open(3KSTAT) family, over kstatd's socket.
 *
 * Names, semantics and errnos are illumos' (lib/libkstat); what differs is said
 * in docs/CLIENTS.md, "C and other languages: libkstat". In short:
 *
 *   kstat_open()          connects to kstatd ($KSTAT_SOCKET, else the default socket,
 *                         found and checked as docs/PROTOCOL.md §9.7 says) and reads
 *                         the chain; NULL with errno when
 *                         kstatd is not running (ENOENT, ECONNREFUSED), refused
 *                         (EACCES) or silent ($KSTAT_TIMEOUT, default 10 s: ETIMEDOUT)
 *   kstat_chain_update()  the new chain id, 0 when the chain did not change, -1 with
 *                         errno; kstats no longer in the chain are freed, data and all
 *   kstat_lookup()        NULL arguments and instance -1 match anything; NULL with
 *                         ENOENT when nothing matches
 *   kstat_read()          fills ks_data (allocated and resized by libkstat), ks_ndata,
 *                         ks_data_size and ks_snaptime, copies to buf when not NULL;
 *                         returns the chain id; ENXIO when the kstat is gone
 *   kstat_write()         sends ks_data (after copying buf there when not NULL);
 *                         EPERM for an unprivileged caller, EACCES for a kstat that
 *                         is not writable
 *   kstat_data_lookup()   the NAMED or TIMER record called name; EINVAL for other
 *                         types, ENOENT when no record has that name
 *   kstat_close()         closes the connection and frees the chain and every ks_data
 *
 * Not thread-safe, as on illumos: one kstat_ctl_t must not be used by two threads at
 * once. Separate kstat_ctl_t are independent (each has its own connection).
 */
#ifndef _KSTAT_H
#define _KSTAT_H

#include <sys/kstat.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kstat_ctl {
	kid_t kc_chain_id;  /* the chain id kc_chain was read at */
	kstat_t *kc_chain;  /* the chain, in kid order, linked by ks_next */
	int kc_kd;          /* the socket to kstatd (illumos: /dev/kstat's descriptor) */
} kstat_ctl_t;

extern kstat_ctl_t *kstat_open(void);
extern int kstat_close(kstat_ctl_t *);
extern kid_t kstat_read(kstat_ctl_t *, kstat_t *, void *);
extern kid_t kstat_write(kstat_ctl_t *, kstat_t *, void *);
extern kid_t kstat_chain_update(kstat_ctl_t *);
extern kstat_t *kstat_lookup(kstat_ctl_t *, const char *, int, const char *);
extern void *kstat_data_lookup(kstat_t *, const char *);

#ifdef __cplusplus
}
#endif

#endif /* _KSTAT_H */
