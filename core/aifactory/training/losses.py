"""Loss registry: dense losses for segmentation-like outputs and the CenterNet heatmap objective.

An entry is called as ``func(params, ctx) -> loss_fn`` with a :class:`LossContext` (class count, ignore
index, class weights); ``loss_fn(output, target)`` returns a scalar. Dense losses take logits
``(N, C, H, W)`` and an int64 mask ``(N, H, W)``; the ``heatmap`` family takes the CenterNet output dict
and the targets of :func:`aifactory.models.heatmap.encode_targets`. A config's ``loss`` list is a
weighted sum (:func:`build_loss`). Dice, Tversky and Lovász are segmentation_models_pytorch's; cross
entropy is torch's; focal and one-hot BCE are written here because they need both class weights and the
ignore index, which smp's versions do not combine for the multi-class case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss, TverskyLoss

from aifactory.config import StrictModel
from aifactory.errors import ConfigError
from aifactory.registry import Registry

LossFn = Callable[[Any, Any], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss", "aifactory.losses")


@dataclass(frozen=True)
class LossContext:
    num_classes: int
    ignore_index: int
    class_weights: list[float] | None = None

    def weights(self, device: torch.device) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        return torch.tensor(self.class_weights, dtype=torch.float32, device=device)


class DenseLossParams(StrictModel):
    """Parameters of a dense loss."""

    FAMILY: ClassVar[str] = "dense"


class CeParams(DenseLossParams):
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


@LOSSES.register("ce", CeParams)
def cross_entropy(params: CeParams, ctx: LossContext) -> LossFn:
    """Cross entropy over classes, with class weights and the ignore index."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=ctx.weights(logits.device),
                               ignore_index=ctx.ignore_index, label_smoothing=params.label_smoothing)

    return loss


@LOSSES.register("bce", DenseLossParams)
def binary_cross_entropy(params: DenseLossParams, ctx: LossContext) -> LossFn:
    """Per-class sigmoid BCE on one-hot targets (classes scored independently); class weights per channel."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != ctx.ignore_index
        onehot = F.one_hot(torch.where(valid, target, 0), ctx.num_classes).permute(0, 3, 1, 2).float()
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none")
        weights = ctx.weights(logits.device)
        if weights is not None:
            per_pixel = per_pixel * weights[None, :, None, None]
        per_pixel = per_pixel.mean(1) * valid
        return per_pixel.sum() / valid.sum().clamp_min(1)

    return loss


class FocalParams(DenseLossParams):
    gamma: float = Field(default=2.0, ge=0, description="focusing exponent; 0 = cross entropy")


@LOSSES.register("focal", FocalParams)
def focal(params: FocalParams, ctx: LossContext) -> LossFn:
    """Focal loss (Lin 2017): cross entropy scaled by (1 - p_true)^gamma; class weights as alpha."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        valid = target != ctx.ignore_index
        safe = torch.where(valid, target, 0)
        log_p = torch.log_softmax(logits, 1).gather(1, safe[:, None])[:, 0]
        per_pixel = -((1 - log_p.exp()) ** params.gamma) * log_p
        weights = ctx.weights(logits.device)
        norm = valid.sum().clamp_min(1).float()
        if weights is not None:
            w = weights[safe] * valid
            per_pixel, norm = per_pixel * w, w.sum().clamp_min(1e-6)
        return (per_pixel * valid).sum() / norm

    return loss


class DiceParams(DenseLossParams):
    smooth: float = Field(default=0.0, ge=0)
    log_loss: bool = Field(default=False, description="-log(dice) instead of 1 - dice")


@LOSSES.register("dice", DiceParams)
def dice(params: DiceParams, ctx: LossContext) -> LossFn:
    """Soft Dice over classes present in the batch (smp), class-weighted mean."""
    return DiceLoss("multiclass", from_logits=True, smooth=params.smooth, log_loss=params.log_loss,
                    ignore_index=ctx.ignore_index, class_weights=ctx.class_weights)


class TverskyParams(DenseLossParams):
    alpha: float = Field(default=0.3, ge=0, le=1, description="weight of false positives")
    beta: float = Field(default=0.7, ge=0, le=1, description="weight of false negatives (> alpha favours recall)")
    gamma: float = Field(default=1.0, gt=0, description="focal Tversky exponent")


@LOSSES.register("tversky", TverskyParams)
def tversky(params: TverskyParams, ctx: LossContext) -> LossFn:
    """Tversky loss (Salehi 2017, smp): Dice with separate false positive/negative weights."""
    return TverskyLoss("multiclass", from_logits=True, alpha=params.alpha, beta=params.beta, gamma=params.gamma,
                       ignore_index=ctx.ignore_index, class_weights=ctx.class_weights)


class LovaszParams(DenseLossParams):
    per_image: bool = False


@LOSSES.register("lovasz", LovaszParams)
def lovasz(params: LovaszParams, ctx: LossContext) -> LossFn:
    """Lovász-softmax (Berman 2018, smp): a direct surrogate of mean IoU; class weights do not apply."""
    inner = LovaszLoss("multiclass", per_image=params.per_image, ignore_index=ctx.ignore_index)
    return lambda logits, target: inner(logits.float(), target)


class CenterNetLossParams(StrictModel):
    FAMILY: ClassVar[str] = "heatmap"
    alpha: float = Field(default=2.0, ge=0, description="focal exponent on the prediction")
    beta: float = Field(default=4.0, ge=0, description="penalty reduction near a centre")
    size_weight: float = Field(default=0.1, ge=0, description="weight of the L1 loss on log box size")
    offset_weight: float = Field(default=1.0, ge=0)


@LOSSES.register("centernet", CenterNetLossParams)
def centernet(params: CenterNetLossParams, ctx: LossContext) -> LossFn:
    """CenterNet objective: penalty-reduced focal loss on the heatmap + L1 on log size and offset."""

    def loss(output: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = output["heatmap"].float()
        gt = target["heatmap"]
        pos = gt.eq(1).float()
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        p = log_p.exp()
        heat = -(pos * (1 - p) ** params.alpha * log_p
                 + (1 - pos) * (1 - gt) ** params.beta * p ** params.alpha * log_not_p)
        weights = ctx.weights(logits.device)
        if weights is not None:
            heat = heat * weights[None, :, None, None]
        centers = target["centers"]
        n_pos = centers.sum().clamp_min(1).float()
        mask = centers[:, None].float()
        size = (torch.log(output["size"].float()) - torch.log(target["size"].clamp_min(1e-3))).abs() * mask
        offset = (output["offset"].float() - target["offset"]).abs() * mask
        return (heat.sum() + params.size_weight * size.sum() + params.offset_weight * offset.sum()) / n_pos

    return loss


def check_loss(terms: list[tuple[str, float, dict[str, Any]]], family: str,
               where: str = "loss") -> list[tuple[float, Any, Any]]:
    """``(weight, entry, params)`` of each term, refused in one line when unknown or not of the model's ``family``
    (needs no dataset: ``al round`` checks its nested training config with it before round 1)."""
    checked = []
    for i, (name, weight, raw) in enumerate(terms):
        entry = LOSSES.get(name, f"{where}.{i}.name")
        params = entry.parse_params(raw, f"{where}.{i}.params")
        term_family = getattr(entry.params, "FAMILY", "dense")
        if term_family != family:
            fitting = [e.name for e in LOSSES if getattr(e.params, "FAMILY", "dense") == family]
            raise ConfigError(f"{where}.{i}: loss {name!r} is for {term_family} outputs; this model needs a "
                              f"{family} loss ({', '.join(fitting)})")
        checked.append((weight, entry, params))
    return checked


def build_loss(terms: list[tuple[str, float, dict[str, Any]]], ctx: LossContext, family: str,
               where: str = "loss") -> LossFn:
    """The weighted sum of ``(name, weight, params)`` terms, all of the model's ``family``."""
    parts = [(weight, entry.func(params, ctx)) for weight, entry, params in check_loss(terms, family, where)]

    def total(output: Any, target: Any) -> torch.Tensor:
        result = parts[0][0] * parts[0][1](output, target)
        for weight, fn in parts[1:]:
            result = result + weight * fn(output, target)
        return result

    return total
