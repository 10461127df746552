"""Model library: the architecture and brick registries, model cards, loading trained models.

``ARCHITECTURES`` entries are called as ``func(params, in_channels, num_classes) -> torch.nn.Module``.
Segmentation models return logits (N, num_classes, H, W). Built-in entries live in
``aifactory.models.architectures``; third parties register through the ``aifactory.architectures``
entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aifactory.registry import Registry

ARCHITECTURES: Registry[Callable[..., Any]] = Registry(
    "architecture", "aifactory.architectures", builtin_modules=("aifactory.models.architectures",))
