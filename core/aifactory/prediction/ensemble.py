"""Combining the probabilities of several models, and weighted box fusion for box detectors.

Segmentation ensembles combine per-pixel class probabilities (N, C, H, W) from each model:
``mean``, ``weighted`` (mean with per-model weights), ``max`` (per class) and ``vote`` (each model
votes for its arg-max class; the score of a class is its share of the votes, so a pixel two of three
models call "building" scores 0.67).

Box detectors are fused with weighted box fusion (Solovyev et al. 2021): boxes of all models are
clustered by IoU in descending score order and each cluster is replaced by the score-weighted mean box,
its score scaled by the share of the models' weight that agrees (see :func:`weighted_box_fusion`).
torchvision has NMS but no fusion and the one PyPI package (ensemble-boxes) is unmaintained and numpy-loop
based, so it is written here on vectorized IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from aifactory.errors import ConfigError

EnsembleMode = Literal["mean", "weighted", "max", "vote"]
ENSEMBLE_MODES = ("mean", "weighted", "max", "vote")


def check_weights(mode: str, weights: Sequence[float] | None, count: int) -> list[float]:
    """Per-model weights normalised to sum 1 (equal unless ``mode == 'weighted'``). Weights given with another
    mode are refused rather than ignored: the prediction would silently not be the one asked for."""
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(f"ensemble: expected one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    if mode != "weighted":
        if weights is not None:
            raise ConfigError(f"ensemble {mode!r} takes no weights (got {list(weights)}); use ensemble 'weighted'")
        return [1.0 / count] * count
    if weights is None or len(weights) != count:
        raise ConfigError(f"ensemble 'weighted' needs one weight per model ({count}), got {weights!r}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"ensemble weights must be non-negative with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def combine(probs: Sequence[torch.Tensor], mode: str, weights: Sequence[float]) -> torch.Tensor:
    """Combine per-model probabilities (each (N, C, H, W)) into one (N, C, H, W) tensor."""
    if len(probs) == 1:
        return probs[0]
    if mode in ("mean", "weighted"):
        out = probs[0] * weights[0]
        for p, w in zip(probs[1:], weights[1:], strict=True):
            out = out + p * w
        return out
    stacked = torch.stack(list(probs))
    if mode == "max":
        return stacked.amax(dim=0)
    if mode == "vote":
        classes = stacked.shape[2]
        if classes == 1:  # sigmoid models: a vote is score ≥ 0.5
            return (stacked >= 0.5).float().mean(dim=0)
        votes = torch.nn.functional.one_hot(stacked.argmax(dim=2), classes).movedim(-1, 2).float()
        return votes.mean(dim=0)
    raise ConfigError(f"ensemble: unknown mode {mode!r}")


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box x0, y0, x1, y1 with (N, 4) boxes."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_box_fusion(boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        model_weights: Sequence[float] | None = None, iou_threshold: float = 0.55,
                        skip_below: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuse the boxes of several models: returns (boxes (M, 4), scores (M,), labels (M,)).

    ``boxes[i]`` is model i's (N_i, 4) array of x0, y0, x1, y1; boxes of different labels never fuse. Boxes join
    the fused box they overlap most (IoU > ``iou_threshold``) in descending order of score × model weight, and a
    fused box is the mean of its members weighted by score × model weight. A fused score is the mean of its
    members' score × weight × (models among them) / (sum of all models' weights): with one box per agreeing
    model, Σ score × weight / Σ weights, so a box all models saw gets their weighted mean score and a box only
    one of three equally weighted models saw keeps a third of its score (a model weighted 0.5 of the total keeps
    half). ``skip_below`` drops boxes whose score × weight is below it.
    """
    count = len(boxes)
    w = np.ones(count) if model_weights is None else np.asarray(model_weights, dtype="float64")
    all_boxes = np.concatenate([np.asarray(b, "float64").reshape(-1, 4) for b in boxes])
    all_scores = np.concatenate([np.asarray(s, "float64").ravel() * w[i] for i, s in enumerate(scores)])
    all_labels = np.concatenate([np.asarray(lab).ravel() for lab in labels])
    all_models = np.concatenate([np.full(len(np.asarray(s).ravel()), i) for i, s in enumerate(scores)])
    keep = all_scores >= skip_below
    all_boxes, all_scores, all_labels, all_models = (a[keep] for a in (all_boxes, all_scores, all_labels,
                                                                         all_models))
    out_boxes, out_scores, out_labels = [], [], []
    for label in np.unique(all_labels):
        sel = np.flatnonzero(all_labels == label)
        sel = sel[np.argsort(-all_scores[sel], kind="stable")]
        fused: list[np.ndarray] = []  # current fused box of each cluster
        members: list[list[int]] = []
        for index in sel:
            if fused:
                ious = box_iou(all_boxes[index], np.asarray(fused))
                best = int(np.argmax(ious))
                if ious[best] > iou_threshold:
                    members[best].append(index)
                    cluster = np.asarray(members[best])
                    fused[best] = ((all_boxes[cluster] * all_scores[cluster, None]).sum(0)
                                   / all_scores[cluster].sum())
                    continue
            fused.append(all_boxes[index].copy())
            members.append([index])
        for box, member in zip(fused, members, strict=True):
            agreeing = len(set(all_models[member].tolist()))
            out_boxes.append(box)
            out_scores.append(all_scores[member].mean() * min(agreeing, count) / count / (w.sum() / count))
            out_labels.append(label)
    if not out_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=all_labels.dtype)
    order = np.argsort(-np.asarray(out_scores), kind="stable")
    return np.asarray(out_boxes)[order], np.asarray(out_scores)[order], np.asarray(out_labels)[order]
