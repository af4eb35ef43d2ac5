"""Benchmark: how fast hostile schematic bodies are refused (target: each under 100 ms).

Prints, per hostile body, the median refusal time over a few runs and its ratio to decoding one
ordinary schematic measured in the same run.

Run: .venv/bin/python -m bench.hostile_schematics
"""

from __future__ import annotations

import contextlib
import statistics
import time

from common.schematic import parse_schematic
from common.schematic.decode import SchematicDecodeError
from tests.support.hostile import HOSTILE

ORDINARY = (
    b"customization:\n  extraKernelArgs: [console=ttyS0]\n"
    b"  systemExtensions:\n    officialExtensions: [a/b]\n"
)


def median_seconds(body: bytes, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        with contextlib.suppress(SchematicDecodeError):
            parse_schematic(body)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    base = median_seconds(ORDINARY, runs=200)
    print(f"ordinary schematic decode: {base * 1e6:.0f} us (baseline)")
    worst = 0.0
    for name, body in HOSTILE.items():
        seconds = median_seconds(body)
        worst = max(worst, seconds)
        print(f"{name:20s} {len(body):7d} B  {seconds * 1e3:7.2f} ms  ({seconds / base:7.0f} x baseline)")
    print(f"worst refusal: {worst * 1e3:.2f} ms (target < 100 ms): {'OK' if worst < 0.1 else 'OVER'}")


if __name__ == "__main__":
    main()
