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
