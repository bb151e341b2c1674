"""Why a downstream connection stopped reading: a bitmask; reading resumes when no bit is left.

Several parts of the runtime may hold a client back at once (a full upstream buffer,
a deep pipeline, an upstream not yet connected); each sets and clears its own bit.
"""

from __future__ import annotations

from typing import Final

# Literal constants, built into the compiled hot path's code (not module attribute reads).
UPSTREAM_FULL: Final = 1  # the upstream's write buffer is over its high-water mark
PIPELINE_FULL: Final = 2  # too many parsed requests wait behind the one in flight
NOT_CONNECTED: Final = 4  # body or tunnel bytes wait for an upstream connection (or its 101)
TCP_UPSTREAM_FULL: Final = 8  # an opaque TCP relay's upstream cannot take more
