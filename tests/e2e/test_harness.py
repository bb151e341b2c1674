"""The harness leaves nothing behind: not when a run is interrupted, not when it is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import netns, pods
from tests.e2e.pods import REPO

pytestmark = netns.ROOT_ONLY

CASE = Path(__file__).with_name("interrupted_case.py")


def _namespaces() -> set[str]:
    return {line.split()[0] for line in netns.run("ip", "netns", "list").splitlines() if line}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _has_processes(namespace: str) -> bool:
    return bool(netns.run("ip", "netns", "pids", namespace, check=False).split())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_interrupted_run_leaves_no_pods(tmp_path: Path, signum: int) -> None:
    report = tmp_path / "report.json"
    env = {**os.environ, "PF_HARNESS_REPORT": str(report), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-x", str(CASE)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        netns.wait_until(lambda: report.exists() and report.stat().st_size > 0, 30, "pods up")
        made = json.loads(report.read_text())
        assert set(made["namespaces"]) <= _namespaces()
        child.send_signal(signum)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    # The guard shells get SIGTERM from the kernel when their parent dies, even by SIGKILL.
    netns.wait_until(lambda: all(_gone(pid) for pid in made["pids"]), 10, "sidecars gone")
    if signum == signal.SIGKILL:
        # Nothing ran in the killed process, yet no process is left in its pods ...
        namespaces: list[str] = made["namespaces"]
        netns.wait_until(lambda: not any(map(_has_processes, namespaces)), 10, "pods emptied")
        # ... and the next run's sweep removes the namespaces and logs themselves.
        netns.delete_stale()
        pods.delete_stale_logs()
    assert not set(made["namespaces"]) & _namespaces()
