"""Model library: the architecture and brick registries, model cards, loading trained models.

``ARCHITECTURES`` entries are called as ``func(params, in_channels, num_classes) -> torch.nn.Module``;
``num_classes`` always counts the dataset's classes *including* the background at index 0, so that a
class index means the same thing in masks, boxes, heatmap channels and ``model.json``. Nothing is ever
downloaded: encoders and backbones start from random weights (``encoder_weights=None``,
``weights=None, weights_backbone=None``); a local state_dict can be loaded with :func:`load_weights`.

OUTPUT CONTRACT per task family (``ModelCard.task``; ``task_of(name)`` for a registered architecture).
Inputs are always float32 ``(N, in_channels, H, W)`` normalised with the card's statistics, H and W
multiples of 32 (the dataset tile size).

``segmentation``
    A tensor of logits ``(N, num_classes, H, W)``; softmax over dim 1 gives class probabilities.
``heatmap`` (CenterNet-style dense detector, :mod:`aifactory.models.heatmap`)
    A dict of tensors on a grid of stride ``s = params.stride`` (1 or 2), ``h = H // s``, ``w = W // s``:
    ``"heatmap"`` logits ``(N, num_classes, h, w)`` — sigmoid gives the probability that an object of
    class c has its box centre in that cell; channel 0 (background) is trained towards 0 and must be
    ignored. ``"size"`` ``(N, 2, h, w)``: box width then height in *input pixels* (> 0), read at a peak.
    ``"offset"`` ``(N, 2, h, w)``: sub-cell position of the centre in [0, 1) of a cell, x then y. A peak
    at cell (row i, column j) is the box centred at ``((j + offset_x) * s, (i + offset_y) * s)`` input
    pixels (pixel (0, 0) covers [0, 1) × [0, 1)). :func:`aifactory.models.heatmap.decode_heatmap` turns
    this into the detection dicts below.
``detection`` (torchvision Faster R-CNN, RetinaNet, FCOS, SSDlite)
    Eval mode: ``list[dict]`` per image with ``"boxes"`` float ``(K, 4)`` x0, y0, x1, y1 in input pixels,
    ``"labels"`` int64 ``(K,)`` class indices (≥ 1), ``"scores"`` float ``(K,)`` in [0, 1]. Train mode:
    ``model(images, targets)`` returns a dict of losses. Images are never resized (the GSD is fixed);
    normalisation happens before the model (the internal transform is identity mean/std).
``instance`` (Mask R-CNN)
    As ``detection`` plus ``"masks"`` float ``(K, 1, H, W)``: per-instance probabilities in input pixels.
``contact`` (boundary/contact head for touching objects, :mod:`aifactory.models.contact`)
    A dict: ``"semantic"`` logits ``(N, num_classes, H, W)`` (as segmentation), ``"boundary"`` logits
    ``(N, 1, H, W)`` (object outline), ``"contact"`` logits ``(N, 1, H, W)`` (pixels where two objects
    touch). Instances are the connected components of ``semantic`` foreground minus ``contact`` (and
    boundary), grown back into the removed pixels (watershed).

``BRICKS`` are building blocks an architecture accepts in its ``bricks`` parameter (attention on the
skip connections, the bottleneck or the decoder output; ASPP; attention gates; residual skip paths).
A brick entry is called as ``func(params, model, where)`` and modifies the model in place; one that does
not fit the architecture raises a one-line :class:`~aifactory.errors.ConfigError`.

Third parties register through the ``aifactory.architectures`` and ``aifactory.bricks`` entry-point
groups. Importing this package does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.registry import Registry

ARCHITECTURES: Registry[Callable[..., Any]] = Registry(
    "architecture", "aifactory.architectures",
    builtin_modules=("aifactory.models.segmentation", "aifactory.models.detection", "aifactory.models.heatmap",
                     "aifactory.models.contact"))

BRICKS: Registry[Callable[..., Any]] = Registry("brick", "aifactory.bricks",
                                                builtin_modules=("aifactory.models.bricks",))

#: Task families an architecture may declare (``TASK`` class attribute of its parameter model).
TASKS = ("segmentation", "heatmap", "detection", "instance", "contact")
#: Families whose models are torchvision detectors: image lists in, per-image box dicts out (see above).
TORCHVISION_FAMILIES = ("detection", "instance")


def task_of(architecture: str, where: str = "") -> str:
    """The task family of a registered architecture (``segmentation`` unless its params say otherwise)."""
    entry = ARCHITECTURES.get(architecture, where)
    return str(getattr(entry.params, "TASK", "segmentation"))


def min_tile(architecture: str) -> int:
    """The smallest input side the architecture accepts (deep encoders collapse small inputs)."""
    return int(getattr(ARCHITECTURES.get(architecture).params, "MIN_TILE", 32))
