"""A thread's time slice: Linux's custom slices of the EEVDF scheduler (Linux 6.12 and later).

kstatd asks for a short slice for the threads that serve its privileged sockets (the
privileged accept thread and each privileged session's thread), so that when root's
request wakes one of them on a CPU busy with other users' processes, the kernel runs it
at once rather than at the end of the running task's slice (the scheduler's
``PREEMPT_SHORT``). A slice changes *when* a thread runs, not *how much*: the thread's
weight, and so its share of the CPU, stays what its nice value gives. Issue 21; figures
in RELIABILITY.md ("connection churn").

The request is ``sched_setattr(2)`` with policy ``SCHED_OTHER``, the thread's own nice
value and ``sched_runtime`` = the slice in nanoseconds (the kernel keeps it within
0.1 to 100 ms). Kernels before 6.12 accept the call and ignore the runtime; this module
tells by reading it back with ``sched_getattr(2)``. No privilege is needed.

Only :func:`request_slice` is public. It never raises: a platform without the system
calls, a seccomp filter, or an old kernel each give ``False`` and a reason.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

#: (sched_setattr, sched_getattr) system call numbers, by machine (Linux's syscall tables).
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275), "arm64": (274, 275)}

#: struct sched_attr up to sched_period (SCHED_ATTR_SIZE_VER0, 48 bytes): size, policy,
#: flags, nice, priority, runtime, deadline, period.
_ATTR = struct.Struct("=IIQiIQQQ")
SCHED_OTHER = 0

#: The kernel's bounds of a custom slice (ns); kstatd's ``--priv-slice`` is within them.
MIN_SLICE_NS = 100_000
MAX_SLICE_NS = 100_000_000


_libc: ctypes.CDLL | None = None


def _syscall(number: int, *args: object) -> int:
    """0, or the errno of a failed system call."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.syscall(number, *args) != 0:
        return ctypes.get_errno() or 1
    return 0


def request_slice(ns: int) -> tuple[bool, str]:
    """Ask for a slice of ``ns`` nanoseconds for the calling thread (the kernel keeps it
    within :data:`MIN_SLICE_NS` and :data:`MAX_SLICE_NS`).

    :returns: ``(True, "")`` when the kernel now gives the thread that slice (read back);
        ``(False, why)`` otherwise, ``why`` one line for kstatd's log (the thread's
        scheduling is then unchanged).
    """
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return False, f"no sched_setattr(2) number known for {platform.machine()}"
    set_nr, get_nr = numbers
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: this thread's nice value
        attr = ctypes.create_string_buffer(_ATTR.pack(_ATTR.size, SCHED_OTHER, 0, nice, 0, ns, 0, 0), _ATTR.size)
        err = _syscall(set_nr, 0, attr, 0)
        if err:
            return False, f"sched_setattr: {os.strerror(err)}"
        back = ctypes.create_string_buffer(_ATTR.size)
        err = _syscall(get_nr, 0, back, _ATTR.size, 0)
        if err:
            return False, f"sched_getattr: {os.strerror(err)}"
    except (OSError, AttributeError) as exc:  # no libc.syscall (not glibc/musl), or getpriority failed
        return False, str(exc)
    runtime = _ATTR.unpack(back.raw)[5]
    if runtime != min(max(ns, MIN_SLICE_NS), MAX_SLICE_NS):  # before 6.12: 0 (the runtime is not kept)
        return False, f"the kernel keeps no custom time slice (Linux before 6.12?): {runtime} ns read back"
    return True, ""
