"""Flag parsing: Istio's spelling and defaults; every bad value exits 2 naming its flag."""

from __future__ import annotations

import io
import ipaddress

import pytest

from proxy.capture.cli import EXIT_USAGE, run
from proxy.capture.flags import CaptureFlags, parse_flags
from tests.capture.fakes import FakeHost, RecordingExecutor


def test_defaults_are_istios_injected_defaults() -> None:
    assert parse_flags([]) == CaptureFlags()
    flags = CaptureFlags()
    assert (flags.outbound_capture_port, flags.inbound_capture_port) == (15001, 15006)
    assert (flags.proxy_uids, flags.proxy_gids) == ((1337,), (1337,))
    assert flags.exclude_inbound_ports == (15090, 15021, 15020)
    assert flags.include_outbound_cidrs is None and flags.include_inbound_ports is None


def test_lists_and_wildcards() -> None:
    flags = parse_flags(
        ["-i", "10.0.0.0/8, fd00::/8", "-x", "10.1.2.3/16", "-b", "80,443", "-c", "eth1"]
    )
    assert flags.include_outbound_cidrs == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    # Host bits are dropped, as Go's net.ParseCIDR does for Istio.
    assert flags.exclude_outbound_cidrs == (ipaddress.ip_network("10.1.0.0/16"),)
    assert flags.include_inbound_ports == (80, 443)
    assert flags.exclude_interfaces == ("eth1",)
    assert flags.mentions_ipv6()
    assert parse_flags(["-b", ""]).include_inbound_ports == ()
    assert parse_flags(["-i", ""]).include_outbound_cidrs == ()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-p", "0"], "-p"),
        (["-p", "65536"], "-p"),
        (["-z", "http"], "-z"),
        (["-u", "root"], "-u"),
        (["-g", ""], "-g"),
        (["-m", "TPROXY"], "-m"),
        (["-m", "redirect-ish"], "-m"),
        (["-i", "10.0.0.0/33"], "-i"),
        (["-i", "example.com"], "-i"),
        (["-x", "300.1.1.1/32"], "-x"),
        (["-x", "*"], "-x"),
        (["-b", "80,http"], "-b"),
        (["-d", "-1"], "-d"),
        (["-q", "70000"], "-q"),
        (["-o", "1-100"], "-o"),
        (["-c", "a/b"], "-c"),
        (["-c", "much-too-long-interface"], "-c"),
        (["-p"], "-p"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--dry"], "--dry"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv: list[str], named: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    executor = RecordingExecutor()
    assert run(argv, executor, FakeHost(), out, err) == EXIT_USAGE
    assert named in err.getvalue()
    assert executor.restores == []
    assert out.getvalue() == ""


def test_help_exits_0() -> None:
    assert run(["--help"], RecordingExecutor(), FakeHost(), io.StringIO(), io.StringIO()) == 0
