"""Network namespaces for tests: create, enter per thread, and always tear down."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PREFIX = "pf-"
_NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# Every namespace this process made; atexit removes what a fixture could not.
_created: set[str] = set()

ROOT_ONLY = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, iptables)"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("ip", "iptables-restore", "setpriv")),
        reason="needs iproute2, iptables and setpriv (apt-get install -y iproute2 iptables)",
    ),
]


def run(*command: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a short command; every harness command is bounded by the timeout."""
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} -> {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _owner_pid(name: str) -> int | None:
    # Names are pf-<pid>-<random>: the pid tells whether the run that made it is alive.
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete(name: str) -> None:
    """Kill whatever still runs in the namespace, then remove it (idempotent)."""
    if not (_NETNS_DIR / name).exists():
        _created.discard(name)
        return
    pids = [int(pid) for pid in run("ip", "netns", "pids", name, check=False).split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run("ip", "netns", "delete", name, check=False)
    _created.discard(name)


def delete_stale() -> None:
    """Remove pf-* namespaces left by earlier runs that crashed (their creator is gone)."""
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        pid = _owner_pid(entry.name)
        if entry.name.startswith(PREFIX) and (pid is None or not alive(pid)):
            delete(entry.name)


def create() -> str:
    """A new namespace with loopback up; its name is unique to this run."""
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    _created.add(name)
    run("ip", "netns", "add", name)
    run("ip", "-n", name, "link", "set", "lo", "up")
    return name


@atexit.register
def delete_all() -> None:
    for name in sorted(_created):
        delete(name)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into the namespace; sockets made inside stay there for good."""
    with open("/proc/thread-self/ns/net") as home, open(_NETNS_DIR / name) as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` every 20 ms until it is true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} not within {timeout}s")
