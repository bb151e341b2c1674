"""HTTP/1.1 wire framing shared by the codecs: start lines, header sections, chunks."""

from __future__ import annotations

from http import HTTPStatus

from proxy.core.messages import Headers

REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

# Framing headers are owned by the codec: it writes the ones that match how it
# actually frames the body, so a peer's stale or hostile values never pass through.
FRAMING_HEADERS = frozenset((b"content-length", b"transfer-encoding"))

LAST_CHUNK = b"0\r\n\r\n"


def header_block(headers: Headers) -> bytes:
    """`name: value\\r\\n` for each header, in order (no terminating blank line)."""
    return b"".join([b"%s: %s\r\n" % pair for pair in headers])


def request_head(
    method: bytes, target: bytes, headers: Headers, content_length: int | None, chunked: bool
) -> bytes:
    framing = _framing_line(content_length, chunked)
    return b"%s %s HTTP/1.1\r\n%s%s\r\n" % (method, target, header_block(headers), framing)


def response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    content_length: int | None,
    chunked: bool,
    close: bool,
) -> bytes:
    framing = _framing_line(content_length, chunked)
    if close:
        framing += b"connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (
        status,
        reason or REASONS.get(status, b"Unknown"),
        header_block(headers),
        framing,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def last_chunk(trailers: Headers) -> bytes:
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n%s\r\n" % header_block(trailers)


def _framing_line(content_length: int | None, chunked: bool) -> bytes:
    if chunked:
        return b"transfer-encoding: chunked\r\n"
    if content_length is not None:
        return b"content-length: %d\r\n" % content_length
    return b""
