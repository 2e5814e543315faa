/*
 * Finding, trusting and talking to kstatd: the client connection contract of
 * docs/PROTOCOL.md ("Finding and trusting the server"), as kstatpy/transport.py and
 * kstatpy/safepath.py implement it in Python. In order:
 *
 *   1. the socket: $KSTAT_SOCKET ("named"), else the default: euid 0
 *      /run/kstatpy/priv/kstat.sock, any other $XDG_RUNTIME_DIR/kstatpy/kstat.sock,
 *      else /tmp/kstatpy-<uid>/kstat.sock;
 *   2. the default path is walked from "/" one O_PATH|O_NOFOLLOW descriptor at a time;
 *      every directory is owned by root or the caller's euid and not writable by
 *      others unless sticky (then the socket must be a socket owned by root or the
 *      caller); the connect goes through /proc/self/fd/N/<name> of the checked
 *      directory, so renaming an ancestor afterwards cannot redirect it. A named
 *      path's directory may belong to anyone but must not be a symbolic link nor
 *      writable by others unless sticky (then the socket must not be a symbolic link);
 *   3. SO_PEERCRED: the server runs as root or the caller's euid, or, for a named
 *      socket only, a uid listed in $KSTAT_TRUST_UID; else EACCES;
 *   4. every request (connect, send, the whole reply) has a deadline of
 *      $KSTAT_TIMEOUT seconds (default 10): past it ETIMEDOUT, the connection closed.
 *
 * Refusals and timeouts print the contract's one line on stderr, since an illumos
 * program only shows strerror(errno). A connection lost or timed out is closed; the
 * next request connects again, through the same checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "impl.h"

#define LK_CHUNK (1u << 20) /* replies above this grow as their bytes arrive */

double
lk_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One line on stderr (the contract's messages); errno is left as it was. */
static void
say(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	errno = saved;
}

static int
fail(int code)
{
	errno = code;
	return -1;
}

static int
parse_trust(struct lk_ctl *c, const char *s)
{
	const char *p = s;

	while (*p) {
		char *end;
		unsigned long v;

		if (*p < '0' || *p > '9')
			goto bad;
		errno = 0;
		v = strtoul(p, &end, 10);
		if (errno || v > 0xFFFFFFFEul || end == p || (*end && *end != ','))
			goto bad;
		if (c->ntrust == LK_MAX_TRUST)
			goto bad;
		c->trust[c->ntrust++] = (uid_t)v;
		p = *end ? end + 1 : end;
		if (*end == ',' && !*p)
			goto bad;
	}
	return 0;
bad:
	say("KSTAT_TRUST_UID=%s: not a list of uids (N[,N...], at most %d)", s, LK_MAX_TRUST);
	return fail(EINVAL);
}

int
lk_config(struct lk_ctl *c)
{
	const char *env = getenv("KSTAT_SOCKET");
	int n;

	if (env && *env) {
		n = snprintf(c->path, sizeof(c->path), "%s", env);
		c->named = 1;
	} else if (geteuid() == 0) {
		n = snprintf(c->path, sizeof(c->path), "/run/kstatpy/priv/kstat.sock");
	} else if ((env = getenv("XDG_RUNTIME_DIR")) && *env) {
		n = snprintf(c->path, sizeof(c->path), "%s/kstatpy/kstat.sock", env);
	} else {
		n = snprintf(c->path, sizeof(c->path), "/tmp/kstatpy-%u/kstat.sock", (unsigned)getuid());
	}
	if (n < 0 || (size_t)n >= sizeof(c->path))
		return fail(ENAMETOOLONG);

	c->timeout = LK_DEFAULT_TIMEOUT;
	env = getenv("KSTAT_TIMEOUT");
	if (env && *env) {
		char *end;
		double t = strtod(env, &end);

		/* t == t: not NaN; the bounds exclude the infinities. */
		if (end == env || *end || !(t == t) || t <= 0 || t > 86400) {
			say("KSTAT_TIMEOUT=%s: not a number of seconds > 0 and <= 86400", env);
			return fail(EINVAL);
		}
		c->timeout = t;
	}
	env = getenv("KSTAT_TRUST_UID");
	if (c->named && env && *env)
		return parse_trust(c, env);
	return 0;
}

/* A directory on the default path: owned by root or euid, not writable by others
 * unless sticky. Returns 1 when it is writable by others (and sticky), 0, or -1. */
static int
check_dir(int fd, const char *name, const char *path, uid_t euid)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		say("%s: not a directory on the way to the socket %s; refusing to use it", name, path);
		return fail(EACCES);
	}
	if (st.st_uid != 0 && st.st_uid != euid) {
		say("%s: the socket's directory is owned by uid %u, not uid 0 or uid %u; refusing to use it",
		    name, (unsigned)st.st_uid, (unsigned)euid);
		return fail(EACCES);
	}
	if (st.st_mode & 022) {
		if (!(st.st_mode & S_ISVTX)) {
			say("%s: the socket's directory is writable by others (mode %04o); refusing to use it",
			    name, (unsigned)(st.st_mode & 07777));
			return fail(EACCES);
		}
		return 1;
	}
	return 0;
}

/* Walk to the default socket's directory; its descriptor, and *base its last name. */
static int
walk_default(const char *path, const char **base)
{
	char buf[PATH_MAX], shown[PATH_MAX];
	uid_t euid = geteuid();
	char *comp, *save = NULL, *slash;
	int fd, shared;
	size_t shown_len = 0;

	if (path[0] != '/') {
		say("%s: the default socket path is not absolute (XDG_RUNTIME_DIR?); refusing to use it", path);
		return fail(EINVAL);
	}
	snprintf(buf, sizeof(buf), "%s", path);
	slash = strrchr(buf, '/');
	*slash = '\0';
	*base = path + (slash - buf) + 1;
	if (!**base)
		return fail(EINVAL);
	fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	shown[0] = '\0';
	shared = check_dir(fd, "/", path, euid);
	for (comp = strtok_r(buf, "/", &save); shared >= 0 && comp; comp = strtok_r(NULL, "/", &save)) {
		int nfd;

		if (strcmp(comp, ".") == 0)
			continue;
		if (shown_len < sizeof(shown))
			shown_len += (size_t)snprintf(shown + shown_len, sizeof(shown) - shown_len, "/%s", comp);
		if (strcmp(comp, "..") == 0) {
			say("%s: \"..\" on the way to the socket; refusing to use it", path);
			shared = fail(EACCES);
			break;
		}
		nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			struct stat st;
			int e = errno;

			if ((e == ENOTDIR || e == ELOOP) && fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0) {
				if (S_ISLNK(st.st_mode))
					say("%s: a symbolic link on the way to the socket; refusing to use it", shown);
				else
					say("%s: not a directory on the way to the socket %s; refusing to use it", shown, path);
				e = EACCES;
			}
			shared = fail(e);
			break;
		}
		close(fd);
		fd = nfd;
		shared = check_dir(fd, shown, path, euid);
	}
	if (shared == 1) {
		/* A shared sticky directory: the socket must be root's or the caller's own. */
		struct stat st;

		if (fstatat(fd, *base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			shared = -1;
		} else if (!S_ISSOCK(st.st_mode)) {
			say("%s: the socket in a shared directory is %s; refusing to use it", path,
			    S_ISLNK(st.st_mode) ? "a symbolic link" : "not a socket");
			shared = fail(EACCES);
		} else if (st.st_uid != 0 && st.st_uid != euid) {
			say("%s: the socket is owned by uid %u, not uid 0 or uid %u; refusing to use it", path,
			    (unsigned)st.st_uid, (unsigned)euid);
			shared = fail(EACCES);
		}
	}
	if (shared < 0) {
		int e = errno;

		close(fd);
		return fail(e);
	}
	return fd;
}

/* A named socket: its directory may be anyone's, but not a symbolic link, and not
 * writable by others unless sticky (then the socket must not be a symbolic link). */
static int
check_named(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat st;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (lstat(dir, &st) < 0)
		return errno == ENOENT ? 0 : -1; /* nothing to trust yet: connect says ENOENT */
	if (S_ISLNK(st.st_mode)) {
		say("%s: the socket's directory is a symbolic link; refusing to use it", dir);
		return fail(EACCES);
	}
	if (!S_ISDIR(st.st_mode)) {
		say("%s: the socket's directory is not a directory; refusing to use it", dir);
		return fail(EACCES);
	}
	if (st.st_mode & 022) {
		if (!(st.st_mode & S_ISVTX)) {
			say("%s: the socket's directory is writable by others (mode %04o); refusing to use it", dir,
			    (unsigned)(st.st_mode & 07777));
			return fail(EACCES);
		}
		if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
			say("%s: the socket is a symbolic link in a shared directory; refusing to use it", path);
			return fail(EACCES);
		}
	}
	return 0;
}

/* Wait until fd is ready for ev or the deadline passes: 1 ready, 0 timed out, -1. */
static int
wait_fd(int fd, short ev, double deadline)
{
	struct pollfd p = {.fd = fd, .events = ev};

	for (;;) {
		double left = deadline - lk_now();
		int r;

		if (left <= 0)
			return 0;
		r = poll(&p, 1, (int)(left * 1000.0) + 1);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int
timed_out(struct lk_ctl *c)
{
	say("%s: no reply from kstatd within %g s (KSTAT_TIMEOUT)", c->path, c->timeout);
	lk_disconnect(c);
	return fail(ETIMEDOUT);
}

static int
check_peer(struct lk_ctl *c, int sock)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	uid_t euid = geteuid();
	int i;

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -1;
	if (cr.uid == 0 || cr.uid == euid)
		return 0;
	for (i = 0; c->named && i < c->ntrust; i++)
		if (c->trust[i] == cr.uid)
			return 0;
	say("%s: the server runs as uid %u, not root or uid %u; refusing it (KSTAT_TRUST_UID=%u to trust it)",
	    c->path, (unsigned)cr.uid, (unsigned)euid, (unsigned)cr.uid);
	return fail(EACCES);
}

int
lk_connect(struct lk_ctl *c, double deadline)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int dirfd = -1, sock, n, e;
	const char *base;

	if (c->named) {
		if (check_named(c->path) < 0)
			return -1;
		n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
	} else {
		dirfd = walk_default(c->path, &base);
		if (dirfd < 0)
			return -1;
		n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dirfd, base);
	}
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		if (dirfd >= 0)
			close(dirfd);
		return fail(ENAMETOOLONG);
	}
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (sock < 0) {
		e = errno;
		goto out;
	}
	for (;;) {
		if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		e = errno;
		if (e == EINTR)
			continue;
		if (e == EAGAIN) { /* the listener's backlog is full: wait for room */
			if (lk_now() >= deadline)
				goto timeout;
			poll(NULL, 0, 10);
			continue;
		}
		if (e == EINPROGRESS) {
			socklen_t len = sizeof(e);
			int w = wait_fd(sock, POLLOUT, deadline);

			if (w == 0)
				goto timeout;
			if (w < 0 || getsockopt(sock, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
				e = errno;
			if (e == 0)
				break;
		}
		close(sock);
		goto out;
	}
	if (check_peer(c, sock) < 0) {
		e = errno;
		close(sock);
		goto out;
	}
	if (dirfd >= 0)
		close(dirfd);
	c->kc.kc_kd = sock;
	return 0;
timeout:
	close(sock);
	if (dirfd >= 0)
		close(dirfd);
	return timed_out(c);
out:
	if (dirfd >= 0)
		close(dirfd);
	return fail(e);
}

void
lk_disconnect(struct lk_ctl *c)
{
	if (c->kc.kc_kd >= 0) {
		close(c->kc.kc_kd);
		c->kc.kc_kd = -1;
	}
}

void
lk_begin(struct lk_ctl *c, uint32_t cmd)
{
	static const char room[4];

	msgpack_sbuffer_clear(&c->req);
	msgpack_sbuffer_write(&c->req, room, sizeof(room));
	msgpack_pack_array(&c->pk, 3);
	msgpack_pack_uint32(&c->pk, cmd);
	c->seq++;
	msgpack_pack_uint32(&c->pk, c->seq);
}

/* 1 sent (or the peer is gone: read what it left), 0 timed out, -1 error. */
static int
send_all(struct lk_ctl *c, double deadline)
{
	size_t off = 0;

	while (off < c->req.size) {
		ssize_t k = send(c->kc.kc_kd, c->req.data + off, c->req.size - off, MSG_NOSIGNAL);

		if (k >= 0) {
			off += (size_t)k;
		} else if (errno == EAGAIN) {
			int w = wait_fd(c->kc.kc_kd, POLLOUT, deadline);

			if (w <= 0)
				return w;
		} else if (errno == EPIPE || errno == ECONNRESET) {
			return 1; /* a refusal may wait to be read (kstatpy's transport does the same) */
		} else if (errno != EINTR) {
			return -1;
		}
	}
	return 1;
}

/* Exactly n bytes: 1, 0 timed out, -1 (errno; ECONNRESET when kstatd closed). */
static int
recv_all(struct lk_ctl *c, char *buf, size_t n, double deadline)
{
	size_t got = 0;

	while (got < n) {
		ssize_t k = recv(c->kc.kc_kd, buf + got, n - got, 0);

		if (k > 0) {
			got += (size_t)k;
		} else if (k == 0) {
			return fail(ECONNRESET);
		} else if (errno == EAGAIN) {
			int w = wait_fd(c->kc.kc_kd, POLLIN, deadline);

			if (w <= 0)
				return w;
		} else if (errno != EINTR) {
			return -1;
		}
	}
	return 1;
}

static int
lost(struct lk_ctl *c, int e)
{
	lk_disconnect(c);
	return fail(e);
}

/* One exchange on the open connection: 0 and the reply decoded into c->reply, 1 for
 * kstatd's goodbye (seq 0 with an errno, then closed: *code), or -1. */
static int
exchange(struct lk_ctl *c, double deadline, int *code)
{
	unsigned char len4[4];
	const msgpack_object *a;
	size_t len, got, off = 0;
	int r;

	r = send_all(c, deadline);
	if (r == 1)
		r = wait_fd(c->kc.kc_kd, POLLIN, deadline);
	if (r == 1)
		r = recv_all(c, (char *)len4, 4, deadline);
	if (r == 0)
		return timed_out(c);
	if (r < 0)
		return lost(c, errno);
	len = (size_t)len4[0] << 24 | (size_t)len4[1] << 16 | (size_t)len4[2] << 8 | len4[3];
	if (len == 0 || len > LK_MAX_REPLY)
		return lost(c, EPROTO);
	for (got = 0; got < len;) {
		size_t want = len - got > LK_CHUNK ? got + LK_CHUNK : len;

		if (want > c->rcap) {
			char *nb = realloc(c->rbuf, want);

			if (!nb)
				return lost(c, ENOMEM);
			c->rbuf = nb;
			c->rcap = want;
		}
		r = recv_all(c, c->rbuf + got, want - got, deadline);
		if (r == 0)
			return timed_out(c);
		if (r < 0)
			return lost(c, errno);
		got = want;
	}
	msgpack_unpacked_destroy(&c->reply);
	msgpack_unpacked_init(&c->reply);
	if (msgpack_unpack_next(&c->reply, c->rbuf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
		return lost(c, EPROTO);
	/* docs/PROTOCOL.md §3: [seq: uint, errno: int, result: map] */
	if (c->reply.data.type != MSGPACK_OBJECT_ARRAY || c->reply.data.via.array.size != 3)
		return lost(c, EPROTO);
	a = c->reply.data.via.array.ptr;
	if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    a[1].via.u64 > 4095 || a[2].type != MSGPACK_OBJECT_MAP)
		return lost(c, EPROTO);
	*code = (int)a[1].via.u64;
	if (a[0].via.u64 != c->seq) {
		/* kstatd refuses (connection quotas) or says goodbye (idle) with seq 0. */
		if (*code == 0)
			return lost(c, EPROTO);
		lk_disconnect(c);
		return 1;
	}
	return 0;
}

int
lk_call(struct lk_ctl *c, uint32_t cmd, const msgpack_object **result)
{
	uint32_t n = (uint32_t)(c->req.size - 4);
	unsigned char *p = (unsigned char *)c->req.data;
	double deadline = lk_now() + c->timeout;
	int attempt, code = 0, r;

	p[0] = (unsigned char)(n >> 24);
	p[1] = (unsigned char)(n >> 16);
	p[2] = (unsigned char)(n >> 8);
	p[3] = (unsigned char)n;
	for (attempt = 0; attempt < 2; attempt++) {
		if (c->kc.kc_kd < 0 && lk_connect(c, deadline) < 0)
			return -1;
		r = exchange(c, deadline, &code);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		/* A goodbye: an idle connection closed by kstatd (ETIMEDOUT) is reopened and a
		 * kstat ioctl (no per-connection state) sent again, once; as kstatpy's transport. */
		if (!(code == ETIMEDOUT && cmd >= 0x4B00 && cmd <= 0x4BFF && attempt == 0))
			return fail(code);
	}
	*result = &c->reply.data.via.array.ptr[2];
	if (code)
		return fail(code);
	return 0;
}
