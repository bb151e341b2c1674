"""proxy/admin/app_health.py against real servers on 127.0.0.1: HTTP, TCP and grpcio health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from injector import names
from injector.mutate import Injector, mutate
from proxy.admin import app_health
from proxy.admin.app_health import (
    GrpcProbe,
    HttpProbe,
    Prober,
    ProberConfigError,
    TcpProbe,
    decode_health_status,
    encode_health_request,
    parse_app_probers,
    run_probe,
)
from tests.ports import free_port


async def start_http_server() -> tuple[asyncio.Server, int, list[str]]:
    """Answers /ok 200, /redirect 302, /fail 500, /slow after 5 s; records request heads."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        path = head.split(" ")[1]
        if path == "/slow":
            await asyncio.sleep(5)
        status = {"/ok": "200 OK", "/redirect": "302 Found", "/fail": "500 Oops"}.get(
            path, "404 Not Found"
        )
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def closed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("ready", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait(5)


def probe(action: HttpProbe | TcpProbe | GrpcProbe, timeout: float = 2.0) -> Prober:
    return Prober("/app-health/app/readyz", action, timeout)


def test_http_probes_follow_the_kubelet_rules() -> None:
    async def scenario() -> list[tuple[bool, str]]:
        server, port, seen = await start_http_server()
        async with server:
            results = [
                await run_probe(probe(HttpProbe(port, "/ok", headers=(("X-Probe", "1"),)))),
                await run_probe(probe(HttpProbe(port, "/redirect"))),
                await run_probe(probe(HttpProbe(port, "/fail"))),
                await run_probe(probe(HttpProbe(port, "/slow"), timeout=0.2)),
                await run_probe(probe(HttpProbe(closed_port(), "/ok"))),
            ]
        assert "X-Probe: 1" in seen[0].replace("x-probe", "X-Probe")
        assert seen[0].startswith("GET /ok HTTP/1.1\r\n")
        return results

    ok, redirect, fail, slow, refused = asyncio.run(scenario())
    assert ok == (True, "HTTP 200")
    assert redirect == (True, "HTTP 302")
    assert fail == (False, "HTTP 500")
    assert slow == (False, "timed out after 0.2s")
    assert refused[0] is False and "ConnectionRefused" in refused[1]


def test_tcp_probe() -> None:
    async def scenario() -> tuple[tuple[bool, str], tuple[bool, str]]:
        server, port, _ = await start_http_server()
        async with server:
            up = await run_probe(probe(TcpProbe(port)))
        return up, await run_probe(probe(TcpProbe(closed_port())))

    up, down = asyncio.run(scenario())
    assert up[0] is True
    assert down[0] is False


def test_grpc_health_probe_against_grpcio(grpc_server: tuple[int, Any]) -> None:
    port, _ = grpc_server

    async def scenario() -> list[tuple[bool, str]]:
        return [
            await run_probe(probe(GrpcProbe(port))),
            await run_probe(probe(GrpcProbe(port, "ready"))),
            await run_probe(probe(GrpcProbe(port, "draining"))),
            await run_probe(probe(GrpcProbe(port, "unknown-service"))),
            await run_probe(probe(GrpcProbe(closed_port()))),
        ]

    overall, ready, draining, unknown, refused = asyncio.run(scenario())
    assert overall == (True, "SERVING")
    assert ready == (True, "SERVING")
    assert draining == (False, "NOT_SERVING")
    assert unknown[0] is False and "grpc-status 5" in unknown[1]  # NOT_FOUND
    assert refused[0] is False


def test_grpc_probe_of_a_plain_http_server_fails_cleanly() -> None:
    async def scenario() -> tuple[bool, str]:
        server, port, _ = await start_http_server()
        async with server:
            return await run_probe(probe(GrpcProbe(port), timeout=1.0))

    ok, _ = asyncio.run(scenario())
    assert ok is False


def test_health_message_codec() -> None:
    assert encode_health_request("") == b"\x00\x00\x00\x00\x00"
    assert encode_health_request("ab") == b"\x00\x00\x00\x00\x04\x0a\x02ab"
    assert decode_health_status(b"\x00\x00\x00\x00\x02\x08\x01") == 1
    assert decode_health_status(b"\x00\x00\x00\x00\x00") == 0
    assert decode_health_status(b"\x01\x00\x00\x00\x00") is None
    assert decode_health_status(b"\x00\x00\x00\x00\x05\x08") is None


def test_the_injector_output_is_what_the_sidecar_reads(injector: Injector) -> None:
    """The contract end to end: probes the injector rewrote are served from its env."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "web:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "livenessProbe": {
                        "httpGet": {
                            "path": "/live",
                            "port": "http",
                            "scheme": "HTTPS",
                            "httpHeaders": [{"name": "Host", "value": "w"}],
                        },
                        "timeoutSeconds": 3,
                    },
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                    "startupProbe": {"grpc": {"port": 9090, "service": "s"}},
                }
            ]
        },
    }
    injected = mutate(pod, injector)
    proxy = next(
        c for c in injected["spec"]["initContainers"] if c["name"] == names.PROXY_CONTAINER
    )
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    probers = parse_app_probers(env[app_health.ENV_APP_PROBERS])
    assert probers["/app-health/web/livez"] == Prober(
        "/app-health/web/livez",
        HttpProbe(8080, "/live", scheme="HTTPS", headers=(("Host", "w"),)),
        3.0,
    )
    assert probers["/app-health/web/readyz"].action == TcpProbe(8080)
    assert probers["/app-health/web/startupz"].action == GrpcProbe(9090, "s")
    assert app_health.ENV_APP_PROBERS == names.ENV_APP_PROBERS


def test_app_health_response_routes(grpc_server: tuple[int, Any]) -> None:
    port, _ = grpc_server
    raw = json.dumps(
        {
            "/app-health/api/readyz": {"grpc": {"port": port}},
            "/app-health/api/livez": {"tcpSocket": {"port": closed_port()}, "timeoutSeconds": 1},
        }
    )
    probers = parse_app_probers(raw)

    async def scenario() -> list[tuple[int, bytes]]:
        return [
            await app_health.app_health_response("/app-health/api/readyz", probers),
            await app_health.app_health_response("/app-health/api/livez?x=1", probers),
            await app_health.app_health_response("/app-health/other/readyz", probers),
        ]

    ready, live, missing = asyncio.run(scenario())
    assert ready == (200, b"SERVING\n")
    assert live[0] == 503
    assert missing[0] == 404


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"/app-health/a/wrong": {"tcpSocket": {"port": 1}}}',
        '{"/elsewhere": {"tcpSocket": {"port": 1}}}',
        '{"/app-health/a/livez": {"tcpSocket": {"port": 0}}}',
        '{"/app-health/a/livez": {"exec": {}}}',
        '{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "FTP"}}}',
        '{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "timeoutSeconds": 0}}',
    ],
)
def test_bad_prober_config_is_named(raw: str) -> None:
    with pytest.raises(ProberConfigError):
        parse_app_probers(raw)


def test_no_probers_is_fine() -> None:
    assert parse_app_probers(None) == {}
    assert parse_app_probers("") == {}
    assert app_health.probers_from_env({}) == {}
