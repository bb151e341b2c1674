"""The access log: Istio's JSON fields (or Envoy's default text line), written by a thread.

The event loop only formats a line and appends it to a list. The list is handed to a
writer thread in chunks (every `FLUSH_INTERVAL`, or sooner when it grows), so a slow
disk or a stalled stdout reader never blocks the loop; past `MAX_PENDING_BYTES` queued
in the thread, chunks are dropped and counted instead of growing memory without bound.
Each chunk is one write(2) of whole lines on an O_APPEND descriptor, so the workers'
lines do not interleave within a line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from json.encoder import encode_basestring_ascii

# 0.2 s: a line reaches the file soon enough to tail, and a write(2) per worker carries
# many lines under load.
FLUSH_INTERVAL = 0.2
FLUSH_LINES = 512
MAX_PENDING_BYTES = 16 * 1024 * 1024

_quote = encode_basestring_ascii


def json_string(value: bytes | str | None) -> str:
    """A JSON string (ASCII, escaped) or null."""
    if value is None:
        return "null"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(_quote(value))


class UtcClock:
    """RFC 3339 UTC timestamps with milliseconds; the second's prefix is formatted once."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, unix: float) -> str:
        second = int(unix)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%03dZ" % (self._prefix, (unix - second) * 1000)  # noqa: UP031 (faster)


class AccessLogWriter:
    """Lines in, whole chunks out to a file descriptor from a daemon thread."""

    def __init__(self, path: str) -> None:
        if path == "-":
            self.fd = os.dup(1)
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.lines: list[str] = []
        self.written = 0
        self.dropped = 0
        self._pending = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pilotfish-access-log", daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        lines = self.lines
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        lines = self.lines
        if not lines:
            return
        count = len(lines)
        chunk = "".join(lines).encode("utf-8", "replace")
        self.lines = []
        with self._lock:
            if self._pending + len(chunk) > MAX_PENDING_BYTES:
                self.dropped += count
                return
            self._pending += len(chunk)
        self.written += count
        self._queue.put(chunk)

    def close(self, timeout: float = 1.0) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                break
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:
                pass  # a full disk or closed stdout must not stop the proxy
            with self._lock:
                self._pending -= len(chunk)
        with contextlib.suppress(OSError):
            os.close(self.fd)
