"""The codec seam: what a server-side and a client-side HTTP codec must offer.

Codecs are sans-IO. `receive` takes bytes and returns neutral events; the `send_*`
methods take neutral values and return the bytes to write. Nothing here touches a
socket, a clock or an event loop.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

from proxy.core.messages import Event, Headers, RequestHead, ResponseHead


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Size limits a codec enforces while parsing (each answered with its own status)."""

    # 60 KiB: Envoy's default max_request_headers_kb. Over it: 431.
    max_header_bytes: int = 60 * 1024
    # 8 KiB: nginx's large_client_header_buffers line size. Over it: 414.
    max_target_bytes: int = 8 * 1024
    # 100: Envoy's default max_headers_count. Over it: 431.
    max_header_count: int = 100


class ServerCodec(metaclass=ABCMeta):
    """Parses requests from a downstream client and frames responses to it.

    An abstract class rather than a Protocol: in the compiled build (proxy/_compiled.py)
    a call through a class is a direct C call, through a Protocol a Python-level one,
    and the connection manager makes several per request.
    """

    __slots__ = ()

    @abstractmethod
    def receive(self, data: bytes) -> list[Event]:
        """Bytes from the client, as neutral events (a ProtocolError ends the stream)."""

    @abstractmethod
    def send_response_head(self, head: ResponseHead, request: RequestHead) -> bytes:
        """The response head as bytes, framed for the client that sent `request`."""

    @abstractmethod
    def send_data(self, data: bytes) -> bytes:
        """A piece of the response body, framed."""

    @abstractmethod
    def send_end(self, trailers: Headers) -> bytes:
        """The end of the response body (with trailers where the framing carries them)."""

    @property
    @abstractmethod
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection once this one is answered."""

    def release(self) -> None:
        """The connection closed: drop what would keep it alive in a reference cycle.

        Nothing by default; a codec whose parser refers back to it overrides this.
        """
        return None  # a deliberate no-op, not an abstract method


class ClientCodec(metaclass=ABCMeta):
    """Frames requests to an upstream server and parses its responses (an abstract class,
    as ServerCodec is, for the same reason)."""

    __slots__ = ()

    @abstractmethod
    def send_request_head(self, head: RequestHead) -> bytes:
        """The request head as bytes, framed for this upstream."""

    @abstractmethod
    def send_data(self, data: bytes) -> bytes:
        """A piece of the request body, framed."""

    @abstractmethod
    def send_end(self, trailers: Headers) -> bytes:
        """The end of the request body (with trailers where the framing carries them)."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Event]:
        """Bytes from the upstream, as neutral events."""

    @abstractmethod
    def connection_closed(self) -> list[Event]:
        """The upstream closed: completes a close-delimited body, or reports truncation."""

    @property
    @abstractmethod
    def reusable(self) -> bool:
        """The last response was read completely and the server allows another request."""

    def release(self) -> None:
        """The connection closed: drop what would keep it alive in a reference cycle.

        Nothing by default; a codec whose parser refers back to it overrides this.
        """
        return None  # a deliberate no-op, not an abstract method
