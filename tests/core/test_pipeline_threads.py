"""The prediction pipeline's reader and writer threads: items in order, errors raised in the caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from aifactory.prediction.threads import Sink, prefetch


def test_prefetch_keeps_order_and_raises_the_readers_error_in_the_consumer():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("band 5 missing")

    with pytest.raises(ValueError, match="band 5 missing"):
        list(prefetch(failing()))


def test_sink_processes_in_order_and_raises_the_writers_error_on_close():
    seen: list[int] = []
    sink: Sink[int] = Sink(seen.append, depth=1)
    for value in range(20):
        sink.put(value)
    sink.close()
    assert seen == list(range(20))

    def fail(value: int) -> None:
        raise OSError(f"disk full at {value}")

    failing: Sink[int] = Sink(fail)
    failing.put(3)
    with pytest.raises(OSError, match="disk full at 3"):
        failing.close()


def test_sink_cancel_drops_what_is_queued_and_waits_for_the_item_in_hand():
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow(value: int) -> None:
        started.set()
        release.wait(10)
        seen.append(value)

    sink: Sink[int] = Sink(slow, depth=2)
    sink.put(0)
    assert started.wait(10)
    sink.put(1)
    sink.put(2)
    threading.Timer(0.2, release.set).start()
    sink.cancel()
    assert seen == [0]
    with pytest.raises(RuntimeError, match="cancelled"):
        sink.put(3)
