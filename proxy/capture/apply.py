"""Apply and clean up capture for each IP family, all-or-nothing across the families."""

from __future__ import annotations

from proxy.capture.batch import apply_batch, cleanup_batch, parse_nat_save
from proxy.capture.executor import ExecutorError, NatExecutor
from proxy.capture.rules import Family


class RollbackError(ExecutorError):
    """Applying failed and putting an already-applied family back failed as well."""


def _put_back(executor: NatExecutor, family: Family, snapshot: str) -> None:
    state = parse_nat_save(snapshot)
    if state.has_table():
        executor.restore(family, snapshot, noflush=False)
    else:
        # The table did not exist before: removing what we added is the way back.
        batch = cleanup_batch(parse_nat_save(executor.save(family)))
        if batch is not None:
            executor.restore(family, batch, noflush=True)


def apply_rules(executor: NatExecutor, plan: dict[Family, list[str]]) -> None:
    """Install every family's rules, or leave every nat table as it was and raise.

    Each iptables-restore batch is atomic on its own; if a later family fails, the
    families already done are put back from the snapshot taken just before.
    """
    done: list[tuple[Family, str]] = []
    for family, rules in plan.items():
        snapshot = executor.save(family)
        try:
            executor.restore(family, apply_batch(rules, parse_nat_save(snapshot)), noflush=True)
        except ExecutorError as error:
            for applied_family, applied_snapshot in reversed(done):
                try:
                    _put_back(executor, applied_family, applied_snapshot)
                except ExecutorError as rollback_error:
                    raise RollbackError(
                        f"{error}; putting the {applied_family} nat table back failed too: "
                        f"{rollback_error}"
                    ) from error
            raise
        done.append((family, snapshot))


def cleanup_rules(executor: NatExecutor, families: tuple[Family, ...]) -> list[Family]:
    """Remove our jumps and chains; returns the families that had something to remove."""
    cleaned: list[Family] = []
    for family in families:
        try:
            saved = executor.save(family)
        except ExecutorError as error:
            # A kernel without IPv6 cannot have our IPv6 rules: nothing to remove there.
            if family == "ipv6" and not error.permission:
                continue
            raise
        batch = cleanup_batch(parse_nat_save(saved))
        if batch is not None:
            executor.restore(family, batch, noflush=True)
            cleaned.append(family)
    return cleaned
