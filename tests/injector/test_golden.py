"""Golden files: testdata/inject/<case>.yaml injected offline must equal <case>.yaml.injected.

New cases are picked up automatically; REFRESH_GOLDEN=1 rewrites the expected files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from injector.mutate import Injector
from injector.offline import dump_documents, inject_documents
from tests.injector.k8s_schema import validate_all_versions

CASES = Path(__file__).parent / "testdata" / "inject"
INPUTS = sorted(CASES.glob("*.yaml"))
REFRESH = os.environ.get("REFRESH_GOLDEN") == "1"


def render(path: Path, injector: Injector) -> str:
    documents, notices = inject_documents(path.read_text(), injector)
    # Notices go first as YAML comments, so the golden shows what stderr would say.
    header = "".join(f"# {'error' if n.error else 'warning'}: {n.text}\n" for n in notices)
    return header + dump_documents(documents)


def test_there_are_cases() -> None:
    assert len(INPUTS) >= 15


@pytest.mark.parametrize("case", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden(case: Path, injector: Injector) -> None:
    expected_path = case.with_name(case.name + ".injected")
    actual = render(case, injector)
    if REFRESH:
        expected_path.write_text(actual)
    assert expected_path.exists(), f"{expected_path.name} missing: run with REFRESH_GOLDEN=1"
    assert actual == expected_path.read_text(), f"{case.name}: run with REFRESH_GOLDEN=1"


@pytest.mark.parametrize("case", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden_output_is_valid_kubernetes(case: Path) -> None:
    expected_path = case.with_name(case.name + ".injected")
    for document in yaml.safe_load_all(expected_path.read_text()):
        items = document.get("items", []) if document.get("kind") == "List" else [document]
        for item in items:
            validate_all_versions(item)


@pytest.mark.parametrize("case", INPUTS, ids=[p.stem for p in INPUTS])
def test_injecting_twice_changes_nothing(case: Path, injector: Injector) -> None:
    once, _ = inject_documents(case.read_text(), injector)
    twice, _ = inject_documents(dump_documents(once), injector)
    assert twice == once
