"""Tiny real inputs for the active-learning tests (no tests here): a synthetic scene with a held-out strip,
a trained run from the project's own trainer, and an annotator who copies the truth inside tagged tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from aifactory.io.synthetic import SceneSpec, generate_scene
from aifactory.io.vector import read_vector, write_vector
from aifactory.training import TrainConfig, train

SPEC = SceneSpec(width=320, height=256, bands=4, seed=11, density=5.0, min_size=10, max_size=30, blocksize=256,
                 classes=("building",))
TILE = 64
TRAIN: dict[str, Any] = {
    "model": {"architecture": "unet", "params": {"encoder": "resnet18", "encoder_depth": 3,
                                                 "decoder_channels": [16, 8, 8]}},
    "epochs": 100, "max_steps": 2, "batch_size": 4, "num_workers": 0, "optimizer": {"lr": 0.003},
    "checkpoint_every": 1000, "keep_checkpoints": 1, "tracking": {"enabled": False},
}


def make_scene(folder: Path) -> tuple[Path, Path, Path]:
    """``scene.tif`` (EPSG:32631, 0.5 m), ``truth.gpkg`` and ``test.gpkg`` (the bottom tile row, held out)."""
    folder.mkdir(parents=True, exist_ok=True)
    raster, truth = folder / "scene.tif", folder / "truth.gpkg"
    generate_scene(SPEC, raster, truth)
    x0, y0 = SPEC.origin
    bottom, width = y0 - SPEC.height * SPEC.gsd, SPEC.width * SPEC.gsd
    # a hair below the tile row's top edge: chips touching a hold-out region count as inside it
    strip = shapely.box(x0, bottom, x0 + width, bottom + TILE * SPEC.gsd - 0.25)
    test = write_vector(gpd.GeoDataFrame({"name": ["test"]}, geometry=[strip], crs=SPEC.crs), folder / "test.gpkg",
                        layer="test")
    return raster, truth, test


def train_run(folder: Path, raster: Path, truth: Path) -> Path:
    """A U-Net trained for two steps on the scene (what al select needs: model.json + model.pt)."""
    from aifactory.datasets.config import DatasetConfig
    from aifactory.datasets.export import build_dataset

    config = DatasetConfig.model_validate({
        "sources": [{"raster": str(raster), "labels": str(truth), "layer": "truth"}],
        "chips": {"size": TILE, "negative_ratio": 1.0},
        "split": {"fractions": {"train": 1.0, "val": 0.0, "test": 0.0}},
    })
    build_dataset(config, folder / "dataset")
    return train(TrainConfig.model_validate({**TRAIN, "dataset": str(folder / "dataset")}), folder / "run",
                 device="cpu")


def annotate(tiles_path: Path, truth: Path, annotations: Path, skip: int = 0) -> int:
    """Play the annotator: copy the truth objects touching the tiles into ``annotations`` and mark the tiles
    tagged (the first ``skip`` ones skipped, as the Tagging dock's S key does); returns the objects drawn."""
    tiles = read_vector(tiles_path, layer="tiles")
    objects = read_vector(truth, layer="truth")
    tagged = tiles.iloc[skip:]
    drawn = objects[objects.intersects(tagged.union_all())][["class", "geometry"]]
    if annotations.is_file():
        drawn = gpd.GeoDataFrame(pd.concat([read_vector(annotations), drawn], ignore_index=True), crs=objects.crs)
    write_vector(drawn, annotations, layer="annotations")
    tiles["status"] = ["skipped"] * skip + ["tagged"] * (len(tiles) - skip)
    write_vector(tiles, tiles_path, layer="tiles")
    return len(drawn)
