"""Skeletonize polygons (roads, rivers) into centre lines: rasterize, thin, vectorize, prune.

Why raster thinning and not the polygon's medial axis (Voronoi of densified edges): outlines that come from
segmentation masks are pixel staircases, and their exact medial axis sprouts a spur at every stair step,
so it needs the same pruning plus a densification whose cost grows with the outline length; the Voronoi
diagram of a whole road network is also one global computation. Rasterizing at a fraction of the road
width and thinning with ``skimage.morphology.skeletonize`` is robust to the staircase, tiles naturally
(memory bounded by ``tile_cells``², whatever the extent) and is linear in the area.

Pipeline per class: tiles of ``tile_cells`` cells plus a margin → ``rasterio.features.rasterize`` →
``skeletonize`` → one segment per pair of 8-connected skeleton cells (diagonals only where no orthogonal
path exists; a segment is emitted by the tile owning its upper cell, so each appears once) →
``shapely.line_merge`` → dead-end branches shorter than ``prune`` removed → Douglas-Peucker.
Each line takes the attributes of the nearest source polygon.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from pydantic import Field
from rasterio.features import rasterize
from skimage.morphology import skeletonize as thin

from aifactory.config import StrictModel
from aifactory.errors import InputError
from aifactory.postprocess.base import (
    OPS,
    class_codes,
    geometries,
    is_polygonal,
    metric_only,
    replace_geometry,
    rows,
)
from aifactory.progress import reporter

#: Cells one class may rasterize at most (about 4 minutes of thinning on one core): beyond, a clear refusal
#: asking for a coarser ``cell_size`` rather than hours of work (one huge polygon among thin roads makes the
#: default cell, a fifth of the *median* width, far too fine for it).
MAX_CELLS = 2**30
#: Tiles one class may span at most (each costs a tree query even where nothing is drawn).
MAX_TILES = 250_000

#: (row, column) steps to the neighbours a cell links to: east, south, south-east, south-west.
STEPS = ((0, 1), (1, 0), (1, 1), (1, -1))


class SkeletonizeParams(StrictModel):
    cell_size: float | None = Field(None, gt=0, description="raster cell (CRS units); default: a fifth of the "
                                                            "median polygon width (2·area/perimeter)")
    prune: float | None = Field(None, ge=0, description="remove dead-end branches shorter than this "
                                                        "(default: the median polygon width)")
    simplify: float | None = Field(None, ge=0, description="Douglas-Peucker tolerance on the lines "
                                                           "(default: one cell)")
    tile_cells: int = Field(2048, ge=64, le=16384, description="tile side in cells (bounds memory)")


def skeleton_segments(mask: np.ndarray, core: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell pairs (start, end) of the skeleton of ``mask`` whose start cell lies in ``core`` (r0, r1, c0, c1)."""
    skeleton = np.pad(thin(mask), 1)  # padding: neighbour look-ups never leave the array
    r, c = np.nonzero(skeleton)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    for dr, dc in STEPS:
        linked = skeleton[r + dr, c + dc]
        if dr and dc:  # a diagonal only where no orthogonal two-step path exists
            linked &= ~skeleton[r, c + dc] & ~skeleton[r + dr, c]
        starts.append(np.column_stack([r[linked], c[linked]]))
        ends.append(np.column_stack([r[linked] + dr, c[linked] + dc]))
    start, end = np.concatenate(starts) - 1, np.concatenate(ends) - 1
    r0, r1, c0, c1 = core
    owned = (start[:, 0] >= r0) & (start[:, 0] < r1) & (start[:, 1] >= c0) & (start[:, 1] < c1)
    return start[owned], end[owned]


def prune_spurs(lines: np.ndarray, length: float, snap: float) -> np.ndarray:
    """Drop lines shorter than ``length`` with one free end and the other at a junction."""
    if length <= 0 or not len(lines):
        return lines
    ends = np.concatenate([shapely.get_coordinates(shapely.get_point(lines, 0)),
                           shapely.get_coordinates(shapely.get_point(lines, -1))])
    _, node, degree = np.unique(np.round(ends / snap), axis=0, return_inverse=True, return_counts=True)
    degree = degree[node.ravel()].reshape(2, -1)
    spur = ((degree[0] == 1) ^ (degree[1] == 1)) & (shapely.length(lines) < length)
    if not spur.any():
        return lines
    kept = shapely.line_merge(shapely.multilinestrings(lines[~spur]))
    return shapely.get_parts(kept)


def centre_lines(polygons: np.ndarray, cell: float, tile_cells: int, margin: int, task: str) -> np.ndarray:
    """Skeleton lines of the union of ``polygons``, computed tile by tile on one global cell grid."""
    tree = shapely.STRtree(polygons)
    minx, miny, maxx, maxy = shapely.total_bounds(polygons)
    span = tile_cells * cell
    columns, rows_ = max(1, math.ceil((maxx - minx) / span)), max(1, math.ceil((maxy - miny) / span))
    cells = float(np.sum(shapely.area(shapely.envelope(polygons)))) / cell**2
    if cells > MAX_CELLS or columns * rows_ > MAX_TILES:
        raise InputError(f"{task}: at cell_size={cell:g} the polygons span {cells:.3g} cells in {columns * rows_} "
                         f"tiles (at most {MAX_CELLS:.3g} cells, {MAX_TILES} tiles); set a larger cell_size")
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    size = tile_cells + 2 * margin
    tiles = [(i, j) for j in range(rows_) for i in range(columns)]
    for i, j in reporter().track(tiles, task=task, message="skeleton tiles"):
        row0, col0 = j * tile_cells - margin, i * tile_cells - margin  # tile origin on the global cell grid
        left, top = minx + col0 * cell, maxy - row0 * cell
        hits = tree.query(shapely.box(left, top - size * cell, left + size * cell, top))
        if not len(hits):
            continue
        mask = rasterize(polygons[hits], out_shape=(size, size), transform=Affine(cell, 0, left, 0, -cell, top),
                         dtype="uint8") > 0
        start, end = skeleton_segments(mask, (margin, margin + tile_cells, margin, margin + tile_cells))
        offset = np.array([row0, col0])  # global cell indices: tiles agree exactly on shared cells
        starts.append(start + offset)
        ends.append(end + offset)
    count = int(sum(len(found) for found in starts))
    if not count:
        return np.empty(0, dtype=object)
    cells = np.stack([np.concatenate(starts), np.concatenate(ends)], axis=1).reshape(-1, 2)
    pairs = np.column_stack([minx + (cells[:, 1] + 0.5) * cell, maxy - (cells[:, 0] + 0.5) * cell])
    lines = shapely.linestrings(pairs, indices=np.repeat(np.arange(count), 2))
    return shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines)))


@OPS.register("skeletonize", SkeletonizeParams)
def skeletonize(frame: gpd.GeoDataFrame, params: SkeletonizeParams) -> gpd.GeoDataFrame:
    """Turn polygons (roads, rivers) into centre lines per class; each line keeps its nearest polygon's attributes."""
    geoms = geometries(frame)
    empty = is_polygonal(geoms) & shapely.is_empty(geoms)  # no skeleton: dropped like any vanished geometry
    polygon = is_polygonal(geoms) & ~empty
    if not polygon.any():
        return frame.loc[~empty].copy()
    metric_only(frame, "skeletonize", cell_size=params.cell_size, prune=params.prune or None,
                simplify=params.simplify or None)
    codes = class_codes(frame)
    pieces = [frame.loc[~polygon & ~empty]]
    for code in np.unique(codes[polygon]):
        members = np.flatnonzero(polygon & (codes == code))
        shapes = geoms[members]
        width = float(np.median(2 * shapely.area(shapes) / np.maximum(shapely.length(shapes), 1e-300)))
        cell = params.cell_size or max(width / 5, 1e-9)
        margin = int(min(max(16, math.ceil(1.5 * width / cell)), params.tile_cells // 2))
        lines = centre_lines(shapes, cell, params.tile_cells, margin, "skeletonize")
        lines = prune_spurs(lines, width if params.prune is None else params.prune, cell / 100)
        lines = shapely.simplify(lines, cell if params.simplify is None else params.simplify)
        if not len(lines):
            continue
        nearest = shapely.STRtree(shapes).query_nearest(lines, all_matches=False)[1]
        pieces.append(replace_geometry(rows(frame, members[nearest]), lines))
    out = pd.concat(pieces, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry=frame.geometry.name, crs=frame.crs)
