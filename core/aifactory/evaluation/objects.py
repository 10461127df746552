"""Object metrics: one-to-one matching, TP/FP/FN, P/R/F1 and COCO mAP per class, per group and overall.

Inputs are two GeoDataFrames of polygons (boxes are polygons): predictions with a class and a score,
truth with a class. Before matching they are made comparable (:func:`prepare`): invalid geometries are
repaired and counted, predictions are reprojected to the truth's CRS (both go to a local UTM zone if
that CRS is geographic, so that areas are in m²), and objects smaller than ``min_area`` are dropped
from both sides (map units², pixels² for data without CRS). Inputs that cannot be compared are refused
rather than scored zero: one side with a CRS and the other without, extents in two CRSs that do not overlap
at all once reprojected (a wrong CRS label, most often; in one CRS, a warning), scores that are not numbers
in [0, 1] (read by :func:`aifactory.postprocess.base.score_values`, the one sideways import: post-processing
reads the same field by the same rule), a class or score field named but absent.

Matching is per group (``by``: image, AOI) and per class, greedy by score at IoU ≥ ``iou``
(:mod:`aifactory.evaluation.matching` states the tie rules). Classes compare exactly, or both cut to
their first ``level`` levels of the class hierarchy (:mod:`aifactory.evaluation.levels`). Counts (TP/FP/FN,
P/R/F1) use the detections with score ≥ ``min_score``; AP integrates over every threshold, so it uses all
detections.
AP is COCO's (per class, then the mean over classes that have truth) with no cap on detections per
image. Empty sets follow :mod:`aifactory.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from aifactory.errors import InputError
from aifactory.evaluation.levels import check_level, cut_classes, level_hint
from aifactory.evaluation.matching import Pairs, greedy_match, overlapping_pairs, rank_order
from aifactory.evaluation.metrics import (
    IOU_THRESHOLDS,
    PRCurve,
    average_precision,
    counts_dict,
    curve_from_flags,
    mean_or_none,
)
from aifactory.io.vector import align_to_crs, list_layers, read_vector
from aifactory.postprocess.base import score_values
from aifactory.progress import reporter

#: Class name given to every object when neither input has the (default) class field.
SINGLE_CLASS = "object"
#: The detections schema's field names (DESIGN.md): only these may be absent (one class, scores of 1).
CLASS_FIELD, SCORE_FIELD = "class", "score"
#: Row/column of the object confusion matrix for unmatched objects.
BACKGROUND = "background"
TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 4: "MultiPoint", 5: "MultiLineString",
              7: "GeometryCollection"}


@dataclass
class Prepared:
    """Predictions and truth made comparable: columns ``class``, ``group`` (and ``score``), same CRS."""

    pred: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    crs: CRS | None
    inputs: dict[str, Any]
    #: the predictions' classes before the level cut: NMS groups by them, as the ``nms`` op does on raw detections
    pred_class_full: np.ndarray | None = None


def load_objects(path: str, layer: str | None = None, crs: Any = None, prefer_layer: str | None = None
                 ) -> gpd.GeoDataFrame:
    """Read any OGR source or CSV+WKT without repairing (evaluation repairs and counts itself).

    ``prefer_layer`` (e.g. ``detections``) is read when the source has such a layer and none is named.
    ``crs`` is the CRS of a layer that has none (a GeoPackage's "Undefined" SRS counts as none).
    """
    given = _given_crs(crs, path)
    if layer is None and prefer_layer and not str(path).lower().endswith(".csv"):
        layers = list_layers(path)
        if prefer_layer in layers:
            layer = prefer_layer
    frame = read_vector(path, layer=layer, crs=given, repair=False)
    if given is not None and frame.crs is not None and CRS.from_user_input(frame.crs) != given:
        reporter().warning(f"{path}: has its own CRS ({frame.crs.to_string()}); the CRS given for it "
                           f"({given.to_string()}) is not used")
    return frame


def _given_crs(crs: Any, path: str) -> CRS | None:
    """The CRS given for a layer, checked before anything is read: a typo must not pass unnoticed."""
    if crs is None:
        return None
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"{path}: the CRS given for it, {crs!r}, is not one pyproj knows: "
                         f"{str(exc).splitlines()[0]}") from None


def extent_text(crs: Any, bounds: Iterable[float]) -> str:
    """``CRS, extent xmin ymin xmax ymax``, for messages about data that do not line up."""
    name = CRS.from_user_input(crs).to_string() if crs is not None else "no CRS"
    return f"{name}, extent " + " ".join(f"{v:.10g}" for v in bounds)


def bounds_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(xmin, ymin, xmax, ymax)`` boxes share a point (NaN or infinite bounds never do)."""
    return bool(a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3])


def _polygonal(frame: gpd.GeoDataFrame, source: str) -> tuple[gpd.GeoDataFrame, int]:
    """Repair invalid geometries (counted), keep their polygonal parts, drop empties; refuse points/lines."""
    geoms = frame.geometry.array
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    frame = frame.loc[~empty]
    geoms = np.asarray(frame.geometry.array, dtype=object)
    types = shapely.get_type_id(geoms)
    polygonal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    if not polygonal.all():
        found = shapely.get_type_id(geoms[~polygonal][0])
        raise InputError(f"{source}: object metrics need polygons (or boxes), found {TYPE_NAMES.get(found, found)} "
                         "geometries")
    invalid = ~shapely.is_valid(geoms)
    repaired = int(invalid.sum())
    if repaired:
        fixed = shapely.make_valid(geoms[invalid])
        parts, index = shapely.get_parts(fixed, return_index=True)
        keep = np.isin(shapely.get_type_id(parts), (3, 6))
        # multipolygons() wants polygons: explode the multipolygon parts once more
        polys, sub = shapely.get_parts(parts[keep], return_index=True)
        owners = index[keep][sub]
        rebuilt = np.array([None] * len(fixed), dtype=object)
        if len(polys):
            rows = np.unique(owners)
            rebuilt[rows] = shapely.multipolygons(polys, indices=np.searchsorted(rows, owners))
        geoms = geoms.copy()
        geoms[invalid] = rebuilt
        frame = frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))
        empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        frame = frame.loc[~empty]
        reporter().warning(f"{source}: repaired {repaired} invalid geometries")
    return frame, repaired


def _field_names(frame: gpd.GeoDataFrame) -> str:
    return ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"


def _field(frame: gpd.GeoDataFrame, other: gpd.GeoDataFrame, name: str, source: str, other_source: str,
           what: str, default: str | None) -> pd.Series:
    """Values of ``name`` as strings; absent from both → ``default`` (or an error), from one → an error."""
    if name in frame.columns:
        return frame[name].astype("object").where(frame[name].notna(), "<none>").astype(str)
    if name in other.columns or default is None:
        there = f" (it is in {other_source})" if name in other.columns else ""
        raise InputError(f"{source}: has no {what} field {name!r}{there}; fields: {_field_names(frame)}")
    return pd.Series(default, index=frame.index, dtype=object)


def _align(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, pred_src: str, truth_src: str
           ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, CRS | None, bool]:
    """Predictions into the truth's CRS; both into local UTM when that CRS is geographic."""
    if truth.crs is None:
        if pred.crs is not None:
            raise InputError(f"{pred_src}: has a CRS ({pred.crs.to_string()}) but {truth_src} has none; "
                             "give both in pixel space or both with a CRS")
        return pred, truth, None, False
    if pred.crs is None:
        raise InputError(f"{pred_src}: has no CRS but {truth_src} has one ({truth.crs.to_string()}); "
                         "say the predictions' CRS (--pred-crs)")
    crs = CRS.from_user_input(truth.crs)
    reprojected = CRS.from_user_input(pred.crs) != crs
    pred = align_to_crs(pred, crs, pred_src)
    if crs.is_geographic:
        anchor = truth if len(truth) else pred
        if len(anchor):
            crs = anchor.estimate_utm_crs()
            truth, pred = truth.to_crs(crs), pred.to_crs(crs)
    return pred, truth, crs, reprojected


def prepare(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, min_area: float = 0.0, by: str | None = None,
            class_field: str = "class", score_field: str = "score", pred_source: str = "predictions",
            truth_source: str = "truth", level: int | None = None) -> Prepared:
    """Repair, align, read the class/score/group fields and apply the minimum area to both sides.

    ``level`` cuts both sides' classes to their first levels (:mod:`aifactory.evaluation.levels`), and the groups
    too when they are the class field (``by`` = ``class_field``).
    """
    level = check_level(level)
    for frame, src in ((pred, pred_source), (truth, truth_source)):
        if not isinstance(frame, gpd.GeoDataFrame):
            raise InputError(f"{src}: expected a GeoDataFrame, got {type(frame).__name__}")
    if min_area < 0:
        raise InputError(f"min_area must be ≥ 0, got {min_area}")
    pred, pred_repaired = _polygonal(pred, pred_source)
    truth, truth_repaired = _polygonal(truth, truth_source)
    extents = extent_text(pred.crs, pred.total_bounds), extent_text(truth.crs, truth.total_bounds)
    pred, truth, crs, reprojected = _align(pred, truth, pred_source, truth_source)
    if len(pred) and len(truth) and not bounds_overlap(pred.total_bounds, truth.total_bounds):
        apart = f"{pred_source} ({extents[0]}) and {truth_source} ({extents[1]}) do not overlap at all"
        if reprojected:  # most often a wrong CRS label: scoring zero would hide it
            raise InputError(f"{apart}; check their CRSs")
        # one CRS for both: a poor model's detections may all lie beside the truth, and that scores zero
        reporter().warning(f"{apart}: every detection is a false positive")
    scores = _scores(pred, score_field, pred_source)
    single = SINGLE_CLASS if class_field == CLASS_FIELD else None
    classes_p = _field(pred, truth, class_field, pred_source, truth_source, "class", single)
    classes_t = _field(truth, pred, class_field, truth_source, pred_source, "class", single)
    if by is not None:
        groups_p = _field(pred, truth, by, pred_source, truth_source, "group", None).to_numpy()
        groups_t = _field(truth, pred, by, truth_source, pred_source, "group", None).to_numpy()
        if by == class_field:
            groups_p, groups_t = cut_classes(groups_p, level), cut_classes(groups_t, level)
    else:
        groups_p = np.full(len(pred), "all", dtype=object)
        groups_t = np.full(len(truth), "all", dtype=object)
    full_p = classes_p.to_numpy()

    out_p = gpd.GeoDataFrame({"class": cut_classes(full_p, level), "score": scores, "group": groups_p},
                             geometry=pred.geometry.to_numpy(), crs=crs)
    out_t = gpd.GeoDataFrame({"class": cut_classes(classes_t, level), "group": groups_t},
                             geometry=truth.geometry.to_numpy(), crs=crs)
    small_p = shapely.area(out_p.geometry.array) < min_area
    small_t = shapely.area(out_t.geometry.array) < min_area
    inputs = {
        "pred": {"objects": len(out_p), "repaired": pred_repaired, "below_min_area": int(small_p.sum()),
                 "reprojected": reprojected},
        "truth": {"objects": len(out_t), "repaired": truth_repaired, "below_min_area": int(small_t.sum())},
        "crs": crs.to_string() if crs is not None else None,
    }
    return Prepared(out_p.loc[~small_p].reset_index(drop=True), out_t.loc[~small_t].reset_index(drop=True),
                    crs, inputs, full_p[~small_p])


def _scores(pred: gpd.GeoDataFrame, score_field: str, source: str) -> np.ndarray:
    """Scores in [0, 1]; without the default field every prediction scores 1.0, a named field must exist."""
    if score_field in pred.columns:
        return score_values(pred, source, score_field, allow_missing=False)
    if score_field != SCORE_FIELD:
        raise InputError(f"{source}: has no score field {score_field!r}; fields: {_field_names(pred)}")
    reporter().warning(f"{source}: no {score_field!r} field; every prediction gets score 1.0")
    return np.ones(len(pred))


@dataclass
class Confusion:
    """Counts of (truth label, predicted label); ``background`` collects unmatched objects."""

    labels: list[str]
    matrix: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "matrix": self.matrix.tolist()}


@dataclass
class EvaluationResult:
    """Metrics plus the evaluated objects (``status``: tp/fp/below_score for predictions, tp/fn for truth).

    ``overall``/``classes``/``groups`` values are dicts with ``tp, fp, fn, precision, recall, f1, ap50,
    ap75, ap, n_pred, n_truth``; ``groups[g]["classes"]`` breaks a group down by class.
    """

    iou: float
    min_area: float
    min_score: float
    by: str | None
    overall: dict[str, Any]
    classes: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    confusion: Confusion
    pred: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    inputs: dict[str, Any] = field(default_factory=dict)
    #: the hierarchy level both sides' classes were cut to (None: compared as given)
    level: int | None = None

    def curve(self, cls: str | None = None) -> PRCurve:
        """PR curve at the result's IoU over all detections (of class ``cls`` if given)."""
        pred, truth = self.pred, self.truth
        if cls is not None:
            pred, truth = pred[pred["class"] == cls], truth[truth["class"] == cls]
        return curve_from_flags(pred["score"].to_numpy(), pred["matched"].to_numpy() >= 0, len(truth))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {"iou": self.iou, "min_area": self.min_area, "min_score": self.min_score, "by": self.by,
                       "level": self.level},
            "overall": self.overall, "classes": self.classes, "groups": self.groups,
            "confusion": self.confusion.to_dict(), "inputs": self.inputs,
        }


def _codes(*series: pd.Series) -> tuple[np.ndarray, ...]:
    """Integer codes for values shared across several series (same value → same code)."""
    values = pd.concat(series, ignore_index=True)
    codes, _ = pd.factorize(values, sort=True)
    out, start = [], 0
    for s in series:
        out.append(codes[start:start + len(s)].astype("int64"))
        start += len(s)
    return tuple(out)


class _Matcher:
    """Pairs and ranks computed once; matching at any IoU threshold on demand (cached)."""

    def __init__(self, prep: Prepared) -> None:
        pred, truth = prep.pred, prep.truth
        self.n_pred, self.n_truth = len(pred), len(truth)
        gp, gt = _codes(pred["group"], truth["group"])
        cp, ct = _codes(pred["class"], truth["class"])
        # class-agnostic pairs within a group (for the confusion matrix), then same-class pairs
        self.any_class = overlapping_pairs(pred.geometry.to_numpy(), truth.geometry.to_numpy(), gp, gt)
        self.pairs = self.any_class.subset(cp[self.any_class.a] == ct[self.any_class.b])
        self.order = rank_order(pred["score"].to_numpy(), gp)
        self.rank = np.empty(self.n_pred, dtype="int64")
        self.rank[self.order] = np.arange(self.n_pred)
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def match(self, iou: float, pairs: Pairs | None = None) -> tuple[np.ndarray, np.ndarray]:
        if pairs is not None:
            return greedy_match(pairs, self.rank, self.n_pred, self.n_truth, iou)
        key = float(iou)
        if key not in self._cache:
            self._cache[key] = greedy_match(self.pairs, self.rank, self.n_pred, self.n_truth, iou)
        return self._cache[key]


def match_objects(prep: Prepared, iou: float) -> np.ndarray:
    """Index of the matched truth object per prediction (-1 if none) at IoU ≥ ``iou``."""
    return _Matcher(prep).match(iou)[0]


def _check_params(iou: float, min_score: float, level: int | None = None) -> None:
    if not 0 < iou <= 1:
        raise InputError(f"iou must be in (0, 1], got {iou}")
    if not np.isfinite(min_score):
        raise InputError(f"min_score must be a number, got {min_score}")
    check_level(level)


def warn_level_mismatch(prep: Prepared) -> None:
    """Warn when no class matches across the two sides but a hierarchy level would match some (exact classes may
    be intended, so this is no error)."""
    hint = level_hint(prep.pred["class"].unique(), prep.truth["class"].unique())
    if hint is not None:
        reporter().warning(hint)


def evaluate_objects(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou: float = 0.5, min_area: float = 0,
                     by: str | None = None, class_field: str = "class", score_field: str = "score",
                     min_score: float = 0, *, pred_source: str = "predictions",
                     truth_source: str = "truth", level: int | None = None) -> EvaluationResult:
    """Evaluate predicted objects against truth objects (see the module docstring for the rules).

    ``level`` (1..4) cuts both sides' classes to their first levels before matching.
    """
    _check_params(iou, min_score, level)
    rep = reporter()
    rep.progress("evaluate", 0.0, "preparing")
    prep = prepare(pred, truth, min_area=min_area, by=by, class_field=class_field, score_field=score_field,
                   pred_source=pred_source, truth_source=truth_source, level=level)
    warn_level_mismatch(prep)
    matcher = _Matcher(prep)
    rep.progress("evaluate", 0.2, f"{matcher.n_pred} predictions, {matcher.n_truth} truth objects")
    flags = {}
    for k, t in enumerate(sorted({*IOU_THRESHOLDS.tolist(), float(iou)})):
        flags[t] = matcher.match(t)[0] >= 0
        rep.progress("evaluate", 0.2 + 0.6 * (k + 1) / 11, f"matching at IoU {t:.2f}")
    matched, match_iou = matcher.match(iou)
    p, t = prep.pred, prep.truth
    scores = p["score"].to_numpy()
    counted = scores >= min_score
    p_class, t_class = p["class"].to_numpy(), t["class"].to_numpy()
    p_group, t_group = p["group"].to_numpy(), t["group"].to_numpy()

    def scope(pmask: np.ndarray, tmask: np.ndarray) -> dict[str, Any]:
        tp = int(np.count_nonzero(pmask & counted & (matched >= 0)))
        n_pred = int(np.count_nonzero(pmask & counted))
        n_truth = int(np.count_nonzero(tmask))
        out: dict[str, Any] = counts_dict(tp, n_pred - tp, n_truth - tp)
        per_class: dict[str, dict[float, float | None]] = {}
        for c in np.unique(np.concatenate([p_class[pmask], t_class[tmask]])):
            ranked = matcher.order[(pmask & (p_class == c))[matcher.order]]
            n_c = int(np.count_nonzero(tmask & (t_class == c)))
            per_class[c] = {th: average_precision(f[ranked], n_c) for th, f in flags.items()}
        out["ap50"] = mean_or_none([ap[IOU_THRESHOLDS[0]] for ap in per_class.values()])
        out["ap75"] = mean_or_none([ap[IOU_THRESHOLDS[5]] for ap in per_class.values()])
        out["ap"] = mean_or_none([mean_or_none([ap[th] for th in IOU_THRESHOLDS])
                                  for ap in per_class.values()])
        out["n_pred"], out["n_truth"] = n_pred, n_truth
        return out

    all_p, all_t = np.ones(len(p), bool), np.ones(len(t), bool)
    class_names = sorted(set(p_class) | set(t_class))
    classes = {c: scope(p_class == c, t_class == c) for c in class_names}
    groups: dict[str, dict[str, Any]] = {}
    if by is not None:
        for g in sorted(set(p_group) | set(t_group)):
            gp, gt = p_group == g, t_group == g
            groups[g] = scope(gp, gt)
            groups[g]["classes"] = {c: scope(gp & (p_class == c), gt & (t_class == c)) for c in class_names
                                    if (gp & (p_class == c)).any() or (gt & (t_class == c)).any()}
    overall = scope(all_p, all_t)
    rep.progress("evaluate", 0.9, "confusion matrix")

    # statuses at the chosen IoU and score
    pred_out = p.copy()
    pred_out["matched"] = matched
    pred_out["iou"] = match_iou
    pred_out["status"] = np.where(~counted, "below_score", np.where(matched >= 0, "tp", "fp"))
    truth_out = t.copy()
    hit = counted & (matched >= 0)
    truth_matched = np.full(len(t), -1, dtype="int64")
    truth_iou = np.zeros(len(t))
    truth_matched[matched[hit]] = np.flatnonzero(hit)
    truth_iou[matched[hit]] = match_iou[hit]
    truth_out["matched"] = truth_matched
    truth_out["iou"] = truth_iou
    truth_out["status"] = np.where(truth_matched >= 0, "tp", "fn")

    confusion = _confusion(matcher, iou, counted, p_class, t_class, class_names)
    rep.progress("evaluate", 1.0, f"F1 {overall['f1']:.3f}")
    return EvaluationResult(iou=float(iou), min_area=float(min_area), min_score=float(min_score), by=by,
                            overall=overall, classes=classes, groups=groups, confusion=confusion,
                            pred=pred_out, truth=truth_out, inputs=prep.inputs, level=check_level(level))


def _confusion(matcher: _Matcher, iou: float, counted: np.ndarray, p_class: np.ndarray, t_class: np.ndarray,
               class_names: list[str]) -> Confusion:
    """Class-agnostic matching at ``iou``: matched pairs tally (truth class, predicted class)."""
    labels = [*class_names, BACKGROUND]
    index = {name: i for i, name in enumerate(labels)}
    matched, _ = matcher.match(iou, matcher.any_class)
    matrix = np.zeros((len(labels), len(labels)), dtype="int64")
    hit = counted & (matched >= 0)
    rows = np.array([index[c] for c in t_class[matched[hit]]], dtype="int64")
    cols = np.array([index[c] for c in p_class[hit]], dtype="int64")
    np.add.at(matrix, (rows, cols), 1)
    missed = np.ones(len(t_class), dtype=bool)
    missed[matched[hit]] = False
    for c in t_class[missed]:
        matrix[index[c], index[BACKGROUND]] += 1
    for c in p_class[counted & (matched < 0)]:
        matrix[index[BACKGROUND], index[c]] += 1
    return Confusion(labels, matrix)


def pr_curve(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou: float = 0.5, *, min_area: float = 0,
             class_field: str = "class", score_field: str = "score", by: str | None = None,
             level: int | None = None) -> PRCurve:
    """Precision, recall and F1 at every distinct score (descending), all classes pooled.

    Returns a :class:`PRCurve` named tuple: ``scores, precision, recall, f1, tp, fp, n_truth``.
    """
    _check_params(iou, 0.0, level)
    prep = prepare(pred, truth, min_area=min_area, by=by, class_field=class_field, score_field=score_field,
                   level=level)
    matched = match_objects(prep, iou)
    return curve_from_flags(prep.pred["score"].to_numpy(), matched >= 0, len(prep.truth))
