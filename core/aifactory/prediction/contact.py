"""Contact models (task family ``contact``, e.g. ``contact_unet``) at prediction time: their heads turned, tile by
tile and before blending, into one class-probability stack that the streaming pipeline blends, ensembles, writes
and vectorizes exactly like a segmentation model trained on ``boundary`` labels.

Why this shape: the vectorizer already separates touching objects of ``boundary`` label models (their
``contact`` class is not an object; objects claim back the contact pixels beside them, :mod:`.vectorize`) in
strips, with no seam along tile or strip lines. A contact model says the same thing with two heads instead of one
extra class: softmax ``semantic`` s (background s0 and the object classes s_k) and sigmoid ``contact`` c. Read as a
joint distribution over background, "object of class k away from a contact" and "contact between two objects"::

    P(background) = s0,   P(k) = s_k · (1 − c),   P(contact) = c · (1 − s0)

which sums to 1 per pixel, so blending, ensembles (the mean of stacks) and the implied background of the scores
raster keep their meaning, and the scores COG gets one more band, ``contact``. A contact model trained on
``boundary`` datasets has a ``contact`` class in its semantic head as well: that class joins the contact band
(P(contact) = s_contact + c · (1 − s0 − s_contact)) rather than giving the raster two bands of one name.

The ``boundary`` head (every object's inner outline) is not used. In
:func:`aifactory.models.contact.decode_instances` it is the relief of a watershed over a whole tile's float
maps; here, objects are cut apart by the contact band alone, because the watershed would need every pixel of an
object at once in float (the streamed vectorizer sees uint8 strips, and an object cut by a tile line would split
differently in each tile), and an outline band subtracted like the contact band would shrink every object, not
only touching ones.

One function serves both runtimes (torch tensors in :mod:`.runtime`, numpy arrays in the torch-free
:mod:`aifactory.bundle.runtime`): it uses arithmetic and slicing only, plus the array library's own concatenation;
torch is never imported for numpy input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from aifactory.datasets.render import CONTACT_CLASS

if TYPE_CHECKING:
    import torch

CONTACT_TASK = "contact"
#: The heads the conversion reads (the network's ``boundary`` output is left out, see the module docstring).
HEADS = ("semantic", "contact")
#: The name of the background of a single-class (sigmoid) semantic head, which has none in the card.
BACKGROUND = "background"

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def merged_index(classes: Sequence[str]) -> int | None:
    """The channel of a ``contact`` class in the semantic head (a model trained on ``boundary`` labels), or None."""
    if len(classes) > 1 and CONTACT_CLASS in classes[1:]:
        return list(classes).index(CONTACT_CLASS, 1)
    return None


def stack_classes(classes: Sequence[str]) -> list[str]:
    """The classes of :func:`contact_stack`'s channels for a model with ``classes``: background first, the object
    classes, then :data:`~aifactory.datasets.render.CONTACT_CLASS` last."""
    if len(classes) == 1:
        return [BACKGROUND, classes[0], CONTACT_CLASS]
    merged = merged_index(classes)
    objects = [name for index, name in enumerate(classes[1:], start=1) if index != merged]
    return [classes[0], *objects, CONTACT_CLASS]


def _concat(parts: list[Array]) -> Array:
    """Concatenation along the channels, with the parts' own library (torch only when they are tensors)."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=1)
    import torch

    return torch.cat(parts, dim=1)


def contact_stack(semantic: Array, contact: Array, merged: int | None = None) -> Array:
    """The (N, K, H, W) probability stack (:func:`stack_classes` order) of semantic probabilities (N, C, H, W)
    (softmax, or one sigmoid channel) and contact probabilities (N, 1, H, W); ``merged``: the semantic channel of a
    ``contact`` class (:func:`merged_index`), which joins the contact band."""
    if semantic.shape[1] == 1:  # a single sigmoid class: its background is what it leaves
        semantic = _concat([1 - semantic, semantic])
    background = semantic[:, :1]
    if merged is None:
        objects = semantic[:, 1:]
        touching = contact * (1 - background)
    else:
        extra = semantic[:, merged:merged + 1]
        objects = _concat([semantic[:, 1:merged], semantic[:, merged + 1:]])
        touching = extra + contact * (1 - background - extra)
    return _concat([background, objects * (1 - contact), touching])


def contact_scores(outputs: Mapping[str, Array], probabilities: Callable[[Array], Array],
                   classes: Sequence[str]) -> Array:
    """:func:`contact_stack` of a contact network's raw ``outputs`` (logits by head name), ``probabilities`` being
    the runtime's softmax-or-sigmoid over channels (a sigmoid for the one-channel contact head)."""
    missing = [name for name in HEADS if name not in outputs]
    if missing:
        raise ValueError(f"a contact model's outputs lack {', '.join(missing)} (got {', '.join(outputs)})")
    return contact_stack(probabilities(outputs["semantic"]), probabilities(outputs["contact"]),
                         merged_index(classes))
