"""Built-in architectures (segmentation on segmentation_models_pytorch; offline, no pretrained download)."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from pydantic import Field
from torch import nn

from aifactory.config import StrictModel
from aifactory.models import ARCHITECTURES


class UnetParams(StrictModel):
    """U-Net on a timm/smp encoder."""

    encoder: str = Field("resnet18", description="smp encoder name")
    encoder_depth: int = Field(5, ge=3, le=5)
    decoder_channels: list[int] = Field(default_factory=lambda: [256, 128, 64, 32, 16])
    attention: str | None = Field(None, description="decoder attention brick: 'scse' or none")


@ARCHITECTURES.register("unet", UnetParams)
def unet(params: Any, in_channels: int, num_classes: int) -> nn.Module:
    """U-Net (Ronneberger 2015): encoder-decoder with skip connections; any encoder, any band count."""
    return smp.Unet(encoder_name=params.encoder, encoder_weights=None, encoder_depth=params.encoder_depth,
                    decoder_channels=params.decoder_channels[: params.encoder_depth],
                    decoder_attention_type=params.attention, in_channels=in_channels, classes=num_classes)
