"""Which build of the hot path runs: the mypyc-compiled modules or their Python source.

`setup.py` compiles the modules named in `HOT_PATH` with mypyc (the mypy project's
compiler: the same annotated Python, as C extension modules), which cuts their CPU per
request by about a third. The source stays the truth; the compiled build is a cache
of it, and a stale cache must never run. So at import time, when a compiled module is
older than its source (an edit not yet rebuilt), when only some are compiled, or when
`PILOTFISH_PURE_PYTHON=1` asks for it, every hot-path module loads from its `.py`
instead. All or none: an interpreted class cannot subclass a compiled one.

Rebuild after editing a hot-path module with `python3 setup.py build_ext --inplace`
(`scripts/test.sh` does it when needed).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

# The per-request modules, and what they import on the per-request path. Their
# classes may only be subclassed by other modules on this list, unless marked
# `@mypyc_attr(allow_interpreted_subclasses=True)`.
HOT_PATH = (
    "proxy.core.messages",
    "proxy.core.addresses",
    "proxy.core.sniff",
    "proxy.core.headers",
    "proxy.core.ids",
    "proxy.core.codecs.base",
    "proxy.core.retry",
    "proxy.core.codecs.h1_framing",
    "proxy.core.codecs.h1_fields",
    "proxy.core.codecs.h1_llhttp",
    "proxy.core.codecs.h1_llhttp_server",
    "proxy.core.codecs.h1_llhttp_client",
    "proxy.core.codecs.h1_h11",  # not per request by default, but subclasses h1_framing
    "proxy.runtime.exchange",
    "proxy.runtime.http1",
    "proxy.runtime.retrying",
    "proxy.runtime.deadlines",
    "proxy.runtime.downstream",
    "proxy.runtime.tcp_proxy",
    "proxy.runtime.upstream",
    "proxy.runtime.worker",
    "proxy.telemetry.stats",
    "proxy.telemetry.pipeline",
    "proxy.telemetry.protowire",
    "proxy.telemetry.peer",
    "proxy.telemetry.otlp",
    "proxy.telemetry.tracing",
    "proxy.runtime.h2_downstream",
    "proxy.runtime.h2_upstream",
    "proxy.core.codecs.h2_huffman",
    "proxy.core.codecs.h2_hpack",
    "proxy.core.codecs.h2_steps",
    "proxy.core.codecs.h2_connection",
    "proxy.core.codecs.h2",
    "proxy.core.grpc_frames",  # each gRPC DATA frame, both ways
)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


def source_path(module: str) -> str:
    return os.path.join(_ROOT, *module.split(".")) + ".py"


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def state() -> str:
    """`compiled`, `source` (nothing built) or `stale` (built, but older than the source)."""
    built = 0
    for module in HOT_PATH:
        source = source_path(module)
        compiled = _mtime(source[: -len(".py")] + _EXTENSION)
        if compiled is None:
            continue
        built += 1
        source_time = _mtime(source)
        if source_time is not None and source_time > compiled:
            return "stale"
    if built == 0:
        return "source"
    return "compiled" if built == len(HOT_PATH) else "stale"


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the hot-path modules' `.py` files ahead of any compiled extension."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_PATH:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


# Which build this process runs ("compiled" or "source"), set once by `choose()`.
BUILD = "source"


def choose() -> str:
    """Pick the build for this process (`proxy/__init__.py` calls it before anything else)."""
    global BUILD
    found = state()
    if found == "stale" or (found == "compiled" and os.environ.get("PILOTFISH_PURE_PYTHON") == "1"):
        if found == "stale":
            print(
                "pilotfish: the compiled hot path is older than its source; running the source "
                "(rebuild: python3 setup.py build_ext --inplace)",
                file=sys.stderr,
            )
        found = "source"
        if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, _SourceFinder())
    BUILD = found
    return found
