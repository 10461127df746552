"""Model cards: what a trained model needs to be rebuilt and fed correctly (``RUN_DIR/model.json``).

Prediction, bundles and active learning never guess: bands, normalisation, tile size, GSD and classes
come from the card written by training next to ``model.pt`` (a state_dict, loaded with
``weights_only=True``).

Importing this module does not import torch (only building or loading a model does), so the torch-free
bundle predictor reads cards too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from aifactory.config import StrictModel, read_versioned_json
from aifactory.datasets.format import Normalization
from aifactory.io.atomic import write_text_atomic
from aifactory.models import ARCHITECTURES

if TYPE_CHECKING:
    import torch
    from torch import nn

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
    return read_versioned_json(Path(run_dir) / "model.json", ModelCard, CARD_VERSION, "not a trained run")


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu",
                   weights: str = "model.pt") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model of a run and load its weights (``weights_only=True``, strict); eval mode."""
    from aifactory.models.base import load_weights

    card = read_card(run_dir)
    model = build_model(card)
    load_weights(model, Path(run_dir) / weights, strict=True)
    return model.to(device).eval(), card
