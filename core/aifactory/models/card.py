"""Model cards: what a trained model needs to be rebuilt and fed correctly (``RUN_DIR/model.json``).

Prediction, bundles and active learning never guess: bands, normalisation, tile size, GSD and classes
come from the card written by training next to ``model.pt`` (a state_dict, loaded with
``weights_only=True``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from aifactory.config import StrictModel, validate
from aifactory.datasets.format import Normalization
from aifactory.errors import InputError
from aifactory.io.atomic import write_text_atomic
from aifactory.models import ARCHITECTURES

CARD_VERSION = 1


class ModelCard(StrictModel):
    """Contents of ``model.json``."""

    version: int = CARD_VERSION
    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    task: Literal["segmentation", "detection", "instance", "heatmap", "contact"] = "segmentation"
    in_channels: int = Field(gt=0)
    num_classes: int = Field(gt=0)
    classes: list[str]
    bands: list[int] = Field(description="1-based source bands fed to the model, in order")
    normalization: Normalization
    tile_size: int = Field(gt=0)
    gsd: float | None = None
    ignore_index: int = 255
    extra: dict[str, Any] = Field(default_factory=dict)


def build_model(card: ModelCard) -> nn.Module:
    """Instantiate the card's architecture with its parameters (random weights)."""
    entry = ARCHITECTURES.get(card.architecture, "model.json: architecture")
    params = entry.parse_params(card.params, "model.json: params")
    module: nn.Module = entry.func(params, card.in_channels, card.num_classes)
    return module


def write_card(card: ModelCard, run_dir: str | Path) -> Path:
    return write_text_atomic(Path(run_dir) / "model.json", card.model_dump_json(indent=2))


def read_card(run_dir: str | Path) -> ModelCard:
    path = Path(run_dir) / "model.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a trained run (no model.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from None
    if data.get("version", CARD_VERSION) > CARD_VERSION:
        raise InputError(f"{path}: model card version {data['version']} is newer than supported ({CARD_VERSION})")
    return validate(ModelCard, data, str(path))


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu",
                   weights: str = "model.pt") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model of a run and load its weights (``weights_only=True``); eval mode."""
    card = read_card(run_dir)
    model = build_model(card)
    path = Path(run_dir) / weights
    if not path.is_file():
        raise InputError(f"{run_dir}: no weights file {weights}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: cannot load weights: {str(exc).splitlines()[0]}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match architecture {card.architecture!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), card
