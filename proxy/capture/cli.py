"""`pilotfish iptables`: parse flags, then print, apply or clean up the capture rules."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from proxy.capture.apply import RollbackError, apply_rules, cleanup_rules
from proxy.capture.batch import cleanup_batch, fresh_batch, parse_nat_save
from proxy.capture.executor import ExecutorError, NatExecutor, SubprocessExecutor
from proxy.capture.flags import CaptureFlags, UsageError, parse_flags
from proxy.capture.host import Host, LinuxHost
from proxy.capture.rules import Family, build_rules

PROG = "pilotfish iptables"
_RESTORE_COMMAND = {"ipv4": "iptables-restore --noflush", "ipv6": "ip6tables-restore --noflush"}
# Exit codes: 2 is the usage convention (argparse, Istio's cobra); 1 is "could not apply".
EXIT_USAGE = 2
EXIT_FAILED = 1


def families_for(flags: CaptureFlags, host: Host) -> tuple[Family, ...]:
    """IPv4 always; IPv6 as well when the pod has a global IPv6 address or a flag names one."""
    if flags.mentions_ipv6() or host.has_global_ipv6():
        return ("ipv4", "ipv6")
    return ("ipv4",)


def plan_for(flags: CaptureFlags, host: Host) -> dict[Family, list[str]]:
    return {family: build_rules(flags, family) for family in families_for(flags, host)}


def dry_run_text(batches: dict[Family, str]) -> str:
    """Each family's batch under a comment naming the command that would read it."""
    return "".join(f"# {_RESTORE_COMMAND[family]}\n{batch}" for family, batch in batches.items())


def dry_run_batches(flags: CaptureFlags, host: Host) -> dict[Family, str]:
    """The batches for a table holding nothing of ours (for --cleanup: one holding all of it)."""
    batches: dict[Family, str] = {}
    for family, rules in plan_for(flags, host).items():
        batch = fresh_batch(rules)
        if flags.cleanup:
            batch = cleanup_batch(parse_nat_save(batch)) or ""
        batches[family] = batch
    return batches


def _no_privilege_message() -> str:
    return (
        f"{PROG}: changing the nat table needs root or CAP_NET_ADMIN, and this process "
        f"(uid {os.geteuid()}) has neither; run it as root (the init container needs "
        "NET_ADMIN and NET_RAW), or pass --dry-run to only print the rules"
    )


def run(argv: list[str], executor: NatExecutor, host: Host, out: TextIO, err: TextIO) -> int:
    """main() with its dependencies passed in, so tests can drive it without a kernel."""
    try:
        flags = parse_flags(argv)
    except UsageError as error:
        print(f"{PROG}: {error}\nTry '{PROG} --help'.", file=err)
        return EXIT_USAGE
    except SystemExit as stop:  # --help prints and exits 0 inside argparse
        return stop.code if isinstance(stop.code, int) else 0
    if flags.dry_run:
        out.write(dry_run_text(dry_run_batches(flags, host)))
        return 0
    if not host.has_net_admin():
        print(_no_privilege_message(), file=err)
        return EXIT_FAILED
    try:
        if flags.cleanup:
            cleaned = cleanup_rules(executor, ("ipv4", "ipv6"))
            done = ", ".join(cleaned) or "nothing to remove"
            print(f"{PROG}: cleanup done ({done})", file=out)
        else:
            plan = plan_for(flags, host)
            apply_rules(executor, plan)
            count = sum(len(rules) for rules in plan.values())
            print(f"{PROG}: applied {count} nat rules ({', '.join(plan)})", file=out)
    except RollbackError as error:
        print(f"{PROG}: failed, and the nat table may be half-changed: {error}", file=err)
        return EXIT_FAILED
    except ExecutorError as error:
        if error.permission:
            print(_no_privilege_message(), file=err)
        else:
            print(f"{PROG}: failed, nat table left as it was: {error}", file=err)
        return EXIT_FAILED
    return 0


def main(argv: list[str]) -> int:
    return run(argv, SubprocessExecutor(), LinuxHost(), sys.stdout, sys.stderr)
