"""Not collected by itself: test_harness.py runs it in a child pytest, then interrupts that."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import Mesh


def test_blocks_until_interrupted(mesh: Mesh, capture: Callable[..., None]) -> None:
    capture(mesh.a)
    capture(mesh.b)
    report = {
        "namespaces": [mesh.a.name, mesh.b.name],
        "pids": [sidecar.process.popen.pid for sidecar in (mesh.sidecar_a, mesh.sidecar_b)],
    }
    Path(os.environ["PF_HARNESS_REPORT"]).write_text(json.dumps(report))
    time.sleep(30)  # the parent interrupts long before this ends
