"""Progress and events: the one callback every long step reports through.

Stage code calls :func:`reporter` to get the active :class:`Reporter` and reports progress, metrics,
artifacts and log lines to it. The CLI installs a :class:`BarReporter` (tqdm bars on stderr) or, with
``--events jsonl``, a :class:`JsonlReporter` that writes one JSON object per line on stdout, the
protocol the QGIS plugin and the job runners read (DESIGN.md, "Events"). Library code never prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import IO, Any, TypeVar

T = TypeVar("T")


class Reporter:
    """Receives events; the base class ignores them (used by the Python API by default)."""

    def emit(self, event: dict[str, Any]) -> None:
        """Handle one event dict (``{"event": kind, ...}``)."""

    def progress(self, task: str, value: float, message: str = "") -> None:
        self.emit({"event": "progress", "task": task, "value": max(0.0, min(1.0, float(value))),
                   "message": message})

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        self.emit({"event": "metric", "name": name, "value": float(value), "step": step})

    def artifact(self, kind: str, path: str | os.PathLike[str]) -> None:
        self.emit({"event": "artifact", "kind": kind, "path": os.fspath(path)})

    def log(self, message: str, level: str = "info") -> None:
        self.emit({"event": "log", "level": level, "message": message})

    def warning(self, message: str) -> None:
        self.log(message, level="warning")

    def done(self, status: str = "ok") -> None:
        self.emit({"event": "done", "status": status})

    def error(self, message: str) -> None:
        self.emit({"event": "error", "message": message})

    def track(self, items: Iterable[T], total: int | None = None, task: str = "", message: str = "",
              unit: str = "it") -> Iterator[T]:
        """Yield ``items`` and report progress after each one (ends at 1.0)."""
        if total is None:
            total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        self.progress(task, 0.0, message)
        count = 0
        for count, item in enumerate(items, start=1):
            yield item
            if total:
                self.progress(task, count / total, message)
        if not total or count < total:
            self.progress(task, 1.0, message)


class CallbackReporter(Reporter):
    """Forwards every event to a callable (Python API users, Ray workers, tests)."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback = callback

    def emit(self, event: dict[str, Any]) -> None:
        self.callback(event)


class JsonlReporter(Reporter):
    """One JSON object per line on a stream; progress throttled to keep the stream readable.

    With ``take_stdout`` the process's real stdout (fd 1) is reserved for events: anything else that
    writes to stdout, Python or C, is redirected to stderr.
    """

    def __init__(self, stream: IO[str] | None = None, min_interval: float = 0.2, take_stdout: bool = False):
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, float]] = {}
        self.min_interval = min_interval
        if take_stdout:
            sys.stdout.flush()
            events_fd = os.dup(1)
            os.dup2(2, 1)
            sys.stdout = sys.stderr
            self.stream: IO[str] = os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")
        else:
            self.stream = stream or sys.stdout

    def emit(self, event: dict[str, Any]) -> None:
        if event["event"] == "progress":
            now = time.monotonic()
            last_time, last_value = self._last.get(event["task"], (0.0, -1.0))
            final = event["value"] >= 1.0 or event["value"] == 0.0
            if not final and now - last_time < self.min_interval and event["value"] - last_value < 0.05:
                return
            self._last[event["task"]] = (now, event["value"])
        with self._lock:
            self.stream.write(json.dumps(event, default=str) + "\n")
            self.stream.flush()


BAR_FORMAT = "{desc:<14} {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining} {postfix}"


class BarReporter(Reporter):
    """tqdm bars (one per task) and log lines on stderr, for people at a terminal.

    When stderr is not a terminal (a log file, CI), bars would print a line per refresh: progress is then
    written as plain lines, one per task every 10 % or 30 seconds.
    """

    def __init__(self, stream: IO[str] | None = None, verbose: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bars: dict[str, Any] = {}
        self._plain: dict[str, tuple[float, float]] = {}

    def _bar(self, task: str) -> Any:
        from tqdm import tqdm

        if task not in self._bars:
            self._bars[task] = tqdm(total=1000, desc=task or "working", file=self.stream, leave=True,
                                    bar_format=BAR_FORMAT,
                                    disable=not self.verbose, dynamic_ncols=True)
        return self._bars[task]

    def _plain_progress(self, event: dict[str, Any]) -> None:
        task, value = event["task"], event["value"]
        last_time, last_value = self._plain.get(task, (0.0, -1.0))
        now = time.monotonic()
        if value >= 1.0 or value - last_value >= 0.1 or now - last_time >= 30:
            self._plain[task] = (now, value)
            message = f"  {event['message']}" if event.get("message") else ""
            self._write(f"[{task or 'working'}] {value:4.0%}{message}")
        if value >= 1.0:
            self._plain.pop(task, None)

    def emit(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "progress" and not self.interactive:
            if self.verbose:
                self._plain_progress(event)
        elif kind == "progress":
            bar = self._bar(event["task"])
            target = round(event["value"] * 1000)
            if target > bar.n:
                bar.update(target - bar.n)
            if event.get("message"):
                bar.set_postfix_str(event["message"], refresh=False)
            if event["value"] >= 1.0:
                bar.close()
                self._bars.pop(event["task"], None)
        elif kind == "log" and (self.verbose or event.get("level") != "info"):
            prefix = "" if event.get("level", "info") == "info" else f"{event['level']}: "
            self._write(f"{prefix}{event['message']}")
        # "error" events are not rendered: the CLI prints the error line itself

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self.stream)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


_SILENT = Reporter()
_current: ContextVar[Reporter | None] = ContextVar("aifactory_reporter", default=None)


def reporter() -> Reporter:
    """The reporter of the current context (a silent one unless a caller installed another)."""
    return _current.get() or _SILENT


@contextlib.contextmanager
def use_reporter(new: Reporter) -> Iterator[Reporter]:
    """Install ``new`` as the current reporter for the duration of the block."""
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)
        if isinstance(new, BarReporter):
            new.close()
