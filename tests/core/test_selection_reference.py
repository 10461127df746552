"""Catalog selections checked against a reference computed with pandas/shapely on the truth layer itself.

The truth gets class paths of 1 to 4 levels; a context layer (rectangles in map coordinates) gives cloud per
area and the images give per-image values, so every filter has a plain-Python answer to compare with.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
import yaml
from aifactory.catalog.build import build_catalog
from aifactory.catalog.hierarchy import cut, is_under
from aifactory.catalog.selection import Selection
from aifactory.catalog.store import open_catalog
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import write_vector

DEEP = {"building": ("building", "building/house", "building/industrial/warehouse/big"),
        "vegetation/tree": ("vegetation/tree", "vegetation/tree/oak"),
        "vehicle/car": ("vehicle/car", "vehicle/car/sedan", "vehicle/car/sedan/red")}
#: a cloudy rectangle over the north-west of the scene (origin 500000, 5000000; 0.5 m pixels, 384 px)
CLOUDY = shapely.box(500_000, 4_999_904, 500_096, 5_000_000)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref")
    truth = generate_scene(SceneSpec(width=384, height=384, seed=11, density=3), folder / "a.tif")
    rng = np.random.default_rng(0)
    truth["class"] = [DEEP[c][rng.integers(len(DEEP[c]))] for c in truth["class"]]
    write_vector(truth, folder / "truth.gpkg", layer="truth")
    write_vector(gpd.GeoDataFrame({"cloud": [70.0]}, geometry=[CLOUDY], crs=truth.crs), folder / "clouds.gpkg",
                 layer="clouds")
    config = {"images": [{"path": "a.tif", "context": {"cloud": 10, "fog": 0}}],
              "labels": [{"path": "truth.gpkg", "layer": "truth"}],
              "context_layers": [{"path": "clouds.gpkg"}], "context": {"compute": []}}
    (folder / "catalog.yaml").write_text(yaml.safe_dump(config))
    build_catalog(folder / "catalog.yaml", folder / "catalog.gpkg")
    centroids = shapely.centroid(truth.geometry.array)
    truth["cloud"] = np.where(shapely.within(centroids, CLOUDY), 70.0, 10.0)
    truth["fog"] = 0.0
    truth["snow"] = np.nan  # never given: unknown, so no range passes
    return folder / "catalog.gpkg", truth


def context_kept(values: dict[str, np.ndarray], selection: Selection) -> np.ndarray:
    """Which objects the selection's context ranges keep, given each field's values (NaN: unknown, never kept)."""
    keep = np.ones(len(next(iter(values.values()))), dtype=bool)
    for field, (low, high) in selection.context.items():
        ok = ~np.isnan(values[field])
        if low is not None:
            ok &= values[field] >= low
        if high is not None:
            ok &= values[field] <= high
        keep &= ok
    return keep


def expected_counts(truth, selection: Selection) -> dict[str, int]:
    keep = np.ones(len(truth), dtype=bool)
    if selection.classes:
        keep &= [any(is_under(p, q) for q in selection.classes) for p in truth["class"]]
    if selection.exclude_classes:
        keep &= [not any(is_under(p, q) for q in selection.exclude_classes) for p in truth["class"]]
    if selection.context:
        keep &= context_kept({f: truth[f].to_numpy(dtype="float64") for f in selection.context}, selection)
    chosen = truth[keep]
    return {k: int(v) for k, v in chosen.groupby([cut(p, selection.level) for p in chosen["class"]]).size().items()}


def _counts(catalog, selection):
    frame = catalog.counts(selection)
    return dict(zip(frame["class"], frame["objects"].astype(int), strict=True))


def test_excluding_a_deep_class_keeps_shallower_ones(reference):
    path, truth = reference
    with open_catalog(path) as catalog:
        for excluded in ("vehicle/car/sedan", "building/industrial/warehouse/big", "vegetation/tree/oak"):
            selection = Selection(exclude_classes=[excluded])
            got = _counts(catalog, selection)
            assert got == expected_counts(truth, selection)
            assert "building" in got  # a level-1-only class is not under a deeper excluded path


def test_random_selections_match_the_reference(reference):
    path, truth = reference
    paths = sorted({cut(p, level) for p in truth["class"] for level in range(1, 5)})
    rng = np.random.default_rng(3)
    with open_catalog(path) as catalog:
        for _ in range(60):
            kwargs: dict = {"level": [None, 1, 2, 3, 4][rng.integers(5)]}
            if rng.random() < 0.6:
                kwargs["classes"] = list(rng.choice(paths, rng.integers(1, 3), replace=False))
            if rng.random() < 0.5:
                kwargs["exclude_classes"] = list(rng.choice(paths, 1))
            context = {}
            for field in ("cloud", "fog", "snow"):
                if rng.random() < 0.4:  # boundaries on the stored values themselves: both ends inclusive
                    low, high = sorted(rng.choice([0.0, 10.0, 50.0, 70.0, 100.0], 2))
                    context[field] = (None if rng.random() < 0.3 else low, None if rng.random() < 0.3 else high)
            selection = Selection(**kwargs, context=context)
            assert _counts(catalog, selection) == expected_counts(truth, selection), selection
