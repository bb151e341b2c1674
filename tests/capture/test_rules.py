"""The rule builder against the contract's rule order, and its family handling."""

from __future__ import annotations

import ipaddress

from proxy.capture.flags import CaptureFlags, parse_flags
from proxy.capture.rules import build_rules

# contracts.md, "Capture": the default order, equivalent to istio-iptables' defaults.
CONTRACT_DEFAULT = [
    "-A PF_INBOUND -p tcp --dport 15008 -j RETURN",
    "-A PF_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    "-A PF_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    "-A PREROUTING -p tcp -j PF_INBOUND",
    "-A PF_INBOUND -p tcp --dport 15090 -j RETURN",
    "-A PF_INBOUND -p tcp --dport 15021 -j RETURN",
    "-A PF_INBOUND -p tcp --dport 15020 -j RETURN",
    "-A PF_INBOUND -p tcp -j PF_IN_REDIRECT",
    "-A OUTPUT -j PF_OUTPUT",
    "-A PF_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
    "-A PF_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337"
    " -j PF_IN_REDIRECT",
    "-A PF_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
    "-A PF_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    "-A PF_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337"
    " -j PF_IN_REDIRECT",
    "-A PF_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
    "-A PF_OUTPUT -m owner --gid-owner 1337 -j RETURN",
    "-A PF_OUTPUT -d 127.0.0.1/32 -j RETURN",
    "-A PF_OUTPUT -j PF_REDIRECT",
]


def test_default_is_the_contract_order() -> None:
    assert build_rules(CaptureFlags(), "ipv4") == CONTRACT_DEFAULT


def test_ipv6_uses_ipv6_loopback_and_passthrough() -> None:
    rules = build_rules(CaptureFlags(), "ipv6")
    assert "-A PF_OUTPUT -o lo -s ::6/128 -j RETURN" in rules
    assert "-A PF_OUTPUT -d ::1/128 -j RETURN" in rules
    assert not any("127.0.0" in rule for rule in rules)


def test_ranges_go_to_their_own_family_only() -> None:
    flags = parse_flags(["-i", "10.0.0.0/8,fd00::/8", "-x", "10.1.0.0/16,fd00:1::/32"])
    v4, v6 = build_rules(flags, "ipv4"), build_rules(flags, "ipv6")
    assert "-A PF_OUTPUT -d 10.0.0.0/8 -j PF_REDIRECT" in v4
    assert "-A PF_OUTPUT -d 10.1.0.0/16 -j RETURN" in v4
    assert not any("fd00" in rule for rule in v4)
    assert "-A PF_OUTPUT -d fd00::/8 -j PF_REDIRECT" in v6
    assert not any("10.0.0.0" in rule or "10.1.0.0" in rule for rule in v6)


def test_exclusions_precede_inclusions() -> None:
    flags = CaptureFlags(
        exclude_outbound_cidrs=(ipaddress.ip_network("10.96.0.0/12"),),
        include_outbound_ports=(443,),
    )
    rules = build_rules(flags, "ipv4")
    order = [
        rules.index("-A PF_OUTPUT -d 10.96.0.0/12 -j RETURN"),
        rules.index("-A PF_OUTPUT -p tcp --dport 443 -j PF_REDIRECT"),
        rules.index("-A PF_OUTPUT -j PF_REDIRECT"),
    ]
    assert order == sorted(order)


def test_every_rule_lives_in_our_chains_or_is_one_of_the_two_jumps() -> None:
    flags = parse_flags(["-c", "eth1", "-b", "80", "-x", "10.0.0.0/8", "-o", "22"])
    for rule in build_rules(flags, "ipv4"):
        chain = rule.split()[1]
        assert chain.startswith("PF_") or rule in (
            "-A PREROUTING -p tcp -j PF_INBOUND",
            "-A OUTPUT -j PF_OUTPUT",
        )
