"""The prediction pipeline's reader, model and writer threads: items in order, errors raised in the caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from aifactory.prediction.threads import Sink, in_order, prefetch


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


def test_a_sink_of_two_funcs_gives_each_every_item_in_order_in_its_own_thread_and_raises_either_error():
    seen: dict[str, list[tuple[int, str]]] = {"scores": [], "detections": []}

    def scores(value: int) -> None:
        seen["scores"].append((value, threading.current_thread().name))

    def detections(value: int) -> None:
        time.sleep(0.002)  # the slower half: the faster one must not be held back item by item
        seen["detections"].append((value, threading.current_thread().name))

    sink: Sink[int] = Sink(scores, detections, depth=1)
    for value in range(30):
        sink.put(value)
    sink.close()
    assert [v for v, _ in seen["scores"]] == [v for v, _ in seen["detections"]] == list(range(30))
    assert {name for _, name in seen["scores"]} == {"aifactory-writer-scores"}
    assert {name for _, name in seen["detections"]} == {"aifactory-writer-detections"}

    def fail(value: int) -> None:
        if value == 2:
            raise OSError("GeoPackage: disk full")

    failing: Sink[int] = Sink(lambda value: None, fail, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for value in range(50):
            failing.put(value)
        failing.close()


def test_a_sink_of_two_funcs_holds_no_more_items_than_one():
    """The slow func's queue sets the pace: the caller blocks once it has ``depth`` items waiting there."""
    gate = threading.Event()
    handed: list[int] = []

    def slow(value: int) -> None:
        gate.wait(10)

    sink: Sink[int] = Sink(lambda value: None, slow, depth=1)
    putter = threading.Thread(target=lambda: [sink.put(v) or handed.append(v) for v in range(5)])
    putter.start()
    deadline = time.monotonic() + 10
    while len(handed) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert handed == [0, 1]  # one in the slow func's hands, one in its queue; the third put waits
    gate.set()
    putter.join(10)
    sink.close()
    assert handed == list(range(5))


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


def test_in_order_runs_items_at_once_yet_yields_them_in_order_with_the_unwanted_passing_through():
    running, most, first_alone = [0], [0], []
    lock = threading.Lock()
    side_by_side = threading.Barrier(2, timeout=10)  # broken (an error) unless items 1 and 2 run at once

    def slow_square(value: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            if value == 0:
                first_alone.append(running[0] == 1)
        if value in (1, 2):
            side_by_side.wait()
        time.sleep(0.02 if value % 3 else 0.05)  # later items may finish first
        with lock:
            running[0] -= 1
        return value * value

    items = [0, 1, 2, -1, 3, 4, 5, -1, 6]  # -1: a marker that is not computed (a tile row's end)
    joined: list[int] = []  # how many were running when the others were let in
    out = list(in_order(iter(items), slow_square, 2, lambda v: v >= 0, lambda: joined.append(running[0])))
    assert out == [(v, v * v if v >= 0 else None) for v in items]
    assert most[0] == 2 and first_alone == [True] and joined == [0]  # two at once, but the first item alone


def test_in_order_keeps_an_item_queued_so_a_worker_does_not_wait_for_the_consumer():
    started = {value: threading.Event() for value in range(6)}

    def work(value: int) -> int:
        started[value].set()
        return value

    for item, _ in in_order(iter(range(6)), work, 1, lambda v: True):
        if 1 <= item < 5:  # past the first item, which runs alone: the next one runs while this one is taken in
            assert started[item + 1].wait(5), f"item {item + 1} waited for the consumer to finish with item {item}"


def test_in_order_raises_the_first_error_in_the_consumer():
    def failing(value: int) -> int:
        if value == 3:
            raise ValueError("model failed on batch 3")
        return value

    seen = []
    with pytest.raises(ValueError, match="batch 3"):
        for item, _ in in_order(iter(range(10)), failing, 2, lambda v: True):
            seen.append(item)
    assert seen == [0, 1, 2]
