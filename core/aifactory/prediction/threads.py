"""Small thread helpers that overlap reading, computing and writing.

The reader (GDAL decoding releases the GIL) runs ahead of the model through :func:`prefetch`; the model
may run several batches at once through :func:`in_order` (see :mod:`.rows` for why); the
writer side (uint8 conversion, COG writes, vectorization) runs behind it in a :class:`Sink`. Queues are
short, so memory stays a few batches: reading a batch takes a small fraction of its forward pass, so one
batch ahead keeps the model fed (a float32 batch of 8 tiles of 512 px is 32 MB, and every batch queued
counts in the peak RSS). Exceptions in a thread surface in the caller, and each thread
runs in a copy of the caller's context so progress goes to the caller's reporter.

How freed buffers are kept between batches and threads is :mod:`aifactory.heap`'s business; the
:class:`Sink` lets it trim the heap after each strip.

Both threads keep the process's scheduling. Measured and not kept (20000 × 2304 crop, 2 CPUs, runs alternated
in one process, 5 each): ``SCHED_IDLE`` for them, so that they run only where the model's threads leave a core,
gained 1.4 % (within noise) and starves them once other processes keep the cores busy (a crop prediction beside
two busy processes: 42–49 s as is, more than 8 min under ``SCHED_IDLE``; ``nice`` starves the same way by design);
0.1 ms time slices (``sched_setattr``, Linux ≥ 6.12) changed nothing (24.9 against 25.0 s).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from aifactory.heap import release_free_heap

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set while waiting for room; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead of the consumer."""
    q: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if not _put(q, (item, None), stop):
                    return
            _put(q, (_END, None), stop)
        except BaseException as exc:  # handed to the consumer, re-raised there
            _put(q, (_END, exc), stop)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                              name="aifactory-reader")
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def in_order(items: Iterator[T], func: Callable[[T], R], workers: int, wanted: Callable[[T], bool],
             together: Callable[[], None] | None = None) -> Iterator[tuple[T, R | None]]:
    """``(item, func(item))`` for each of ``items`` in their order, ``func`` running on up to ``workers`` items
    at once in a pool of threads; items that are not ``wanted`` pass through as ``(item, None)``.

    The first wanted item runs alone (whatever it settles, such as a precision decided on the first batch, is
    settled before any other runs); ``together`` is called once it is done, before the others run at once.
    After it, one item more than ``workers`` is handed to the pool: a worker that finishes starts the queued one
    at once instead of waiting while the consumer takes the result in (blending, on the CPU, 1 ms a tile) and
    fetches the next item. Measured on the 20000 × 2304 crop (2 CPUs, two passes, alternated, 5 runs each):
    predict 18.7 → 17.8 s. Closing the iterator waits for the items still running.
    """
    pending: deque[tuple[T, Future[R] | None]] = deque()
    limit = 1
    with ThreadPoolExecutor(workers, thread_name_prefix="aifactory-model") as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(contextvars.copy_context().run, func, item) if wanted(item)
                                else None))
                while pending and (pending[0][1] is None or sum(f is not None for _, f in pending) >= limit):
                    head, future = pending.popleft()
                    yield head, None if future is None else future.result()
                    if future is not None and limit == 1:
                        if together is not None:
                            together()
                        limit = workers + 1
            while pending:
                head, future = pending.popleft()
                yield head, None if future is None else future.result()
        finally:
            for _, future in pending:
                if future is not None:
                    future.cancel()


class Sink(Generic[T]):
    """Process each item with every one of ``funcs``, each func in its own background thread taking the items in
    order; :meth:`close` waits for the rest.

    Several funcs share the work on one item (prediction: the scores COG and the vectorizer, each ~half of the
    writer side, see :class:`aifactory.prediction.predict.RowWriter`); each thread has its own queue of
    ``depth``, so the slowest sets the pace and no more items are alive than with one thread. Items are big
    buffers (raster-wide strips): each thread drops its reference as soon as it is done with an item and trims
    the free heap then (:func:`release_free_heap`).
    """

    def __init__(self, *funcs: Callable[[T], None], depth: int = 2) -> None:
        if not funcs:
            raise ValueError("Sink needs at least one function")
        self._queues: list[queue.Queue[Any]] = [queue.Queue(depth) for _ in funcs]
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(self._work, func, q), daemon=True,
                             name="aifactory-writer" if len(funcs) == 1 else
                             f"aifactory-writer-{getattr(func, '__name__', index)}")
            for index, (func, q) in enumerate(zip(funcs, self._queues, strict=True))]
        for thread in self._threads:
            thread.start()

    def _work(self, func: Callable[[T], None], items: queue.Queue[Any]) -> None:
        while True:
            item = items.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    func(item)
                except BaseException as exc:
                    with self._lock:
                        self._error = self._error or exc
                    self._stop.set()
            item = None  # not kept alive while waiting for the next one
            release_free_heap()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        self._raise()
        for items in self._queues:
            _put(items, item, self._stop)
        self._raise()

    def close(self) -> None:
        """Wait until every item is processed; re-raise the first error of the threads."""
        for items in self._queues:
            items.put(_END)
        for thread in self._threads:
            thread.join()
        self._raise()

    def cancel(self) -> None:
        """Stop without processing what is queued."""
        self._stop.set()
        with self._lock:
            self._error = self._error or RuntimeError("cancelled")
        for items in self._queues:
            while True:
                try:
                    items.get_nowait()
                except queue.Empty:
                    break
            items.put(_END)
        for thread in self._threads:
            thread.join()
