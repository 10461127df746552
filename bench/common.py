"""Helpers shared by the benchmarks: alternated repeats with medians, peak RSS of a fresh subprocess.

The machines are shared and noisy, so benchmarks report ratios of A and B measured in the same run,
alternating A and B and taking medians, never a bare absolute time against a threshold.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def alternate(a: Callable[[], Any], b: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, run alternately ``repeats`` times each."""
    times_a, times_b = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        a()
        times_a.append(time.perf_counter() - start)
        start = time.perf_counter()
        b()
        times_b.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def peak_rss_mb(code: str) -> tuple[float, dict[str, Any]]:
    """Run Python ``code`` in a fresh interpreter; return its peak RSS (MB) and the JSON it printed last.

    The peak is the interpreter's own high-water mark (``VmHWM``): Linux carries ``ru_maxrss`` across
    ``exec``, so it would report the benchmark's own RSS whenever that is larger.
    """
    wrapper = code + "\nimport json as _j\n_hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]" \
                     "\nprint(_j.dumps({'peak_rss_mb': int(_hwm[0].split()[1]) / 1024}))\n"
    result = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1])
    return float(data["peak_rss_mb"]), data


def row(name: str, value: str, note: str = "") -> None:
    print(f"{name:<44} {value:>14}  {note}", flush=True)
