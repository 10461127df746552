"""Multi-head dense models: an smp encoder-decoder body with several small convolutional heads.

The heatmap detector and the contact model share this body; they differ only in their heads and in how
the head outputs are turned into the documented output dict. The body is an smp model whose own
segmentation head is dropped, so every smp encoder and the decoders below are available, and bricks act
on it exactly as on the segmentation models.
"""

from __future__ import annotations

from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from aifactory.models.bricks import decoder_out_channels
from aifactory.models.segmentation import SmpParams, build_smp

DECODERS: dict[str, type[nn.Module]] = {
    "unet": smp.Unet, "unetplusplus": smp.UnetPlusPlus, "manet": smp.MAnet, "linknet": smp.Linknet,
    "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus, "upernet": smp.UPerNet, "segformer": smp.Segformer,
}
DecoderName = Literal["unet", "unetplusplus", "manet", "linknet", "fpn", "deeplabv3plus", "upernet", "segformer"]
_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class DenseParams(SmpParams):
    """Body of a multi-head dense model."""

    decoder: DecoderName = Field(default="unet", description="smp decoder of the body")
    head_channels: int = Field(default=64, ge=8, description="hidden channels of each head")


def head(in_channels: int, hidden: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    """3×3 conv + ReLU + 1×1 conv (CenterNet's head shape); ``bias`` initialises the output bias."""
    last = nn.Conv2d(hidden, out_channels, 1)
    assert last.bias is not None
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), last)


class MultiHeadModel(nn.Module):
    """Encoder + decoder of an smp model; :meth:`body` returns decoder features at ``stride``."""

    def __init__(self, params: DenseParams, in_channels: int, stride: int) -> None:
        super().__init__()
        extra = {"decoder_channels": _DECODER_CHANNELS[: params.encoder_depth]} \
            if params.decoder in ("unet", "unetplusplus", "manet") else {}
        base = build_smp(DECODERS[params.decoder], params, in_channels, 1, **extra)
        self.decoder_out_channels = decoder_out_channels(base)
        self.encoder: Any = base.encoder
        self.decoder: Any = base.decoder
        self.stride = stride

    def body(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.decoder(self.encoder(x))
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        return features
