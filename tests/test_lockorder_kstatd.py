"""kstatd and the 8149 deadlock: the checker's panic with ``--kmem-audit``, the deadman's report without.

Real kstatd processes, the real ``kstat`` and ``kstatpy-mdb``; the provider is
``tests/providers_fixture/datalink.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kstatpy.constants import KstatIoctl
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd
from tests.providers_fixture import datalink

DLS = ("tests.providers_fixture.datalink",)
READ = int(KstatIoctl.READ)


def _kid(socket: str, name: str) -> int:
    _, code, res = rpc(socket, READ, {"kid": 0})
    assert code == 0, res
    return next(h["kid"] for h in res["kstat"]["data"] if (h["module"], h["name"]) == ("dls", name))


def _kstat(socket: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstat", *args], cwd=str(REPO), env=kstatd_env({"KSTAT_SOCKET": socket}),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_with_the_audit_kstatd_panics_at_the_delete_and_mdb_reads_the_cycle(tmp_path: Path) -> None:
    args = ("--kmem-audit", "--on-panic=continue")
    with running_kstatd(tmp_path, plugins=DLS, args=args, env={"DLS_ORDER": "8149"}) as kd:
        assert rpc(kd.socket, datalink.LINK_CREATE, {"name": "stub0"})[1] == 0
        read = _kstat(kd.socket, "-p", "dls:1:link:reads")
        assert read.returncode == 0 and read.stdout.strip() == "dls:1:link:reads\t1", read.stderr
        _, code, res = rpc(kd.socket, datalink.LINK_DELETE, {"name": "stub0"})  # one thread, no race
        assert code == 14, res  # EFAULT: a panic, kstatd continues
        assert "lock order reversal: kstat_delete(dls:1:link) while holding mutex dls_lock" in res["error"]
    assert "(lock order checker)" in kd.stderr and "lock order cycle (2 lock classes):" in kd.stderr
    (vmcore,) = tmp_path.glob("kstatd.vmcore.*.json")
    dump = json.loads(vmcore.read_text())
    assert dump["panic"]["trap"]["kind"] == "lock order"
    edges = dump["lockorder"]["cycle"]
    assert [(e["from"], e["to"]) for e in edges] == [("mutex dls_lock", "hold dls:*:link"), ("hold dls:*:link", "mutex dls_lock")]
    assert dump["kstat"] == edges[0]["kstat"] != 0
    mdb = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.mdb", str(vmcore), "-e", "::status; ::lockorder"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mdb.returncode == 0, mdb.stderr
    assert "panic message: deadlock: lock order reversal: kstat_delete(dls:1:link)" in mdb.stdout
    assert "edge 2: hold dls:*:link -> mutex dls_lock, first seen:" in mdb.stdout
    assert "datalink:link_update+0x" in mdb.stdout and "kstat:read_kstat_data+0x" in mdb.stdout
    assert "datalink:delete+0x" in mdb.stdout and "kstat:_provider_ioctl+0x" in mdb.stdout


def test_without_the_audit_the_deadman_names_both_threads_and_kstat_times_out(tmp_path: Path) -> None:
    args = ("--deadman-seconds", "1", "--read-timeout", "1", "--detach-timeout", "2")
    with running_kstatd(tmp_path, plugins=DLS, args=args, env={"DLS_ORDER": "8149"}) as kd:
        assert rpc(kd.socket, datalink.LINK_CREATE, {"name": "stub0"})[1] == 0
        kid = _kid(kd.socket, "link")
        deleted: list[Any] = []

        def delete() -> None:  # holds dls_lock until a reader is in ks_update, then kstat_delete waits
            try:
                deleted.append(rpc(kd.socket, datalink.LINK_DELETE, {"name": "stub0", "wait_reader": 60}, timeout=30))
            except (OSError, EOFError) as exc:  # kstatd stopped under it
                deleted.append(exc)

        deleter = threading.Thread(target=delete, daemon=True)
        deleter.start()
        reader = _kstat(kd.socket, "-p", "dls:1:link")  # the real reader that races it
        # kstat's timeout error (kstatd --read-timeout answers EAGAIN): the stuck kstat named, exit 3,
        # and no statistic of it printed, only its header pseudo-statistics (docs/READING.md).
        assert reader.returncode == 3, (reader.stdout, reader.stderr)
        assert {line.split("\t")[0] for line in reader.stdout.splitlines()} <= {"dls:1:link:class", "dls:1:link:crtime"}
        assert "kstat: dls:1:link: not read: its ks_update has not returned" in reader.stderr, reader.stderr
        assert len(reader.stderr.strip().splitlines()) == 1 and "Traceback" not in reader.stderr
        assert deleted == []  # still stuck: the deadman breaks nothing
    err = kd.stderr
    assert err.count("kstatd: deadman: ") == 1, err  # one report, however long the wait
    report = err[err.index("kstatd: deadman: ") :]
    assert "deadman: kstat_delete has waited " in report and f"for the hold of dls:1:link (kid {kid};" in report
    assert "  waiter: thread 0x" in report and "kstat_delete(dls:1:link), waiting" in report
    assert "datalink:delete+0x" in report  # the waiter's stack: the provider's delete path
    assert f"a reader in ks_update of kid {kid}, holding the hold of dls:1:link" in report
    assert "blocked at datalink:link_update+0x" in report and "in mutex_enter(dls_lock), held by thread 0x" in report
    assert "  deadlock: thread 0x" in report and "while holding mutex dls_lock" in report
    waited = float(report.split("has waited ", 1)[1].split(" s", 1)[0])
    assert waited >= 1.0


def test_without_the_audit_the_deadman_follows_the_shared_ks_lock_cycle_in_kstatd(tmp_path: Path) -> None:
    # The three-thread shape of tests/test_deadman.py, in a real kstatd with real kstat readers:
    # the delete holds dls_lock and waits for the hold of summary; summary's reader holds it and
    # waits for dls_stats_lock (the ks_lock both kstats share); link's reader holds that and
    # waits in ks_update for dls_lock.
    args = ("--deadman-seconds", "1", "--read-timeout", "1", "--detach-timeout", "2")
    with running_kstatd(tmp_path, plugins=DLS, args=args, env={"DLS_ORDER": "kslock"}) as kd:
        assert rpc(kd.socket, datalink.LINK_CREATE, {"name": "stub0"})[1] == 0
        summary = _kid(kd.socket, "summary")
        deleted: list[Any] = []

        def delete() -> None:
            try:
                arg = {"name": "stub0", "wait_reader": 60, "wait_summary": 60}
                deleted.append(rpc(kd.socket, datalink.LINK_DELETE, arg, timeout=30))
            except (OSError, EOFError) as exc:  # kstatd stopped under it
                deleted.append(exc)

        deleter = threading.Thread(target=delete, daemon=True)
        deleter.start()
        env = kstatd_env({"KSTAT_SOCKET": kd.socket})
        cmd = [sys.executable, "-m", "kstatpy.cli.kstat", "-p"]
        reader_a = subprocess.Popen([*cmd, "dls:1:link"], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not rpc(kd.socket, datalink.LINK_ENTERED, {"name": "stub0"})[2]["entered"]:
                assert time.monotonic() < deadline, "link's reader never entered ks_update"
                time.sleep(0.01)  # polling with a deadline
            reader_b = _kstat(kd.socket, "-p", "dls:1:summary")
            out_a, err_a = reader_a.communicate(timeout=120)
        finally:
            if reader_a.poll() is None:
                reader_a.kill()
                reader_a.communicate(timeout=30)
        for proc, out, err, name in ((reader_a, out_a, err_a, "link"), (reader_b, reader_b.stdout, reader_b.stderr, "summary")):
            assert proc.returncode == 3, (name, err)
            assert {line.split("\t")[0] for line in out.splitlines()} <= {f"dls:1:{name}:class", f"dls:1:{name}:crtime"}
            assert f"kstat: dls:1:{name}: not read: its ks_update has not returned" in err, err
        assert deleted == []  # still stuck: the deadman breaks nothing
    err = kd.stderr
    assert err.count("kstatd: deadman: ") == 1, err  # one report for the one stuck delete
    report = err[err.index("kstatd: deadman: ") :]
    assert "deadman: kstat_delete has waited " in report and f"for the hold of dls:1:summary (kid {summary};" in report
    assert "kstat_delete(dls:1:summary), waiting" in report and "datalink:delete+0x" in report
    assert "holding the hold of dls:1:summary" in report and "in mutex_enter(dls_stats_lock), held by thread 0x" in report
    assert "holding mutex dls_stats_lock" in report
    assert "blocked at datalink:link_update+0x" in report and "in mutex_enter(dls_lock), held by thread 0x" in report
    assert "  deadlock: thread 0x" in report and "waits for the hold of dls:1:summary while holding mutex dls_lock" in report
