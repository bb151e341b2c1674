"""Envoy's response flags (contracts: "Response flags"), set by the data plane per request."""

from __future__ import annotations

NO_HEALTHY_UPSTREAM = "UH"
UPSTREAM_CONNECT_FAILURE = "UF"
UPSTREAM_OVERFLOW = "UO"
NO_ROUTE = "NR"
UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
DOWNSTREAM_CONNECTION_TERMINATION = "DC"
UPSTREAM_REQUEST_TIMEOUT = "UT"
LOCAL_RESET = "LR"
UPSTREAM_REMOTE_RESET = "UR"
UPSTREAM_CONNECTION_TERMINATION = "UC"
DELAY_INJECTED = "DI"
FAULT_INJECTED = "FI"
RATE_LIMITED = "RL"
STREAM_IDLE_TIMEOUT = "SI"
DOWNSTREAM_PROTOCOL_ERROR = "DPE"
UPSTREAM_PROTOCOL_ERROR = "UPE"
DOWNSTREAM_RESET = "DR"

NONE = "-"


def join(flags: list[str]) -> str:
    """The label/log form: comma-joined, or '-' when there are none."""
    return ",".join(flags) if flags else NONE
