"""Weighted blending of overlapping tiles into an accumulator that holds one band of rows.

Tile edges see less context, so where tiles overlap each contributes with a weight that falls towards
its border (Pielawski & Wählby 2020 show Hann-type windows remove the edge artefacts of plain
averaging). Three windows:

- ``cosine`` (default): 1 in the middle, a sin² ramp across the overlap on each side (a Tukey window):
  every pixel is decided by the tile that sees it best, and neighbours fade into each other smoothly.
- ``hann``: a full 2-D Hann window (sin² over the whole tile).
- ``crop``: centre crop: 1 inside, a negligible weight in the outer half-overlap, i.e. each pixel comes
  from the tile whose centre part holds it.

Weights never reach zero (a floor of 1e-3) so pixels at the raster edge, seen only by the border of one
tile, still get that tile's value. :class:`RowBandAccumulator` holds ``tile`` rows × raster width, not
the raster: once a tile row is done the rows no later tile touches are handed out and the band shifts.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from aifactory.prediction.tiling import Tile

BlendWindow = Literal["cosine", "hann", "crop"]
WEIGHT_FLOOR = 1e-3


def blend_weights(tile: int, overlap: int, kind: BlendWindow = "cosine") -> np.ndarray:
    """(tile, tile) float32 weights of a tile for ``kind`` (see the module docstring)."""
    pos = np.arange(tile, dtype="float64") + 0.5
    edge = np.minimum(pos, tile - pos)  # distance of each pixel centre to the nearest tile border
    if kind == "hann":
        profile = np.sin(np.pi * pos / tile) ** 2
    elif kind == "cosine":
        ramp = max(overlap, 1)
        profile = np.where(edge < ramp, np.sin(0.5 * np.pi * np.minimum(edge / ramp, 1.0)) ** 2, 1.0)
    elif kind == "crop":
        profile = np.where(edge < overlap / 2, 0.0, 1.0)
    else:
        raise ValueError(f"unknown blend window {kind!r}")
    profile = np.maximum(profile, WEIGHT_FLOOR)
    return np.outer(profile, profile).astype("float32")


class RowBandAccumulator:
    """Weighted sums of ``channels`` score planes over rows [top, top + tile) of the raster, full width;
    ``top`` starts at 0, or at the first row of the first tile row when only part of the raster is predicted."""

    def __init__(self, width: int, height: int, tile: int, channels: int, top: int = 0) -> None:
        self.width, self.height = width, height
        self.rows = min(tile, height)
        self.top = top
        self.sums = np.zeros((channels, self.rows, width), dtype="float32")
        self.weights = np.zeros((self.rows, width), dtype="float32")

    @property
    def nbytes(self) -> int:
        return int(self.sums.nbytes + self.weights.nbytes)

    def add(self, tile: Tile, scores: np.ndarray, weights: np.ndarray) -> None:
        """Add (channels, tile, tile) ``scores`` weighted by (tile, tile) ``weights`` at ``tile``'s place."""
        r0, c0 = tile.row_off - self.top, tile.col_off
        if r0 < 0 or tile.row_off + min(tile.size, self.height) > self.top + self.rows:
            raise ValueError(f"tile {tile.tile_id} is outside the accumulator band starting at row {self.top}")
        h = min(tile.size, self.height - tile.row_off)
        w = min(tile.size, self.width - c0)
        weights = weights[:h, :w]
        self.sums[:, r0:r0 + h, c0:c0 + w] += scores[:, :h, :w] * weights
        self.weights[r0:r0 + h, c0:c0 + w] += weights

    def pop(self, stop: int, chunk: int = 64) -> tuple[int, np.ndarray, np.ndarray]:
        """Hand out the finished rows [top, stop) as (top, uint8 scores, predicted mask); shift the band.

        Scores are normalised ``chunk`` rows at a time in place in the band (those rows are dropped by the
        shift) and written straight into the uint8 output, so no float temporary spans the raster's width.
        """
        count = stop - self.top
        if not 0 < count <= self.rows:
            raise ValueError(f"cannot pop rows [{self.top}, {stop}) from a band of {self.rows} rows")
        values = np.empty((self.sums.shape[0], count, self.width), dtype="uint8")
        predicted = np.empty((count, self.width), dtype=bool)
        for start in range(0, count, chunk):
            rows = slice(start, min(count, start + chunk))
            sums = self.sums[:, rows]
            _, predicted[rows] = normalize(sums, self.weights[rows], out=sums)
            to_uint8(sums, predicted[rows], out=values[:, rows])
        top = self.top
        keep = self.rows - count
        self.sums[:, :keep] = self.sums[:, count:]
        self.weights[:keep] = self.weights[count:]
        self.sums[:, keep:] = 0
        self.weights[keep:] = 0
        self.top = stop
        return top, values, predicted


def normalize(sums: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blended scores (channels, h, w) in [0, 1] and the mask of pixels any tile predicted.

    ``out`` may be ``sums`` itself (normalised in place); pixels no tile predicted are 0 in either case.
    """
    predicted = weights > 0
    if out is None:
        out = np.zeros_like(sums)
    else:
        out[:, ~predicted] = 0
    np.divide(sums, weights, out=out, where=predicted)
    np.clip(out, 0.0, 1.0, out=out)
    return out, predicted


def to_uint8(scores: np.ndarray, predicted: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Scores × 255 rounded, 0 where not predicted (the scores raster's contract); ``scores`` is overwritten."""
    np.multiply(scores, 255.0, out=scores)
    np.rint(scores, out=scores)
    if out is None:
        out = np.empty(scores.shape, dtype="uint8")
    out[...] = scores
    out[:, ~predicted] = 0
    return out
