"""Pixel metrics (confusion matrix, IoU, precision, recall, F1 per class) streamed window by window.

The prediction is either a scores raster (DESIGN.md: COG, one uint8 band per class, score × 255,
nodata where not predicted) or a class raster (one band of class indices). Truth is a vector layer,
rasterized one window at a time from an STRtree query (pixel centres; where objects overlap the smaller one wins,
as in the training masks datasets render), or a class raster on the same grid. Only one
window of each is ever in memory; the confusion counts are the only state.

Index space: 0 is the background, classes are 1..n. Scores rasters: a pixel takes the class of its
highest band. When no band is called ``background`` (band descriptions name the classes) the bands are
the foreground classes 1..n and the background is implied, as prediction writes them: a pixel is
foreground when its best score beats 255 − Σ scores (the arg-max of a softmax, ≥ 128 for a single
sigmoid class) — the rule prediction's vectorizer applies, so pixel metrics judge the very classes that
become polygons — or, with an explicit ``threshold``, when its best score is ≥ threshold × 255. Class rasters carry
indices directly; their names come from ``classes`` (names of 1..n). Pixels that are nodata in the
prediction, or ignored in a truth raster (its nodata, or 255), are left out of every count.

A prediction that can be neither is refused before any count (imagery given by mistake, most often): a
scores raster has uint8 bands, one per class (plus an optional background band); a class raster has one
integer band whose indices do not exceed the named classes (or 254 without names). A truth raster must be
on the prediction's grid: same size, transform and CRS. Both are proved readable first (a truncated file).
``kind="auto"`` takes a raster of several bands, or one that predict wrote (tagged with its classes, a one-class
model's scores have one band), for scores.

A ``contact`` band (the scores of contact models and of models trained on ``boundary`` labels: where two objects
touch) is no class of its own: it counts toward the foreground like any band, and its pixels take their best object
class (they are object pixels, the truth has no contact class).

With ``level`` (:mod:`aifactory.evaluation.levels`) the prediction's class names and the truth's are cut to that
level of the class hierarchy: a pixel keeps the class of its best band, cut, and classes that become one after the
cut share their counts (the confusion matrix summed over them, as if both sides had been relabelled).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from aifactory.datasets.render import CONTACT_CLASS
from aifactory.errors import InputError
from aifactory.evaluation.levels import check_level, cut_classes, level_hint
from aifactory.evaluation.metrics import f1, precision, recall
from aifactory.evaluation.objects import CLASS_FIELD, bounds_overlap, extent_text
from aifactory.io.raster import (
    SCORES_CLASSES_TAG,
    block_aligned,
    check_readable,
    crs_string,
    open_raster,
    read_valid_mask,
    read_window,
    window_transform,
)
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.progress import reporter

IGNORE_VALUE = 255
#: The largest class index of a raster whose classes are not named (255 is the ignored value).
MAX_CLASS_INDEX = 254
#: Truth given with one of these suffixes is a class raster, anything else is read as vectors.
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".png", ".jpg", ".jpeg"}
BACKGROUND = "background"


@dataclass
class PixelResult:
    """Confusion matrix (rows truth, columns prediction, over ``labels``) and metrics derived from it."""

    labels: list[str]
    matrix: np.ndarray

    def per_class(self) -> dict[str, dict[str, float | int]]:
        m = self.matrix
        out = {}
        for i, name in enumerate(self.labels):
            tp, fp, fn = int(m[i, i]), int(m[:, i].sum() - m[i, i]), int(m[i, :].sum() - m[i, i])
            p, r = precision(tp, fp), recall(tp, fn)
            union = tp + fp + fn
            out[name] = {"iou": tp / union if union else 1.0, "precision": p, "recall": r, "f1": f1(p, r),
                         "support": int(m[i, :].sum()), "predicted": int(m[:, i].sum())}
        return out

    def overall(self) -> dict[str, float | int]:
        classes = self.per_class()
        present = [c for c, v in classes.items() if v["support"] or v["predicted"]]
        total = int(self.matrix.sum())
        foreground = [c for c in present if c != BACKGROUND]
        return {
            "pixels": total,
            "accuracy": float(np.trace(self.matrix) / total) if total else 1.0,
            "miou": float(np.mean([classes[c]["iou"] for c in present])) if present else 1.0,
            "miou_foreground": float(np.mean([classes[c]["iou"] for c in foreground])) if foreground else 1.0,
            "mean_f1": float(np.mean([classes[c]["f1"] for c in present])) if present else 1.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "pixel", "overall": self.overall(), "classes": self.per_class(),
                "confusion": {"labels": self.labels, "matrix": self.matrix.tolist()}}


def _names(descriptions: tuple[str | None, ...], count: int, classes: list[str] | None) -> list[str]:
    """Labels of indices 0..n: background first, then the classes of the prediction."""
    if classes:
        names = list(classes)
    elif any(descriptions):
        names = [d or f"class_{i}" for i, d in enumerate(descriptions, start=1)]
    else:
        names = [f"class_{i}" for i in range(1, count + 1)]
    if names and names[0].lower() == BACKGROUND:
        names = names[1:]
    return [BACKGROUND, *names]


def _truth_codes(truth: gpd.GeoDataFrame, class_field: str, labels: list[str], source: str,
                 level: int | None = None) -> np.ndarray:
    """Index of each truth object's class (cut to ``level``); classes the prediction does not know get new labels."""
    if class_field not in truth.columns:
        if len(labels) <= 2 and class_field == CLASS_FIELD:
            labels[1:] = labels[1:] or ["object"]
            return np.ones(len(truth), dtype="int64")
        raise InputError(f"{source}: no class field {class_field!r} to tell the {len(labels) - 1} classes apart")
    names = cut_classes(truth[class_field].astype(str), level)
    if (hint := level_hint(labels[1:], names)) is not None:
        reporter().warning(hint)
    for name in sorted(set(names) - set(labels)):
        reporter().warning(f"{source}: class {name!r} is not among the predicted classes; its pixels count as "
                           "missed")
        labels.append(name)
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index[n] for n in names], dtype="int64")


def _vector_truth(frame: gpd.GeoDataFrame, ds: Any, labels: list[str], class_field: str, named: bool,
                  source: str, level: int | None = None) -> tuple[np.ndarray, np.ndarray, shapely.STRtree]:
    """Truth objects in the raster's CRS with their class indices, indexed for the windows that burn them."""
    frame = align_to_crs(frame, ds.crs, source)
    left, bottom, right, top = ds.bounds
    extent = np.array([min(left, right), min(bottom, top), max(left, right), max(bottom, top)])
    if len(frame) and not bounds_overlap(frame.total_bounds, extent):
        raise InputError(f"{source} ({extent_text(frame.crs, frame.total_bounds)}) does not overlap the prediction "
                         f"{ds.name} ({extent_text(ds.crs, extent)}) at all; check their CRSs")
    # a class raster without names: truth names cannot be matched to its indices
    if not named and class_field in frame.columns and frame[class_field].nunique() > 1:
        raise InputError(f"{ds.name}: class raster without class names; pass classes=[...] (--classes) "
                         "to map its indices to the truth's classes")
    codes = _truth_codes(frame, class_field, labels, source, level)
    # burn order where truth objects overlap: large first (small ones stay visible), as datasets render the
    # training masks, the same in every window
    geoms = frame.geometry.to_numpy()
    order = np.argsort(-shapely.area(geoms), kind="stable")
    return geoms[order], codes[order], shapely.STRtree(geoms[order])


def _predicted(data: np.ndarray, is_scores: bool, has_background: bool, threshold: float | None,
               contact: int | None = None) -> np.ndarray:
    """Class index of each pixel of a window (see the module docstring for the scores rule); ``contact``: the band
    of a ``contact`` class, which counts for the foreground decision but gives its pixels their best object class."""
    if not is_scores:
        return data[0].astype("int64")
    objects = data if contact is None else np.delete(data, contact, axis=0)
    if has_background:
        if contact is None:
            return np.argmax(data, axis=0).astype("int64")
        return np.where(np.argmax(data, axis=0) != 0, np.argmax(objects[1:], axis=0) + 1, 0).astype("int64")
    predicted = np.argmax(objects, axis=0).astype("int64")
    best = data.max(axis=0).astype("int64")
    if threshold is not None:
        return np.where(best >= threshold * 255, predicted + 1, 0)
    return np.where(best > 255 - data.sum(axis=0, dtype="int64"), predicted + 1, 0)


def evaluate_pixels(pred: str | Path, truth: str | Path | gpd.GeoDataFrame, *, class_field: str = "class",
                    classes: list[str] | None = None, threshold: float | None = None,
                    kind: Literal["auto", "scores", "classes"] = "auto", tile: int = 1024,
                    truth_source: str | None = None, level: int | None = None) -> PixelResult:
    """Confusion matrix of a prediction raster against vector or raster truth, streamed by windows.

    ``truth_source`` names the truth in messages (default: its path, or ``truth`` for a frame); ``level`` cuts both
    sides' class names to that hierarchy level.
    """
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    level = check_level(level)
    with open_raster(pred) as ds:
        check_readable(ds)
        is_scores = kind == "scores" or (kind == "auto" and (ds.count > 1 or SCORES_CLASSES_TAG in ds.tags()))
        descriptions = tuple(ds.descriptions) if is_scores else ()
        has_background = bool(descriptions) and (descriptions[0] or "").lower() == BACKGROUND
        contact = descriptions.index(CONTACT_CLASS) if ds.count > 1 and CONTACT_CLASS in descriptions else None
        named = descriptions if contact is None else descriptions[:contact] + descriptions[contact + 1:]
        labels = _names(named, ds.count - (contact is not None) if is_scores else 0, classes)
        _check_prediction(ds, is_scores, len(labels) - 1 + has_background + (contact is not None), pred)
        top_index = len(labels) - 1 if classes and not is_scores else MAX_CLASS_INDEX
        labels = list(cut_classes(labels, level))  # indices keep their place; same names are summed at the end
        source = truth_source or ("truth" if isinstance(truth, gpd.GeoDataFrame) else str(truth))
        truth_ds_path: Path | None = None
        truth_frame = None
        if isinstance(truth, gpd.GeoDataFrame) or Path(truth).suffix.lower() not in RASTER_SUFFIXES:
            frame = truth if isinstance(truth, gpd.GeoDataFrame) else read_vector(truth)
            truth_frame = _vector_truth(frame, ds, labels, class_field, is_scores or classes is not None, source,
                                        level)
        else:
            truth_ds_path = Path(truth)
        counts: dict[int, int] = {}
        # a partition (no overlap: each pixel is counted once), block-aligned for cheap reads
        step = block_aligned(tile, ds.block_shapes[0][0])
        windows = [Window(col, row, min(step, ds.width - col), min(step, ds.height - row))
                   for row in range(0, ds.height, step) for col in range(0, ds.width, step)]
        with open_raster(truth_ds_path) if truth_ds_path else contextlib.nullcontext() as tds:
            if tds is not None:
                check_readable(tds)
                _check_same_grid(ds, tds, source)
            for window in reporter().track(windows, task="evaluate", message="pixels"):
                valid = read_valid_mask(ds, window)
                predicted = _predicted(read_window(ds, window), is_scores, has_background, threshold, contact)
                if not is_scores:
                    _check_indices(predicted[valid], top_index, pred, classes)
                if tds is not None:
                    truth_px = read_window(tds, window)[0].astype("int64")
                    valid &= read_valid_mask(tds, window) & (truth_px != IGNORE_VALUE)
                    _check_indices(truth_px[valid], MAX_CLASS_INDEX, source, None)
                else:
                    assert truth_frame is not None
                    truth_px = _burn(truth_frame, ds.transform, window)
                pair = truth_px[valid] * (1 << 20) + predicted[valid]
                values, n = np.unique(pair, return_counts=True)
                for v, c in zip(values.tolist(), n.tolist(), strict=True):
                    counts[v] = counts.get(v, 0) + c
    return _result(counts, labels)


def _check_prediction(ds: Any, is_scores: bool, bands: int, path: str | Path) -> None:
    """Refuse a raster that is neither a scores raster (``bands`` uint8 bands) nor a class raster (one integer
    band): pixel metrics of imagery would be numbers about nothing."""
    dtypes = sorted(set(ds.dtypes))
    what = f"{ds.count} band{'s' if ds.count > 1 else ''} of {', '.join(dtypes)}"
    if is_scores and (dtypes != ["uint8"] or ds.count != bands):
        raise InputError(f"{path}: {what}: not a scores raster ({bands} uint8 bands, score × 255, one per class) nor "
                         "a class raster (one band of class indices)")
    if not is_scores and (ds.count != 1 or not np.issubdtype(np.dtype(dtypes[0]), np.integer)):
        raise InputError(f"{path}: {what}: a class raster has one band of integer class indices")


def _check_indices(values: np.ndarray, top: int, path: str | Path, classes: list[str] | None) -> None:
    """Refuse class indices beyond ``top`` (the named classes, else :data:`MAX_CLASS_INDEX`)."""
    if values.size and (found := int(values.max())) > top:
        names = f"the {top} classes of --classes" if classes else f"{top}, the largest class index"
        raise InputError(f"{path}: holds the value {found}, beyond {names}: not a class raster")


def _check_same_grid(ds: Any, tds: Any, truth: str) -> None:
    """A truth raster counts pixel by pixel against the prediction: same size, transform and CRS."""
    if (tds.width, tds.height) != (ds.width, ds.height):
        raise InputError(f"{truth}: truth raster is {tds.width}x{tds.height}, prediction is "
                         f"{ds.width}x{ds.height}; they must share the grid")
    if tds.crs != ds.crs:
        raise InputError(f"{truth}: truth raster is in {crs_string(tds.crs) or 'no CRS'}, prediction in "
                         f"{crs_string(ds.crs) or 'no CRS'}; they must share the grid")
    # a thousandth of a pixel, not Affine.almost_equals' fixed 1e-5 CRS units: wider than a pixel in degrees
    tolerance = 1e-3 * math.sqrt(abs(ds.transform.determinant))
    if max(abs(a - b) for a, b in zip(tuple(tds.transform)[:6], tuple(ds.transform)[:6], strict=True)) > tolerance:
        raise InputError(f"{truth}: truth raster has the transform {tuple(tds.transform)[:6]}, prediction "
                         f"{tuple(ds.transform)[:6]}; they must share the grid")


def _burn(truth: tuple[np.ndarray, np.ndarray, shapely.STRtree], transform: Any, window: Window) -> np.ndarray:
    """Truth class indices of one window (0 where no object), from the objects that touch it."""
    geoms, codes, tree = truth
    shape = (int(window.height), int(window.width))
    wt = window_transform(transform, window)
    # the four corners: on a rotated grid two opposite ones do not bound the window
    xs, ys = zip(*(wt * corner for corner in ((0, 0), (shape[1], 0), (0, shape[0]), (shape[1], shape[0]))),
                 strict=True)
    # sorted: STRtree returns its own order, and rasterize lets the last object win a pixel
    hits = np.sort(tree.query(shapely.box(min(xs), min(ys), max(xs), max(ys))))
    if not len(hits):
        return np.zeros(shape, dtype="int64")
    burned = rasterize(zip(geoms[hits], codes[hits].tolist(), strict=True), out_shape=shape, transform=wt,
                       fill=0, dtype="int32")
    return burned.astype("int64")


def _result(counts: dict[int, int], labels: list[str]) -> PixelResult:
    """Confusion matrix over the labels, growing for indices seen but not named (class rasters)."""
    pairs = [(k >> 20, k & ((1 << 20) - 1), c) for k, c in counts.items()]
    top = max([len(labels) - 1, *(max(t, p) for t, p, _ in pairs)]) if pairs else len(labels) - 1
    labels = labels + [f"class_{i}" for i in range(len(labels), top + 1)]
    matrix = np.zeros((len(labels), len(labels)), dtype="int64")
    for t, p, c in pairs:
        matrix[t, p] += c
    # labels the level cut made equal: one class, their rows and columns summed (a relabelling of both sides)
    merged, index = np.unique(np.array(labels, dtype=object), return_index=True)
    if len(merged) < len(labels):
        names = [labels[i] for i in sorted(index)]
        into = np.array([names.index(name) for name in labels], dtype="int64")
        folded = np.zeros((len(names), len(names)), dtype="int64")
        np.add.at(folded, (into[:, None], into[None, :]), matrix)
        labels, matrix = names, folded
    return PixelResult(labels, matrix)
