"""Helpers shared by the benchmarks: alternated or bracketed repeats, peak RSS of a fresh subprocess.

The machines are shared and noisy, so benchmarks report ratios of A and B measured in the same run,
alternating A and B and taking medians, never a bare absolute time against a threshold. Where one run
takes minutes, the host's speed drifts between A and B: :func:`bracketed` times each B between two A's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def timed(func: Callable[[], Any]) -> float:
    """Seconds one call of ``func`` takes."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def alternate(a: Callable[[], Any], b: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, run alternately ``repeats`` times each."""
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(a))
        times_b.append(timed(b))
    return statistics.median(times_a), statistics.median(times_b)


def bracketed(outer: Callable[[], Any], inner: Callable[[], Any], repeats: int = 1) -> list[tuple[float, float]]:
    """Seconds of ``inner`` and of ``outer`` around it, ``repeats`` times: outer, inner, outer, inner, …, outer.

    Each ``inner`` run is paired with the mean of the two ``outer`` runs just before and after it (an outer run
    between two inner ones serves both), so a host whose speed drifts steadily over the minutes they take
    favours neither side (simply alternated, the side run second takes the drift). Returns (inner, outer mean)
    per repeat.
    """
    outers, inners = [timed(outer)], []
    for _ in range(repeats):
        inners.append(timed(inner))
        outers.append(timed(outer))
    return [(inners[i], (outers[i] + outers[i + 1]) / 2) for i in range(repeats)]


def peak_rss_mb(code: str) -> tuple[float, dict[str, Any]]:
    """Run Python ``code`` in a fresh interpreter; return its peak RSS (MB) and the JSON objects it printed
    (one line each), merged.

    The peak is the interpreter's own high-water mark (``VmHWM``): Linux carries ``ru_maxrss`` across
    ``exec``, so it would report the benchmark's own RSS whenever that is larger.
    """
    wrapper = code + "\nimport json as _j\n_hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]" \
                     "\nprint(_j.dumps({'peak_rss_mb': int(_hwm[0].split()[1]) / 1024}))\n"
    result = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    data: dict[str, Any] = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            data.update(json.loads(line))
    return float(data["peak_rss_mb"]), data


def row(name: str, value: str, note: str = "") -> None:
    print(f"{name:<44} {value:>14}  {note}", flush=True)
