"""This worker process's CPU, memory and file descriptors, for the summed process_* metrics."""

from __future__ import annotations

import contextlib
import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_stats(started: float) -> dict[str, float]:
    """Values that add up across workers (start time: the earliest wins when merged)."""
    times = os.times()
    stats: dict[str, float] = {
        "cpu_seconds_total": times.user + times.system,
        "start_time_seconds": started,
    }
    try:
        with open("/proc/self/statm", "rb") as statm:
            size, resident = statm.read().split()[:2]
        stats["virtual_memory_bytes"] = int(size) * _PAGE
        stats["resident_memory_bytes"] = int(resident) * _PAGE
    except (OSError, ValueError):
        # Not Linux: peak RSS is the best the standard library offers (KiB on Linux/BSD).
        stats["resident_memory_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with contextlib.suppress(OSError):
        stats["open_fds"] = len(os.listdir("/proc/self/fd"))
    stats["max_fds"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return stats
