"""libkstat against a server whose replies are malformed: an error, never memory corruption.

The server is a real Unix socket served by a thread of this test (same uid, so trusted);
the program is a real C program linked against the AddressSanitizer build of the library.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import msgpack

from tests.libkstat_helpers import compile_c
from tests.libkstat_helpers import installed
from tests.libkstat_helpers import run_env

TIMER = 4
PROG = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <kstat.h>
int main(void) {
	kstat_ctl_t *kc = kstat_open();
	kstat_t *ksp;
	if (!kc) return 3;
	ksp = kstat_lookup(kc, "fake", 0, "timers");
	if (!ksp) return 4;
	kid_t r = kstat_read(kc, ksp, NULL);
	printf("first %d %s\n", (int)r, strerror(errno));
	printf("second %d\n", (int)kstat_read(kc, ksp, NULL));
	kstat_close(kc);
	return 0;
}
"""


def _timer(i: int) -> dict[str, Any]:
    return {"name": f"t{i}", "num_events": i, "elapsed_time": 0, "min_time": 0, "max_time": 0,
            "start_time": 0, "stop_time": 0}  # fmt: skip


def _header(kid: int, module: str, name: str, ks_type: int, ndata: int, size: int) -> dict[str, Any]:
    return {"kid": kid, "module": module, "instance": 0, "name": name, "class": "misc", "type": ks_type,
            "flags": 0, "ndata": ndata, "data_size": size, "crtime": 0, "snaptime": 0}  # fmt: skip


def _timers_then_malformed(reads: int) -> dict[str, Any]:
    # KID 1 claims 10 timers (800 bytes); its first READ answers 2 entries, the second
    # not a map (malformed), its second READ 5 good ones.
    data: list[Any] = [_timer(0), 5] if reads == 1 else [_timer(i) for i in range(5)]
    return {**_header(1, "fake", "timers", TIMER, len(data), 80 * len(data)), "data": data}


def _serve(listener: socket.socket, header: dict[str, Any], answer: Any) -> None:
    # KID 0 lists ``header`` as KID 1; READ n of KID 1 is answered ``answer(n)``.
    reads = 0
    conn, _ = listener.accept()
    with conn:
        while True:
            head = conn.recv(4, socket.MSG_WAITALL)
            if len(head) < 4:
                return
            cmd, seq, arg = msgpack.unpackb(conn.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL))
            result: dict[str, Any] = {"kcid": 1}
            if cmd == 0x4B02 and arg["kid"] == 0:
                hdrs = [_header(0, "unix", "kstat_headers", 0, 2, 0), header]
                result["kstat"] = {**hdrs[0], "data": hdrs}
            elif cmd == 0x4B02:
                reads += 1
                result["kstat"] = answer(reads)
            body = msgpack.packb([seq, 0, result])
            conn.sendall(struct.pack(">I", len(body)) + body)


def _run(tmp_path: Path, prog: str, header: dict[str, Any], answer: Any) -> subprocess.CompletedProcess[str]:
    prefix = installed(asan=True)
    (tmp_path / "prog.c").write_text(prog)
    exe = compile_c([tmp_path / "prog.c"], tmp_path / "prog", prefix, ("-fsanitize=address", "-g"))
    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(60)
    server = threading.Thread(target=_serve, args=(listener, header, answer), daemon=True)
    server.start()
    try:
        env = run_env(path, prefix, ASAN_OPTIONS="detect_leaks=0:exitcode=23", KSTAT_TIMEOUT="30")
        done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=120)
    finally:
        listener.close()
        server.join(timeout=10)
        if os.path.exists(path):
            os.unlink(path)
    return done


def test_a_malformed_read_then_a_good_one_does_not_overflow_ks_data(tmp_path: Path) -> None:
    # Before the fix: the failed read left ks_data at 160 bytes with ks_data_size still
    # the header's 800, so the next read of 400 bytes did not grow it (heap overflow).
    done = _run(tmp_path, PROG, _header(1, "fake", "timers", TIMER, 10, 800), _timers_then_malformed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "first -1 Protocol error\nsecond 1\n", done.stdout


NAMED_WALK = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <kstat.h>
int main(void) {
	kstat_ctl_t *kc = kstat_open();
	kstat_t *ksp;
	kstat_named_t *kn;
	unsigned i, sum = 0;
	if (!kc) return 3;
	ksp = kstat_lookup(kc, "fake", 0, "named");
	if (!ksp) return 4;
	if (kstat_read(kc, ksp, NULL) == -1) {
		printf("read %s\n", strerror(errno));
		return 0;
	}
	/* An illumos reader trusts ks_type and ks_ndata for ks_data's layout. */
	for (i = 0, kn = ksp->ks_data; ksp->ks_type == KSTAT_TYPE_NAMED && i < ksp->ks_ndata; i++)
		sum += kn[i].data_type;
	printf("ok %u %u\n", ksp->ks_ndata, sum);
	return 0;
}
"""


def test_a_reply_of_another_type_than_the_kstat_is_a_protocol_error(tmp_path: Path) -> None:
    # Before: the chain says NAMED, the READ answers RAW (8 bytes, ndata 100); ks_data
    # became 8 RAW bytes under ks_type NAMED and ks_ndata 100, and the reader overran it.
    def raw(_reads: int) -> dict[str, Any]:
        return {**_header(1, "fake", "named", 0, 100, 8), "data": b"\0" * 8}

    done = _run(tmp_path, NAMED_WALK, _header(1, "fake", "named", 1, 1, 48), raw)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "read Protocol error\n", done.stdout
