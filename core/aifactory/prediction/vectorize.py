"""Scores → polygons, streamed strip by strip, with no polygon split along strip or tile lines.

Input arrives as finished row strips of the uint8 scores raster (one band per foreground class) with
the mask of predicted pixels. A pixel belongs to the foreground class with the highest score when that
score beats the implied background (255 − Σ foreground, i.e. the arg-max of a softmax; ≥ 128 for a
single sigmoid class). Working on the stored uint8 scores makes the output a pure function of
``scores.tif``: re-vectorizing the file in one pass gives the same polygons (the seam tests do that).

Seams are handled by construction, not by patching: each strip is labelled into 4-connected
components of one class (scikit-image), traced with ``rasterio.features.shapes`` (4-connected, so a
component is exactly one polygon, traced only where the mask says foreground), and components touching
the previous strip's last row are joined in a union-find. A component stays open while it touches the
newest row; when it closes its pieces, which share whole pixel edges in integer pixel coordinates, are
merged with ``shapely.union_all`` (exact: integer coordinates; the pieces' shared edges are not
noded alike, which rules out the faster coverage union) and the collinear vertices the seam left are
dropped, giving the very polygon a single pass traces. Memory is the strip plus the open components.

Touching objects of one class are separated per closed component (so the result cannot depend on
strips either): seeds are the h-maxima of the distance to the component's border and a watershed on
that distance grows them back (``instance_h`` in pixels; 0 disables). Components larger than
``max_separate_px`` are not separated (land-cover patches, not objects) and keep only their polygon
pieces. Models trained on the datasets stage's other label modes separate objects themselves and get
them grown back: ``core`` labels (objects shrunk around their centroid by ``core_factor``) are scaled
back by ``grow_factor = 1 / core_factor`` around their centroid; ``boundary`` labels (a ``contact`` class
where objects touch) have the contact class in ``ignore`` and ``grow_px = 1`` (a mitred buffer, so
rectangles stay rectangles) closes the gap it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from skimage.measure import label
from skimage.morphology import h_maxima
from skimage.segmentation import watershed


@dataclass
class Detections:
    """Polygons in pixel space (x = column, y = row) with their 1-based foreground class and scores."""

    geometry: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    class_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int32"))
    score: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="float64"))
    score_max: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="float64"))
    pixels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="int64"))

    def __len__(self) -> int:
        return len(self.geometry)

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("geometry", "class_index", "score", "score_max", "pixels")))

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.geometry[keep], self.class_index[keep], self.score[keep], self.score_max[keep],
                          self.pixels[keep])


def class_map(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) uint8 map: 0 background or not predicted, else the 1-based foreground class."""
    return classes_and_best(scores, valid)[0]


def classes_and_best(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`class_map` and the highest foreground score of each pixel, in one pass over the classes.

    A plane-by-plane loop rather than ``argmax(axis=0)``, which is several times slower on a (classes, h, w)
    array; the first class wins ties, as with ``argmax``.
    """
    best = scores[0].copy()
    index = np.ones(best.shape, dtype="uint8")
    for cls in range(1, len(scores)):
        index[scores[cls] > best] = cls + 1
        np.maximum(best, scores[cls], out=best)
    foreground = scores.sum(axis=0, dtype="int32")  # the implied background is 255 - this sum
    foreground += best
    foreground = (foreground > 255) & valid
    index[~foreground] = 0
    return index, best


@dataclass
class _Group:
    """One connected component, possibly spanning several strips."""

    cls: int
    pieces: list[shapely.Geometry]
    pixels: int
    total: float
    peak: int
    bbox: list[int]  # row0, col0, row1, col1
    crops: list[tuple[int, int, np.ndarray, np.ndarray]] | None  # row0, col0, mask, scores

    def absorb(self, other: _Group, max_crop_px: int) -> None:
        self.pieces += other.pieces
        self.pixels += other.pixels
        self.total += other.total
        self.peak = max(self.peak, other.peak)
        self.bbox = [min(self.bbox[0], other.bbox[0]), min(self.bbox[1], other.bbox[1]),
                     max(self.bbox[2], other.bbox[2]), max(self.bbox[3], other.bbox[3])]
        if self.crops is None or other.crops is None or self.bbox_area > max_crop_px:
            self.crops = None
        else:
            self.crops += other.crops

    @property
    def bbox_area(self) -> int:
        return (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])


class StreamingVectorizer:
    """Feed row strips top to bottom with :meth:`feed`, then call :meth:`finish`; both return detections."""

    def __init__(self, width: int, *, score_floor: float = 0.0, min_pixels: int = 1, instance_h: float = 2.0,
                 max_separate_px: int = 1 << 20, grow_px: float = 0.0, grow_factor: float = 1.0,
                 ignore: tuple[int, ...] = ()) -> None:
        self.width = width
        self.grow_factor = grow_factor
        self.ignore = np.asarray(ignore, dtype="uint8")
        self.score_floor = score_floor
        self.min_pixels = min_pixels
        self.instance_h = instance_h
        self.max_separate_px = max_separate_px
        self.grow_px = grow_px
        self._groups: dict[int, _Group] = {}
        self._next_id = 1
        self._next_row = 0
        self._last_ids = np.zeros(width, dtype="int64")  # open group ids along the previous strip's last row
        self._last_cls = np.zeros(width, dtype="uint8")

    def feed(self, row0: int, scores: np.ndarray, valid: np.ndarray) -> Detections:
        """Add strip rows [row0, row0 + h) of (classes, h, w) uint8 ``scores``; returns closed detections."""
        if row0 != self._next_row:
            raise ValueError(f"strips must be contiguous: expected row {self._next_row}, got {row0}")
        if scores.shape[-1] != self.width:
            raise ValueError(f"strip width {scores.shape[-1]} != {self.width}")
        height = scores.shape[1]
        self._next_row = row0 + height
        classes, best = classes_and_best(scores, valid)
        if len(self.ignore):
            classes[np.isin(classes, self.ignore)] = 0
        local, count = label(classes, background=0, connectivity=1, return_num=True)
        offset = self._next_id - 1
        self._next_id += count
        self._add_groups(row0, local, count, offset, classes, best)
        parent: dict[int, int] = {}

        def find(node: int) -> int:
            root = node
            while parent.get(root, root) != root:
                root = parent[root]
            parent[node] = root
            return root

        first = local[0].astype("int64")
        touching = (self._last_ids > 0) & (first > 0) & (self._last_cls == classes[0])
        for above, below in np.unique(np.stack([self._last_ids[touching], first[touching] + offset]), axis=1).T:
            root_a, root_b = find(int(above)), find(int(below))
            if root_a != root_b:
                parent[root_b] = root_a
                self._groups[root_a].absorb(self._groups.pop(root_b), self.max_separate_px)
        last = local[-1].astype("int64")
        last_ids = np.where(last > 0, last + offset, 0)
        unique_ids = np.unique(last_ids[last_ids > 0])
        roots = {int(i): find(int(i)) for i in unique_ids}
        self._last_ids = np.zeros(self.width, dtype="int64")
        for gid, root in roots.items():
            self._last_ids[last_ids == gid] = root
        self._last_cls = classes[-1].copy()
        still_open = set(roots.values())
        closed = [gid for gid in self._groups if gid not in still_open]
        return Detections.concat([self._finalize(self._groups.pop(gid)) for gid in closed])

    def finish(self) -> Detections:
        """Close every component still open (call after the last strip)."""
        out = Detections.concat([self._finalize(group) for group in self._groups.values()])
        self._groups.clear()
        self._last_ids[:] = 0
        return out

    def _add_groups(self, row0: int, local: np.ndarray, count: int, offset: int, classes: np.ndarray,
                    best: np.ndarray) -> None:
        if count == 0:
            return
        flat = local.ravel()
        pixels = np.bincount(flat, minlength=count + 1)
        totals = np.bincount(flat, weights=best.ravel(), minlength=count + 1)
        slices = ndimage.find_objects(local)
        separate = self.instance_h > 0
        transform = Affine.translation(0, row0)
        for geom, value in shapes(local.astype("int32"), mask=local > 0, connectivity=4, transform=transform):
            k = int(value)
            rows, cols = slices[k - 1]
            bbox = [row0 + rows.start, cols.start, row0 + rows.stop, cols.stop]
            mask = local[rows, cols] == k  # per component on its box: cheaper than ndimage's sort by label
            values = np.where(mask, best[rows, cols], 0).astype("uint8")
            crops = None
            if separate and (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) <= self.max_separate_px:
                crops = [(bbox[0], bbox[1], mask, values)]
            cls = int(classes[rows, cols][mask][0])
            self._groups[k + offset] = _Group(cls, [shapely.geometry.shape(geom)], int(pixels[k]),
                                              float(totals[k]), int(values.max()), bbox, crops)

    def _finalize(self, group: _Group) -> Detections:
        if group.pixels < self.min_pixels or group.total / group.pixels / 255.0 < self.score_floor:
            return Detections()
        if group.crops is not None and group.pixels >= 2 * self.min_pixels:
            split = self._separate(group)
            if split is not None:
                return split
        geometry = group.pieces[0]
        if len(group.pieces) > 1:  # exact in integer pixel coordinates; drop the collinear seam vertices
            geometry = shapely.simplify(shapely.union_all(group.pieces), 0)
        return Detections(np.array([self._grow(geometry)], dtype=object), np.array([group.cls], "int32"),
                          np.array([group.total / group.pixels / 255.0]), np.array([group.peak / 255.0]),
                          np.array([group.pixels], "int64"))

    def _grow(self, geometry: shapely.Geometry) -> shapely.Geometry:
        if self.grow_factor != 1.0:
            centre = shapely.get_coordinates(shapely.centroid(geometry))[0]
            geometry = shapely.transform(geometry, lambda xy: centre + self.grow_factor * (xy - centre))
        if self.grow_px:
            geometry = shapely.buffer(geometry, self.grow_px, join_style="mitre")
        return geometry

    def _separate(self, group: _Group) -> Detections | None:
        """Split a closed component at the necks of its distance map; None when it is one object."""
        assert group.crops is not None
        r0, c0, r1, c1 = group.bbox
        mask = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=bool)  # one pixel of background around
        scores = np.zeros(mask.shape, dtype="uint8")
        for row, col, piece, values in group.crops:
            sl = np.s_[row - r0 + 1:row - r0 + 1 + piece.shape[0], col - c0 + 1:col - c0 + 1 + piece.shape[1]]
            mask[sl] |= piece
            scores[sl] = np.where(piece, values, scores[sl])
        distance = ndimage.distance_transform_edt(mask)
        seeds, count = label(h_maxima(distance, self.instance_h) & mask, connectivity=2, return_num=True)
        if count < 2:
            return None
        instances = watershed(-distance, seeds, mask=mask)
        flat = instances.ravel()
        pixels = np.bincount(flat, minlength=count + 1)
        totals = np.bincount(flat, weights=scores.ravel(), minlength=count + 1)
        peaks = ndimage.maximum(scores, instances, index=np.arange(1, count + 1))
        transform = Affine.translation(c0 - 1, r0 - 1)
        geoms, keep = [], []
        for geom, value in shapes(instances.astype("int32"), mask=instances > 0, connectivity=4,
                                  transform=transform):
            geoms.append(self._grow(shapely.geometry.shape(geom)))
            keep.append(int(value))
        ids = np.asarray(keep)
        # an instance cut into diagonal-only parts yields several polygons: each keeps its instance's scores
        result = Detections(np.array(geoms, dtype=object), np.full(len(ids), group.cls, "int32"),
                            totals[ids] / np.maximum(pixels[ids], 1) / 255.0, np.asarray(peaks)[ids - 1] / 255.0,
                            pixels[ids].astype("int64"))
        return result.select((result.pixels >= self.min_pixels) & (result.score >= self.score_floor))


def vectorize_array(scores: np.ndarray, valid: np.ndarray, strip_rows: int | None = None,
                    **options: float) -> Detections:
    """Vectorize a whole (classes, h, w) uint8 scores array, in one pass or in strips of ``strip_rows``."""
    height = scores.shape[1]
    step = strip_rows or height
    vectorizer = StreamingVectorizer(scores.shape[2], **options)  # type: ignore[arg-type]
    parts = [vectorizer.feed(row, scores[:, row:row + step], valid[row:row + step])
             for row in range(0, height, step)]
    parts.append(vectorizer.finish())
    return Detections.concat(parts)
