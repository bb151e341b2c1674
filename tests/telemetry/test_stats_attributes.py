"""The Stats attributes in proxy/telemetry/stats.py are exactly DECLARED, read in its order."""

from __future__ import annotations

import pytest

from proxy.telemetry import stats


def test_every_declared_stat_is_an_attribute_and_nothing_else() -> None:
    counters = stats.new_stats()
    attributes = {
        name
        for name in dir(counters)
        if not name.startswith("_") and not callable(getattr(counters, name))
    }
    assert attributes == set(stats.NAMES)


def test_values_follow_declared_order() -> None:
    counters = stats.new_stats()
    for index, name in enumerate(stats.NAMES):
        setattr(counters, name, index + 1)
    assert counters.values() == list(range(1, len(stats.NAMES) + 1))
    assert stats.named(counters.values())["http2_flood_close"] == len(stats.NAMES)


def test_a_new_worker_counts_from_zero() -> None:
    first, second = stats.new_stats(), stats.new_stats()
    first.upstream_rq_total += 3
    assert second.upstream_rq_total == 0
    assert first.values()[stats.NAMES.index("upstream_rq_total")] == 3


@pytest.mark.parametrize(
    ("status", "counted"),
    [(100, "1xx"), (101, "1xx"), (200, "2xx"), (304, "3xx"), (404, "4xx"), (499, "4xx"),
     (500, "5xx"), (599, "5xx")],
)  # fmt: skip
def test_status_classes(status: int, counted: str) -> None:
    counters = stats.new_stats()
    counters.count_status(status)
    named = stats.named(counters.values())
    assert named[f"downstream_rq_{counted}"] == 1
    assert sum(named[f"downstream_rq_{kind}xx"] for kind in "12345") == 1
