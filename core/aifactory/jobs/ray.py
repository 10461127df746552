"""The Ray runner: jobs submitted to a Ray cluster through the dashboard's Jobs REST API.

Submission uploads a content-addressed zip as the job's ``runtime_env.working_dir``: the pipeline file
(``pipeline.yaml``: paths in it are paths on the worker) and, with ``--ref``, the ``aifactory`` package
of that commit's worktree, which ``python -m`` then imports first (the working dir is the entrypoint's
current folder and heads Ray's ``PYTHONPATH``); without ``--ref`` the worker's installed environment
runs. The Ray submission id is the ledger's job id. The entrypoint is the same command as the local
runner's, joined with ``shlex`` quoting because Ray runs it through a shell.

Statuses map one to one; a PENDING job is explained by comparing its request with every live node,
and a head that does not answer makes the job ``failed`` with the reason (not settled: a later refresh
that reaches the head again corrects it). Files come back either from a shared workdir or through
:mod:`aifactory.jobs.pack`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from aifactory.coderef import REF_ENV, CodeRef
from aifactory.errors import InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.output_paths import check_file_outputs, output_folder
from aifactory.jobs import pack
from aifactory.jobs.base import TERMINAL, Poll, copy_from_workdir, entrypoint
from aifactory.jobs.events import parse_events, summarize
from aifactory.jobs.ledger import JobRecord
from aifactory.jobs.rayapi import NotFound, RayAPI, Unreachable
from aifactory.jobs.resources import Resources, unsatisfiable
from aifactory.progress import reporter

RAY_STATUSES = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
                "STOPPED": "stopped"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
STOP_GRACE_S = 10
DOWN_MEMORY_S = 10.0


def map_status(ray_status: str) -> str:
    """Our status for a Ray job status (an unknown one counts as failed, never as success)."""
    return RAY_STATUSES.get(ray_status, "failed")


def build_package(files: dict[str, bytes]) -> tuple[str, bytes]:
    """A deterministic zip of ``files`` and its content-addressed Ray package name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    data = buffer.getvalue()
    return f"_ray_pkg_{hashlib.sha256(data).hexdigest()[:32]}.zip", data


def package_files(directory: Path, prefix: str) -> dict[str, bytes]:
    """Every file under ``directory`` (no bytecode caches) as ``prefix/relative/path``."""
    return {f"{prefix}/{path.relative_to(directory).as_posix()}": path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def submission(record: JobRecord, working_dir: str, python: str = "python") -> dict[str, Any]:
    """The body of ``POST /api/jobs/`` for ``record`` whose files are the package ``working_dir``."""
    return {
        "submission_id": record.id,
        # Ray runs the entrypoint through a shell: every argument is quoted
        "entrypoint": shlex.join(entrypoint(python, "pipeline.yaml", record.workdir)),
        "runtime_env": {"working_dir": working_dir, "env_vars": {
            "AIFACTORY_JOB_ID": record.id, "PYTHONUNBUFFERED": "1",
            # a stop is a Ctrl-C, as with the local runner: the CLI reports "stopped" and atomic
            # writers remove their partial files
            "RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}},
        "metadata": {"aifactory_job": record.id, "pipeline": Path(record.pipeline_path).name,
                     "code_ref": record.code_ref or "", "code_commit": record.code_commit or ""},
        **Resources(**record.resources).ray_fields(),
    }


#: the folder a Ray node unpacks a job's package into (the job's current folder), as error lines show it
PACKAGE_FOLDER = re.compile(r"\S*/runtime_resources/working_dir_files/_ray_pkg_[0-9a-f]+/")
RELATIVE_HINT = ("(a Ray job takes relative paths inside its package folder on the worker: give paths as the "
                 "worker sees them, absolute)")


def submitter_terms(message: str, record: JobRecord) -> str:
    """A worker's error line as the submitter knows things: the package's ``pipeline.yaml`` is the file that
    was submitted, and a path inside the package folder is the relative path the pipeline wrote, with why it
    was looked for there."""
    if message.startswith("pipeline.yaml: "):
        message = f"{record.pipeline_path}: {message.removeprefix('pipeline.yaml: ')}"
    if PACKAGE_FOLDER.search(message):
        message = f"{PACKAGE_FOLDER.sub('', message)} {RELATIVE_HINT}"
    return message


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


class RayRunner:
    name = "ray"

    def __init__(self, api: RayAPI, python: str = "python", pack_timeout: float = 600.0) -> None:
        self.api = api
        self.python = python
        self.pack_timeout = pack_timeout
        # an unreachable head answers for DOWN_MEMORY_S: refreshing many jobs of one dead head costs one timeout
        self._down: tuple[Unreachable, float] | None = None

    def _upload(self, files: dict[str, bytes]) -> str:
        name, data = build_package(files)
        if not self.api.package_exists(name):
            self.api.upload_package(name, data)
        return f"gcs://{name}"

    def submit(self, record: JobRecord, pipeline: Path, code: CodeRef) -> dict[str, Any]:
        self.api.check()
        files = {"pipeline.yaml": record.pipeline_text.encode("utf-8")}
        if code.core is not None:
            files.update(package_files(code.core / "aifactory", "aifactory"))
        payload = submission(record, self._upload(files), self.python)
        if code.core is not None:
            payload["runtime_env"]["env_vars"][REF_ENV] = code.ref or ""
        self.api.submit(payload)
        return {"status": "pending", "message": "submitted",
                "extra": {**record.extra, "runtime_env": payload["runtime_env"]}}

    def poll(self, record: JobRecord) -> Poll:
        if self._down is not None and time.monotonic() - self._down[1] < DOWN_MEMORY_S:
            return Poll("failed", f"{self._down[0]}; the job's fate is unknown")
        try:
            info = self.api.job(record.id)
            remote = str(info.get("status"))
            status = map_status(remote)
            events = parse_events(self.api.logs(record.id).splitlines()) if status != "pending" else []
            message = first_line(info.get("message"))
            if status == "pending":
                if record.stop_requested:
                    return Poll("stopped", "stopped while waiting for resources (Ray keeps listing it as "
                                "PENDING: it cannot cancel a job that never started)", settled=True,
                                remote_status=remote, finished=time.time())
                why = unsatisfiable(Resources(**record.resources).demand(),
                                    [node.get("resources_total", {}) for node in self.api.nodes()])
                if why:
                    message = f"{message} {why[0].upper()}{why[1:]}."
        except NotFound:
            return Poll("failed", f"the Ray cluster at {self.api.address} does not know this job any more "
                        "(was it restarted?)", settled=True, finished=time.time())
        except Unreachable as exc:
            self._down = (exc, time.monotonic())
            return Poll("failed", f"{exc}; the job's fate is unknown")
        error = summarize(events).error
        if status == "failed" and error:
            message = submitter_terms(error, record)
        started = info.get("start_time") if status != "pending" else None
        finished = info.get("end_time")
        extra = {"node_id": info["driver_node_id"]} if info.get("driver_node_id") else {}
        return Poll(status, message, settled=status in TERMINAL, events=events, remote_status=remote,
                    started=started / 1000 if started else None, finished=finished / 1000 if finished else None,
                    extra=extra)

    def stop(self, record: JobRecord) -> None:
        self.api.stop(record.id)

    def raw_logs(self, record: JobRecord) -> str:
        return self.api.logs(record.id)

    def fetch(self, record: JobRecord, paths: list[str] | None, out_dir: Path) -> list[Path]:
        if record.shared:
            return copy_from_workdir(Path(record.workdir), paths, out_dir)
        result, node_id = self._pack_on_worker(record, paths)
        for item in result["skipped"]:
            reporter().warning(f"{item}: not a file inside the job's workdir on the worker, not fetched")
        output_folder(out_dir)
        with tempfile.TemporaryFile(dir=out_dir) as archive_file:
            total = max(int(result["bytes"]), 1)
            self.api.download_log_file(node_id, result["file"], archive_file,
                                       lambda done: reporter().progress("fetch", done / total, "download"))
            archive_file.seek(0)
            return extract(archive_file, out_dir)

    def _pack_on_worker(self, record: JobRecord, paths: list[str] | None) -> tuple[dict[str, Any], str]:
        """Run :mod:`aifactory.jobs.pack` on the job's node; return its result and the node id."""
        node_id = record.extra.get("node_id") or self.api.job(record.id).get("driver_node_id")
        node = next((n for n in self.api.nodes() if n.get("node_id") == node_id), None) if node_id else None
        if node is None:
            raise InputError(f"job {record.id}: the node that ran it is gone (or it never started), so its "
                             "files cannot be fetched; submit with --shared-dir for results that outlive nodes")
        name = f"{record.id}-{uuid.uuid4().hex[:8]}"
        request = {"name": name, "workdir": record.workdir, "paths": paths}
        files = {"pack.py": Path(pack.__file__).read_bytes(), "request.json": json.dumps(request).encode()}
        pack_id = self.api.submit({
            "submission_id": f"{record.id}-fetch-{uuid.uuid4().hex[:6]}",
            "entrypoint": shlex.join([self.python, "pack.py", "request.json"]),
            "runtime_env": {"working_dir": self._upload(files)},
            "entrypoint_resources": {f"node:{node['node_ip']}": 0.001},
            "metadata": {"aifactory_fetch": record.id},
        })
        reporter().progress("fetch", 0.0, "packing on the worker")
        deadline = time.monotonic() + self.pack_timeout
        while (info := self.api.job(pack_id))["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
            if time.monotonic() > deadline:
                self.api.stop(pack_id)
                raise InputError(f"job {record.id}: packing its files on the worker took over "
                                 f"{self.pack_timeout:.0f} s; stopped")
            time.sleep(0.5)
        logs = self.api.logs(pack_id)
        for line in logs.splitlines():
            if line.startswith(f'{{"{pack.RESULT_KEY}"'):
                return json.loads(line)[pack.RESULT_KEY], str(info["driver_node_id"])
        lines = [line for line in logs.strip().splitlines() if line.strip()]
        raise InputError(f"job {record.id}: packing its files on the worker failed: "
                         f"{lines[-1] if lines else info.get('message')}")


def extract(archive_file: Any, out_dir: Path) -> list[Path]:
    """Unzip into ``out_dir``, each file atomically; member names escaping ``out_dir`` are refused."""
    root = out_dir.resolve()
    written = []
    with zipfile.ZipFile(archive_file) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        targets = [(root / member.filename).resolve() for member in members]
        for member, target in zip(members, targets, strict=True):
            if root not in target.parents:
                raise InputError(f"fetched archive: member {member.filename!r} would land outside {root}")
        check_file_outputs(targets)  # all or none: a refusal halfway left part of the job's files
        for index, (member, target) in enumerate(zip(members, targets, strict=True), start=1):
            with atomic_path(target) as tmp, archive.open(member) as source, open(tmp, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            written.append(target)
            reporter().progress("fetch", index / len(members), target.name)
    return written
