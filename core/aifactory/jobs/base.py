"""What every runner shares: the job statuses and the small protocol a runner implements.

A runner knows how to start a job, look at it, stop it and bring its files back; everything about
history (the ledger) and presentation (the CLI) lives above it in :mod:`aifactory.jobs.service`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aifactory.io.atomic import atomic_path
from aifactory.io.output_paths import check_file_outputs
from aifactory.progress import reporter

if TYPE_CHECKING:
    from aifactory.coderef import CodeRef
    from aifactory.jobs.ledger import JobRecord

STATUSES = ("pending", "running", "succeeded", "failed", "stopped")
TERMINAL = frozenset({"succeeded", "failed", "stopped"})


def entrypoint(python: str, pipeline: str, workdir: str) -> list[str]:
    """The command every runner starts: the pipeline orchestrator with events on stdout."""
    return [python, "-m", "aifactory.cli", "run", pipeline, "--events", "jsonl", "-o", workdir]


def copy_from_workdir(workdir: Path, paths: list[str] | None, out_dir: Path) -> list[Path]:
    """Copy files of a visible job workdir (all of them for ``None``) into ``out_dir`` at the same
    relative place, each atomically.

    Only files inside the workdir are copied: a job's event stream does not get to name arbitrary
    files of the machine it ran on.
    """
    root = workdir.expanduser().resolve()
    if paths is None:
        paths = [str(p) for p in sorted(root.rglob("*")) if p.is_file()]
    check_file_outputs([out_dir / (root / name).resolve().relative_to(root) for name in paths
                        if root in (root / name).resolve().parents])  # all or none: not a part, then a refusal
    copied = []
    for name in paths:
        source = (root / name).resolve()
        if root not in source.parents:
            reporter().warning(f"{name}: outside the job's workdir {root}, not copied")
            continue
        if not source.is_file():
            reporter().warning(f"{source}: no such file (is the job's workdir visible from here?)")
            continue
        target = out_dir / source.relative_to(root)
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        copied.append(target)
        reporter().progress("fetch", len(copied) / len(paths), target.name)
    return copied


@dataclass
class Poll:
    """A runner's view of a job at one moment.

    ``settled`` is True when the runner itself reported a final state; a state inferred from an
    unreachable cluster is not settled, so a later refresh may still correct it.
    """

    status: str
    message: str = ""
    settled: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    remote_status: str | None = None
    started: float | None = None
    finished: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """A place where jobs run."""

    name: str

    def submit(self, record: JobRecord, pipeline: Path, code: CodeRef) -> dict[str, Any]:
        """Start the job; return the ledger fields to store (pid, address, extra...)."""

    def poll(self, record: JobRecord) -> Poll:
        """The job's current state and every event it has emitted so far."""

    def stop(self, record: JobRecord) -> None:
        """Ask the job to stop (returns once the request is delivered)."""

    def raw_logs(self, record: JobRecord) -> str:
        """Everything the job wrote, as the runner keeps it."""

    def fetch(self, record: JobRecord, paths: list[str] | None, out_dir: Path) -> list[Path]:
        """Copy the job's files ``paths`` (as the worker names them; None: its whole workdir) into ``out_dir``."""
