"""In-memory stand-ins for the capture seams: a scripted nat table and a host."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.capture.executor import ExecutorError
from proxy.capture.rules import Family

EMPTY_NAT = (
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
)


@dataclass
class FakeHost:
    ipv6: bool = False
    net_admin: bool = True

    def has_net_admin(self) -> bool:
        return self.net_admin

    def has_global_ipv6(self) -> bool:
        return self.ipv6


@dataclass
class RecordingExecutor:
    """Answers save() from `tables` and records every restore; `fail_on` makes one fail."""

    tables: dict[Family, str] = field(
        default_factory=lambda: {"ipv4": EMPTY_NAT, "ipv6": EMPTY_NAT}
    )
    fail_on: Family | None = None
    fail_rollback: bool = False
    permission_denied: bool = False
    restores: list[tuple[Family, str, bool]] = field(default_factory=list)

    def save(self, family: Family) -> str:
        return self.tables[family]

    def restore(self, family: Family, batch: str, *, noflush: bool) -> None:
        if family == self.fail_on and noflush:
            raise ExecutorError(
                "iptables-restore: line 7 failed", permission=self.permission_denied
            )
        if self.fail_rollback and not noflush:
            raise ExecutorError("iptables-restore: cannot put the snapshot back")
        self.restores.append((family, batch, noflush))
