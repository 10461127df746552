"""Torch models at prediction time: loading runs, checking they agree, device and precision, the forward pass.

:class:`TorchModels` is the torch :class:`~aifactory.prediction.model_source.ModelSource`. Each run
directory is rebuilt with :func:`aifactory.models.card.load_run_model`; bands and normalisation come
from its card. Ensemble members must share the task and the classes (their outputs
are combined pixel by pixel); they may read different bands.

Speed on the CPU is nearly all forward pass (BENCHMARKS.md), so the forward is made cheaper where it
stays accurate: batch normalisations folded into the convolutions before them (:mod:`aifactory.models.folding`,
1.22–1.27× faster for the bench's U-Net, same outputs), weights and inputs in channels_last (1.2–2.6× faster for
smp U-Nets here, exact), and
bfloat16 autocast where the hardware has it (AMX/AVX512-BF16 CPUs, recent GPUs). bf16 changes the
numbers, so ``precision="auto"`` measures it on two tiles of the first batch against float32 and keeps
it only if at most ``BF16_MAX_DISAGREE`` of the pixels change class and the 99th percentile of the
probability error is within ``BF16_MAX_ERROR`` (about 5 of the 255 score levels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aifactory.errors import ConfigError, InputError
from aifactory.heap import applied_heap_policy
from aifactory.models import TORCHVISION_FAMILIES, min_tile
from aifactory.models.card import ModelCard, load_run_model
from aifactory.models.folding import fold_batch_norms
from aifactory.prediction.contact import CONTACT_TASK, contact_scores
from aifactory.prediction.ensemble import check_weights, combine
from aifactory.prediction.model_source import PREDICT_TASKS, Precision, check_card
from aifactory.prediction.tta import predict_tta, transforms
from aifactory.progress import reporter
from aifactory.tensor_pool import install_tensor_pool

BF16_MAX_DISAGREE = 0.002
BF16_MAX_ERROR = 0.02
CALIBRATION_TILES = 2
#: Batches the models run at once on the CPU, each in its own thread with its share of torch's threads.
#: One batch over all the cores stalls at every parallel region's barrier whenever another thread (the
#: reader, the writer) takes a core for a moment, and both cores then wait; two batches on one core each
#: lose only the time taken. Measured on 2 CPUs (bare forward, batches of 8 tiles against two batches of 4
#: at once, alternated): U-Net resnet18 6.6–8.1 s against 6.0–6.5 s for 48 tiles (1.6 cores used against
#: 1.95), the bench's light U-Net 6.6 s against 4.4 s for 88 tiles. The memory held is the same: predict
#: splits its batch size between the passes.
CPU_PASSES = 2
#: Side of the random tile the folded model is checked on when a model loads (:func:`inference_module`). Which
#: normalisations fold, and whether the folded model matches, do not depend on the input's size, but the check's two
#: forwards do: on a 512-px tile they took 0.34 s of every predict's start (2 CPUs, the bench's U-Net resnet18), on
#: 128 px 0.08 s (the same 30 normalisations folded).
FOLD_CHECK_TILE = 128


def select_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; an unavailable cuda is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs natively (not emulated, which is slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class LoadedModel:
    """A model with its card, the positions of its bands in the batch and its normalisation."""

    run: str
    module: nn.Module
    card: ModelCard
    band_index: list[int]
    mean: torch.Tensor
    std: torch.Tensor


def load_models(runs: Sequence[str | Path], device: torch.device) -> list[LoadedModel]:
    """Load every run; they must agree on task and classes. Band positions are filled by :func:`bind_bands`."""
    if not runs:
        raise ConfigError("predict: give at least one --model run directory")
    loaded = []
    for run in runs:
        if not Path(run).is_dir():
            raise InputError(f"{run}: model run directory not found")
        module, card = load_run_model(run, device="cpu")
        check_card(card, f"{run}/model.json", PREDICT_TASKS)
        module = inference_module(module, card).to(device).to(memory_format=torch.channels_last)
        mean = torch.tensor(card.normalization.mean, dtype=torch.float32, device=device)[None, :, None, None]
        std = torch.tensor(card.normalization.std, dtype=torch.float32, device=device)[None, :, None, None]
        loaded.append(LoadedModel(str(run), module, card, [], mean, std))
    first = loaded[0].card
    for other in loaded[1:]:
        if other.card.task != first.task:
            raise InputError(f"{other.run}: a {other.card.task} model cannot join {loaded[0].run}'s "
                             f"{first.task} model in an ensemble; an ensemble needs one task family")
        if other.card.classes != first.classes:
            raise InputError(f"{other.run}: classes {other.card.classes} differ from {loaded[0].run}'s "
                             f"{first.classes}; an ensemble needs the same classes")
    return loaded


def inference_module(module: nn.Module, card: ModelCard) -> nn.Module:
    """``module`` as prediction runs it: batch normalisations folded into the convolutions (dense families;
    torchvision's detectors take image lists and keep theirs), checked on one random tile of
    :data:`FOLD_CHECK_TILE` pixels (the card's tile if smaller, the architecture's smallest if larger)."""
    if card.task in TORCHVISION_FAMILIES:
        return module
    device = next(module.parameters(), torch.empty(0)).device
    size = min(card.tile_size, max(FOLD_CHECK_TILE, min_tile(card.architecture)))
    example = torch.randn(1, card.in_channels, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    return fold_batch_norms(module, example)[0]


def bind_bands(models: list[LoadedModel]) -> list[int]:
    """The union of all models' bands (1-based, sorted); sets each model's positions into it."""
    union = sorted({band for m in models for band in m.card.bands})
    for m in models:
        m.band_index = [union.index(band) for band in m.card.bands]
    return union


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or a sigmoid for single-class models."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def model_scores(output: torch.Tensor | dict[str, torch.Tensor], card: ModelCard) -> torch.Tensor:
    """A dense model's class probabilities (N, K, H, W) from its raw output: :func:`probabilities` of the logits,
    or for a contact model the stack of :func:`aifactory.prediction.contact.contact_scores` (K = its classes + 1).

    Converted pass by pass, before TTA's inverse transform and the ensemble's mean: the conversion is per pixel,
    so it commutes with the flips and turns, and averaging stacks keeps them joint distributions."""
    if card.task == CONTACT_TASK:
        if not isinstance(output, dict):
            raise TypeError(f"a contact model returns a dict of heads, got {type(output).__name__}")
        return contact_scores(output, probabilities, card.classes)
    assert isinstance(output, torch.Tensor)
    return probabilities(output)


class Runner:
    """Runs a batch through every model (with TTA) and returns per-model probabilities."""

    def __init__(self, models: list[LoadedModel], device: torch.device, precision: Precision = "auto",
                 tta: str | bool = False) -> None:
        if precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision: expected auto, fp32 or bf16, got {precision!r}")
        if precision == "bf16" and not bf16_supported(device):
            raise InputError(f"precision bf16: not supported natively on {device}")
        self.models = models
        self.device = device
        self.tta = tta
        self.precision: Precision = precision if precision != "auto" or bf16_supported(device) else "fp32"
        self.decided = precision != "auto" or self.precision == "fp32"

    @contextlib.contextmanager
    def _autocast(self, bf16: bool) -> Iterator[None]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            yield

    def _inputs(self, model: LoadedModel, data: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """``model``'s normalised input, channels-last. ``in_place``: ``data`` (channels-last, as batches come
        from the reader, all of the model's bands in order) is normalised where it lies, with no new buffer.

        Channels-last, each row of a tile holds its pixels' bands one after the other, so the rows are
        normalised against the card's mean and std repeated along a row: a contiguous inner loop, where
        broadcasting (1, bands, 1, 1) over the channels-last tensor strides through 4 values at a time. The
        same floats; 0.8 against 3.8 ms per batch of 4 tiles of 512² × 4 bands in one thread (2 CPUs).
        """
        bands_in_order = model.band_index == list(range(data.shape[1]))  # not when the card lists bands as 3, 2, 1
        if not bands_in_order:  # indexing copies
            data = data[:, model.band_index].contiguous(memory_format=torch.channels_last)
        elif not (in_place and data.is_contiguous(memory_format=torch.channels_last)):
            data = data.clone(memory_format=torch.channels_last)
        width = data.shape[3]
        rows = data.permute(0, 2, 3, 1).view(-1, width * data.shape[1])
        rows.sub_(model.mean.flatten().repeat(width)).div_(model.std.flatten().repeat(width))
        return data

    def _run(self, inputs: list[torch.Tensor], bf16: bool) -> list[torch.Tensor]:
        out = []
        with self._autocast(bf16):
            for model, x in zip(self.models, inputs, strict=True):
                out.append(predict_tta(lambda t, m=model.module, c=model.card: model_scores(m(t), c),  # type: ignore[misc]
                                       x, self.tta))
        return out

    def __call__(self, batch: np.ndarray, valid: np.ndarray) -> list[torch.Tensor]:
        """Per-model probabilities (N, C, T, T) float32 on the device for a (N, bands, T, T) batch.

        The batch (the reader's own buffer) is normalised in place when a single model reads all its bands.
        """
        data = torch.from_numpy(batch)
        if self.device.type == "cuda":
            data = data.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            inputs = [self._inputs(model, data, in_place=len(self.models) == 1) for model in self.models]
        if not self.decided:
            self.decided = True
            return self._calibrate(inputs, torch.from_numpy(valid).to(self.device))
        return self._run(inputs, self.precision == "bf16")

    def _calibrate(self, inputs: list[torch.Tensor], valid: torch.Tensor) -> list[torch.Tensor]:
        """Compare bf16 with float32 on (up to) two tiles of this batch; keep bf16 only if it holds accuracy."""
        sample = slice(0, CALIBRATION_TILES)
        reference = self._run([x[sample] for x in inputs], bf16=False)
        candidate = self._run(inputs, bf16=True)
        disagree, error = 0.0, 0.0
        for ref, cand in zip(reference, candidate, strict=True):
            cand, mask = cand[sample], valid[sample]
            deviation = (ref - cand).abs()[mask[:, None].expand_as(ref)]
            error = max(error, float(torch.quantile(deviation[:1_000_000], 0.99)))
            if ref.shape[1] > 1:
                changed = (ref.argmax(1) != cand.argmax(1))[mask]
            else:
                changed = ((ref[:, 0] >= 0.5) != (cand[:, 0] >= 0.5))[mask]
            disagree = max(disagree, float(changed.float().mean()))
        keep = disagree <= BF16_MAX_DISAGREE and error <= BF16_MAX_ERROR
        self.precision = "bf16" if keep else "fp32"
        reporter().log(f"precision: bf16 changes {disagree:.3%} of pixel classes, p99 probability error "
                       f"{error:.4f}: using {self.precision}")
        return candidate if keep else self._run(inputs, bf16=False)


class TorchModels:
    """Run directories as a model source: loaded, band-bound, run with TTA and combined as an ensemble."""

    chain: list[dict[str, Any]] | None = None
    overlap: int | None = None

    def __init__(self, runs: Sequence[str | Path], *, device: str = "auto", precision: Precision = "auto",
                 tta: str | bool = False, ensemble: str = "mean", weights: Sequence[float] | None = None) -> None:
        transforms(tta)  # validates the mode before any model is loaded
        self._device = select_device(device)
        if self._device.type == "cpu" and applied_heap_policy() == "lean":
            install_tensor_pool()  # activations reused pass after pass, within a cap (aifactory.tensor_pool)
        self.loaded = load_models(runs, self._device)
        self.ensemble = ensemble
        self.weights = check_weights(ensemble, weights, len(self.loaded))
        self.bands = bind_bands(self.loaded)
        self.runner = Runner(self.loaded, self._device, precision, tta)
        self.runs = [m.run for m in self.loaded]
        self.names = [Path(m.run).resolve().name for m in self.loaded]
        self.cards = [m.card for m in self.loaded]
        self.device = str(self._device)
        self._pass_threads: int | None = None  # torch threads per pass while passes run at once

    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def precision_pending(self) -> bool:
        return not self.runner.decided

    @property
    def passes(self) -> int:
        """:data:`CPU_PASSES` on the CPU; one on a GPU, which runs one batch at a time anyway."""
        return CPU_PASSES if self._device.type == "cpu" else 1

    @contextlib.contextmanager
    def concurrently(self) -> Iterator[None]:
        """torch's threads shared between the passes while the context lasts; restored afterwards (the
        setting is process-wide, and the caller's own torch work should keep its threads)."""
        threads = torch.get_num_threads()
        self._pass_threads = max(1, threads // self.passes)
        torch.set_num_threads(self._pass_threads)
        try:
            yield
        finally:
            self._pass_threads = None
            torch.set_num_threads(threads)

    def __call__(self, batch: np.ndarray, valid: np.ndarray, channels: slice) -> np.ndarray:
        # torch keeps a thread count per thread: a pass thread that ran alone first takes its share now
        if self._pass_threads is not None and torch.get_num_threads() != self._pass_threads:
            torch.set_num_threads(self._pass_threads)
        probs = combine(self.runner(batch, valid), self.ensemble, self.weights)
        return probs[:, channels].float().cpu().numpy()
