"""Augmentations acting on image, mask and boxes together, for any number of bands.

Written here rather than taken from torchvision.transforms.v2 or albumentations for two reasons: their
random draws come from global RNGs (exact resume needs every sample's augmentation to depend only on
``(seed, epoch, index)``, whichever worker draws it), and their photometric transforms assume 1 or 3
bands. The geometric part is exact and small: dihedral flips/rotations with ``torch.flip``/``torch.rot90``
and box arithmetic, zoom with ``torch.nn.functional.interpolate`` and a crop or pad. Images arrive
normalised, so padding with 0 is padding with the band mean; padded mask pixels are ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aifactory.training.config import AugmentConfig

Sample = dict[str, Any]


def hflip(sample: Sample) -> Sample:
    width = sample["image"].shape[-1]
    boxes = sample["boxes"].clone()
    boxes[:, [0, 2]] = width - sample["boxes"][:, [2, 0]]
    return {**sample, "image": sample["image"].flip(-1), "mask": sample["mask"].flip(-1), "boxes": boxes}


def vflip(sample: Sample) -> Sample:
    height = sample["image"].shape[-2]
    boxes = sample["boxes"].clone()
    boxes[:, [1, 3]] = height - sample["boxes"][:, [3, 1]]
    return {**sample, "image": sample["image"].flip(-2), "mask": sample["mask"].flip(-2), "boxes": boxes}


def rot90(sample: Sample, k: int) -> Sample:
    """Rotate ``k`` quarter turns (counter-clockwise as displayed, like ``torch.rot90``)."""
    for _ in range(k % 4):
        width = sample["image"].shape[-1]
        b = sample["boxes"]
        boxes = torch.stack([b[:, 1], width - b[:, 2], b[:, 3], width - b[:, 0]], dim=1)
        sample = {**sample, "image": torch.rot90(sample["image"], 1, (-2, -1)),
                  "mask": torch.rot90(sample["mask"], 1, (-2, -1)), "boxes": boxes}
    return sample


def zoom(sample: Sample, factor: float, rng: np.random.Generator, ignore_index: int) -> Sample:
    """Resize by ``factor`` and crop (zoom in) or pad (zoom out) back to the original size at a random place."""
    image, mask = sample["image"], sample["mask"]
    height, width = image.shape[-2:]
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    # "nearest" samples pixel corners, not centres: the mask came out half a pixel off the bilinear image
    mask = F.interpolate(mask[None, None].float(), size=(new_h, new_w), mode="nearest-exact")[0, 0].long()
    boxes = sample["boxes"] * torch.tensor([new_w / width, new_h / height] * 2)
    dy, dx = int(rng.integers(0, abs(new_h - height) + 1)), int(rng.integers(0, abs(new_w - width) + 1))
    if factor >= 1:
        image = image[:, dy:dy + height, dx:dx + width]
        mask = mask[dy:dy + height, dx:dx + width]
        boxes = boxes - torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)
    else:
        pad = (dx, width - new_w - dx, dy, height - new_h - dy)
        image = F.pad(image, pad, value=0.0)
        mask = F.pad(mask, pad, value=ignore_index)
        boxes = boxes + torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return {**sample, "image": image, "mask": mask, "boxes": boxes[keep], "labels": sample["labels"][keep]}


class Augmenter:
    """Applies an :class:`AugmentConfig` to a sample with a generator owned by that sample."""

    def __init__(self, config: AugmentConfig, ignore_index: int) -> None:
        self.config = config
        self.ignore_index = ignore_index

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cfg = self.config
        if rng.random() < cfg.hflip:
            sample = hflip(sample)
        if rng.random() < cfg.vflip:
            sample = vflip(sample)
        if rng.random() < cfg.rot90:
            sample = rot90(sample, int(rng.integers(1, 4)))
        if cfg.scale is not None and rng.random() < cfg.scale_prob:
            sample = zoom(sample, float(rng.uniform(*cfg.scale)), rng, self.ignore_index)
        if cfg.brightness > 0 or cfg.contrast > 0:
            bands = sample["image"].shape[0]
            gain = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, bands).astype("float32")
            offset = rng.uniform(-cfg.brightness, cfg.brightness, bands).astype("float32")
            image = sample["image"] * torch.from_numpy(gain)[:, None, None] + torch.from_numpy(offset)[:, None, None]
            sample = {**sample, "image": image}
        return sample
