"""Test-time augmentation: the dihedral group of the square tile (flips and quarter turns).

Each transform is applied to the input batch, the model's probabilities are mapped back with the
inverse transform and averaged (box detectors map their boxes back with :meth:`Transform.inverse_boxes`
and fuse the passes, :mod:`.detectors`). ``flips`` uses {identity, horizontal, vertical, both} (4 passes),
``d4`` all 8 symmetries of the square (4 rotations × optional flip). Averaging happens on
probabilities, after the inverse, so every pass votes on the same pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from aifactory.errors import ConfigError

TTA_MODES = ("none", "flips", "d4")


@dataclass(frozen=True)
class Transform:
    """``rot`` quarter turns (counter-clockwise) after an optional left-right ``flip``."""

    rot: int = 0
    flip: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, self.rot, dims=(-2, -1)) if self.rot else x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.rot:
            y = torch.rot90(y, -self.rot, dims=(-2, -1))
        return torch.flip(y, dims=(-1,)) if self.flip else y

    def inverse_boxes(self, boxes: np.ndarray, size: int) -> np.ndarray:
        """Boxes (K, 4) x0, y0, x1, y1 found in the transformed tile, mapped back to the tile (side ``size``).

        One inverse quarter turn sends a point (x, y) of the turned tile to (size - y, x).
        """
        x0, y0, x1, y1 = np.asarray(boxes, dtype="float64").reshape(-1, 4).T
        for _ in range(self.rot):
            x0, y0, x1, y1 = size - y1, x0, size - y0, x1
        if self.flip:
            x0, x1 = size - x1, size - x0
        return np.stack([x0, y0, x1, y1], axis=1)


def transforms(mode: str | bool) -> list[Transform]:
    """The transforms of a TTA mode (``True`` means ``d4``, ``False`` ``none``)."""
    if mode is True:
        mode = "d4"
    if mode is False or mode == "none":
        return [Transform()]
    if mode == "flips":  # identity, left-right, up-down (= rot180 ∘ left-right), both (= rot180)
        return [Transform(), Transform(0, True), Transform(2, True), Transform(2, False)]
    if mode == "d4":
        return [Transform(rot, flip) for flip in (False, True) for rot in range(4)]
    raise ConfigError(f"tta: expected one of {', '.join(TTA_MODES)}, got {mode!r}")


def predict_tta(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                mode: str | bool) -> torch.Tensor:
    """Mean of ``forward`` (returning probabilities) over the TTA transforms, mapped back."""
    passes = transforms(mode)
    total = passes[0].inverse(forward(passes[0].forward(x)))
    for transform in passes[1:]:
        total = total + transform.inverse(forward(transform.forward(x)))
    return total / len(passes) if len(passes) > 1 else total
