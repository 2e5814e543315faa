/*
 * kstatd's values (docs/PROTOCOL.md §5) <-> illumos' records (<sys/kstat.h>).
 *
 * A READ's KSTAT map becomes ks_data laid out as /dev/kstat would have copied it
 * out: NAMED records then their strings (KSTAT_NAMED_STR_PTR points into ks_data),
 * one kstat_intr_t or kstat_io_t, kstat_timer_t[], RAW bytes, and for KID 0 an array
 * of kstat_t headers. ks_data is libkstat's: grown with realloc when a read needs
 * more than ks_data_size bytes, kept otherwise (so pointers into it stay valid while
 * the size does not grow). A WRITE's DATA is packed back from ks_data the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "impl.h"

_Static_assert(sizeof(kstat_t) == 184, "kstat_t is 184 bytes on illumos LP64");
_Static_assert(sizeof(kstat_named_t) == 48, "kstat_named_t is 48 bytes");
_Static_assert(sizeof(kstat_intr_t) == 20, "kstat_intr_t is 20 bytes");
_Static_assert(sizeof(kstat_io_t) == 80, "kstat_io_t is 80 bytes");
_Static_assert(sizeof(kstat_timer_t) == 80, "kstat_timer_t is 80 bytes");

static const char *const io_keys[] = {"nread", "nwritten", "reads", "writes", "wtime", "wlentime",
    "wlastupdate", "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt"};
static const char *const intr_keys[KSTAT_NUM_INTRS] = {"hard", "soft", "watchdog", "spurious",
    "multiple_service"};
static const char *const timer_keys[] = {"num_events", "elapsed_time", "min_time", "max_time",
    "start_time", "stop_time"};

const msgpack_object *
lk_get(const msgpack_object *map, const char *key)
{
	size_t klen = strlen(key);
	uint32_t i;

	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
		    memcmp(k->via.str.ptr, key, klen) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

/* An integer's 64 bits (two's complement for negatives): 0, or -1 if not an integer. */
static int
bits(const msgpack_object *o, uint64_t *out)
{
	if (!o)
		return -1;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		*out = o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*out = (uint64_t)o->via.i64;
	else
		return -1;
	return 0;
}

int
lk_int(const msgpack_object *o, int64_t *out)
{
	uint64_t b;

	if (bits(o, &b) < 0)
		return -1;
	*out = (int64_t)b;
	return 0;
}

static int64_t
get_int(const msgpack_object *map, const char *key)
{
	int64_t v = 0;

	(void)lk_int(lk_get(map, key), &v);
	return v;
}

/* A name field: at most KSTAT_STRLEN - 1 bytes, NUL-terminated. */
static void
set_name(char *dst, const msgpack_object *o)
{
	size_t n = 0;

	if (o && o->type == MSGPACK_OBJECT_STR) {
		n = o->via.str.size < KSTAT_STRLEN - 1 ? o->via.str.size : KSTAT_STRLEN - 1;
		memcpy(dst, o->via.str.ptr, n);
	}
	memset(dst + n, 0, KSTAT_STRLEN - n);
}

int
lk_header(kstat_t *ksp, const msgpack_object *hdr)
{
	if (!hdr || hdr->type != MSGPACK_OBJECT_MAP || !lk_get(hdr, "kid"))
		return -1;
	memset(ksp, 0, sizeof(*ksp));
	ksp->ks_kid = (kid_t)get_int(hdr, "kid");
	set_name(ksp->ks_module, lk_get(hdr, "module"));
	ksp->ks_instance = (int)get_int(hdr, "instance");
	set_name(ksp->ks_name, lk_get(hdr, "name"));
	set_name(ksp->ks_class, lk_get(hdr, "class"));
	ksp->ks_type = (uchar_t)get_int(hdr, "type");
	ksp->ks_flags = (uchar_t)get_int(hdr, "flags");
	ksp->ks_ndata = (uint_t)get_int(hdr, "ndata");
	ksp->ks_data_size = (size_t)get_int(hdr, "data_size");
	ksp->ks_crtime = get_int(hdr, "crtime");
	ksp->ks_snaptime = get_int(hdr, "snaptime");
	return 0;
}

/* ks_data holds at least size bytes, zeroed. Contract: ks_data_size never exceeds
 * what ks_data holds, so it is set here when ks_data is (re)allocated: a header's
 * claim (kstat_chain_update) or a read that fails after this leaves no larger value
 * behind for the next read to trust. */
static int
room(kstat_t *ksp, size_t size)
{
	if (size == 0)
		return 0;
	if (ksp->ks_data == NULL || size > ksp->ks_data_size) {
		void *p = realloc(ksp->ks_data, size);

		if (!p)
			return -1;
		ksp->ks_data = p;
		ksp->ks_data_size = size;
	}
	memset(ksp->ks_data, 0, size);
	return 0;
}

static const msgpack_object *
text(const msgpack_object *v, size_t *len)
{
	if (v && v->type == MSGPACK_OBJECT_STR) {
		*len = v->via.str.size;
		return v;
	}
	if (v && v->type == MSGPACK_OBJECT_BIN) {
		*len = v->via.bin.size;
		return v;
	}
	return NULL;
}

static const char *
text_ptr(const msgpack_object *v)
{
	return v->type == MSGPACK_OBJECT_STR ? v->via.str.ptr : v->via.bin.ptr;
}

static int
fill_named(kstat_t *ksp, const msgpack_object *data, size_t *size, uint_t *ndata)
{
	uint32_t i, n = data->via.array.size;
	size_t strings = 0, len;
	kstat_named_t *knp;
	char *end;

	for (i = 0; i < n; i++) {
		const msgpack_object *rec = &data->via.array.ptr[i];
		uint64_t t;

		if (rec->type != MSGPACK_OBJECT_ARRAY || rec->via.array.size != 3 ||
		    bits(&rec->via.array.ptr[1], &t) < 0)
			return -1;
		if (t == KSTAT_DATA_STRING && text(&rec->via.array.ptr[2], &len))
			strings += len + 1;
	}
	*size = (size_t)n * sizeof(kstat_named_t) + strings;
	*ndata = n;
	if (room(ksp, *size) < 0)
		return -2;
	knp = ksp->ks_data;
	end = (char *)(knp + n);
	for (i = 0; i < n; i++, knp++) {
		const msgpack_object *rec = data->via.array.ptr[i].via.array.ptr;
		const msgpack_object *v = &rec[2];
		uint64_t t = 0, b = 0;

		set_name(knp->name, &rec[0]);
		(void)bits(&rec[1], &t);
		knp->data_type = (uchar_t)t;
		switch (t) {
		case KSTAT_DATA_CHAR:
			if (text(v, &len))
				memcpy(knp->value.c, text_ptr(v), len < 16 ? len : 16);
			break;
		case KSTAT_DATA_STRING:
			if (text(v, &len)) {
				memcpy(end, text_ptr(v), len);
				end[len] = '\0';
				KSTAT_NAMED_STR_PTR(knp) = end;
				KSTAT_NAMED_STR_BUFLEN(knp) = (uint32_t)(len + 1);
				end += len + 1;
			}
			break;
		case KSTAT_DATA_FLOAT:
		case KSTAT_DATA_DOUBLE:
			if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32) {
				if (t == KSTAT_DATA_FLOAT)
					knp->value.f = (float)v->via.f64;
				else
					knp->value.d = v->via.f64;
			}
			break;
		case KSTAT_DATA_INT32:
		case KSTAT_DATA_UINT32:
			if (bits(v, &b) == 0)
				knp->value.ui32 = (uint32_t)b;
			break;
		default: /* INT64, UINT64 (LONG and ULONG arrive as these) */
			if (bits(v, &b) == 0)
				knp->value.ui64 = b;
			break;
		}
	}
	return 0;
}

static void
fill_fields(const msgpack_object *map, const char *const *keys, size_t nkeys, uint64_t *out)
{
	size_t i;

	for (i = 0; i < nkeys; i++) {
		out[i] = 0;
		(void)bits(lk_get(map, keys[i]), &out[i]);
	}
}

static int
proto(void)
{
	errno = EPROTO;
	return -1;
}

int
lk_fill(kstat_t *ksp, const msgpack_object *kstat)
{
	const msgpack_object *data = lk_get(kstat, "data");
	int64_t type = ksp->ks_type;
	size_t size = 0;
	uint_t ndata = (uint_t)get_int(kstat, "ndata");
	uint64_t v[12];
	uint32_t i, n;
	int r = 0;

	(void)lk_int(lk_get(kstat, "type"), &type);
	/* A kid's type never changes (kstatd, §4): a reply of another type than the
	 * chain's would lay ks_data out as one type under the other's ks_type. */
	if (!data || type != ksp->ks_type)
		return proto();
	if (type == KSTAT_TYPE_RAW && data->type == MSGPACK_OBJECT_ARRAY) {
		/* KID 0: every header, as an array of kstat_t (docs/PROTOCOL.md §9.1). */
		kstat_t *hdrs;

		n = data->via.array.size;
		size = (size_t)n * sizeof(kstat_t);
		ndata = n;
		if (room(ksp, size) < 0)
			return -2;
		hdrs = ksp->ks_data;
		for (i = 0; i < n && r == 0; i++)
			r = lk_header(&hdrs[i], &data->via.array.ptr[i]);
	} else if (type == KSTAT_TYPE_RAW) {
		if (data->type == MSGPACK_OBJECT_BIN || data->type == MSGPACK_OBJECT_STR) {
			text(data, &size);
			if (room(ksp, size) < 0)
				return -2;
			if (size)
				memcpy(ksp->ks_data, text_ptr(data), size);
		} else if (data->type != MSGPACK_OBJECT_NIL) {
			r = -1;
		}
	} else if (type == KSTAT_TYPE_NAMED) {
		r = data->type == MSGPACK_OBJECT_ARRAY ? fill_named(ksp, data, &size, &ndata) : -1;
	} else if (type == KSTAT_TYPE_INTR || type == KSTAT_TYPE_IO) {
		int io = type == KSTAT_TYPE_IO;

		if (data->type != MSGPACK_OBJECT_MAP)
			return proto();
		size = io ? sizeof(kstat_io_t) : sizeof(kstat_intr_t);
		ndata = 1;
		if (room(ksp, size) < 0)
			return -2;
		if (io) {
			kstat_io_t *kio = ksp->ks_data;

			fill_fields(data, io_keys, 12, v);
			kio->nread = v[0];
			kio->nwritten = v[1];
			kio->reads = (uint_t)v[2];
			kio->writes = (uint_t)v[3];
			kio->wtime = (hrtime_t)v[4];
			kio->wlentime = (hrtime_t)v[5];
			kio->wlastupdate = (hrtime_t)v[6];
			kio->rtime = (hrtime_t)v[7];
			kio->rlentime = (hrtime_t)v[8];
			kio->rlastupdate = (hrtime_t)v[9];
			kio->wcnt = (uint_t)v[10];
			kio->rcnt = (uint_t)v[11];
		} else {
			kstat_intr_t *ki = ksp->ks_data;

			fill_fields(data, intr_keys, KSTAT_NUM_INTRS, v);
			for (i = 0; i < KSTAT_NUM_INTRS; i++)
				ki->intrs[i] = (uint_t)v[i];
		}
	} else if (type == KSTAT_TYPE_TIMER) {
		kstat_timer_t *kt;

		if (data->type != MSGPACK_OBJECT_ARRAY)
			return proto();
		n = data->via.array.size;
		size = (size_t)n * sizeof(kstat_timer_t);
		ndata = n;
		if (room(ksp, size) < 0)
			return -2;
		kt = ksp->ks_data;
		for (i = 0; i < n; i++, kt++) {
			const msgpack_object *m = &data->via.array.ptr[i];

			if (m->type != MSGPACK_OBJECT_MAP)
				return proto();
			set_name(kt->name, lk_get(m, "name"));
			fill_fields(m, timer_keys, 6, v);
			kt->num_events = v[0];
			kt->elapsed_time = (hrtime_t)v[1];
			kt->min_time = (hrtime_t)v[2];
			kt->max_time = (hrtime_t)v[3];
			kt->start_time = (hrtime_t)v[4];
			kt->stop_time = (hrtime_t)v[5];
		}
	} else {
		r = -1;
	}
	if (r == -2) {
		errno = ENOMEM;
		return -1;
	}
	if (r < 0)
		return proto();
	ksp->ks_data_size = size;
	ksp->ks_ndata = ndata;
	ksp->ks_flags = (uchar_t)get_int(kstat, "flags");
	ksp->ks_snaptime = get_int(kstat, "snaptime");
	return 0;
}

static void
pack_key(msgpack_packer *pk, const char *key)
{
	size_t n = strlen(key);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, key, n);
}

static void
pack_text(msgpack_packer *pk, const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

int
lk_pack_data(msgpack_packer *pk, const kstat_t *ksp)
{
	uint_t i;

	switch (ksp->ks_type) {
	case KSTAT_TYPE_RAW:
		msgpack_pack_bin(pk, ksp->ks_data_size);
		msgpack_pack_bin_body(pk, ksp->ks_data, ksp->ks_data_size);
		return 0;
	case KSTAT_TYPE_NAMED: {
		const kstat_named_t *knp = ksp->ks_data;

		msgpack_pack_array(pk, ksp->ks_ndata);
		for (i = 0; i < ksp->ks_ndata; i++, knp++) {
			msgpack_pack_array(pk, 3);
			pack_text(pk, knp->name, KSTAT_STRLEN);
			msgpack_pack_uint8(pk, knp->data_type);
			switch (knp->data_type) {
			case KSTAT_DATA_CHAR: {
				size_t n = strnlen(knp->value.c, sizeof(knp->value.c));

				msgpack_pack_bin(pk, n);
				msgpack_pack_bin_body(pk, knp->value.c, n);
				break;
			}
			case KSTAT_DATA_INT32:
				msgpack_pack_int32(pk, knp->value.i32);
				break;
			case KSTAT_DATA_UINT32:
				msgpack_pack_uint32(pk, knp->value.ui32);
				break;
			case KSTAT_DATA_INT64:
				msgpack_pack_int64(pk, knp->value.i64);
				break;
			case KSTAT_DATA_UINT64:
				msgpack_pack_uint64(pk, knp->value.ui64);
				break;
			case KSTAT_DATA_FLOAT:
				msgpack_pack_double(pk, knp->value.f);
				break;
			case KSTAT_DATA_DOUBLE:
				msgpack_pack_double(pk, knp->value.d);
				break;
			case KSTAT_DATA_STRING: {
				const char *s = KSTAT_NAMED_STR_PTR(knp);

				if (s) {
					size_t n = KSTAT_NAMED_STR_BUFLEN(knp) ? strnlen(s, KSTAT_NAMED_STR_BUFLEN(knp)) : strlen(s);

					msgpack_pack_str(pk, n);
					msgpack_pack_str_body(pk, s, n);
				} else {
					msgpack_pack_nil(pk);
				}
				break;
			}
			default:
				msgpack_pack_uint64(pk, knp->value.ui64);
				break;
			}
		}
		return 0;
	}
	case KSTAT_TYPE_INTR: {
		const kstat_intr_t *ki = ksp->ks_data;

		msgpack_pack_map(pk, KSTAT_NUM_INTRS);
		for (i = 0; i < KSTAT_NUM_INTRS; i++) {
			pack_key(pk, intr_keys[i]);
			msgpack_pack_uint32(pk, ki->intrs[i]);
		}
		return 0;
	}
	case KSTAT_TYPE_IO: {
		const kstat_io_t *kio = ksp->ks_data;
		uint64_t v[12] = {kio->nread, kio->nwritten, kio->reads, kio->writes,
		    (uint64_t)kio->wtime, (uint64_t)kio->wlentime, (uint64_t)kio->wlastupdate,
		    (uint64_t)kio->rtime, (uint64_t)kio->rlentime, (uint64_t)kio->rlastupdate, kio->wcnt,
		    kio->rcnt};

		msgpack_pack_map(pk, 12);
		for (i = 0; i < 12; i++) {
			pack_key(pk, io_keys[i]);
			if (i >= 4 && i < 10)
				msgpack_pack_int64(pk, (int64_t)v[i]);
			else
				msgpack_pack_uint64(pk, v[i]);
		}
		return 0;
	}
	case KSTAT_TYPE_TIMER: {
		const kstat_timer_t *kt = ksp->ks_data;

		msgpack_pack_array(pk, ksp->ks_ndata);
		for (i = 0; i < ksp->ks_ndata; i++, kt++) {
			msgpack_pack_map(pk, 7);
			pack_key(pk, "name");
			pack_text(pk, kt->name, KSTAT_STRLEN);
			pack_key(pk, "num_events");
			msgpack_pack_uint64(pk, kt->num_events);
			pack_key(pk, "elapsed_time");
			msgpack_pack_int64(pk, kt->elapsed_time);
			pack_key(pk, "min_time");
			msgpack_pack_int64(pk, kt->min_time);
			pack_key(pk, "max_time");
			msgpack_pack_int64(pk, kt->max_time);
			pack_key(pk, "start_time");
			msgpack_pack_int64(pk, kt->start_time);
			pack_key(pk, "stop_time");
			msgpack_pack_int64(pk, kt->stop_time);
		}
		return 0;
	}
	default:
		errno = EINVAL;
		return -1;
	}
}
