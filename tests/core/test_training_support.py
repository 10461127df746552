"""Tiny real datasets for the training tests and benchmarks (no tests here).

A synthetic scene (real CRS, 5 bands, buildings / trees / cars with distinct spectra) goes through the
project's own dataset builder (:func:`aifactory.datasets.export.build_dataset`) into the dataset folder
format, so training reads exactly what a user's ``aifactory dataset build`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.export import build_dataset
from aifactory.io.synthetic import SceneSpec, generate_scene


def make_dataset(folder: Path, size: int = 384, chip: int = 64, bands: int = 5, seed: int = 0,
                 density: float = 5.0, min_size: float = 10.0, max_size: float = 30.0) -> Path:
    """Build ``folder/dataset`` from a ``size``² scene cut into ``chip``² chips (train/val/test blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    raster, truth = folder / "scene.tif", folder / "truth.gpkg"
    generate_scene(SceneSpec(width=size, height=size, bands=bands, seed=seed, density=density,
                             min_size=min_size, max_size=max_size, blocksize=256), raster, truth)
    config = DatasetConfig.model_validate({
        "sources": [{"raster": str(raster), "labels": str(truth), "layer": "truth"}],
        "chips": {"size": chip, "overlap": 0, "negative_ratio": 1.0},
        "split": {"block_tiles": 1, "fractions": {"train": 0.7, "val": 0.3, "test": 0.0}, "seed": seed},
    })
    out = folder / "dataset"
    build_dataset(config, out)
    return out


def config_data(dataset: Path, **overrides: Any) -> dict[str, Any]:
    """A small CPU training config for ``dataset``; ``overrides`` replace top-level keys."""
    data: dict[str, Any] = {
        "dataset": str(dataset),
        "model": {"architecture": "unet",
                  "params": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]}},
        "epochs": 2, "batch_size": 4, "num_workers": 0, "checkpoint_every": 2, "log_every": 1,
        "optimizer": {"lr": 0.003}, "tracking": {"enabled": False},
    }
    data.update(overrides)
    return data


def write_config(path: Path, dataset: Path, **overrides: Any) -> Path:
    """:func:`config_data` written as YAML to ``path``."""
    path.write_text(yaml.safe_dump(config_data(dataset, **overrides)))
    return path
