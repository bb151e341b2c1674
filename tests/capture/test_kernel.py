"""The capture command against a real nat table, in a throwaway network namespace."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.capture.batch import parse_nat_save
from proxy.capture.flags import CaptureFlags
from proxy.capture.rules import build_rules
from tests.e2e import netns
from tests.e2e.pods import Pod, make_pod

pytestmark = netns.ROOT_ONLY

# Someone else's rules in the same table: they must survive apply and cleanup untouched.
FOREIGN = """*nat
:KEEP_ME - [0:0]
-A PREROUTING -d 198.19.255.1/32 -j RETURN
-A OUTPUT -d 198.19.255.2/32 -j KEEP_ME
-A KEEP_ME -j RETURN
COMMIT
"""


@pytest.fixture
def pod() -> Iterator[Pod]:
    netns.delete_stale()
    bare = make_pod()
    try:
        netns.run("ip", "netns", "exec", bare.name, "iptables-restore", "--noflush", stdin=FOREIGN)
        yield bare
    finally:
        bare.destroy()


def ours(saved: str) -> list[str]:
    return [rule for rule in parse_nat_save(saved).rules if "PF_" in rule]


def test_apply_is_idempotent_and_cleanup_restores_exactly(pod: Pod) -> None:
    before = pod.nat()
    first = pod.capture()
    assert first.returncode == 0, first.stderr
    once = pod.nat()
    assert len(ours(once)) == len(build_rules(CaptureFlags(), "ipv4"))
    again = pod.capture()
    assert again.returncode == 0, again.stderr
    assert pod.nat() == once, "a second apply must leave exactly one copy"
    done = pod.capture("--cleanup")
    assert done.returncode == 0, done.stderr
    assert pod.nat() == before
    # Cleanup on a clean table is a no-op, not an error.
    assert pod.capture("--cleanup").returncode == 0
    assert pod.nat() == before


def test_reapply_with_other_flags_replaces_the_rules(pod: Pod) -> None:
    before = pod.nat()
    assert pod.capture("-x", "198.18.9.0/24", "-o", "5432").returncode == 0
    assert pod.capture("-b", "").returncode == 0
    rules = ours(pod.nat())
    assert not any("198.18.9.0" in rule or "5432" in rule for rule in rules)
    assert not any(rule.startswith("-A PREROUTING") for rule in rules)
    assert pod.capture("--cleanup").returncode == 0
    assert pod.nat() == before


def _fake_tool(directory: Path, name: str, script: str) -> None:
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def test_failed_batch_leaves_the_table_as_it_was(pod: Pod, tmp_path: Path) -> None:
    # The real iptables-restore, fed our batch with one bad rule before COMMIT: the kernel
    # must take none of it.
    real = netns.run("sh", "-c", "command -v iptables-restore").strip()
    _fake_tool(
        tmp_path,
        "iptables-restore",
        f"sed 's/^COMMIT$/-A PF_OUTPUT -m no_such_match -j RETURN\\nCOMMIT/' | {real} \"$@\"\n",
    )
    before = pod.nat()
    done = pod.capture(path_prefix=str(tmp_path))
    assert done.returncode == 1
    assert "nat table left as it was" in done.stderr
    assert pod.nat() == before


def test_ipv6_failure_rolls_back_ipv4(pod: Pod, tmp_path: Path) -> None:
    _fake_tool(
        tmp_path, "ip6tables-restore", "cat >/dev/null; echo 'ip6tables: boom' >&2; exit 4\n"
    )
    before, before6 = pod.nat(), pod.nat("ipv6")
    done = pod.capture("-x", "2001:db8::/32", path_prefix=str(tmp_path))
    assert done.returncode == 1, done.stdout
    assert "boom" in done.stderr
    assert pod.nat() == before
    assert pod.nat("ipv6") == before6


def test_ipv6_rules_when_the_pod_has_an_ipv6_address(pod: Pod) -> None:
    before6 = pod.nat("ipv6")
    assert pod.capture().returncode == 0
    assert ours(pod.nat("ipv6")) == [], "no IPv6 address and no IPv6 range: no ip6tables rules"
    # A documentation-prefix address on a veth end: no traffic, only detection.
    netns.run("ip", "-n", pod.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    netns.run("ip", "-n", pod.name, "link", "set", "eth0", "up")
    netns.run("ip", "-n", pod.name, "addr", "add", "2001:db8::5/64", "dev", "eth0", "nodad")
    assert pod.capture().returncode == 0
    rules6 = ours(pod.nat("ipv6"))
    assert len(rules6) == len(build_rules(CaptureFlags(), "ipv6"))
    assert any("::6/128" in rule for rule in rules6)
    assert pod.capture("--cleanup").returncode == 0
    assert pod.nat("ipv6") == before6


def test_without_privilege_it_says_so(pod: Pod) -> None:
    before = pod.nat()
    done = pod.capture(as_proxy=True)
    assert done.returncode == 1
    assert "needs root or CAP_NET_ADMIN" in done.stderr
    assert "Traceback" not in done.stderr
    assert pod.nat() == before
    # Printing the rules needs no privilege at all.
    dry = pod.capture("--dry-run", as_proxy=True)
    assert dry.returncode == 0 and "-A PF_OUTPUT -j PF_REDIRECT" in dry.stdout


def test_bad_flag_exits_2_from_the_real_entry_point(pod: Pod) -> None:
    done = pod.capture("-i", "10.0.0.0/40")
    assert done.returncode == 2
    assert "-i" in done.stderr and "Traceback" not in done.stderr
    assert os.geteuid() == 0


def test_dry_run_output_is_iptables_restore_input(pod: Pod) -> None:
    before = pod.nat()
    printed = pod.capture("--dry-run", "-x", "198.18.9.0/24")
    assert printed.returncode == 0
    netns.run(
        "ip", "netns", "exec", pod.name, "iptables-restore", "--noflush", stdin=printed.stdout
    )
    assert len(ours(pod.nat())) == len(build_rules(CaptureFlags(), "ipv4")) + 1
    undo = pod.capture("--dry-run", "--cleanup")
    netns.run("ip", "netns", "exec", pod.name, "iptables-restore", "--noflush", stdin=undo.stdout)
    assert pod.nat() == before


def test_the_legacy_backend_behaves_the_same(pod: Pod, tmp_path: Path) -> None:
    # Debian's default is nf_tables; images that pick iptables-legacy must work alike.
    for tool in ("iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"):
        legacy = netns.run("sh", "-c", f"command -v {tool.replace('tables-', 'tables-legacy-')}")
        (tmp_path / tool).symlink_to(legacy.strip())

    def legacy_nat() -> str:
        saved = pod.exec(str(tmp_path / "iptables-save"), "-t", "nat")
        return "".join(line + "\n" for line in saved.splitlines() if not line.startswith("#"))

    before = legacy_nat()
    for _ in range(2):
        done = pod.capture(path_prefix=str(tmp_path))
        assert done.returncode == 0, done.stderr
    assert len(ours(legacy_nat())) == len(build_rules(CaptureFlags(), "ipv4"))
    assert pod.capture("--cleanup", path_prefix=str(tmp_path)).returncode == 0
    assert legacy_nat() == before
