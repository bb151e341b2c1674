"""The literal stat indices in proxy/telemetry/stats.py match the order of DECLARED."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.telemetry import stats

_CONSTANT = re.compile(r"^([A-Z0-9_]+): Final = (\d+)  # ([a-z0-9_]+)", re.MULTILINE)


def test_every_index_names_its_stat() -> None:
    source = Path(stats.__file__).read_text()
    found = _CONSTANT.findall(source)
    assert len(found) >= 40  # every index constant is written this way
    for constant, value, name in found:
        assert stats.INDEX[name] == int(value) == getattr(stats, constant), constant


def test_status_classes_follow_1xx() -> None:
    for offset, name in enumerate(("1xx", "2xx", "3xx", "4xx", "5xx")):
        assert stats.NAMES[stats.DOWNSTREAM_RQ_1XX + offset] == f"downstream_rq_{name}"
