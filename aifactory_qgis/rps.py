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
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from .files import write_json_atomic

THRESHOLD_COLUMNS = ("score", "threshold", "score_threshold")
AREA_COLUMNS = ("min_area", "area")


def quote_field(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def subset_string(score: float, min_area: float = 0.0, score_field: str = "score", area_field: str = "area") -> str:
    """``"score" >= 0.42 AND "area" >= 10``; the area term only when a minimum area is set."""
    terms = [f"{quote_field(score_field)} >= {round(score, 4):g}"]
    if min_area > 0:
        terms.append(f"{quote_field(area_field)} >= {round(min_area, 4):g}")
    return " AND ".join(terms)


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
    def read(cls, path: str | os.PathLike[str]) -> RpsTable:
        """Read ``points.csv``; a missing column raises ValueError naming the file and the column."""
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            threshold = next((c for c in THRESHOLD_COLUMNS if c in columns), None)
            if threshold is None:
                raise ValueError(f"{path}: no threshold column (expected one of {', '.join(THRESHOLD_COLUMNS)})")
            for needed in ("precision", "recall"):
                if needed not in columns:
                    raise ValueError(f"{path}: no {needed!r} column")
            area = next((c for c in AREA_COLUMNS if c in columns), None)
            points = []
            for row in reader:
                p, r = float(row["precision"]), float(row["recall"])
                f1 = float(row["f1"]) if row.get("f1") not in (None, "") else _f1(p, r)
                points.append(Point(float(row[threshold]), p, r, f1, float(row[area]) if area else 0.0))
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

    def best_f1(self, min_area: float = 0.0) -> Point:
        return max(self.curve(min_area), key=lambda p: p.f1)


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 0.0 if total <= 0 or math.isnan(total) else 2 * precision * recall / total


def save_operating_point(path: str | os.PathLike[str], score: float, min_area: float,
                         point: Point | None = None) -> None:
    """Write ``operating_point.json`` atomically (temp file in the same folder, then rename)."""
    data: dict[str, float] = {"score": round(score, 4), "min_area": round(min_area, 4)}
    if point is not None:
        data.update(precision=point.precision, recall=point.recall, f1=point.f1)
    write_json_atomic(path, data)


def load_operating_point(path: str | os.PathLike[str]) -> tuple[float, float]:
    """``(score, min_area)`` from ``operating_point.json``; ValueError with the file name if unusable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        score = float(data.get("score", data.get("threshold")))
        return score, float(data.get("min_area", 0.0) or 0.0)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an operating point ({exc})") from None

