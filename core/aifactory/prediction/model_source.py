"""Model sources: what :func:`~aifactory.prediction.predict.predict` runs, behind one small interface.

Prediction needs from its models only their cards (bands, normalisation, tile size, GSD, classes, label
mode), the bands to read and a call turning a batch of raw tiles into combined class probabilities.
Two implementations:

- :class:`aifactory.prediction.runtime.TorchModels`: run directories (``model.json`` + ``model.pt``),
  ensembles, TTA, bf16 — torch;
- :class:`aifactory.bundle.runtime.OnnxModel`: one bundle (``model.zip`` or its extracted folder) in an
  ONNX Runtime session — no torch, which is what a deployment image has.

Neither is imported until chosen, so predicting with a bundle never imports torch. Sideways imports, on
purpose and lazily: the bundle stage (a bundle is a model source) and the tracking stage's registry
(``models:/NAME@ALIAS`` names a registered run or bundle).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from aifactory.errors import ConfigError, InputError
from aifactory.models.card import ModelCard

Precision = Literal["auto", "fp32", "bf16"]


class ModelSource(Protocol):
    """Models ready to predict, whatever runs them."""

    @property
    def runs(self) -> list[str]:
        """Where each model came from (for messages)."""

    @property
    def names(self) -> list[str]:
        """The ``model_run`` of each model, written into the detections."""

    @property
    def cards(self) -> list[ModelCard]: ...

    @property
    def bands(self) -> list[int]:
        """1-based raster bands read for every tile, in the order the batch holds them."""

    @property
    def device(self) -> str: ...

    @property
    def precision(self) -> str: ...

    @property
    def precision_pending(self) -> bool:
        """True while ``precision="auto"`` waits for the first batch to decide between bf16 and float32."""

    @property
    def overlap(self) -> int | None:
        """Tile overlap packaged with the model (None: predict's default)."""

    @property
    def chain(self) -> list[dict[str, Any]] | None:
        """Post-processing packaged with the model (None: none)."""

    @property
    def passes(self) -> int:
        """How many batches may go through :meth:`__call__` at once, each from its own thread (1: one at a time)."""

    def concurrently(self) -> contextlib.AbstractContextManager[None]:
        """The source set up for :attr:`passes` calls at once (its threads shared between them) while it lasts."""
        ...

    def __call__(self, batch: np.ndarray, valid: np.ndarray, channels: slice) -> np.ndarray:
        """Combined probabilities (N, len(channels), T, T) float32 of a (N, bands, T, T) float32 batch.

        The batch is the caller's to give away: a source may normalise it in place.
        """
        ...


#: Task families predict handles from run directories; the box families go through :mod:`.detectors`, contact
#: models as a segmentation-like probability stack (:mod:`.contact`).
BOX_FAMILIES = ("heatmap", "detection", "instance")
PREDICT_TASKS = ("segmentation", "contact", *BOX_FAMILIES)


def check_card(card: ModelCard, run: str, tasks: Sequence[str] = ("segmentation",)) -> None:
    """What predict needs from any model card: a model of one of ``tasks`` with statistics for every band."""
    if card.task not in tasks:
        raise InputError(f"{run}: task {card.task!r} is not supported by this model source "
                         f"(supported: {', '.join(tasks)})")
    if len(card.normalization.mean) != len(card.bands) or len(card.normalization.std) != len(card.bands):
        raise InputError(f"{run}: normalization has {len(card.normalization.mean)} values "
                         f"for {len(card.bands)} bands")


def local_model(model: str | Path) -> Path:
    """A ``--model`` argument as a local path: registry URIs (``models:/NAME@ALIAS``) are resolved."""
    if str(model).startswith("models:/"):
        from aifactory.tracking.registry import resolve_model_uri

        return resolve_model_uri(str(model))
    return Path(model)


def open_models(models: Sequence[str | Path], *, device: str = "auto", precision: Precision = "auto",
                tta: bool | str = False, ensemble: str = "mean",
                weights: Sequence[float] | None = None) -> ModelSource:
    """The model source for ``models``: one bundle (ONNX Runtime) or run directories (torch)."""
    from aifactory.bundle.format import is_bundle

    if not models:
        raise ConfigError("predict: give at least one --model run directory or bundle")
    paths = [local_model(model) for model in models]
    if any(is_bundle(path) for path in paths):
        if len(paths) > 1:
            raise ConfigError("predict: a bundle predicts alone; ensembles need run directories")
        from aifactory.bundle.runtime import OnnxModel

        return OnnxModel(paths[0], device=device, precision=precision, tta=tta)
    from aifactory.prediction.runtime import TorchModels

    return TorchModels(paths, device=device, precision=precision, tta=tta, ensemble=ensemble, weights=weights)
