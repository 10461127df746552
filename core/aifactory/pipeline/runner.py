"""Running a pipeline: content-hash caching, resume after failure, ``--from``, dry runs.

Each task gets a key: the hash of its kind, its parameters as written (references included), the keys
of the tasks it depends on, the size and modification time of every existing file it names outside the
run folder, and the aifactory version. A task whose key matches the one recorded in the run's state and
whose outputs still exist is skipped; so a re-run skips everything, an edit re-runs the edited task and
everything downstream, and a run that failed resumes at the task that failed — with ``context.resume`` set,
so that a task able to continue (training, from its last checkpoint) does so instead of starting over.
State is saved atomically after every task.

A task's one-line error gets its place in the pipeline file here, once for every task: the file and
``tasks.NAME.params.KEY`` of the parameter whose path the message names (else ``tasks.NAME``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory import __version__
from aifactory.config import validate
from aifactory.errors import AIFactoryError, ConfigError, InputError
from aifactory.io.atomic import remove_path, write_text_atomic
from aifactory.io.output_paths import output_folder
from aifactory.pipeline import TASKS
from aifactory.pipeline.spec import Pipeline, substitute
from aifactory.progress import reporter

#: the lock a run holds in its workdir (:func:`_one_run_at_a_time`)
LOCK_NAME = ".pipeline.lock"

STATE_FILE = ".pipeline-state.json"


@dataclass
class TaskContext:
    """What a task needs besides its parameters."""

    name: str
    workdir: Path
    base_dir: Path
    resume: bool = False  # the previous attempt with the same key failed or was killed: continue it

    def resolve(self, path: str | Path) -> Path:
        """A path from the pipeline file, relative to the file's folder."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


@dataclass
class TaskPlan:
    name: str
    action: str  # "run" or "skip"
    reason: str
    key: str


def _fingerprints(value: Any, base_dir: Path, workdir: Path) -> list[Any]:
    """(path, size, mtime) of existing files named in the params, outside the run folder."""
    found: list[Any] = []
    if isinstance(value, str) and value and "${" not in value and len(value) < 4096:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            if path.is_file() and workdir not in path.resolve().parents:
                stat = path.stat()
                found.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            pass
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(_fingerprints(item, base_dir, workdir))
    elif isinstance(value, list):
        for item in value:
            found.extend(_fingerprints(item, base_dir, workdir))
    return found


def read_state(workdir: Path) -> dict[str, Any]:
    path = workdir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except json.JSONDecodeError:
        reporter().warning(f"{path}: unreadable pipeline state, every task will run")
        return {}


def _outputs_exist(outputs: dict[str, Any]) -> bool:
    for value in outputs.values():
        if isinstance(value, str) and value.startswith("/") and not Path(value).exists():
            return False
    return True


def plan(pipeline: Pipeline, from_task: str | None = None) -> list[TaskPlan]:
    """What a run would do, task by task, without running anything."""
    if from_task is not None and from_task not in pipeline.tasks:
        raise ConfigError(f"--from: no task named {from_task!r} in {pipeline.source}")
    forced = pipeline.downstream_of(from_task) if from_task else set()
    state = read_state(pipeline.workdir)
    keys: dict[str, str] = {}
    plans = []
    for name in pipeline.order:
        task = pipeline.tasks[name]
        payload = {
            "kind": task.kind, "params": task.raw_params, "version": __version__,
            "upstream": {up: keys[up] for up in sorted(task.depends_on)},
            "files": _fingerprints(task.raw_params, pipeline.base_dir, pipeline.workdir),
        }
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        keys[name] = key
        recorded = state.get(name, {})
        if name in forced:
            plans.append(TaskPlan(name, "run", "--from", key))
        elif recorded.get("status") != "done":
            plans.append(TaskPlan(name, "run", "not run yet" if not recorded else recorded.get("status", "?"), key))
        elif recorded.get("key") != key:
            plans.append(TaskPlan(name, "run", "changed", key))
        elif not _outputs_exist(recorded.get("outputs", {})):
            plans.append(TaskPlan(name, "run", "outputs missing", key))
        else:
            plans.append(TaskPlan(name, "skip", "unchanged", key))
    return plans


def run(pipeline: Pipeline, from_task: str | None = None) -> dict[str, dict[str, Any]]:
    """Run the tasks that need it, in order; returns every task's outputs."""
    output_folder(pipeline.workdir)
    with _one_run_at_a_time(pipeline.workdir):
        return _run(pipeline, from_task)


@contextlib.contextmanager
def _one_run_at_a_time(workdir: Path) -> Iterator[None]:
    """Hold the workdir's lock for the run: a second run there would redo the same tasks and could write the same
    files at once. An advisory ``flock``, so a killed run never leaves a stale lock behind."""
    with open(workdir / LOCK_NAME, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            raise InputError(f"{workdir}: another run is working there{f' (process {holder})' if holder else ''}; "
                             "wait for it to end, or give this one another workdir (-o)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(pipeline: Pipeline, from_task: str | None) -> dict[str, dict[str, Any]]:
    plans = plan(pipeline, from_task)
    state = read_state(pipeline.workdir)
    _refuse_foreign_task_folders(pipeline, plans, state)
    outputs: dict[str, dict[str, Any]] = {}
    rep = reporter()
    for index, step in enumerate(plans):
        task = pipeline.tasks[step.name]
        rep.progress("pipeline", index / len(plans), f"{step.name} ({task.kind})")
        if step.action == "skip":
            outputs[step.name] = state[step.name]["outputs"]
            rep.log(f"{step.name}: skipped ({step.reason})")
            continue
        rep.log(f"{step.name}: running {task.kind} ({step.reason})")
        entry = TASKS.get(task.kind)
        values = substitute(task.raw_params, outputs)
        params = validate(entry.params, values, f"{pipeline.source}: tasks.{step.name}.params")
        previous = state.get(step.name, {})
        resume = previous.get("status") in ("failed", "running") and previous.get("key") == step.key
        context = TaskContext(step.name, pipeline.workdir / step.name, pipeline.base_dir, resume=resume)
        if not resume:  # a fresh run starts from an empty task folder (no stale outputs)
            remove_path(context.workdir)
        context.workdir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        state[step.name] = {"status": "running", "key": step.key, "started": started}
        _save(pipeline, state)
        try:
            produced = entry.func(params, context)
        except BaseException as exc:
            state[step.name].update(status="failed", finished=time.time())
            _save(pipeline, state)
            if isinstance(exc, AIFactoryError):
                exc.args = (_located(str(exc), values, context, pipeline.source),)
            raise
        missing = [out for out in task.outputs if out not in produced]
        if missing:
            raise RuntimeError(f"task {task.kind} did not produce its declared outputs {missing}")
        produced = {k: str(v) if isinstance(v, Path) else v for k, v in produced.items()}
        outputs[step.name] = produced
        state[step.name] = {"status": "done", "key": step.key, "outputs": produced, "started": started,
                            "finished": time.time()}
        _save(pipeline, state)
        for value in produced.values():
            if isinstance(value, str) and Path(value).is_file():
                rep.artifact(step.name, value)
    rep.progress("pipeline", 1.0, "done")
    return outputs


def _refuse_foreign_task_folders(pipeline: Pipeline, plans: list[TaskPlan], state: dict[str, Any]) -> None:
    """A task runs in a fresh ``WORKDIR/<task>`` folder; one that holds files but that this pipeline never ran
    there is someone's (a folder given as ``-o`` by mistake): refused before any task runs, not emptied."""
    for step in plans:
        folder = pipeline.workdir / step.name
        if step.action != "skip" and step.name not in state and folder.is_dir() and any(folder.iterdir()):
            names = sorted(entry.name for entry in folder.iterdir())
            raise InputError(f"{folder}: holds {', '.join(names[:3])}{' …' if len(names) > 3 else ''}, which this "
                             f"pipeline did not write there: give the run another workdir (-o), or move them")


def _param_key(value: Any, path: str, context: TaskContext) -> str | None:
    """The key path inside ``value`` of the parameter naming the file ``path`` (as written or resolved)."""
    if isinstance(value, str) and value:
        return "" if path in (value, str(context.resolve(value)), str(context.resolve(value).resolve())) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _param_key(item, path, context)
        if found is not None:
            return f".{key}{found}"
    return None


def _located(message: str, values: dict[str, Any], context: TaskContext, source: str) -> str:
    """``message`` with the pipeline file and the task (and parameter) it came from, unless it names them."""
    task = f"tasks.{context.name}"
    if f"{task}." in message:
        return message if message.startswith(source) else f"{source}: {message}"
    key = _param_key(values, message.split(": ", 1)[0], context)
    return f"{source}: {task}" + (f".params{key}" if key else "") + f": {message}"


def _save(pipeline: Pipeline, state: dict[str, Any]) -> None:
    write_text_atomic(pipeline.workdir / STATE_FILE, json.dumps(state, indent=2, default=str))
