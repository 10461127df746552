"""RPS: find the operating point (score threshold × minimum area × NMS IoU × post-processing parameters)
from stored raw detections, without running the model again.

Post-processing sweeps (``OP.PARAM``) and :func:`apply_operating_point` run ops of
:mod:`aifactory.postprocess` — the one sideways stage import here: an operating point *is* a chain of ops.

How it stays cheap: detections are ranked by score once. Greedy matching by score and greedy NMS are
both prefix-consistent (the result for the detections above a threshold is the prefix of the result
for all of them), so one matching per combination of the *other* parameters yields every score
threshold through cumulative sums. Candidate pairs (prediction × truth, prediction × prediction) are
computed once per post-processing combination; NMS and the minimum area only mask them.

Order applied, as prediction must reproduce it: post-processing chain → NMS (per class, IoU >
``nms_iou``) → ``area ≥ min_area`` → ``score ≥ score``. ``min_area`` is a filter on predictions only
(filtering the truth too would make large values look better by shrinking the task) and is in the
units of the detections' CRS (pixels² without CRS; degrees² for a geographic CRS), the units of their
``area`` field that the QGIS slider filters on and of the ``area_filter`` op that applies the point: in m² for
geographic detections, the chosen point would keep almost nothing once applied.

``operating_point.json`` (version 1), read by prediction, bundles and the QGIS slider::

    {
      "version": 1,
      "criterion": "max_f1" | "max_recall_at_precision" | "max_precision",
      "target_precision": 0.9 | null,   # given with --target-precision
      "target_met": true,               # false: no point reached the target, the most precise is used
                                        # (a point that keeps no detection never meets a target)
      "iou": 0.5,                       # matching IoU of the evaluation
      "score": 0.45,                    # keep detections with score >= this
      "min_area": 4.0,                  # ... and area >= this (detections' CRS units²)
      "nms_iou": 0.5 | null,            # per-class NMS at this IoU first; null = no NMS
      "postprocess": {"OP.PARAM": 1.0}, # swept post-processing parameters ({} if none)
      "precision": …, "recall": …, "f1": …, "tp": …, "fp": …, "fn": …,
      "per_class": {"<class>": {"score", "min_area", "nms_iou", "postprocess", "precision", "recall",
                                "f1", "tp", "fp", "fn"}},
      "per_geofence": {"<zone>": {the fields above, per_class included}},   # only with a geofence
      "by_class": false,                # true: per_class holds each class's own best parameters;
                                        # false: the global parameters and each class's metrics there
      "level": 2 | null                 # classes cut to this hierarchy level before matching (--level)
    }

With ``level`` (:mod:`aifactory.evaluation.levels`), matching, the per-class rows and ``per_class`` use the classes
cut to that level, while NMS still groups detections by their own classes: the ``nms`` op that applies the point
to raw detections knows no level.

``aifactory rps --config FILE`` reads the same options from YAML (:class:`RpsConfig`; see
``resources/examples/rps_buildings.yaml``); flags given on the command line win over the file.

``points.csv`` holds every point: ``zone, class, score, min_area, nms_iou, <OP.PARAM…>, tp, fp, fn,
precision, recall, f1`` (``zone`` and ``class`` are ``all`` for the pooled rows). With a geofence, a zone's
rows (and ``all``, the union of zones) count the objects whose point on surface lies in it, boundary included,
matched among themselves: the numbers of both layers clipped to the zone and evaluated alone.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import Field

from aifactory.config import StrictModel, load_config, validate
from aifactory.errors import ConfigError, InputError
from aifactory.evaluation import plots
from aifactory.evaluation.levels import MAX_LEVEL, check_level
from aifactory.evaluation.matching import greedy_match, nms_keep, overlapping_pairs, rank_order, self_pairs
from aifactory.evaluation.metrics import PRCurve, counts_at, curve_from_flags, vectorized_prf
from aifactory.evaluation.objects import prepare, warn_level_mismatch
from aifactory.io.atomic import atomic_path
from aifactory.io.vector import align_to_crs
from aifactory.postprocess import OPS, apply_chain
from aifactory.postprocess.base import is_polygonal
from aifactory.progress import reporter

VERSION = 1
BUILTIN = ("score", "min_area", "nms_iou")
DEFAULT_SCORES = "0.05:0.95:0.05"
MAX_VALUES = 10_000
ALL = "all"


def parse_values(name: str, text: str, where: str) -> list[float]:
    """``start:stop:step`` (inclusive) or ``v1,v2,…`` → sorted distinct floats; errors name ``where``."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(v) for v in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or not all(math.isfinite(v) for v in parts):
                raise ConfigError(f"{where}: step must be a positive number, got {text!r}")
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > MAX_VALUES:
                raise ConfigError(f"{where}: {count} values is too many (at most {MAX_VALUES})")
            values = [round(start + i * step, 10) for i in range(max(count, 0))]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{where}: expected start:stop:step or a comma-separated list of numbers, got {text!r}"
                          ) from None
    if not values:
        raise ConfigError(f"{where}: the sweep has no points ({text!r})")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: values must be finite numbers, got {text!r}")
    if name == "min_area" and min(values) < 0:
        raise ConfigError(f"{where}: min_area values must be ≥ 0")
    if name == "nms_iou" and not all(0 < v <= 1 for v in values):
        raise ConfigError(f"{where}: nms_iou values must be in (0, 1]")
    return sorted(set(values))


def parse_sweeps(specs: Sequence[str], origins: Sequence[str] | None = None) -> dict[str, list[float]]:
    """``["score=0.1:0.9:0.1", "nms_iou=0.3,0.5", "OP.PARAM=1,2"]`` → {name: values}; score defaults to
    ``0.05:0.95:0.05``, min_area to [0] and nms_iou to no NMS.

    ``origins`` name where each spec came from in error messages (default ``--sweep SPEC``; a config file's
    ``FILE: sweep.NAME``). Post-processing parameters are validated here, before any detection is read.
    """
    grid: dict[str, list[float]] = {}
    for spec, where in zip(specs, origins or [f"--sweep {spec}" for spec in specs], strict=True):
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"{where}: expected NAME=start:stop:step or NAME=v1,v2,…")
        if name not in BUILTIN and (name.count(".") != 1 or not all(name.split("."))):
            raise ConfigError(f"{where}: unknown parameter {name!r}; expected one of {', '.join(BUILTIN)} "
                              "or OP.PARAM (a post-processing parameter)")
        if name in grid:
            raise ConfigError(f"{where}: {name} is swept twice")
        grid[name] = parse_values(name, text, where)
        if name not in BUILTIN:
            _check_postprocess_sweep(name, grid[name], where)
    grid.setdefault("score", parse_values("score", DEFAULT_SCORES, "default score sweep"))
    return grid


def _check_postprocess_sweep(name: str, values: list[float], where: str) -> None:
    """Every value of an ``OP.PARAM`` sweep validated as that op's parameter, the error naming the sweep
    (the chains built from it later are none the user wrote)."""
    op, param = name.split(".")
    entry = OPS.get(op, where)
    if param not in entry.params.model_fields:
        raise ConfigError(f"{where}: postprocess op {op!r} has no parameter {param!r}; parameters: "
                          f"{', '.join(entry.params.model_fields) or 'none'}")
    for value in values:
        validate(entry.params, {param: value}, where)


class RpsConfig(StrictModel):
    """An RPS run as YAML; relative paths are relative to the file."""

    pred: str | None = Field(None, description="raw detections (layer 'detections' if present)")
    truth: str | None = Field(None, description="truth objects")
    output: str | None = Field(None, description="output folder")
    sweep: dict[str, str | float | list[float]] = Field(
        default_factory=dict, description="NAME: 'start:stop:step', a number or a list (score, min_area, "
                                          "nms_iou, OP.PARAM)")
    iou: float = Field(0.5, gt=0, le=1, description="IoU for a match")
    target_precision: float | None = Field(None, ge=0, le=1, description="max recall at this precision")
    by_class: bool = Field(False, description="each class's own best parameters too")
    level: int | None = Field(None, ge=1, le=MAX_LEVEL, description="cut truth and predicted classes to this hierarchy "
                                                           "level before matching")
    geofence: str | None = Field(None, description="zones: count only objects inside, a point per zone")
    class_field: str = "class"
    score_field: str = "score"
    pred_layer: str | None = None
    truth_layer: str | None = None
    pred_crs: str | None = None
    truth_crs: str | None = None

    def sweep_specs(self) -> list[str]:
        """The sweeps as ``NAME=…`` strings for :func:`parse_sweeps` (in the order of :attr:`sweep`)."""
        out = []
        for name, value in self.sweep.items():
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            out.append(f"{name}={text}")
        return out


def load_rps_config(path: str | Path) -> RpsConfig:
    """Read an RPS YAML file; paths in it become relative to its folder."""
    config = load_config(path, RpsConfig)
    base = Path(path).resolve().parent
    for key in ("pred", "truth", "output", "geofence"):
        value = getattr(config, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            setattr(config, key, str(base / value))
    return config


def chain_of(params: dict[str, float]) -> list[dict[str, Any]]:
    """``{"OP.PARAM": value}`` → op specs (one per op, in first-seen order)."""
    ops: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        op, param = key.split(".")
        ops.setdefault(op, {"name": op})[param] = value
    return list(ops.values())


def _postprocess_chains(grid: dict[str, list[float]]) -> list[tuple[dict[str, float], list[dict[str, Any]]]]:
    """Every combination of OP.PARAM values, as (flat params, chain of op specs) in first-seen op order."""
    names = [n for n in grid if n not in BUILTIN]
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    return [(flat, chain_of(flat)) for flat in combos]


def operating_chain(point: dict[str, Any]) -> list[dict[str, Any]]:
    """The post-processing chain that reproduces an operating point on raw detections, in RPS's order:
    swept ops at their chosen values → NMS → minimum area → minimum score."""
    chain = chain_of(point.get("postprocess") or {})
    if point.get("nms_iou") is not None:
        chain.append({"name": "nms", "iou_threshold": point["nms_iou"]})
    if point.get("min_area"):
        chain.append({"name": "area_filter", "min_area": point["min_area"]})
    chain.append({"name": "score_filter", "min_score": point["score"]})
    return chain


def read_operating_point(path: str | Path) -> dict[str, Any]:
    """An ``operating_point.json`` (any version up to this one), checked for its ``score``."""
    path = Path(path)
    try:
        point = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the operating point: {exc}") from None
    if not isinstance(point, dict) or not isinstance(point.get("score"), int | float):
        raise InputError(f"{path}: not an operating point (no numeric 'score')")
    if point.get("version", VERSION) > VERSION:
        raise InputError(f"{path}: operating point version {point['version']} is newer than supported ({VERSION})")
    return point


def apply_operating_point(frame: gpd.GeoDataFrame, point: dict[str, Any] | str | Path) -> gpd.GeoDataFrame:
    """Detections kept at an operating point (a dict or an ``operating_point.json`` path)."""
    if not isinstance(point, dict):
        point = read_operating_point(point)
    return apply_chain(frame, operating_chain(point), "operating point")


def check_zones(zones: gpd.GeoDataFrame, source: str) -> gpd.GeoDataFrame:
    """Refuse zones that are not polygons: a point or a line encloses nothing, so every object would silently
    fall outside."""
    polygonal = is_polygonal(zones.geometry.to_numpy())
    if not len(zones) or not polygonal.all():
        found = ", ".join(sorted({str(t) for t in zones.geom_type[~polygonal]})) or "nothing"
        raise InputError(f"{source}: a geofence is made of polygons (zones), found {found}")
    return zones


def _zone_masks(zones: gpd.GeoDataFrame | None, frame: gpd.GeoDataFrame, crs: Any) -> dict[str, np.ndarray]:
    """Membership of each object (by a point on its surface) in the union of zones and in each zone.

    A point on a zone's boundary belongs to it (``intersects``, as the ``geofence`` op's centroid rule): with
    ``within``, an object centred on the edge shared by two adjacent zones would count in neither, nor in ``all``.
    """
    if zones is None:
        return {ALL: np.ones(len(frame), dtype=bool)}
    zones = align_to_crs(zones, crs, "geofence")
    points = shapely.point_on_surface(frame.geometry.to_numpy())
    zone_geoms = zones.geometry.to_numpy()
    idx_point, idx_zone = shapely.STRtree(zone_geoms).query(points, predicate="intersects")
    names = zone_names(zones)
    masks = {ALL: np.zeros(len(frame), dtype=bool)}
    masks[ALL][idx_point] = True
    for z, name in enumerate(names):
        mask = np.zeros(len(frame), dtype=bool)
        mask[idx_point[idx_zone == z]] = True
        masks[name] = mask
    return masks


def zone_names(zones: gpd.GeoDataFrame) -> list[str]:
    """A zone's name: its ``name`` field when present and unique, else ``zone_<n>``."""
    if "name" in zones.columns and zones["name"].notna().all() and zones["name"].is_unique:
        return [str(v) for v in zones["name"]]
    return [f"zone_{i}" for i in range(len(zones))]


def _curves(prep_pred: gpd.GeoDataFrame, prep_truth: gpd.GeoDataFrame, areas: np.ndarray,
            grid: dict[str, list[float]], iou: float, pred_zone: dict[str, np.ndarray],
            truth_zone: dict[str, np.ndarray], tick: Callable[[float], None], nms_class: np.ndarray | None = None
            ) -> list[tuple[dict[str, Any], PRCurve]]:
    """PR curves for each (zone, class, nms_iou, min_area): one greedy match per (zone, nms_iou, min_area).

    ``nms_class`` are the classes NMS groups by (default: the matched ones), the detections' own when the matched
    classes were cut to a level.

    Each zone is matched on its own objects, as if both layers were clipped to it: a detection inside a zone
    matched to a truth object outside it would count a TP that the zone's truth does not hold (FN = truth − TP
    then hides a missed object, or goes negative) and leave that truth object a false FN in its own zone.
    """
    geoms_p, geoms_t = prep_pred.geometry.to_numpy(), prep_truth.geometry.to_numpy()
    cls_p, cls_t = prep_pred["class"].to_numpy(), prep_truth["class"].to_numpy()
    codes, uniques = pd.factorize(np.concatenate([cls_p, cls_t]), sort=True)
    code_p, code_t = codes[:len(cls_p)], codes[len(cls_p):]
    scores = prep_pred["score"].to_numpy()
    n_p, n_t = len(prep_pred), len(prep_truth)
    pairs = overlapping_pairs(geoms_p, geoms_t, code_p, code_t)
    order = rank_order(scores)
    rank = np.empty(n_p, dtype="int64")
    rank[order] = np.arange(n_p)
    nms_values: list[float | None] = list(grid.get("nms_iou", [])) or [None]
    nms_code = code_p if nms_class is None else pd.factorize(nms_class, sort=True)[0]
    nms_pairs = self_pairs(geoms_p, nms_code) if nms_values != [None] else None
    out = []
    areas_values = grid.get("min_area", [0.0])
    for k, nms in enumerate(nms_values):
        kept = nms_keep(nms_pairs, rank, n_p, nms) if nms is not None and nms_pairs is not None else \
            np.ones(n_p, dtype=bool)
        for j, min_area in enumerate(areas_values):
            tick((k * len(areas_values) + j) / (len(nms_values) * len(areas_values)))
            keep = kept & (areas >= min_area)
            live = pairs.subset(keep[pairs.a])
            for zone in pred_zone:
                inside = live.subset(pred_zone[zone][live.a] & truth_zone[zone][live.b])
                hit = greedy_match(inside, rank, n_p, n_t, iou)[0] >= 0
                for c, name in [(-1, ALL), *enumerate(uniques.tolist())]:
                    sel = keep & pred_zone[zone] & ((code_p == c) if c >= 0 else True)
                    tsel = truth_zone[zone] & ((code_t == c) if c >= 0 else True)
                    key = {"zone": zone, "class": name, "min_area": float(min_area), "nms_iou": nms}
                    out.append((key, curve_from_flags(scores[sel], hit[sel], int(np.count_nonzero(tsel)))))
    return out


def sweep(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, grid: dict[str, list[float]], *, iou: float = 0.5,
          class_field: str = "class", score_field: str = "score", geofence: gpd.GeoDataFrame | None = None,
          pred_source: str = "predictions", truth_source: str = "truth", level: int | None = None) -> pd.DataFrame:
    """Every point of the grid (per zone and class) as a table; see the module docstring for the columns.

    The raw detections are prepared (checked) once before any chain runs: inputs that cannot be compared
    fail at once, naming ``pred_source``/``truth_source``. ``level`` cuts both sides' classes before matching.
    """
    if not 0 < iou <= 1:
        raise InputError(f"iou must be in (0, 1], got {iou}")
    check_level(level)
    if geofence is not None:
        check_zones(geofence, "geofence")
    grid = {**grid}
    grid.setdefault("score", parse_values("score", DEFAULT_SCORES, "default score sweep"))
    chains = _postprocess_chains(grid)
    rep = reporter()
    rows: list[dict[str, Any]] = []
    thresholds = np.asarray(grid["score"], dtype="float64")
    prepared = functools.partial(prepare, truth=truth, class_field=class_field, score_field=score_field,
                                 pred_source=pred_source, truth_source=truth_source, level=level)
    raw_prep = prepared(pred)
    warn_level_mismatch(raw_prep)
    if pred.crs is not None and pred.crs.is_geographic and any(v > 0 for v in grid.get("min_area", [])):
        rep.warning(f"{pred_source}: in a geographic CRS ({pred.crs.to_string()}): min_area is in degrees², the "
                    "units of its area field")
    for k, (flat, chain) in enumerate(chains):
        raw = apply_chain(pred, chain) if chain else pred
        prep = prepared(raw) if chain else raw_prep
        areas = native_areas(raw, prep.pred, score_field)
        pred_zone = _zone_masks(geofence, prep.pred, prep.crs)
        truth_zone = _zone_masks(geofence, prep.truth, prep.crs)
        def tick(fraction: float, k: int = k) -> None:
            rep.progress("rps", (k + fraction) / len(chains), f"{len(rows)} points")

        for key, curve in _curves(prep.pred, prep.truth, areas, grid, iou, pred_zone, truth_zone, tick,
                                  prep.pred_class_full if level is not None else None):
            counts = np.array([counts_at(curve, s) for s in thresholds])
            p, r, f = vectorized_prf(counts[:, 0], counts[:, 1], counts[:, 2])
            for i, s in enumerate(thresholds):
                rows.append({**key, "score": float(s), **flat, "tp": int(counts[i, 0]), "fp": int(counts[i, 1]),
                             "fn": int(counts[i, 2]), "precision": float(p[i]), "recall": float(r[i]),
                             "f1": float(f[i])})
        rep.progress("rps", (k + 1) / len(chains), f"{len(rows)} points")
    columns = ["zone", "class", "score", "min_area", "nms_iou", *[n for n in grid if n not in BUILTIN],
               "tp", "fp", "fn", "precision", "recall", "f1"]
    return pd.DataFrame(rows, columns=columns)


def native_areas(raw: gpd.GeoDataFrame, prepared: gpd.GeoDataFrame, score_field: str) -> np.ndarray:
    """Area of each prepared prediction in the detections' own CRS units, geographic ones included (degrees²):
    the units in which ``area_filter`` applies the operating point and the ``area`` field is written.

    ``prepare`` keeps the rows of ``raw`` in order minus empty ones; areas are recomputed on the
    prepared (repaired) geometries brought back to the detections' CRS.
    """
    if raw.crs is None or prepared.crs is None:
        return np.asarray(shapely.area(prepared.geometry.to_numpy()))
    return np.asarray(shapely.area(prepared.to_crs(raw.crs).geometry.to_numpy()))


def _best(points: pd.DataFrame, target: float | None) -> tuple[pd.Series, str, bool]:
    """The chosen row: max F1, or max recall with precision ≥ target (most precise if none reaches it).

    Ties go to higher precision, then to the higher score threshold, the smaller area, the lower NMS IoU.
    A point that keeps no detection has precision 1 by convention only: it never meets a target, and is the
    most precise one only when no point keeps a detection.
    """
    if points.empty:
        raise InputError("the sweep produced no points")
    ranked = points.assign(_nms=points["nms_iou"].fillna(2.0), _keeps=points["tp"] + points["fp"] > 0)
    tie = ["precision", "score", "min_area", "_nms"]
    tie_up = [False, False, True, True]
    if target is None:
        row = ranked.sort_values(["f1", *tie], ascending=[False, *tie_up], kind="stable").iloc[0]
        return row, "max_f1", True
    ok = ranked[(ranked["precision"] >= target) & ranked["_keeps"]]
    if ok.empty:
        row = ranked.sort_values(["_keeps", "precision", "recall", "score", "min_area", "_nms"],
                                 ascending=[False, False, False, False, True, True], kind="stable").iloc[0]
        return row, "max_precision", False
    row = ok.sort_values(["recall", *tie], ascending=[False, *tie_up], kind="stable").iloc[0]
    return row, "max_recall_at_precision", True


def _point(row: pd.Series, post: list[str]) -> dict[str, Any]:
    nms = row["nms_iou"]
    return {"score": float(row["score"]), "min_area": float(row["min_area"]),
            "nms_iou": None if nms is None or pd.isna(nms) else float(nms),
            "postprocess": {n: float(row[n]) for n in post},
            "precision": float(row["precision"]), "recall": float(row["recall"]), "f1": float(row["f1"]),
            "tp": int(row["tp"]), "fp": int(row["fp"]), "fn": int(row["fn"])}


def _same_params(points: pd.DataFrame, point: dict[str, Any], post: list[str]) -> pd.Series:
    mask = np.isclose(points["score"], point["score"]) & np.isclose(points["min_area"], point["min_area"])
    mask &= points["nms_iou"].isna() if point["nms_iou"] is None else np.isclose(points["nms_iou"].astype(float),
                                                                                  point["nms_iou"])
    for n in post:
        mask &= np.isclose(points[n], point["postprocess"][n])
    return mask


def choose_operating_point(points: pd.DataFrame, *, target_precision: float | None = None, by_class: bool = False,
                           iou: float = 0.5, level: int | None = None) -> dict[str, Any]:
    """The operating point dict (module docstring schema) from a :func:`sweep` table (``level``: the one it was
    swept at, recorded)."""
    post = [c for c in points.columns if "." in c]

    def for_zone(zone_points: pd.DataFrame) -> dict[str, Any]:
        pooled = zone_points[zone_points["class"] == ALL]
        row, criterion, met = _best(pooled, target_precision)
        point = {"criterion": criterion, "target_precision": target_precision, "target_met": met, **_point(row, post)}
        per_class = {}
        for name, class_points in zone_points[zone_points["class"] != ALL].groupby("class", sort=True):
            if not (class_points[["tp", "fp", "fn"]].to_numpy() > 0).any():
                continue  # the class has no object in this zone
            if by_class:
                per_class[str(name)] = _point(_best(class_points, target_precision)[0], post)
            else:
                same = class_points[_same_params(class_points, point, post)]
                per_class[str(name)] = _point(same.iloc[0], post)
        point["per_class"] = per_class
        return point

    result: dict[str, Any] = {"version": VERSION, "iou": float(iou), **for_zone(points[points["zone"] == ALL])}
    zones = [z for z in points["zone"].unique() if z != ALL]
    if zones:
        result["per_geofence"] = {str(z): for_zone(points[points["zone"] == z]) for z in zones}
    result["by_class"] = by_class
    result["level"] = level
    return result


def run_rps(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, grid: dict[str, list[float]], out_dir: str | Path, *,
            iou: float = 0.5, target_precision: float | None = None, by_class: bool = False,
            geofence: gpd.GeoDataFrame | None = None, class_field: str = "class", score_field: str = "score",
            pred_source: str = "predictions", truth_source: str = "truth", level: int | None = None
            ) -> dict[str, Any]:
    """Sweep, choose, and write ``points.csv``, ``operating_point.json``, ``pr_curve.png``, ``f1_curve.png``
    into ``out_dir`` (replaced atomically as a whole). Returns the operating point."""
    if target_precision is not None and not 0 <= target_precision <= 1:
        raise InputError(f"target precision must be in [0, 1], got {target_precision}")
    level = check_level(level)
    points = sweep(pred, truth, grid, iou=iou, class_field=class_field, score_field=score_field, geofence=geofence,
                   pred_source=pred_source, truth_source=truth_source, level=level)
    op = choose_operating_point(points, target_precision=target_precision, by_class=by_class, iou=iou, level=level)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, folder=True) as tmp:
        tmp.mkdir(parents=True)
        points.to_csv(tmp / "points.csv", index=False, float_format="%.6g")
        (tmp / "operating_point.json").write_text(json.dumps(op, indent=2), encoding="utf-8")
        _plot(points, op, tmp)
    reporter().artifact("operating_point", out_dir / "operating_point.json")
    return op


MAX_LINES = 8


def _plot(points: pd.DataFrame, op: dict[str, Any], out: Path) -> None:
    """PR and F1-vs-score curves of the best parameter combinations (pooled over classes and zones)."""
    curves = plot_curves(points, op)
    title = f"{op['criterion']}: score ≥ {op['score']:g}, F1 {op['f1']:.3f}"
    plots.save(plots.pr_figure(curves, title, (op["recall"], op["precision"], "operating point")),
               out / "pr_curve.png")
    plots.save(plots.threshold_figure(curves, title, op["score"], "operating point"), out / "f1_curve.png")


def plot_curves(points: pd.DataFrame, op: dict[str, Any]) -> dict[str, PRCurve]:
    """The curves drawn: the :data:`MAX_LINES` combinations with the best F1, the operating point's always among
    them (labelled by their non-score parameters; pooled rows)."""
    pooled = points[(points["zone"] == ALL) & (points["class"] == ALL)]
    others = [c for c in pooled.columns if c not in ("zone", "class", "score", "tp", "fp", "fn", "precision",
                                                      "recall", "f1")]
    keyed = pooled.assign(_key=pooled[others].map(str).agg(" ".join, axis=1) if others else "")
    best = list(keyed.groupby("_key", sort=False)["f1"].max().sort_values(ascending=False).head(MAX_LINES).index)
    # the chosen combination is always drawn: with a target precision it need not be among the best F1s, and
    # the operating point's star would float beside every curve
    post = [c for c in pooled.columns if "." in c]
    chosen = keyed.loc[_same_params(keyed, op, post), "_key"]
    if len(chosen) and chosen.iloc[0] not in best:
        best = [*best[:MAX_LINES - 1], chosen.iloc[0]]
    curves = {}
    for key in best:
        combo = keyed[keyed["_key"] == key].sort_values("score", ascending=False)
        label = ", ".join(f"{c}={combo[c].iloc[0]}" for c in others) or "all"
        curves[label] = PRCurve(combo["score"].to_numpy(), combo["precision"].to_numpy(), combo["recall"].to_numpy(),
                                combo["f1"].to_numpy(), combo["tp"].to_numpy(), combo["fp"].to_numpy(),
                                int(combo["tp"].iloc[0] + combo["fn"].iloc[0]))
    return curves
