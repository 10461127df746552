"""Run listing and comparison, from run directories (DESIGN.md "Run directory") or an MLflow store.

A run directory is any folder holding ``metrics.jsonl`` or ``manifest.json``. Its metric series come
from ``metrics.jsonl``: either event-style lines ``{"name", "value", "step"}`` (the progress protocol's
``metric`` event) or wide lines ``{"split": "train"|"val", "step", "epoch", "<metric>": value, …}``
as training writes them; a ``split`` prefixes the names (``train/loss``, ``val/loss``) so they never
mix. Evaluation results come
from ``report/*.json`` (the ``overall`` block written by ``aifactory evaluate``), prefixed ``eval.``.
The configuration is the resolved ``config.yaml``, flattened to dotted keys so that two runs diff
key by key. MLflow runs give the same record: metric histories, and params as the flattened config; the
store a user names is read through :func:`aifactory.tracking.store.check_store`, as training and the registry
read it (a path ending in ``.db``, a file that is not a store: one line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aifactory.errors import InputError
from aifactory.evaluation import plots
from aifactory.progress import reporter
from aifactory.tracking.store import check_store

RUN_MARKERS = ("metrics.jsonl", "manifest.json")
CONFIG_NAMES = ("config.yaml", "config.yml", "resolved_config.yaml")
STEP_KEYS = ("step", "epoch", "iteration", "global_step")
IGNORED_KEYS = {*STEP_KEYS, "split", "time", "timestamp", "wall_time", "event", "elapsed", "lr_step"}
MAX_DEPTH = 3


#: how ``runs`` shows when a run started: to the minute, in UTC, whatever the source wrote
MINUTE = "%Y-%m-%d %H:%M"


def _minute(value: object) -> str | None:
    """A manifest's ISO time (any offset) or epoch seconds as :data:`MINUTE` in UTC; other text as it is."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC).strftime(MINUTE)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).strftime(MINUTE)


@dataclass
class RunRecord:
    """One run: metric series ``{name: [(step, value), …]}``, evaluation summary, flattened config."""

    name: str
    source: str
    created: str | None = None
    status: str | None = None
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def final(self) -> dict[str, float]:
        """Last value of every series, then the evaluation summary."""
        out = {name: points[-1][1] for name, points in sorted(self.series.items()) if points}
        out.update(self.summary)
        return out


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a.b.c": value}``; lists are kept as values (they diff as a whole)."""
    if not isinstance(data, Mapping):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {number} is not a JSON object")
        if "name" in record and "value" in record:
            items = {str(record["name"]): record["value"]}
            step = record.get("step")
        else:
            split = record.get("split")
            prefix = f"{split}/" if isinstance(split, str) and split else ""
            items = {f"{prefix}{k}": v for k, v in record.items() if k not in IGNORED_KEYS}
            step = next((record[k] for k in STEP_KEYS if k in record), None)
        for name, value in items.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            points = series.setdefault(name, [])
            points.append((float(step) if isinstance(step, int | float) else float(len(points)), float(value)))
    return series


def _read_summary(report_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for path in sorted(report_dir.glob("*.json")) if report_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        overall = data.get("overall") if isinstance(data, dict) else None
        if isinstance(overall, dict):
            out.update({f"eval.{k}": float(v) for k, v in overall.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})
    return out


def load_run_dir(path: str | Path, root: Path | None = None) -> RunRecord:
    """Read one run directory."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: {'is a file, not a run folder' if path.exists() else 'run folder not found'}")
    if not any((path / m).is_file() for m in RUN_MARKERS):
        raise InputError(f"{path}: not a run directory (no {' or '.join(RUN_MARKERS)})")
    name = str(path.relative_to(root)) if root is not None and path != root else path.name
    record = RunRecord(name=name, source=str(path))
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{manifest}: invalid JSON: {exc}") from None
        if isinstance(meta, dict):
            record.created = _minute(meta.get("created") or meta.get("started"))
            status = meta.get("status") or meta.get("outcome")
            record.status = str(status) if status is not None else None
    if record.created is None:
        stamp = max((path / m).stat().st_mtime for m in RUN_MARKERS if (path / m).is_file())
        record.created = datetime.fromtimestamp(stamp, tz=UTC).strftime(MINUTE)
    if (path / "metrics.jsonl").is_file():
        record.series = _read_metrics(path / "metrics.jsonl")
    record.summary = _read_summary(path / "report")
    config = next((path / n for n in CONFIG_NAMES if (path / n).is_file()), None)
    if config is not None:
        try:
            record.config = flatten(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
        except yaml.YAMLError as exc:
            raise InputError(f"{config}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return record


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run directories at or under ``root`` (at most three levels down), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: {'is a file, not a folder of runs' if root.exists() else 'folder not found'}")
    found = []
    for folder, subdirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if any(m in files for m in RUN_MARKERS):
            found.append(Path(folder))
            subdirs[:] = []  # a run's own subfolders (checkpoints, report) are not runs
        elif depth >= MAX_DEPTH:
            subdirs[:] = []
        subdirs.sort()
    return sorted(found)


def list_run_dirs(root: str | Path) -> list[RunRecord]:
    root = Path(root)
    return [load_run_dir(p, root) for p in find_run_dirs(root)]


def mlflow_runs(tracking_uri: str, *, experiment: str | None = None, runs: Iterable[str] = ()) -> list[RunRecord]:
    """Runs of an MLflow store: all (of ``experiment``), or those named by id or run name."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("--tracking-uri needs mlflow (pip install mlflow-skinny sqlalchemy alembic)") from None
    client = MlflowClient(tracking_uri=check_store(tracking_uri))
    try:
        experiments = list(client.search_experiments())
        if experiment is not None:
            experiments = [e for e in experiments if e.name == experiment]
            if not experiments:
                raise InputError(f"{tracking_uri}: no experiment named {experiment!r}")
        names = {e.experiment_id: e.name for e in experiments}
        found = client.search_runs(list(names), max_results=10_000) if names else []
        wanted = list(runs)
        if wanted:
            by_key = {**{r.info.run_name: r for r in found}, **{r.info.run_id: r for r in found}}
            missing = [w for w in wanted if w not in by_key]
            if missing:
                raise InputError(f"{tracking_uri}: no run with id or name {missing[0]!r}")
            found = [by_key[w] for w in wanted]
        records = []
        for run in found:
            series = {}
            for key in run.data.metrics:
                history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
                series[key] = [(float(m.step), float(m.value)) for m in history]
            created = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC).strftime(MINUTE)
            records.append(RunRecord(name=f"{names.get(run.info.experiment_id, '?')}/{run.info.run_name}",
                                     source=f"{tracking_uri}#{run.info.run_id}", created=created,
                                     status=run.info.status, series=series, config=dict(run.data.params)))
    except MlflowException as exc:
        raise InputError(f"{tracking_uri}: {str(exc).splitlines()[0]}") from None
    return records


def key_metrics(records: list[RunRecord], limit: int = 6) -> list[str]:
    """The metrics worth a column: evaluation results and validation metrics first, then losses."""
    names = sorted({n for r in records for n in r.final()})

    def priority(name: str) -> tuple[int, str]:
        low = name.lower()
        if low.startswith("eval."):
            return 0, name
        if low.startswith(("val", "valid")) or "/val" in low or "val_" in low:
            return 1, name
        if "loss" in low:
            return 2, name
        return 3, name

    return sorted(names, key=priority)[:limit]


def config_diff(records: list[RunRecord]) -> dict[str, list[Any]]:
    """Config keys whose values are not the same in every run: ``{key: [value per run]}`` (None = absent)."""
    keys = sorted({k for r in records for k in r.config})
    diff = {}
    for key in keys:
        values = [r.config.get(key) for r in records]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for v in values[1:]):
            diff[key] = values
    return diff


def compare(records: list[RunRecord], plot: str | Path | None = None, metrics: list[str] | None = None
            ) -> dict[str, Any]:
    """Final metrics side by side, differing config keys, and (with ``plot``) overlaid curves as a PNG."""
    if len(records) < 1:
        raise InputError("nothing to compare: give at least one run")
    names = metrics or key_metrics(records, limit=12)
    table = {r.name: {m: r.final().get(m) for m in names} for r in records}
    result: dict[str, Any] = {"runs": [r.name for r in records], "metrics": table,
                              "config_diff": config_diff(records)}
    if plot is not None:
        curves = {m: {r.name: ([s for s, _ in r.series[m]], [v for _, v in r.series[m]])
                      for r in records if len(r.series.get(m, [])) > 0}
                  for m in names if any(len(r.series.get(m, [])) > 1 for r in records)}
        if curves:
            plots.save(plots.series_figure(curves, "Runs compared"), plot)
            result["plot"] = str(plot)
        else:
            reporter().warning("no metric has a series of more than one point: no curves to plot")
    return result
