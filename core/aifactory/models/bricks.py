"""Built-in bricks: attention modules, ASPP, attention gates and residual skip paths.

A brick is registered like an architecture (name, parameter model, callable) and is called as
``func(params, model, where)``: it adds its modules to an encoder-decoder ``model`` in place, or raises a
one-line :class:`ConfigError` (``where`` names the config key) when the model has no place for it.

Slots of an encoder-decoder model (every segmentation_models_pytorch model, and the heatmap and contact
models built on them): ``skips`` (encoder features passed to the decoder), ``bottleneck`` (the deepest
encoder feature) and ``decoder`` (the decoder output, before the heads). Modules in the encoder slots live
in ``model.encoder.bricks`` and those of the decoder slot in ``model.decoder.bricks`` (so they are in the
state_dict); a forward hook applies them. Hooks rather than subclasses because every smp decoder keeps
its own forward: one mechanism covers all of them, and the hook reads the modules from the module it is
attached to, so copies of a model stay independent.

The modules themselves come from timm (SE, ECA, CBAM), segmentation_models_pytorch (scSE) and
torchvision (ASPP). Written here, because no installed library has them as separate blocks: the
additive attention gate of Attention U-Net (Oktay et al. 2018) and the residual skip path of MultiResUNet
(Ibtehaz & Rahman 2020).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from segmentation_models_pytorch.base.modules import SCSEModule
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from timm.layers import create_attn
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from aifactory.config import StrictModel
from aifactory.errors import ConfigError
from aifactory.models import BRICKS
from aifactory.models.base import BrickSpec

#: smp decoders that read only the deepest encoder feature (no skip connections).
SKIPLESS_DECODERS = ("PSPDecoder", "DeepLabV3Decoder")
#: smp decoders that read only some of the encoder's features: ``n`` features → the indices their forward reads
#: (smp 0.6: DeepLab v3+ its stride-4 feature and the deepest, FPN the last four, PAN and UPerNet all but the
#: first two). A skip brick elsewhere would never run: weights that train to nothing and bloat the checkpoint.
#: ``test_models`` checks that every brick attached to each decoder gets a gradient, so a new smp that reads
#: other features fails there.
DECODER_READS: dict[str, Callable[[int], set[int]]] = {
    "DeepLabV3PlusDecoder": lambda n: {2, n - 1},
    "FPNDecoder": lambda n: set(range(n - 4, n)),
    "PANDecoder": lambda n: set(range(2, n)),
    "UPerNetDecoder": lambda n: set(range(2, n)),
}
#: smp decoders that already contain an ASPP module.
ASPP_DECODERS = ("DeepLabV3Decoder", "DeepLabV3PlusDecoder")
#: smp decoders fed by a ViT encoder: its output is ``(token maps, class tokens)``, not a feature pyramid, so
#: the encoder slots have nothing to act on (a hook there would be skipped silently); the decoder slot works.
TOKEN_DECODERS = ("DPTDecoder",)

Slot = Literal["skips", "bottleneck", "decoder"]


def apply_bricks(model: nn.Module, specs: list[BrickSpec], where: str) -> nn.Module:
    """Resolve each brick spec against the registry and apply it in order; returns ``model``."""
    for i, spec in enumerate(specs):
        entry, params = BRICKS.resolve(spec, f"{where}.{i}")
        entry.func(params, model, f"{where}.{i}")
    return model


def _encoder_hook(module: Any, args: Any, features: list[torch.Tensor]) -> list[torch.Tensor]:
    bricks = module.bricks
    return [bricks[str(i)](f) if str(i) in bricks else f for i, f in enumerate(features)]


def _decoder_hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
    result: torch.Tensor = module.bricks(output)
    return result


def _require_encoder_decoder(model: nn.Module, name: str, where: str) -> tuple[Any, Any]:
    """The model's encoder and decoder (typed Any: bricks read and add attributes on them)."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module) \
            or not hasattr(encoder, "out_channels"):
        raise ConfigError(f"{where}: brick {name!r} needs an encoder-decoder architecture "
                          f"(segmentation_models_pytorch based), not {type(model).__name__}")
    return encoder, decoder


def decoder_out_channels(model: nn.Module) -> int:
    """Channels of the decoder output (what the heads read)."""
    channels = getattr(model, "decoder_out_channels", None)
    if channels is None:
        head: Any = model.segmentation_head
        first = head.head[0] if hasattr(head, "head") else head[0]  # DPT wraps its layers in ``head``
        channels = first.in_channels
    return int(channels)


def attach(model: nn.Module, slot: Slot, factory: Callable[[int, int], nn.Module], name: str, where: str) -> None:
    """Add ``factory(channels, rank)`` at every feature of ``slot`` (``rank`` 0 = deepest skip)."""
    encoder, decoder = _require_encoder_decoder(model, name, where)
    decoder_kind = type(decoder).__name__
    if slot == "decoder":
        if not hasattr(decoder, "bricks"):
            decoder.bricks = nn.Sequential()
            decoder.register_forward_hook(_decoder_hook)
        decoder.bricks.append(factory(decoder_out_channels(model), 0))
        return
    if slot == "skips" and decoder_kind in SKIPLESS_DECODERS:
        raise ConfigError(f"{where}: brick {name!r} acts on skip connections, and {decoder_kind} has none")
    if decoder_kind in TOKEN_DECODERS:
        raise ConfigError(f"{where}: brick {name!r} acts on the encoder's {slot}, and {decoder_kind}'s ViT encoder "
                          f"yields token maps, not a feature pyramid (only the decoder slot fits it)")
    channels = list(encoder.out_channels)
    last = len(channels) - 1
    reads = DECODER_READS.get(decoder_kind, lambda n: set(range(n)))(len(channels))
    indices = [last] if slot == "bottleneck" else [i for i in range(last - 1, 0, -1) if channels[i] > 0 and i in reads]
    if not hasattr(encoder, "bricks"):
        encoder.bricks = nn.ModuleDict()
        encoder.register_forward_hook(_encoder_hook)
    for rank, index in enumerate(indices):
        key = str(index)
        if key not in encoder.bricks:
            encoder.bricks[key] = nn.Sequential()
        encoder.bricks[key].append(factory(channels[index], rank))


class AttentionParams(StrictModel):
    """Channel/spatial attention placed on a slot of an encoder-decoder model."""

    where: Slot = Field(default="decoder", description="skips, bottleneck or decoder (output)")
    reduction: int = Field(default=16, ge=1, le=64, description="channel reduction of the squeeze step")


def _squeeze(channels: int, reduction: int) -> float:
    return max(1, channels // reduction) / channels


@BRICKS.register("se", AttentionParams)
def se(params: AttentionParams, model: nn.Module, where: str) -> None:
    """Squeeze-and-excitation channel attention (Hu et al. 2018, timm SEModule)."""
    attach(model, params.where,
           lambda ch, _: create_attn("se", ch, rd_ratio=_squeeze(ch, params.reduction), rd_divisor=1), "se", where)


@BRICKS.register("scse", AttentionParams)
def scse(params: AttentionParams, model: nn.Module, where: str) -> None:
    """Concurrent spatial and channel squeeze-excitation (Roy et al. 2018, smp SCSEModule)."""
    attach(model, params.where,
           lambda ch, _: SCSEModule(ch, reduction=min(params.reduction, ch)), "scse", where)


@BRICKS.register("cbam", AttentionParams)
def cbam(params: AttentionParams, model: nn.Module, where: str) -> None:
    """CBAM: channel then spatial attention (Woo et al. 2018, timm CbamModule)."""
    attach(model, params.where,
           lambda ch, _: create_attn("cbam", ch, rd_ratio=_squeeze(ch, params.reduction), rd_divisor=1),
           "cbam", where)


class EcaParams(StrictModel):
    """ECA: 1-D convolution across channels, no reduction."""

    where: Slot = Field(default="decoder", description="skips, bottleneck or decoder (output)")


@BRICKS.register("eca", EcaParams)
def eca(params: EcaParams, model: nn.Module, where: str) -> None:
    """Efficient channel attention (Wang et al. 2020, timm EcaModule)."""
    attach(model, params.where, lambda ch, _: create_attn("eca", ch), "eca", where)


class AsppParams(StrictModel):
    """Atrous spatial pyramid pooling on the deepest encoder feature."""

    rates: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1,
                             description="dilation rates (small: the bottleneck of a tile is small)")


@BRICKS.register("aspp", AsppParams)
def aspp(params: AsppParams, model: nn.Module, where: str) -> None:
    """ASPP context module (Chen et al. 2017, torchvision) at the bottleneck; channels unchanged."""
    _, decoder = _require_encoder_decoder(model, "aspp", where)
    if type(decoder).__name__ in ASPP_DECODERS:
        raise ConfigError(f"{where}: brick 'aspp' is not compatible with {type(decoder).__name__}, "
                          f"which already has ASPP")
    attach(model, "bottleneck", lambda ch, _: ASPP(ch, list(params.rates), out_channels=ch), "aspp", where)


class AttentionGate(nn.Module):
    """Additive attention gate: the decoder signal weights each skip pixel before concatenation."""

    def __init__(self, block: Any, in_channels: int, skip_channels: int) -> None:
        super().__init__()
        inter = max(1, skip_channels // 2)
        self.block = block
        self.gate_proj = nn.Sequential(nn.Conv2d(in_channels, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.skip_proj = nn.Sequential(nn.Conv2d(skip_channels, inter, 1, bias=False), nn.BatchNorm2d(inter))
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, feature_map: torch.Tensor, target_height: int, target_width: int,
                skip_connection: torch.Tensor | None = None) -> torch.Tensor:
        if skip_connection is not None:
            gate = F.interpolate(feature_map, size=(target_height, target_width),
                                 mode=self.block.interpolation_mode)
            alpha = self.psi(F.relu(self.gate_proj(gate) + self.skip_proj(skip_connection)))
            skip_connection = skip_connection * alpha
        out: torch.Tensor = self.block(feature_map, target_height, target_width, skip_connection)
        return out


@BRICKS.register("attention_gate")
def attention_gate(params: Any, model: nn.Module, where: str) -> None:
    """Attention U-Net gates on every U-Net skip connection (Oktay et al. 2018); U-Net decoders only."""
    encoder, decoder = _require_encoder_decoder(model, "attention_gate", where)
    if not isinstance(decoder, UnetDecoder):
        raise ConfigError(f"{where}: brick 'attention_gate' needs a U-Net decoder, not {type(decoder).__name__}")
    in_channels = int(encoder.out_channels[-1])
    for i, block in enumerate(decoder.blocks):
        inner = block.block if isinstance(block, AttentionGate) else block
        skip_channels = inner.conv1[0].in_channels - in_channels
        if skip_channels > 0 and not isinstance(block, AttentionGate):
            decoder.blocks[i] = AttentionGate(block, in_channels, skip_channels)
        in_channels = inner.conv2[0].out_channels


class ResPath(nn.Module):
    """Residual path: ``length`` units of 3×3 conv + 1×1 shortcut, added, ReLU, batch norm."""

    def __init__(self, channels: int, length: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(length))
        self.shortcuts = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(length))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, shortcut, norm in zip(self.convs, self.shortcuts, self.norms, strict=True):
            x = norm(F.relu(conv(x) + shortcut(x)))
        return x


class ResPathParams(StrictModel):
    """Residual skip paths, longer for shallower skips (they cross the largest semantic gap)."""

    max_length: int = Field(default=4, ge=1, le=8, description="units on the shallowest skip; one less per level")


@BRICKS.register("respath", ResPathParams)
def respath(params: ResPathParams, model: nn.Module, where: str) -> None:
    """MultiResUNet residual skip paths (Ibtehaz & Rahman 2020) on every skip connection."""
    encoder, _ = _require_encoder_decoder(model, "respath", where)
    n_skips = len([c for c in list(encoder.out_channels)[1:-1] if c > 0])
    attach(model, "skips", lambda ch, rank: ResPath(ch, max(1, params.max_length - (n_skips - 1 - rank))),
           "respath", where)
