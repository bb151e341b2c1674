"""messages.NO_FIELDS, the trailers of every message that has none, is shared and stays empty.

Each HTTP/1 codec gathers a message's trailers into its own list, replacing the shared
empty one at the first field; a message with trailers must never leave any behind
in it for the next message, connection or exchange.
"""

from __future__ import annotations

import pytest

from proxy.core.codecs import client_codec, server_codec
from proxy.core.messages import NO_FIELDS, EndOfMessage
from tests.proxy.codecs.helpers import CODECS, request

CHUNKED_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1\r\nx\r\n0\r\nX-Checksum: 1\r\n\r\n"
)
PLAIN_REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\ny\r\n0\r\nX-Sum: 2\r\n\r\n"
)
PLAIN_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny"


def _end(events: list[object]) -> EndOfMessage:
    ends = [event for event in events if isinstance(event, EndOfMessage)]
    assert len(ends) == 1, events
    return ends[0]


@pytest.mark.parametrize("codec", CODECS)
def test_trailers_never_land_in_the_shared_empty_list(codec: str) -> None:
    server = server_codec(codec)
    plain = _end(server.receive(PLAIN_REQUEST))
    assert plain.trailers == []
    with_trailers = _end(server.receive(CHUNKED_REQUEST))
    assert with_trailers.trailers == [(b"x-checksum", b"1")]
    assert _end(server.receive(PLAIN_REQUEST)).trailers == []
    client = client_codec(codec)
    client.send_request_head(request())
    assert _end(client.receive(PLAIN_RESPONSE)).trailers == []
    client.send_request_head(request())
    assert _end(client.receive(CHUNKED_RESPONSE)).trailers == [(b"x-sum", b"2")]
    client.send_request_head(request())
    assert _end(client.receive(PLAIN_RESPONSE)).trailers == []
    assert NO_FIELDS == [] and EndOfMessage(1).trailers == []

