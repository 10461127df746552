"""The job manager: starts jobs on the chosen runner, keeps the history, loads outputs when done."""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..layers import LOADABLE_ARTIFACTS, add_outputs
from ..settings import Settings, load_token
from ..ui import notify, tr
from .runners import Job, LocalJob, RayJob
from .spec import LOCAL, JobHistory, JobRecord, JobSpec


class JobManager(QObject):
    """Owns the running jobs (held by reference until they finish) and the history file."""

    jobStarted = pyqtSignal(object)
    jobFinished = pyqtSignal(object)

    def __init__(self, iface, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.settings = Settings()
        self.history = JobHistory(self.settings.history_path())
        self.jobs: list[Job] = []

    def submit(self, spec: JobSpec) -> Job:
        """Create and start the job; problems end it as failed with a message (never an exception)."""
        env = {"MLFLOW_TRACKING_URI": self.settings.mlflow_uri()} if self.settings.mlflow_uri() else {}
        job: Job
        if spec.runner == LOCAL:
            job = LocalJob(spec, self.settings.worker_python(), env, parent=self)
        else:
            cluster = self.settings.cluster(spec.runner)
            url, token = (cluster.url, load_token(cluster.authcfg)) if cluster else ("", "")
            job = RayJob(spec, url, token, env, parent=self)
        self.jobs.append(job)
        self.history.upsert(JobRecord.from_spec(spec))
        job.finished.connect(lambda _status, job=job: self._finished(job))
        self.jobStarted.emit(job)
        job.start()
        return job

    def _finished(self, job: Job) -> None:
        record = self.history.get(job.spec.id) or JobRecord.from_spec(job.spec)
        record.status, record.message, record.finished = job.status, job.message, time.time()
        record.remote_id = job.remote_id
        outputs = list(job.spec.outputs)
        base = Path(job.spec.cwd or ".")  # the worker reports paths as given, maybe relative to its cwd
        outputs += [str(base / a["path"]) for a in job.state.artifacts if a["kind"] in LOADABLE_ARTIFACTS]
        record.outputs = list(dict.fromkeys(outputs))  # a re-run starts from these: no duplicates piling up
        self.history.upsert(record)
        if job.status == "ok":
            added = add_outputs(outputs)
            notify(self.iface, tr("{0}: done, {1} layer(s) loaded").format(job.spec.title, len(added)), Qgis.Success)
        elif job.status == "stopped":
            notify(self.iface, tr("{0}: stopped").format(job.spec.title), Qgis.Warning)
        else:
            notify(self.iface, tr("{0} failed: {1}").format(job.spec.title, job.message), Qgis.Critical)
        if job in self.jobs:
            self.jobs.remove(job)
        self.jobFinished.emit(job)

    def shutdown(self) -> None:
        """Plugin unload: stop local workers now; remote jobs go on (their id stays in the history)."""
        for job in list(self.jobs):
            job.finished.disconnect()
            job.shutdown()
            record = self.history.get(job.spec.id)
            if record is not None and isinstance(job, RayJob) and job.remote_id:
                record.remote_id = job.remote_id
                record.message = tr("still running on the cluster when QGIS unloaded the plugin")
                self.history.upsert(record)
            elif record is not None:
                record.status, record.message = "stopped", tr("stopped when the plugin was unloaded")
                self.history.upsert(record)
        self.jobs.clear()
