"""``dataset build``: export a plan's chips into the dataset folder format, atomically.

Chips are written in chunks by a few threads, window by window: memory is a few chips plus the running
statistics. Chip files come from :mod:`aifactory.datasets.chipfile` (uncompressed by default: a GeoTIFF
header plus the pixels, hashed as they are written), so a chip costs little more than its read. PNG/JPEG
sources (no random access: each window read would decode from the first line) are first copied once into
a tiled GeoTIFF next to the output, removed afterwards. The sources' hashes and the balance chart are
made by one more thread while the chips are written.
The per-band normalisation statistics come from the train split only (valid pixels), as sums and sums of
squares added chip by chip, so no chip is kept after it is written. Sources and chips are hashed with
BLAKE3 (see :mod:`aifactory.io.hashing` for why not sha256). The folder (chips,
``chips.csv``, ``dataset.json``, ``manifest.json``, ``balance.png``) appears whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from aifactory import __version__
from aifactory.catalog.splits import SPLIT_NAMES
from aifactory.datasets.chipfile import write_chip
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.format import DatasetMeta, Normalization, write_chips
from aifactory.datasets.plan import DatasetPlan, chip_window, plan_dataset
from aifactory.datasets.render import render_chip, window_footprint
from aifactory.errors import InputError
from aifactory.io.atomic import atomic_path
from aifactory.io.cog import gdal_env
from aifactory.io.gdal_copy import copy_raster
from aifactory.io.hashing import blake3_file
from aifactory.io.output_paths import folder_output
from aifactory.io.raster import open_raster, window_transform
from aifactory.progress import reporter


class RunningStats:
    """Per-band count, sum and sum of squares of valid pixels, accumulated chip by chip, mergeable.

    Integers of at most 16 bits are summed exactly (int64 per chip, Python integers across chips), so the
    statistics do not depend on the order chips were written in; other types are summed in float64.
    """

    def __init__(self, bands: int) -> None:
        self.count = 0
        self.sums: list[float] = [0] * bands
        self.squares: list[float] = [0] * bands

    def update(self, image: np.ndarray, valid: np.ndarray) -> None:
        values = image.reshape(len(image), -1)
        flat = valid.ravel()
        if not flat.all():
            values = np.where(flat, values, 0)  # invalid pixels add nothing (cheaper than boolean indexing)
        exact = values.dtype.kind in "iub" and values.dtype.itemsize <= 2
        acc = np.int64 if exact else np.float64
        sums = values.sum(axis=1, dtype=acc)
        squares = np.einsum("ij,ij->i", values, values, dtype=acc, casting="unsafe")
        self.count += int(flat.sum())
        self.sums = [a + b.item() for a, b in zip(self.sums, sums, strict=True)]
        self.squares = [a + b.item() for a, b in zip(self.squares, squares, strict=True)]

    def merge(self, other: RunningStats) -> None:
        """Add another accumulator's pixels (from another thread)."""
        self.count += other.count
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        self.squares = [a + b for a, b in zip(self.squares, other.squares, strict=True)]

    def normalization(self) -> Normalization:
        n = max(self.count, 1)
        mean = [s / n for s in self.sums]
        # n·Σx² − (Σx)² is exact for integer sums; divide once at the end
        var = [max(q * n - s * s, 0) / (n * max(n - 1, 1)) for s, q in zip(self.sums, self.squares, strict=True)]
        std = [float(np.sqrt(v)) if v > 0 else 1.0 for v in var]  # a constant band must not divide by zero
        return Normalization(mean=[float(m) for m in mean], std=std)


@functools.cache
def _figure_class() -> Any:
    """matplotlib's ``Figure``, imported once (no pyplot: no global state, so a worker thread may draw)."""
    with warnings.catch_warnings():  # Debian's system matplotlib next to the venv's one: harmless
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        from matplotlib.figure import Figure
    return Figure


def balance_chart(plan: DatasetPlan, path: Path) -> None:
    """Grouped bars: objects per class in each split (and chips per split), as a PNG."""
    table = plan.table()
    names = table["class"].tolist()
    fig = _figure_class()(figsize=(max(5.0, 1.2 * len(names) + 2), 4), dpi=100)
    ax = fig.subplots()
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


CHUNK = 8  # chips per task: one raster open per chunk, progress per chunk
#: GDAL's block cache while chips are read and rasterized, in bytes (see :class:`_ChipWriter`)
READ_CACHE_BYTES = 1 << 20


class _ChipWriter:
    """Renders and writes chunks of chips of one source; called from worker threads.

    Threads overlap GDAL decoding, rasterization, file writes and hashing (all release the GIL), so chip
    building keeps pace with the raw read rate on several cores. Each thread keeps its own statistics
    (merged at the end); each chunk opens and closes its own raster handle in its own thread, as GDAL
    handles must not cross threads.

    GDAL's block cache is held to :data:`READ_CACHE_BYTES` while chunks run: every source block is read
    once, so a cache buys nothing, and blocks freed at once keep the peak RSS flat in the raster size
    (GDAL's default 5 % of RAM let it creep up by ~17 MB per 4× pixels). It must not be much smaller:
    GDAL rasterizes in row chunks of at most the cache size, and a cache of a few hundred bytes (what
    ``GDAL_CACHEMAX=256`` means through rasterio, which passes bytes) made it pass over every polygon once
    per mask row, 3× slower per chip.
    """

    def __init__(self, plan: DatasetPlan, folder: Path, readable: dict[int, Path]) -> None:
        self.plan = plan
        self.folder = folder
        self.readable = readable  # source index -> the file to read windows from
        # other splits' statistics only serve when there is no train chip at all
        self.other_stats = not (plan.chips["split"] == "train").any()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.stats: list[tuple[RunningStats, RunningStats]] = []  # (train, other splits) per thread

    def _thread_stats(self) -> tuple[RunningStats, RunningStats]:
        if not hasattr(self.local, "train"):
            bands = len(self.plan.bands)
            self.local.train, self.local.other = RunningStats(bands), RunningStats(bands)
            with self.lock:
                self.stats.append((self.local.train, self.local.other))
        return self.local.train, self.local.other

    def __call__(self, chunk: list[Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
        train, other = self._thread_stats()
        source = self.plan.sources[int(chunk[0].source)]
        config = self.plan.config.chips
        out = []
        with open_raster(self.readable[source.index]) as ds:
            crs = ds.crs if source.info.georeferenced else None
            for chip in chunk:
                window = chip_window(chip)
                image, mask, valid, boxes = render_chip(ds, source.label_index(), window, self.plan.bands,
                                                        config.label_mode, config.core_factor,
                                                        self.plan.contact_index)
                transform = window_transform(ds.transform, window)
                image_rel, mask_rel = f"images/{chip.chip_id}.tif", f"masks/{chip.chip_id}.tif"
                hashes = {image_rel: write_chip(self.folder / image_rel, image, crs, transform, ds.nodata,
                                                config.compress),
                          mask_rel: write_chip(self.folder / mask_rel, mask, crs, transform, None, config.compress)}
                if chip.split == "train":
                    train.update(image, valid)
                elif self.other_stats:
                    other.update(image, valid)
                row = {"chip_id": chip.chip_id, "split": chip.split, "image": image_rel, "mask": mask_rel,
                       "source": source.name, "source_crs": source.info.crs if crs else "",
                       "col_off": chip.col_off, "row_off": chip.row_off, "width": chip.width,
                       "height": chip.height, "footprint_wkt": window_footprint(ds.transform, window).wkt,
                       "n_objects": len(boxes), "boxes": boxes}
                out.append((row, hashes))
        return out


#: drivers without random access: every window read decodes the image from its first line
SEQUENTIAL_DRIVERS = frozenset({"PNG", "JPEG", "GIF", "BMP"})


def _random_access_copies(plan: DatasetPlan, scratch: Path) -> dict[int, Path]:
    """A tiled GeoTIFF copy (one sequential pass, bounded memory) of each PNG/JPEG source, else the source."""
    readable = {}
    for source in plan.sources:
        readable[source.index] = source.path
        if source.info.driver in SEQUENTIAL_DRIVERS and (plan.chips["source"] == source.index).any():
            copy = scratch / f"{source.index}.tif"
            with gdal_env():
                copy_raster(source.path, copy, "GTiff", {"TILED": "YES", "BLOCKXSIZE": 256, "BLOCKYSIZE": 256},
                            task="tiled copy")
            readable[source.index] = copy
    return readable


def _chunks(plan: DatasetPlan) -> list[list[Any]]:
    chunks: list[list[Any]] = []
    for source in plan.sources:
        chips = list(plan.chips[plan.chips["source"] == source.index].itertuples(index=False))
        chunks.extend(chips[i:i + CHUNK] for i in range(0, len(chips), CHUNK))
    return chunks


def _export_chips(plan: DatasetPlan, folder: Path) -> tuple[pd.DataFrame, RunningStats, dict[str, str]]:
    """Write every chip; returns the chips table, the train statistics and the chips' hashes."""
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rows, hashes = [], {}
    progress = reporter()
    total = len(plan.chips)
    progress.progress("chips", 0.0, f"{total} chips")
    workers = plan.config.chips.workers or min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".chips-scratch-") as scratch, \
            warnings.catch_warnings():
        # pixel-space chips have no georeferencing on purpose (the filter is process-wide: set it here,
        # in the main thread, around the pool)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        writer = _ChipWriter(plan, folder, _random_access_copies(plan, Path(scratch)))
        # GDAL's cache limit is process-wide: set once here, not per worker (their exits would race)
        with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), ThreadPoolExecutor(max_workers=workers) as pool:
            for results in pool.map(writer, _chunks(plan)):
                for row, chip_hashes in results:
                    rows.append(row)
                    hashes.update(chip_hashes)
                progress.progress("chips", len(rows) / total, f"{len(rows)}/{total} chips")
    train, other = RunningStats(len(plan.bands)), RunningStats(len(plan.bands))
    for thread_train, thread_other in writer.stats:
        train.merge(thread_train)
        other.merge(thread_other)
    if writer.other_stats:
        progress.warning("no train chip: normalisation statistics come from the other splits")
        train = other
    elif train.count == 0:
        progress.warning("the train chips hold no valid pixel: normalisation is mean 0, std 1")
    return pd.DataFrame(rows), train, hashes


def _manifest(plan: DatasetPlan, source_hashes: list[str], hashes: dict[str, str]) -> dict[str, Any]:
    return {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "aifactory_version": __version__,
        "config": plan.config.model_dump(mode="json"),
        "sources": [{"name": s.name, "path": str(s.path), "blake3": digest,
                     "crs": s.info.crs if s.info.georeferenced else None, "objects": len(s.labels)}
                    for s, digest in zip(plan.sources, source_hashes, strict=True)],
        "classes": plan.classes,
        "counts": {"objects": plan.objects, "chips": plan.chip_counts(), "dropped": plan.dropped},
        "hash": "blake3",  # of each source and chip file
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
        extra={"label_mode": config.chips.label_mode, "core_factor": config.chips.core_factor,
               "overlap": config.chips.overlap,
               "contact_class": plan.contact_index, "source_bands": plan.bands, "class_map": config.classes.map,
               "georeferenced": bool(gsds)},
    )


def export_plan(plan: DatasetPlan, output: str | Path) -> Path:
    """Write ``plan`` as a dataset folder at ``output`` (replaced whole, atomically).

    A plan whose split dropped every chip is refused in one line (``dataset preview`` shows such a plan: its
    counts say why): there is nothing to write, and a dataset folder without chips fails whoever reads it.
    """
    output = Path(output)
    if plan.chips.empty:
        lost = ", ".join(f"{why} {count}" for why, count in plan.dropped.items() if count) or "none"
        raise InputError(f"no chip left to write: the split dropped every chip (dropped: {lost}); lower split.guard, "
                         "raise split.block_tiles or use split.method image")
    _figure_class()  # import here, in the calling thread: the import's warning filter is not thread-safe
    with atomic_path(output, folder=True) as tmp, ThreadPoolExecutor(max_workers=1) as beside:
        tmp.mkdir()
        # the sources' hashes and the chart need no chip: one thread does them while the chips are written
        source_hashes = beside.submit(lambda: [blake3_file(s.path) for s in plan.sources])
        chart = beside.submit(balance_chart, plan, tmp / "balance.png")
        table, stats, hashes = _export_chips(plan, tmp)
        write_chips(table, tmp / "chips.csv")
        meta = _meta(plan, stats.normalization())
        (tmp / "dataset.json").write_text(meta.model_dump_json(indent=2), encoding="utf-8")
        manifest = _manifest(plan, source_hashes.result(), hashes)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        chart.result()
    reporter().artifact("dataset", output)
    return output


def build_dataset(config: DatasetConfig, output: str | Path) -> DatasetPlan:
    """Plan and export; returns the plan (its :meth:`~DatasetPlan.table` is what was written)."""
    folder_output(output)  # before the planning: a folder of the user's is refused at once
    plan = plan_dataset(config)
    export_plan(plan, output)
    return plan
