"""Spatially disjoint train/val/test splits of chips, stratified by class, reproducible from a seed.

- ``blocks``: the ground is cut into square blocks (``block_tiles`` tiles on a side, one grid per CRS, so
  images of the same place share it). Blocks are assigned to splits; a chip belongs to the split of its
  block, and a chip whose footprint, grown by the guard band, reaches a block of another split is dropped.
- ``image``: whole images are assigned (images that overlap on the ground, or lie closer than the guard band,
  move together).
- hold-out regions: chips touching a hold-out polygon are forced to ``test``; chips of other splits that
  overlap them (or come within the guard band) are dropped, so nothing of a hold-out reaches train/val.

Assignment uses iterative stratification (Sechidis et al., ECML 2011): the rarest class is placed first,
each unit going to the split that most lacks that class. It is written here because the packages that
ship it (scikit-multilearn) are unmaintained and pull scikit-learn for thirty lines of logic.

:func:`find_leaks` is the proof: pairs of chips in different splits whose footprints overlap (or are closer
than a distance). The dataset builder refuses to write a dataset with leaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from pydantic import Field, field_validator, model_validator

from aifactory.config import CrsText, StrictModel, WktText

SPLIT_NAMES = ("train", "val", "test")


class HoldoutRegion(StrictModel):
    """A region forced to ``test``: inline WKT or a vector file, for one source or for all of them."""

    source: str | None = Field(default=None, description="raster name or path; default: every source")
    wkt: WktText | None = None
    path: Path | None = None
    layer: str | None = None
    crs: CrsText | None = Field(default=None, description="CRS of the WKT; default: the source's own (or pixel space)")

    @model_validator(mode="after")
    def _one_geometry(self) -> HoldoutRegion:
        if (self.wkt is None) == (self.path is None):
            raise ValueError("give exactly one of wkt or path")
        return self


class SplitConfig(StrictModel):
    """How chips are split."""

    method: Literal["blocks", "image"] = "blocks"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15},
                                        description="share of each of train, val, test")
    block_tiles: int = Field(default=4, ge=1, description="block side, in tiles (blocks method)")
    guard: int = Field(default=0, ge=0, description="guard band width in pixels")
    seed: int = 0
    holdout: list[HoldoutRegion] = Field(default_factory=list)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r}; expected train, val, test")
        if any(v < 0 for v in value.values()) or not 0.999 <= sum(value.values()) <= 1.001:
            raise ValueError("split fractions must be non-negative and sum to 1")
        return value


@dataclass
class ChipSet:
    """Candidate chips: footprints in map coordinates (pixel space for non-georeferenced sources)."""

    source: np.ndarray      # (n,) int, index of the chip's source raster
    group: np.ndarray       # (n,) str, chips of one group share coordinates (same CRS or same pixel space)
    footprint: np.ndarray   # (n,) shapely polygons
    counts: np.ndarray      # (n, k) objects per class
    pixel_size: np.ndarray  # (n,) map units per pixel of the chip's source

    def __len__(self) -> int:
        return len(self.source)


def conflicts(a: np.ndarray, b: np.ndarray, distance: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i in a, j in b) that overlap with positive area or lie closer than ``distance[i]``."""
    dist = np.broadcast_to(np.asarray(distance, dtype="float64"), (len(a),))
    tree = shapely.STRtree(b)
    if (dist > 0).any():
        left, right = tree.query(a, predicate="dwithin", distance=dist)
    else:
        left, right = tree.query(a, predicate="intersects")
    close = shapely.distance(a[left], b[right]) < dist[left]
    overlap = shapely.area(shapely.intersection(a[left], b[right])) > 0
    keep = close | overlap
    return left[keep], right[keep]


def find_leaks(chips: ChipSet, splits: np.ndarray, min_distance: float | np.ndarray = 0.0) -> list[tuple[int, int]]:
    """Pairs of kept chips of one group that are in different splits and overlap (or are too close).

    A pair is too close when it is closer than the larger of its two chips' ``min_distance`` (sources of
    one CRS may have different pixel sizes, hence different guard bands)."""
    leaks: set[tuple[int, int]] = set()
    distance = np.broadcast_to(np.asarray(min_distance, dtype="float64"), (len(chips),))
    for group in np.unique(chips.group):
        index = np.flatnonzero((chips.group == group) & (splits != None))  # noqa: E711 (element-wise)
        if len(index) < 2:
            continue
        left, right = conflicts(chips.footprint[index], chips.footprint[index], distance[index])
        bad = (left != right) & (splits[index[left]] != splits[index[right]])
        first, second = index[left[bad]], index[right[bad]]
        leaks.update(zip(np.minimum(first, second).tolist(), np.maximum(first, second).tolist(), strict=True))
    return sorted(leaks)


def stratify(unit_counts: np.ndarray, fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Assign units (rows of per-class counts) to split names, rarest class first (iterative stratification)."""
    names = [s for s in SPLIT_NAMES if fractions.get(s, 0) > 0]
    share = np.array([fractions[s] for s in names])
    n_units = len(unit_counts)
    counts = unit_counts.astype("float64")
    want = share[:, None] * counts.sum(axis=0)[None, :]      # per split, per class
    want_units = share * n_units
    result = np.full(n_units, -1)
    order = rng.permutation(n_units)
    remaining = counts.sum(axis=0)
    while True:
        open_units = order[result[order] < 0]
        if len(open_units) == 0:
            break
        present = remaining > 0
        if present.any():
            rarest = np.flatnonzero(present)[np.argmin(remaining[present])]
            batch = open_units[counts[open_units, rarest] > 0]
        else:
            rarest, batch = None, open_units
        for unit in batch:
            if rarest is not None:
                need = want[:, rarest]
                best = np.flatnonzero(need == need.max())
            else:
                best = np.arange(len(names))
            if len(best) > 1:
                unit_need = want_units[best]
                best = best[unit_need == unit_need.max()]
            split = int(best[0] if len(best) == 1 else rng.choice(best))
            result[unit] = split
            want[split] -= counts[unit]
            want_units[split] -= 1
            remaining -= counts[unit]
    return np.array(names, dtype=object)[result]


def _grow(footprints: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Footprints' bounds grown by ``amount`` (map units) as (n, 4)."""
    bounds = shapely.bounds(footprints)
    return bounds + np.column_stack([-amount, -amount, amount, amount])


def _block_ids(bounds: np.ndarray, origin: tuple[float, float], size: float) -> tuple[np.ndarray, ...]:
    """Block index ranges (x0, x1, y0, y1, inclusive) touched by each box; boundaries don't count."""
    eps = size * 1e-9
    x0 = np.floor((bounds[:, 0] - origin[0] + eps) / size).astype(int)
    x1 = np.floor((bounds[:, 2] - origin[0] - eps) / size).astype(int)
    y0 = np.floor((bounds[:, 1] - origin[1] + eps) / size).astype(int)
    y1 = np.floor((bounds[:, 3] - origin[1] - eps) / size).astype(int)
    return x0, x1, y0, y1


def _split_blocks(chips: ChipSet, index: np.ndarray, block_size: float, guard: np.ndarray,
                  config: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Splits for the chips ``index`` of one group by blocks; None where the guard band drops a chip."""
    footprints = chips.footprint[index]
    bounds = shapely.bounds(footprints)
    origin = (float(bounds[:, 0].min()), float(bounds[:, 1].min()))
    centres = shapely.get_coordinates(shapely.centroid(footprints))
    home = np.floor((centres - np.array(origin)) / block_size).astype(int)
    keys, unit = np.unique(home, axis=0, return_inverse=True)
    unit = unit.reshape(-1)
    unit_counts = np.zeros((len(keys), chips.counts.shape[1]))
    np.add.at(unit_counts, unit, chips.counts[index])
    block_split = stratify(unit_counts, config.fractions, rng)
    lookup = {tuple(key): block_split[i] for i, key in enumerate(keys.tolist())}
    x0, x1, y0, y1 = _block_ids(_grow(footprints, guard[index]), origin, block_size)
    out = np.empty(len(index), dtype=object)
    for i in range(len(index)):
        mine = block_split[unit[i]]
        touched = {lookup.get((bx, by), mine) for bx in range(x0[i], x1[i] + 1) for by in range(y0[i], y1[i] + 1)}
        out[i] = mine if touched == {mine} else None
    return out


def _image_units(chips: ChipSet, index: np.ndarray, guard: np.ndarray) -> np.ndarray:
    """Unit number per chip: sources whose chips overlap on the ground, or come closer than the guard band
    (``guard``: map units per chip), form one unit (union-find): two adjacent tiles of a mosaic put in
    different splits would otherwise touch across the split boundary."""
    sources = np.unique(chips.source[index])
    parent = {int(s): int(s) for s in sources}

    def root(s: int) -> int:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    left, right = conflicts(chips.footprint[index], chips.footprint[index], guard[index])
    for a, b in zip(chips.source[index[left]], chips.source[index[right]], strict=True):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[ra] = rb
    roots = np.array([root(int(s)) for s in chips.source[index]])
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def assign_splits(chips: ChipSet, config: SplitConfig, block_size: dict[str, float],
                  holdouts: dict[int, shapely.Geometry] | None = None) -> np.ndarray:
    """The split of every chip (``None`` = dropped by a guard band or a hold-out's neighbourhood).

    ``block_size`` is the block side per group in map units; ``holdouts`` maps a source index to its
    hold-out region in that source's map coordinates.
    """
    rng = np.random.default_rng(config.seed)
    n = len(chips)
    splits = np.full(n, None, dtype=object)
    guard = config.guard * chips.pixel_size
    forced = np.zeros(n, dtype=bool)
    for source, region in (holdouts or {}).items():
        mine = np.flatnonzero(chips.source == source)
        forced[mine[shapely.intersects(chips.footprint[mine], region)]] = True
    splits[forced] = "test"
    free = np.flatnonzero(~forced)
    # chips of other splits overlapping hold-out chips (or within the guard band) are dropped
    held = np.flatnonzero(forced)
    for group in np.unique(chips.group[held]):
        mine, theirs = free[chips.group[free] == group], held[chips.group[held] == group]
        near, _ = conflicts(chips.footprint[mine], chips.footprint[theirs], guard[mine])
        free = np.setdiff1d(free, mine[near])
    for group in np.unique(chips.group[free]):
        index = free[chips.group[free] == group]
        if config.method == "blocks":
            splits[index] = _split_blocks(chips, index, block_size[group], guard, config, rng)
        else:
            units = _image_units(chips, index, guard)
            unit_counts = np.zeros((units.max() + 1, chips.counts.shape[1]))
            np.add.at(unit_counts, units, chips.counts[index])
            splits[index] = stratify(unit_counts, config.fractions, rng)[units]
    return splits
