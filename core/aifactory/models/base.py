"""Shared pieces of the built-in architectures: parameter base class, band adaptation, local weights.

``ArchParams`` carries the class-level facts the trainer and the test-suite need without building a
model: ``TASK`` (the output contract family, see :mod:`aifactory.models`) and ``MIN_TILE`` (the smallest
input side). ``bricks`` is validated against the brick registry when the model is built (the brick
needs the built model to know its channels and whether it fits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from aifactory.config import StrictModel
from aifactory.errors import ConfigError, InputError

BrickSpec = str | dict[str, Any]


class ArchParams(StrictModel):
    """Parameters every architecture accepts."""

    TASK: ClassVar[str] = "segmentation"
    MIN_TILE: ClassVar[int] = 32

    bricks: list[BrickSpec] = Field(default_factory=list,
                                    description="bricks to add, by name or {name: ..., params}")


def no_bricks(params: ArchParams, architecture: str) -> None:
    """For architectures whose structure has no brick slots: any brick is a one-line error."""
    if params.bricks:
        raise ConfigError(f"architecture {architecture!r} accepts no bricks (got {params.bricks!r}); "
                          f"bricks fit the encoder-decoder architectures")


def replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` reading ``in_channels`` bands (random init, as every weight here)."""
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,  # type: ignore[arg-type]
                     conv.padding, conv.dilation, conv.groups,  # type: ignore[arg-type]
                     bias=conv.bias is not None, padding_mode=conv.padding_mode)


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (e.g. ``backbone.body.conv1``)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def adapt_input(root: nn.Module, path: str, in_channels: int) -> None:
    """Make the first convolution at ``path`` read ``in_channels`` bands."""
    conv = root.get_submodule(path)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{path} is {type(conv).__name__}, expected Conv2d")
    set_submodule(root, path, replace_first_conv(conv, in_channels))


def _global(size: Any) -> bool:
    return all(side == 1 for side in (size if isinstance(size, tuple) else (size,)))


def pooled_batch_norm(model: nn.Module) -> str | None:
    """The first block that batch-normalises a globally pooled (1×1) feature, or None.

    Such a block (the image-level branch of ASPP in DeepLabV3/V3+ and the ``aspp`` brick, PAN's pyramid
    attention, UPerNet's pyramid pooling) has one value per channel and sample: in training mode a batch of
    one sample gives batch norm nothing to normalise over and torch stops in the forward pass. Found
    structurally (an adaptive pool to 1×1 followed by batch norm in the same ``nn.Sequential``), so the
    trainer can refuse a batch size of 1 before it starts rather than at its first step.
    """
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for i, child in enumerate(children):
            if isinstance(child, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and _global(child.output_size) and any(
                    isinstance(m, nn.modules.batchnorm._BatchNorm) for later in children[i + 1:]
                    for m in later.modules()):
                return name
    return None


#: in the state_dict key of a brick on an encoder feature (see load_weights)
ENCODER_BRICK_KEY = ".encoder.bricks."


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> list[str]:
    """Load a local state_dict (``weights_only=True``: no code runs) into ``model``.

    Accepts a bare state_dict (``model.pt`` of a run) or a training checkpoint (``{"model": ...}``).
    With ``strict=False`` tensors whose name or shape does not match are skipped (e.g. a head for another
    class count) and their names returned; with ``strict=True`` any mismatch is an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"{path}: cannot load weights: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state_dict")
    own = model.state_dict()
    # runs made before bricks went only on the features a decoder reads (models.bricks.DECODER_READS) hold
    # weights of bricks that never ran: dropping them changes no output
    state = {k: v for k, v in state.items() if k in own or ENCODER_BRICK_KEY not in f".{k}"}
    skipped = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    if len(skipped) == len(state) and state:
        raise InputError(f"{path}: weights share no tensor with this model (another architecture?), "
                         f"e.g. {next(iter(state))!r}")
    if strict and (skipped or missing):
        first = (skipped or missing)[0]
        raise InputError(f"{path}: weights do not match the model ({len(skipped)} unexpected or mis-shaped, "
                         f"{len(missing)} missing tensors, e.g. {first!r})")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped + missing
