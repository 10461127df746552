"""Reading a job's event stream back (DESIGN.md, "Events").

A job's output is not only events: Ray prefixes the driver log with its own lines, and a runner may
merge stderr into the same stream. So a line counts as an event only if it is a JSON object with a
string ``"event"`` key; anything else is kept for ``jobs logs --raw`` and ignored here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EVENT_KINDS = ("progress", "metric", "artifact", "log", "done", "error")
OUTCOMES = {"ok": "succeeded", "failed": "failed", "stopped": "stopped"}


def parse_events(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The events among ``lines`` (other lines are skipped)."""
    events = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") in EVENT_KINDS:
            events.append(event)
    return events


@dataclass
class Summary:
    """What the ledger keeps of a stream: overall progress, last step, artifacts, outcome."""

    progress: float | None = None
    progress_text: str = ""
    artifacts: list[dict[str, str]] = field(default_factory=list)
    done: str | None = None
    error: str | None = None

    @property
    def outcome(self) -> str | None:
        """Our status from the ``done`` event (None while the stream is open)."""
        return None if self.done is None else OUTCOMES.get(self.done, "failed")


def summarize(events: Iterable[dict[str, Any]]) -> Summary:
    """Fold events into a :class:`Summary`; the ``pipeline`` task's progress is the overall one."""
    summary = Summary()
    for event in events:
        kind = event["event"]
        if kind == "progress":
            value = float(event.get("value", 0.0))
            task = str(event.get("task", ""))
            if task == "pipeline" or summary.progress is None:
                summary.progress = value
            summary.progress_text = describe_progress(event)
        elif kind == "artifact" and "path" in event:
            item = {"kind": str(event.get("kind", "")), "path": str(event["path"])}
            if item not in summary.artifacts:
                summary.artifacts.append(item)
        elif kind == "done":
            summary.done = str(event.get("status", "ok"))
        elif kind == "error":
            summary.error = str(event.get("message", ""))
    return summary


def describe_progress(event: dict[str, Any]) -> str:
    message = f" {event['message']}" if event.get("message") else ""
    return f"{event.get('task') or 'working'} {float(event.get('value', 0.0)):.0%}{message}"


def render(event: dict[str, Any]) -> str:
    """One line for a person reading ``aifactory jobs logs``."""
    kind = event["event"]
    if kind == "progress":
        return f"progress  {describe_progress(event)}"
    if kind == "metric":
        step = f" (step {event['step']})" if event.get("step") is not None else ""
        return f"metric    {event.get('name')} = {event.get('value')}{step}"
    if kind == "artifact":
        return f"artifact  {event.get('kind')}: {event.get('path')}"
    if kind == "log":
        level = event.get("level", "info")
        return f"log       {'' if level == 'info' else level + ': '}{event.get('message', '')}"
    if kind == "error":
        return f"error     {event.get('message', '')}"
    return f"done      {event.get('status', '')}"
