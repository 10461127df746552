"""The run directory (DESIGN.md, "Run directory"): manifest, metrics log, report.

::

    RUN_DIR/config.yaml      resolved TrainConfig (absolute paths)
    RUN_DIR/manifest.json    code commit (and --ref), config hash, dataset hash, package versions, seed,
                             device, start/resume/finish times and outcome
    RUN_DIR/metrics.jsonl    one JSON object per line: {"split": "train"|"val", "step", "epoch", metrics…}
    RUN_DIR/checkpoints/     step-NNNNNNNN.pt (exact resume) and best.pt (weights of the best validation)
    RUN_DIR/model.pt         state_dict of the best checkpoint (``weights_only=True``)
    RUN_DIR/model.json       aifactory.models.card.ModelCard
    RUN_DIR/report/curves.png  loss and validation metric curves
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aifactory
from aifactory.coderef import REF_ENV
from aifactory.io.atomic import atomic_path, write_text_atomic

PACKAGES = ("aifactory", "torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy", "rasterio",
            "pydantic", "mlflow-skinny")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """Git commit of the running aifactory code, whether its files differ from it, and the --ref asked."""
    package = Path(aifactory.__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=package)
    status = _git("status", "--porcelain", "--", ".", cwd=package) if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "ref": os.environ.get(REF_ENV), "path": str(package)}


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def dataset_digest(dataset_dir: Path) -> str:
    """sha256 of the dataset's manifest.json (written by the builder), else of dataset.json + chips.csv."""
    digest = hashlib.sha256()
    manifest = dataset_dir / "manifest.json"
    for path in [manifest] if manifest.is_file() else [dataset_dir / "dataset.json", dataset_dir / "chips.csv"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))


class MetricsLog:
    """Append-only ``metrics.jsonl``; truncated back to a checkpoint's length on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        if self.path.exists():
            with self.path.open("r+b") as stream:
                stream.truncate(size)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], monitor: str, path: Path) -> Path:
    """Training loss (raw and smoothed) and validation loss per step; validation metrics per step."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # a system matplotlib next to the venv's warns about Axes3D
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt

    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    val = [r for r in records if r.get("split") == "val"]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax_loss.plot(steps, losses, color="tab:blue", alpha=0.35, label="train (per log step)")
        smooth, value = [], losses[0]
        for loss in losses:
            value = 0.9 * value + 0.1 * loss
            smooth.append(value)
        ax_loss.plot(steps, smooth, color="tab:blue", label="train (smoothed)")
    val_loss = [r for r in val if r.get("loss") is not None]
    if val_loss:
        ax_loss.plot([r["step"] for r in val_loss], [r["loss"] for r in val_loss], "o-", color="tab:orange",
                     label="validation")
    ax_loss.set(xlabel="optimiser step", ylabel="loss", title="Loss")
    if train or val_loss:
        ax_loss.legend(loc="upper right")
    for name in dict.fromkeys(k for r in val for k in r if k in (monitor, "miou", "f1", "precision", "recall")):
        points = [(r["step"], r[name]) for r in val if name in r]
        ax_metric.plot(*zip(*points, strict=True), "o-", label=name, linewidth=2.5 if name == monitor else 1.2)
    ax_metric.set(xlabel="optimiser step", ylabel="score", title=f"Validation (best by {monitor})", ylim=(0, 1))
    if val:
        ax_metric.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
