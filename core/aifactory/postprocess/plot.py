"""Before/after picture of a chain: what was removed, merged or reshaped is easier seen than counted.

The caller saves it into the temporary file of its own atomic write (``postprocess --plot`` publishes the
picture only with the output).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd

from aifactory.postprocess.base import CLASS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Features drawn per panel at most (a random, fixed sample beyond): a picture, not a map.
MAX_FEATURES = 20_000


def _sample(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return frame.sample(MAX_FEATURES, random_state=0) if len(frame) > MAX_FEATURES else frame


def before_after_figure(before: gpd.GeoDataFrame, after: gpd.GeoDataFrame, title: str = "") -> Figure:
    """The input (left) and the output (right) side by side, coloured by class (close it with :func:`save_png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 6), sharex=True, sharey=True)
    for ax, frame, label in ((axes[0], before, "before"), (axes[1], after, "after")):
        shown = _sample(frame)
        if len(shown):
            by_class = CLASS if CLASS in shown.columns and shown[CLASS].notna().any() else None
            shown.plot(ax=ax, column=by_class, categorical=True, legend=by_class is not None and ax is axes[1],
                       cmap="tab10", edgecolor="black", linewidth=0.3, alpha=0.8, markersize=4)
        sampled = f", {len(shown)} drawn" if len(shown) < len(frame) else ""
        ax.set_title(f"{label}: {len(frame)} features{sampled}")
        ax.set_aspect("equal")
    if before.crs is None and after.crs is None:
        axes[0].invert_yaxis()  # pixel space: rows grow downwards (the axes are shared)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG to ``path`` as is (a caller's temporary file) and release it."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)

