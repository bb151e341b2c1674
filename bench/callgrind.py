"""What the instruction-count benchmarks share: steering callgrind and reading its total.

The sidecar runs under `valgrind --tool=callgrind --instr-atstart=no`; the benchmark
switches instrumentation on after its warm-up, off after the measured traffic, asks for
a dump, and reads the largest total among the dump files.
"""

from __future__ import annotations

import subprocess
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
