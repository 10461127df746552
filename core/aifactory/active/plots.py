"""The label-efficiency figure: a metric against labelled tiles, mean line and spread band per strategy.

Imports :mod:`aifactory.evaluation.plots` for its Agg set-up and atomic PNG writer (one way to save figures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from aifactory.evaluation.plots import plt, save

__all__ = ["curve_figure", "save"]

Series = tuple[Sequence[float], Sequence[float], Sequence[float] | None]


def curve_figure(series: Mapping[str, Series], ylabel: str, title: str,
                 target: tuple[float, str] | None = None) -> Figure:
    """``series[name] = (labelled tiles, mean, spread or None)``; ``target`` = (value, label): a dashed line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, (x, mean, spread) in series.items():
        line = ax.plot(x, mean, marker="o", markersize=4, label=name, lw=2.2 if name == "random" else 1.6,
                       color="0.35" if name == "random" else None)[0]
        if spread is not None:
            low, high = np.asarray(mean) - np.asarray(spread), np.asarray(mean) + np.asarray(spread)
            ax.fill_between(x, low, high, alpha=0.15, color=line.get_color())
    if target is not None:
        ax.axhline(target[0], ls="--", lw=1, color="0.35", label=target[1])
    ax.set(xlabel="labelled tiles", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
