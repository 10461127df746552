"""Spatial splits: disjointness (the leakage check), guard bands, hold-out regions, stratification, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from aifactory.catalog.splits import ChipSet, SplitConfig, assign_splits, find_leaks, stratify
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.plan import plan_dataset
from aifactory.io.synthetic import SceneSpec, generate_scene


def grid_chips(n: int = 12, size: float = 10.0, stride: float = 8.0, classes: int = 2, seed: int = 0) -> ChipSet:
    """n × n overlapping square chips on one plane, with random class counts."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(n) * stride, np.arange(n) * stride)
    boxes = shapely.box(xs.ravel(), ys.ravel(), xs.ravel() + size, ys.ravel() + size)
    return ChipSet(source=np.zeros(n * n, int), group=np.array(["g"] * (n * n), dtype=object),
                   footprint=np.asarray(boxes, dtype=object), counts=rng.poisson(0.7, (n * n, classes)),
                   pixel_size=np.ones(n * n))


def test_leakage_check_finds_overlaps_across_splits():
    chips = grid_chips()
    random_splits = np.array(["train", "val"] * (len(chips) // 2), dtype=object)
    assert find_leaks(chips, random_splits)  # overlapping chips put in different splits: caught
    assert find_leaks(chips, np.array(["train"] * len(chips), dtype=object)) == []


@pytest.mark.parametrize("guard", [0, 3])
def test_blocks_are_disjoint_and_respect_the_guard(guard):
    chips = grid_chips()
    splits = assign_splits(chips, SplitConfig(block_tiles=2, guard=guard, seed=1), {"g": 20.0})
    kept = splits != None  # noqa: E711
    assert set(splits[kept]) == {"train", "val", "test"}
    assert find_leaks(chips, splits, min_distance=guard) == []
    dist = min(shapely.distance(chips.footprint[i], chips.footprint[j]) for i in np.flatnonzero(kept)
               for j in np.flatnonzero(kept) if splits[i] != splits[j])
    assert dist >= guard
    assert find_leaks(chips, splits, min_distance=dist + 0.5)  # the check measures what it claims


def test_splits_reproducible_from_seed():
    chips = grid_chips(seed=5)
    one = assign_splits(chips, SplitConfig(block_tiles=2, seed=7), {"g": 20.0})
    two = assign_splits(chips, SplitConfig(block_tiles=2, seed=7), {"g": 20.0})
    other = assign_splits(chips, SplitConfig(block_tiles=2, seed=8), {"g": 20.0})
    assert (one == two).all() and not (one == other).all()


def test_stratification_spreads_a_rare_class():
    counts = np.zeros((40, 2), int)
    counts[:, 0] = 5
    counts[::8, 1] = 1  # five units hold the rare class
    result = stratify(counts, {"train": 0.6, "val": 0.2, "test": 0.2}, np.random.default_rng(0))
    rare = result[counts[:, 1] > 0]
    assert set(rare) == {"train", "val", "test"}
    assert (result == "train").sum() == pytest.approx(24, abs=2)


def test_holdout_region_goes_to_test_only():
    chips = grid_chips()
    region = shapely.box(30, 30, 60, 60)
    splits = assign_splits(chips, SplitConfig(block_tiles=2, guard=2), {"g": 20.0}, {0: region})
    touching = shapely.intersects(chips.footprint, region)
    assert (splits[touching] == "test").all()
    near = shapely.dwithin(chips.footprint, region, 0.0)
    assert not np.isin(splits[near], ["train", "val"]).any()
    assert find_leaks(chips, splits, min_distance=2) == []


def test_image_method_keeps_overlapping_images_together():
    left = grid_chips(n=4)
    right = grid_chips(n=4)
    shifted = np.asarray(shapely.transform(right.footprint, lambda xy: xy + np.array([20.0, 0.0])), dtype=object)
    far = np.asarray(shapely.transform(right.footprint, lambda xy: xy + np.array([500.0, 0.0])), dtype=object)
    chips = ChipSet(source=np.repeat([0, 1, 2], 16), group=np.array(["g"] * 48, dtype=object),
                    footprint=np.concatenate([left.footprint, shifted, far]),
                    counts=np.ones((48, 2), int), pixel_size=np.ones(48))
    splits = assign_splits(chips, SplitConfig(method="image", fractions={"train": 0.5, "test": 0.5}),
                           {"g": 20.0})
    assert len(set(splits[:32])) == 1  # sources 0 and 1 overlap on the ground: one unit
    assert set(splits[32:]) == {splits[40]} and splits[40] != splits[0]


def test_plan_with_holdout_on_a_real_scene(tmp_path):
    raster, truth = tmp_path / "s.tif", tmp_path / "t.gpkg"
    generate_scene(SceneSpec(width=768, height=768, seed=2, density=2), raster, truth)
    region = "POLYGON ((500000 5000000, 500120 5000000, 500120 4999880, 500000 4999880, 500000 5000000))"
    config = DatasetConfig.model_validate({
        "sources": [{"raster": str(raster), "labels": str(truth)}], "chips": {"size": 64, "overlap": 16},
        "split": {"guard": 8, "block_tiles": 3, "holdout": [{"wkt": region, "crs": "EPSG:32631"}]}})
    plan = plan_dataset(config)
    footprints = np.array([shapely.from_wkt(shapely.to_wkt(f)) for f in plan.chips["footprint"]], dtype=object)
    inside = shapely.intersects(footprints, shapely.from_wkt(region))
    assert inside.any() and (plan.chips["split"][inside] == "test").all()
    counts = plan.chip_counts()
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def test_image_method_keeps_images_closer_than_the_guard_together():
    """Two tiles of a mosaic 2 units apart: with a guard of 3 they are one unit, so no split boundary runs
    between them (before, only overlapping images were joined and neighbours could land in two splits)."""
    left, right = grid_chips(n=4), grid_chips(n=4)
    near = np.asarray(shapely.transform(right.footprint, lambda xy: xy + np.array([36.0, 0.0])), dtype=object)
    far = np.asarray(shapely.transform(right.footprint, lambda xy: xy + np.array([500.0, 0.0])), dtype=object)
    chips = ChipSet(source=np.repeat([0, 1, 2], 16), group=np.array(["g"] * 48, dtype=object),
                    footprint=np.concatenate([left.footprint, near, far]),
                    counts=np.ones((48, 2), int), pixel_size=np.ones(48))
    for seed in range(6):
        config = SplitConfig(method="image", guard=3, seed=seed, fractions={"train": 0.5, "test": 0.5})
        splits = assign_splits(chips, config, {"g": 20.0})
        assert len(set(splits[:32])) == 1
        assert find_leaks(chips, splits, min_distance=3) == []


def test_leak_check_uses_the_larger_guard_of_a_pair():
    """Two sources of one CRS with different pixel sizes: the pair is a leak when closer than either guard."""
    chips = ChipSet(source=np.array([0, 1]), group=np.array(["g", "g"], dtype=object),
                    footprint=np.array([shapely.box(0, 0, 10, 10), shapely.box(13, 0, 23, 10)], dtype=object),
                    counts=np.ones((2, 1), int), pixel_size=np.array([1.0, 5.0]))
    splits = np.array(["train", "val"], dtype=object)
    assert find_leaks(chips, splits, min_distance=np.array([1.0, 5.0])) == [(0, 1)]
    assert find_leaks(chips, splits, min_distance=np.array([5.0, 1.0])) == [(0, 1)]


def test_holdout_with_a_crs_on_a_pixel_space_source_is_refused(tmp_path):
    """A hold-out in map coordinates cannot apply to a pixel-space image: refused, not silently skipped
    (its area would otherwise reach train)."""
    import geopandas as gpd
    from aifactory.errors import ConfigError
    from aifactory.io.vector import write_vector
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype="uint8")).save(tmp_path / "d.png")
    boxes = gpd.GeoDataFrame({"class": ["car"] * 2},
                             geometry=[shapely.box(10, 10, 30, 30), shapely.box(80, 80, 99, 99)])
    write_vector(boxes, tmp_path / "d.gpkg", layer="boxes")
    region = {"wkt": "POLYGON ((500000 5000000, 500100 5000000, 500100 4999900, 500000 5000000))", "crs": "EPSG:32631"}
    for holdout in ({**region, "source": "d"}, region):
        config = DatasetConfig.model_validate({
            "sources": [{"raster": str(tmp_path / "d.png"), "labels": str(tmp_path / "d.gpkg")}],
            "chips": {"size": 32}, "split": {"holdout": [holdout]}})
        with pytest.raises(ConfigError, match=r"split.holdout\[0\].*pixel"):
            plan_dataset(config)
    pixel = {"wkt": "POLYGON ((0 0, 40 0, 40 40, 0 40, 0 0))", "source": "d"}  # pixel coordinates: applied
    config = DatasetConfig.model_validate({
        "sources": [{"raster": str(tmp_path / "d.png"), "labels": str(tmp_path / "d.gpkg")}],
        "chips": {"size": 32}, "split": {"holdout": [pixel]}})
    plan = plan_dataset(config)
    held = shapely.intersects(np.array(list(plan.chips["footprint"]), dtype=object), shapely.from_wkt(pixel["wkt"]))
    assert held.any() and (plan.chips["split"][held] == "test").all()
