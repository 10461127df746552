"""The tagging loop: tags ingested as a dataset whose labelled extent is the tagged tiles, and ``al round``
waiting for tags, retraining, evaluating, recording rounds.jsonl and selecting the next tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from aifactory.active.options import SelectOptions
from aifactory.active.rounds import WaitingForTags, load_round_config, run_round
from aifactory.active.select import read_tiles, select_tiles, write_tiles
from aifactory.active.tags import ingest_tags, tagged_tiles
from aifactory.datasets.config import ChipConfig
from aifactory.datasets.export import build_dataset
from aifactory.datasets.format import IGNORE_INDEX, read_chips
from aifactory.errors import ConfigError, InputError
from aifactory.io.vector import read_vector
from rasterio.features import rasterize
from test_active_support import TILE, TRAIN, annotate, make_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("al-rounds")
    return (folder, *make_scene(folder))


def test_tags_become_a_dataset_labelled_only_inside_the_tagged_tiles(scene, tmp_path):
    _, raster, truth, _ = scene
    tiles_path = write_tiles(select_tiles(None, [raster], 4, SelectOptions(strategy="random", seed=1),
                                          tile_size=TILE), tmp_path / "tiles.gpkg")
    annotations = tmp_path / "annotations.gpkg"
    annotate(tiles_path, truth, annotations, skip=1)
    tiles = tagged_tiles([tiles_path])
    assert len(tiles) == 3 and set(tiles["status"]) == {"tagged"}
    # chips twice the tile size: most of each chip lies outside the tagged tiles
    ingested = ingest_tags(tiles, annotations, tmp_path / "tags", layer="annotations",
                           chips=ChipConfig(size=2 * TILE))
    assert ingested.tiles == 3 and ingested.annotations > 0
    snapshot = read_vector(tmp_path / "tags" / "labels_0.gpkg")
    assert snapshot.intersects(tiles.union_all()).all()
    build_dataset(ingested.config, tmp_path / "dataset")
    chips = read_chips(tmp_path / "dataset")
    assert set(chips["split"]) == {"train"}
    objects = read_vector(truth, layer="truth")
    skipped = read_tiles(tiles_path).query("status == 'skipped'").union_all()
    checked = 0
    for chip in chips.itertuples():
        with rasterio.open(tmp_path / "dataset" / chip.mask) as ds:
            mask, transform = ds.read(1), ds.transform
        inside = rasterize([tiles.union_all()], out_shape=mask.shape, transform=transform) > 0
        assert (mask[~inside] == IGNORE_INDEX).all()                   # nobody looked there
        truth_px = rasterize([(g, 1) for g in objects.geometry], out_shape=mask.shape, transform=transform)
        assert np.mean(mask[inside] == truth_px[inside]) > 0.99          # tagged: objects 1, background 0
        assert not (rasterize([skipped], out_shape=mask.shape, transform=transform) > 0)[mask != IGNORE_INDEX].any()
        checked += int(inside.sum())
    assert checked == 3 * TILE * TILE                                    # every tagged pixel is in a chip once
    with pytest.raises(InputError, match="no tile is marked tagged"):
        ingest_tags(tiles.iloc[:0], annotations, tmp_path / "none")


def write_round_config(folder, **overrides):
    config = {"rasters": ["scene.tif"], "annotations": {"path": "annotations.gpkg", "layer": "annotations"},
              "n": 3, "tile_size": TILE, "select": {"strategy": "entropy"}, "classes": {"names": ["building"]},
              "train": TRAIN, "evaluate": {"raster": "scene.tif", "truth": "truth.gpkg", "layer": "truth",
                                           "aoi": "test.gpkg"}}
    config.update(overrides)
    path = folder / "al.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_round_waits_for_tags_then_retrains_evaluates_records_and_selects(scene, cli):
    folder, _, truth, test = scene
    config = write_round_config(folder)
    first = run_round(config, device="cpu")                         # no model yet: a random first round
    assert first.round == 1 and first.record is None
    tiles = read_tiles(first.tiles)
    assert len(tiles) == 3 and set(tiles["strategy"]) == {"random"}
    assert not tiles.intersects(read_vector(test).union_all().buffer(-1)).any()   # the test strip is held out
    result = cli("al", "round", str(config), "--events", "none")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"aifactory: error: round 1 is waiting for tags: 3 of 3 tiles in {first.tiles} "
                                     "are still to_tag; tag or skip them (QGIS Tagging dock), then run al round again")
    annotate(first.tiles, truth, folder / "annotations.gpkg", skip=1)
    second = run_round(config, device="cpu")
    record = second.record
    assert second.round == 2 and record["round"] == 1 and record["labelled_tiles"] == 2
    assert set(record["metrics"]) == {"pixel_f1", "pixel_iou", "object_f1", "object_precision", "object_recall"}
    assert all(0.0 <= v <= 1.0 for v in record["metrics"].values())
    assert (folder / "round-1" / "run" / "model.pt").is_file() and (folder / "rounds.png").is_file()
    lines = (folder / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1]
    picked = read_tiles(second.tiles)
    assert set(picked["strategy"]) == {"entropy"} and set(picked["round"]) == {2}
    assert not set(picked["tile_id"]) & set(tiles["tile_id"])      # skipped tiles are not offered again either
    with pytest.raises(WaitingForTags):
        run_round(config, device="cpu")


def test_round_config_errors_name_the_key(scene, tmp_path):
    raster = str(scene[1])
    with pytest.raises(ConfigError, match=r"train\.dataset: the dataset is built by each round"):
        load_round_config(write_round_config(tmp_path, train={**TRAIN, "dataset": "x"}))
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_round_config(write_round_config(tmp_path, train={**TRAIN, "max_steps": 0}))
    without_aoi = {"raster": raster, "truth": "truth.gpkg"}
    with pytest.raises(ConfigError, match=r"evaluate\.aoi: required when the evaluation raster is also tagged"):
        load_round_config(write_round_config(tmp_path, rasters=[raster], evaluate=without_aoi))


def test_the_example_round_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "resources" / "examples" / "al_round.yaml"
    config, train = load_round_config(example)
    assert config.select.strategy == "bald" and config.select.diversity == "kcenter" and train.max_steps == 400
    assert config.workdir == example.parent and config.rasters[0].is_absolute()
