"""Running a pipeline: content-hash caching, resume after failure, ``--from``, dry runs.

Each task gets a key: the hash of its kind, its parameters once validated (so key order, comments and a
default written out do not matter; references are kept as written), the *stamps* of the tasks it depends
on, the content of every existing file or folder it names outside the run folder, and the aifactory
version. A task whose key matches the one recorded in the run's state and whose outputs still exist is
skipped; so a re-run skips everything, an edit re-runs the edited task and everything downstream, and a run
that failed resumes at the task that failed — with ``context.resume`` set, so that a task able to continue
(training, from its last checkpoint) does so instead of starting over; ``--from TASK`` starts that task
over. State is saved atomically after every task.

The code is in the key by its version only, not by its git commit: a commit that touches a README or a test
would otherwise re-run a whole training. Each task records the commit it ran with instead, and a task skipped
under other code says so (with the ``--from`` that redoes it).

Why stamps and contents:

- a task that runs gets a new stamp, and every task downstream of a task that runs runs too: its inputs
  were just rewritten (an upstream re-run because its outputs were deleted, a ``--from`` interrupted
  before the downstream ran). The key of such a task is only known once its upstream tasks are done, so
  it is computed again just before it runs;
- input files are hashed by content (SHA-256), not trusted by size and modification time: a file
  rewritten with the same size and its time restored (``touch -r``, a copy with ``-p``) is a change. The
  digest is remembered in ``.pipeline-hashes.json`` with the file's size, times and inode — the change
  time cannot be set back by hand — so an unchanged file is read once, not at every run. A path that a
  task itself creates outside the run folder (a cache folder it fills) is recorded as it left it.

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aifactory import __version__
from aifactory.coderef import current_code
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
#: remembered content digests of input files (see the module docstring)
HASHES_FILE = ".pipeline-hashes.json"
CHUNK = 1 << 20
#: inputs above this size (bytes) are announced before their content is hashed
LARGE_INPUT = 1 << 30


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


FROM_REASON = "--from"


@dataclass
class TaskPlan:
    name: str
    action: str  # "run" or "skip"
    reason: str
    key: str


def _digest(path: Path, memo: dict[str, Any]) -> str:
    """SHA-256 of a file's content, reused from ``memo`` while its size, times and inode are those recorded."""
    stat = path.stat()
    seen = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    known = memo.get(str(path))
    if isinstance(known, list) and known[:4] == seen:
        return str(known[4])
    if stat.st_size > LARGE_INPUT:  # a pause of seconds per GB: say why
        reporter().log(f"{path}: reading it once ({stat.st_size / 1e9:.1f} GB) to fingerprint it for the cache")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    memo[str(path)] = [*seen, digest.hexdigest()]
    return digest.hexdigest()


def _folder_digest(folder: Path, workdir: Path, memo: dict[str, Any]) -> str:
    """One digest of every file under ``folder`` (relative names and contents), the run folder left out."""
    entries = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() != workdir)
        for name in sorted(files):
            path = here / name
            if path.is_file():
                entries.append([str(path.relative_to(folder)), _digest(path, memo)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _fingerprints(value: Any, base_dir: Path, workdir: Path, memo: dict[str, Any] | None = None) -> list[Any]:
    """(path, content digest) of the existing files and folders named in the params, outside the run folder.

    A folder that holds the run folder (``.``, the project) is a place, not an input: it is left out.
    """
    memo = {} if memo is None else memo
    workdir = workdir.resolve()
    found: list[Any] = []
    if isinstance(value, str) and value and "${" not in value and len(value) < 4096:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            resolved = path.resolve()
            inside = resolved == workdir or workdir in resolved.parents
            if path.is_file() and not inside:
                found.append([str(path), _digest(path, memo)])
            elif path.is_dir() and not inside and resolved not in workdir.parents:
                found.append([str(path), "folder", _folder_digest(path, workdir, memo)])
        except OSError:
            pass
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(_fingerprints(item, base_dir, workdir, memo))
    elif isinstance(value, list):
        for item in value:
            found.extend(_fingerprints(item, base_dir, workdir, memo))
    return found


def read_hashes(workdir: Path) -> dict[str, Any]:
    """The remembered input digests (empty when absent or unreadable: files are then hashed again)."""
    try:
        data = json.loads((workdir / HASHES_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _params_for_key(task: Any, pipeline: Pipeline) -> Any:
    """The task's parameters as validated (numbers normalised), references kept as written, without the values
    that equal their default: a parameter a new version adds with a default does not re-run existing workdirs.

    Falls back to the raw parameters when they do not validate (the run reports that error itself).
    """
    placeholders = {up: {out: f"${{{up}.{out}}}" for out in pipeline.tasks[up].outputs} for up in task.depends_on}
    try:
        model = task.params_model.model_validate(substitute(task.raw_params, placeholders))
    except Exception:
        return task.raw_params
    return model.model_dump(mode="json", exclude_defaults=True)


def task_key(pipeline: Pipeline, name: str, stamps: dict[str, str | None], files: list[Any]) -> str:
    """The cache key of a task given its upstream tasks' stamps and its input fingerprints."""
    task = pipeline.tasks[name]
    payload = {
        "kind": task.kind, "params": _params_for_key(task, pipeline), "version": __version__,
        "upstream": {up: stamps.get(up) for up in sorted(task.depends_on)}, "files": files,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def _listing(outputs: dict[str, Any]) -> dict[str, list[str]]:
    """The top-level entries of each folder output (what a deleted ``model.pt`` or ``chips.csv`` changes)."""
    return {str(v): sorted(p.name for p in Path(v).iterdir()) for v in outputs.values()
            if isinstance(v, str) and v.startswith("/") and Path(v).is_dir()}


def _outputs_exist(outputs: dict[str, Any], listing: dict[str, list[str]] | None = None) -> bool:
    for value in outputs.values():
        if isinstance(value, str) and value.startswith("/") and not Path(value).exists():
            return False
    for folder, names in (listing or {}).items():
        if any(not (Path(folder) / name).exists() for name in names):
            return False
    return True


def plan(pipeline: Pipeline, from_task: str | None = None,
         memo: dict[str, Any] | None = None) -> list[TaskPlan]:
    """What a run would do, task by task, without running anything.

    A task downstream of one that runs runs too; its key is then provisional (recomputed before it runs).
    """
    if from_task is not None and from_task not in pipeline.tasks:
        raise ConfigError(f"--from: no task named {from_task!r} in {pipeline.source}")
    forced = pipeline.downstream_of(from_task) if from_task else set()
    state = read_state(pipeline.workdir)
    memo = read_hashes(pipeline.workdir) if memo is None else memo
    stamps: dict[str, str | None] = {}
    running: set[str] = set()
    plans = []
    for name in pipeline.order:
        task = pipeline.tasks[name]
        files = _fingerprints(task.raw_params, pipeline.base_dir, pipeline.workdir, memo)
        key = task_key(pipeline, name, stamps, files)
        recorded = state.get(name, {})
        rerun_upstream = sorted(task.depends_on & running)
        if name in forced:
            step = TaskPlan(name, "run", FROM_REASON, key)
        elif recorded.get("status") != "done":
            step = TaskPlan(name, "run", "not run yet" if not recorded else recorded.get("status", "?"), key)
        elif rerun_upstream:
            step = TaskPlan(name, "run", f"{', '.join(rerun_upstream)} runs", key)
        elif recorded.get("key") != key:
            step = TaskPlan(name, "run", "changed", key)
        elif not _outputs_exist(recorded.get("outputs", {}), recorded.get("listing")):
            step = TaskPlan(name, "run", "outputs missing", key)
        else:
            step = TaskPlan(name, "skip", "unchanged", key)
        stamps[name] = recorded.get("stamp") if step.action == "skip" else None
        if step.action == "run":
            running.add(name)
        plans.append(step)
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
    memo = read_hashes(pipeline.workdir)
    plans = plan(pipeline, from_task, memo)
    state = read_state(pipeline.workdir)
    stamps: dict[str, str | None] = {}
    _refuse_foreign_task_folders(pipeline, plans, state)
    outputs: dict[str, dict[str, Any]] = {}
    rep = reporter()
    code = _code_commit()
    for index, step in enumerate(plans):
        task = pipeline.tasks[step.name]
        rep.progress("pipeline", index / len(plans), f"{step.name} ({task.kind})")
        if step.action == "skip":
            outputs[step.name] = state[step.name]["outputs"]
            stamps[step.name] = state[step.name].get("stamp")
            rep.log(f"{step.name}: skipped ({step.reason}{_other_code(step.name, state[step.name].get('code'), code)})")
            continue
        rep.log(f"{step.name}: running {task.kind} ({step.reason})")
        entry = TASKS.get(task.kind)
        values = substitute(task.raw_params, outputs)
        params = validate(entry.params, values, f"{pipeline.source}: tasks.{step.name}.params")
        before = _fingerprints(task.raw_params, pipeline.base_dir, pipeline.workdir, memo)
        key = task_key(pipeline, step.name, stamps, before)  # the upstream tasks that ran have their stamps now
        previous = state.get(step.name, {})
        # ``--from`` asks for the task to be redone: a failed attempt's checkpoint is not continued then
        resume = (step.reason != FROM_REASON and previous.get("status") in ("failed", "running")
                  and previous.get("key") == key)
        context = TaskContext(step.name, pipeline.workdir / step.name, pipeline.base_dir, resume=resume)
        if not resume:  # a fresh run starts from an empty task folder (no stale outputs)
            remove_path(context.workdir)
        context.workdir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        state[step.name] = {"status": "running", "key": key, "started": started}
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
        # paths the task created outside the run folder (a cache it filled) count as it left them; inputs
        # that existed before keep the digest they had when the task read them
        seen = {entry[0] for entry in before}
        created = [entry for entry in _fingerprints(task.raw_params, pipeline.base_dir, pipeline.workdir, memo)
                   if entry[0] not in seen]
        if created:
            key = task_key(pipeline, step.name, stamps, before + created)
        stamps[step.name] = uuid.uuid4().hex
        state[step.name] = {"status": "done", "key": key, "stamp": stamps[step.name], "outputs": produced,
                            "listing": _listing(produced), "started": started, "finished": time.time(),
                            "code": code}
        _save(pipeline, state, memo)
        for value in produced.values():
            if isinstance(value, str) and Path(value).is_file():
                rep.artifact(step.name, value)
    rep.progress("pipeline", 1.0, "done")
    return outputs


def _code_commit() -> str | None:
    """The commit this process runs (``-dirty`` with uncommitted changes), None outside a git checkout or
    without git (an informative note must not stop a run)."""
    try:
        return current_code().commit
    except (InputError, OSError):  # a checkout git cannot read (no commit yet), or no git installed
        return None


def _other_code(name: str, recorded: str | None, current: str | None) -> str:
    """``; made by code X, now Y: --from NAME redoes it`` when a skipped task ran under another commit."""
    if not recorded or not current or recorded == current:
        return ""

    def short(commit: str) -> str:
        return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")

    return f"; made by code {short(recorded)}, now {short(current)}: --from {name} redoes it"


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


def _save(pipeline: Pipeline, state: dict[str, Any], memo: dict[str, Any] | None = None) -> None:
    write_text_atomic(pipeline.workdir / STATE_FILE, json.dumps(state, indent=2, default=str))
    if memo is not None:
        write_text_atomic(pipeline.workdir / HASHES_FILE, json.dumps(memo))
