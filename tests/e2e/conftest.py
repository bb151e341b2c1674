"""Fixtures for the pod harness: two linked pods with apps and sidecars, torn down always."""

from __future__ import annotations

import os
import signal
import socketserver
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import pytest

from tests.e2e import apps, netns
from tests.e2e.pods import Pod, link, make_pod
from tests.e2e.sidecar import Sidecar, start_sidecars

# Pod A is the client side, pod B the server side; B's second address lets a test
# include one of B's addresses in A's capture and leave the other out.
A_ADDRESSES = ["198.18.0.1/24"]
B_ADDRESSES = ["198.18.0.2/24", "198.18.0.3/24"]


@dataclass
class Pods:
    """The two pods and their apps; they live for the whole session."""

    a: Pod
    b: Pod
    http_a: apps.HttpApp
    http_b: apps.HttpApp
    echo_b: apps.EchoApp


@dataclass
class Mesh(Pods):
    """The pods with fresh sidecars: new per test, so no pooled upstream connection made
    under one test's rules carries over into the next test."""

    sidecar_a: Sidecar
    sidecar_b: Sidecar


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (e.g. a CI timeout) must unwind like Ctrl-C so fixtures and atexit clean up.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def pods() -> Iterator[Pods]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, iptables)")
    previous = signal.signal(signal.SIGTERM, _terminate)
    netns.delete_stale()
    made: list[Pod] = []
    servers: list[socketserver.BaseServer] = []
    try:
        a, b = make_pod(), make_pod()
        made += [a, b]
        link(a, A_ADDRESSES, b, B_ADDRESSES)
        http_a = apps.serve_in(a.name, lambda: apps.HttpApp(a.name, apps.HTTP_PORT))
        http_b = apps.serve_in(b.name, lambda: apps.HttpApp(b.name, apps.HTTP_PORT))
        echo_b = apps.serve_in(b.name, lambda: apps.EchoApp(apps.ECHO_PORT))
        servers += [http_a, http_b, echo_b]
        yield Pods(a, b, http_a, http_b, echo_b)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for pod in made:
            pod.destroy()
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keep the call-phase report on the item, so fixtures can tell whether the test failed.
    report = yield
    if call.when == "call":
        item.stash[CALL_FAILED] = bool(getattr(report, "failed", False))
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def mesh(pods: Pods, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    sidecar_a, sidecar_b = start_sidecars(pods.a, pods.b)
    try:
        yield Mesh(pods.a, pods.b, pods.http_a, pods.http_b, pods.echo_b, sidecar_a, sidecar_b)
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            # Shown under "Captured stdout teardown": what each sidecar said before it failed.
            for sidecar in (sidecar_a, sidecar_b):
                print(f"--- sidecar in {sidecar.pod.name}:\n{sidecar.process.output()}")
        for sidecar in (sidecar_a, sidecar_b):
            sidecar.process.stop()
            sidecar.pod.processes.remove(sidecar.process)


@pytest.fixture
def capture() -> Iterator[Callable[..., None]]:
    """capture(pod, *flags): apply rules for this test; after it, `--cleanup` must put the
    pod's nat table back exactly as it was before the first apply (traffic and all)."""
    before: dict[str, tuple[Pod, str]] = {}

    def apply(pod: Pod, *flags: str) -> None:
        before.setdefault(pod.name, (pod, pod.nat()))
        done = pod.capture(*flags)
        assert done.returncode == 0, done.stderr

    yield apply
    for pod, saved in before.values():
        done = pod.capture("--cleanup")
        assert done.returncode == 0, done.stderr
        assert pod.nat() == saved, f"--cleanup did not restore the nat table of {pod.name}"
