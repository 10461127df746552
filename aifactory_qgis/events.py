"""Reading the worker's JSON-lines event stream (DESIGN.md, "Events") without Qt.

Bytes arrive in arbitrary chunks (QProcess reads, Ray log polls, a subprocess pipe), so
:class:`EventStream` buffers the incomplete last line. A line that is not a JSON event (a library that
printed to stdout, Ray's own log lines) becomes a ``log`` event rather than being lost or crashing the
reader. :class:`JobState` folds events into what the docks display; the three runners share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("progress", "metric", "artifact", "log", "done", "error")


def parse_line(line: str) -> dict[str, Any] | None:
    """One event from one line; None for blank lines; non-event text as a ``log`` event."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("event") in KINDS:
            return event
    return {"event": "log", "level": "info", "message": text}


class EventStream:
    """Incremental parser: feed chunks, get complete events."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: bytes | str) -> Iterator[dict[str, Any]]:
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        lines = (self._pending + chunk).split("\n")
        self._pending = lines.pop()
        for line in lines:
            event = parse_line(line)
            if event is not None:
                yield event

    def close(self) -> Iterator[dict[str, Any]]:
        """Flush a last line that had no newline."""
        pending, self._pending = self._pending, ""
        event = parse_line(pending)
        if event is not None:
            yield event


@dataclass
class JobState:
    """What a job has reported so far: progress, metrics, artifacts, final status."""

    task: str = ""
    value: float = 0.0
    message: str = ""
    metrics: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    artifacts: list[dict[str, str]] = field(default_factory=list)
    status: str | None = None
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.task = str(event.get("task", ""))
            self.value = min(1.0, max(0.0, float(event.get("value", 0.0))))
            self.message = str(event.get("message", ""))
        elif kind == "metric":
            self.metrics[str(event.get("name"))] = (float(event.get("value", float("nan"))), event.get("step"))
        elif kind == "artifact":
            self.artifacts.append({"kind": str(event.get("kind", "")),
                                   "path": str(event.get("path") or event.get("uri") or "")})
        elif kind == "done":
            self.status = str(event.get("status", "ok"))
        elif kind == "error":
            self.error = str(event.get("message", ""))

    @property
    def percent(self) -> int:
        return round(self.value * 100)
