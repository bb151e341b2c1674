"""Alternating A/B runs of one measurement on two checkouts, for the noisy shared machines.

A figure taken once moves by a third between minutes here; two builds measured in
alternation, pair after pair, see the same drift, and the ratio of their medians is
what a change is judged by. Used by bench/h2_codec.py and bench/grpc_sequential.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path


def alternate(
    this: Path, other: Path, pairs: int, measure: Callable[[Path], float], unit: str
) -> None:
    """Run `measure` on `this` then `other`, `pairs` times; print each and the medians."""
    results: dict[Path, list[float]] = {this: [], other: []}
    for _ in range(pairs):
        for checkout, values in results.items():
            value = measure(checkout)
            values.append(value)
            print(f"{checkout}: {value:.2f} {unit}", flush=True)
    ours, theirs = (statistics.median(values) for values in results.values())
    print(f"median {ours:.2f} vs {theirs:.2f} {unit}: {this} is {ours / theirs:.3f} x {other}")
