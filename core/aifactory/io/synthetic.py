"""Deterministic synthetic scenes: a raster of any size, bands and dtype with known objects + vector truth.

Used by tests (small scenes with a real CRS) and benchmarks (up to 20k × 20k). Objects are generated
first (their count scales with the area, cheap even at 20k²), then the raster is written strip by strip:
each strip gets a smooth background from a coarse global field, per-pixel noise seeded by the strip
index (so the result does not depend on how it is cut), and the objects intersecting it burned in.
Peak memory is one strip plus the object table, whatever the raster size.

A georeferenced scene is placed by default at (500 000, 5 000 000) of UTM zone 31N (southern France),
expressed in the scene's CRS (so longitude 3°, latitude 45.15° in EPSG:4326), or at the centre of the CRS's
area of use when that place is outside it; a scene that does not fit in the area of use is refused, since
its coordinates would mean nothing (a "longitude" of 500 000°).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy.ndimage import map_coordinates

from aifactory.config import parse_crs
from aifactory.errors import ConfigError
from aifactory.io.cog import COGWriter
from aifactory.io.vector import write_vector
from aifactory.progress import reporter

#: Per-class reflectance multipliers for (blue, green, red, nir, …): buildings bright everywhere,
#: trees dark in red and bright in NIR, vehicles dark. Extra bands repeat the last value.
CLASS_SIGNATURES: dict[str, tuple[float, ...]] = {
    "building": (0.85, 0.85, 0.9, 0.6),
    "vegetation/tree": (0.2, 0.45, 0.15, 0.9),
    "vehicle/car": (0.1, 0.1, 0.12, 0.15),
}

#: Where a scene goes unless told: this point of this CRS, expressed in the scene's own CRS.
DEFAULT_PLACE: tuple[str, tuple[float, float]] = ("EPSG:32631", (500_000.0, 5_000_000.0))


@dataclass
class SceneSpec:
    """What to generate. Sizes in pixels; ``density`` is objects per 100 × 100 px."""

    width: int = 1024
    height: int = 1024
    bands: int = 4
    dtype: str = "uint16"
    crs: str | None = "EPSG:32631"
    origin: tuple[float, float] | None = None  # top-left corner in the CRS; default: see the module docstring
    gsd: float = 0.5
    classes: tuple[str, ...] = ("building", "vegetation/tree", "vehicle/car")
    density: float = 0.8
    min_size: float = 8.0
    max_size: float = 40.0
    nodata: float | None = 0
    nodata_corner: float = 0.0
    seed: int = 0
    blocksize: int = 512
    cog: bool = True
    noise: float = 0.04
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.crs is not None:
            self.origin = place_scene(self, parse_crs(self.crs, "crs"))

    @property
    def transform(self) -> Affine:
        if self.crs is None or self.origin is None:
            return Affine.identity()
        return Affine(self.gsd, 0, self.origin[0], 0, -self.gsd, self.origin[1])

    @property
    def value_range(self) -> tuple[float, float]:
        kind = np.dtype(self.dtype).kind
        if kind == "f":
            return 0.0, 1.0
        if np.dtype(self.dtype) == np.uint8:
            return 1.0, 255.0
        return 1.0, 10_000.0  # reflectance-like range of 16-bit satellite products


def _area_of_use(crs: ProjCRS) -> tuple[float, float, float, float] | None:
    """The CRS's area of use in its own coordinates (xmin, ymin, xmax, ymax); None when PROJ has none or it
    crosses the antimeridian."""
    if crs.area_of_use is None:
        return None
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xmin, ymin, xmax, ymax = to_crs.transform_bounds(*crs.area_of_use.bounds, densify_pts=21)
    return (xmin, ymin, xmax, ymax) if np.all(np.isfinite([xmin, ymin, xmax, ymax])) and xmin < xmax else None


def _default_origin(crs: ProjCRS, bounds: tuple[float, float, float, float] | None,
                    gsd: float) -> tuple[float, float]:
    """:data:`DEFAULT_PLACE` in ``crs`` (else the centre of its area of use), on a multiple of the GSD."""
    place_crs, place = DEFAULT_PLACE
    x, y = Transformer.from_crs(place_crs, crs, always_xy=True).transform(*place)
    if bounds is not None and not (bounds[0] <= x <= bounds[2] and bounds[1] <= y <= bounds[3]):
        x, y = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    return round(x / gsd) * gsd, round(y / gsd) * gsd


def place_scene(spec: SceneSpec, crs: ProjCRS) -> tuple[float, float]:
    """The scene's origin (the given one, or the default), refused when the scene leaves the CRS's area of use."""
    bounds = _area_of_use(crs)
    x0, y0 = spec.origin or _default_origin(crs, bounds, spec.gsd)
    x1, y1 = x0 + spec.width * spec.gsd, y0 - spec.height * spec.gsd
    if bounds is not None and not (bounds[0] <= x0 and x1 <= bounds[2] and bounds[1] <= y1 and y0 <= bounds[3]):
        raise ConfigError(f"the scene from ({x0:.10g}, {y0:.10g}) to ({x1:.10g}, {y1:.10g}) leaves the area of use "
                          f"of {spec.crs} ({', '.join(f'{b:.10g}' for b in bounds)}); give a smaller GSD or size, "
                          "or another origin")
    return x0, y0


def generate_objects(spec: SceneSpec) -> gpd.GeoDataFrame:
    """Rotated rectangles (buildings, cars) and ellipses (trees) in pixel space, never overlapping much."""
    rng = np.random.default_rng(spec.seed)
    count = int(spec.width * spec.height / 10_000 * spec.density)
    cx = rng.uniform(spec.max_size, max(spec.max_size + 1, spec.width - spec.max_size), count)
    cy = rng.uniform(spec.max_size, max(spec.max_size + 1, spec.height - spec.max_size), count)
    class_index = rng.integers(0, len(spec.classes), count)
    size = rng.uniform(spec.min_size, spec.max_size, count)
    aspect = rng.uniform(0.4, 1.0, count)
    angle = rng.uniform(0, 180, count)
    geoms = []
    for i in range(count):
        name = spec.classes[class_index[i]]
        scale = 0.35 if name.startswith("vehicle") else 1.0
        w, h = size[i] * scale, size[i] * aspect[i] * scale
        if name.startswith("vegetation"):
            shape = shapely.affinity.scale(shapely.Point(0, 0).buffer(0.5, 16), w, w * max(aspect[i], 0.8))
        else:
            shape = shapely.box(-w / 2, -h / 2, w / 2, h / 2)
        shape = shapely.affinity.rotate(shape, angle[i], origin=(0, 0))
        geoms.append(shapely.affinity.translate(shape, cx[i], cy[i]))
    frame = gpd.GeoDataFrame({"class": [spec.classes[i] for i in class_index]}, geometry=geoms)
    # drop objects overlapping an earlier one so that the truth is unambiguous
    tree = shapely.STRtree(frame.geometry.array)
    left, right = tree.query(frame.geometry.array, predicate="intersects")
    clash = left[left > right]
    keep = np.ones(len(frame), dtype=bool)
    keep[np.unique(clash)] = False
    frame = frame.loc[keep].reset_index(drop=True)
    frame["object_id"] = np.arange(len(frame), dtype="int64")
    return frame


def _background(coarse: np.ndarray, window: Window) -> np.ndarray:
    """Smooth background (bands, h, w) in [0, 1] sampled from the coarse field."""
    step = 64.0
    yy = (np.arange(window.row_off, window.row_off + window.height, dtype="float32") + 0.5) / step - 0.5
    xx = (np.arange(window.col_off, window.col_off + window.width, dtype="float32") + 0.5) / step - 0.5
    grid_y, grid_x = np.meshgrid(yy, xx, indexing="ij")
    return np.stack([map_coordinates(coarse[b], [grid_y, grid_x], order=1, mode="nearest")
                     for b in range(coarse.shape[0])]).astype("float32")


def _nodata_mask(spec: SceneSpec, window: Window) -> np.ndarray | None:
    """Top-left triangle covering ``nodata_corner`` of the raster's area, or None."""
    if spec.nodata_corner <= 0:
        return None
    leg = np.sqrt(2 * spec.nodata_corner) * min(spec.width, spec.height)
    rr = np.arange(window.row_off, window.row_off + window.height)[:, None]
    cc = np.arange(window.col_off, window.col_off + window.width)[None, :]
    return (rr + cc) < leg


def _render_window(spec: SceneSpec, objects: gpd.GeoDataFrame, tree: shapely.STRtree, coarse: np.ndarray,
                   signatures: dict[str, np.ndarray], window: Window) -> np.ndarray:
    """Pixels of one window: background, burned objects, seeded noise, nodata corner."""
    rows, cols = int(window.height), int(window.width)
    image = _background(coarse, window)
    hits = tree.query(shapely.box(window.col_off, window.row_off, window.col_off + cols, window.row_off + rows))
    for name in spec.classes:
        shapes = [objects.geometry.array[i] for i in hits if objects["class"].iat[i] == name]
        if shapes:
            burned = rasterize(shapes, out_shape=(rows, cols), dtype="uint8",
                               transform=Affine.translation(window.col_off, window.row_off)) > 0
            image[:, burned] = signatures[name][:, None]
    noise_rng = np.random.default_rng([spec.seed, int(window.row_off), int(window.col_off)])
    image += noise_rng.standard_normal(image.shape, dtype="float32") * np.float32(spec.noise)
    np.clip(image, 0, 1, out=image)
    low, high = spec.value_range
    values = (low + image * (high - low)).astype(spec.dtype)
    corner = _nodata_mask(spec, window)
    if corner is not None and spec.nodata is not None:
        values[:, corner] = spec.nodata
    return values


def generate_scene(spec: SceneSpec, raster_path: str | Path, truth_path: str | Path | None = None) -> gpd.GeoDataFrame:
    """Write the raster (COG) and, if asked, the truth GeoPackage (layer ``truth``); returns the truth."""
    rng = np.random.default_rng(spec.seed + 1)
    objects = generate_objects(spec)
    coarse = rng.uniform(0.25, 0.55, (spec.bands, spec.height // 64 + 2, spec.width // 64 + 2)).astype("float32")
    signatures = {name: np.resize(np.array(CLASS_SIGNATURES.get(name, (0.7,) * 4), "float32"), spec.bands)
                  for name in spec.classes}
    tree = shapely.STRtree(objects.geometry.array)
    # windows of one block row × up to 4096 columns: bounded memory at any raster width
    chunk = max(spec.blocksize, 4096 // spec.blocksize * spec.blocksize)
    windows = [Window(col, row, min(chunk, spec.width - col), min(spec.blocksize, spec.height - row))
               for row in range(0, spec.height, spec.blocksize) for col in range(0, spec.width, chunk)]
    crs = CRS.from_user_input(spec.crs) if spec.crs else None
    with COGWriter(raster_path, spec.width, spec.height, spec.bands, spec.dtype, crs=crs,
                   transform=spec.transform, nodata=spec.nodata, blocksize=spec.blocksize,
                   cog=spec.cog) as writer:
        for window in reporter().track(windows, task="synthetic", message=f"{spec.width}x{spec.height}"):
            writer.write(_render_window(spec, objects, tree, coarse, signatures, window), window)
    truth = objects.copy()
    if spec.crs is not None:
        truth = truth.set_geometry(shapely.transform(truth.geometry.array,
                                                     lambda xy: np.column_stack(spec.transform * xy.T)))
        truth = truth.set_crs(spec.crs)
    if truth_path is not None:
        write_vector(truth, truth_path, layer="truth")
    return truth
