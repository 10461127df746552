"""Where one predict's CPU time goes (``python -m bench.bench_predict --threads``): per thread, and idle by phase.

η is the model's share of the time, so what is not the model is what to cut: this runs one ``predict()`` and
prints the CPU seconds of each kind of thread (the model passes, the reader, the writer, the main thread that
loads the model and blends, and the others: OpenMP and GDAL threads) and the idle CPU in three phases: before the
first strip of rows is out (loading the model, the first tile row), the steady state, and after the last strip
(writing it, the COG conversion, the preview). A steady state near the bare forward's own idle share means the
cores are kept busy, and the remaining gap is CPU work beside the model.

Linux only (``/proc/self/task``). A monitor thread samples every 50 ms (its own CPU is left out); a thread that
ends between two samples loses at most that interval's CPU, so short-lived threads are slightly under-counted.
The idle share of the bare forward, sampled the same way on this host: 0.9 % (the sampler and the host).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import row

SAMPLE_SECONDS = 0.05
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(stat_path: str) -> float | None:
    """User + system CPU seconds from a ``/proc/.../stat`` file; None once the thread is gone."""
    try:
        with open(stat_path) as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def _kind(name: str | None, tid: int) -> str:
    """The kind of thread a predict runs, by the names its threads are given (:mod:`aifactory.prediction.threads`)."""
    if tid == os.getpid():
        return "main (loading the model, blending)"
    if name is None:
        return "other (OpenMP, GDAL)"
    if name.startswith("aifactory-model"):
        return "model passes"
    if name.startswith("aifactory-writer-"):  # one of the writer's threads (scores, detections)
        return f"writer ({name.removeprefix('aifactory-writer-')})"
    return {"aifactory-reader": "reader", "aifactory-writer": "writer"}.get(name, f"other ({name})")


class CpuMonitor:
    """Samples every thread's CPU and the process's while the block runs (a context manager)."""

    def __init__(self) -> None:
        self.threads: dict[int, tuple[float, float]] = {}  # tid → first and last CPU seconds seen
        self.names: dict[int, str] = {}  # tid → Python thread name, once known (a new thread gets it a moment late)
        self.process: list[tuple[float, float]] = []  # (monotonic time, process CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)
        self._started = False  # threads first seen once started were created during the block: counted from 0

    def _sample(self) -> None:
        self.names.update((thread.native_id, thread.name) for thread in threading.enumerate()
                          if thread.native_id is not None)
        for entry in os.listdir("/proc/self/task"):
            tid = int(entry)
            seconds = _cpu_seconds(f"/proc/self/task/{tid}/stat")
            if seconds is None or self.names.get(tid) == "cpu-monitor":
                continue
            first, _ = self.threads.get(tid, (0.0 if self._started else seconds, 0.0))
            self.threads[tid] = first, seconds
        process = _cpu_seconds("/proc/self/stat")
        if process is not None:
            self.process.append((time.monotonic(), process))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> CpuMonitor:
        self._sample()
        self._started = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_kind(self) -> dict[str, float]:
        """CPU seconds used during the block, summed by kind of thread (threads alive before it count too)."""
        totals: dict[str, float] = defaultdict(float)
        for tid, (first, last) in self.threads.items():
            totals[_kind(self.names.get(tid), tid)] += last - first
        return dict(totals)

    def idle(self, start: float, stop: float, cores: int) -> tuple[float, float]:
        """(wall seconds, idle core-seconds) between two monotonic times, from the samples inside them."""
        inside = [(at, cpu) for at, cpu in self.process if start <= at <= stop]
        if len(inside) < 2:
            return 0.0, 0.0
        wall = inside[-1][0] - inside[0][0]
        return wall, cores * wall - (inside[-1][1] - inside[0][1])


def predict_cpu_use(run: Path, raster: Path, out: Path, batch: int, bare_forward_cpu: float = 0.0,
                    device: str = "auto") -> None:
    """One predict of ``raster`` with ``run`` under a :class:`CpuMonitor`; prints the rows described above.
    ``bare_forward_cpu``: CPU seconds of the bare forward's passes on the same tiles (0: unknown), to show how much
    more the model passes use inside predict (normalising, partial batches, the heap's and caches' state)."""
    from aifactory.prediction import predict
    from aifactory.progress import CallbackReporter, use_reporter

    strips: list[float] = []  # when each strip of rows was handed to the writer

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and event.get("task") == "predict" and event["value"] > 0:
            strips.append(time.monotonic())

    cores = len(os.sched_getaffinity(0))
    with use_reporter(CallbackReporter(on_event)), CpuMonitor() as monitor:
        start = time.monotonic()
        result = predict([run], raster, out, batch_size=batch, device=device)
        stop = time.monotonic()
    used = monitor.by_kind()
    total = sum(used.values())
    row("CPU: predict", f"{stop - start:.1f} s", f"{result.tiles_predicted} tiles, {result.passes} passes at once, "
        f"{result.precision}; {total:.1f} CPU-s on {cores} CPUs ({total / (stop - start):.2f} busy)")
    for kind, seconds in sorted(used.items(), key=lambda item: -item[1]):
        if seconds >= 0.05:
            row(f"CPU: {kind}", f"{seconds:.1f} s", f"{1000 * seconds / result.tiles_predicted:.1f} ms a tile")
    if bare_forward_cpu > 0 and "model passes" in used:
        extra = used["model passes"] - bare_forward_cpu
        per_tile = 1000 * extra / result.tiles_predicted
        row("CPU: model passes beyond the bare forward", f"{extra:.1f} s",
            f"{per_tile:.1f} ms a tile; the bare forward's passes: {bare_forward_cpu:.1f} s")
    if strips:
        phases = {"before the first strip": (start, strips[0]), "steady state": (strips[0], strips[-1]),
                  "after the last strip": (strips[-1], stop)}
        for name, (begin, end) in phases.items():
            wall, idle = monitor.idle(begin, end, cores)
            share = idle / max(cores * wall, 1e-9)
            row(f"CPU idle: {name}", f"{idle:.1f} core-s", f"of {cores * wall:.1f} ({share:.1%})")
