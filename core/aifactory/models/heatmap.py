"""CenterNet-style dense detector for small objects in large scenes, and its target encoding/decoding.

Why a centre heatmap: vehicles, trees or small buildings are a few pixels wide and packed by the hundred
in a tile. Anchor detectors at stride 8–32 miss or merge them; a per-class centre heatmap at full or half
resolution (Zhou et al. 2019, "Objects as Points") keeps every object separable, needs no NMS beyond a
3×3 max-pool, and reuses the segmentation encoders and decoders (and bricks) of smp.

Output contract (see :mod:`aifactory.models`): ``{"heatmap": logits (N, C, h, w), "size": (N, 2, h, w)
box width, height in input pixels, "offset": (N, 2, h, w) in [0, 1) of a cell}`` with ``h = H // stride``.
:func:`encode_targets` and :func:`decode_heatmap` are the two sides of that contract: training encodes
boxes with the first, prediction decodes outputs with the second. Heatmap targets are elliptical
Gaussians with sigma = ``GAUSSIAN_ALPHA`` × box side / 6 (TTFNet, Liu et al. 2019), which follow
elongated objects better than CenterNet's round ones.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from aifactory.models import ARCHITECTURES
from aifactory.models.dense import DenseParams, MultiHeadModel, head

GAUSSIAN_ALPHA = 0.54
#: Prior probability of a centre at initialisation (CenterNet/RetinaNet bias init).
PRIOR = 0.1


class CenterNetParams(DenseParams):
    """CenterNet head on an smp body."""

    TASK: ClassVar[str] = "heatmap"
    stride: Literal[1, 2] = Field(default=2, description="output grid stride: 1 = full resolution, 2 = half")
    max_size: float = Field(default=2048.0, gt=1, description="largest box side the size head can output (pixels)")


class CenterNet(MultiHeadModel):
    """Per-class centre heatmap + box size + sub-cell offset heads."""

    def __init__(self, params: CenterNetParams, in_channels: int, num_classes: int) -> None:
        super().__init__(params, in_channels, params.stride)
        ch, hidden = self.decoder_out_channels, params.head_channels
        self.heatmap = head(ch, hidden, num_classes, bias=-math.log((1 - PRIOR) / PRIOR))
        self.size = head(ch, hidden, 2, bias=math.log(8.0))
        self.offset = head(ch, hidden, 2)
        self.log_max_size = math.log(params.max_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.body(x)
        log_size = self.size(y).clamp(-2.0, self.log_max_size)
        return {"heatmap": self.heatmap(y), "size": log_size.exp(), "offset": torch.sigmoid(self.offset(y))}


@ARCHITECTURES.register("centernet", CenterNetParams)
def centernet(params: CenterNetParams, in_channels: int, num_classes: int) -> nn.Module:
    """CenterNet-style detector (Zhou 2019): class centre heatmap + box size at full or 1/2 resolution."""
    return CenterNet(params, in_channels, num_classes)


def encode_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
                   image_size: tuple[int, int], stride: int) -> dict[str, torch.Tensor]:
    """Training targets for a batch: ``heatmap`` (N, C, h, w) in [0, 1], ``size`` and ``offset``
    (N, 2, h, w) and ``centers`` (N, h, w) bool where a box centre falls. Boxes are x0, y0, x1, y1 pixels."""
    n = len(boxes)
    h, w = image_size[0] // stride, image_size[1] // stride
    heatmap = torch.zeros(n, num_classes, h, w)
    size = torch.zeros(n, 2, h, w)
    offset = torch.zeros(n, 2, h, w)
    centers = torch.zeros(n, h, w, dtype=torch.bool)
    for b, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        # largest first, so that a small object sharing a cell with a large one keeps its size target
        areas = (image_boxes[:, 2] - image_boxes[:, 0]) * (image_boxes[:, 3] - image_boxes[:, 1])
        for k in torch.argsort(areas, descending=True).tolist():
            x0, y0, x1, y1 = image_boxes[k].tolist()
            bw, bh = x1 - x0, y1 - y0
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            j, i = min(int(cx), w - 1), min(int(cy), h - 1)
            sx = max(GAUSSIAN_ALPHA * bw / 6 / stride, 0.5)
            sy = max(GAUSSIAN_ALPHA * bh / 6 / stride, 0.5)
            r0, r1 = max(0, i - math.ceil(3 * sy)), min(h, i + math.ceil(3 * sy) + 1)
            c0, c1 = max(0, j - math.ceil(3 * sx)), min(w, j + math.ceil(3 * sx) + 1)
            rows = torch.arange(r0, r1, dtype=torch.float32)[:, None] - i
            cols = torch.arange(c0, c1, dtype=torch.float32)[None, :] - j
            gauss = torch.exp(-(cols**2) / (2 * sx**2) - rows**2 / (2 * sy**2))
            c = int(image_labels[k])
            heatmap[b, c, r0:r1, c0:c1] = torch.maximum(heatmap[b, c, r0:r1, c0:c1], gauss)
            size[b, :, i, j] = torch.tensor([bw, bh])
            offset[b, :, i, j] = torch.tensor([min(cx - j, 0.999), min(cy - i, 0.999)])
            centers[b, i, j] = True
    return {"heatmap": heatmap, "size": size, "offset": offset, "centers": centers}


def decode_heatmap(output: dict[str, torch.Tensor], stride: int, score_threshold: float = 0.05,
                   top_k: int = 300, kernel: int = 3) -> list[dict[str, torch.Tensor]]:
    """Peaks of the heatmap (local maxima over ``kernel``², score ≥ threshold, best ``top_k``) as
    detection dicts per image: ``boxes`` (K, 4) x0, y0, x1, y1 input pixels, ``labels`` (K,), ``scores``."""
    scores = torch.sigmoid(output["heatmap"].float())
    scores[:, 0] = 0.0  # background channel carries no objects
    peaks = scores == F.max_pool2d(scores, kernel, stride=1, padding=kernel // 2)
    scores = torch.where(peaks, scores, torch.zeros_like(scores))
    n, _, h, w = scores.shape
    results = []
    for b in range(n):
        flat = scores[b].reshape(-1)
        values, index = flat.topk(min(top_k, flat.numel()))
        keep = values >= score_threshold
        values, index = values[keep], index[keep]
        labels, cell = index // (h * w), index % (h * w)
        i, j = cell // w, cell % w
        cx = (j.float() + output["offset"][b, 0, i, j].float()) * stride
        cy = (i.float() + output["offset"][b, 1, i, j].float()) * stride
        bw, bh = output["size"][b, 0, i, j].float(), output["size"][b, 1, i, j].float()
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        results.append({"boxes": boxes, "labels": labels, "scores": values})
    return results
