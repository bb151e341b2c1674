"""`pilotfish wait` and `pilotfish drain`: the sidecar container's lifecycle hooks.

`wait` is the postStart hook that holds the application until the proxy is ready
(holdApplicationUntilProxyStarts, Istio's `pilot-agent wait`); `drain` is the native
sidecar's preStop hook, which starts draining before Kubernetes sends SIGTERM. Both
are bounded in time and say plainly what went wrong.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request

from proxy.config.load import parse_duration

READY_URL = "http://127.0.0.1:15021/healthz/ready"
DRAIN_URL = "http://127.0.0.1:15020/drain"


def _status(url: str, method: str, timeout: float) -> int:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def wait_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilotfish wait", description="wait until the proxy is ready"
    )
    parser.add_argument("--url", default=READY_URL, help=f"readiness URL (default {READY_URL})")
    parser.add_argument("--timeout", default="60s", help="give up after this long (default 60s)")
    parser.add_argument("--period", default="500ms", help="time between attempts (default 500ms)")
    return parser


def drain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilotfish drain", description="start draining the proxy")
    parser.add_argument("--url", default=DRAIN_URL, help=f"drain URL (default {DRAIN_URL})")
    return parser


def wait(argv: list[str]) -> int:
    parser = wait_parser()
    args = parser.parse_args(argv)
    try:
        timeout, period = parse_duration(args.timeout), parse_duration(args.period)
    except ValueError as error:
        parser.error(str(error))
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            status = _status(args.url, "GET", max(0.1, min(1.0, period * 2)))
            if status == 200:
                return 0
            last = f"HTTP {status}"
        except OSError as error:
            last = str(getattr(error, "reason", error))
        if time.monotonic() + period > deadline:
            print(
                f"pilotfish wait: {args.url} not ready after {args.timeout}: {last}",
                file=sys.stderr,
            )
            return 1
        time.sleep(period)


def drain(argv: list[str]) -> int:
    args = drain_parser().parse_args(argv)
    try:
        status = _status(args.url, "POST", 5.0)
    except OSError as error:
        # Nothing to drain if the proxy is already gone; say so, but do not fail the hook.
        print(f"pilotfish drain: {args.url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return 0
    if status != 200:
        print(f"pilotfish drain: {args.url} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0
