"""What the instruction-count benchmarks share: steering callgrind and reading its total.

The sidecar runs under `valgrind --tool=callgrind --instr-atstart=no`; the benchmark
switches instrumentation on after its warm-up, off after the measured traffic, asks for
a dump, and reads the largest total among the dump files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def wrapper(out: Path) -> list[str]:
    """The command prefix that runs a process under callgrind, counting nothing yet."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def control(*args: object) -> None:
    """callgrind_control, e.g. `control("-i", "on", pid)`."""
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True)


def total_instructions(directory: Path) -> int:
    """The instructions counted in the dumps written under `directory`."""
    total = 0
    for dump in directory.glob("callgrind.out*"):
        for line in dump.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                total = max(total, int(line.split()[1]))
    return total


def sidecar(
    out: Path, checkout: Path, listen: int, upstream: int, admin: int,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """One pilotfish worker of `checkout` in explicit mode, under callgrind."""
    return subprocess.Popen(
        [*wrapper(out), sys.executable, "-m", "proxy", "run", "--listen", f"127.0.0.1:{listen}",
         "--upstream", f"127.0.0.1:{upstream}", "--concurrency", "1", "--admin-port", str(admin)],
        cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def counted(pid: int, work: Callable[[], None]) -> None:
    """Count the instructions `work` makes `pid` run, and dump them."""
    control("-i", "on", pid)
    work()
    control("-i", "off", pid)
    control("-d", pid)
