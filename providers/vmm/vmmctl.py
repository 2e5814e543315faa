"""The ``vmmctl`` command: create, destroy, list, hold and run VMs through kstatd.

Talks to kstatd with :class:`kstatpy.client.SocketTransport` (raw ioctl round
trips, docs/VMM.md §5). Socket: ``--socket PATH`` (before or after the subcommand;
after wins), else ``$KSTAT_SOCKET``, else the per-user default. Exit status: 0 done,
1 the operation failed, 2 usage, 3 fatal: no daemon answers, or vmmctl's own output
cannot be written (kstatpy.cli.guard), 128 + the signal number when
SIGINT or SIGTERM interrupts a command (``hold`` excepted: interrupting it is how it
ends, with 0). Errors are one line on stderr:
``vmmctl: create: VM 'x' exists (EEXIST)``.
"""

from __future__ import annotations

import errno
import select
import signal
import sys
import time
from typing import Any
from typing import NoReturn

import click
from kstatpy_providers.vmm.state import USTATE_NAMES
from kstatpy_providers.vmm.state import VM_MAXCPU
from kstatpy_providers.vmm.state import VU_EMU_KERN
from kstatpy_providers.vmm.state import VU_EMU_USER
from kstatpy_providers.vmm.state import VU_IDLE
from kstatpy_providers.vmm.state import VU_RUN
from kstatpy_providers.vmm.state import VU_SCHED
from kstatpy_providers.vmm.vmm_dev import VMM_CLOSE
from kstatpy_providers.vmm.vmm_dev import VMM_CREATE_VM
from kstatpy_providers.vmm.vmm_dev import VMM_DESTROY_VM
from kstatpy_providers.vmm.vmm_dev import VMM_LIST
from kstatpy_providers.vmm.vmm_dev import VMM_OPEN
from kstatpy_providers.vmm.vmm_dev import VMM_VCPU_USTATE

from kstatpy import __version__
from kstatpy.cli.guard import GuardedGroup
from kstatpy.constants import KSTATPY_IOC_HELLO
from kstatpy.errors import KstatError
from kstatpy.errors import ServerUnavailableError
from kstatpy.protocol import errno_name
from kstatpy.transport import SocketTransport
from kstatpy.transport import request_timeout

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
#: What ``run`` drives each vCPU through, one step per tick (vm_run's loop).
RUN_CYCLE = (VU_EMU_KERN, VU_RUN, VU_EMU_KERN, VU_RUN, VU_SCHED, VU_RUN, VU_EMU_KERN, VU_IDLE)


class _Interrupted(Exception):
    pass


def _fail(op: str, message: str, status: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"vmmctl: {op}: {message}", err=True)
    sys.exit(status)


def _check_name(op: str, name: str) -> None:
    # A name from argv that is not UTF-8 (surrogate-escaped bytes) cannot go on the wire.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        _fail(op, f"VM name '{shown}' is not valid UTF-8", EXIT_USAGE)


class _Vmm:
    """One connection to kstatd, for one vmmctl operation."""

    def __init__(self, op: str, socket_path: str | None) -> None:
        self.op = op
        if socket_path == "":
            _fail(op, "--socket: the socket path must not be empty", EXIT_USAGE)
        meta = click.get_current_context().meta
        try:
            self.transport = SocketTransport(socket_path, meta.get("vmmctl.timeout"), meta.get("vmmctl.trust", ()))
        except KstatError as exc:  # nothing answers, or a directory another user controls
            _fail(op, exc.message, EXIT_NO_DAEMON)

    def call(self, cmd: int, arg: dict[str, Any] | None, what: str | None = None) -> dict[str, Any]:
        try:
            code, result = self.transport.round_trip(cmd, arg)
        except ServerUnavailableError as exc:
            _fail(self.op, exc.message, EXIT_NO_DAEMON)
        except KstatError as exc:  # the transport or protocol failed (EPROTO, ...): no answer from kstatd
            _fail(self.op, f"{exc.message} ({errno_name(exc.errno)})", EXIT_NO_DAEMON)
        if code:
            message = result.get("error") or "failed"
            if code == errno.EINVAL and "no provider claimed" in message:
                message = "the vmm provider is not loaded in kstatd"
            _fail(what or self.op, f"{message} ({errno_name(code)})")
        return result

    def close(self) -> None:
        self.transport.close()


# No envvar= on the options: $KSTAT_SOCKET must not outrank "vmmctl --socket P list";
# SocketTransport(None) falls back to it, then to the default path.
_SOCKET_HELP = (
    "kstatd's socket [default: $KSTAT_SOCKET, else /run/kstatpy/priv/kstat.sock for root, "
    "else $XDG_RUNTIME_DIR/kstatpy/kstat.sock, else /tmp/kstatpy-UID/kstat.sock]."
)


def _keep_timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # docs/PROTOCOL.md §9.7 step 4: finite, > 0, <= 86400, parsed as $KSTAT_TIMEOUT is
    # (transport.request_timeout: not float()'s "1_0" or non-ASCII digits).
    if value is None:
        return
    try:
        seconds = request_timeout(value)
    except KstatError:
        raise click.BadParameter(f"{value!r} is not a number of seconds > 0 and <= 86400") from None
    ctx.meta["vmmctl.timeout"] = seconds  # meta is shared by the group and its subcommand


def _keep_trust(ctx: click.Context, param: click.Parameter, value: tuple[int, ...]) -> None:
    if value:
        ctx.meta["vmmctl.trust"] = tuple(ctx.meta.get("vmmctl.trust", ())) + value


def _socket_option(f: Any) -> Any:
    """--socket (returned to the command), --timeout and --trust-uid (kept in ctx.meta)."""
    f = click.option(
        "--trust-uid", type=click.IntRange(0, 0xFFFFFFFE), multiple=True, expose_value=False, callback=_keep_trust,
        help="Accept a server run by this uid on the socket named (also $KSTAT_TRUST_UID=N[,N...]).",
    )(f)  # fmt: skip
    f = click.option(
        "--timeout", metavar="SECONDS", expose_value=False, callback=_keep_timeout,
        help="Give up on a request kstatd has not answered in SECONDS [default: $KSTAT_TIMEOUT, else 10].",
    )(f)  # fmt: skip
    return click.option("--socket", "socket_path", metavar="PATH", help=_SOCKET_HELP)(f)


def _socket(here: str | None) -> str | None:
    # The subcommand's --socket, else the one given before the subcommand.
    if here is not None:
        return here
    root = click.get_current_context().find_root()
    return root.params.get("socket_path")


class _Group(GuardedGroup):
    def invoke(self, ctx: click.Context) -> Any:
        # Ctrl-C outside a command's own handling: exit 130 quietly, not click's "Aborted!".
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            sys.exit(128 + signal.SIGINT)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # A reply framed right but not of the shapes vmmctl expects (broken or hostile server).
            _fail(
                ctx.invoked_subcommand or "vmmctl",
                f"malformed reply from kstatd: {type(exc).__name__}: {exc}",
                EXIT_NO_DAEMON,
            )


@click.group(cls=_Group, name="vmmctl", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vmmctl", message="%(prog)s (kstatpy %(version)s)")
@_socket_option
def main(socket_path: str | None) -> None:
    """vmmctl: drive the bhyve vmm model in kstatd (VM create, destroy, open, run)."""


@main.command()
@click.argument("name")
@_socket_option
def create(name: str, socket_path: str | None) -> None:
    """Create VM NAME (VMM_CREATE_VM); prints its minor."""
    _check_name("create", name)
    vmm = _Vmm("create", _socket(socket_path))
    result = vmm.call(VMM_CREATE_VM, {"name": name})
    click.echo(f"created VM '{name}' (minor {result['minor']})")


@main.command()
@click.argument("name")
@_socket_option
def destroy(name: str, socket_path: str | None) -> None:
    """Destroy VM NAME (VMM_DESTROY_VM); deferred to its last close while it is open."""
    _check_name("destroy", name)
    vmm = _Vmm("destroy", _socket(socket_path))
    vmm.call(VMM_DESTROY_VM, {"name": name})
    for vm in vmm.call(VMM_LIST, None)["vms"]:
        if vm["name"] == name and vm["destroying"]:
            click.echo(f"destroyed VM '{name}' (minor {vm['minor']} stays until its last close)")
            return
    click.echo(f"destroyed VM '{name}'")


@main.command("list")
@_socket_option
def list_(socket_path: str | None) -> None:
    """List VMs, those destroyed but still open included."""
    vms = _Vmm("list", _socket(socket_path)).call(VMM_LIST, None)["vms"]
    click.echo(f"{'MINOR':>5}  {'OPEN':>4}  {'STATE':<10}  NAME")
    for vm in sorted(vms, key=lambda v: v["minor"]):
        state = "destroying" if vm["destroying"] else "active"
        click.echo(f"{vm['minor']:>5}  {vm['open']:>4}  {state:<10}  {vm['name']}")


class _FiniteSeconds(click.FloatRange):
    """A finite number of seconds within [min, max]: nan and inf are usage errors (exit 2)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if rv != rv:  # nan passes FloatRange's comparisons
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return rv


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise _Interrupted(signum)


class _Stop:
    """A signal handler that asks to stop: the first signal is noted (requests in flight
    finish, so replies stay paired with requests), the second raises _Interrupted."""

    def __init__(self) -> None:
        self.signum = 0

    def handler(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise _Interrupted(signum)
        self.signum = signum


@main.command()
@click.argument("name")
@_socket_option
def hold(name: str, socket_path: str | None) -> None:
    """Open VM NAME and keep it open until SIGINT or SIGTERM (exit 0)."""
    _check_name("hold", name)
    vmm = _Vmm("hold", _socket(socket_path))
    fd = None
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Signals wait for every reply (an interrupt between request and reply would pair
        # VMM_CLOSE with that reply); one arriving here is taken once fd is known.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            fd = vmm.call(VMM_OPEN, {"name": name})["fd"]
            sock = vmm.transport._sock
            assert sock is not None  # open succeeded on it
            # kstatd closes connections idle past --idle-timeout (HELLO tells it): keep this
            # one, and so the handle, alive with a HELLO three times per period.
            limits = vmm.call(int(KSTATPY_IOC_HELLO), {"protocol": 1}).get("limits") or {}
            idle_ms = limits.get("idle_timeout_ms")
            keepalive = idle_ms / 3000 if isinstance(idle_ms, int) and idle_ms > 0 else None
            # Printed once no request is in flight: from here on, a signal closes cleanly.
            click.echo(f"holding VM '{name}' open (fd {fd}); interrupt to close", err=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while True:
            readable, _, _ = select.select([sock], [], [], keepalive)
            if readable:  # the daemon never talks first: this is EOF, it went away
                _fail("hold", "kstatd closed the connection", EXIT_NO_DAEMON)
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                vmm.call(int(KSTATPY_IOC_HELLO), {"protocol": 1})
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    except _Interrupted:
        pass
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if fd is not None:
        vmm.call(VMM_CLOSE, {"fd": fd})
        click.echo(f"closed VM '{name}'", err=True)
    vmm.close()


@main.command()
@click.argument("name")
@click.option("--seconds", type=_FiniteSeconds(0, 86400), default=1.0, show_default=True, help="How long to run.")
@click.option("--vcpus", type=click.IntRange(1, VM_MAXCPU), default=4, show_default=True, help="vCPUs to drive.")
@click.option("--tick", type=_FiniteSeconds(0.001, 60), default=0.01, show_default=True, help="Seconds per step.")
@_socket_option
def run(name: str, seconds: float, vcpus: int, tick: float, socket_path: str | None) -> None:
    """Open VM NAME and drive its vCPUs' micro-states for a while (VMM_VCPU_USTATE)."""
    """Open VM NAME and drive its vCPUs' micro-states for a while (VMM_VCPU_USTATE).

    SIGINT or SIGTERM stops it early: the vCPUs leave the guest and the VM is closed
    as at the end of a normal run, then vmmctl exits 128 + the signal, printing nothing.
    A second signal exits at once (closing the connection closes the VM in kstatd).
    """
    _check_name("run", name)
    stop = _Stop()
    old = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    changes = 0
    step = 0
    try:
        vmm = _Vmm("run", _socket(socket_path))
        fd = vmm.call(VMM_OPEN, {"name": name})["fd"]
        deadline = time.monotonic() + seconds
        while not stop.signum and time.monotonic() < deadline:
            for vcpu in range(vcpus):
                state = RUN_CYCLE[(step + vcpu) % len(RUN_CYCLE)]
                vmm.call(VMM_VCPU_USTATE, {"fd": fd, "vcpu": vcpu, "state": state})
                changes += 1
            step += 1
            time.sleep(max(0.0, min(tick, deadline - time.monotonic())))
        for vcpu in range(vcpus):  # vm_run returns to userspace: the last interval completes
            vmm.call(VMM_VCPU_USTATE, {"fd": fd, "vcpu": vcpu, "state": VU_EMU_USER})
        vmm.call(VMM_CLOSE, {"fd": fd})
        vmm.close()
    except _Interrupted:
        pass  # the second signal
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if stop.signum:
        sys.exit(128 + stop.signum)
    states = ", ".join(USTATE_NAMES[s] for s in sorted(set(RUN_CYCLE)))
    click.echo(f"ran VM '{name}': {vcpus} vCPUs, {step} steps, {changes + vcpus} state changes ({states})")


if __name__ == "__main__":
    main()
