"""Job specifications and the job history file, without Qt.

The history is a small JSON file under the QGIS profile (most recent first, bounded), written
atomically; the jobs stage's ledger will replace it later.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import read_json, write_json_atomic

LOCAL = "local"
HISTORY_LIMIT = 200
FINAL = ("ok", "failed", "stopped")


@dataclass
class JobSpec:
    """One worker command and where to run it.

    ``args`` follow ``python -m aifactory.cli`` (see :mod:`aifactory_qgis.worker`); ``outputs`` are files
    to load as layers when the job succeeds (artifact events add more); ``runner`` is ``local`` or the
    name of a Ray cluster from the settings.
    """

    kind: str
    title: str
    args: list[str]
    runner: str = LOCAL
    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0
    code_ref: str = ""
    cwd: str = ""
    outputs: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass
class JobRecord:
    """A finished (or running) job as the history list shows it."""

    id: str
    kind: str
    title: str
    runner: str
    args: list[str]
    status: str = "running"
    message: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outputs: list[str] = field(default_factory=list)
    remote_id: str = ""
    # what "Run again" needs besides the command (absent from histories of older versions: defaults)
    cwd: str = ""
    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0
    code_ref: str = ""

    @classmethod
    def from_spec(cls, spec: JobSpec) -> JobRecord:
        return cls(id=spec.id, kind=spec.kind, title=spec.title, runner=spec.runner, args=list(spec.args),
                   outputs=list(spec.outputs), cwd=spec.cwd, cpus=spec.cpus, gpus=spec.gpus,
                   memory_gb=spec.memory_gb, code_ref=spec.code_ref)

    def to_spec(self) -> JobSpec:
        """The same command, folder, machine and resources as a new job (a new id: both stay in the history)."""
        return JobSpec(kind=self.kind, title=self.title, args=list(self.args), runner=self.runner, cpus=self.cpus,
                       gpus=self.gpus, memory_gb=self.memory_gb, code_ref=self.code_ref, cwd=self.cwd,
                       outputs=list(dict.fromkeys(self.outputs)))

    def label(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))
        return f"{when}  {self.status:<8} {self.title} ({self.runner})"


class JobHistory:
    """Records in a JSON file, newest first."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        rows = read_json(self.path, [])
        self.records: list[JobRecord] = []
        for row in rows if isinstance(rows, list) else []:
            try:
                self.records.append(JobRecord(**row))
            except TypeError:
                continue  # a row from another version: skip rather than lose the rest

    def upsert(self, record: JobRecord) -> None:
        self.records = [r for r in self.records if r.id != record.id]
        self.records.insert(0, record)
        del self.records[HISTORY_LIMIT:]
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, [asdict(r) for r in self.records])

    def get(self, job_id: str) -> JobRecord | None:
        return next((r for r in self.records if r.id == job_id), None)
