"""Boundary/contact head for touching objects (buildings in dense blocks), and its instance decoding.

Semantic segmentation merges touching buildings into one blob. Predicting two extra maps, the object
outline and the thin band where two objects touch, lets a watershed split the blob again (the approach
of the SpaceNet/xView2 winners, e.g. Hamaguchi et al. 2018 "building instance" masks). Cheaper than Mask
R-CNN on large scenes and not limited to a fixed mask resolution. Output contract in
:mod:`aifactory.models` (``contact``).

:func:`decode_instances` decodes one batch of tiles in memory (its watershed needs every head of a whole tile in
float). ``aifactory predict`` does not use it: on rasters of any size it streams, and reads the semantic and
contact heads as one probability stack that its seam-free vectorizer separates (:mod:`aifactory.prediction.contact`,
which says why the boundary head is left out there).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import watershed
from torch import nn

from aifactory.models import ARCHITECTURES
from aifactory.models.dense import DenseParams, MultiHeadModel, head


class ContactParams(DenseParams):
    """Semantic + boundary + contact heads on an smp body (full resolution)."""

    TASK: ClassVar[str] = "contact"


class ContactNet(MultiHeadModel):
    def __init__(self, params: ContactParams, in_channels: int, num_classes: int) -> None:
        super().__init__(params, in_channels, stride=1)
        ch, hidden = self.decoder_out_channels, params.head_channels
        self.semantic = head(ch, hidden, num_classes)
        self.boundary = head(ch, hidden, 1)
        self.contact = head(ch, hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.body(x)
        return {"semantic": self.semantic(y), "boundary": self.boundary(y), "contact": self.contact(y)}


@ARCHITECTURES.register("contact_unet", ContactParams)
def contact_unet(params: ContactParams, in_channels: int, num_classes: int) -> nn.Module:
    """Semantic + boundary + contact masks (instance separation of touching objects by watershed)."""
    return ContactNet(params, in_channels, num_classes)


def decode_instances(output: dict[str, torch.Tensor], threshold: float = 0.5) -> np.ndarray:
    """Instance ids (N, H, W) int32, 0 = background: seeds are foreground pixels away from boundaries
    and contacts, grown back over the whole foreground by watershed on the boundary probability."""
    foreground = (output["semantic"].argmax(1) > 0).cpu().numpy()
    boundary = torch.sigmoid(output["boundary"][:, 0]).float().cpu().numpy()
    contact = torch.sigmoid(output["contact"][:, 0]).float().cpu().numpy()
    result = np.zeros(foreground.shape, dtype="int32")
    for b in range(foreground.shape[0]):
        seeds, _ = ndimage.label(foreground[b] & (boundary[b] < threshold) & (contact[b] < threshold))
        result[b] = watershed(boundary[b], markers=seeds, mask=foreground[b])
    return result
