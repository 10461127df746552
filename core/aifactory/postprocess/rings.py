"""Vectorized vertex plumbing: every ring and line of a geometry array as one numpy coordinate table.

Ops that move, add or remove vertices (Chaikin smoothing, Visvalingam-Whyatt, outline regularization, line
straightening) have no per-geometry form in shapely. Rather than loop over features in Python, they take
all polygon rings and lines apart at once (``shapely.get_parts/get_rings/get_coordinates``), work on one
``(n, 2)`` array with a ring id per vertex, and rebuild with ``shapely.linearrings/polygons/multipolygons``
using ``indices``: a few numpy passes whatever the feature count. Points pass through untouched; z is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import shapely

G = shapely.GeometryType


@dataclass(frozen=True)
class RingTable:
    """Vertices of all rings/lines; closed rings are stored without their repeated closing vertex."""

    coords: np.ndarray  # (n, 2) float64
    ring: np.ndarray  # (n,) ring id of each vertex, non-decreasing
    closed: np.ndarray  # (rings,) polygon ring (True) or line (False)
    exterior: np.ndarray  # (rings,) polygon shell (True for lines too)
    feature: np.ndarray  # (rings,) position of the geometry the ring belongs to
    part: np.ndarray  # (rings,) position in the parts array
    parts: np.ndarray  # all parts of all geometries
    part_feature: np.ndarray  # (parts,) position of the geometry of each part
    geoms: np.ndarray  # the input geometries

    @property
    def n_rings(self) -> int:
        return len(self.closed)

    def with_vertices(self, coords: np.ndarray, ring: np.ndarray) -> RingTable:
        """The same rings with new vertices (``ring`` must stay non-decreasing; rings may lose vertices)."""
        return replace(self, coords=np.asarray(coords, dtype="float64"), ring=np.asarray(ring, dtype=np.intp))

    def counts(self) -> np.ndarray:
        """Vertices per ring."""
        return np.bincount(self.ring, minlength=self.n_rings)

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Index of the previous and next vertex in the same ring (cyclic for closed rings, -1 at line ends)."""
        return ring_neighbours(self.ring, self.closed)


def ring_neighbours(ring: np.ndarray, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Previous and next vertex index within each ring (cyclic when closed, -1 past the end of a line)."""
    n = len(ring)
    index = np.arange(n)
    first = np.r_[True, ring[1:] != ring[:-1]] if n else np.zeros(0, bool)
    last = np.r_[ring[1:] != ring[:-1], True] if n else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, index, 0)) if n else index
    end = np.minimum.accumulate(np.where(last, index, n)[::-1])[::-1] if n else index
    prev = np.where(first, np.where(closed[ring], end, -1), index - 1)
    nxt = np.where(last, np.where(closed[ring], start, -1), index + 1)
    return prev, nxt


def decompose(geoms: np.ndarray) -> RingTable:
    """Take every polygon ring and line of ``geoms`` apart into a :class:`RingTable`."""
    geoms = np.asarray(geoms, dtype=object)
    parts, part_feature = shapely.get_parts(geoms, return_index=True)
    kind = shapely.get_type_id(parts)
    poly = np.flatnonzero(kind == G.POLYGON)
    line = np.flatnonzero((kind == G.LINESTRING) | (kind == G.LINEARRING))
    rings, ring_local = shapely.get_rings(parts[poly], return_index=True)
    exterior = np.r_[True, ring_local[1:] != ring_local[:-1]] if len(rings) else np.zeros(0, bool)
    all_rings = np.concatenate([rings, parts[line]])
    ring_part = np.concatenate([poly[ring_local], line]).astype(np.intp)
    closed = np.r_[np.ones(len(rings), bool), np.zeros(len(line), bool)]
    coords, ring = shapely.get_coordinates(all_rings, return_index=True)
    last = np.r_[ring[1:] != ring[:-1], True] if len(ring) else np.zeros(0, bool)
    keep = ~(last & closed[ring])  # drop the closing vertex of polygon rings
    return RingTable(coords=coords[keep], ring=ring[keep].astype(np.intp), closed=closed,
                     exterior=np.r_[exterior, np.ones(len(line), bool)], feature=part_feature[ring_part],
                     part=ring_part, parts=parts, part_feature=part_feature, geoms=geoms)


def rebuild(table: RingTable) -> np.ndarray:
    """Geometries of the same types from the table; rings too short to exist are dropped.

    A polygon whose shell collapsed (< 3 vertices) vanishes with its holes, a line with < 2 vertices
    vanishes; a geometry that loses every part becomes empty.
    """
    counts = table.counts()
    alive = np.where(table.closed, counts >= 3, counts >= 2)
    shell_alive = np.zeros(len(table.parts), bool)
    shell_alive[table.part[table.exterior & alive]] = True
    alive &= shell_alive[table.part]
    new_parts = table.parts.copy()
    new_parts[table.part] = None
    for closed in (True, False):
        chosen = alive & (table.closed == closed)
        if not chosen.any():
            continue
        compact = np.cumsum(chosen) - 1  # ring id -> position among the chosen rings
        vertex = chosen[table.ring]
        make = shapely.linearrings if closed else shapely.linestrings
        built = make(table.coords[vertex], indices=compact[table.ring[vertex]])
        if closed:  # rings are grouped by part, shell first: what shapely.polygons expects
            part_ids, part_index = np.unique(table.part[chosen], return_inverse=True)
            new_parts[part_ids] = shapely.polygons(built, indices=part_index)
        else:
            new_parts[table.part[chosen]] = built
    return reassemble(table.geoms, new_parts, table.part_feature)


MULTI = {G.MULTIPOLYGON: shapely.multipolygons, G.MULTILINESTRING: shapely.multilinestrings,
         G.MULTIPOINT: shapely.multipoints, G.GEOMETRYCOLLECTION: shapely.geometrycollections}
EMPTY = {G.POINT: "POINT EMPTY", G.LINESTRING: "LINESTRING EMPTY", G.LINEARRING: "LINESTRING EMPTY",
         G.POLYGON: "POLYGON EMPTY", G.MULTIPOINT: "MULTIPOINT EMPTY", G.MULTILINESTRING: "MULTILINESTRING EMPTY",
         G.MULTIPOLYGON: "MULTIPOLYGON EMPTY", G.GEOMETRYCOLLECTION: "GEOMETRYCOLLECTION EMPTY"}


def empty_like(kinds: np.ndarray) -> np.ndarray:
    """An empty geometry of each given type id."""
    out = np.empty(len(kinds), dtype=object)
    for type_id, wkt in EMPTY.items():
        out[kinds == type_id] = shapely.from_wkt(wkt)
    return out


def reassemble(geoms: np.ndarray, parts: np.ndarray, part_feature: np.ndarray) -> np.ndarray:
    """Put (possibly missing) parts back into geometries of the original types; no part left gives an empty one."""
    kind = shapely.get_type_id(geoms)
    out = geoms.copy()
    changed = np.unique(part_feature)
    out[changed] = empty_like(kind[changed])
    present = ~shapely.is_missing(parts)
    for type_id, make in MULTI.items():
        chosen = (kind[part_feature] == type_id) & present
        if chosen.any():
            make(parts[chosen], indices=part_feature[chosen], out=out)
    single = ~np.isin(kind[part_feature], list(MULTI)) & present
    out[part_feature[single]] = parts[single]
    return out


#: ``cost(previous, vertex, next) -> (k,)`` for k candidate vertices given as (k, 2) arrays.
Cost = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def decimate(table: RingTable, cost: Cost, threshold: float) -> RingTable:
    """Remove vertices while their cost is below ``threshold``, cheapest first, all rings at once.

    Each round removes, in every ring, every vertex whose cost is below the threshold and lower than both
    neighbours' (ties broken by position), then re-links the survivors and recomputes the neighbours'
    costs. Local minima are never adjacent, so a round is one vectorized step; only rings that changed are
    looked at again. This is the parallel form of the sequential "remove the cheapest vertex" loop of
    Visvalingam-Whyatt: it ends in the same state (no remaining vertex below the threshold) but may pick a
    different vertex where two candidates' neighbourhoods interact. Line ends are kept; closed rings keep
    at least 3 vertices and lines 2.
    """
    n = len(table.ring)
    ring = table.ring
    prev, nxt = table.neighbours()
    alive = np.ones(n, bool)
    count = table.counts()
    minimum = np.where(table.closed, 3, 2)
    active = np.ones(table.n_rings, bool)
    candidates = np.flatnonzero((prev >= 0) & (nxt >= 0))
    costs = np.full(n, np.inf)
    while candidates.size:
        candidates = candidates[alive[candidates] & active[ring[candidates]] & (count > minimum)[ring[candidates]]]
        if not candidates.size:
            break
        costs[candidates] = cost(table.coords[prev[candidates]], table.coords[candidates],
                                 table.coords[nxt[candidates]])
        below = candidates[costs[candidates] < threshold]
        if not below.size:
            break
        own, before, after = costs[below], prev[below], nxt[below]
        smallest = (((own < costs[before]) | ((own == costs[before]) & (below < before)))
                    & ((own < costs[after]) | ((own == costs[after]) & (below < after))))
        remove = below[smallest]
        per_ring = np.bincount(ring[remove], minlength=table.n_rings)
        crowded = (count - per_ring < minimum)[ring[remove]]
        if crowded.any():  # a ring near its minimum loses only its cheapest vertex this round
            risky = remove[crowded]
            order = np.lexsort((risky, costs[risky], ring[risky]))
            first = np.r_[True, ring[risky][order][1:] != ring[risky][order][:-1]]
            remove = np.concatenate([remove[~crowded], risky[order][first]])
        alive[remove] = False
        costs[remove] = np.inf
        count -= np.bincount(ring[remove], minlength=table.n_rings)
        before, after = prev[remove], nxt[remove]
        nxt[before], prev[after] = after, before
        active[:] = False
        active[ring[remove]] = True
    return table.with_vertices(table.coords[alive], ring[alive])
