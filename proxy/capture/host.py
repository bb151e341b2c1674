"""What the capture command reads about the pod it runs in: privileges and IPv6 addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

# Bit 12 of the capability sets is CAP_NET_ADMIN (linux/capability.h).
_CAP_NET_ADMIN = 12
# /proc/net/if_inet6 scope column: 00 is global scope (20 link, 10 host, 40 site).
_SCOPE_GLOBAL = 0x00


class Host(Protocol):
    """The seam the CLI reads the pod through; tests pass a fake."""

    def has_net_admin(self) -> bool: ...

    def has_global_ipv6(self) -> bool: ...


def has_net_admin_in(proc_status: str) -> bool:
    """True when the CapEff line of /proc/self/status includes CAP_NET_ADMIN."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
    return False


def has_global_ipv6_in(if_inet6: str) -> bool:
    """True when /proc/net/if_inet6 lists a global-scope address on an interface other than lo."""
    for line in if_inet6.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] != "lo" and int(fields[3], 16) == _SCOPE_GLOBAL:
            return True
    return False


class LinuxHost:
    """Reads /proc of the current process and network namespace."""

    def has_net_admin(self) -> bool:
        return has_net_admin_in(Path("/proc/self/status").read_text())

    def has_global_ipv6(self) -> bool:
        try:
            return has_global_ipv6_in(Path("/proc/net/if_inet6").read_text())
        except FileNotFoundError:
            # No IPv6 in this kernel or namespace at all.
            return False
