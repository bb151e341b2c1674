"""Applying the retry policy (`proxy.core.retry`) to an exchange in flight.

Shared by the HTTP/1 connection manager and the HTTP/2 downstream: both ask `try_again`
when an attempt failed (a connect that failed, or a retriable answer), and give back the
circuit-breaker slot with `release` when the exchange is over. What a retry does is the
same for both: count it, hold a max_retries slot for the destination, wait the back-off,
then hand the exchange to the manager's `resend` (which asks the right pool again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.core import flags, retry

if TYPE_CHECKING:
    from proxy.runtime.exchange import Exchange
    from proxy.runtime.upstream import Destination
    from proxy.runtime.worker import Worker


def keeps_bodies(worker: Worker, listener_name: str) -> bool:
    """Whether requests on this listener may be retried, so their bodies are kept."""
    return worker.config.retries.attempts > 0 and listener_name in worker.retrying_listeners


def try_again(
    worker: Worker,
    exchange: Exchange,
    destination: Destination,
    listener_name: str,
    sent: bool,
    resend: Callable[[Exchange], None],
) -> int:
    """Schedule the exchange's next attempt if the policy allows; the decision either way.

    `sent`: the failed attempt sent the request (it was answered), so only a request held
    whole can go again; otherwise (the connection failed) nothing left the proxy and what
    the client sent is still waiting in the exchange's buffer.
    """
    release(worker, exchange, destination)  # this attempt's slot, whatever comes next
    active = worker.active_retries
    decision = retry.decide(
        exchange.retries,
        worker.config.retries.attempts if listener_name in worker.retrying_listeners else 0,
        exchange.replayable or not sent,
        active.get(destination, 0),
        worker.config.limits.max_retries,
    )
    stats = worker.stats
    if decision == retry.LIMIT_EXCEEDED:
        stats.upstream_rq_retry_limit_exceeded += 1
    elif decision == retry.OVERFLOW:
        stats.upstream_rq_retry_overflow += 1
    if decision != retry.RETRY:
        return decision
    stats.upstream_rq_retry += 1
    active[destination] = active.get(destination, 0) + 1
    exchange.retry_active = True
    policy = worker.config.retries
    delay = retry.backoff(exchange.retries, policy.backoff_base, policy.backoff_max, worker.random)
    exchange.retries += 1
    if sent:
        exchange.rewind()
    worker.loop.call_later(delay, resend, exchange)
    return decision


def after_failure(
    worker: Worker,
    exchange: Exchange,
    destination: Destination,
    listener_name: str,
    flag: str,
    resend: Callable[[Exchange], None],
) -> str | None:
    """A pool could not give the exchange an upstream (`flag` says why): None if it is
    being retried, else the second flag for the local reply ('' for none). Only a failed
    connect is retried: nothing was sent, so it is always safe."""
    if flag != flags.UPSTREAM_CONNECT_FAILURE:
        return ""
    decision = try_again(worker, exchange, destination, listener_name, False, resend)
    return None if decision == retry.RETRY else retry.FLAG_FOR[decision]


def release(worker: Worker, exchange: Exchange, destination: Destination) -> None:
    """Give back the exchange's max_retries slot, if its current attempt is a retry."""
    if exchange.retry_active:
        exchange.retry_active = False
        worker.active_retries[destination] -= 1
