"""The hot path this suite tests is the compiled one, wherever it can be.

`scripts/setup.sh` falls back to installing the hot path as pure Python when mypyc
cannot build it, so that a machine without a compiler still runs; the tests then pass
on the source alone, and a build that stopped compiling would go unnoticed. CI installs
a compiler, so there a source-only build is a failure, with the reason to look for.
"""

from __future__ import annotations

import os

import pytest

from proxy import _compiled


def test_the_hot_path_runs_compiled() -> None:
    if os.environ.get("PILOTFISH_PURE_PYTHON") == "1":
        assert _compiled.BUILD == "source"  # asked for: the source is what runs
        return
    if _compiled.BUILD != "compiled" and os.environ.get("CI") != "true":
        pytest.skip(f"hot path not compiled here ({_compiled.state()}): setup.sh builds it")
    assert _compiled.BUILD == "compiled", (
        f"the hot path runs from source ({_compiled.state()}): mypyc failed in"
        " scripts/setup.sh (its log says why) or the build is older than the source"
    )
