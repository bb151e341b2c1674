"""gRPC through a sidecar (HTTP/2 both sides): request_protocol and grpc_response_status labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.telemetry.servers import Sidecar, tmpdir, wait_until

SERVICE = "pilotfish.test.Echo"


def _identity(data: bytes) -> bytes:
    return data


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request.startswith(b"fail:"):
        context.abort(getattr(grpc.StatusCode, request[5:].decode()), "asked to fail")
    return request


@pytest.fixture(scope="module")
def grpc_sidecar() -> Iterator[Sidecar]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {"Unary": grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp: Path = tmpdir("pf-grpc-")
    sidecar = Sidecar(tmp, "grpc-client", port, env={"OTEL_TRACES_SAMPLER": "always_on"})
    yield sidecar
    sidecar.stop()
    server.stop(None)


def test_grpc_status_labels(grpc_sidecar: Sidecar) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_sidecar.port}") as channel:
        unary = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        for _ in range(3):
            assert unary(b"hello", timeout=5) == b"hello"
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as caught:
                unary(b"fail:NOT_FOUND", timeout=5)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    text = grpc_sidecar.metrics()
    counts = {
        match.group(1): float(match.group(2))
        for match in re.finditer(
            r'^istio_requests_total\{[^}]*grpc_response_status="(\w+)"[^}]*request_protocol="grpc"[^}]*\} (\S+)$',
            text,
            re.MULTILINE,
        )
    }
    assert counts == {"0": 3.0, "5": 2.0}, counts

    def lines() -> list[dict[str, Any]]:
        return [line for line in grpc_sidecar.log_lines() if line["path"] == f"/{SERVICE}/Unary"]

    wait_until(lambda: len(lines()) == 5, 5, "five access log lines")
    assert all(line["response_code"] == 200 and line["protocol"] == "HTTP/2" for line in lines())
