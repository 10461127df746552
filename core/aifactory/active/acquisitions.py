"""Acquisition functions: how much each pixel of a tile is worth labelling, and one score per tile.

An entry of :data:`aifactory.active.ACQUISITIONS` is called as ``func(params, probs, generator)`` and
returns pixel scores ``(N, H, W)``, higher = more worth labelling. ``probs`` is ``(T, N, C, H, W)``: class
probabilities of ``T`` forward passes — one deterministic pass, or ``params.samples`` Monte-Carlo dropout
samples when the parameter model says ``STOCHASTIC``. Entries whose ``NEEDS_MODEL`` is False (random)
get an empty class axis and the model is not run for them. ``generator`` is the selection's seeded torch
generator (random draws from it, so a selection is reproducible).

A one-channel (sigmoid) model gives the probability of its class only: it is read as the two classes
(1 − p, p) everywhere here, so that its entropy is the binary entropy and margin, least confidence and BALD
are defined (they need the probability of "not the class" too).

Scores are normalised to [0, 1] (entropies divided by log C) so that tiles of one run compare and the
``score`` field of the tiles layer reads the same for every strategy.

Why own code: these are a few tensor lines each. The active-learning libraries (modAL, baal) work on
classifier outputs for whole samples and would need their own wrappers for dense maps and MC dropout on
our model zoo; baal's MC-dropout wrapper also replaces modules, which our registry-built models and
their state_dicts must not see.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from aifactory.active import ACQUISITIONS
from aifactory.config import StrictModel

EPS = 1e-12
Aggregate = Literal["mean", "topk", "max"]


class AcquisitionParams(StrictModel):
    """Parameters of an acquisition function (base: none)."""

    STOCHASTIC: ClassVar[bool] = False
    NEEDS_MODEL: ClassVar[bool] = True

    @property
    def passes(self) -> int:
        """Forward passes the function needs per tile."""
        return 1


def entropy_of(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Shannon entropy along ``dim`` divided by log(C): 0 for a sure pixel, 1 for a uniform one."""
    classes = probs.shape[dim]
    return -(probs * torch.log(probs.clamp_min(EPS))).sum(dim) / math.log(max(classes, 2))


def two_classes(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """A sigmoid model's one channel p as the two classes (1 − p, p) along ``dim``; others unchanged."""
    if probs.shape[dim] != 1:
        return probs
    return torch.cat([1.0 - probs, probs], dim=dim)


def _mean_probs(probs: torch.Tensor) -> torch.Tensor:
    return two_classes(probs.mean(0), dim=1)


@ACQUISITIONS.register("entropy", AcquisitionParams)
def entropy(params: AcquisitionParams, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Predictive entropy of the class probabilities (Shannon 1948), normalised by log C."""
    return entropy_of(_mean_probs(probs), dim=1)


@ACQUISITIONS.register("margin", AcquisitionParams)
def margin(params: AcquisitionParams, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """1 − (best − second best probability): small margins between the two top classes score high."""
    top = torch.topk(_mean_probs(probs), k=2, dim=1).values
    return 1.0 - (top[:, 0] - top[:, 1])


@ACQUISITIONS.register("least_confidence", AcquisitionParams)
def least_confidence(params: AcquisitionParams, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1 − max probability) · C / (C − 1): the model's lack of confidence in its own answer, in [0, 1]."""
    mean = _mean_probs(probs)
    classes = mean.shape[1]
    return (1.0 - mean.max(dim=1).values) * classes / (classes - 1)


class BaldParams(AcquisitionParams):
    """BALD with Monte-Carlo dropout."""

    STOCHASTIC: ClassVar[bool] = True
    samples: int = Field(default=8, ge=2, le=64, description="Monte-Carlo dropout passes per tile")
    dropout: float = Field(default=0.2, gt=0, lt=1, description="rate of the dropout injected on the decoder features "
                                                         "when the model has no dropout of its own")

    @property
    def passes(self) -> int:
        return self.samples


@ACQUISITIONS.register("bald", BaldParams)
def bald(params: BaldParams, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """BALD (Houlsby 2011; Gal 2017): mutual information between prediction and weights, by MC dropout.

    H(mean of the samples) − mean of H(sample): high where the dropout samples disagree with each other,
    not merely where each of them is unsure. Normalised by log C like the entropy.
    """
    probs = two_classes(probs, dim=2)
    total = entropy_of(probs.mean(0), dim=1)
    expected = entropy_of(probs, dim=2).mean(0)
    return (total - expected).clamp_min(0.0)


class RandomParams(AcquisitionParams):
    """Random sampling: the baseline every strategy is measured against."""

    NEEDS_MODEL: ClassVar[bool] = False


@ACQUISITIONS.register("random", RandomParams)
def random(params: RandomParams, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform random score per tile (no model run): the baseline."""
    n, height, width = probs.shape[1], probs.shape[3], probs.shape[4]
    return torch.rand(n, generator=generator)[:, None, None].expand(n, height, width)


def aggregate(pixel_scores: torch.Tensor, valid: torch.Tensor, how: Aggregate = "mean",
              top_k: float = 0.1) -> torch.Tensor:
    """One score per tile from ``(N, H, W)`` pixel scores over its valid pixels (``(N, H, W)`` bool).

    ``mean``: the average; ``topk``: the average of the highest ``top_k`` fraction of valid pixels (a tile
    with one unsure object among sure background still scores); ``max``: the single highest pixel.
    Tiles without a valid pixel score 0.
    """
    if how not in ("mean", "topk", "max"):
        raise ValueError(f"unknown aggregation {how!r}")
    scores = pixel_scores.flatten(1).float()
    mask = valid.flatten(1)
    counts = mask.sum(1)
    if how == "mean":
        out = (scores * mask).sum(1) / counts.clamp_min(1)
    elif how == "max":
        out = scores.masked_fill(~mask, -math.inf).max(1).values
    else:
        take = torch.ceil(top_k * counts).long().clamp_min(1)  # per tile: the top fraction of its valid pixels
        ranked = scores.masked_fill(~mask, -math.inf).topk(int(take.max()), dim=1).values
        keep = torch.arange(ranked.shape[1])[None, :] < take[:, None]
        out = ranked.masked_fill(~keep, 0.0).sum(1) / take
    return torch.where(counts > 0, out, torch.zeros_like(out))
