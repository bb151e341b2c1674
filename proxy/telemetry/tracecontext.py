"""W3C trace context and B3 headers: parse what a caller sent, format what goes upstream (pure)."""

from __future__ import annotations

from collections.abc import Mapping

# Every header this module reads or writes (request headers arrive lower-cased).
TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
B3 = b"b3"
B3_TRACE_ID = b"x-b3-traceid"
B3_SPAN_ID = b"x-b3-spanid"
B3_PARENT_SPAN_ID = b"x-b3-parentspanid"
B3_SAMPLED = b"x-b3-sampled"
B3_FLAGS = b"x-b3-flags"
TRACE_HEADERS = frozenset(
    (TRACEPARENT, TRACESTATE, B3, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS)
)

# How the caller spoke, so the request goes upstream in the same dialect (plus W3C).
STYLE_NONE = 0
STYLE_W3C = 1
STYLE_B3_MULTI = 2
STYLE_B3_SINGLE = 3

_HEX = frozenset(b"0123456789abcdef")


class Parent:
    """The caller's span: trace id and span id (lower-case hex, "" when absent) and its
    sampling decision (None: deferred to us)."""

    __slots__ = ("sampled", "span_id", "style", "trace_id")

    def __init__(self, trace_id: str, span_id: str, sampled: bool | None, style: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.style = style


def _hex_id(value: bytes, lengths: tuple[int, ...], width: int) -> str:
    """A non-zero lower-case hex id of an allowed length, left-padded to `width`; else ""."""
    if len(value) not in lengths or not _HEX.issuperset(value) or not value.strip(b"0"):
        return ""
    return value.decode().rjust(width, "0")


def parse_traceparent(value: bytes) -> Parent | None:
    """`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (W3C Trace Context level 1).

    Later versions may append fields after the flags, so only version 00 must be exact
    and version ff is invalid, as the recommendation says.
    """
    value = value.strip()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version == b"ff" or not _HEX.issuperset(version) or (version == b"00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace_id = _hex_id(value[3:35], (32,), 32)
    span_id = _hex_id(value[36:52], (16,), 16)
    flags = value[53:55]
    if not trace_id or not span_id or not _HEX.issuperset(flags):
        return None
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1), STYLE_W3C)


def _b3_sampled(value: bytes | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value in (b"1", b"true", b"d"):
        return True
    if value in (b"0", b"false"):
        return False
    return None


def parse_b3(headers: Mapping[bytes, bytes]) -> Parent | None:
    """B3 single (`b3: {trace}-{span}[-{sampled}[-{parent}]]`) or multi (`x-b3-*`) headers.

    A 64-bit trace id is widened to 128 bits with zeros on the left, as Zipkin does.
    A sampling-only header (`b3: 0`, or `x-b3-sampled` alone) carries no ids; the
    decision is kept and new ids are made.
    """
    single = headers.get(B3)
    if single is not None:
        parts = single.strip().lower().split(b"-")
        if len(parts) == 1:
            decision = _b3_sampled(parts[0])
            return Parent("", "", decision, STYLE_B3_SINGLE) if decision is not None else None
        trace_id = _hex_id(parts[0], (16, 32), 32)
        span_id = _hex_id(parts[1], (16,), 16)
        if trace_id and span_id:
            sampled = _b3_sampled(parts[2]) if len(parts) > 2 else None
            return Parent(trace_id, span_id, sampled, STYLE_B3_SINGLE)
    raw_trace = headers.get(B3_TRACE_ID)
    sampled = (
        True if headers.get(B3_FLAGS, b"").strip() == b"1" else _b3_sampled(headers.get(B3_SAMPLED))
    )
    if raw_trace is not None:
        trace_id = _hex_id(raw_trace.strip().lower(), (16, 32), 32)
        span_id = _hex_id(headers.get(B3_SPAN_ID, b"").strip().lower(), (16,), 16)
        if trace_id and span_id:
            return Parent(trace_id, span_id, sampled, STYLE_B3_MULTI)
    if sampled is not None:
        return Parent("", "", sampled, STYLE_B3_MULTI)
    return None


def extract(headers: Mapping[bytes, bytes]) -> Parent | None:
    """W3C first (it is the standard), then B3."""
    traceparent = headers.get(TRACEPARENT)
    if traceparent is not None:
        parent = parse_traceparent(traceparent)
        if parent is not None:
            return parent
    if B3 in headers or B3_TRACE_ID in headers or B3_SAMPLED in headers or B3_FLAGS in headers:
        return parse_b3(headers)
    return None


def b3_style(headers: Mapping[bytes, bytes]) -> int:
    """The B3 dialect the caller spoke, if any: the request goes on in it (besides W3C),
    so a B3-only server behind two sidecars still gets B3."""
    if B3 in headers:
        return STYLE_B3_SINGLE
    if B3_TRACE_ID in headers or B3_SAMPLED in headers or B3_FLAGS in headers:
        return STYLE_B3_MULTI
    return STYLE_NONE


def inject(
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    sampled: bool,
    style: int,
    tracestate: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """The headers that carry our span to the next hop: always W3C, plus B3 in `style`."""
    traceparent = "00-" + trace_id + "-" + span_id + ("-01" if sampled else "-00")
    out = [(TRACEPARENT, traceparent.encode())]
    if tracestate is not None:
        out.append((TRACESTATE, tracestate))
    if style == STYLE_B3_MULTI:
        out += [
            (B3_TRACE_ID, trace_id.encode()),
            (B3_SPAN_ID, span_id.encode()),
            (B3_SAMPLED, b"1" if sampled else b"0"),
        ]
        if parent_span_id:
            out.append((B3_PARENT_SPAN_ID, parent_span_id.encode()))
    elif style == STYLE_B3_SINGLE:
        single = f"{trace_id}-{span_id}-{1 if sampled else 0}"
        if parent_span_id:
            single += f"-{parent_span_id}"
        out.append((B3, single.encode()))
    return out
