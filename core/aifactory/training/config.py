"""The training configuration (``TrainConfig``): one YAML file, validated, stored resolved in the run.

Importing this module does not import torch: the orchestrator and the plugin side can validate a
training YAML cheaply. Paths in a YAML file are relative to that file (:meth:`TrainConfig.from_yaml`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from aifactory.config import StrictModel, load_yaml, validate
from aifactory.tracking.store import is_path


class ModelSpec(StrictModel):
    """Which architecture to train (``aifactory models --list``)."""

    architecture: str = Field(default="unet", description="registered architecture name")
    params: dict[str, Any] = Field(default_factory=dict, description="architecture parameters, bricks included")
    weights: str | None = Field(default=None, description="local state_dict (or checkpoint) to start from")
    strict_weights: bool = Field(default=False, description="refuse weights that do not match every tensor")


class LossTerm(StrictModel):
    """One term of the weighted loss sum (``aifactory.training.losses.LOSSES``)."""

    name: str
    weight: float = Field(default=1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class AugmentConfig(StrictModel):
    """Augmentations applied to image, mask and boxes together (training split only)."""

    hflip: float = Field(default=0.5, ge=0, le=1, description="probability of a left-right flip")
    vflip: float = Field(default=0.5, ge=0, le=1, description="probability of an up-down flip")
    rot90: float = Field(default=0.5, ge=0, le=1, description="probability of a rotation by 90, 180 or 270 degrees")
    scale: tuple[float, float] | None = Field(default=None, description="zoom range, e.g. [0.8, 1.25]; none = off")
    scale_prob: float = Field(default=0.5, ge=0, le=1)
    brightness: float = Field(default=0.0, ge=0, description="per-band offset range, in standard deviations")
    contrast: float = Field(default=0.0, ge=0, lt=1, description="per-band gain range around 1")

    @model_validator(mode="after")
    def _scale_order(self) -> AugmentConfig:
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(self.scale)}")
        return self


class OptimizerConfig(StrictModel):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD only")
    grad_clip: float | None = Field(default=None, gt=0, description="clip the gradient norm to this value")


class ScheduleConfig(StrictModel):
    """Learning rate per optimiser step: linear warm-up, then the named decay."""

    name: Literal["constant", "cosine", "poly", "step"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr_ratio: float = Field(default=0.01, ge=0, le=1, description="cosine/poly: final lr as a fraction of lr")
    power: float = Field(default=0.9, gt=0, description="poly exponent")
    step_size: int = Field(default=1000, ge=1, description="step: decay every this many steps")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step: decay factor")


class EarlyStopping(StrictModel):
    patience: int = Field(default=5, ge=1, description="validations without improvement before stopping")
    min_delta: float = Field(default=0.0, ge=0)


class ValidationConfig(StrictModel):
    every: int = Field(default=1, ge=1, description="validate every this many epochs")
    score_threshold: float = Field(default=0.3, ge=0, le=1, description="detectors: score at which boxes count")
    iou_threshold: float = Field(default=0.5, gt=0, le=1, description="detectors: IoU for a true positive")


class TrackingConfig(StrictModel):
    """MLflow tracking; default store: SQLite ``mlruns.db`` next to the run directory."""

    enabled: bool = True
    uri: str | None = Field(default=None, description="MLflow tracking URI (overridden by --tracking-uri)")
    experiment: str = "aifactory"


class TrainConfig(StrictModel):
    """A training run: data, model, loss, augmentation, optimisation, checkpoints and tracking."""

    dataset: str = Field(description="dataset folder (dataset.json + chips.csv)")
    bands: list[int] | None = Field(default=None, min_length=1, description="1-based dataset bands to use; all if none")
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ce")], min_length=1,
                                 description="weighted sum of registered losses (dense families)")
    class_weights: list[float] | None = Field(default=None, description="one weight per class, background included")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(default=8, ge=1)
    accumulate: int = Field(default=1, ge=1, description="micro-batches per optimiser step")
    num_workers: int = Field(default=2, ge=0, description="data loading processes")
    amp: bool = Field(default=True, description="mixed precision on CUDA (bf16 where supported); off on CPU")
    channels_last: bool = Field(default=True, description="channels-last memory format (dense families, CPU and CUDA)")
    deterministic: bool = Field(default=False, description="deterministic algorithms (bitwise reproducible on CPU)")
    seed: int = 0
    checkpoint_every: int = Field(default=100, ge=1, description="checkpoint every this many optimiser steps")
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1, description="log training metrics every this many steps")
    monitor: str | None = Field(default=None, description="validation metric selecting the best checkpoint "
                                                  "(default: miou for dense families, f1 for detectors)")
    early_stopping: EarlyStopping | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    val_split: Literal["val", "test"] = "val"
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file; relative ``dataset`` and ``model.weights`` paths are taken from its folder."""
        path = Path(path)
        config = validate(cls, load_yaml(path), str(path))
        return config.resolved(path.parent)

    def resolved(self, base: str | Path = ".") -> TrainConfig:
        """A copy with absolute paths (what the run directory stores): ``dataset``, ``model.weights`` and a
        ``tracking.uri`` that is a plain path (a SQLite file)."""
        base = Path(base)
        model = self.model
        if model.weights:
            model = model.model_copy(update={"weights": str((base / model.weights).resolve())})
        tracking = self.tracking
        if tracking.uri and is_path(tracking.uri):
            tracking = tracking.model_copy(update={"uri": str((base / tracking.uri).resolve())})
        return self.model_copy(update={"dataset": str((base / self.dataset).resolve()), "model": model,
                                       "tracking": tracking})

    def digest(self) -> str:
        """sha256 of the canonical JSON of the config (what ``manifest.json`` records)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
