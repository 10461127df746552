"""Figures shared by reports, RPS sweeps and run comparisons (matplotlib, Agg backend, atomic PNGs)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
# Debian's matplotlib next to the venv's makes mpl_toolkits warn at import; we draw no 3D
warnings.filterwarnings("ignore", message="Unable to import Axes3D", category=UserWarning)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from aifactory.evaluation.metrics import PRCurve  # noqa: E402
from aifactory.io.atomic import atomic_path  # noqa: E402


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and release it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pr_figure(curves: Mapping[str, PRCurve], title: str, mark: tuple[float, float, str] | None = None) -> Figure:
    """Precision against recall, one line per curve; ``mark`` = (recall, precision, label)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, c in curves.items():
        if len(c.recall):
            # start at recall 0 with the first precision so that short curves remain visible
            ax.step(np.r_[0.0, c.recall], np.r_[c.precision[0], c.precision], where="post", label=name)
    if mark is not None:
        ax.plot([mark[0]], [mark[1]], "k*", markersize=15, mfc="none", label=mark[2])  # hollow: the curve shows
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if curves or mark:
        ax.legend(loc="lower left", fontsize=8)
    return fig


def threshold_figure(curves: Mapping[str, PRCurve], title: str, marker: float | None = None,
                     marker_label: str = "") -> Figure:
    """F1 (solid), precision and recall (faint) against the score threshold."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, c in curves.items():
        if not len(c.scores):
            continue
        line = ax.plot(c.scores, c.f1, label=f"{name} F1 (max {c.f1.max():.3f})")[0]
        if len(curves) == 1:
            ax.plot(c.scores, c.precision, color=line.get_color(), alpha=0.35, ls="--", label="precision")
            ax.plot(c.scores, c.recall, color=line.get_color(), alpha=0.35, ls=":", label="recall")
    if marker is not None:
        ax.axvline(marker, color="k", lw=1, ls="--", label=marker_label)
    ax.set(xlabel="score threshold", ylabel="F1", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def confusion_figure(labels: Sequence[str], matrix: np.ndarray, title: str) -> Figure:
    """Row-normalised colours with raw counts written in the cells (rows: truth, columns: prediction)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype="float64"), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="truth", title=title)
    return fig


def series_figure(series: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                  title: str) -> Figure:
    """One panel per metric, one line per run: ``series[metric][run] = (steps, values)``."""
    metrics = list(series)
    cols = min(3, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for run, (steps, values) in series[metric].items():
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=run)
        ax.set(title=metric, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bar_figure(values: Mapping[str, float], title: str, ylabel: str) -> Figure:
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(values), 3.5))
    ax.bar(list(values), list(values.values()), color="#4a7ab5")
    ax.set(ylim=(0, 1.02), ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=45)
    return fig


def axes_grid(n: int, cols: int = 4, size: float = 2.6) -> tuple[Figure, Any]:
    """A figure with ``n`` image panels (axes off) in rows of ``cols``."""
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes
