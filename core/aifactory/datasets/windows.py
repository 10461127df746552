"""A torch dataset that reads chips straight from the source rasters: no export, same samples.

Useful to train on a huge or fast-changing catalog without writing chips: the plan (sources, windows,
splits) is computed once, and each sample is rendered on demand by the same code the exporter uses
(:func:`aifactory.datasets.render.render_chip`). Normalisation statistics, unless given, are computed by
one streamed pass over the train windows. Raster handles are opened lazily per process, so the dataset
works with ``DataLoader(num_workers > 0)``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from aifactory.datasets.config import load_dataset_config
from aifactory.datasets.export import RunningStats
from aifactory.datasets.format import Normalization
from aifactory.datasets.plan import DatasetPlan, chip_window, plan_dataset
from aifactory.datasets.render import render_chip
from aifactory.datasets.torch_dataset import Sample, make_sample
from aifactory.io.raster import open_raster, read_valid_mask, read_window
from aifactory.progress import reporter


def train_normalization(plan: DatasetPlan) -> Normalization:
    """Per-band statistics of the train windows' valid pixels (one streamed pass)."""
    stats = RunningStats(len(plan.bands))
    for source in plan.sources:
        chips = plan.chips[(plan.chips["source"] == source.index) & (plan.chips["split"] == "train")]
        if chips.empty:
            continue
        with open_raster(source.path) as ds:
            for chip in reporter().track(list(chips.itertuples(index=False)), task="statistics"):
                window = chip_window(chip)
                stats.update(read_window(ds, window, plan.bands), read_valid_mask(ds, window))
    return stats.normalization()


class WindowDataset(Dataset[Sample]):
    """Chips of one split rendered from the sources on demand (the sample dict of ``ChipDataset``)."""

    def __init__(self, plan: DatasetPlan, split: str, normalization: Normalization | None = None,
                 transform: Callable[[Sample], Sample] | None = None) -> None:
        self.plan = plan
        self.split = split
        self.table = plan.split_chips(split)
        self.normalization = normalization or train_normalization(plan)
        self.transform = transform
        self._mean = np.asarray(self.normalization.mean, dtype="float32")[:, None, None]
        self._std = np.asarray(self.normalization.std, dtype="float32")[:, None, None]
        self._handles: dict[int, Any] = {}
        self._stack = contextlib.ExitStack()
        self._pid = os.getpid()

    @classmethod
    def from_config(cls, path: str | Path, split: str, **kwargs: Any) -> WindowDataset:
        return cls(plan_dataset(load_dataset_config(path)), split, **kwargs)

    def __len__(self) -> int:
        return len(self.table)

    def _dataset(self, source: int) -> Any:
        if os.getpid() != self._pid:  # a DataLoader worker: never share GDAL handles across processes
            self._handles, self._stack, self._pid = {}, contextlib.ExitStack(), os.getpid()
        if source not in self._handles:
            self._handles[source] = self._stack.enter_context(open_raster(self.plan.sources[source].path))
        return self._handles[source]

    def __getitem__(self, index: int) -> Sample:
        chip = self.table.iloc[index]
        source = self.plan.sources[int(chip["source"])]
        config = self.plan.config.chips
        image, mask, _, boxes = render_chip(self._dataset(source.index), source.label_index(), chip_window(chip),
                                            self.plan.bands, config.label_mode, config.core_factor,
                                            self.plan.contact_index)
        sample = make_sample((image.astype("float32") - self._mean) / self._std, mask, boxes, chip["chip_id"])
        return self.transform(sample) if self.transform is not None else sample

    def close(self) -> None:
        self._stack.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_stack"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stack = contextlib.ExitStack()
