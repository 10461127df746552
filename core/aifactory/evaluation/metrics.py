"""Counting metrics and COCO-style average precision, defined once for objects, pixels and RPS sweeps.

Conventions for empty sets (so that no metric is ever NaN):

- precision = TP / (TP + FP), and **1.0 when there are no predictions** (nothing was claimed, so nothing
  claimed is wrong);
- recall = TP / (TP + FN), and **1.0 when there is no truth** (nothing was there to be found);
- F1 = 2PR / (P + R), and 0.0 when P + R = 0. Hence no truth and no prediction gives P = R = F1 = 1, a
  model that predicts nothing on a non-empty truth gives P = 1, R = 0, F1 = 0;
- AP of a class without truth is ``None`` (JSON ``null``) and is left out of the mean, as COCO does
  (its -1); a class with truth but no detection has AP 0.

AP follows COCO exactly (101 recall points, precision envelope, detections ranked by score with a
stable sort) but without a cap on detections per image: dense scenes of thousands of objects would
otherwise be truncated at 100. ``tests/core/test_eval_map.py`` proves equality with faster-coco-eval.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: COCO's IoU thresholds 0.50:0.05:0.95 (np.linspace, the same floats COCO compares with).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: COCO's 101 recall points.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def precision(tp: float, fp: float) -> float:
    """TP / (TP + FP); 1.0 when nothing was predicted (see module docstring)."""
    return float(tp / (tp + fp)) if tp + fp > 0 else 1.0


def recall(tp: float, fn: float) -> float:
    """TP / (TP + FN); 1.0 when there is nothing to find."""
    return float(tp / (tp + fn)) if tp + fn > 0 else 1.0


def f1(p: float, r: float) -> float:
    """Harmonic mean of precision and recall; 0.0 when both are 0."""
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def counts_dict(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    """``{"tp", "fp", "fn", "precision", "recall", "f1"}`` with the conventions above."""
    p, r = precision(tp, fp), recall(tp, fn)
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": p, "recall": r, "f1": f1(p, r)}


def vectorized_prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of precision, recall, F1 with the same empty-set conventions as the scalar versions."""
    tp, fp, fn = (np.asarray(a, dtype="float64") for a in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 1.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return p, r, f


class PRCurve(NamedTuple):
    """Precision, recall and F1 at each distinct score threshold (descending); unpacks as arrays."""

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_truth: int


def curve_from_flags(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> PRCurve:
    """The PR curve of detections given their scores and TP flags (from a greedy match by score).

    Greedy matching by score makes the matching of the detections above any threshold a prefix of the
    full matching, so one match gives every threshold: cumulative sums at each distinct score.
    """
    order = np.argsort(-np.asarray(scores, dtype="float64"), kind="stable")
    s = np.asarray(scores, dtype="float64")[order]
    flags = np.asarray(is_tp, dtype=bool)[order]
    tp = np.cumsum(flags)
    fp = np.arange(1, len(flags) + 1) - tp
    # keep the last index of each run of equal scores: a threshold takes all ties or none
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.array([], dtype=int)
    tp, fp, s = tp[last], fp[last], s[last]
    p, r, f = vectorized_prf(tp, fp, n_truth - tp)
    return PRCurve(s, p, r, f, tp.astype("int64"), fp.astype("int64"), int(n_truth))


def counts_at(curve: PRCurve, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of the detections with score ≥ ``threshold``."""
    # scores are descending: the number of curve points with score >= threshold
    k = int(np.searchsorted(-curve.scores, -threshold, side="right"))
    if k == 0:
        return 0, 0, curve.n_truth
    tp, fp = int(curve.tp[k - 1]), int(curve.fp[k - 1])
    return tp, fp, curve.n_truth - tp


def average_precision(ranked_tp: np.ndarray, n_truth: int) -> float | None:
    """COCO AP (101-point interpolated) of detections already ranked by score (stable, descending)."""
    if n_truth == 0:
        return None
    flags = np.asarray(ranked_tp, dtype=bool)
    if not len(flags):
        return 0.0
    tp = np.cumsum(flags, dtype="float64")
    fp = np.cumsum(~flags, dtype="float64")
    rc = tp / n_truth
    pr = tp / (tp + fp + np.spacing(1))  # COCO's epsilon, kept for bit-level parity
    pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
    inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
    q = np.zeros(len(RECALL_THRESHOLDS))
    valid = inds < len(pr)
    q[valid] = pr[inds[valid]]
    return float(q.mean())


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the defined values; ``None`` when none is defined."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
