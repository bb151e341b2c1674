"""Hypothesis fuzzing of both HTTP/1 codecs: no exception escapes, and they decide alike.

Every input is fed to the llhttp and the h11 codec, whole and split into random reads.
Each codec must end in complete messages, a ProtocolError, or waiting for more data;
splitting must change nothing; and both codecs must accept the same messages and
refuse the same inputs. The differences that remain are named in `DIVERGENCES`, each
with its reason, and `known_divergence` recognises them by removing the feature and
checking that the codecs then agree; anything else fails the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.codecs import client_codec, server_codec
from proxy.core.messages import (
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgraded,
)
from tests.proxy.codecs.helpers import CODECS, collapse, request

# 400 keeps the directory well under 30 s; raise it for a deeper run, e.g.
# FUZZ_EXAMPLES=20000 python -m pytest tests/proxy/codecs/test_fuzz.py
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Where the codecs still differ, and why that is acceptable. None is a framing
# ambiguity: in each the h11 codec is the stricter one, and it refuses.
DIVERGENCES: dict[str, str] = {
    "request-line-spaces": (
        "llhttp tolerates runs of spaces between method, target and version; h11 "
        "refuses them. Not a framing ambiguity: the message ends in the same place."
    ),
    "chunk-size-over-20-digits": (
        "llhttp takes zero-padded chunk sizes of any length (it only checks the value "
        "for overflow); h11 caps the size at 20 hex digits. The h11 codec refuses."
    ),
}

# Completes whatever a codec may still be waiting for (a head, a line), so an input
# on which one codec refused at once and the other was waiting can be compared.
SETTLE = b"\r\n\r\n"

REQUEST_SEEDS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
]

RESPONSE_SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: t\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    b"HTTP/1.0 200 OK\r\n\r\nold",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nws",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]

# Bytes that matter to HTTP/1 framing, and fragments that build smuggling shapes.
INTERESTING = b' \t\r\n:;,="0123456789abcdefABCDEF\x00\x01\x0b\x7f\x80\xff-+/xHTP.'
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\r\n ",
    b"Content-Length: 1\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Host: b\r\n",
    b"0\r\n\r\n",
    b"1\r\nx\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
]


# -- what a codec made of an input --------------------------------------------------


def verdict(events: list[Event]) -> tuple[tuple[object, ...], bool]:
    """(the events of every completed message, whether the codec refused the input).

    A message's events count once it has ended (EndOfMessage, an informational head,
    Upgraded and the tunnel bytes after it); the events of a message cut short by a
    ProtocolError do not, since where a codec stops inside a bad message is not a
    decision. ProtocolError reasons are free text and not compared.
    """
    committed: list[object] = []
    pending: list[object] = []
    tunnel = False
    for event in collapse(events):
        kind = type(event)
        if kind is ProtocolError:
            return tuple(committed), True
        if tunnel:
            # Tunnel bytes are one stream, however the reads split them.
            committed[-1] = ("tunnel", committed[-1][1] + event.data)  # type: ignore[index, union-attr]
            continue
        pending.append(event)
        interim = kind is ResponseHead and event.status < 200 and event.status != 101  # type: ignore[union-attr]
        if kind in (EndOfMessage, Upgraded) or interim:
            committed += pending
            pending = []
            tunnel = kind is Upgraded
            if tunnel:
                committed[-1] = ("tunnel", event.data)  # type: ignore[union-attr]
    return tuple(committed), False


def check_sequence(events: list[Event], side: str) -> None:
    """Events follow the message grammar: nothing after an error, bodies inside messages."""
    head_type = RequestHead if side == "server" else ResponseHead
    in_message = False
    tunnel = False
    for index, event in enumerate(events):
        kind = type(event)
        if kind is ProtocolError:
            assert index == len(events) - 1, events
            assert event.status in (400, 414, 431, 502), event  # type: ignore[union-attr]
        elif tunnel:
            assert kind is Data, events
        elif kind is head_type:
            assert not in_message or side == "client", events
            in_message = not (kind is ResponseHead and event.status < 200)  # type: ignore[union-attr]
            if kind is ResponseHead and event.status == 101:  # type: ignore[union-attr]
                in_message = True
        elif kind is Data:
            assert in_message, events
        elif kind is EndOfMessage:
            assert in_message, events
            in_message = False
        elif kind is Upgraded:
            tunnel = True
        else:
            raise AssertionError(f"unexpected event {event!r}")


def run_server(codec: str, data: bytes, cuts: list[int], after: bytes = b"") -> list[Event]:
    """`data` in reads cut at `cuts`; `after`: a request the connection carried first."""
    parser = server_codec(codec, None)
    if after:
        first = parser.receive(after)
        assert type(first[-1]) is EndOfMessage and parser.keep_alive, first
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if start < cut <= len(data):
            events += parser.receive(data[start:cut])
            start = cut
    if any(type(event) is ProtocolError for event in events):
        # Dead after it: the runtime closes the connection when it reaches the error.
        assert parser.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []
    return events


def run_client(
    codec: str, method: bytes, data: bytes, cuts: list[int], after: bytes = b""
) -> list[Event]:
    """The response `data` to a `method` request, in reads cut at `cuts`; `after`: the
    response to a GET the connection carried first."""
    parser = client_codec(codec)
    if after:
        parser.send_request_head(request(b"GET", headers=[(b"host", b"a")]))
        first = parser.receive(after)
        assert type(first[-1]) is EndOfMessage and parser.reusable, first
    headers = [(b"host", b"a")]
    if method == b"UPGRADE":
        method = b"GET"
        headers.append((b"upgrade", b"websocket"))
    parser.send_request_head(request(method, headers=headers))
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if start < cut <= len(data):
            events += parser.receive(data[start:cut])
            start = cut
    events += parser.connection_closed()
    if any(type(event) is ProtocolError for event in events):
        assert not parser.reusable
    return events


# -- known divergences ---------------------------------------------------------------

_REQUEST_LINE_SPACES = re.compile(rb"(^|\n)([A-Z-]+) +([^ \r\n]+) +(?=HTTP/)")
_LONG_CHUNK_SIZE = re.compile(rb"(?<=\n)0+(?=[0-9A-Fa-f]{1,16}[;\r])")

_NORMALISERS: dict[str, Callable[[bytes], bytes]] = {
    "request-line-spaces": lambda data: _REQUEST_LINE_SPACES.sub(rb"\1\2 \3 ", data),
    "chunk-size-over-20-digits": lambda data: _LONG_CHUNK_SIZE.sub(b"", data),
}


def known_divergence(decide: Callable[[bytes], bool], data: bytes) -> str | None:
    """The name of the documented divergence that explains a disagreement on `data`.

    `decide(data)` says whether the codecs agree. A divergence explains the input when
    removing its feature (and only that) makes them agree.
    """
    for name, normalise in _NORMALISERS.items():
        changed = normalise(data)
        if changed != data and decide(changed):
            return name
    return None


def servers_agree(data: bytes) -> bool:
    decisions = [verdict(run_server(codec, data, [])) for codec in CODECS]
    if decisions[0] == decisions[1]:
        return True
    if decisions[0][1] != decisions[1][1]:
        # One refused at once, the other was still waiting: complete what it waits for.
        settled = [verdict(run_server(codec, data + SETTLE, [])) for codec in CODECS]
        return settled[0] == settled[1]
    return False


def clients_agree(method: bytes, data: bytes) -> bool:
    decisions = [verdict(run_client(codec, method, data, [])) for codec in CODECS]
    return decisions[0] == decisions[1]


# -- strategies ----------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "fragment", "repeat"]))
        if operation == "insert":
            data[position:position] = bytes([draw(st.sampled_from(INTERESTING))])
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 4))]
        elif operation == "replace" and position < len(data):
            data[position] = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
        elif operation == "fragment":
            data[position:position] = draw(st.sampled_from(FRAGMENTS))
        elif operation == "repeat":
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=8)


RANDOM_BYTES = st.binary(max_size=160) | st.lists(
    st.sampled_from([bytes([byte]) for byte in INTERESTING] + FRAGMENTS), max_size=24
).map(b"".join)


# -- properties ----------------------------------------------------------------------


def check_server_input(data: bytes, cuts: list[int]) -> None:
    decisions = []
    for codec in CODECS:
        whole = run_server(codec, data, [])
        split = run_server(codec, data, cuts)
        check_sequence(whole, "server")
        check_sequence(split, "server")
        assert verdict(split) == verdict(whole), (codec, whole, split)
        decisions.append(verdict(whole))
    if not servers_agree(data):
        assert known_divergence(servers_agree, data), (data, decisions)


def check_client_input(method: bytes, data: bytes, cuts: list[int]) -> None:
    decisions = []
    for codec in CODECS:
        whole = run_client(codec, method, data, [])
        split = run_client(codec, method, data, cuts)
        check_sequence(whole, "client")
        check_sequence(split, "client")
        assert verdict(split) == verdict(whole), (codec, whole, split)
        decisions.append(verdict(whole))
    if not clients_agree(method, data):
        agree: Callable[[bytes], bool] = lambda changed: clients_agree(method, changed)  # noqa: E731
        assert known_divergence(agree, data), (method, data, decisions)


@FUZZ
@given(st.data())
def test_server_random_bytes(draw: st.DataObject) -> None:
    data = draw.draw(RANDOM_BYTES)
    check_server_input(data, draw.draw(cuts_for(data)))


@FUZZ
@given(st.data())
def test_server_mutated_requests(draw: st.DataObject) -> None:
    data = draw.draw(mutated(REQUEST_SEEDS))
    check_server_input(data, draw.draw(cuts_for(data)))


@FUZZ
@given(st.data())
def test_client_random_bytes(draw: st.DataObject) -> None:
    method = draw.draw(st.sampled_from([b"GET", b"HEAD", b"CONNECT", b"UPGRADE"]))
    data = draw.draw(RANDOM_BYTES)
    check_client_input(method, data, draw.draw(cuts_for(data)))


@FUZZ
@given(st.data())
def test_client_mutated_responses(draw: st.DataObject) -> None:
    method = draw.draw(st.sampled_from([b"GET", b"HEAD", b"CONNECT", b"UPGRADE"]))
    data = draw.draw(mutated(RESPONSE_SEEDS))
    check_client_input(method, data, draw.draw(cuts_for(data)))


# Messages after which a connection carries on: the llhttp codecs answer the same head
# again from what llhttp made of it the first time (docs/proxy.md).
KEPT_REQUESTS = [
    REQUEST_SEEDS[0],
    REQUEST_SEEDS[1],
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
KEPT_RESPONSES = [
    RESPONSE_SEEDS[0],
    RESPONSE_SEEDS[5],
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
]


@FUZZ
@given(st.data())
def test_server_after_a_request_decides_as_a_fresh_connection(draw: st.DataObject) -> None:
    """A connection that carried a request judges what comes next as a new one would,
    its head repeated exactly or changed anywhere."""
    first = draw.draw(st.sampled_from(KEPT_REQUESTS))
    data = draw.draw(mutated([first]) | st.just(first + first))
    cuts = draw.draw(cuts_for(data))
    for codec in CODECS:
        after = run_server(codec, data, cuts, after=first)
        check_sequence(after, "server")
        assert verdict(after) == verdict(run_server(codec, data, cuts)), (codec, after)


@FUZZ
@given(st.data())
def test_client_after_a_response_decides_as_a_fresh_connection(draw: st.DataObject) -> None:
    first = draw.draw(st.sampled_from(KEPT_RESPONSES))
    method = draw.draw(st.sampled_from([b"GET", b"HEAD", b"UPGRADE"]))
    data = draw.draw(mutated([first]) | st.just(first) | st.just(first + first))
    cuts = draw.draw(cuts_for(data))
    for codec in CODECS:
        after = run_client(codec, method, data, cuts, after=first)
        check_sequence(after, "client")
        assert verdict(after) == verdict(run_client(codec, method, data, cuts)), (codec, after)


def test_seeds_are_accepted_alike() -> None:
    """The unmutated seeds are valid: both codecs accept them and agree."""
    for seed in REQUEST_SEEDS:
        assert not verdict(run_server("llhttp", seed, []))[1], seed
        assert servers_agree(seed), seed
    for seed in RESPONSE_SEEDS:
        method = b"UPGRADE" if b" 101 " in seed else b"GET"
        assert not verdict(run_client("llhttp", method, seed, []))[1], seed
        assert clients_agree(method, seed), seed
