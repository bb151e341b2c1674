"""Ports for servers a test starts in another process.

A test that asks the kernel for port 0, closes the probe and hands the number to a
subprocess races every client connection made meanwhile: those take their source ports
from the same ephemeral range, and one did take a proxy's listen port in CI
(`Address already in use`). The ports handed out here lie just below the ephemeral
range, where no connect() ever lands, and one process never hands out the same port
twice; a port something else is bound to is passed over.
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

_SPAN = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HIGH = _ephemeral_low()
_LOW = max(1024, _HIGH - _SPAN)
# Start where the process id points, so two pytest runs at once rarely probe the same ports.
_next = itertools.count(os.getpid())


def free_port() -> int:
    """A loopback TCP port that nothing is bound to, outside the ephemeral range."""
    for _ in range(_HIGH - _LOW):
        port = _LOW + next(_next) % (_HIGH - _LOW)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH - 1}")
