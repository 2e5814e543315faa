/*
 * Finding, trusting and talking to kstatd: the client connection contract of
 * docs/PROTOCOL.md §9.7 ("Finding and trusting the server"), as kstatpy/transport.py and
 * kstatpy/safepath.py implement it in Python. In order:
 *
 *   1. the socket: $KSTAT_SOCKET ("named"), else the default: euid 0
 *      /run/kstatpy/priv/kstat.sock ($KSTATPY_RUNDIR, when absolute, replaces
 *      /run/kstatpy), any other $XDG_RUNTIME_DIR/kstatpy/kstat.sock,
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

/* The whole of $KSTAT_TRUST_UID is parsed (a copy of any length: a fixed buffer would
 * cut "...,655340" to "...,65534" and trust a uid the user never named). */
static int
parse_trust(struct lk_ctl *c, const char *s)
{
	char *buf = strdup(s), *save = NULL, *w;
	int r = 0;

	if (!buf)
		return -1;
	for (w = strtok_r(buf, ",", &save); w && r == 0; w = strtok_r(NULL, ",", &save)) {
		char *end;
		unsigned long v;

		while (*w == ' ' || *w == '\t')
			w++;
		end = w + strlen(w);
		while (end > w && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (!*w)
			continue; /* kstatpy skips blank entries */
		errno = 0;
		v = strtoul(w, &end, 10);
		if (*w < '0' || *w > '9' || *end || errno || v >= 0xFFFFFFFFul) {
			say("KSTAT_TRUST_UID: '%s' is not a uid", w);
			r = fail(EINVAL);
		} else if (c->ntrust == LK_MAX_TRUST) {
			say("KSTAT_TRUST_UID: more than %d uids", LK_MAX_TRUST);
			r = fail(EINVAL);
		} else {
			c->trust[c->ntrust++] = (uid_t)v;
		}
	}
	free(buf);
	if (r < 0)
		errno = EINVAL;
	return r;
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
		/* root's run directory: $KSTATPY_RUNDIR when absolute, as safepath.root_run_dir */
		const char *run = getenv("KSTATPY_RUNDIR");

		if (run == NULL || run[0] != '/')
			run = "/run/kstatpy";
		n = snprintf(c->path, sizeof(c->path), "%s/priv/kstat.sock", run);
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
		while (*end == ' ' || *end == '\t' || *end == '\n')
			end++; /* surrounding blanks are accepted, as Python's float() does */
		if (end == env || *end || strpbrk(env, "xX") || !(t == t) || t <= 0 || t > 86400) {
			say("KSTAT_TIMEOUT: '%s' is not a number of seconds > 0 and <= 86400", env);
			return fail(EINVAL);
		}
		c->timeout = t;
	}
	env = getenv("KSTAT_TRUST_UID");
	if (c->named && env && *env)
		return parse_trust(c, env);
	return 0;
}

/* path made absolute and normalised lexically ("." and ".." folded), as Python's
 * os.path.abspath does: the walk and the messages see the same names as kstatpy's. */
static int
abspath(const char *path, char *out, size_t size)
{
	char buf[PATH_MAX * 2], *save = NULL, *comp;
	size_t len = 0;

	if (path[0] == '/')
		snprintf(buf, sizeof(buf), "%s", path);
	else if (getcwd(buf, PATH_MAX))
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "/%s", path);
	else
		return -1;
	out[0] = '\0';
	for (comp = strtok_r(buf, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		if (strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			char *slash = strrchr(out, '/');

			len = slash ? (size_t)(slash - out) : 0;
			out[len] = '\0';
			continue;
		}
		if (len + 1 + strlen(comp) + 1 > size)
			return fail(ENAMETOOLONG);
		len += (size_t)snprintf(out + len, size - len, "/%s", comp);
	}
	if (len == 0)
		snprintf(out, size, "/");
	return 0;
}

/* "uid 0" or "uid 0 or uid M": the owners a default path may have (sorted, as kstatpy). */
static const char *
owners(char *buf, size_t size, uid_t euid)
{
	if (euid == 0)
		snprintf(buf, size, "uid 0");
	else
		snprintf(buf, size, "uid 0 or uid %u", (unsigned)euid);
	return buf;
}

static int
refuse(const char *what, const char *reason)
{
	say("%s: %s; refusing to use it", what, reason);
	return fail(EACCES);
}

/* Walk to the default socket's directory from "/" (§9.7 step 2); its O_PATH
 * descriptor, *base the socket's name in it. -1: ENOENT (a component is missing: not
 * running), EACCES (refused, one line said why), or another errno. */
static int
walk_default(const char *path, const char **base)
{
	char abs[PATH_MAX], shown[PATH_MAX], why[160], who[64];
	uid_t euid = geteuid();
	struct stat st;
	char *comp, *slash;
	int fd, nfd;

	if (abspath(path, abs, sizeof(abs)) < 0)
		return -1;
	slash = strrchr(abs, '/');
	*base = path + strlen(path) - strlen(slash + 1);
	*slash = '\0';
	owners(who, sizeof(who), euid);
	fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	snprintf(shown, sizeof(shown), "/");
	comp = abs; /* "" for "/", else "/a/b": each component after a '/' */
	for (;;) {
		if (fstat(fd, &st) < 0)
			goto err;
		if (st.st_uid != 0 && st.st_uid != euid) {
			snprintf(why, sizeof(why), "a directory on the socket's path is owned by uid %u, not %s",
			    (unsigned)st.st_uid, who);
			goto refused;
		}
		if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
			snprintf(why, sizeof(why), "a directory on the socket's path is writable by others (mode %04o)",
			    (unsigned)(st.st_mode & 07777));
			goto refused;
		}
		if (*comp == '\0')
			break;
		{
			char *name = comp + 1, *next = strchr(name, '/');

			if (next)
				*next = '\0';
			snprintf(shown, sizeof(shown), "%s", abs);
			nfd = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (nfd < 0) {
				int e = errno;
				struct stat lst;

				if (e == ENOENT)
					goto err;
				if ((e == ENOTDIR || e == ELOOP) && fstatat(fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0)
					snprintf(why, sizeof(why), "%s", S_ISLNK(lst.st_mode) ?
					    "a directory on the socket's path is a symbolic link" :
					    "a component of the socket's path is not a directory");
				else
					snprintf(why, sizeof(why), "cannot open it (%s)", strerror(e));
				goto refused;
			}
			close(fd);
			fd = nfd;
			if (next) {
				*next = '/';
				comp = next;
			} else {
				comp = name + strlen(name);
			}
		}
	}
	if (st.st_mode & 022) {
		/* The last directory is shared (sticky): the socket must be root's or the caller's. */
		struct stat sst;

		if (fstatat(fd, *base, &sst, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				goto err;
			snprintf(why, sizeof(why), "cannot inspect it (%s)", strerror(errno));
			snprintf(shown, sizeof(shown), "%s", path);
			goto refused;
		}
		snprintf(shown, sizeof(shown), "%s", path);
		if (!S_ISSOCK(sst.st_mode)) {
			snprintf(why, sizeof(why), "not a socket in a shared directory");
			goto refused;
		}
		if (sst.st_uid != 0 && sst.st_uid != euid) {
			snprintf(why, sizeof(why), "the socket is owned by uid %u, not %s", (unsigned)sst.st_uid, who);
			goto refused;
		}
	}
	return fd;
refused:
	close(fd);
	return refuse(shown, why);
err:
	{
		int e = errno;

		close(fd);
		return fail(e);
	}
}

/* A named socket (§9.4 "Socket paths"): its directory may be anyone's, but not a
 * symbolic link, and not writable by others unless sticky (then the socket must not
 * be a symbolic link). */
static int
check_named(const char *path)
{
	char dir[PATH_MAX], why[160];
	struct stat st;

	if (abspath(path, dir, sizeof(dir)) < 0)
		return -1;
	if (strrchr(dir, '/') == dir)
		dir[1] = '\0';
	else
		*strrchr(dir, '/') = '\0';
	if (lstat(dir, &st) < 0) {
		if (errno == ENOENT)
			return 0; /* nothing to trust yet: connect says ENOENT */
		snprintf(why, sizeof(why), "cannot inspect it (%s)", strerror(errno));
		return refuse(dir, why);
	}
	if (S_ISLNK(st.st_mode))
		return refuse(dir, "the socket's directory is a symbolic link");
	if (!S_ISDIR(st.st_mode))
		return refuse(dir, "the socket's directory is not a directory");
	if (st.st_mode & 022) {
		if (!(st.st_mode & S_ISVTX)) {
			snprintf(why, sizeof(why), "the socket's directory is writable by others (mode %04o)",
			    (unsigned)(st.st_mode & 07777));
			return refuse(dir, why);
		}
		if (lstat(path, &st) < 0) {
			if (errno == ENOENT)
				return 0;
			snprintf(why, sizeof(why), "cannot inspect it (%s)", strerror(errno));
			return refuse(path, why);
		}
		if (S_ISLNK(st.st_mode))
			return refuse(path, "the socket is a symbolic link in a shared directory");
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
		char via[64];

		dirfd = walk_default(c->path, &base);
		if (dirfd < 0)
			return -1;
		/* Through the checked directory, so that no rename can redirect the connect;
		 * the plain path only without /proc (as kstatpy.transport). */
		snprintf(via, sizeof(via), "/proc/self/fd/%d", dirfd);
		if (access(via, F_OK) == 0)
			n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", via, base);
		else
			n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
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
		if (e == ECONNREFUSED && c->named) {
			struct stat st;

			/* A named path that is not a socket (a regular file refuses too). */
			if (stat(c->path, &st) == 0 && !S_ISSOCK(st.st_mode))
				e = ENOTSOCK;
		}
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
