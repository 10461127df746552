"""A trained run as a tile scorer: probabilities (MC-dropout samples for BALD), acquisition, aggregation,
encoder embeddings — one batch of tiles at a time, under ``torch.inference_mode``.

Monte-Carlo dropout: when the model has dropout layers with p > 0 of its own, they alone are switched to
training mode and the model runs ``samples`` times. When it has none (a U-Net has none), dropout is
*injected* on the decoder features — the input of the segmentation head — at the rate ``dropout``, with a
warning: the encoder and decoder then run once and only the head is replayed per sample (smp models), or
the model runs ``samples`` times with a pre-hook on its last convolution (other architectures). Injected
masks come from the scorer's seeded generator, so a selection is reproducible. A model's own dropout layers
draw from torch's global generator: it is forked and seeded from the scorer's generator around their passes,
so that those samples too depend on ``--seed`` only (not on what ran before in the process), and the
caller's random state is left as it was.

Embeddings for diversity are the global-average-pooled deepest encoder feature of each tile
(``model.encoder`` of smp models, the backbone of torchvision ones), captured by a forward hook.

This stage imports :mod:`aifactory.prediction.runtime` for device selection and the probabilities rule
(softmax, or sigmoid for one channel), so that scores mean what prediction means.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aifactory.active import ACQUISITIONS
from aifactory.active.acquisitions import AcquisitionParams, aggregate
from aifactory.active.options import SelectOptions
from aifactory.errors import ConfigError, InputError
from aifactory.models.card import ModelCard, load_run_model
from aifactory.prediction.runtime import inference_module, probabilities, select_device
from aifactory.progress import reporter

STRIDE = 32  # encoders downsample by 32: inputs are padded to a multiple of it


def deepest(features: Any) -> torch.Tensor:
    """The last (deepest) tensor of an encoder output: a tensor, a list of stages or an ordered dict."""
    if isinstance(features, torch.Tensor):
        return features
    if isinstance(features, dict):
        return deepest(list(features.values())[-1])
    return deepest(list(features)[-1])


def encoder_of(model: nn.Module, where: str) -> nn.Module:
    """``model.encoder`` (smp) or ``model.model.backbone`` (torchvision); else a one-line error."""
    encoder = getattr(model, "encoder", None) or getattr(getattr(model, "model", None), "backbone", None)
    if not isinstance(encoder, nn.Module):
        raise InputError(f"{where}: diversity kcenter needs encoder features, and this architecture has no "
                         "encoder module (smp architectures and torchvision backbones do)")
    return encoder


def own_dropout(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise InputError("BALD: the model has neither dropout nor a convolution to inject dropout before")
    return convs[-1]


class MonteCarlo:
    """Class-probability samples with dropout active at inference (see the module docstring)."""

    def __init__(self, model: nn.Module, rate: float, generator: torch.Generator, run: str) -> None:
        self.model, self.rate, self.generator = model, rate, generator
        self.own = own_dropout(model)
        self.head: nn.Module | None = None
        if not self.own:
            reporter().warning(f"{run}: the model has no dropout; BALD injects dropout (p={rate:g}) on the decoder "
                               "features (the input of its segmentation head)")
            head = getattr(model, "segmentation_head", None)
            if isinstance(head, nn.Module) and getattr(model, "classification_head", None) is None:
                self.head = head

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.rate
        return x * keep / (1.0 - self.rate)

    @contextlib.contextmanager
    def _capture(self, module: nn.Module) -> Iterator[list[torch.Tensor]]:
        seen: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            yield seen
        finally:
            handle.remove()

    def samples(self, x: torch.Tensor, passes: int) -> torch.Tensor:
        """``(passes, N, C, H, W)`` probabilities."""
        if self.own:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator, device=self.generator.device))
            devices = [x.device] if x.device.type == "cuda" else []
            for module in self.own:
                module.train()
            try:
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    return torch.stack([probabilities(self.model(x)) for _ in range(passes)])
            finally:
                for module in self.own:
                    module.eval()
        if self.head is not None:  # encoder and decoder once, the head per sample
            with self._capture(self.head) as seen:
                self.model(x)
            return torch.stack([probabilities(self.head(self.drop(seen[0]))) for _ in range(passes)])
        handle = last_conv(self.model).register_forward_pre_hook(lambda _m, args: (self.drop(args[0]),))
        try:
            return torch.stack([probabilities(self.model(x)) for _ in range(passes)])
        finally:
            handle.remove()


class TileScorer:
    """Scores batches of tiles read in source units: ``(N, bands, S, S)`` float32 + ``(N, S, S)`` valid.

    ``run`` may be None for strategies that need no model (random) when no embeddings are asked for.
    """

    def __init__(self, run: str | Path | None, options: SelectOptions, *, embed: bool = False,
                 device: str = "auto") -> None:
        self.entry, params = ACQUISITIONS.resolve(options.strategy, "strategy")
        assert isinstance(params, AcquisitionParams)
        self.params = params
        self.options = options
        self.embed = embed
        self.generator = torch.Generator().manual_seed(options.seed)
        self.forward = params.NEEDS_MODEL or embed
        self.card: ModelCard | None = None
        self.model: nn.Module | None = None
        if run is None:
            if self.forward:
                what = f"strategy {options.name!r}" if params.NEEDS_MODEL else "diversity kcenter"
                raise ConfigError(f"{what} needs a trained model (--model RUN)")
            return
        self.device = select_device(device)
        model, card = load_run_model(run, device=self.device)
        if card.task != "segmentation":
            raise InputError(f"{run}: active learning scores segmentation models; this one is {card.task!r}")
        model = inference_module(model, card)  # batch normalisations folded, as prediction runs it
        self.card, self.model = card, model.to(memory_format=torch.channels_last)
        self.mean = torch.tensor(card.normalization.mean, device=self.device)[None, :, None, None]
        self.std = torch.tensor(card.normalization.std, device=self.device)[None, :, None, None]
        self.mc = None
        if params.STOCHASTIC:
            device_generator = torch.Generator(device=self.device).manual_seed(options.seed)
            self.mc = MonteCarlo(model, float(getattr(params, "dropout", 0.2)), device_generator, str(run))
        self.encoder = encoder_of(model, str(run)) if embed else None

    @property
    def bands(self) -> list[int] | None:
        """1-based raster bands the model reads (None without a model: any band will do)."""
        return list(self.card.bands) if self.card is not None else None

    def _probabilities(self, data: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert self.model is not None
        x = torch.from_numpy(data).to(self.device)
        height, width = x.shape[-2:]
        x = (x - self.mean) / self.std
        pad_h, pad_w = -height % STRIDE, -width % STRIDE
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        x = x.contiguous(memory_format=torch.channels_last)
        features: list[torch.Tensor] = []
        handle = (self.encoder.register_forward_hook(lambda _m, _a, out: features.append(deepest(out)))
                  if self.encoder is not None else None)
        try:
            if not self.params.NEEDS_MODEL:
                self.model(x)
                probs = torch.empty(1, x.shape[0], 0, height, width)
            elif self.mc is not None:
                probs = self.mc.samples(x, self.params.passes)[..., :height, :width]
            else:
                probs = probabilities(self.model(x))[None, ..., :height, :width]
        finally:
            if handle is not None:
                handle.remove()
        embeddings = features[0].float().mean(dim=(2, 3)) if features else None
        return probs, embeddings

    def __call__(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Tile scores ``(N,)`` and, when asked for, embeddings ``(N, D)``."""
        n, _, height, width = data.shape
        embeddings = None
        with torch.inference_mode():
            if self.forward:
                probs, features = self._probabilities(data)
                embeddings = features.cpu().numpy() if features is not None else None
            else:
                probs = torch.empty(1, n, 0, height, width)
            pixels = self.entry.func(self.params, probs, self.generator).float().cpu()
            scores = aggregate(pixels, torch.from_numpy(valid), self.options.aggregate, self.options.top_k)
        return scores.numpy(), embeddings
