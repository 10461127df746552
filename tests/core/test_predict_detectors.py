"""``predict`` with box detectors end to end: a CenterNet trained here (cached in pytest's cache folder)
finds the scene's objects as boxes, its boxes do not depend on how tile rows are cut into parts (what
``--workers`` relies on), and a torchvision detector goes through the same path and schema."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from aifactory.evaluation import evaluate_objects
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.prediction import predict
from aifactory.prediction.fanout import PartDone, predict_part
from aifactory.prediction.rows import PredictSpec, open_prediction, predict_rows
from aifactory.prediction.source import ReadStats
from aifactory.training.config import TrainConfig
from aifactory.training.loop import train
from test_training_support import config_data, make_dataset

RECIPE = "centernet-d3-v1"
COLUMNS = ["class", "score", "score_max", "model_run", "tile_id", "area", "review", "reviewed_class", "geometry"]


def train_run(folder: Path, architecture: str, params: dict, steps: int) -> Path:
    dataset = make_dataset(folder, size=512, chip=128, bands=4, density=1.5, min_size=12, max_size=30)
    config = TrainConfig.model_validate(config_data(
        dataset, model={"architecture": architecture, "params": params}, epochs=1000, max_steps=steps,
        batch_size=4, checkpoint_every=1000, log_every=50))
    return train(config, folder / "run", device="cpu")


@pytest.fixture(scope="session")
def centernet_run(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CenterNet trained for 80 steps on a synthetic scene (trained on first use, then cached)."""
    folder = pytestconfig.cache.mkdir(f"aifactory-predict-{RECIPE}") if pytestconfig.cache else \
        tmp_path_factory.mktemp("centernet")
    run = folder / "run"
    if not (run / "model.json").exists():
        train_run(folder, "centernet", {"encoder_depth": 3, "head_channels": 16, "stride": 2}, steps=80)
    return run


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, gpd.GeoDataFrame]:
    folder = tmp_path_factory.mktemp("detector-scene")
    truth = generate_scene(SceneSpec(width=400, height=300, bands=4, seed=9, density=1.5, min_size=12,
                                     max_size=30), folder / "scene.tif", folder / "truth.gpkg")
    return folder / "scene.tif", truth


def test_centernet_finds_the_objects_as_boxes(centernet_run, scene, tmp_path):
    raster, truth = scene
    result = predict([centernet_run], raster, tmp_path / "out", score_floor=0.1)
    detections = gpd.read_file(result.detections, layer="detections")
    assert list(detections.columns) == COLUMNS and len(detections) == result.detections_count > 5
    boxes = detections.geometry.array
    np.testing.assert_allclose(shapely.area(boxes), shapely.area(shapely.envelope(boxes)))  # axis-aligned boxes
    assert detections["score"].between(0.1, 1).all()
    assert set(detections["class"]) <= {"building", "vegetation/tree", "vehicle/car"}
    summary = json.loads(result.summary.read_text())
    assert summary["task"] == "heatmap" and "centred" in summary["scores_meaning"]
    found = evaluate_objects(detections.assign(**{"class": "object"}), truth.assign(**{"class": "object"}),
                             iou=0.3).overall
    assert found["recall"] >= 0.6 and found["precision"] >= 0.4, found  # measured: R 0.76, P 0.54 (17 objects)


def test_detector_boxes_do_not_depend_on_how_tile_rows_are_split(centernet_run, scene):
    raster, _ = scene
    spec = PredictSpec((str(centernet_run),), str(raster), overlap=32, score_floor=0.3)
    with open_prediction(spec) as run:
        whole = list(predict_rows(run, ReadStats()))
    parts = [item for rows in (range(0, 1), range(1, 3), range(3, len(whole)))
             for item in predict_part(spec, rows) if not isinstance(item, PartDone)]
    assert len(whole) == len(parts) >= 3
    assert sum(len(found) for r in whole for _, found in r.boxes) > 5
    for single, part in zip(whole, parts, strict=True):
        assert [t for t, _ in part.boxes] == [t for t, _ in single.boxes]
        for (_, a), (_, b) in zip(single.boxes, part.boxes, strict=True):
            np.testing.assert_array_equal(b.boxes, a.boxes)
            np.testing.assert_array_equal(b.scores, a.scores)
            np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_array_equal(part.values, single.values)


def test_a_torchvision_detector_predicts_through_the_same_path(tmp_path, scene):
    raster, _ = scene
    run = train_run(tmp_path, "faster_rcnn", {"representation_size": 64, "proposals": 50, "roi_samples": 32,
                                              "detections_per_image": 20}, steps=2)
    result = predict([run], raster, tmp_path / "out", score_floor=0.0)
    detections = gpd.read_file(result.detections, layer="detections")
    assert list(detections.columns) == COLUMNS and len(detections) == result.detections_count
    summary = json.loads(result.summary.read_text())
    assert summary["task"] == "detection" and summary["scores_meaning"].startswith("box-score coverage")
    assert summary["tiles_predicted"] == summary["tiles_total"]
