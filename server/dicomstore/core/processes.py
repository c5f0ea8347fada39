"""Who a process is, and whether one of this machine is still running.

An owner id names one process's life: `HOST/MACHINE:PID:RANDOM`, where MACHINE is the kernel's
boot id and the process's pid namespace (so that two containers with one host name, or a reboot,
never look alike). Its operation leases and liveness lease carry it. A process that stopped
renewing its liveness lease is dead once the lease expires, on any machine; on its own machine
it is known dead at once when its pid is gone (`gone_here`). A pid reused by another process
only delays that until the lease expires.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


@functools.cache
def _machine() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""  # no way to tell this machine's processes: only lease expiry counts
    return f"{socket.gethostname()}/{boot}.{namespace}"


def new_owner() -> str:
    """An owner id unique to this process's life."""
    return f"{_machine() or socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def pid_running(pid: int) -> bool:
    """True when a process of this pid runs here (perhaps another one that reused it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def gone_here(owner: str) -> bool:
    """True when `owner` was a process of this machine whose pid is no longer running."""
    machine, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if not _machine() or machine != _machine() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return not pid_running(pid)
