"""How tiles are chosen (``SelectOptions``): shared by ``al select``, the round config and the simulation.

Importing this module does not import torch, so configs validate cheaply (the acquisition name and its
parameters are checked against the registry, which imports torch, only when a selection runs).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aifactory.config import StrictModel


class SelectOptions(StrictModel):
    """Acquisition, per-tile aggregation and diversity of a selection."""

    strategy: str | dict[str, Any] = Field(default="entropy", description="acquisition function: a name, or "
                                           "{name: bald, samples: 16} (aifactory al --list)")
    aggregate: Literal["mean", "topk", "max"] = Field(default="mean", description="pixel scores → tile score")
    top_k: float = Field(default=0.1, gt=0, le=1, description="topk: fraction of a tile's valid pixels averaged")
    diversity: Literal["none", "kcenter"] = Field(default="none", description="kcenter: k-center greedy on encoder "
                                                  "embeddings among the top_m most uncertain tiles")
    top_m: int | None = Field(default=None, ge=1, description="kcenter: candidates kept by uncertainty "
                                                      "(default 3 × the tiles asked for)")
    min_distance: float = Field(default=0.0, ge=0, description="minimum distance between picked tile centres, in the "
                                                       "raster's CRS units (pixels without georeferencing)")
    min_valid: float = Field(default=0.5, ge=0, le=1, description="skip tiles with a smaller fraction of valid pixels")
    batch_size: int = Field(default=8, ge=1, description="tiles per forward pass")
    seed: int = 0

    @property
    def name(self) -> str:
        """The acquisition's name (``strategy`` may carry parameters)."""
        if isinstance(self.strategy, str):
            return self.strategy
        return str(self.strategy.get("name", next(iter(self.strategy), "")))

    @property
    def label(self) -> str:
        """What the tiles layer's ``strategy`` field says: ``entropy``, ``bald+kcenter``…"""
        return self.name if self.diversity == "none" else f"{self.name}+{self.diversity}"
