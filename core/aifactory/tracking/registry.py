"""The MLflow model registry for runs and bundles: register, alias, list, resolve ``models:/…`` locally.

A registered version's artifact is either a bundle zip or a run folder (``model.json``, ``model.pt``,
``config.yaml``, ``manifest.json``, ``metrics.jsonl``, ``report/``; checkpoints stay behind), logged
under ``model/`` of an MLflow run: the training run itself when the run's manifest says it was tracked
in the same store (the version then links to its metrics), else a new run in experiment
``aifactory-models``. :func:`resolve_model_uri` turns ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``)
into a local path that ``aifactory predict --model`` accepts: the artifact itself for a local store,
a cached download (``~/.cache/aifactory/models``) for a remote one.

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the SQLite file ``mlruns.db`` in the
current folder (artifacts in ``mlartifacts/`` next to it) — nothing needs to run. MLflow errors (an
unknown name, alias or version) become one :class:`~aifactory.errors.InputError` line.

Imports the bundle stage to check a bundle before registering it (a sideways import: registering a
broken zip would only fail at deployment).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from aifactory.errors import InputError
from aifactory.io.atomic import atomic_path
from aifactory.progress import reporter
from aifactory.tracking.store import check_store

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

EXPERIMENT = "aifactory-models"
ARTIFACT_DIR = "model"
RUN_FILES = ("model.json", "model.pt", "config.yaml", "manifest.json", "metrics.jsonl")
KIND_TAG = "aifactory.kind"
FILE_TAG = "aifactory.file"
CACHE = Path.home() / ".cache" / "aifactory" / "models"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass
class ModelVersion:
    """One registered version, as ``registry list`` shows it."""

    name: str
    version: int
    kind: str  # "bundle" or "run"
    source: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    file: str = ""  # the bundle's file name inside the artifact folder ("" for a folder)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_uri(tracking_uri: str | None = None, *, write: bool = False) -> str:
    """The MLflow store: the argument, ``MLFLOW_TRACKING_URI``, or ``./mlruns.db`` (SQLite), checked
    (:func:`~aifactory.tracking.store.check_store`: a plain path, a file that is no MLflow store, a store that
    a command that writes cannot write)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlruns.db'}"
    return check_store(uri, write=write)


@contextmanager
def client(tracking_uri: str | None = None, *, write: bool = False) -> Iterator[Any]:
    """An ``MlflowClient`` on the store (tracking and registry); MLflow errors become one InputError line."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("the model registry needs mlflow (pip install mlflow-skinny sqlalchemy alembic)") from None
    for name in ("mlflow", "alembic"):  # after the import: mlflow sets its own levels when imported
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = store_uri(tracking_uri, write=write)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MlflowException as exc:
        raise InputError(f"{uri}: {exc.message.splitlines()[0] if exc.message else exc}") from None


def _experiment(mlflow: Any, uri: str) -> str:
    found = mlflow.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return str(mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts))


def _training_run(mlflow: Any, run_dir: Path, uri: str) -> str | None:
    """The MLflow run that tracked the training of ``run_dir`` in this store, if any."""
    manifest = run_dir / "manifest.json"
    try:
        tracked = json.loads(manifest.read_text()).get("mlflow") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if tracked.get("uri") != uri or not tracked.get("run_id"):
        return None
    try:
        return str(mlflow.get_run(tracked["run_id"]).info.run_id)
    except Exception:  # deleted or foreign run: register under a new one
        return None


def _describe(version: Any) -> ModelVersion:
    tags = version.tags or {}
    return ModelVersion(name=version.name, version=int(version.version), kind=tags.get(KIND_TAG, "?"),
                        source=version.source, run_id=version.run_id, aliases=list(version.aliases or []),
                        file=tags.get(FILE_TAG, ""))


def check_names(name: str, alias: str | None = None) -> None:
    """MLflow's own rules for a model's name and an alias, checked before any upload (MLflow checks them only
    when the version is made, after the artifacts are stored: a refused name left them behind)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    checks = [("--name", _validate_model_name, name)]
    if alias is not None:
        checks += [("--alias", _validate_model_alias_name, alias),
                   ("--alias", _validate_model_alias_name_reserved, alias)]
    for option, check, value in checks:
        try:
            check(value)
        except MlflowException as exc:
            raise InputError(f"{option}: {exc.message.splitlines()[0]}") from None


def register_model(path: str | Path, name: str, *, alias: str | None = None,
                   tracking_uri: str | None = None) -> ModelVersion:
    """Register a bundle zip (or folder) or a run directory as a new version of ``name``."""
    from mlflow.exceptions import MlflowException

    from aifactory.bundle.format import is_bundle, read_meta, read_onnx
    from aifactory.models.card import read_card

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found (expected a bundle .zip or a run directory)")
    check_names(name, alias)  # before anything is uploaded or registered
    kind = "bundle" if is_bundle(path) else "run"
    if kind == "bundle":
        read_onnx(path, read_meta(path))  # a damaged bundle is refused here, not at deployment
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        root = path.parent if path.is_file() else path
    else:
        read_card(path)
        files = [path / n for n in RUN_FILES if (path / n).is_file()]
        files += sorted(p for p in (path / "report").rglob("*") if p.is_file())
        root = path
    uri = store_uri(tracking_uri, write=True)
    with client(uri, write=True) as mlflow:
        run_id = _training_run(mlflow, path, uri) if kind == "run" else None
        created = run_id is None
        if created:
            run_id = mlflow.create_run(_experiment(mlflow, uri), run_name=path.stem,
                                       tags={KIND_TAG: kind, "aifactory.source": str(path.resolve())}).info.run_id
        for file in reporter().track(files, task="register", message=f"{name}: uploading {kind}"):
            folder = file.parent.relative_to(root).as_posix()
            mlflow.log_artifact(run_id, str(file), ARTIFACT_DIR if folder == "." else f"{ARTIFACT_DIR}/{folder}")
        if created:
            mlflow.set_terminated(run_id)
        try:
            mlflow.get_registered_model(name)
        except MlflowException:
            mlflow.create_registered_model(name)
        artifact_uri = mlflow.get_run(run_id).info.artifact_uri
        tags = {KIND_TAG: kind, FILE_TAG: path.name if kind == "bundle" and path.is_file() else ""}
        version = mlflow.create_model_version(name, source=f"{artifact_uri}/{ARTIFACT_DIR}", run_id=run_id,
                                              tags=tags)
        if alias:
            mlflow.set_registered_model_alias(name, alias, version.version)
        return _describe(mlflow.get_model_version(name, version.version))


def set_alias(name: str, version: int, alias: str, *, tracking_uri: str | None = None) -> ModelVersion:
    """Point ``alias`` (e.g. ``production``) of ``name`` at ``version`` (moving it if it was elsewhere)."""
    with client(tracking_uri, write=True) as mlflow:
        mlflow.get_model_version(name, str(version))  # an unknown version is an error, not a dangling alias
        mlflow.set_registered_model_alias(name, alias, str(version))
        return _describe(mlflow.get_model_version(name, str(version)))


def list_models(*, tracking_uri: str | None = None) -> list[ModelVersion]:
    """Every version of every registered model, by name then version."""
    with client(tracking_uri) as mlflow:
        versions = [_describe(v) for v in mlflow.search_model_versions()]
        aliases = [(model.name, int(number), alias) for model in mlflow.search_registered_models()
                   for alias, number in (model.aliases or {}).items()]
    for v in versions:  # search results carry no aliases: the registered models do
        v.aliases = sorted(alias for name, number, alias in aliases if (name, number) == (v.name, v.version))
    return sorted(versions, key=lambda v: (v.name, v.version))


def get_version(uri: str, *, tracking_uri: str | None = None) -> ModelVersion:
    """The version ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` points at."""
    match = _URI.match(uri)
    if not match:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    with client(tracking_uri) as mlflow:
        if match["alias"]:
            found = mlflow.get_model_version_by_alias(match["name"], match["alias"])
        else:
            found = mlflow.get_model_version(match["name"], match["version"])
        return _describe(found)


def resolve_model_uri(uri: str, *, tracking_uri: str | None = None) -> Path:
    """A local path for a registry URI: the bundle zip or the run folder ``predict --model`` takes."""
    version = get_version(uri, tracking_uri=tracking_uri)
    parsed = urlparse(version.source)
    if parsed.scheme in ("", "file"):
        folder = Path(unquote(parsed.path))
    else:
        cached = CACHE / version.name / str(version.version)
        if not cached.is_dir():
            import mlflow.artifacts

            with atomic_path(cached, folder=True) as tmp:
                tmp.mkdir()
                mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp),
                                                    tracking_uri=store_uri(tracking_uri))
        folder = cached / ARTIFACT_DIR
    path = folder / version.file if version.file else folder
    if not path.exists():
        raise InputError(f"{uri}: the artifact of version {version.version} is missing ({path})")
    return path
