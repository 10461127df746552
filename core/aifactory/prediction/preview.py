"""A quicklook of a prediction: the scores raster, decimated through its overviews, in class colours.

Written next to the outputs as ``preview.png`` so that a person can judge a run at a glance without
opening QGIS. Reading goes through the COG's overviews at ≤ ``MAX_SIDE`` pixels, so it costs the same
for any raster size.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.patches import Patch

from aifactory.io.atomic import atomic_path

MAX_SIDE = 1024


def write_preview(scores_path: str | Path, out_path: str | Path, classes: list[str], title: str = "") -> Path:
    """Render ``scores_path`` (one uint8 band per class) as a colour composite with a legend."""
    with rasterio.open(scores_path) as ds:
        scale = max(ds.width, ds.height) / MAX_SIDE
        shape = (max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
        scores = ds.read(out_shape=(ds.count, *shape)).astype("float32") / 255.0
        valid = ds.dataset_mask(out_shape=shape) > 0
    colours = plt.get_cmap("tab10")(np.arange(len(classes)))[:, :3].astype("float32")
    strongest = scores.max(axis=0)
    rgb = colours[scores.argmax(axis=0)] * strongest[..., None] + 0.08 * (1 - strongest[..., None])
    image = np.concatenate([rgb, valid[..., None].astype("float32")], axis=-1)
    fig, ax = plt.subplots(figsize=(8, 8 * shape[0] / shape[1] + 0.6), dpi=110)
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=colours[i], label=name) for i, name in enumerate(classes)], loc="lower right",
              fontsize=8, framealpha=0.8)
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 1})  # a quicklook: half the time of 6
    plt.close(fig)
    return out_path
