"""``dataset build``: export a plan's chips into the dataset folder format, atomically.

Chips are written source by source, window by window: memory is one chip plus the running statistics.
The per-band normalisation statistics come from the train split only (valid pixels), merged chip by chip
with Chan's parallel-variance update, so no chip is kept after it is written. The folder (chips,
``chips.csv``, ``dataset.json``, ``manifest.json``, ``balance.png``) appears whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from aifactory import __version__
from aifactory.catalog.splits import SPLIT_NAMES
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.format import DatasetMeta, Normalization, write_chips
from aifactory.datasets.plan import DatasetPlan, chip_window, plan_dataset
from aifactory.datasets.render import render_chip, window_footprint
from aifactory.io.atomic import atomic_path
from aifactory.io.raster import open_raster, window_transform
from aifactory.progress import reporter


class RunningStats:
    """Per-band count, mean and sum of squared deviations, merged batch by batch (Chan et al. 1979)."""

    def __init__(self, bands: int) -> None:
        self.count = 0
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)

    def update(self, image: np.ndarray, valid: np.ndarray) -> None:
        values = image[:, valid].astype("float64")
        n = values.shape[1]
        if n == 0:
            return
        mean = values.mean(axis=1)
        m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta ** 2 * self.count * n / total
        self.count = total

    def normalization(self) -> Normalization:
        std = np.sqrt(self.m2 / max(self.count - 1, 1))
        std[~(std > 0)] = 1.0  # a constant band must not divide by zero
        return Normalization(mean=[float(v) for v in self.mean], std=[float(v) for v in std])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tif(path: Path, array: np.ndarray, crs: Any, transform: Any, compress: str,
               nodata: float | None = None) -> None:
    profile: dict[str, Any] = {"driver": "GTiff", "height": array.shape[-2], "width": array.shape[-1],
                               "count": 1 if array.ndim == 2 else array.shape[0], "dtype": array.dtype.name,
                               "crs": crs, "transform": transform, "nodata": nodata}
    if compress != "none":
        profile.update(compress=compress, predictor=2 if array.dtype.kind in "iu" else 1)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1) if array.ndim == 2 else ds.write(array)


def balance_chart(plan: DatasetPlan, path: Path) -> None:
    """Grouped bars: objects per class in each split (and chips per split), as a PNG."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's system matplotlib next to the venv's one: harmless
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt

    table = plan.table()
    names = table["class"].tolist()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 4), dpi=100)
    x = np.arange(len(names))
    width = 0.8 / len(SPLIT_NAMES)
    for i, split in enumerate(SPLIT_NAMES):
        bars = ax.bar(x + (i - 1) * width, table[split], width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("objects (last group: chips)")
    ax.set_title(f"Class balance per split — {sum(plan.chip_counts().values())} chips of "
                 f"{plan.config.chips.size} px")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _export_chips(plan: DatasetPlan, folder: Path) -> tuple[pd.DataFrame, RunningStats, dict[str, str]]:
    """Write every chip; returns the chips table, the train statistics and the chips' hashes."""
    config = plan.config.chips
    bands = plan.bands
    stats, fallback = RunningStats(len(bands)), RunningStats(len(bands))
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rows, hashes = [], {}
    progress = reporter()
    done, total = 0, len(plan.chips)
    progress.progress("chips", 0.0, f"{total} chips")
    for source in plan.sources:
        chips = plan.chips[plan.chips["source"] == source.index]
        if chips.empty:
            continue
        index = source.label_index()
        with open_raster(source.path) as ds:
            crs = ds.crs if source.info.georeferenced else None
            for chip in chips.itertuples(index=False):
                window = chip_window(chip)
                image, mask, valid, boxes = render_chip(ds, index, window, bands, config.label_mode,
                                                        config.core_factor, plan.contact_index)
                transform = window_transform(ds.transform, window)
                image_rel, mask_rel = f"images/{chip.chip_id}.tif", f"masks/{chip.chip_id}.tif"
                _write_tif(folder / image_rel, image, crs, transform, config.compress, ds.nodata)
                _write_tif(folder / mask_rel, mask, crs, transform, config.compress)
                (stats if chip.split == "train" else fallback).update(image, valid)
                hashes[image_rel] = sha256_file(folder / image_rel)
                hashes[mask_rel] = sha256_file(folder / mask_rel)
                rows.append({"chip_id": chip.chip_id, "split": chip.split, "image": image_rel, "mask": mask_rel,
                             "source": source.name, "source_crs": source.info.crs if crs else "",
                             "col_off": chip.col_off, "row_off": chip.row_off, "width": chip.width,
                             "height": chip.height,
                             "footprint_wkt": window_footprint(ds.transform, window).wkt,
                             "n_objects": len(boxes), "boxes": boxes})
                done += 1
                progress.progress("chips", done / total, f"{done}/{total} chips")
    if stats.count == 0:
        progress.warning("no train chip: normalisation statistics come from the other splits")
        stats = fallback
    return pd.DataFrame(rows), stats, hashes


def _manifest(plan: DatasetPlan, hashes: dict[str, str]) -> dict[str, Any]:
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "aifactory_version": __version__,
        "config": plan.config.model_dump(mode="json"),
        "sources": [{"name": s.name, "path": str(s.path), "sha256": sha256_file(s.path),
                     "crs": s.info.crs if s.info.georeferenced else None, "objects": len(s.labels)}
                    for s in plan.sources],
        "classes": plan.classes,
        "counts": {"objects": plan.objects, "chips": plan.chip_counts(), "dropped": plan.dropped},
        "chips": hashes,
    }


def _meta(plan: DatasetPlan, normalization: Normalization) -> DatasetMeta:
    first = plan.sources[0].info
    gsds = [s.pixel_size for s in plan.sources if s.info.georeferenced]
    config = plan.config
    return DatasetMeta(
        classes=plan.classes, class_level=config.classes.level, bands=len(plan.bands),
        band_names=[first.band_descriptions[b - 1] or f"band {b}" for b in plan.bands] if first.band_descriptions
        else [f"band {b}" for b in plan.bands],
        dtype=first.dtype, tile_size=config.chips.size, gsd=float(np.median(gsds)) if gsds else None,
        normalization=normalization, splits=plan.chip_counts(),
        extra={"label_mode": config.chips.label_mode, "overlap": config.chips.overlap,
               "contact_class": plan.contact_index, "source_bands": plan.bands, "class_map": config.classes.map,
               "georeferenced": bool(gsds)},
    )


def export_plan(plan: DatasetPlan, output: str | Path) -> Path:
    """Write ``plan`` as a dataset folder at ``output`` (replaced whole, atomically)."""
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        table, stats, hashes = _export_chips(plan, tmp)
        write_chips(table, tmp / "chips.csv")
        meta = _meta(plan, stats.normalization())
        (tmp / "dataset.json").write_text(meta.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(_manifest(plan, hashes), indent=2), encoding="utf-8")
        balance_chart(plan, tmp / "balance.png")
    reporter().artifact("dataset", output)
    return output


def build_dataset(config: DatasetConfig, output: str | Path) -> DatasetPlan:
    """Plan and export; returns the plan (its :meth:`~DatasetPlan.table` is what was written)."""
    plan = plan_dataset(config)
    export_plan(plan, output)
    return plan
