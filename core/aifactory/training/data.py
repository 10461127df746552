"""Data feeding for training: resumable batch order, per-sample augmentation seeds, task collation.

Exact resume without data-loader state: :class:`EpochBatches` derives an epoch's batch order from
``(seed, epoch)`` and can start at any batch, and each sample's augmentation draws from a generator
seeded with ``(seed, epoch, index)`` (the sampler passes ``(index, epoch)`` keys to the dataset). Worker
count and prefetching therefore never change what a step sees. The loaders own their torch generators,
so creating an iterator never advances the global RNG that dropout and RoI sampling use.

A chip that cannot be read travels inside its batch as ``{"error": InputError}`` and :func:`checked` raises
it in the main process: raised inside a loader worker it would reach the main process re-made from the
worker's traceback text, many lines instead of the one naming the chip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aifactory.datasets.torch_dataset import ChipDataset
from aifactory.errors import AIFactoryError
from aifactory.models.heatmap import encode_targets
from aifactory.training.augment import Augmenter
from aifactory.training.targets import boundary_and_contact, instance_map, instance_masks

Sample = dict[str, Any]
Batch = dict[str, Any]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, epoch)`` keys; the order depends only on seed and epoch."""

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle = shuffle
        # a last partial batch only when the split is smaller than one batch (batch norm needs > 1 sample)
        self.drop_last = drop_last and size > batch_size
        self.epoch, self.start = 0, 0

    def batches(self, epoch: int) -> list[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(self.size)
        chunks = [order[i:i + self.batch_size].tolist() for i in range(0, self.size, self.batch_size)]
        if self.drop_last and chunks and len(chunks[-1]) < self.batch_size:
            chunks.pop()
        return chunks

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its batch number ``start`` on."""
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches(self.epoch)[self.start:]:
            yield [(index, self.epoch) for index in batch]

    def __len__(self) -> int:
        return max(0, len(self.batches(self.epoch)) - self.start)


class TrainingSamples(Dataset[Sample]):
    """Chips of one split with band selection and seeded augmentation, addressed by ``(index, epoch)``."""

    def __init__(self, chips: ChipDataset, bands: list[int], augmenter: Augmenter | None, seed: int) -> None:
        self.chips, self.bands, self.augmenter, self.seed = chips, bands, augmenter, seed

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        index, epoch = key
        try:
            sample = self.chips[index]
        except AIFactoryError as exc:
            return {"error": exc}
        if self.bands != list(range(sample["image"].shape[0])):
            sample["image"] = sample["image"][self.bands]
        if self.augmenter is not None:
            sample = self.augmenter(sample, np.random.default_rng([self.seed, epoch, index]))
        return sample


class Collate:
    """Stacks samples and adds the targets of the task family (runs in the loader workers)."""

    def __init__(self, family: str, num_classes: int, stride: int = 1) -> None:
        self.family, self.num_classes, self.stride = family, num_classes, stride

    def __call__(self, samples: list[Sample]) -> Batch:
        errors = [s["error"] for s in samples if "error" in s]
        if errors:
            return {"error": errors[0]}
        batch: Batch = {
            "image": torch.stack([s["image"] for s in samples]),
            "mask": torch.stack([s["mask"] for s in samples]),
            "boxes": [s["boxes"] for s in samples],
            "labels": [s["labels"] for s in samples],
        }
        if self.family == "heatmap":
            batch["targets"] = encode_targets(batch["boxes"], batch["labels"], self.num_classes,
                                              tuple(batch["image"].shape[-2:]), self.stride)
        elif self.family in ("instance", "contact"):
            ids = [instance_map(s["mask"], s["boxes"], s["labels"]) for s in samples]
            if self.family == "instance":
                batch["instance_masks"] = [instance_masks(i, len(s["boxes"])) for i, s in zip(ids, samples,
                                                                                               strict=True)]
            else:
                maps = [boundary_and_contact(i) for i in ids]
                batch["boundary"] = torch.stack([m[0] for m in maps])
                batch["contact"] = torch.stack([m[1] for m in maps])
        return batch


def make_loader(samples: TrainingSamples, batches: EpochBatches, collate: Collate, num_workers: int,
                seed: int, pin_memory: bool) -> DataLoader[Sample]:
    return DataLoader(samples, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory,
                      prefetch_factor=4 if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def checked(loader: DataLoader[Sample]) -> Iterator[Batch]:
    """The loader's batches; a chip error carried by a batch is raised here, as its one line."""
    for batch in loader:
        if "error" in batch:
            raise batch["error"]
        yield batch


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """Move every tensor (also inside lists and dicts) to ``device``."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    moved: Batch = {k: move(v) for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved
