"""Golden files: testdata/<case>.args (flags) -> testdata/<case>.golden (--dry-run output).

A new .args file is a new case. REFRESH_GOLDEN=1 rewrites the goldens from the code.
In an .args file, `#` starts a comment and a line `@pod-ipv6` says the pod has a global
IPv6 address (otherwise it has none, whatever the machine running the test has).
"""

from __future__ import annotations

import io
import os
import shlex
from pathlib import Path

import pytest

from proxy.capture.cli import run
from tests.capture.fakes import FakeHost, RecordingExecutor

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(path.stem for path in TESTDATA.glob("*.args"))
REFRESH = os.environ.get("REFRESH_GOLDEN") == "1"


def render(case: str) -> str:
    lines = (TESTDATA / f"{case}.args").read_text().splitlines()
    pod_ipv6 = any(line.strip() == "@pod-ipv6" for line in lines)
    words = shlex.split(
        "\n".join(line for line in lines if not line.startswith("@")), comments=True
    )
    out, err = io.StringIO(), io.StringIO()
    executor = RecordingExecutor()
    code = run([*words, "--dry-run"], executor, FakeHost(ipv6=pod_ipv6), out, err)
    assert code == 0, err.getvalue()
    assert executor.restores == [], "--dry-run must not touch the nat table"
    return out.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    golden = TESTDATA / f"{case}.golden"
    actual = render(case)
    if REFRESH:
        golden.write_text(actual)
    assert golden.exists(), f"no {golden.name}; run with REFRESH_GOLDEN=1 to create it"
    assert actual == golden.read_text()


def test_every_golden_has_its_args() -> None:
    orphans = {path.stem for path in TESTDATA.glob("*.golden")} - set(CASES)
    assert not orphans, f"goldens without .args: {sorted(orphans)}"


def test_there_are_cases() -> None:
    assert len(CASES) >= 8
