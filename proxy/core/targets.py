"""Request targets other than origin-form (RFC 9112 section 3.2), checked and normalised.

Nearly every request a sidecar sees has an origin-form target (`/path?query`), which the
HTTP/1 codecs check and which passes through as it is. The other forms carry rules of
their own: an absolute-form target (`http://host/path`, what clients send to a proxy)
names the authority, which replaces the Host field, and goes upstream in origin-form,
as Envoy sends it; asterisk-form (`*`) is for OPTIONS only; CONNECT takes authority-form
(`host:port`) and nothing else.
"""

from __future__ import annotations

from typing import Final

from proxy.core.messages import RequestHead

_SCHEMES: Final = (b"http", b"https")
# Where an absolute-form target's authority ends.
_AUTHORITY_ENDS: Final = (b"/", b"?", b"#")
# Printable bytes that end a host or would make it name something else (userinfo).
_NOT_IN_HOSTS: Final = frozenset(b'/?#@\\"<>{}|^`')


def normalise_target(request: RequestHead) -> str | None:
    """Put a non-origin-form target in the form sent upstream; why to refuse it, or None.

    Called only when the target does not start with `/` or the method is CONNECT (the
    codecs have already refused targets that are no form at all).
    """
    target = request.target
    method = request.method
    if method == b"CONNECT":
        return None if _is_authority(target) else "CONNECT target is not host:port"
    if target == b"*":
        return None if method == b"OPTIONS" else "asterisk-form target is for OPTIONS only"
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in _SCHEMES:
        return None
    end = len(rest)
    for mark in _AUTHORITY_ENDS:
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    if not is_host(authority):
        return "absolute-form target without a valid host"
    path = rest[end:].partition(b"#")[0]
    request.target = path if path.startswith(b"/") else b"/" + path
    # RFC 9112 section 3.2.2: the target's authority replaces any Host field received.
    request.headers = [pair for pair in request.headers if pair[0] != b"host"]
    request.headers.append((b"host", authority))
    return None


def _is_authority(target: bytes) -> bool:
    """`host:port`, as CONNECT names where to tunnel to."""
    host, colon, port = target.rpartition(b":")
    return bool(colon) and port.isdigit() and len(port) <= 5 and is_host(host)


def is_host(host: bytes) -> bool:
    """A reg-name, IPv4 address or bracketed IPv6 address, with an optional port: no
    userinfo, spaces or delimiters that would make it name something else."""
    if not host or len(host) > 255:
        return False
    return all(0x20 < byte < 0x7F and byte not in _NOT_IN_HOSTS for byte in host)
