"""One chip from a source raster: pixels, label mask (fill, core or boundary) and boxes.

Shared by the exporter and by :class:`~aifactory.datasets.windows.WindowDataset` (which skips the export
and renders windows on the fly), so both give the same samples.

Label modes:
- ``fill``: every object's pixels get its class (smaller objects drawn last, on top);
- ``core``: each object is shrunk around its centroid by ``core_factor`` before burning; the ring between
  core and outline is background, which separates touching objects (tree crowns);
- ``boundary``: ``fill`` plus a ``contact`` class where two different objects meet (pixels whose 3 × 3
  neighbourhood holds two object ids), which separates touching buildings.
Boxes (x0, y0, x1, y1, class index) are stored in every mode, in chip pixels, clipped to the chip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy.ndimage import maximum_filter, minimum_filter

from aifactory.datasets.format import IGNORE_INDEX
from aifactory.io.raster import differs_from_nodata, read_valid_mask, read_window, window_transform

CONTACT_CLASS = "contact"


@dataclass
class LabelIndex:
    """A source's objects (map coordinates, class index 1..N) behind an R-tree, plus its labelled extent."""

    geoms: np.ndarray
    labels: np.ndarray
    extent: shapely.Geometry | None = None

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.geoms)

    def hits(self, footprint: shapely.Geometry) -> np.ndarray:
        """Indices of objects overlapping ``footprint`` with positive area."""
        index = self.tree.query(footprint, predicate="intersects")
        if len(index) == 0:
            return index
        return index[shapely.area(shapely.intersection(self.geoms[index], footprint)) > 0]


def shrink(geoms: np.ndarray, factor: float) -> np.ndarray:
    """Each geometry scaled by ``factor`` around its own centroid (vectorised over coordinates)."""
    if factor == 1 or len(geoms) == 0:
        return geoms
    centres = shapely.get_coordinates(shapely.centroid(geoms))
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    scaled = centres[owner] + factor * (coords - centres[owner])
    return np.asarray(shapely.transform(geoms, lambda _: scaled))  # same coordinate order as get_coordinates


def contact_pixels(instances: np.ndarray) -> np.ndarray:
    """Pixels whose 3 × 3 neighbourhood contains two different non-zero instance ids."""
    big = np.iinfo(instances.dtype).max
    highest = maximum_filter(instances, size=3, mode="nearest")
    lowest = minimum_filter(np.where(instances == 0, big, instances), size=3, mode="nearest")
    return (lowest != big) & (highest != lowest)


def render_mask(geoms: np.ndarray, labels: np.ndarray, shape: tuple[int, int], transform: Affine, mode: str,
                core_factor: float, contact_index: int | None) -> np.ndarray:
    """The (h, w) uint8 class mask of objects (map coordinates) for one window."""
    mask = np.zeros(shape, dtype="uint8")
    if len(geoms) == 0:
        return mask
    order = np.argsort(-shapely.area(geoms), kind="stable")  # large first: small objects stay visible
    geoms, labels = geoms[order], labels[order]
    burned = shrink(geoms, core_factor) if mode == "core" else geoms
    rasterize(zip(burned, labels.tolist(), strict=True), out=mask, transform=transform)
    if mode == "boundary" and contact_index is not None:
        ids = rasterize(zip(geoms, range(1, len(geoms) + 1), strict=True), out_shape=shape, transform=transform,
                        dtype="int32")
        mask[contact_pixels(ids)] = contact_index
    return mask


def chip_boxes(geoms: np.ndarray, labels: np.ndarray, transform: Affine, size: tuple[int, int]) -> list[list[float]]:
    """[x0, y0, x1, y1, class] in chip pixels, clipped to the chip; boxes with no area inside are left out."""
    if len(geoms) == 0:
        return []
    inverse = ~transform
    pixel = shapely.transform(geoms, lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1])))
    bounds = shapely.bounds(pixel)
    height, width = size
    x0, x1 = np.clip(bounds[:, 0], 0, width), np.clip(bounds[:, 2], 0, width)
    y0, y1 = np.clip(bounds[:, 1], 0, height), np.clip(bounds[:, 3], 0, height)
    keep = (x1 > x0) & (y1 > y0)
    return [[round(float(a), 2), round(float(b), 2), round(float(c), 2), round(float(d), 2), int(k)]
            for a, b, c, d, k in zip(x0[keep], y0[keep], x1[keep], y1[keep], labels[keep], strict=True)]


def valid_pixels(ds: Any, window: Window, image: np.ndarray, bands: list[int] | None) -> np.ndarray:
    """:func:`~aifactory.io.raster.read_valid_mask`, computed from pixels already read when it can be.

    When every band's only mask is the nodata value and ``image`` holds every band, GDAL's dataset mask is
    "any band differs from nodata": computing that from ``image`` saves a second read of the window.
    """
    all_bands = bands is None or list(bands) == list(range(1, ds.count + 1))
    if all_bands and ds.nodata is not None and all(flags == [MaskFlags.nodata] for flags in ds.mask_flag_enums):
        return differs_from_nodata(image, ds.nodata)
    return read_valid_mask(ds, window)


def render_chip(ds: Any, index: LabelIndex, window: Window, bands: list[int] | None, mode: str = "fill",
                core_factor: float = 0.5, contact_index: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[float]]]:
    """Image (bands, h, w) in source units, mask (h, w), valid-pixel mask and boxes of one window."""
    image = read_window(ds, window, bands)
    valid = valid_pixels(ds, window, image, bands)
    shape = (int(window.height), int(window.width))
    transform = window_transform(ds.transform, window)
    footprint = window_footprint(ds.transform, window)
    hits = index.hits(footprint)
    geoms, labels = index.geoms[hits], index.labels[hits]
    mask = render_mask(geoms, labels, shape, transform, mode, core_factor, contact_index)
    if index.extent is not None:
        inside = rasterize([index.extent], out_shape=shape, transform=transform, dtype="uint8") > 0
        mask[~inside] = IGNORE_INDEX
    mask[~valid] = IGNORE_INDEX
    return image, mask, valid, chip_boxes(geoms, labels, transform, shape)


def window_footprint(transform: Affine, window: Window) -> shapely.Geometry:
    """A window's outline in map coordinates."""
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    xs, ys = transform * (np.array([c0, c1, c1, c0]), np.array([r0, r0, r1, r1]))
    return shapely.Polygon(np.column_stack([xs, ys]))
