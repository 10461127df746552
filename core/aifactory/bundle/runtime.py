"""A bundle as a prediction model source: one ONNX Runtime session, no torch.

:class:`OnnxModel` implements :class:`aifactory.prediction.model_source.ModelSource` the way the torch
runtime does for run directories: raw tiles are normalised with the bundle's statistics, the network's
``logits`` output goes through a softmax (a sigmoid for one class) and the requested channels come back
as float32 numpy. A contact bundle's ``semantic`` and ``contact`` outputs become the probability stack
of :func:`aifactory.prediction.contact.contact_scores`, the very function the torch runtime uses. The
network is read from the zip into memory (no extraction) and checked against its sha256. TTA and ensembles
stay with the torch runtime (they would need their own array code here), and ONNX Runtime runs float32 only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from aifactory.bundle.format import read_meta, read_onnx
from aifactory.errors import ConfigError, InputError
from aifactory.prediction.contact import CONTACT_TASK, HEADS, contact_scores
from aifactory.prediction.model_source import check_card

LOGITS = "logits"
#: the tasks this predictor runs: heatmap bundles export, but their decoding is torch code for now
PREDICTED_TASKS = ("segmentation", CONTACT_TASK)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over classes, or a sigmoid for a single-class model (as the torch runtime does)."""
    return np.asarray(expit(logits) if logits.shape[1] == 1 else softmax(logits, axis=1))


def providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``--device`` (auto: CUDA when this onnxruntime has it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise InputError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ConfigError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxModel:
    """A bundle (zip or extracted folder) ready to predict."""

    precision_pending = False  # always float32
    passes = 1  # ONNX Runtime spreads one call over the cores itself

    def concurrently(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def __init__(self, path: str | Path, *, device: str = "auto", precision: str = "auto",
                 tta: bool | str = False) -> None:
        import onnxruntime as ort

        if tta not in (False, "none"):
            raise ConfigError("tta: a bundle predicts without TTA; use the run directory for TTA")
        if precision == "bf16":
            raise ConfigError("precision bf16: a bundle runs in float32 (ONNX Runtime)")
        path = Path(path)
        self.meta = read_meta(path)
        card = self.meta.card()
        check_card(card, str(path), PREDICTED_TASKS)
        self._outputs = list(HEADS) if card.task == CONTACT_TASK else [LOGITS]
        missing = [name for name in self._outputs if name not in self.meta.model.outputs]
        if missing:
            raise InputError(f"{path}: the {card.task} network has no {', '.join(map(repr, missing))} output "
                             f"(outputs: {self.meta.model.outputs})")
        network, chosen = read_onnx(path, self.meta), providers(device)
        try:
            self.session = ort.InferenceSession(network, providers=chosen)
        except Exception as exc:  # onnxruntime's errors (Fail, InvalidGraph…) derive from Exception only
            raise InputError(f"{path}: ONNX Runtime cannot load {self.meta.model.file}: "
                             f"{str(exc).splitlines()[0]}") from None
        used = self.session.get_providers()[0]
        self.runs = [str(path)]
        self.names = [self.meta.run]
        self.cards = [card]
        self.bands = list(card.bands)
        self.device = "cuda" if used == "CUDAExecutionProvider" else "cpu"
        self.precision = "fp32"
        self.overlap: int | None = self.meta.overlap
        self.chain: list[dict[str, Any]] | None = self.meta.postprocess
        self._mean = np.asarray(card.normalization.mean, dtype="float32")[None, :, None, None]
        self._std = np.asarray(card.normalization.std, dtype="float32")[None, :, None, None]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of a normalised batch: softmax of the logits, or a contact model's stack."""
        outputs = self.session.run(self._outputs, {self.meta.model.input: x})
        if self.cards[0].task == CONTACT_TASK:
            return contact_scores(dict(zip(self._outputs, outputs, strict=True)), probabilities,
                                  self.cards[0].classes)
        return probabilities(outputs[0])

    def __call__(self, batch: np.ndarray, valid: np.ndarray, channels: slice) -> np.ndarray:
        normalised = np.subtract(batch, self._mean, order="C", dtype="float32")  # NCHW, as the network reads it
        scores = self.scores(np.divide(normalised, self._std, out=normalised))
        return np.ascontiguousarray(scores[:, channels], dtype="float32")
