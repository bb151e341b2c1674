"""The only code that runs processes: iptables-save and iptables-restore, per IP family."""

from __future__ import annotations

import subprocess
from typing import Protocol

from proxy.capture.rules import Family

_SAVE = {"ipv4": "iptables-save", "ipv6": "ip6tables-save"}
_RESTORE = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}
# iptables-restore has no timeout of its own; a wedged xtables lock must not hang a pod.
_TIMEOUT_SECONDS = 30.0


class ExecutorError(Exception):
    """An iptables tool failed; `permission` is set when it failed for lack of privilege."""

    def __init__(self, message: str, *, permission: bool = False) -> None:
        super().__init__(message)
        self.permission = permission


class NatExecutor(Protocol):
    """Reads and atomically rewrites the nat table of one IP family."""

    def save(self, family: Family) -> str: ...

    def restore(self, family: Family, batch: str, *, noflush: bool) -> None: ...


def _run(command: list[str], stdin: str | None) -> str:
    try:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise ExecutorError(f"{command[0]} not found (install the iptables package)") from None
    except subprocess.TimeoutExpired:
        raise ExecutorError(f"{command[0]} did not finish in {_TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit status {done.returncode}"
        lowered = detail.lower()
        permission = "permission denied" in lowered or "operation not permitted" in lowered
        raise ExecutorError(f"{' '.join(command)}: {detail}", permission=permission)
    return done.stdout


class SubprocessExecutor:
    """NatExecutor over the system's iptables tools (nft or legacy, whichever is the default)."""

    def save(self, family: Family) -> str:
        return _run([_SAVE[family], "-t", "nat"], None)

    def restore(self, family: Family, batch: str, *, noflush: bool) -> None:
        # Without --noflush only the tables named in the batch are replaced: that is how a
        # saved snapshot of the nat table is put back whole.
        command = [_RESTORE[family], "--noflush"] if noflush else [_RESTORE[family]]
        _run(command, batch)
