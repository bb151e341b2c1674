"""Why a downstream connection stopped reading: a bitmask; reading resumes when no bit is left.

Several parts of the runtime may hold a client back at once (a full upstream buffer,
a deep pipeline, an upstream not yet connected); each sets and clears its own bit.
"""

from __future__ import annotations

UPSTREAM_FULL = 1  # the upstream's write buffer is over its high-water mark
PIPELINE_FULL = 2  # too many parsed requests wait behind the one in flight
NOT_CONNECTED = 4  # body or tunnel bytes wait for an upstream connection (or its 101)
TCP_UPSTREAM_FULL = 8  # an opaque TCP relay's upstream cannot take more
