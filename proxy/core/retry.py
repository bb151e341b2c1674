"""Router retries, as Envoy's router does them with Istio's default policy. Sans-IO.

Only on the caller's side (the outbound listener, or an explicit one reporting as
outbound): as in Istio, the retry policy belongs to the client's route, so a call
through two sidecars is not retried twice over.

What is retried, as Istio's default `retryOn` names it: a connection that could not be
made (`connect-failure`; nothing was sent), a `503` answer (`retriable-status-codes`) and
a gRPC answer whose head says `cancelled` or `unavailable`; once by default (contracts:
"1 retry, backoff 25 ms base / 250 ms max, full jitter"). Only a request the proxy can
send again whole: one whose body so far is still held (up to the buffer limit) and that
does not switch protocols. The route timeout spans every attempt. At most
`limits.max_retries` retries per destination run at once (Envoy's circuit breaker);
beyond that the answer passes with `UO`. Retries used up: the answer passes with `URX`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxy.core import flags

RETRY: Final = 0  # send it again after `backoff`
NOT_RETRIABLE: Final = 1  # policy off, or the request cannot be sent again: pass the answer on
LIMIT_EXCEEDED: Final = 2  # retries used up: pass it on, flagged URX
OVERFLOW: Final = 3  # too many retries running for this destination: pass it on, flagged UO

# The response flag an answer passed on carries, by decision.
FLAG_FOR: Final = {
    NOT_RETRIABLE: "",
    LIMIT_EXCEEDED: flags.UPSTREAM_RETRY_LIMIT_EXCEEDED,
    OVERFLOW: flags.UPSTREAM_OVERFLOW,
}

# Istio's default `retriable-status-codes`, and its gRPC conditions `cancelled` (1) and
# `unavailable` (14), which a gRPC server answers in a trailers-only response's head.
RETRIABLE_STATUSES: Final = frozenset((503,))
RETRIABLE_GRPC_STATUSES: Final = frozenset((b"1", b"14"))


def retriable(status: int, grpc_status: bytes | None) -> bool:
    """Whether an answer (its HTTP status, and grpc-status when in the head) is retried.

    The usual answer (a 2xx, no grpc-status) is settled by two native compares before
    any set is hashed (a set lookup boxes the status, about 120 instructions each).
    """
    if status < 500 and grpc_status is None:
        return False
    return status in RETRIABLE_STATUSES or (
        grpc_status is not None and grpc_status in RETRIABLE_GRPC_STATUSES
    )


def decide(retries_done: int, attempts: int, replayable: bool, active: int, max_active: int) -> int:
    """Whether a failed attempt is tried again (one of the constants above)."""
    if attempts <= 0 or not replayable:
        return NOT_RETRIABLE
    if retries_done >= attempts:
        return LIMIT_EXCEEDED
    if active >= max_active:
        return OVERFLOW
    return RETRY


def backoff(retries_done: int, base: float, maximum: float, draw: Callable[[], float]) -> float:
    """Seconds to wait before retry number `retries_done + 1`: Envoy's fully jittered
    exponential back-off, uniform below base x (2^n - 1) for the n-th retry, capped."""
    ceiling = min(maximum, base * ((2 << retries_done) - 1))
    return draw() * ceiling
