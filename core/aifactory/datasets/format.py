"""The on-disk dataset format shared by dataset building, training, evaluation and active learning.

A dataset is a folder::

    dataset.json     DatasetMeta: classes (index 0 = background), bands, tile size, GSD, normalisation
    chips.csv        one row per chip (CHIP_COLUMNS): split, files, source raster, window, footprint, boxes
    images/ID.tif    (bands, H, W) in the source dtype, georeferenced like the source (pixel space if none)
    masks/ID.tif     (H, W) uint8 class index; IGNORE_INDEX where unlabelled or nodata
    manifest.json    hashes of sources and chips, the config, counts (written by the builder)

Chips are plain GeoTIFFs so that a person can open any of them in QGIS; the table is CSV so that it
diffs and loads without GDAL. Boxes are stored per chip in chip pixel coordinates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from aifactory.config import StrictModel, read_versioned_json
from aifactory.errors import InputError

FORMAT_VERSION = 1
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")
CHIP_COLUMNS = (
    "chip_id", "split", "image", "mask", "source", "source_crs", "col_off", "row_off", "width", "height",
    "footprint_wkt", "n_objects", "boxes",
)


class Normalization(StrictModel):
    """Per-band statistics in the source units: the model sees (x - mean) / std."""

    mean: list[float]
    std: list[float]


class DatasetMeta(StrictModel):
    """Contents of ``dataset.json``."""

    version: int = FORMAT_VERSION
    task: Literal["segmentation", "detection", "instance"] = "segmentation"
    classes: list[str] = Field(description="class names; index 0 is the background")
    class_level: int | None = Field(None, ge=1, le=4, description="hierarchy level the classes were cut at")
    bands: int = Field(gt=0)
    band_names: list[str] = Field(default_factory=list)
    dtype: str
    tile_size: int = Field(gt=0)
    gsd: float | None = None
    ignore_index: int = IGNORE_INDEX
    normalization: Normalization
    splits: dict[str, int] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_meta(dataset_dir: str | Path) -> DatasetMeta:
    return read_versioned_json(Path(dataset_dir) / "dataset.json", DatasetMeta, FORMAT_VERSION,
                               "not a dataset folder")


def read_chips(dataset_dir: str | Path, split: str | None = None) -> pd.DataFrame:
    """The chips table, optionally restricted to one split; ``boxes`` parsed to lists."""
    path = Path(dataset_dir) / "chips.csv"
    if not path.is_file():
        raise InputError(f"{dataset_dir}: not a dataset folder (no chips.csv)")
    table = pd.read_csv(path, dtype={"chip_id": str, "split": str}, keep_default_na=False)
    missing = [c for c in CHIP_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    table["boxes"] = [json.loads(b) if b else [] for b in table["boxes"]]
    if split is not None:
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        table = table[table["split"] == split].reset_index(drop=True)
    return table


def write_chips(table: pd.DataFrame, path: str | Path) -> None:
    """Write the chips table (``boxes`` serialised as JSON) — callers wrap the folder write atomically."""
    out = table.loc[:, list(CHIP_COLUMNS)].copy()
    out["boxes"] = [json.dumps(b) for b in out["boxes"]]
    out.to_csv(path, index=False)
