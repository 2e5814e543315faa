"""Issue 13, fault 4: VM handles follow the create/destroy rule (EPERM unprivileged).

On illumos /dev/vmm/NAME is root-only. Through a real kstatd: nobody (global zone,
unprivileged) and a zone socket get EPERM for VMM_OPEN and for every ioctl through a
handle, and cannot keep a VM that root destroyed in "destroying".
"""

from __future__ import annotations

import errno
import json

import kstatpy_providers.vmm.ioctl as ioc
import pytest
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from nobody import run_as_nobody
from nobody import shared_dir

VMM = ("kstatpy_providers.vmm.provider",)

PROBE = """
import json
from kstatd_fixture import rpc  # nobody's copy (tests/nobody.py)
path = {path!r}
out = [rpc(path, {open:#x}, {{"name": "web"}})[1],
       rpc(path, {ustate:#x}, {{"fd": 1, "vcpu": 0, "state": 1}})[1],
       rpc(path, {close:#x}, {{"fd": 1}})[1],
       rpc(path, {create:#x}, {{"name": "mine"}})[1]]
print(json.dumps(out))
"""


def probe(path: str) -> list[int]:
    code = PROBE.format(path=path, open=ioc.VMM_OPEN, ustate=ioc.VMM_VCPU_USTATE,
                        close=ioc.VMM_CLOSE, create=ioc.VMM_CREATE_VM)  # fmt: skip
    r = run_as_nobody(["-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_nobody_cannot_open_or_act_on_roots_vm():
    with shared_dir() as d, running_kstatd(d, plugins=VMM) as kd:
        assert rpc(kd.socket, ioc.VMM_CREATE_VM, {"name": "web"})[1] == 0
        assert probe(kd.socket) == [errno.EPERM] * 4
        # Nothing of nobody's holds the VM: root's destroy completes at once.
        assert rpc(kd.socket, ioc.VMM_DESTROY_VM, {"name": "web"})[1] == 0
        assert rpc(kd.socket, ioc.VMM_LIST)[2]["vms"] == []


def test_a_zone_socket_gets_eperm_for_handles(tmp_path):
    zsock = str(tmp_path / "z1.sock")
    with running_kstatd(tmp_path, plugins=VMM, zones=[("z1", zsock)]) as kd:
        assert rpc(kd.socket, ioc.VMM_CREATE_VM, {"name": "web"})[1] == 0
        for cmd, arg in [
            (ioc.VMM_OPEN, {"name": "web"}),
            (ioc.VMM_OPEN, None),  # privilege is checked before the argument
            (ioc.VMM_VCPU_USTATE, {"fd": 1, "vcpu": 0, "state": 1}),
            (ioc.VMM_CLOSE, {"fd": 1}),
        ]:
            _seq, code, result = rpc(zsock, cmd, arg)
            assert code == errno.EPERM, (hex(cmd), result)
            assert "privilege" in result["error"]
        assert rpc(zsock, ioc.VMM_LIST)[1] == 0  # listing stays open (the zone sees its own VMs)


@pytest.mark.parametrize(("cmd", "what"), [("hold", "opening a VM"), ("create", "creating a VM")])
def test_vmmctl_as_nobody_is_refused_with_one_line_saying_what_grants_it(cmd, what):
    import pwd

    uid = pwd.getpwnam("nobody").pw_uid
    with shared_dir() as d, running_kstatd(d, plugins=VMM) as kd:
        assert rpc(kd.socket, ioc.VMM_CREATE_VM, {"name": "web"})[1] == 0
        r = run_as_nobody(["-m", "kstatpy_providers.vmm.vmmctl", cmd, "web2" if cmd == "create" else "web",
                           "--socket", kd.socket], capture_output=True, timeout=60)  # fmt: skip
        assert r.returncode == 1
        assert r.stderr.decode() == (
            f"vmmctl: {cmd}: {what} needs privilege: start kstatd with --allow-write {uid}"
            " (or --allow-write @GROUP) to grant it (EPERM)\n"
        )


@pytest.mark.parametrize("cmd", ["open", "vcpu_ustate", "close"])
def test_in_process_unprivileged_handle_ioctls_are_eperm(cmd):
    from kstatpy.chain import Chain
    from kstatpy.ioctl import Conn
    from kstatpy.ioctl import Cred
    from kstatpy.ioctl import IoctlHandler
    from kstatpy.plugins import load_providers

    providers = load_providers(modules=["kstatpy_providers.vmm.provider"], autoload=False)
    chain = Chain()
    providers.attach(chain)
    try:
        handler = IoctlHandler(chain, providers)
        root = Conn(Cred(uid=0, privileged=True))
        user = Conn(Cred(uid=1000, gid=1000, privileged=False))
        assert handler.dispatch(root, ioc.VMM_CREATE_VM, {"name": "web"})[0] == 0
        fd = handler.dispatch(root, ioc.VMM_OPEN, {"name": "web"})[1]["fd"]
        number = {"open": ioc.VMM_OPEN, "vcpu_ustate": ioc.VMM_VCPU_USTATE, "close": ioc.VMM_CLOSE}[cmd]
        arg = {"name": "web", "fd": fd, "vcpu": 0, "state": 1}
        assert handler.dispatch(user, number, arg)[0] == errno.EPERM
        assert handler.dispatch(root, ioc.VMM_CLOSE, {"fd": fd})[0] == 0
    finally:
        providers.detach(chain)
