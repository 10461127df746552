"""Boxes across tiles: per-tile filtering, the box-score coverage raster, and a seam-free streamed merge.

Box detectors (and the heatmap detector once its peaks are decoded) see each tile on its own, so an
object in the overlap of two tiles comes out twice, and an object cut by a tile's edge comes out
truncated. Two rules make the result independent of where tile lines fall:

1. ownership (:func:`owned`): a tile keeps only the boxes whose centre lies in the part of the raster it
   owns (split at the middle of each overlap, as :meth:`~aifactory.prediction.tiling.TileGrid.tile_ids`),
   widened by ``overlap / 4`` so that a centre that drifts a pixel or two between the two tiles' views is
   kept by both rather than by neither;
2. merge (:class:`BoxMerger`): boxes of *different* tiles, same class, with IoU ≥ ``iou`` are one
   object, represented by the box whose centre lies deepest inside its own tile (the view with the
   most context, the rule the ``crop`` blending window applies to pixels). Boxes of one tile are never
   merged: the model's own NMS already kept them apart. Weighted box fusion is not used here because
   it scales a box's score by the share of "models" that saw it, which is right for ensembles and TTA
   passes (used there, :mod:`.detectors`) but would punish every object that only one tile sees.

The merge is streamed: a group of matching boxes is decided once no later tile row can add to it (all
its boxes end above the next tile row's top, and boxes are clipped to their tile), so memory is the
boxes of about two tile rows and the result equals a merge of all boxes at once. Groups are the
connected components of the match graph (an R-tree query, then scipy's connected components); inside
a group the greedy rule runs in a fixed order, so the outcome never depends on batch or row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from aifactory.prediction.tiling import Tile, TileGrid
from aifactory.prediction.vectorize import Detections

MERGE_IOU = 0.5


@dataclass
class TileBoxes:
    """Detections of one tile in raster pixels: boxes (K, 4) x0, y0, x1, y1, scores (K,), 1-based foreground
    class (K,), and for instance models one polygon per box (raster pixels; None = use the box)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    polygons: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> TileBoxes:
        return TileBoxes(self.boxes[keep], self.scores[keep], self.labels[keep],
                         None if self.polygons is None else self.polygons[keep])

    @classmethod
    def empty(cls) -> TileBoxes:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype="int64"))


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two (N, 4) box arrays."""
    inter_w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def clip_to_tile(boxes: np.ndarray, tile: Tile, width: int, height: int) -> np.ndarray:
    """Tile-pixel boxes shifted to raster pixels and clipped to the tile's part of the raster."""
    shift = np.array([tile.col_off, tile.row_off, tile.col_off, tile.row_off], dtype="float64")
    out = np.asarray(boxes, dtype="float64").reshape(-1, 4) + shift
    right, bottom = min(tile.col_off + tile.size, width), min(tile.row_off + tile.size, height)
    np.clip(out[:, 0::2], tile.col_off, right, out=out[:, 0::2])
    np.clip(out[:, 1::2], tile.row_off, bottom, out=out[:, 1::2])
    return out


def _inner_span(splits: np.ndarray, index: int, margin: float) -> tuple[float, float]:
    """[start, stop) along one axis of the part tile ``index`` owns (``splits``: :attr:`TileGrid.row_splits` or
    :attr:`TileGrid.col_splits`), widened by ``margin``."""
    start = -np.inf if index == 0 else float(splits[index - 1]) - margin
    stop = np.inf if index == len(splits) else float(splits[index]) + margin
    return start, stop


def owned(grid: TileGrid, tile: Tile, boxes: np.ndarray) -> np.ndarray:
    """Boxes (raster pixels) whose centre lies in ``tile``'s widened part of the raster (see the module docstring)."""
    margin = grid.overlap / 4
    x0, x1 = _inner_span(grid.col_splits, tile.col, margin)
    y0, y1 = _inner_span(grid.row_splits, tile.row, margin)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)


def depth(grid: TileGrid, tile: Tile, boxes: np.ndarray) -> np.ndarray:
    """Distance of each box centre to the nearest edge of ``tile`` that another tile lies beyond."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    out = np.full(len(boxes), np.inf)
    if tile.col > 0:
        out = np.minimum(out, cx - tile.col_off)
    if tile.col < len(grid.col_offsets) - 1:
        out = np.minimum(out, tile.col_off + tile.size - cx)
    if tile.row > 0:
        out = np.minimum(out, cy - tile.row_off)
    if tile.row < len(grid.row_offsets) - 1:
        out = np.minimum(out, tile.row_off + tile.size - cy)
    return out


def paint_coverage(found: TileBoxes, tile: Tile, channels: int, masks: np.ndarray | None = None) -> np.ndarray:
    """(channels, T, T) float32: per pixel of ``tile`` the highest score of a box (or instance mask, (K, T, T)
    bool) of each class covering it: the scores raster of box detectors."""
    size = tile.size
    out = np.zeros((channels, size, size), dtype="float32")
    local = np.asarray(found.boxes) - np.array([tile.col_off, tile.row_off, tile.col_off, tile.row_off])
    c0 = np.clip(np.floor(local[:, 0]).astype(int), 0, size)
    r0 = np.clip(np.floor(local[:, 1]).astype(int), 0, size)
    c1 = np.clip(np.ceil(local[:, 2]).astype(int), 0, size)
    r1 = np.clip(np.ceil(local[:, 3]).astype(int), 0, size)
    for k in np.argsort(found.scores, kind="stable"):  # ascending: higher scores are painted last, on top
        plane = out[int(found.labels[k]) - 1, r0[k]:r1[k], c0[k]:c1[k]]
        score = np.float32(found.scores[k])
        if masks is None:
            plane[...] = score
        else:
            plane[masks[k, r0[k]:r1[k], c0[k]:c1[k]]] = score
    return out


class BoxMerger:
    """Collects each tile's owned boxes and hands out merged detections once no later tile can change them."""

    def __init__(self, grid: TileGrid, iou: float = MERGE_IOU) -> None:
        self.grid = grid
        self.iou = iou
        self._parts: list[tuple[TileBoxes, np.ndarray, np.ndarray]] = []  # boxes, tile key, depth
        self._pending = self._stack([])

    def add(self, tile: Tile, found: TileBoxes) -> None:
        """Add ``tile``'s boxes (raster pixels, already filtered and clipped to the tile)."""
        found = found.select(owned(self.grid, tile, found.boxes))
        if len(found):
            key = np.full(len(found), tile.row * len(self.grid.col_offsets) + tile.col)
            self._parts.append((found, key, depth(self.grid, tile, found.boxes)))

    def close(self, next_top: float) -> Detections:
        """Merged detections of every group lying wholly above raster row ``next_top`` (the top of the next
        tile row; ``inf`` after the last one)."""
        if self._parts:
            self._pending = self._stack([self._pending, *self._parts])
            self._parts = []
        pending = self._pending
        count = len(pending[0])
        if count == 0:
            return Detections()
        groups = self._groups(pending[0].boxes, pending[0].labels, pending[1])
        bottom = np.full(groups.max() + 1, -np.inf)
        np.maximum.at(bottom, groups, pending[0].boxes[:, 3])
        done = bottom[groups] <= next_top
        out = self._decide(pending, groups, done)
        keep = ~done
        self._pending = (pending[0].select(keep), pending[1][keep], pending[2][keep])
        return out

    def finish(self) -> Detections:
        return self.close(np.inf)

    @staticmethod
    def _stack(parts: list[tuple[TileBoxes, np.ndarray, np.ndarray]]) -> tuple[TileBoxes, np.ndarray, np.ndarray]:
        if not parts:
            return TileBoxes.empty(), np.zeros(0, dtype="int64"), np.zeros(0)
        with_polygons = any(p[0].polygons is not None for p in parts if len(p[0]))
        polygons = None
        if with_polygons:
            polygons = np.concatenate([p[0].polygons if p[0].polygons is not None
                                       else shapely.box(*p[0].boxes.T) for p in parts])
        return (TileBoxes(np.concatenate([p[0].boxes for p in parts]), np.concatenate([p[0].scores for p in parts]),
                          np.concatenate([p[0].labels for p in parts]), polygons),
                np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    def _groups(self, boxes: np.ndarray, labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Connected components of the graph "same class, different tile, IoU ≥ iou"."""
        count = len(boxes)
        tree = shapely.STRtree(shapely.box(*boxes.T))
        left, right = tree.query(shapely.box(*boxes.T), predicate="intersects")
        pair = (left < right) & (labels[left] == labels[right]) & (keys[left] != keys[right])
        left, right = left[pair], right[pair]
        match = pairwise_iou(boxes[left], boxes[right]) >= self.iou
        graph = coo_matrix((np.ones(int(match.sum())), (left[match], right[match])), shape=(count, count))
        return connected_components(graph, directed=False)[1]

    def _decide(self, pending: tuple[TileBoxes, np.ndarray, np.ndarray], groups: np.ndarray,
                done: np.ndarray) -> Detections:
        found, keys, depths = pending
        sizes = np.bincount(groups)
        single = done & (sizes[groups] == 1)
        chosen = list(np.flatnonzero(single))
        best = list(found.scores[single])
        multi = done & (sizes[groups] > 1)
        members_of: dict[int, list[int]] = {}
        for index in np.flatnonzero(multi):
            members_of.setdefault(int(groups[index]), []).append(int(index))
        for members in members_of.values():
            for rep, score_max in self._greedy(found, keys, depths, members):
                chosen.append(rep)
                best.append(score_max)
        index = np.asarray(chosen, dtype="int64")
        if not len(index):
            return Detections()
        boxes = found.boxes[index]
        geometry = shapely.box(*boxes.T) if found.polygons is None else found.polygons[index]
        area = shapely.area(geometry)
        order = np.lexsort((boxes[:, 0], boxes[:, 1]))  # top to bottom, left to right: stable file order
        return Detections(np.asarray(geometry, dtype=object)[order], found.labels[index][order].astype("int32"),
                          found.scores[index][order].astype("float64"), np.asarray(best, "float64")[order],
                          np.rint(area[order]).astype("int64"))

    def _greedy(self, found: TileBoxes, keys: np.ndarray, depths: np.ndarray,
                members: list[int]) -> list[tuple[int, float]]:
        """Representatives of one group: deepest box first; it takes the best-matching box of each other tile."""
        order = sorted(members, key=lambda i: (-depths[i], -found.scores[i], keys[i], i))
        left = set(order)
        out = []
        for rep in order:
            if rep not in left:
                continue
            left.discard(rep)
            taken = [rep]
            candidates = [i for i in order if i in left and keys[i] != keys[rep]]
            if candidates:
                ious = pairwise_iou(np.repeat(found.boxes[rep][None], len(candidates), 0), found.boxes[candidates])
                best_per_tile: dict[int, tuple[float, int]] = {}
                for i, value in zip(candidates, ious.tolist(), strict=True):
                    if value >= self.iou and value > best_per_tile.get(int(keys[i]), (-1.0, -1))[0]:
                        best_per_tile[int(keys[i])] = (value, i)
                for _, i in best_per_tile.values():
                    left.discard(i)
                    taken.append(i)
            out.append((rep, float(found.scores[taken].max())))
        return out
