"""A released codec leaves no reference cycle: a closed connection is freed at once.

llhttp's parser holds the codec's callbacks, so without `release` every closed HTTP/1
connection left a codec/parser cycle for the cycle collector, and one that lived long
enough to reach the oldest generation stayed until a full collection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from proxy.core.codecs import client_codec, server_codec
from proxy.core.codecs.base import ClientCodec, ServerCodec
from proxy.core.messages import RequestHead
from tests.proxy.codecs.helpers import CODECS


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _used_pair(name: str) -> tuple[ServerCodec, ClientCodec]:
    """A server and a client codec that each carried one complete exchange."""
    downstream = server_codec(name)
    assert downstream.receive(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    upstream = client_codec(name)
    upstream.send_request_head(RequestHead(1, b"GET", b"/", [(b"host", b"a")]))
    assert upstream.receive(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    return downstream, upstream


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.usefixtures("no_automatic_gc")
def test_released_codecs_leave_nothing_for_the_cycle_collector(name: str) -> None:
    downstream, upstream = _used_pair(name)
    downstream.release()
    upstream.release()
    del downstream, upstream
    assert gc.collect() == 0


@pytest.mark.usefixtures("no_automatic_gc")
def test_the_llhttp_pair_is_a_cycle_until_released() -> None:
    """The control for the test above: without release, the collector has work."""
    downstream, upstream = _used_pair("llhttp")
    del downstream, upstream
    assert gc.collect() > 0


def test_a_released_llhttp_codec_never_feeds_the_shared_parser() -> None:
    """Released llhttp codecs share one callback-less parser: feeding it would mix state."""
    downstream, upstream = _used_pair("llhttp")
    downstream.release()
    upstream.release()
    assert downstream.receive(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n") == []
    assert upstream.connection_closed() == []
