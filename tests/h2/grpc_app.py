"""A gRPC app to run inside a test pod: `serve PORT` (the Echo service), or `call HOST PORT` (JSON out)."""

from __future__ import annotations

import json
import sys
import time

import grpc

from tests.h2.conftest import OPTIONS, method, start_grpc_server


def serve(port: int) -> None:
    server, _ = start_grpc_server(8, f"0.0.0.0:{port}")
    print("serving", flush=True)
    server.wait_for_termination()


def call(host: str, port: int) -> dict[str, object]:
    result: dict[str, object] = {}
    with grpc.insecure_channel(f"{host}:{port}", options=OPTIONS) as channel:
        unary = method(channel, "unary_unary", "Unary")
        deadline = time.monotonic() + 10
        while True:  # the server may still be starting
            try:
                result["unary"] = unary(b"hello", timeout=2).decode()
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        result["metadata"] = unary(b"metadata", timeout=5).decode()
        stream = method(channel, "unary_stream", "ServerStream")
        result["stream_count"] = len(list(stream(b"50x1000", timeout=10)))
        big = bytes(range(256)) * 4096  # 1 MiB
        result["large_ok"] = unary(big, timeout=10) == big
        try:
            unary(b"fail:NOT_FOUND", timeout=5)
            result["error"] = "none"
        except grpc.RpcError as error:
            result["error"] = error.code().name
    return result


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(call(sys.argv[2], int(sys.argv[3]))))
