"""MLflow adapter: parameters, metrics and artifacts of a run, never allowed to kill the run.

The default store needs nothing running: a SQLite database ``mlruns.db`` in the run directory's parent
(so sibling runs share one experiment view) with artifacts in ``mlartifacts/`` next to it; a team points
``uri`` at its MLflow server instead. mlflow-skinny's ``MlflowClient`` is used directly (not the fluent
``mlflow.start_run`` API) so that no process-global active run leaks between trainings in one process.
Any tracking failure becomes one warning through the progress reporter and turns tracking off for the
rest of the run: the training itself, its run directory and checkpoints are the source of truth.

``uri="none"`` disables tracking. A URI a user gives is checked before the training starts
(:func:`aifactory.tracking.store.check_store`): a wrong store is then an error, not a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aifactory.progress import reporter

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_MAX_PARAM = 500


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{run_dir.resolve().parent / 'mlruns.db'}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"a.b": "value"}`` strings (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM]
    return flat


class Tracker:
    """One MLflow run; every method is a no-op once tracking is off."""

    def __init__(self, uri: str | None, experiment: str, run_dir: Path) -> None:
        self.uri = uri or default_uri(run_dir)
        self.experiment = experiment
        self.run_dir = run_dir
        self.run_id: str | None = None
        self._client: Any = None
        self.enabled = self.uri.lower() != "none"

    def _fail(self, action: str, exc: BaseException) -> None:
        self.enabled = False
        self._client = None
        reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
        reporter().warning(f"tracking off ({action} failed on {self.uri}: {reason})")

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str], run_id: str | None = None,
              run_name: str | None = None) -> str | None:
        """Create the MLflow run (or reopen ``run_id`` on resume); returns its id, or None if tracking is off."""
        if not self.enabled:
            return None
        try:
            from mlflow.entities import Param, RunStatus
            from mlflow.tracking import MlflowClient

            for name in ("mlflow", "alembic"):  # after the import: mlflow sets its own levels when imported
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(self.uri)
            if run_id is not None:
                self._client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
                self.run_id = run_id
                return run_id
            found = self._client.get_experiment_by_name(self.experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                artifacts = None
                if self.uri.startswith("sqlite:///"):
                    artifacts = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
                experiment_id = self._client.create_experiment(self.experiment, artifact_location=artifacts)
            run = self._client.create_run(experiment_id, run_name=run_name or self.run_dir.name, tags=dict(tags))
            self.run_id = run.info.run_id
            items = [Param(k, v) for k, v in flatten(params).items()]
            for i in range(0, len(items), 100):
                self._client.log_batch(self.run_id, params=items[i:i + 100])
        except Exception as exc:  # tracking must never kill a training
            self._fail("start", exc)
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled or self.run_id is None:
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        except Exception as exc:
            self._fail("log_metrics", exc)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        try:
            self._client.log_artifact(self.run_id, str(path), folder)
        except Exception as exc:
            self._fail("log_artifact", exc)

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled or self.run_id is None:
            return
        try:
            self._client.set_terminated(self.run_id, status)
        except Exception as exc:
            self._fail("finish", exc)
