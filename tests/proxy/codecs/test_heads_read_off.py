"""Heads whose fields are read straight off the bytes, beside llhttp's quiet parser.

The llhttp codecs parse a message whose head came whole in one read with a parser that
reports no fields, and take the fields from the head's bytes themselves; anything else
(a head split over reads, a 1xx, chunked framing with its trailers) goes to a parser
that reports each field. Neither may change an event: the same responses give the same
events however they are cut into reads, in any order on one connection, and the same
as the h11 codec's.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import ClientCodec
from proxy.core.messages import H1_STREAM, Data, EndOfMessage, RequestHead, ResponseHead
from tests.proxy.codecs.helpers import errors, feed, feed_bytewise, shape

REQUEST = RequestHead(H1_STREAM, b"GET", b"/", [(b"host", b"a")])
OK = b"HTTP/1.1 200 OK\r\nServer: t\r\nDate: %s\r\nContent-Length: 2\r\n\r\nok"


def _response(codec: ClientCodec, wire: bytes, whole: bool = True) -> list[object]:
    codec.send_request_head(REQUEST)
    return shape(codec.receive(wire) if whole else feed_bytewise(codec, wire))


def _head(events: list[object]) -> ResponseHead:
    head = events[0]
    assert isinstance(head, ResponseHead)
    return head


def test_a_repeated_head_gives_equal_fields_in_a_list_of_its_own() -> None:
    codec = client_codec("llhttp")
    first = _head(_response(codec, OK % b"1"))
    second = _head(_response(codec, OK % b"1"))
    assert first.headers == second.headers == [(b"server", b"t"), (b"date", b"1")]
    assert second.headers is not first.headers  # each head's list is its own to change
    assert (second.content_length, second.keep_alive) == (2, True)


def test_a_changed_line_is_read_again_and_the_others_kept() -> None:
    codec = client_codec("llhttp")
    first = _head(_response(codec, OK % b"1"))
    second = _head(_response(codec, OK % b"2"))
    assert second.headers == [(b"server", b"t"), (b"date", b"2")]
    assert second.headers[0] is first.headers[0]
    assert first.headers[1] == (b"date", b"1")


def test_a_field_reported_in_between_is_not_mistaken_for_the_line_read_before() -> None:
    """A field the field parser changes at a position must not keep that position's
    old line: a later head with the old line would be given the changed value."""
    codec = client_codec("llhttp")
    assert _head(_response(codec, OK % b"1")).headers[1] == (b"date", b"1")
    assert _head(_response(codec, OK % b"2", whole=False)).headers[1] == (b"date", b"2")
    # Not the whole head read first (that one's facts are kept whole): its Date line.
    third = OK.replace(b"Server: t", b"Server: u") % b"1"
    assert _head(_response(codec, third)).headers == [(b"server", b"u"), (b"date", b"1")]


def test_trailers_of_a_chunked_response_in_one_read_are_reported() -> None:
    codec = client_codec("llhttp")
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n"
    events = _response(codec, wire)
    assert events[-1].trailers == [(b"x-t", b"1")]  # type: ignore[attr-defined]


def test_a_head_llhttp_refuses_is_refused_whatever_its_lines_say() -> None:
    codec = client_codec("llhttp")
    # A bare LF inside a line: the split would see one line, llhttp sees a broken head.
    wire = b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n"
    assert _response(codec, wire) == [("error", 502)]


_FIELDS = st.lists(
    st.sampled_from(
        [b"Server: t", b"Date: 1", b"Date: 2", b"X-A:  v \t", b"x-a:v", b"Connection: keep-alive",
         b"Cache-Control: no-cache", b"Keep-Alive: timeout=5"]
    ),
    max_size=5,
)  # fmt: skip
_FRAMING = st.sampled_from(["length", "chunked", "trailers"])


@st.composite
def _responses(draw: st.DrawFn) -> bytes:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    status = draw(st.sampled_from([b"200 OK", b"404 Not Found"]))
    lines = b"".join(line + b"\r\n" for line in draw(_FIELDS))
    framing = draw(_FRAMING)
    if framing == "length":
        return interim + b"HTTP/1.1 %s\r\n%sContent-Length: 2\r\n\r\nok" % (status, lines)
    trailer = b"X-T: 1\r\n" if framing == "trailers" else b""
    return (
        interim
        + b"HTTP/1.1 %s\r\n%sTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n%s\r\n"
        % (
            status,
            lines,
            trailer,
        )
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_responses(), st.booleans()), min_size=1, max_size=6))
def test_responses_give_the_same_events_however_read(sequence: list[tuple[bytes, bool]]) -> None:
    llhttp, whole_reads, h11 = client_codec("llhttp"), client_codec("llhttp"), client_codec("h11")
    for wire, whole in sequence:
        expected = _response(h11, wire)
        assert _response(llhttp, wire, whole) == expected
        assert _response(whole_reads, wire) == expected


_REQUEST_FIELDS = st.lists(
    st.sampled_from(
        [b"User-Agent: t", b"Accept: */*", b"X-A:  v \t", b"x-a:v", b"Connection: keep-alive",
         b"Expect: 100-continue", b"Cookie: a=1", b"Cookie: a=2"]
    ),
    max_size=4,
)  # fmt: skip


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    target = draw(st.sampled_from([b"/", b"/a?b=c"]))
    lines = b"Host: a\r\n" + b"".join(line + b"\r\n" for line in draw(_REQUEST_FIELDS))
    framing = draw(st.sampled_from(["none", "length", "chunked", "trailers"]))
    if framing == "none":
        return b"GET %s HTTP/1.1\r\n%s\r\n" % (target, lines)
    if framing == "length":
        return b"POST %s HTTP/1.1\r\n%sContent-Length: 5\r\n\r\nhello" % (target, lines)
    trailer = b"X-T: 1\r\n" if framing == "trailers" else b""
    return b"POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n%s\r\n" % (
        target,
        lines,
        trailer,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_requests(), min_size=1, max_size=5), st.lists(st.integers(0, 400), max_size=4))
def test_requests_give_the_same_events_however_read(requests: list[bytes], cuts: list[int]) -> None:
    """Pipelined in one read, cut anywhere (a head split over reads, a body's end and the
    next request in one read), one byte at a time: the events of h11's whole read."""
    wire = b"".join(requests)
    expected = shape(server_codec("h11").receive(wire))
    assert shape(server_codec("llhttp").receive(wire)) == expected
    assert shape(feed(server_codec("llhttp"), wire, cuts)) == expected
    assert shape(feed_bytewise(server_codec("llhttp"), wire)) == expected
    one_by_one = server_codec("llhttp")
    assert shape([event for request in requests for event in one_by_one.receive(request)]) == (
        expected
    )


def test_a_request_after_one_that_closes_is_refused_however_read() -> None:
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    for after in (b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: a\r\n"):
        codec = server_codec("llhttp")
        events = codec.receive(wire)
        assert errors(events) == []
        assert errors(codec.receive(after)) == [400]
        assert errors(server_codec("llhttp").receive(wire + after)) == [400]


@pytest.mark.parametrize(
    "after",
    [b"", b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"xyz"],
    ids=["nothing", "empty-line", "unsolicited-response", "garbage"],
)
def test_what_follows_a_response_in_its_read_is_judged_as_before(after: bytes) -> None:
    """The quiet parser calls nothing where a response ends, so the codec cuts the
    read there: an empty line may follow, a response with no request may not."""
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + after
    whole = _response(client_codec("llhttp"), wire)
    assert whole == _response(client_codec("llhttp"), wire, whole=False)
    assert whole[-1] == (("error", 502) if after.strip() else EndOfMessage(H1_STREAM, []))


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_a_bodiless_status_ends_at_its_head_whatever_its_length_says(status: bytes) -> None:
    codec = client_codec("llhttp")
    wire = b"HTTP/1.1 %s\r\nContent-Length: 5\r\n\r\n" % status
    assert _response(codec, wire) == _response(client_codec("h11"), wire)
    assert _head(_response(codec, OK % b"1")).status == 200  # the next response, as ever


@pytest.mark.parametrize(
    "line",
    [b"GET /a HTTP/1.1", b"GET  /a HTTP/1.1", b"GET /a  HTTP/1.1", b"OPTIONS * HTTP/1.1",
     b"GET /a HTTP/1.0", b"GET /a", b"GET /a b HTTP/1.1", b"DELETE /%s HTTP/1.1" % (b"x" * 9000)],
)  # fmt: skip
def test_a_request_line_read_off_gives_the_target_llhttp_reports(line: bytes) -> None:
    """The target is taken from the request line only when it is laid out plainly;
    any other line goes to the field parser, whose on_url llhttp calls."""
    wire = line + b"\r\nHost: a\r\n\r\n"
    whole = shape(server_codec("llhttp").receive(wire))
    assert whole == shape(feed_bytewise(server_codec("llhttp"), wire))


def test_a_request_line_without_a_method_is_refused() -> None:
    """Found by the fuzz test: the target's slice must not run backwards (the compiled
    slice raised SystemError)."""
    assert errors(server_codec("llhttp").receive(b"/a?b=c HTTP/1.1\r\nHost: a\r\n\r\n")) == [400]


@pytest.mark.parametrize(
    "wire",
    [
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\na\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n",
    ],
    ids=["body-ends-like-a-head", "two-heads", "body-of-empty-lines"],
)
def test_a_read_ending_like_a_head_is_cut_at_its_first_head_end(wire: bytes) -> None:
    """A read that ends with CRLF CRLF is split whole (no search), and the head ends at
    its first empty line, not at the read's end."""
    expected = shape(server_codec("h11").receive(wire))
    assert shape(server_codec("llhttp").receive(wire)) == expected
    assert shape(feed_bytewise(server_codec("llhttp"), wire)) == expected


# -- a head repeated: answered from what llhttp accepted the last time ---------------

GET = b"GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"


def test_a_repeated_request_is_the_one_llhttp_accepted_with_fields_of_its_own() -> None:
    codec, h11 = server_codec("llhttp"), server_codec("h11")
    first = codec.receive(GET)
    assert codec._kept.repeat is not None  # type: ignore[attr-defined]  # the next is repeated
    head = first[0]
    assert isinstance(head, RequestHead)
    head.headers.append((b"x-changed", b"by the consumer"))  # the proxy changes its own
    head.target = b"/changed"
    for _ in range(3):
        events = codec.receive(GET)
        assert shape(events) == shape(h11.receive(GET))
        again = events[0]
        assert isinstance(again, RequestHead)
        assert again.headers == [(b"host", b"a"), (b"user-agent", b"t")]
        assert again.target == b"/a" and again.headers is not head.headers


def test_a_repeated_request_then_others_in_the_same_read_are_each_parsed() -> None:
    other = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
    wire = GET + GET + other + GET
    codec = server_codec("llhttp")
    codec.receive(GET)
    assert shape(codec.receive(wire)) == shape(server_codec("h11").receive(wire))


@pytest.mark.parametrize(
    "closing",
    [GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
     GET.replace(b"HTTP/1.1", b"HTTP/1.0")],
    ids=["connection-close", "http-1.0"],
)  # fmt: skip
def test_a_repeated_request_that_closes_is_parsed_and_what_follows_refused(
    closing: bytes,
) -> None:
    """Only a request that keeps the connection open is repeated: after one that closes,
    llhttp must have read it to refuse what follows, the same request included."""
    codec = server_codec("llhttp")
    assert errors(codec.receive(GET) + codec.receive(GET)) == []
    assert errors(codec.receive(closing)) == []
    assert errors(codec.receive(closing)) == [400]


def test_a_repeated_request_with_a_body_is_parsed_each_time() -> None:
    post = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    codec = server_codec("llhttp")
    for cuts in ([], [len(post) - 3], [10]):
        assert shape(feed(codec, post, cuts)) == shape(server_codec("h11").receive(post))
    assert codec._kept.repeat is None  # type: ignore[attr-defined]


def test_a_repeated_response_is_the_one_llhttp_accepted_with_fields_of_its_own() -> None:
    codec, h11 = client_codec("llhttp"), client_codec("h11")
    first = _response(codec, OK % b"1")
    assert codec._kept.repeat is not None  # type: ignore[attr-defined]
    head = _head(first)
    head.keep_alive = False  # as the connection manager does for a draining worker
    head.headers = []
    for _ in range(3):
        events = _response(codec, OK % b"1")
        assert events == _response(h11, OK % b"1")
        assert _head(events).keep_alive and _head(events).headers == [
            (b"server", b"t"),
            (b"date", b"1"),
        ]


@pytest.mark.parametrize(
    "after",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"\r\n", b"x"],
    ids=["unsolicited-response", "empty-line", "garbage"],
)
def test_a_repeated_response_with_bytes_after_it_is_judged_as_before(after: bytes) -> None:
    codec = client_codec("llhttp")
    _response(codec, OK % b"1")
    expected = _response(client_codec("llhttp"), OK % b"1" + after)
    assert _response(codec, OK % b"1" + after) == expected


def test_a_repeated_response_split_over_reads_or_closing_is_parsed() -> None:
    codec = client_codec("llhttp")
    _response(codec, OK % b"1")
    assert _response(codec, OK % b"1", whole=False) == _response(client_codec("h11"), OK % b"1")
    closing = (OK % b"1").replace(b"Server: t", b"Connection: close")
    assert _head(_response(codec, closing)).keep_alive is False
    assert codec._kept.repeat is None  # type: ignore[attr-defined]
    assert _head(_response(client_codec("llhttp"), closing)).keep_alive is False


def test_a_repeated_response_to_head_is_parsed_as_one_to_head() -> None:
    codec = client_codec("llhttp")
    _response(codec, OK % b"1")
    codec.send_request_head(RequestHead(H1_STREAM, b"HEAD", b"/", [(b"host", b"a")]))
    # The same head, but to HEAD: no body, so "ok" is an unsolicited something.
    assert shape(codec.receive(OK % b"1"))[-1] == ("error", 502)


def test_body_reads_are_passed_on_as_they_came_not_copied() -> None:
    """The quiet parsers report no body (httptools would copy each slice): the codec cuts
    the body from reads llhttp accepted, and a read that is all body goes on as itself."""
    size = 600_000
    client = client_codec("llhttp")
    client.send_request_head(REQUEST)
    first = client.receive(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"a" * 1000)
    assert isinstance(first[0], ResponseHead) and first[1:] == [Data(H1_STREAM, b"a" * 1000)]
    middle = b"b" * 300_000
    (data,) = client.receive(middle)
    assert isinstance(data, Data) and data.data is middle
    last = b"c" * (size - 301_000)
    events = client.receive(last)
    assert isinstance(events[0], Data) and events[0].data is last
    assert isinstance(events[1], EndOfMessage)

    server = server_codec("llhttp")
    upload = b"d" * 300_000
    head = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (len(upload) + 10)
    events = server.receive(head + b"0123")
    assert isinstance(events[0], RequestHead) and events[1:] == [Data(H1_STREAM, b"0123")]
    (data,) = server.receive(upload)
    assert isinstance(data, Data) and data.data is upload
    tail = server.receive(b"456789" + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert tail[0] == Data(H1_STREAM, b"456789") and isinstance(tail[1], EndOfMessage)
    assert isinstance(tail[2], RequestHead) and tail[2].target == b"/"
