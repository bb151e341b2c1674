"""Responses the proxy makes itself (Envoy's "local replies"): errors, with flag and details."""

from __future__ import annotations

from proxy.core import flags
from proxy.core.codecs.h1_framing import REASONS
from proxy.core.messages import H1_STREAM, ResponseHead

# Bodies say what happened in Envoy's words, so runbooks written for Envoy still match.
_BODIES = {
    flags.UPSTREAM_CONNECT_FAILURE: b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: connection failure",
    flags.UPSTREAM_CONNECTION_TERMINATION: b"upstream connect error or disconnect/reset before "
    b"headers. reset reason: connection termination",
    flags.UPSTREAM_OVERFLOW: b"upstream connect error or disconnect/reset before headers. "
    b"reset reason: overflow",
    flags.UPSTREAM_REQUEST_TIMEOUT: b"upstream request timeout",
    flags.NO_ROUTE: b"no route for this request",
    flags.UPSTREAM_PROTOCOL_ERROR: b"upstream sent an invalid HTTP response",
}
# A connect that timed out is a UF too, with a reset reason of its own.
CONNECT_TIMEOUT_DETAILS = "upstream_reset_before_response_started{connection_timeout}"
_CONNECT_TIMEOUT_BODY = (
    b"upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
)


def local_reply(
    status: int,
    flag: str,
    details: str,
    request_id: bytes,
    keep_alive: bool,
    transport_failure: str | None = None,
) -> tuple[ResponseHead, bytes]:
    """The head and body of a proxy-generated response. A failed connect's body ends
    with why, as Envoy's does: `transport failure reason: delayed connect error:
    Connection refused` (`transport_failure` in its log form, underscores for spaces)."""
    if flag == flags.DOWNSTREAM_PROTOCOL_ERROR:
        body = b"Bad Request" if status == 400 else _status_text(status)
    elif details == CONNECT_TIMEOUT_DETAILS:
        body = _CONNECT_TIMEOUT_BODY
    else:
        body = _BODIES.get(flag, _status_text(status))
    if transport_failure:
        body += b", transport failure reason: " + transport_failure.replace("_", " ").encode()
    headers = [(b"content-type", b"text/plain"), (b"server", b"pilotfish")]
    if request_id:
        headers.append((b"x-request-id", request_id))
    return (
        ResponseHead(H1_STREAM, status, headers, b"", b"1.1", keep_alive, len(body), False),
        body,
    )


def _status_text(status: int) -> bytes:
    return REASONS.get(status, b"Error")
