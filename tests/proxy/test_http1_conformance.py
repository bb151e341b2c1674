"""HTTP/1.1 rules a black-box review found broken (2026-11-28), each against both codecs.

Pipelined requests ahead of a closing or malformed one, first requests that must not pass
as opaque TCP, replays of non-idempotent requests, request-target forms, fields a
`Connection` header may not remove, request ids, 1xx to HTTP/1.0 clients, 204 framing.
"""

from __future__ import annotations

import json
import re
import socket
import time

from tests.proxy.conftest import Proxy, raw_exchange
from tests.proxy.test_http1 import request, seen
from tests.proxy.upstream_app import Server


def statuses(data: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", data)


def upstream_json(data: bytes) -> dict:  # type: ignore[type-arg]
    """The /headers answer in raw proxy output, with its headers as a lower-cased map."""
    info = json.loads(data.split(b"\r\n\r\n", 1)[1])
    info["map"] = {k.lower(): v for k, v in info["headers"]}
    return info  # type: ignore[no-any-return]


def paths(upstream: Server) -> list[str]:
    return [r.path for r in upstream.state.requests]


def test_requests_pipelined_ahead_of_a_closing_one_are_all_answered(
    proxy: Proxy, upstream: Server
) -> None:
    data = raw_exchange(
        proxy.port,
        b"GET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/201 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        b"GET /status/202 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    # RFC 9112 section 9.6: nothing after the closing request is processed.
    assert statuses(data) == [b"200", b"201"]
    assert paths(upstream) == ["/slow", "/status/201"]


def test_requests_pipelined_ahead_of_a_malformed_one_are_answered_then_it_gets_400(
    proxy: Proxy, upstream: Server
) -> None:
    data = raw_exchange(
        proxy.port,
        b"GET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /status/201 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert statuses(data) == [b"200", b"201", b"400"]
    assert paths(upstream) == ["/slow", "/status/201"]


def test_a_first_request_after_an_empty_line_is_http(proxy: Proxy) -> None:
    # RFC 9112 section 2.2: an empty line before the request line is ignored, not taken
    # for a protocol other than HTTP (which would relay it unchecked, as opaque TCP).
    info = upstream_json(
        raw_exchange(
            proxy.port, b"\r\nGET /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert info["map"]["x-forwarded-for"] == "127.0.0.1"
    assert info["map"]["x-request-id"]


def test_a_first_request_with_an_unknown_method_is_http_not_tcp(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port, b"FROB /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 ")  # answered or refused by the proxy's codec
    if statuses(data) == [b"200"]:  # h11 takes any token for a method
        assert upstream_json(data)["map"]["x-forwarded-for"] == "127.0.0.1"
    else:
        assert statuses(data) == [b"400"]  # llhttp knows its methods
    stats = proxy.stats()
    assert stats["downstream_cx_http1_total"] == 1
    assert stats["downstream_cx_tcp_total"] == 0


def test_a_post_is_not_replayed_when_a_pooled_connection_closes_under_it(
    proxy: Proxy, upstream: Server
) -> None:
    assert request(proxy, "GET", "/")[0] == 200  # one idle connection in the pool
    status, _, _ = request(proxy, "POST", "/close-before", b"")
    assert status == 503
    # The server read the POST before it closed: sending it again could repeat its effect.
    assert paths(upstream).count("/close-before") == 1
    assert proxy.stats().get("upstream_rq_retry", 0) == 0


def test_a_get_is_replayed_once_when_a_pooled_connection_closes_under_it(
    proxy: Proxy, upstream: Server
) -> None:
    assert request(proxy, "GET", "/")[0] == 200
    assert request(proxy, "GET", "/close-before")[0] == 503
    assert paths(upstream).count("/close-before") == 2
    assert proxy.stats()["upstream_rq_retry"] == 1


def test_transfer_encoding_in_an_http10_request_is_refused(proxy: Proxy, upstream: Server) -> None:
    data = raw_exchange(
        proxy.port,
        b"POST /echo HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    )
    assert statuses(data) == [b"400"]
    assert paths(upstream) == []


def test_an_absolute_form_target_names_the_host_and_goes_upstream_in_origin_form(
    proxy: Proxy,
) -> None:
    info = upstream_json(
        raw_exchange(
            proxy.port,
            b"GET http://Other.example:8080/headers?x=1 HTTP/1.1\r\nHost: public.example\r\n"
            b"Connection: close\r\n\r\n",
        )
    )
    assert info["target"] == "/headers?x=1"
    assert info["map"]["host"] == "Other.example:8080"
    assert [k for k, _ in info["headers"] if k.lower() == "host"] == ["host"]


def test_targets_in_the_wrong_form_for_their_method_are_refused(
    proxy: Proxy, upstream: Server
) -> None:
    for bad in (
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT /tunnel HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://user@evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ):
        assert statuses(raw_exchange(proxy.port, bad)) == [b"400"], bad
    assert paths(upstream) == []


def test_a_connection_header_cannot_remove_host(proxy: Proxy) -> None:
    info = seen(proxy, {"Connection": "keep-alive, Host"})
    assert info["map"]["host"] == f"127.0.0.1:{proxy.port}"


def test_empty_and_repeated_request_ids_leave_one(proxy: Proxy) -> None:
    info = seen(proxy, {"X-Request-Id": ""})
    ids = [v for k, v in info["headers"] if k.lower() == "x-request-id"]
    assert len(ids) == 1 and ids[0]
    info = upstream_json(
        raw_exchange(
            proxy.port,
            b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\nX-Request-Id: two\r\n"
            b"Connection: close\r\n\r\n",
        )
    )
    assert [v for k, v in info["headers"] if k.lower() == "x-request-id"] == ["one"]


def test_an_http10_client_gets_no_1xx(proxy: Proxy) -> None:
    # RFC 9110 section 15.2: not the upstream's 103, nor a 100 Continue of our own.
    data = raw_exchange(proxy.port, b"GET /early-hints HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"after hints\n")
    data = raw_exchange(
        proxy.port,
        b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    )
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello")


def test_a_204_carries_no_content_length(proxy: Proxy) -> None:
    data = raw_exchange(
        proxy.port, b"GET /status/204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 204 ")
    assert b"content-length" not in head.lower() and body == b""


def test_a_request_line_that_trickles_in_is_still_http(proxy: Proxy) -> None:
    # Each byte comes 60 ms after the last: more than the 100 ms sniff timeout in all,
    # but the wait restarts with every byte that may still be HTTP.
    with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
        for byte in b"GET":
            sock.sendall(bytes([byte]))
            time.sleep(0.06)
        sock.sendall(b" /headers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert upstream_json(data)["map"]["x-forwarded-for"] == "127.0.0.1"
    assert proxy.stats()["downstream_cx_http1_total"] == 1
