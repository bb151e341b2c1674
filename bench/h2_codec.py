"""CPU per request of the HTTP/2 server codec alone, in process, for A/B runs of a change.

The sidecar-level benchmarks (meshbench --h2, tests/h2/h2_cpu.py) move by a third
between rounds on these shared machines, which buries a 5% codec change. This drives
`H2ServerCodec` the way h2load does (one connection, 16 GET requests per read, each
answered with HEADERS and a 12-byte DATA with END_STREAM) with no sockets and no event
loop, and reports the best of several rounds of thread CPU time per request.

The client's bytes are recorded once, from a live exchange with a codec, then replayed
into a fresh codec each round: the server sees exactly the same input every time.

    python3 bench/h2_codec.py                       # this checkout
    python3 bench/h2_codec.py --ab ../other-checkout # alternate with another checkout
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BATCH = 16  # h2load -m16: requests in flight per connection, sent in one write
REQUEST = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "bench")]
BODY = b"hello world\n"


def record(batches: int) -> list[bytes]:
    """The client-to-server byte chunks of `batches` rounds of BATCH requests."""
    import h2.config
    import h2.connection

    from proxy.core.codecs.h2 import H2ServerCodec
    from proxy.core.messages import RequestHead, ResponseHead

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server = H2ServerCodec()
    chunks: list[bytes] = []
    for _ in range(batches):
        for _ in range(BATCH):
            client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=True)
        chunk = client.data_to_send()
        chunks.append(chunk)
        for event in server.receive(chunk, 0.0):
            if isinstance(event, RequestHead):
                respond(server, event.stream_id, ResponseHead)
        for event in client.receive_data(server.data_to_send()):
            if type(event).__name__ == "DataReceived":
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return chunks


def respond(server: object, stream_id: int, head_class: type) -> None:
    head = head_class(stream_id, 200, [(b"content-type", b"text/plain")],
                      content_length=len(BODY))  # fmt: skip
    server.send_response(stream_id, head, False)  # type: ignore[attr-defined]
    server.send_data(stream_id, BODY, True)  # type: ignore[attr-defined]
    server.forget(stream_id)  # type: ignore[attr-defined]


def replay(chunks: list[bytes]) -> float:
    """Thread CPU microseconds per request for one fresh codec taking every chunk."""
    from proxy.core.codecs.h2 import H2ServerCodec
    from proxy.core.messages import RequestHead, ResponseHead

    server = H2ServerCodec()
    receive, data_to_send = server.receive, server.data_to_send
    start = time.thread_time()
    for chunk in chunks:
        for event in receive(chunk, 0.0):
            if type(event) is RequestHead:
                respond(server, event.stream_id, ResponseHead)
        data_to_send()
    return (time.thread_time() - start) / (len(chunks) * BATCH) * 1e6


def measure(rounds: int, batches: int) -> float:
    chunks = record(batches)
    replay(chunks)  # warm caches and memos
    return min(replay(chunks) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--ab", metavar="CHECKOUT", help="alternate with this other checkout")
    parser.add_argument("--pairs", type=int, default=5, help="A/B alternations")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not args.once:
        sys.path.insert(0, here)  # --once runs get their checkout from PYTHONPATH
    if args.once or not args.ab:
        from proxy import _compiled

        result = measure(args.rounds, args.batches)
        print(f"{result:.2f} µs CPU/request (codec only, {_compiled.state()} build)")
        return
    from bench.ab import alternate

    def codec(checkout: Path) -> float:
        out = subprocess.run(
            ["taskset", "-c", "1", sys.executable, os.path.join(here, "bench/h2_codec.py"),
             "--once", "--rounds", str(args.rounds), "--batches", str(args.batches)],
            cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
            capture_output=True, text=True, check=True, timeout=300,
        ).stdout  # fmt: skip
        if "compiled build" not in out:
            print(f"note: {checkout} ran {out.strip()}", flush=True)
        return float(out.split()[0])

    alternate(Path(here), Path(args.ab).resolve(), args.pairs, codec, "µs CPU/request")


if __name__ == "__main__":
    main()
