"""Hand-made detections for the post-processing tests (schema of DESIGN.md, real CRS or pixel space).

No tests here: the helpers live in a test_postprocess* module so that they sit with the tests they serve.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import shapely

SCHEMA = ["class", "score", "model_run", "tile_id", "area", "review", "reviewed_class"]
UTM = "EPSG:32631"
ORIGIN = (500_000.0, 5_000_000.0)


def detections(geoms: Sequence[shapely.Geometry], classes: Sequence[str] | str = "building",
               scores: Sequence[float] | None = None, crs: str | None = UTM, shift: bool = True) -> gpd.GeoDataFrame:
    """A detections frame; with a CRS the shapes are moved to UTM coordinates (``shift``)."""
    n = len(geoms)
    geoms = np.asarray(geoms, dtype=object)
    if crs is not None and shift:
        geoms = shapely.transform(geoms, lambda xy: xy + np.array(ORIGIN))
    classes = [classes] * n if isinstance(classes, str) else list(classes)
    frame = gpd.GeoDataFrame({
        "class": classes,
        "score": np.linspace(0.9, 0.5, n) if scores is None else np.asarray(scores, dtype="float64"),
        "model_run": ["run-1"] * n,
        "tile_id": [f"t{i}" for i in range(n)],
        "area": np.zeros(n),
        "review": ["unreviewed"] * n,
        "reviewed_class": [None] * n,
    }, geometry=list(geoms), crs=crs)
    frame["area"] = shapely.area(geoms)
    return frame


def local(frame: gpd.GeoDataFrame) -> np.ndarray:
    """The frame's geometries moved back to the hand-made coordinates."""
    geoms = np.asarray(frame.geometry.array, dtype=object)
    if frame.crs is None:
        return geoms
    return shapely.transform(geoms, lambda xy: xy - np.array(ORIGIN))


def noisy_rectangle(width: float, height: float, angle: float, center: tuple[float, float], noise: float,
                    seed: int = 0, step: float = 0.5) -> shapely.Polygon:
    """A rotated rectangle outline sampled every ``step`` with Gaussian jitter (a segmentation-like outline)."""
    rng = np.random.default_rng(seed)
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height), (0, 0)], float)
    points = []
    for a, b in itertools.pairwise(corners):
        t = np.arange(0, 1, step / np.hypot(*(b - a)))
        points.append(a + t[:, None] * (b - a))
    xy = np.concatenate(points) - [width / 2, height / 2]
    xy += rng.normal(0, noise, xy.shape)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return shapely.Polygon(xy @ np.array([[c, s], [-s, c]]) + center)


def corner_angles(polygon: shapely.Polygon) -> np.ndarray:
    """Interior turning angles (degrees) at every vertex of the shell."""
    xy = np.asarray(polygon.exterior.coords)[:-1]
    u = xy - np.roll(xy, 1, axis=0)
    v = np.roll(xy, -1, axis=0) - xy
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    return np.degrees(np.abs(np.arctan2(cross, (u * v).sum(axis=1))))
