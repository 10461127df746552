"""Validation metrics computed during training: pixel IoU/F1 and box F1.

These select the best checkpoint and drive early stopping; the full evaluation (mAP, PR curves, object
metrics, reports) is the evaluation stage's job. Both accumulate counts over batches, so memory does not
grow with the validation set.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


class ConfusionMatrix:
    """Pixel confusion matrix; ``compute`` gives mean IoU and F1 over the foreground classes."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """``prediction`` and ``target``: int class maps of the same shape."""
        valid = target != self.ignore_index
        index = target[valid].long().cpu() * self.num_classes + prediction[valid].long().cpu()
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def compute(self) -> dict[str, float]:
        m = self.matrix.double()
        tp = m.diag()
        support, predicted = m.sum(1), m.sum(0)
        union = support + predicted - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp_min(1), torch.zeros_like(tp))
        f1 = torch.where(present, 2 * tp / (support + predicted).clamp_min(1), torch.zeros_like(tp))
        foreground = present.clone()
        foreground[0] = False
        if not bool(foreground.any()):
            foreground = present
        result = {"miou": float(iou[foreground].mean()) if bool(foreground.any()) else 0.0,
                  "f1": float(f1[foreground].mean()) if bool(foreground.any()) else 0.0,
                  "accuracy": float(tp.sum() / m.sum().clamp_min(1))}
        result.update({f"iou_{c}": float(iou[c]) for c in range(self.num_classes) if bool(present[c])})
        return result


class BoxF1:
    """Greedy score-ordered matching per class at an IoU threshold; precision, recall, F1."""

    def __init__(self, score_threshold: float, iou_threshold: float) -> None:
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.tp = self.fp = self.fn = 0

    def update(self, predictions: list[dict[str, torch.Tensor]], boxes: list[torch.Tensor],
               labels: list[torch.Tensor]) -> None:
        for pred, gt_boxes, gt_labels in zip(predictions, boxes, labels, strict=True):
            keep = pred["scores"] >= self.score_threshold
            p_boxes, p_labels = pred["boxes"][keep].float().cpu(), pred["labels"][keep].cpu()
            p_scores = pred["scores"][keep].cpu()
            gt_boxes, gt_labels = gt_boxes.float().cpu(), gt_labels.cpu()
            matched = torch.zeros(len(gt_boxes), dtype=torch.bool)
            iou = box_iou(p_boxes, gt_boxes) if len(p_boxes) and len(gt_boxes) else None
            for i in torch.argsort(p_scores, descending=True).tolist():
                if iou is None:
                    self.fp += 1
                    continue
                candidates = iou[i].clone()
                candidates[matched | (gt_labels != p_labels[i])] = -1
                j = int(candidates.argmax())
                if candidates[j] >= self.iou_threshold:
                    matched[j] = True
                    self.tp += 1
                else:
                    self.fp += 1
            self.fn += int((~matched).sum())

    def compute(self) -> dict[str, float]:
        precision = self.tp / max(1, self.tp + self.fp)
        recall = self.tp / max(1, self.tp + self.fn)
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        return {"f1": f1, "precision": precision, "recall": recall}
