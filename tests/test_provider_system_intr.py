"""Device interrupts as INTR kstats (issue 19: ``vmstat -i`` listed only the clock).

``irq:N:ACTIONS`` (class controller) per Linux IRQ line with a device, from
``sys/kernel/irq/N`` and ``proc/irq/N/spurious`` (providers/system/intr.py): on a fake
host for the mapping and the set following the host, on this host against
``/proc/interrupts`` read around our read, and through the real ``kstat`` command.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_provider_system import attach
from test_provider_system import read
from test_provider_system import write
from test_provider_system_tools import _full_fake

from kstatpy.errors import KstatError
from kstatpy.metadata import kstat_meta


def _line(root: Path, irq: int, actions: str, counts: str, unhandled: int | None = None) -> None:
    write(root, f"sys/kernel/irq/{irq}/actions", actions + "\n")
    write(root, f"sys/kernel/irq/{irq}/per_cpu_count", counts + "\n")
    if unhandled is not None:
        write(root, f"proc/irq/{irq}/spurious", f"count 17\nunhandled {unhandled}\nlast_unhandled 0 ms\n")


def _intrs(chain: Any) -> dict[tuple[int, str], Any]:
    return {(k.ks_instance, k.ks_name): k for k in chain.kstats() if k.ks_module == "irq"}


def _fields(chain: Any, irq: int, name: str) -> dict[str, int]:
    data = read(chain, "irq", irq, name)["data"]
    return dict(data) if isinstance(data, dict) else {n: v for n, _, v in data}


def test_each_device_line_is_an_intr_kstat_with_its_counts(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    _line(root, 24, "ACPI:Ged", "1,0")
    _line(root, 27, "", "0,0")  # no device on the line: no kstat
    _line(root, 38, "virtio2-input.0", "5,36248", unhandled=3)
    _line(root, 40, "ahci[0000:00:1f.2], a-device-name-well-over-thirty-bytes", "4294967295,2")
    chain, _ = attach(root)
    assert set(_intrs(chain)) == {(24, "ACPI_Ged"), (38, "virtio2-input.0"), (40, "ahci[0000_00_1f.2],_a-device-n")}
    assert all(k.ks_class == "controller" and k.ks_type == 2 for k in _intrs(chain).values())
    got = _fields(chain, 38, "virtio2-input.0")
    assert got == {"hard": 36253, "soft": 0, "watchdog": 0, "spurious": 3, "multiple_service": 0}
    assert _fields(chain, 40, "ahci[0000_00_1f.2],_a-device-n")["hard"] == 1  # a uint_t: 2**32 + 1 wraps
    none = {s for s, m in kstat_meta(_intrs(chain)[(38, "virtio2-input.0")]).items() if m.no_source}
    assert none == {"soft", "watchdog", "multiple_service"}
    none = {s for s, m in kstat_meta(_intrs(chain)[(24, "ACPI_Ged")]).items() if m.no_source}
    assert none == {"soft", "watchdog", "multiple_service", "spurious"}  # no proc/irq/24/spurious


def test_a_control_character_in_the_actions_is_not_published(tmp_path: Path) -> None:
    # A driver may name its line after a netdev, whose name the kernel lets hold an ESC.
    root = _full_fake(tmp_path / "root")
    _line(root, 41, "eth\x1b[2J0-rx\x7f", "1,0")
    chain, _ = attach(root)
    assert set(_intrs(chain)) == {(41, "eth_[2J0-rx_")}


def test_a_malformed_count_is_an_error_for_the_reader_not_a_zero(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    _line(root, 30, "eth0", "12,x")
    chain, _ = attach(root)
    with pytest.raises(KstatError) as info:
        read(chain, "irq", 30, "eth0")
    assert info.value.errno == errno.EIO


def test_the_set_follows_the_host(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    _line(root, 30, "", "0,0")
    _line(root, 31, "eth0", "1,1")
    chain, providers = attach(root)
    assert set(_intrs(chain)) == {(31, "eth0")}
    kcid = chain.chain_id
    providers.refresh(chain)
    assert chain.chain_id == kcid
    _line(root, 30, "nvme0q1", "7,0")  # a driver claimed the line after attach
    _line(root, 32, "eth1", "0,9")  # a new line (MSI allocated at probe)
    providers.refresh(chain)
    assert set(_intrs(chain)) == {(30, "nvme0q1"), (31, "eth0"), (32, "eth1")} and chain.chain_id > kcid
    assert _fields(chain, 32, "eth1")["hard"] == 9
    for rel in ("actions", "per_cpu_count"):
        os.remove(root / f"sys/kernel/irq/31/{rel}")
    os.rmdir(root / "sys/kernel/irq/31")  # the device left
    providers.refresh(chain)
    assert set(_intrs(chain)) == {(30, "nvme0q1"), (32, "eth1")}


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/irq"), reason="Linux 4.17 or newer has /sys/kernel/irq")
def test_this_hosts_lines_agree_with_proc_interrupts() -> None:
    def proc_interrupts() -> dict[int, int]:
        out = {}
        with open("/proc/interrupts") as f:
            ncpu = len(f.readline().split())
            for line in f:
                label, _, rest = line.partition(":")
                if label.strip().isdigit():
                    out[int(label)] = sum(int(c) for c in rest.split()[:ncpu]) & (2**32 - 1)
        return out

    chain, _ = attach()
    intrs = _intrs(chain)
    assert intrs, "no interrupt kstat on a host with /sys/kernel/irq"
    before = proc_interrupts()
    ours = {irq: _fields(chain, irq, name)["hard"] for irq, name in intrs}
    after = proc_interrupts()
    for irq, hard in ours.items():
        assert before[irq] <= hard <= after[irq], (irq, before[irq], hard, after[irq])
    busiest = max(ours, key=ours.__getitem__)
    assert ours[busiest] > 0 and busiest in before


@pytest.mark.skipif(not os.path.isdir("/sys/kernel/irq"), reason="Linux 4.17 or newer has /sys/kernel/irq")
def test_kstat_lists_the_controllers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT_", "KSTATPY_"))}
    env["KSTATPY_CACHE_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "-p", "-c", "controller", ":::hard"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert rows and all(r[0].startswith("irq:") and r[0].endswith(":hard") and r[1].isdigit() for r in rows)
    assert all(len(r[0].split(":")) == 4 for r in rows)  # no ':' inside a name
