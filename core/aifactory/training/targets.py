"""Instance-level training targets derived from what the dataset format stores (class mask + boxes).

The dataset stores a class mask and one box per object, not instance masks. An object's pixels are the
pixels of its class inside its box; where boxes of the same class overlap, the smaller box wins (a small
object inside a larger one's box keeps its pixels). That gives Mask R-CNN its per-instance masks and
the contact model its outline and contact maps.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

#: Two objects "touch" where they are within this many pixels of each other.
CONTACT_DISTANCE = 2


def instance_map(mask: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(H, W) int32 instance ids, 0 = none, ``k + 1`` = box ``k``."""
    height, width = mask.shape
    ids = torch.zeros(height, width, dtype=torch.int32)
    if len(boxes) == 0:
        return ids
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in torch.argsort(areas, descending=True).tolist():
        x0, y0, x1, y1 = boxes[k].tolist()
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        window = ids[r0:r1, c0:c1]
        window[mask[r0:r1, c0:c1] == labels[k]] = k + 1
    return ids


def instance_masks(ids: torch.Tensor, count: int) -> torch.Tensor:
    """(count, H, W) uint8 binary masks, one per box, from an :func:`instance_map`."""
    return (ids[None] == torch.arange(1, count + 1, dtype=torch.int32)[:, None, None]).to(torch.uint8)


def boundary_and_contact(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) float maps: the inner outline of every instance, and pixels of an instance lying within
    ``CONTACT_DISTANCE`` of another instance."""
    array = ids.numpy()
    boundary = find_boundaries(array, mode="inner") & (array > 0)
    size = 2 * CONTACT_DISTANCE + 1
    biggest = ndimage.maximum_filter(array, size=size)
    smallest = ndimage.minimum_filter(np.where(array > 0, array, np.iinfo(np.int32).max), size=size)
    contact = (array > 0) & ((biggest != array) | (smallest != array))
    return torch.from_numpy(boundary.astype("float32")), torch.from_numpy(contact.astype("float32"))
