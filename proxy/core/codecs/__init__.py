"""HTTP codecs behind one seam; `server_codec`/`client_codec` pick one by name."""

from __future__ import annotations

from proxy.core.codecs.base import ClientCodec, CodecLimits, ServerCodec


def server_codec(name: str, limits: CodecLimits | None = None) -> ServerCodec:
    if name == "llhttp":
        from proxy.core.codecs.h1_llhttp_server import LlhttpServerCodec

        return LlhttpServerCodec(limits)
    if name == "h11":
        from proxy.core.codecs.h1_h11 import H11ServerCodec

        return H11ServerCodec(limits)
    raise ValueError(f"unknown HTTP/1 codec {name!r} (llhttp or h11)")


def client_codec(name: str) -> ClientCodec:
    if name == "llhttp":
        from proxy.core.codecs.h1_llhttp_client import LlhttpClientCodec

        return LlhttpClientCodec()
    if name == "h11":
        from proxy.core.codecs.h1_h11 import H11ClientCodec

        return H11ClientCodec()
    raise ValueError(f"unknown HTTP/1 codec {name!r} (llhttp or h11)")
