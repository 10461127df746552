"""Which tiles to pick from their scores: by uncertainty, spread on the ground, diverse in feature space.

- uncertainty only: tiles in decreasing score order;
- ``min_distance``: a tile is skipped when its centre lies closer than the distance to a tile already
  picked in the same coordinate group (same CRS, or the same pixel-space image) — neighbouring tiles
  mostly teach the same thing and tire the annotator;
- ``kcenter`` (Sener & Savarese 2018, core-set): among the ``top_m`` most uncertain tiles, repeatedly pick
  the one farthest (in embedding space) from every tile already labelled or picked. Embeddings are
  L2-normalised first, so the distance is about the direction of the features, not their magnitude. The
  hybrid "top-M by uncertainty, then K by diversity" keeps the picks informative *and* different from each
  other, which plain uncertainty ranking does not (it picks near-duplicates of one hard scene).

Why own code: k-center greedy is ten lines of numpy with an O(M) distance update per pick; the libraries
that ship it (e.g. modAL) expect their own estimator wrappers.
"""

from __future__ import annotations

import numpy as np


def normalise(embeddings: np.ndarray) -> np.ndarray:
    vectors = np.asarray(embeddings, dtype="float64")
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class Spacing:
    """The minimum-distance rule between picked tile centres (a no-op for distance 0)."""

    def __init__(self, centres: np.ndarray | None, groups: np.ndarray | None, distance: float) -> None:
        self.distance = distance
        self.centres = centres
        self.groups = groups
        self.picked: list[int] = []

    def allows(self, index: int) -> bool:
        if self.distance <= 0 or not self.picked or self.centres is None:
            return True
        picked = np.asarray(self.picked)
        if self.groups is not None:
            picked = picked[self.groups[picked] == self.groups[index]]
        if not len(picked):
            return True
        gaps = np.linalg.norm(self.centres[picked] - self.centres[index], axis=1)
        return bool(gaps.min() >= self.distance)

    def take(self, index: int) -> None:
        self.picked.append(index)


def by_score(scores: np.ndarray, n: int, spacing: Spacing) -> list[int]:
    """Up to ``n`` indices in decreasing score order (ties: lower index first) that respect ``spacing``."""
    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable").tolist():
        if len(chosen) == n:
            break
        if spacing.allows(index):
            spacing.take(index)
            chosen.append(index)
    return chosen


def kcenter_greedy(embeddings: np.ndarray, candidates: np.ndarray, n: int, spacing: Spacing,
                   labelled: np.ndarray | None = None, first: int | None = None) -> list[int]:
    """Up to ``n`` of ``candidates`` (indices into ``embeddings``), each the farthest from all centres so far.

    Centres start as the ``labelled`` embeddings; without any, the first pick is ``first`` (the most
    uncertain candidate) or ``candidates[0]``.
    """
    vectors = normalise(embeddings)
    pool = np.asarray(candidates, dtype="int64")
    distance = np.full(len(pool), np.inf)
    if labelled is not None and len(labelled):
        for centre in normalise(labelled):
            distance = np.minimum(distance, np.linalg.norm(vectors[pool] - centre, axis=1))
    chosen: list[int] = []
    open_ = np.ones(len(pool), dtype=bool)
    while len(chosen) < n and open_.any():
        if np.isinf(distance[open_]).all() and not chosen:
            start = first if first is not None and first in pool else int(pool[0])
            pick = int(np.flatnonzero(pool == start)[0])
        else:
            pick = int(np.flatnonzero(open_)[np.argmax(distance[open_])])
        open_[pick] = False
        index = int(pool[pick])
        if not spacing.allows(index):
            continue
        spacing.take(index)
        chosen.append(index)
        distance = np.minimum(distance, np.linalg.norm(vectors[pool] - vectors[index], axis=1))
    return chosen


def choose(scores: np.ndarray, n: int, *, diversity: str = "none", embeddings: np.ndarray | None = None,
           labelled: np.ndarray | None = None, top_m: int | None = None, centres: np.ndarray | None = None,
           groups: np.ndarray | None = None, min_distance: float = 0.0) -> list[int]:
    """Indices of the tiles to label, in pick order (the ``rank``); may be fewer than ``n`` under spacing."""
    scores = np.asarray(scores, dtype="float64")
    spacing = Spacing(centres, groups, min_distance)
    if diversity == "none":
        return by_score(scores, n, spacing)
    if diversity != "kcenter":
        raise ValueError(f"unknown diversity {diversity!r}")
    if embeddings is None:
        raise ValueError("kcenter needs embeddings")
    order = np.argsort(-scores, kind="stable")
    candidates = order[: max(n, top_m if top_m is not None else 3 * n)]
    return kcenter_greedy(embeddings, candidates, n, spacing, labelled, first=int(order[0]) if len(order) else None)
