"""Chains of ops: every op and parameter validated before anything runs, then applied in order.

A chain file is ``{ops: [{name: area_filter, min_area: 20}, "explode", {simplify: {tolerance: 1}}, ...]}``
(every spec form :meth:`aifactory.registry.Registry.resolve` accepts). Errors name the file and the key
path (``ops.3.min_area``). Relative file paths in op parameters (a geofence) are relative to the chain
file. Any op takes one more key, ``classes: [building, ...]``: it then runs on those classes only and the
other features pass around it (unless the op has a ``classes`` parameter of its own).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from pydantic import BaseModel, Field

from aifactory.config import StrictModel, load_yaml, validate
from aifactory.errors import InputError
from aifactory.postprocess.base import CLASS, OPS, Op
from aifactory.progress import reporter
from aifactory.registry import Entry

Spec = str | Mapping[str, Any]


class ChainFile(StrictModel):
    """A post-processing chain file."""

    ops: list[Any] = Field(description="ops applied in order: a name, or a mapping with 'name' and parameters")


class Routing(StrictModel):
    classes: list[str] | None = Field(None, description="run the op on these classes only")


@dataclass(frozen=True)
class Step:
    """A validated op of a chain."""

    entry: Entry[Op]
    params: BaseModel
    classes: list[str] | None
    spec: dict[str, Any]  # the normalised spec ({"name": ..., **raw params}), YAML-serialisable


def _is_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_path(arg) for arg in typing.get_args(annotation))
    return False


def _rebase(model: type[BaseModel], raw: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """Relative paths of path-typed parameters made relative to ``base_dir`` (the chain file's folder)."""
    out = dict(raw)
    if base_dir is None:
        return out
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if (field is not None and _is_path(field.annotation) and isinstance(value, str) and value
                and not Path(value).expanduser().is_absolute()):
            out[key] = str(base_dir / value)
    return out


def resolve_chain(ops: Sequence[Spec], source: str = "", base_dir: Path | None = None) -> list[Step]:
    """Validate every op of a chain; a problem raises ConfigError ``source: ops.<i>.<key>: ...``."""
    if isinstance(ops, str | Mapping):
        raise InputError(f"{source or 'postprocess'}: ops: expected a list of ops, got {type(ops).__name__}")
    steps = []
    for index, spec in enumerate(ops):
        key = f"ops.{index}"
        where = f"{source}: {key}" if source else key
        name, raw = OPS.split_spec(spec, where)
        entry = OPS.get(name, where)
        raw = _rebase(entry.params, raw, base_dir)
        op_raw = dict(raw)
        routing = Routing(classes=None)
        if "classes" not in entry.params.model_fields:
            routing = validate(Routing, {"classes": op_raw.pop("classes", None)}, source or "postprocess", key)
        params = validate(entry.params, op_raw, source or "postprocess", prefix=key)
        steps.append(Step(entry, params, routing.classes, {"name": name, **raw}))
    return steps


def load_chain(path: str | Path) -> list[dict[str, Any]]:
    """Read and fully validate a chain file; returns its specs (relative paths made absolute)."""
    path = Path(path)
    chain = validate(ChainFile, load_yaml(path), str(path))
    return [step.spec for step in resolve_chain(chain.ops, str(path), path.parent.resolve())]


def run_step(frame: gpd.GeoDataFrame, step: Step) -> gpd.GeoDataFrame:
    """Apply one op, only to the features of ``step.classes`` when set."""
    if step.classes is None:
        return step.entry.func(frame, step.params)
    if CLASS not in frame.columns:
        raise InputError(f"{step.entry.name}: 'classes' is set but the features have no {CLASS!r} column")
    chosen = frame[CLASS].isin(step.classes).to_numpy()
    done = step.entry.func(frame.loc[chosen], step.params)
    if done.crs != frame.crs:
        raise InputError(f"{step.entry.name}: changes the CRS, so it cannot run on some classes only")
    joined = pd.concat([done, frame.loc[~chosen]])
    return gpd.GeoDataFrame(joined, geometry=frame.geometry.name, crs=frame.crs)


def apply_chain(frame: gpd.GeoDataFrame, ops: Sequence[Spec], where: str = "",
                base_dir: Path | None = None) -> gpd.GeoDataFrame:
    """Apply ops in order (all validated first); ``where`` names the specs' source in error messages.

    Relative paths in op parameters are taken relative to ``base_dir`` when given (else the working
    directory). Reports progress per op to :func:`aifactory.progress.reporter` (task ``postprocess``).
    """
    steps = resolve_chain(ops, where, base_dir)
    rep = reporter()
    for index, step in enumerate(steps):
        rep.progress("postprocess", index / max(len(steps), 1), f"{step.entry.name} on {len(frame)} features")
        frame = run_step(frame, step)
    rep.progress("postprocess", 1.0, f"{len(frame)} features")
    return frame
