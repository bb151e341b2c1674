"""The C heap's two thresholds, set for a proxy that streams large bodies.

A relayed body moves in reads of up to 256 KiB (uvloop's read buffer), each a new bytes
object freed once written on. With glibc's defaults the heap's top is given back to the
kernel whenever half a megabyte of it is free, which streaming does on nearly every
read, and taken again on the next: a `brk` both ways and fresh pages the kernel must
fault in and zero, about 1,100 `brk` calls for 400 responses of 1 MiB and most of the
system time they cost. Keeping up to `TRIM_THRESHOLD` free at the top, and allocating up
to `MMAP_THRESHOLD` from the heap (setting one threshold switches off glibc's adjusting
of the other, which would leave 256 KiB blocks to a `mmap` and `munmap` each), takes 1 MiB
responses from about 850 to about 1,050 a second on one core (docs/benchmarks.md).

Resident memory after a large transfer stays up to `TRIM_THRESHOLD` higher than it
would be; the peak is the same. Not glibc (musl, or no C library found): nothing to do.
"""

from __future__ import annotations

import ctypes
from typing import Final

TRIM_THRESHOLD: Final = 4 << 20
MMAP_THRESHOLD: Final = 1 << 20
# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def tune() -> bool:
    """Set both thresholds; False where the C library has no mallopt."""
    try:
        # The process's own symbols, the C library's among them (ctypes.util's
        # find_library would run ldconfig in a subprocess at every worker's start).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
