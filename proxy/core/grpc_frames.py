"""gRPC messages counted as a stream's DATA passes, for Istio's message counters.

A gRPC body is a run of length-prefixed messages: one flag byte (compressed or not),
four bytes of big-endian length, then the message. HTTP/2 frames cut that run anywhere,
so the counter keeps where it is between DATA frames; nothing is copied or held.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = 5  # the flag byte and the four length bytes


class MessageCount:
    """Messages completed so far in one direction of one stream."""

    __slots__ = ("count", "left", "prefix")

    def __init__(self) -> None:
        self.count = 0
        self.left = 0  # bytes of the current message still to come
        self.prefix = b""  # a length prefix cut by a frame boundary, so far

    def feed(self, data: bytes) -> None:
        size = len(data)
        at = 0
        while at < size:
            left = self.left
            if left:
                step = min(left, size - at)
                at += step
                self.left = left - step
                if self.left == 0:
                    self.count += 1
                continue
            prefix = self.prefix
            if prefix or size - at < PREFIX:  # a prefix cut by a frame boundary
                piece = data[at : at + PREFIX - len(prefix)]
                at += len(piece)
                prefix += piece
                if len(prefix) < PREFIX:
                    self.prefix = prefix
                    return
                self.prefix = b""
                length = int.from_bytes(prefix[1:PREFIX], "big")
            else:
                length = int.from_bytes(data[at + 1 : at + PREFIX], "big")
                at += PREFIX
            if length:
                self.left = length
            else:
                self.count += 1  # an empty message is complete with its prefix
