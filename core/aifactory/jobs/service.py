"""The job client: submit, refresh, wait, stop, read logs and fetch files, keeping the ledger current.

This is the Python API behind ``aifactory submit`` and ``aifactory jobs``. Each call reads the ledger,
asks the job's runner, and writes back what it learned (status, reason, progress, artifacts) in one
short update, so several clients can follow the same jobs. A settled job (its runner reported the
end) is never asked again; a job marked failed only because its cluster did not answer is.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aifactory.coderef import CodeRef, checkout, current_code
from aifactory.errors import AIFactoryError, ConfigError, InputError
from aifactory.jobs.base import TERMINAL, Poll, Runner
from aifactory.jobs.events import summarize
from aifactory.jobs.ledger import JobRecord, Ledger
from aifactory.jobs.local import LocalRunner
from aifactory.jobs.resources import Resources
from aifactory.jobs.security import check_access, resolve_address
from aifactory.progress import reporter

RUNNERS = ("local", "ray")
REMOTE_WORKDIR = "~/.local/share/aifactory/jobs/{id}"


class JobFailed(AIFactoryError):
    """``--wait`` saw the job end without success (exit code 1: the job failed, not the command)."""

    exit_code = 1


def new_job_id() -> str:
    return f"aif-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class JobClient:
    """Jobs of one ledger; ``token``/``insecure`` apply to every Ray address it talks to."""

    def __init__(self, ledger: Ledger, token: str | None = None, insecure: bool = False) -> None:
        self.ledger = ledger
        self.token = token
        self.insecure = insecure
        self._runners: dict[tuple[str, str], Runner] = {}

    def runner(self, kind: str, address: str) -> Runner:
        """The runner of a job (one per address, so one unreachable head costs one timeout)."""
        key = (kind, address)
        if key not in self._runners:
            if kind == "local":
                self._runners[key] = LocalRunner(self.ledger.jobs_dir)
            elif kind == "ray":
                from aifactory.jobs.ray import RayRunner
                from aifactory.jobs.rayapi import RayAPI

                for warning in check_access(address, self.token, self.insecure):
                    reporter().warning(warning)
                self._runners[key] = RayRunner(RayAPI(address, self.token))
            else:
                raise ConfigError(f"unknown runner {kind!r} (expected one of {', '.join(RUNNERS)})")
        return self._runners[key]

    def submit(self, pipeline: str | Path, runner: str = "local", address: str | None = None,
               resources: Resources | None = None, ref: str | None = None,
               shared_dir: str | Path | None = None) -> JobRecord:
        """Validate the pipeline here, record the job, start it; returns the stored record."""
        from aifactory.pipeline.spec import load_pipeline

        pipeline = Path(pipeline)
        load_pipeline(pipeline)
        if runner not in RUNNERS:
            raise ConfigError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
        job_id = new_job_id()
        code = checkout(ref) if ref else current_code() if runner == "local" else CodeRef(ref="worker environment")
        shared = Path(shared_dir).expanduser().resolve() / job_id if shared_dir else None
        if runner == "local":
            address, workdir = "local", str(shared or self.ledger.jobs_dir.resolve() / job_id / "run")
        else:
            address, workdir = resolve_address(address), str(shared or REMOTE_WORKDIR.format(id=job_id))
        handler = self.runner(runner, address)
        record = self.ledger.add(JobRecord(
            id=job_id, runner=runner, address=address, pipeline_path=str(pipeline.resolve()),
            pipeline_text=pipeline.read_text(encoding="utf-8"), workdir=workdir,
            resources=(resources or Resources()).model_dump(), code_ref=code.ref, code_commit=code.commit,
            shared=runner == "local" or shared is not None, message="submitting"))
        try:
            fields = handler.submit(record, pipeline, code)
        except BaseException:
            self.ledger.delete(job_id)  # it never reached the runner: no history to keep
            raise
        return self.ledger.update(job_id, **fields)

    def get(self, job_id: str) -> JobRecord:
        return self.ledger.get(job_id)

    def _apply(self, record: JobRecord, poll: Poll) -> JobRecord:
        summary = summarize(poll.events)
        values: dict[str, Any] = {"status": poll.status, "message": poll.message, "settled": poll.settled,
                                  "remote_status": poll.remote_status, "extra": {**record.extra, **poll.extra}}
        if summary.progress is not None:
            values.update(progress=summary.progress, progress_text=summary.progress_text)
        if summary.artifacts:
            values["artifacts"] = summary.artifacts
        if poll.started and not record.started:
            values["started"] = poll.started
        values["finished"] = (poll.finished or record.finished or time.time()) if poll.status in TERMINAL else None
        return self.ledger.update(record.id, **values)

    def poll(self, job: str | JobRecord) -> tuple[JobRecord, list[dict[str, Any]]]:
        """Refresh a job from its runner; returns the stored record and all its events so far."""
        record = self.ledger.get(job) if isinstance(job, str) else job
        if record.settled:
            return record, []
        poll = self.runner(record.runner, record.address).poll(record)
        return self._apply(record, poll), poll.events

    def refresh(self, job: str | JobRecord) -> JobRecord:
        return self.poll(job)[0]

    def wait(self, job: str | JobRecord, interval: float = 1.0,
             on_event: Callable[[dict[str, Any]], None] | None = None,
             unreachable_grace: float = 120.0) -> JobRecord:
        """Poll until the job ends, passing each new event to ``on_event``.

        A cluster that stops answering ends the wait only after ``unreachable_grace`` seconds of
        silence, so a network blip does not turn a long job into a failure.
        """
        seen, silent_since = 0, None
        while True:
            record, events = self.poll(job)
            for event in events[seen:]:
                if on_event is not None:
                    on_event(event)
            seen = max(seen, len(events))
            if record.status in TERMINAL:
                if record.settled:
                    return record
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > unreachable_grace:
                    return record
            else:
                silent_since = None
            job = record
            time.sleep(interval)

    def stop(self, job_id: str, wait_s: float = 15.0) -> JobRecord:
        """Ask the runner to stop the job and wait (briefly) until it reports the end."""
        record = self.refresh(job_id)
        if record.status in TERMINAL and record.settled:
            return record
        record = self.ledger.update(record.id, stop_requested=True)
        self.runner(record.runner, record.address).stop(record)
        deadline = time.monotonic() + wait_s
        while (record := self.refresh(record)).status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
        return record

    def events(self, job_id: str) -> list[dict[str, Any]]:
        record = self.ledger.get(job_id)
        return self.runner(record.runner, record.address).poll(record).events

    def raw_logs(self, job_id: str) -> str:
        record = self.ledger.get(job_id)
        return self.runner(record.runner, record.address).raw_logs(record)

    def fetch(self, job_id: str, out_dir: str | Path, everything: bool = False) -> list[Path]:
        """Copy the job's artifacts (or, with ``everything``, its whole workdir) into ``out_dir``."""
        record = self.refresh(job_id)
        paths = None if everything else [item["path"] for item in record.artifacts]
        if paths is not None and not paths:
            raise InputError(f"job {record.id} has reported no artifact (yet); --all fetches its whole workdir")
        return self.runner(record.runner, record.address).fetch(record, paths, Path(out_dir))
