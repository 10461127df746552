"""What differs between task families during training: the loss call and the validation metric.

One adapter per family of :mod:`aifactory.models` (segmentation, contact, heatmap, detection/instance).
The loop calls ``loss(model, batch)`` in train mode and ``validate(model, batch)`` in eval mode without
gradients; ``meter()`` starts a fresh metric accumulator for a validation pass.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from aifactory.models.heatmap import decode_heatmap
from aifactory.training.config import ValidationConfig
from aifactory.training.data import Batch
from aifactory.training.losses import LossFn
from aifactory.training.metrics import BoxF1, ConfusionMatrix


class Meter(Protocol):
    def compute(self) -> dict[str, float]: ...


class TaskAdapter:
    """Segmentation: logits (N, C, H, W) against the class mask; validation by pixel IoU/F1."""

    monitor = "miou"

    def __init__(self, num_classes: int, ignore_index: int, loss_fn: LossFn | None, validation: ValidationConfig,
                 stride: int = 1) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.loss_fn, self.validation, self.stride = loss_fn, validation, stride

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        assert self.loss_fn is not None
        return self.loss_fn(model(batch["image"]), batch["mask"])

    def meter(self) -> Any:
        return ConfusionMatrix(self.num_classes, self.ignore_index)

    def validate(self, model: nn.Module, batch: Batch, meter: Any) -> torch.Tensor | None:
        logits = model(batch["image"])
        meter.update(logits.argmax(1), batch["mask"])
        assert self.loss_fn is not None
        return self.loss_fn(logits, batch["mask"])


class ContactAdapter(TaskAdapter):
    """Contact model: the dense losses on ``semantic`` plus BCE on the boundary and contact maps."""

    def _loss(self, output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        assert self.loss_fn is not None
        valid = (batch["mask"] != self.ignore_index).float()
        extra = sum(((F.binary_cross_entropy_with_logits(output[k][:, 0].float(), batch[k], reduction="none")
                      * valid).sum() / valid.sum().clamp_min(1)) for k in ("boundary", "contact"))
        return self.loss_fn(output["semantic"], batch["mask"]) + extra

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self._loss(model(batch["image"]), batch)

    def validate(self, model: nn.Module, batch: Batch, meter: Any) -> torch.Tensor | None:
        output = model(batch["image"])
        meter.update(output["semantic"].argmax(1), batch["mask"])
        return self._loss(output, batch)


class HeatmapAdapter(TaskAdapter):
    """CenterNet: heatmap objective on encoded targets; validation by box F1 of the decoded peaks."""

    monitor = "f1"

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        assert self.loss_fn is not None
        return self.loss_fn(model(batch["image"]), batch["targets"])

    def meter(self) -> Any:
        return BoxF1(self.validation.score_threshold, self.validation.iou_threshold)

    def validate(self, model: nn.Module, batch: Batch, meter: Any) -> torch.Tensor | None:
        output = model(batch["image"])
        meter.update(decode_heatmap(output, self.stride), batch["boxes"], batch["labels"])
        assert self.loss_fn is not None
        return self.loss_fn(output, batch["targets"])


class DetectionAdapter(TaskAdapter):
    """torchvision detectors: their own loss dict in train mode; box F1 of eval-mode detections."""

    monitor = "f1"

    def _targets(self, batch: Batch) -> list[dict[str, torch.Tensor]]:
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"], strict=True)]
        if "instance_masks" in batch:
            for target, masks in zip(targets, batch["instance_masks"], strict=True):
                target["masks"] = masks
        return targets

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        losses: dict[str, torch.Tensor] = model(list(batch["image"]), self._targets(batch))
        return sum(losses.values(), torch.zeros((), device=batch["image"].device))

    def meter(self) -> Any:
        return BoxF1(self.validation.score_threshold, self.validation.iou_threshold)

    def validate(self, model: nn.Module, batch: Batch, meter: Any) -> torch.Tensor | None:
        meter.update(model(list(batch["image"])), batch["boxes"], batch["labels"])
        return None


ADAPTERS: dict[str, type[TaskAdapter]] = {
    "segmentation": TaskAdapter, "contact": ContactAdapter, "heatmap": HeatmapAdapter,
    "detection": DetectionAdapter, "instance": DetectionAdapter,
}
#: Loss family each task family's configured losses must belong to (None: the model computes its own).
LOSS_FAMILY: dict[str, str | None] = {
    "segmentation": "dense", "contact": "dense", "heatmap": "heatmap", "detection": None, "instance": None,
}
