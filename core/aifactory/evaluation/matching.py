"""One-to-one object matching and polygon NMS, vectorized around a shapely 2 STRtree.

Candidate pairs come from one ``STRtree.query(..., predicate="intersects")`` and their IoU from
vectorized ``shapely.intersection``/``shapely.area``: the work scales with the number of overlapping
pairs, never with n². What remains sequential is the greedy decision itself (a detection can only take
a truth object that a better-scored detection did not take), a loop over candidate pairs that are not
isolated; isolated one-to-one pairs, the common case, are decided in bulk. No library offers greedy
score-ordered matching over arbitrary polygons (torchvision/faster-coco-eval work on boxes or masks),
hence this module.

Tie rules (deterministic): detections are processed by descending score, equal scores in ``order``
(the caller's rank, see :func:`rank_order`); a detection takes the free truth object with the highest
IoU ≥ threshold, equal IoUs going to the **highest** truth index, as in COCO (its loop keeps the last truth
of equal IoU): with the lowest, AP differed from pycocotools/faster-coco-eval wherever a detection fits two
truth objects equally well (pixel-aligned boxes), yet :mod:`aifactory.evaluation.metrics` promises COCO's AP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely


@dataclass(frozen=True)
class Pairs:
    """Overlapping (a, b) index pairs with their IoU (> 0)."""

    a: np.ndarray
    b: np.ndarray
    iou: np.ndarray

    def subset(self, keep: np.ndarray) -> Pairs:
        return Pairs(self.a[keep], self.b[keep], self.iou[keep])


def overlapping_pairs(a: np.ndarray, b: np.ndarray, a_key: np.ndarray | None = None,
                      b_key: np.ndarray | None = None) -> Pairs:
    """Pairs of geometries of ``a`` and ``b`` with IoU > 0 (and equal keys when keys are given).

    Touching geometries (shared edge, no shared area) have IoU 0 and are not pairs.
    """
    if not len(a) or not len(b):
        return _with_iou(a, b, np.array([], dtype="int64"), np.array([], dtype="int64"))
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    if a_key is not None and b_key is not None:
        same = a_key[ia] == b_key[ib]
        ia, ib = ia[same], ib[same]
    return _with_iou(a, b, ia, ib)


def self_pairs(geoms: np.ndarray, key: np.ndarray | None = None) -> Pairs:
    """Unordered pairs (i < j) of overlapping geometries of one set (same key if given), with their IoU."""
    if not len(geoms):
        return _with_iou(geoms, geoms, np.array([], dtype="int64"), np.array([], dtype="int64"))
    ia, ib = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = ia < ib  # before the costly intersections: each pair once
    if key is not None:
        keep &= key[ia] == key[ib]
    return _with_iou(geoms, geoms, ia[keep], ib[keep])


def _with_iou(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> Pairs:
    """IoU of the candidate pairs (vectorized), keeping those with IoU > 0."""
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    union = shapely.area(a[ia]) + shapely.area(b[ib]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    keep = iou > 0
    return Pairs(ia[keep].astype("int64"), ib[keep].astype("int64"), iou[keep])


def rank_order(scores: np.ndarray, *tie_keys: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties by ``tie_keys`` (first is most significant), then index."""
    keys = [np.arange(len(scores)), *reversed(tie_keys), -np.asarray(scores, dtype="float64")]
    return np.lexsort(keys)


def greedy_match(pairs: Pairs, rank: np.ndarray, n_pred: int, n_truth: int,
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching at IoU ≥ ``iou_threshold``.

    ``pairs.a`` index predictions, ``pairs.b`` truth; ``rank[i]`` is the processing position of
    prediction ``i`` (0 first). Returns ``matched_truth`` (per prediction, -1 if none) and ``match_iou``.
    """
    matched = np.full(n_pred, -1, dtype="int64")
    match_iou = np.zeros(n_pred, dtype="float64")
    # COCO compares with min(t, 1 - 1e-10) so that t = 1.0 still accepts identical shapes
    ok = pairs.iou >= min(iou_threshold, 1 - 1e-10)
    p, t, iou = pairs.a[ok], pairs.b[ok], pairs.iou[ok]
    if not len(p):
        return matched, match_iou
    # isolated pairs (the prediction and the truth have no other candidate) are matched in bulk
    p_count = np.bincount(p, minlength=n_pred)
    t_count = np.bincount(t, minlength=n_truth)
    alone = (p_count[p] == 1) & (t_count[t] == 1)
    matched[p[alone]] = t[alone]
    match_iou[p[alone]] = iou[alone]
    p, t, iou = p[~alone], t[~alone], iou[~alone]
    order = np.lexsort((-t, -iou, rank[p]))  # by rank, then best IoU, then the highest truth index (COCO)
    taken = np.zeros(n_truth, dtype=bool)
    done = np.zeros(n_pred, dtype=bool)
    for k in order.tolist():  # sequential by nature: each decision depends on the earlier ones
        pi, ti = p[k], t[k]
        if done[pi] or taken[ti]:
            continue
        done[pi] = taken[ti] = True
        matched[pi] = ti
        match_iou[pi] = iou[k]
    return matched, match_iou


def nms_keep(pairs: Pairs, rank: np.ndarray, n: int, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: a detection is dropped if a kept, better-ranked one overlaps it
    with IoU > ``iou_threshold``. ``pairs`` come from :func:`self_pairs`. Returns the keep mask.

    Like score thresholds, NMS is prefix-consistent: NMS then threshold equals threshold then NMS.
    """
    keep = np.ones(n, dtype=bool)
    over = pairs.iou > iou_threshold
    if not over.any():
        return keep
    a, b = pairs.a[over], pairs.b[over]
    # orient each pair as (better, worse)
    swap = rank[a] > rank[b]
    better, worse = np.where(swap, b, a), np.where(swap, a, b)
    order = np.argsort(rank[better], kind="stable")
    for k in order.tolist():  # a suppressed detection suppresses nothing: sequential by nature
        if keep[better[k]]:
            keep[worse[k]] = False
    return keep
