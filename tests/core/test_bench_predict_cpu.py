"""The CPU monitor of ``bench.bench_predict --threads``: CPU time lands on the kind of thread that used it."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from bench.predict_cpu import CpuMonitor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")


def spin(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU, however busy the machine is."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_cpu_of_a_thread_started_inside_the_block_is_counted_under_its_kind():
    spun, release = threading.Event(), threading.Event()

    def read() -> None:
        spin(0.3)
        spun.set()
        release.wait(timeout=30)  # alive until the monitor has seen all its CPU (a busy host delays its samples)

    with CpuMonitor() as monitor:
        reader = threading.Thread(target=read, name="aifactory-reader")
        reader.start()
        assert spun.wait(timeout=30)
        samples = len(monitor.process)
        deadline = time.monotonic() + 30
        while len(monitor.process) < samples + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        reader.join()
        time.sleep(0.1)  # the monitor's next sample, with the reader gone: its CPU stays counted
    used = monitor.by_kind()
    assert 0.2 <= used["reader"] <= 0.4
    assert used.get("writer", 0.0) == 0.0 and used.get("model passes", 0.0) == 0.0
