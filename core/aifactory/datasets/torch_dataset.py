"""Torch datasets over the on-disk dataset format (see :mod:`aifactory.datasets.format`).

A chip that is missing or damaged is an :class:`~aifactory.errors.InputError` naming the chip file, both in
:meth:`ChipDataset.check_files` (run before a training starts: file sizes only, a few milliseconds for
thousands of chips) and when the chip is read (what only a read can find).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from torch.utils.data import Dataset

from aifactory.datasets.format import DatasetMeta, read_chips, read_meta
from aifactory.errors import InputError

Sample = dict[str, Any]


def read_chip(path: Path, band: int | None = None) -> np.ndarray:
    """All bands of a chip (or one band), or a one-line InputError naming the chip that is missing or damaged."""
    try:
        with rasterio.open(path) as ds:
            return ds.read() if band is None else ds.read(band)
    except RasterioError:
        problem = "chip is truncated or corrupt" if path.is_file() else "chip is missing"
        raise InputError(f"{path}: {problem}") from None


def uncompressed(root: Path) -> bool:
    """Whether the builder's manifest says the chips were written uncompressed (so their size is known)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return bool(manifest["config"]["chips"]["compress"] == "none")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def make_sample(image: np.ndarray, mask: np.ndarray, boxes: list[list[float]], chip_id: str) -> Sample:
    """The sample dict every dataset of this package yields (see :class:`ChipDataset`).

    ``image`` is already normalised; ``boxes`` rows are [x0, y0, x1, y1, class index].
    """
    box_array = np.asarray([b[:4] for b in boxes], dtype="float32").reshape(-1, 4)
    labels = np.asarray([b[4] for b in boxes], dtype="int64")
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype="float32")),
        "mask": torch.from_numpy(mask.astype("int64")),
        "boxes": torch.from_numpy(box_array),
        "labels": torch.from_numpy(labels),
        "chip_id": str(chip_id),
    }


class ChipDataset(Dataset[Sample]):
    """Exported chips of one split.

    Each sample is a dict: ``image`` float32 (C, H, W) normalised with the dataset statistics,
    ``mask`` int64 (H, W) with the ignore index where unlabelled, ``boxes`` float32 (N, 4) as
    x0, y0, x1, y1 in chip pixels, ``labels`` int64 (N), ``chip_id`` str. ``transform`` (if any)
    receives and returns the sample dict (augmentations act on image, mask and boxes together).
    """

    def __init__(self, dataset_dir: str | Path, split: str, transform: Callable[[Sample], Sample] | None = None):
        self.root = Path(dataset_dir)
        self.meta: DatasetMeta = read_meta(self.root)
        self.table = read_chips(self.root, split)
        self.split = split
        self.transform = transform
        self._mean = np.asarray(self.meta.normalization.mean, dtype="float32")[:, None, None]
        self._std = np.asarray(self.meta.normalization.std, dtype="float32")[:, None, None]

    def __len__(self) -> int:
        return len(self.table)

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The chip's image in source units and its mask, as numpy arrays."""
        row = self.table.iloc[index]
        return read_chip(self.root / row["image"]), read_chip(self.root / row["mask"], 1)

    def check_files(self) -> None:
        """Every chip file exists and, for uncompressed chips, holds at least its pixels' bytes.

        Only ``stat`` calls (opening each chip through GDAL costs about 1 ms, seconds for a few thousand):
        a damage that keeps the size is found when the chip is read.
        """
        known = uncompressed(self.root)
        pixel_bytes = {"image": self.meta.bands * np.dtype(self.meta.dtype).itemsize, "mask": 1}
        for row in self.table.itertuples(index=False):
            for column, per_pixel in pixel_bytes.items():
                path = self.root / getattr(row, column)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    raise InputError(f"{path}: chip is missing") from None
                if size == 0 or (known and size < row.width * row.height * per_pixel):
                    raise InputError(f"{path}: chip is truncated or corrupt")

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return (image.astype("float32") - self._mean) / self._std

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.read_raw(index)
        row = self.table.iloc[index]
        sample = make_sample(self.normalize(image), mask, row["boxes"], row["chip_id"])
        if self.transform is not None:
            sample = self.transform(sample)
        return sample
