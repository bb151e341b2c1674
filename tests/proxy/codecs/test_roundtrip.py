"""Client codec to server codec over an in-memory link, every pairing of llhttp and h11."""

from __future__ import annotations

import pytest

from proxy.core.codecs import client_codec, server_codec
from proxy.core.messages import (
    H1_STREAM,
    Data,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Upgraded,
)
from tests.proxy.codecs.helpers import (
    CODECS,
    PAIRS,
    Link,
    body_of,
    collapse,
    end_of,
    feed_bytewise,
    request,
    response,
)

pytestmark = pytest.mark.parametrize(("client", "server"), PAIRS)


def test_get_round_trip(client: str, server: str) -> None:
    link = Link(client, server)
    at_server, at_client = link.exchange(
        request(headers=[(b"host", b"a.test"), (b"X-Trace", b"1")]),
        response(headers=[(b"server", b"t")], content_length=5),
        response_body=[b"he", b"llo"],
    )
    assert at_server == [
        RequestHead(H1_STREAM, b"GET", b"/", [(b"host", b"a.test"), (b"x-trace", b"1")]),
        EndOfMessage(H1_STREAM),
    ]
    assert collapse(at_client) == [
        ResponseHead(H1_STREAM, 200, [(b"server", b"t")], content_length=5),
        Data(H1_STREAM, b"hello"),
        EndOfMessage(H1_STREAM),
    ]
    assert link.client.reusable
    assert link.server.keep_alive


def test_content_length_body_both_ways(client: str, server: str) -> None:
    link = Link(client, server)
    at_server, at_client = link.exchange(
        request(b"POST", content_length=6),
        response(content_length=3),
        request_body=[b"abc", b"def"],
        response_body=[b"xyz"],
    )
    assert at_server[0].content_length == 6  # type: ignore[union-attr]
    assert body_of(at_server) == b"abcdef"
    assert body_of(at_client) == b"xyz"
    assert type(at_client[-1]) is EndOfMessage
    assert link.client.reusable


def test_chunked_both_ways_with_trailers(client: str, server: str) -> None:
    link = Link(client, server)
    head = request(b"POST", chunked=True)
    at_server = link.send_request(head, [b"hello ", b"world"], [(b"x-checksum", b"42")])
    assert b"transfer-encoding: chunked" in link.to_server[0]
    parsed = at_server[0]
    assert isinstance(parsed, RequestHead) and parsed.chunked and parsed.content_length is None
    assert body_of(at_server) == b"hello world"
    assert end_of(at_server).trailers == [(b"x-checksum", b"42")]
    # Length unknown, HTTP/1.1 client: the server codec chooses chunked.
    at_client = link.send_response(response(), parsed, [b"a" * 100, b"b"], [(b"grpc-status", b"0")])
    assert b"transfer-encoding: chunked" in link.to_client[0]
    first = at_client[0]
    assert isinstance(first, ResponseHead) and first.chunked
    assert body_of(at_client) == b"a" * 100 + b"b"
    assert end_of(at_client).trailers == [(b"grpc-status", b"0")]
    assert link.client.reusable and link.server.keep_alive


def test_pipelined_requests_parsed_ahead_answered_in_order(client: str, server: str) -> None:
    link = Link(client, server)
    wire = b"".join(
        [
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
            b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ]
    )
    events = collapse(link.server.receive(wire))
    heads = [event for event in events if type(event) is RequestHead]
    assert [head.target for head in heads] == [b"/1", b"/2", b"/3"]
    assert [type(event) for event in events] == [
        RequestHead,
        EndOfMessage,
        RequestHead,
        Data,
        EndOfMessage,
        RequestHead,
        Data,
        EndOfMessage,
    ]
    # Responses go out in order, each read by a client codec that sent its request.
    for head in heads:
        assert isinstance(head, RequestHead)
        link.client.send_request_head(request(target=head.target))
        got = link.send_response(response(content_length=1), head, [b"."])
        assert [type(event) for event in collapse(got)] == [ResponseHead, Data, EndOfMessage]


def test_head_response_has_no_body(client: str, server: str) -> None:
    link = Link(client, server)
    _, at_client = link.exchange(request(b"HEAD"), response(content_length=1234))
    assert b"content-length: 1234" in link.to_client[0]
    assert at_client == [
        ResponseHead(H1_STREAM, 200, [], content_length=1234),
        EndOfMessage(H1_STREAM),
    ]
    assert link.client.reusable
    # Unknown length: no chunked framing either, the head is all there is.
    _, at_client = link.exchange(request(b"HEAD"), response())
    assert b"transfer-encoding" not in link.to_client[-1]
    assert [type(event) for event in at_client] == [ResponseHead, EndOfMessage]
    assert link.client.reusable


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(client: str, server: str, status: int) -> None:
    link = Link(client, server)
    _, at_client = link.exchange(request(), response(status))
    assert b"transfer-encoding" not in link.to_client[0]
    assert [type(event) for event in at_client] == [ResponseHead, EndOfMessage]
    assert link.client.reusable
    # The next exchange on the same connection still lines up.
    _, at_client = link.exchange(request(), response(content_length=2), response_body=[b"ok"])
    assert body_of(at_client) == b"ok"


def test_expect_100_continue(client: str, server: str) -> None:
    link = Link(client, server)
    head = request(
        b"PUT", headers=[(b"host", b"a"), (b"expect", b"100-continue")], content_length=4
    )
    link.to_server.append(link.client.send_request_head(head))
    at_server = link.server.receive(link.to_server[-1])
    parsed = at_server[0]
    assert isinstance(parsed, RequestHead) and parsed.expect_continue
    interim = link.send_response(response(100), parsed, end=False)
    assert interim == [ResponseHead(H1_STREAM, 100, [])]  # no EndOfMessage for a 1xx
    assert link.to_client[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    body = link.server.receive(link.client.send_data(b"data") + link.client.send_end([]))
    assert body_of(body) == b"data" and type(body[-1]) is EndOfMessage
    final = link.send_response(response(201, content_length=0), parsed)
    assert [type(event) for event in final] == [ResponseHead, EndOfMessage]
    assert final[0].status == 201  # type: ignore[union-attr]
    assert link.client.reusable


def test_several_informational_responses(client: str, server: str) -> None:
    link = Link(client, server)
    link.client.send_request_head(request())
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    )
    events = link.client.receive(wire)
    assert [(type(event), getattr(event, "status", None)) for event in events] == [
        (ResponseHead, 100),
        (ResponseHead, 103),
        (ResponseHead, 200),
        (Data, None),
        (EndOfMessage, None),
    ]
    assert events[1].headers == [(b"link", b"</s.css>; rel=preload")]  # type: ignore[union-attr]


def test_upgrade_then_tunnel(client: str, server: str) -> None:
    link = Link(client, server)
    head = request(
        headers=[(b"host", b"a"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
        upgrade=b"websocket",
    )
    at_server = link.send_request(head)
    parsed = at_server[0]
    assert isinstance(parsed, RequestHead) and parsed.upgrade == b"websocket"
    assert at_server[1:] == [EndOfMessage(H1_STREAM), Upgraded(H1_STREAM, b"")]
    # What the client sends next is tunnel bytes, not HTTP.
    assert link.server.receive(b"\x81\x05hello") == [Data(H1_STREAM, b"\x81\x05hello")]
    switch = response(101, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
    wire = link.server.send_response_head(switch, parsed)
    assert wire.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"transfer-encoding" not in wire and b"content-length" not in wire
    at_client = link.client.receive(wire + b"\x81\x02hi")
    assert [type(event) for event in at_client] == [ResponseHead, Upgraded]
    assert at_client[1] == Upgraded(H1_STREAM, b"\x81\x02hi")
    assert link.client.receive(b"more") == [Data(H1_STREAM, b"more")]
    assert link.server.send_data(b"raw") == b"raw"
    assert not link.client.reusable
    assert link.client.connection_closed() == []


def test_upgrade_request_body_bytes_belong_to_the_tunnel(client: str, server: str) -> None:
    link = Link(client, server)
    wire = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\nframe"
    events = link.server.receive(wire)
    assert [type(event) for event in events] == [RequestHead, EndOfMessage, Upgraded]
    assert events[-1] == Upgraded(H1_STREAM, b"frame")


def test_connect_tunnel(client: str, server: str) -> None:
    link = Link(client, server)
    head = request(b"CONNECT", b"db.test:5432", [(b"host", b"db.test:5432")])
    at_server = link.send_request(head)
    assert [type(event) for event in at_server] == [RequestHead, EndOfMessage, Upgraded]
    parsed = at_server[0]
    assert isinstance(parsed, RequestHead)
    wire = link.server.send_response_head(response(200), parsed)
    assert b"transfer-encoding" not in wire and b"content-length" not in wire
    assert link.server.send_data(b"tcp") == b"tcp"
    at_client = link.client.receive(wire + b"tcp")
    assert [type(event) for event in at_client] == [ResponseHead, Upgraded]
    assert at_client[1] == Upgraded(H1_STREAM, b"tcp")


def test_connect_refused_is_an_ordinary_response(client: str, server: str) -> None:
    link = Link(client, server)
    link.client.send_request_head(request(b"CONNECT", b"db.test:5432"))
    events = link.client.receive(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert [type(event) for event in collapse(events)] == [ResponseHead, Data, EndOfMessage]
    assert link.client.reusable


def test_connection_close(client: str, server: str) -> None:
    link = Link(client, server)
    at_server, at_client = link.exchange(
        request(headers=[(b"host", b"a"), (b"connection", b"close")]),
        response(content_length=0),
    )
    parsed = at_server[0]
    assert isinstance(parsed, RequestHead) and not parsed.keep_alive
    assert not link.server.keep_alive
    assert b"connection: close\r\n" in link.to_client[0]
    assert not at_client[0].keep_alive  # type: ignore[union-attr]
    assert not link.client.reusable


def test_server_side_close_decision(client: str, server: str) -> None:
    link = Link(client, server)
    link.exchange(request(), response(content_length=0, keep_alive=False))
    assert b"connection: close\r\n" in link.to_client[0]
    assert not link.server.keep_alive
    assert not link.client.reusable


def test_close_delimited_response(client: str, server: str) -> None:
    link = Link(client, server)
    link.client.send_request_head(request())
    events = link.client.receive(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    events += link.client.receive(b"part two")
    head = events[0]
    assert isinstance(head, ResponseHead) and not head.keep_alive
    assert body_of(events) == b"part one, part two"
    assert not any(type(event) is EndOfMessage for event in events)
    assert link.client.connection_closed() == [EndOfMessage(H1_STREAM)]
    assert not link.client.reusable
    assert link.client.connection_closed() == []


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: 1\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
    ids=["nothing", "head", "length", "chunk", "no-last-chunk", "trailers", "only-1xx"],
)
def test_truncated_response_is_an_error_on_close(client: str, server: str, wire: bytes) -> None:
    link = Link(client, server)
    link.client.send_request_head(request())
    events = link.client.receive(wire)
    assert not any(type(event) in (EndOfMessage, ProtocolError) for event in events)
    closed = link.client.connection_closed()
    assert [type(event) for event in closed] == [ProtocolError]
    assert closed[0].status == 502  # type: ignore[union-attr]
    assert not link.client.reusable


def test_http10_client(client: str, server: str) -> None:
    link = Link(client, server)
    events = link.server.receive(b"GET /old HTTP/1.0\r\n\r\n")
    parsed = events[0]
    assert isinstance(parsed, RequestHead)
    assert parsed.http_version == b"1.0" and not parsed.keep_alive
    # Unknown length to an HTTP/1.0 client: no chunked, the body ends at close.
    wire = link.server.send_response_head(response(), parsed)
    # Keep-alive is decided per answered request (pipelining), so only now is it known.
    assert not link.server.keep_alive
    assert b"transfer-encoding" not in wire and b"connection: close\r\n" in wire
    assert link.server.send_data(b"body") == b"body"
    assert link.server.send_end([]) == b""


def test_http10_keep_alive(client: str, server: str) -> None:
    link = Link(client, server)
    events = link.server.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    parsed = events[0]
    assert isinstance(parsed, RequestHead) and parsed.keep_alive
    wire = link.server.send_response_head(response(content_length=2), parsed)
    assert b"connection: close" not in wire
    assert link.server.keep_alive
    assert link.server.receive(b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0].target == (  # type: ignore[union-attr]
        b"/2"
    )
    # Unknown length still forces a close for an HTTP/1.0 client.
    wire = link.server.send_response_head(response(), parsed)
    assert b"connection: close\r\n" in wire and not link.server.keep_alive


def test_http10_response_from_upstream(client: str, server: str) -> None:
    link = Link(client, server)
    link.client.send_request_head(request())
    events = link.client.receive(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    head = events[0]
    assert isinstance(head, ResponseHead) and head.http_version == b"1.0"
    assert not head.keep_alive and not link.client.reusable


def test_bytewise_feeding_changes_nothing(client: str, server: str) -> None:
    wire = (
        b"\r\nPOST /a?b=c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    whole = Link(client, server).server.receive(wire)
    assert collapse(feed_bytewise(Link(client, server).server, wire)) == collapse(whole)
    response_wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    one, two = Link(client, server), Link(client, server)
    one.client.send_request_head(request())
    two.client.send_request_head(request())
    assert collapse(feed_bytewise(one.client, response_wire)) == collapse(
        two.client.receive(response_wire)
    )


def test_factory_names(client: str, server: str) -> None:
    assert type(server_codec(server, None)).__name__.lower().startswith(server)
    assert type(client_codec(client)).__name__.lower().startswith(client)
    with pytest.raises(ValueError):
        server_codec("picohttp", None)
    with pytest.raises(ValueError):
        client_codec("picohttp")
    assert set(CODECS) == {"llhttp", "h11"}
