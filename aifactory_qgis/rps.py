"""The RPS slider's arithmetic, without Qt: subset strings, the sweep table, operating points.

Matching detections to truth on every slider move would freeze QGIS on dense scenes, so the worker
(`aifactory rps`) computes precision/recall/F1 once per threshold of a sweep and writes ``points.csv``;
here we only read that table and interpolate it at the slider position.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from .files import write_json_atomic

THRESHOLD_COLUMNS = ("score", "threshold", "score_threshold")
AREA_COLUMNS = ("min_area", "area")


def quote_field(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def number_text(value: float) -> str:
    """``value`` as SQL/JSON text that reads back as the same float: ``30`` and ``1.2345678e-09`` stay exact,
    where a fixed number of decimals would turn an area in degrees² into 0."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def subset_string(score: float, min_area: float = 0.0, score_field: str = "score", area_field: str = "area",
                  base: str = "") -> str:
    """``"score" >= 0.42 AND "area" >= 10``; the area term only when a minimum area is set; ``base`` (a filter
    the layer had before the slider, e.g. one class) is kept in front: ``(base) AND "score" >= 0.42``."""
    terms = [f"({base})"] if base.strip() else []
    terms.append(f"{quote_field(score_field)} >= {round(score, 4):g}")
    if min_area > 0:
        terms.append(f"{quote_field(area_field)} >= {number_text(min_area)}")
    return " AND ".join(terms)


_NUMBER = r"(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
_FIELD = r'"((?:[^"]|"")+)"'
_OURS = re.compile(rf"^(?:\((?P<base>.*)\) AND )?{_FIELD} >= {_NUMBER}(?: AND {_FIELD} >= {_NUMBER})?$", re.S)


def parse_subset(text: str, score_field: str = "score", area_field: str = "area") -> tuple[str, float, float] | None:
    """``(base, score, min_area)`` of a filter that :func:`subset_string` wrote (with these field names), else
    None: a layer still filtered by the slider (a saved project, a reloaded plugin) is read back, not
    wrapped once more."""
    match = _OURS.match(text.strip())
    if match is None:
        return None
    base, field, score, area_name, area = match.groups()
    if field.replace('""', '"') != score_field or (area_name is not None
                                                   and area_name.replace('""', '"') != area_field):
        return None
    return base or "", float(score), float(area) if area is not None else 0.0


def area_decimals(max_area: float) -> int:
    """Decimals for the area box: four significant digits below the largest area, whatever the units
    (1 for m² of buildings, 12 for degrees² of a geographic layer), between 1 and 15."""
    if not max_area > 0 or not math.isfinite(max_area):
        return 1
    return max(1, min(15, math.ceil(-math.log10(max_area)) + 4))


@dataclass(frozen=True)
class Point:
    threshold: float
    precision: float
    recall: float
    f1: float
    min_area: float = 0.0


class RpsTable:
    """Rows of ``points.csv``: one per (score threshold[, minimum area]) of the sweep."""

    def __init__(self, points: list[Point]) -> None:
        if not points:
            raise ValueError("the RPS table has no rows")
        self.points = sorted(points, key=lambda p: (p.min_area, p.threshold))

    @classmethod
    def read(cls, path: str | os.PathLike[str], operating_point: dict | None = None) -> RpsTable:
        """Read ``points.csv`` of ``aifactory rps``; a missing column raises ValueError naming the file.

        The slider filters detections by score and area only, so only the pooled rows (``zone`` and
        ``class`` = ``all``) of one NMS IoU and one value of each swept post-processing parameter
        (``OP.PARAM`` columns) are kept: those of ``operating_point`` (what ``aifactory rps`` chose, so
        that the figures shown at its score are its figures), else no NMS (or the first swept IoU when
        every row has one) and the first value of each parameter.
        """
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
        threshold = next((c for c in THRESHOLD_COLUMNS if c in columns), None)
        if threshold is None:
            raise ValueError(f"{path}: no threshold column (expected one of {', '.join(THRESHOLD_COLUMNS)})")
        for needed in ("precision", "recall"):
            if needed not in columns:
                raise ValueError(f"{path}: no {needed!r} column")
        rows = [r for r in rows if r.get("zone", "all") == "all" and r.get("class", "all") == "all"]
        op = operating_point or {}
        if "nms_iou" in columns and rows:
            if "nms_iou" in op:
                wanted = op["nms_iou"]
            else:
                wanted = None if any(r["nms_iou"] in ("", None) for r in rows) else rows[0]["nms_iou"]
            rows = [r for r in rows if _same(r["nms_iou"], wanted)]
        chosen = op.get("postprocess") or {}
        for column in (c for c in columns if "." in c):
            wanted = chosen[column] if column in chosen else (rows[0][column] if rows else None)
            rows = [r for r in rows if _same(r[column], wanted)]
        area = next((c for c in AREA_COLUMNS if c in columns), None)
        points = []
        for row in rows:
            p, r = _number(row["precision"]), _number(row["recall"])
            f1 = _number(row["f1"]) if row.get("f1") not in (None, "") else _f1(p, r)
            points.append(Point(float(row[threshold]), p, r, f1, float(row[area] or 0) if area else 0.0))
        if not points and operating_point:
            raise ValueError(f"{path}: no row with the operating point's NMS IoU and post-processing")
        return cls(points)

    def curve(self, min_area: float = 0.0) -> list[Point]:
        """The PR curve (sorted by threshold) for the largest swept minimum area ≤ ``min_area``."""
        areas = sorted({p.min_area for p in self.points})
        chosen = areas[max(0, bisect_right(areas, min_area) - 1)]
        return [p for p in self.points if p.min_area == chosen]

    def at(self, score: float, min_area: float = 0.0) -> Point:
        """Precision/recall/F1 at ``score``, linearly interpolated between the two swept thresholds."""
        curve = self.curve(min_area)
        thresholds = [p.threshold for p in curve]
        i = bisect_right(thresholds, score)
        if i == 0:
            return curve[0]
        if i == len(curve):
            return curve[-1]
        lo, hi = curve[i - 1], curve[i]
        t = (score - lo.threshold) / (hi.threshold - lo.threshold)
        p = lo.precision + t * (hi.precision - lo.precision)
        r = lo.recall + t * (hi.recall - lo.recall)
        return Point(score, p, r, _f1(p, r), lo.min_area)



def _same(cell: str | None, wanted: object) -> bool:
    """A ``points.csv`` cell equals a value of the operating point (empty cell = None)."""
    if cell in ("", None) or wanted in ("", None):
        return cell in ("", None) and wanted in ("", None)
    try:
        return math.isclose(float(cell), float(wanted), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(cell) == str(wanted)


def _number(text: str | None) -> float:
    """A metric cell; empty (undefined, e.g. precision with nothing kept) reads as 0."""
    return float(text) if text not in (None, "") else 0.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 0.0 if total <= 0 or math.isnan(total) else 2 * precision * recall / total


def save_operating_point(path: str | os.PathLike[str], score: float, min_area: float,
                         point: Point | None = None, base: dict | None = None) -> dict:
    """Write ``operating_point.json`` (version 1, the schema of ``aifactory rps``) for the slider position.

    ``base`` is the operating point the table came with: its matching IoU, NMS and post-processing
    settings are kept; counts and per-class/per-zone figures are dropped because they were measured at
    another threshold. ``criterion`` becomes ``manual``.
    """
    stale = ("tp", "fp", "fn", "per_class", "per_geofence")
    data = {"version": 1, "iou": None, "nms_iou": None, "postprocess": {}, "target_precision": None,
            "target_met": True, "by_class": False,
            **{k: v for k, v in (base or {}).items() if k not in stale}}
    data.update(criterion="manual", score=round(score, 4), min_area=float(f"{min_area:.10g}"),
                per_class={})
    if point is not None:
        data.update(precision=point.precision, recall=point.recall, f1=point.f1)
    else:
        for key in ("precision", "recall", "f1"):
            data.pop(key, None)
    write_json_atomic(path, data)
    return data


def read_operating_point(path: str | os.PathLike[str]) -> dict:
    """The whole ``operating_point.json``; ValueError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        float(data["score"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: not an operating point ({exc})") from None
    return data


def load_operating_point(path: str | os.PathLike[str]) -> tuple[float, float]:
    """``(score, min_area)`` of an ``operating_point.json``."""
    data = read_operating_point(path)
    return float(data["score"]), float(data.get("min_area") or 0.0)
