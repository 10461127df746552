"""The local runner: the job is a detached process on this machine.

The worker starts in a new session (so a closed terminal or an exiting client does not take it down),
with stdin closed, its event stream (stdout) in ``events.jsonl`` and its stderr in ``stderr.log`` in the
job folder. The client may exit and come back: ``jobs status``/``logs`` read the ledger and those files.
The PID is stored with the process's start time (psutil), so a recycled PID is never mistaken for the
job, nor signalled. A process that is gone without a ``done`` event failed (killed, out of memory,
crashed); the last line of its stderr is the reason.

Stopping sends SIGINT to the job's process group — the CLI turns it into a ``done: stopped`` event
and atomic writers drop their partial files — then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from aifactory.coderef import REF_ENV, CodeRef
from aifactory.jobs.base import Poll, copy_from_workdir, entrypoint
from aifactory.jobs.events import parse_events, summarize
from aifactory.jobs.ledger import JobRecord

EVENTS_FILE = "events.jsonl"
STDERR_FILE = "stderr.log"

#: Popen objects of the jobs this process started, polled so that finished ones do not linger as zombies
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _default_sigint() -> None:
    # a client started in the background may ignore SIGINT; the job must not inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def last_line(path: Path) -> str:
    """The last non-empty line of a text file (the end of a traceback), '' if none."""
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, stream.seek(0, os.SEEK_END) - 8192))
            lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class LocalRunner:
    name = "local"

    def __init__(self, jobs_dir: Path, python: str | None = None, grace: float = 10.0) -> None:
        self.jobs_dir = jobs_dir
        self.python = python or sys.executable
        self.grace = grace

    def folder(self, record: JobRecord) -> Path:
        return self.jobs_dir / record.id

    def submit(self, record: JobRecord, pipeline: Path, code: CodeRef) -> dict[str, Any]:
        folder = self.folder(record)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AIFACTORY_JOB_ID": record.id}
        if code.core is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code.core), env.get("PYTHONPATH")) if p)
            env[REF_ENV] = code.ref or ""
        command = entrypoint(self.python, str(pipeline.resolve()), record.workdir)
        with open(folder / EVENTS_FILE, "wb") as events, open(folder / STDERR_FILE, "wb") as errors:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=events, stderr=errors,
                                       cwd=folder, env=env, start_new_session=True,
                                       preexec_fn=_default_sigint)
        _CHILDREN[process.pid] = process
        try:
            created = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:  # already gone: poll() will say why
            created = None
        return {"pid": process.pid, "status": "running", "started": time.time(),
                "extra": {**record.extra, "pid_created": created, "folder": str(folder)}}

    def _process(self, record: JobRecord) -> psutil.Process | None:
        """The job's live process, or None (gone, a zombie, or the PID now belongs to another process)."""
        if record.pid is None:
            return None
        child = _CHILDREN.get(record.pid)
        if child is not None and child.poll() is not None:
            return None
        try:
            process = psutil.Process(record.pid)
            created = record.extra.get("pid_created")
            if created is not None and abs(process.create_time() - created) > 1.0:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return process

    def poll(self, record: JobRecord) -> Poll:
        folder = self.folder(record)
        try:
            with open(folder / EVENTS_FILE, encoding="utf-8", errors="replace") as stream:
                events = parse_events(stream)
        except FileNotFoundError:
            events = []
        summary = summarize(events)
        if summary.outcome is not None:
            message = summary.error or ("stopped on request" if summary.outcome == "stopped" else "")
            return Poll(summary.outcome, message, settled=True, events=events, finished=time.time())
        if self._process(record) is not None:
            return Poll("running", events=events)
        if record.stop_requested:
            return Poll("stopped", "killed on request before it could report", settled=True, events=events,
                        finished=time.time())
        reason = last_line(folder / STDERR_FILE) or "no output on stderr"
        return Poll("failed", f"the worker process ended without a done event: {reason}", settled=True,
                    events=events, finished=time.time())

    def stop(self, record: JobRecord) -> None:
        process = self._process(record)
        if process is None:
            return
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=self.grace)
        except psutil.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=self.grace)
        child = _CHILDREN.pop(process.pid, None)
        if child is not None:
            child.poll()

    def raw_logs(self, record: JobRecord) -> str:
        parts = []
        for name in (EVENTS_FILE, STDERR_FILE):
            path = self.folder(record) / name
            if path.is_file():
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    def fetch(self, record: JobRecord, paths: list[str] | None, out_dir: Path) -> list[Path]:
        return copy_from_workdir(Path(record.workdir), paths, out_dir)
