/*
 * The floor for bench/bench_libkstat.py: a kstatd stand-in in C (msgpack-c) that
 * answers every request with recorded reply bytes. One connection at a time.
 *
 *   echo SOCKET CHAIN_TAIL KID0_TAIL READ_TAIL
 *
 * Each *_TAIL file holds a reply body without its first two items: "errno, result"
 * msgpack-encoded. A request is decoded (cmd, seq, arg.kid) and answered with
 * [seq, <tail>] framed: KSTAT_IOC_CHAIN_ID gets CHAIN_TAIL, a READ of kid 0 KID0_TAIL,
 * any other request READ_TAIL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		exit(2);
	buf = malloc((size_t)n);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		exit(2);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static int
full(int fd, char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = read(fd, buf + got, n - got);

		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t tlen[3];
	char *tail[3], *req = NULL;
	size_t rcap = 0;
	int srv;

	if (argc != 5)
		return 2;
	for (int i = 0; i < 3; i++)
		tail[i] = slurp(argv[2 + i], &tlen[i]);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
	srv = socket(AF_UNIX, SOCK_STREAM, 0);
	if (srv < 0 || bind(srv, (struct sockaddr *)&sa, sizeof(sa)) || listen(srv, 16))
		return 1;
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int fd = accept(srv, NULL, NULL);
		msgpack_sbuffer out;
		msgpack_packer pk;

		if (fd < 0)
			continue;
		msgpack_sbuffer_init(&out);
		msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
		for (;;) {
			unsigned char l4[4];
			size_t n, off = 0;
			msgpack_unpacked u;
			uint64_t cmd = 0, seq = 0, kid = 1;
			int which = 2;

			if (full(fd, (char *)l4, 4))
				break;
			n = (size_t)l4[0] << 24 | (size_t)l4[1] << 16 | (size_t)l4[2] << 8 | l4[3];
			if (n > rcap) {
				req = realloc(req, n);
				rcap = n;
			}
			if (full(fd, req, n))
				break;
			msgpack_unpacked_init(&u);
			if (msgpack_unpack_next(&u, req, n, &off) == MSGPACK_UNPACK_SUCCESS &&
			    u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 3) {
				msgpack_object *a = u.data.via.array.ptr;

				cmd = a[0].via.u64;
				seq = a[1].via.u64;
				if (a[2].type == MSGPACK_OBJECT_MAP)
					for (uint32_t i = 0; i < a[2].via.map.size; i++)
						if (a[2].via.map.ptr[i].key.via.str.size == 3)
							kid = a[2].via.map.ptr[i].val.via.u64;
			}
			msgpack_unpacked_destroy(&u);
			if (cmd == 0x4B01)
				which = 0;
			else if (kid == 0)
				which = 1;
			msgpack_sbuffer_clear(&out);
			msgpack_sbuffer_write(&out, "\0\0\0\0", 4);
			msgpack_pack_array(&pk, 3);
			msgpack_pack_uint64(&pk, seq);
			msgpack_sbuffer_write(&out, tail[which], tlen[which]);
			n = out.size - 4;
			out.data[0] = (char)(n >> 24);
			out.data[1] = (char)(n >> 16);
			out.data[2] = (char)(n >> 8);
			out.data[3] = (char)n;
			if (write(fd, out.data, out.size) != (ssize_t)out.size)
				break;
		}
		msgpack_sbuffer_destroy(&out);
		close(fd);
	}
}
