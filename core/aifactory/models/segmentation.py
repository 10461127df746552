"""Semantic segmentation architectures: segmentation_models_pytorch 0.6 decoders on smp/timm encoders,
plus torchvision's LR-ASPP and FCN. Output: logits ``(N, num_classes, H, W)``.

Every encoder starts from random weights (``encoder_weights=None``): no download, ever. Any band count
(smp adapts the encoder's first convolution). Encoder names are smp's (``resnet18``, ``efficientnet-b0``,
``mobilenet_v2``, ``mit_b0``…) or any timm model as ``tu-<name>``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import segmentation_models_pytorch as smp
import torch
from pydantic import Field
from torch import nn
from torchvision.models import segmentation as tvseg

from aifactory.errors import ConfigError
from aifactory.models import ARCHITECTURES
from aifactory.models.base import ArchParams, adapt_input, no_bricks
from aifactory.models.bricks import apply_bricks


class SmpParams(ArchParams):
    """Encoder choice shared by the smp architectures."""

    encoder: str = Field(default="resnet18", description="smp encoder name, or tu-<timm model>")
    encoder_depth: int = Field(default=5, ge=3, le=5, description="encoder stages used")


def build_smp(model_class: type[nn.Module], params: SmpParams, in_channels: int, num_classes: int,
              **decoder: Any) -> nn.Module:
    """An smp model with random weights and the requested bricks; a bad encoder name is a ConfigError."""
    try:
        model = model_class(encoder_name=params.encoder, encoder_weights=None, encoder_depth=params.encoder_depth,
                            in_channels=in_channels, classes=num_classes, **decoder)
    except (KeyError, ValueError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        raise ConfigError(f"model.params: cannot build {model_class.__name__} with encoder "
                          f"{params.encoder!r}: {message.splitlines()[0]}") from None
    return apply_bricks(model, params.bricks, "model.params.bricks")


class UnetParams(SmpParams):
    """U-Net decoder."""

    decoder_channels: list[int] = Field(default_factory=lambda: [256, 128, 64, 32, 16],
                                        description="channels per decoder block, deepest first")
    decoder_interpolation: Literal["nearest", "bilinear"] = "nearest"


@ARCHITECTURES.register("unet", UnetParams)
def unet(params: UnetParams, in_channels: int, num_classes: int) -> nn.Module:
    """U-Net (Ronneberger 2015): encoder-decoder with skip connections; any encoder, any band count."""
    return build_smp(smp.Unet, params, in_channels, num_classes,
                     decoder_channels=params.decoder_channels[: params.encoder_depth],
                     decoder_interpolation=params.decoder_interpolation)


@ARCHITECTURES.register("unetplusplus", UnetParams)
def unetplusplus(params: UnetParams, in_channels: int, num_classes: int) -> nn.Module:
    """U-Net++ (Zhou 2018): nested dense skip pathways between encoder and decoder."""
    return build_smp(smp.UnetPlusPlus, params, in_channels, num_classes,
                     decoder_channels=params.decoder_channels[: params.encoder_depth],
                     decoder_interpolation=params.decoder_interpolation)


class ManetParams(UnetParams):
    """MA-Net decoder."""

    decoder_pab_channels: int = Field(default=64, ge=8, description="channels of the position attention block")


@ARCHITECTURES.register("manet", ManetParams)
def manet(params: ManetParams, in_channels: int, num_classes: int) -> nn.Module:
    """MA-Net (Fan 2020): multi-scale attention decoder (position + multi-scale fusion attention)."""
    return build_smp(smp.MAnet, params, in_channels, num_classes,
                     decoder_channels=params.decoder_channels[: params.encoder_depth],
                     decoder_pab_channels=params.decoder_pab_channels)


@ARCHITECTURES.register("linknet", SmpParams)
def linknet(params: SmpParams, in_channels: int, num_classes: int) -> nn.Module:
    """LinkNet (Chaurasia 2017): light decoder adding (not concatenating) encoder features; fast."""
    return build_smp(smp.Linknet, params, in_channels, num_classes)


class FpnParams(SmpParams):
    """FPN decoder."""

    pyramid_channels: int = Field(default=256, ge=8)
    segmentation_channels: int = Field(default=128, ge=32, multiple_of=32, description="group norm of 32 groups")
    merge_policy: Literal["add", "cat"] = "add"
    dropout: float = Field(default=0.2, ge=0, lt=1)


@ARCHITECTURES.register("fpn", FpnParams)
def fpn(params: FpnParams, in_channels: int, num_classes: int) -> nn.Module:
    """Feature Pyramid Network (Lin 2017) as a segmentation decoder, output upsampled from 1/4."""
    return build_smp(smp.FPN, params, in_channels, num_classes, decoder_pyramid_channels=params.pyramid_channels,
                     upsampling=2 ** (params.encoder_depth - 3),
                     decoder_segmentation_channels=params.segmentation_channels,
                     decoder_merge_policy=params.merge_policy, decoder_dropout=params.dropout)


class PspParams(SmpParams):
    """PSPNet decoder (uses the first ``encoder_depth`` stages, 3 by default: output stride 8)."""

    encoder_depth: int = Field(default=3, ge=3, le=5)
    psp_out_channels: int = Field(default=512, ge=8)
    dropout: float = Field(default=0.2, ge=0, lt=1)


@ARCHITECTURES.register("pspnet", PspParams)
def pspnet(params: PspParams, in_channels: int, num_classes: int) -> nn.Module:
    """PSPNet (Zhao 2017): pyramid pooling over the deepest feature for global context."""
    return build_smp(smp.PSPNet, params, in_channels, num_classes, psp_out_channels=params.psp_out_channels,
                     psp_dropout=params.dropout, upsampling=2 ** params.encoder_depth)


class DeepLabParams(SmpParams):
    """DeepLab decoders."""

    output_stride: Literal[8, 16] = Field(default=16, description="encoder output stride (dilated last stages)")
    decoder_channels: int = Field(default=256, ge=8)
    atrous_rates: list[int] = Field(default_factory=lambda: [12, 24, 36], min_length=3, max_length=3)


@ARCHITECTURES.register("deeplabv3", DeepLabParams)
def deeplabv3(params: DeepLabParams, in_channels: int, num_classes: int) -> nn.Module:
    """DeepLabV3 (Chen 2017): dilated encoder + ASPP, bilinear upsampling to the input size."""
    return build_smp(smp.DeepLabV3, params, in_channels, num_classes, encoder_output_stride=params.output_stride,
                     decoder_channels=params.decoder_channels, decoder_atrous_rates=tuple(params.atrous_rates),
                     upsampling=min(params.output_stride, 2 ** params.encoder_depth))


@ARCHITECTURES.register("deeplabv3plus", DeepLabParams)
def deeplabv3plus(params: DeepLabParams, in_channels: int, num_classes: int) -> nn.Module:
    """DeepLabV3+ (Chen 2018): ASPP plus a light decoder fusing the stride-4 feature for sharp edges."""
    return build_smp(smp.DeepLabV3Plus, params, in_channels, num_classes,
                     encoder_output_stride=params.output_stride, decoder_channels=params.decoder_channels,
                     decoder_atrous_rates=tuple(params.atrous_rates))


class PanParams(SmpParams):
    """PAN decoder (its feature pyramid attention pools the 1/16 feature three times: tiles ≥ 128)."""

    MIN_TILE: ClassVar[int] = 128
    decoder_channels: int = Field(default=32, ge=8)


@ARCHITECTURES.register("pan", PanParams)
def pan(params: PanParams, in_channels: int, num_classes: int) -> nn.Module:
    """Pyramid Attention Network (Li 2018): feature pyramid attention + global attention upsampling."""
    return build_smp(smp.PAN, params, in_channels, num_classes, decoder_channels=params.decoder_channels)


class UperParams(SmpParams):
    """UPerNet decoder."""

    decoder_channels: int = Field(default=256, ge=8)


@ARCHITECTURES.register("upernet", UperParams)
def upernet(params: UperParams, in_channels: int, num_classes: int) -> nn.Module:
    """UPerNet (Xiao 2018): pyramid pooling + FPN fusion of all encoder stages."""
    return build_smp(smp.UPerNet, params, in_channels, num_classes, decoder_channels=params.decoder_channels)


class SegformerParams(SmpParams):
    """SegFormer decoder; use a Mix Transformer encoder (``mit_b0``…) for the original model."""

    encoder: str = Field(default="mit_b0", description="smp encoder name (mit_b0…mit_b5 for the original)")
    segmentation_channels: int = Field(default=256, ge=8)


@ARCHITECTURES.register("segformer", SegformerParams)
def segformer(params: SegformerParams, in_channels: int, num_classes: int) -> nn.Module:
    """SegFormer (Xie 2021): hierarchical transformer encoder + all-MLP decoder."""
    return build_smp(smp.Segformer, params, in_channels, num_classes,
                     decoder_segmentation_channels=params.segmentation_channels)


class DptParams(ArchParams):
    """DPT: a timm ViT encoder (any image size) and reassemble/fusion decoder (channels kept small)."""

    encoder: str = Field(default="tu-vit_tiny_patch16_224", description="a timm ViT as tu-<name>")
    encoder_depth: int = Field(default=4, ge=1, le=4)
    intermediate_channels: list[int] = Field(default_factory=lambda: [64, 128, 256, 256], min_length=4,
                                             max_length=4)
    fusion_channels: int = Field(default=64, ge=8)


@ARCHITECTURES.register("dpt", DptParams)
def dpt(params: DptParams, in_channels: int, num_classes: int) -> nn.Module:
    """Dense Prediction Transformer (Ranftl 2021): ViT tokens reassembled into a multi-scale decoder."""
    try:
        model = smp.DPT(encoder_name=params.encoder, encoder_weights=None, encoder_depth=params.encoder_depth,
                        decoder_intermediate_channels=tuple(params.intermediate_channels[: params.encoder_depth]),
                        decoder_fusion_channels=params.fusion_channels, in_channels=in_channels,
                        classes=num_classes, dynamic_img_size=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model.params: cannot build DPT with encoder {params.encoder!r}: "
                          f"{str(exc).splitlines()[0]}") from None
    return apply_bricks(model, params.bricks, "model.params.bricks")


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model returning the ``"out"`` logits tensor (the common contract)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)["out"]
        return out


@ARCHITECTURES.register("lraspp", ArchParams)
def lraspp(params: ArchParams, in_channels: int, num_classes: int) -> nn.Module:
    """LR-ASPP on MobileNetV3-Large (Howard 2019, torchvision): a very light segmentation model."""
    no_bricks(params, "lraspp")
    model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    adapt_input(model, "backbone.0.0", in_channels)
    return TorchvisionSegmentation(model)


class FcnParams(ArchParams):
    """FCN backbone."""

    backbone: Literal["resnet50", "resnet101"] = "resnet50"


@ARCHITECTURES.register("fcn", FcnParams)
def fcn(params: FcnParams, in_channels: int, num_classes: int) -> nn.Module:
    """Fully convolutional network (Long 2015, torchvision) on a dilated ResNet, output stride 8."""
    no_bricks(params, "fcn")
    builder = tvseg.fcn_resnet50 if params.backbone == "resnet50" else tvseg.fcn_resnet101
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    adapt_input(model, "backbone.conv1", in_channels)
    return TorchvisionSegmentation(model)
