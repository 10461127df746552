"""Plan a dataset without writing it: sources, classes, candidate chips, splits, negatives, counts.

``dataset preview`` stops here (counts per class and split, for the CLI table and the QGIS dock);
``dataset build`` exports the plan's chips. Planning reads labels fully (vectors are small) but rasters
only through one decimated validity mask per source (overviews of a COG make that cheap), so it is fast
and its memory does not grow with the raster.

This stage imports :mod:`aifactory.catalog` on purpose: a dataset is cut from a catalog selection, and
its splits and class hierarchy are catalog concepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.windows import Window

from aifactory.catalog.hierarchy import map_classes
from aifactory.catalog.labels import load_labels
from aifactory.catalog.selection import check_classes
from aifactory.catalog.splits import SPLIT_NAMES, ChipSet, assign_splits, find_leaks
from aifactory.catalog.store import open_catalog
from aifactory.datasets.config import DatasetConfig
from aifactory.datasets.render import CONTACT_CLASS, LabelIndex, window_footprint
from aifactory.errors import ConfigError, InputError
from aifactory.io.raster import RasterInfo, gsd, open_raster, raster_info, tile_windows
from aifactory.io.vector import align_to_crs, read_vector
from aifactory.progress import reporter

BACKGROUND = "background"


@dataclass
class Source:
    """A raster with its labels in its own map coordinates (pixel space when not georeferenced)."""

    index: int
    name: str
    info: RasterInfo
    labels: gpd.GeoDataFrame            # class_path, class, label (1..N), geometry
    extent: shapely.Geometry | None = None
    holdout: shapely.Geometry | None = None
    _index: LabelIndex | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return Path(self.info.path)

    @property
    def group(self) -> str:
        """Chips of one group share coordinates: same CRS, or the same pixel-space image."""
        return str(self.info.crs) if self.info.georeferenced else f"pixel:{self.index}"

    @property
    def pixel_size(self) -> float:
        return gsd(self.info) if self.info.georeferenced else 1.0

    def label_index(self) -> LabelIndex:
        if self._index is None:
            self._index = LabelIndex(np.asarray(self.labels.geometry.array, dtype=object),
                                     self.labels["label"].to_numpy(dtype="int64"), self.extent)
        return self._index


@dataclass
class DatasetPlan:
    """What a build would write: classes, sources and the chips table with splits."""

    config: DatasetConfig
    classes: list[str]
    sources: list[Source]
    chips: pd.DataFrame                 # chip_id, source, col_off, row_off, width, height, split, n_objects, ...
    objects: dict[str, dict[str, int]]  # class -> split -> distinct objects
    dropped: dict[str, int]

    @property
    def bands(self) -> list[int]:
        return self.config.chips.bands or list(range(1, self.sources[0].info.count + 1))

    @property
    def contact_index(self) -> int | None:
        return self.classes.index(CONTACT_CLASS) if self.config.chips.label_mode == "boundary" else None

    def split_chips(self, split: str) -> pd.DataFrame:
        return self.chips[self.chips["split"] == split].reset_index(drop=True)

    def chip_counts(self) -> dict[str, int]:
        return {split: int((self.chips["split"] == split).sum()) for split in SPLIT_NAMES}

    def table(self) -> pd.DataFrame:
        """Objects per class and split (plus a ``chips`` row), the table the CLI prints."""
        rows = [{"class": name, **{s: self.objects[name][s] for s in SPLIT_NAMES}} for name in self.objects]
        rows.append({"class": "chips", **self.chip_counts()})
        table = pd.DataFrame(rows, columns=["class", *SPLIT_NAMES])
        table["total"] = table[list(SPLIT_NAMES)].sum(axis=1)
        return table

    def summary(self) -> dict[str, Any]:
        """JSON for the QGIS dataset dock and ``--json``."""
        return {"classes": self.classes, "objects": self.objects, "chips": self.chip_counts(),
                "dropped": self.dropped, "sources": [s.name for s in self.sources],
                "tile_size": self.config.chips.size}


def _union(frame: gpd.GeoDataFrame) -> shapely.Geometry:
    return shapely.union_all(frame.geometry.array)


def _direct_sources(config: DatasetConfig) -> list[tuple[str, RasterInfo, gpd.GeoDataFrame, Any]]:
    out = []
    for entry in config.sources:
        info = raster_info(entry.raster)
        labels = load_labels(entry.labels, info, entry.layer, entry.class_field, entry.crs, entry.where)
        extent = None
        if entry.extent is not None:
            frame = read_vector(entry.extent, crs=entry.crs)
            extent = _union(align_to_crs(frame, info.crs if info.georeferenced else None, str(entry.extent)))
        out.append((entry.name or entry.raster.stem, info, labels, extent))
    return out


def _catalog_sources(config: DatasetConfig) -> list[tuple[str, RasterInfo, gpd.GeoDataFrame, Any]]:
    assert config.catalog is not None
    selection = config.catalog.select
    assert not isinstance(selection, Path), "resolve_paths loads selection files"
    aoi = selection.aoi.to_wgs84() if selection.aoi is not None else None
    with open_catalog(config.catalog.path) as catalog:
        check_classes(selection, catalog.class_paths(), catalog.label, "catalog.select.")
        rows = catalog.select(selection, aoi)
        images = catalog.images(sorted(set(rows["image_id"].tolist())))
    out = []
    for image in images.itertuples(index=False):
        info = raster_info(image.path)
        mine = rows[rows["image_id"] == image.id]
        labels = gpd.GeoDataFrame({"class_path": mine["class_path"].to_numpy()},
                                  geometry=np.asarray(mine["geometry"].to_numpy(), dtype=object),
                                  crs=info.crs if info.georeferenced else None)
        out.append((image.name, info, labels, None))
    return out


def _holdouts(config: DatasetConfig, sources: list[Source]) -> None:
    for number, region in enumerate(config.split.holdout):
        where = f"split.holdout[{number}]"
        targets = [s for s in sources if region.source in (None, s.name, str(s.path), s.path.name)]
        if region.source is not None and not targets:
            raise ConfigError(f"{where}: source {region.source!r} is not among the dataset's sources")
        if region.wkt is not None:
            frame = gpd.GeoDataFrame(geometry=[shapely.from_wkt(region.wkt)], crs=region.crs)
        else:
            assert region.path is not None
            frame = read_vector(region.path, layer=region.layer, crs=region.crs)
        applied = 0
        for source in targets:
            if frame.crs is None:  # in the source's own coordinates
                geom = _union(frame)
            elif not source.info.georeferenced:
                if region.source is not None:  # named, yet silently skipped: its area would reach train
                    raise ConfigError(f"{where}: source {region.source!r} is in pixel space (no CRS); give the "
                                      "region in its pixel coordinates, without crs")
                continue
            else:
                geom = _union(align_to_crs(frame, source.info.crs, where))
            source.holdout = geom if source.holdout is None else shapely.union(source.holdout, geom)
            applied += 1
        if not applied:
            raise ConfigError(f"{where}: the region has a CRS but every source is in pixel space; give it in "
                              "pixel coordinates, without crs")


def _resolve_classes(config: DatasetConfig, raw: list[tuple[str, RasterInfo, gpd.GeoDataFrame, Any]]
                     ) -> tuple[list[str], list[Source]]:
    names = config.classes.names
    all_paths = pd.concat([labels["class_path"] for _, _, labels, _ in raw], ignore_index=True)
    if len(all_paths) == 0:
        raise InputError("no labels selected: the sources (or the catalog selection) hold no objects")
    mapped_all = map_classes(all_paths.tolist(), config.classes.level, config.classes.map)
    if names:
        unknown = pd.Series([m for m in mapped_all if m not in names]).value_counts()
        if len(unknown):
            listing = ", ".join(f"{name} ({count})" for name, count in unknown.items())
            reporter().warning(f"dropped {int(unknown.sum())} objects of classes not in classes.names: {listing}")
        classes = list(names)
    else:
        classes = sorted(set(mapped_all))
    index = {name: i for i, name in enumerate(classes, start=1)}
    sources = []
    for number, (name, info, labels, extent) in enumerate(raw):
        mapped = map_classes(labels["class_path"].tolist(), config.classes.level, config.classes.map)
        labels = labels.assign(**{"class": mapped, "label": [index.get(m, 0) for m in mapped]})
        labels = labels[labels["label"] > 0].reset_index(drop=True)
        sources.append(Source(number, name, info, labels, extent))
    if sum(len(s.labels) for s in sources) == 0:
        raise InputError(f"no labels selected: none of the objects belongs to classes {', '.join(classes)}")
    taken = {s.name for s in sources}
    if len(taken) < len(sources):  # the same file name in two folders: number them
        for source in sources:
            source.name = f"{source.index:03d}_{source.name}"
    extra = [CONTACT_CLASS] if config.chips.label_mode == "boundary" else []
    return [BACKGROUND, *classes, *extra], sources


def _check_bands(config: DatasetConfig, sources: list[Source]) -> None:
    first = sources[0].info
    for source in sources:
        if config.chips.bands and max(config.chips.bands) > source.info.count:
            raise InputError(f"{source.path}: has {source.info.count} bands, chips.bands asks for band "
                             f"{max(config.chips.bands)}")
        if not config.chips.bands and source.info.count != first.count:
            raise InputError(f"{source.path}: has {source.info.count} bands but {first.path} has {first.count}; "
                             "set chips.bands to pick the same bands from every source")
        if source.info.dtype != first.dtype:
            raise InputError(f"{source.path}: data type {source.info.dtype} differs from {first.dtype} of "
                             f"{first.path}; convert the sources first (aifactory preprocess)")


def _check_sizes(config: DatasetConfig, sources: list[Source]) -> None:
    """Rasters too small for even one chip (the part of a chip they cover is below ``1 - chips.max_nodata``):
    refused when all are, named in a warning otherwise, so that the cause is the size, not "nodata"."""
    size, nodata = config.chips.size, config.chips.max_nodata
    small = [s for s in sources if 1 - min(s.info.width, size) * min(s.info.height, size) / size**2 > nodata]
    if not small:
        return
    listing = ", ".join(f"{s.path} ({s.info.width} x {s.info.height} px)" for s in small)
    if len(small) == len(sources):
        raise ConfigError(f"chips.size: {size} px chips are larger than the raster{'s' if len(small) > 1 else ''} "
                          f"{listing}; use a chips.size that fits (or raise chips.max_nodata)")
    reporter().warning(f"chips.size: {size} px chips are larger than {listing}: no chip from them")


def _candidates(source: Source, config: DatasetConfig, n_classes: int) -> tuple[pd.DataFrame, list[np.ndarray],
                                                                            dict[str, int]]:
    """Windows of one source worth keeping: enough valid pixels, inside the labelled extent."""
    size = config.chips.size
    info = source.info
    factor = max(1, size // 32)
    with open_raster(info.path) as ds:
        coarse = ds.dataset_mask(out_shape=(math.ceil(info.height / factor), math.ceil(info.width / factor))) > 0
    index = source.label_index()
    rows, hits_list = [], []
    dropped = {"nodata": 0, "outside_extent": 0}
    for window in tile_windows(info.width, info.height, size, config.chips.overlap):
        r0, c0 = int(window.row_off) // factor, int(window.col_off) // factor
        r1 = math.ceil((window.row_off + window.height) / factor)
        c1 = math.ceil((window.col_off + window.width) / factor)
        valid = coarse[r0:r1, c0:c1].sum() * factor * factor / (window.width * window.height)
        if 1 - min(valid, 1.0) > config.chips.max_nodata:
            dropped["nodata"] += 1
            continue
        footprint = window_footprint(info.transform, window)
        if source.extent is not None and shapely.area(shapely.intersection(footprint, source.extent)) <= 0:
            dropped["outside_extent"] += 1
            continue
        hits = index.hits(footprint)
        rows.append({"source": source.index, "col_off": int(window.col_off), "row_off": int(window.row_off),
                     "width": int(window.width), "height": int(window.height), "footprint": footprint,
                     "counts": np.bincount(index.labels[hits], minlength=n_classes + 1)[1:n_classes + 1]})
        hits_list.append(hits)
    return pd.DataFrame(rows), hits_list, dropped


def _sample_negatives(chips: pd.DataFrame, ratio: float, seed: int) -> pd.Series:
    """Per split, keep at most ``ratio`` × positives chips without objects (seeded choice)."""
    rng = np.random.default_rng(seed)
    keep = chips["split"].notna() & (chips["n_objects"] > 0)
    for split in SPLIT_NAMES:
        negatives = np.flatnonzero((chips["split"] == split) & (chips["n_objects"] == 0))
        quota = round(ratio * int(((chips["split"] == split) & (chips["n_objects"] > 0)).sum()))
        chosen = rng.choice(negatives, size=min(quota, len(negatives)), replace=False)
        keep.iloc[chosen] = True
    return keep


def plan_dataset(config: DatasetConfig) -> DatasetPlan:
    """Resolve sources and classes, cut candidate chips, split them and count what a build would write."""
    raw = _direct_sources(config) if config.sources else _catalog_sources(config)
    if not raw:
        raise InputError("no labels selected: the catalog selection matched no observation")
    classes, sources = _resolve_classes(config, raw)
    _check_bands(config, sources)
    _check_sizes(config, sources)
    _holdouts(config, sources)
    n_classes = len(classes) - 1 - (1 if config.chips.label_mode == "boundary" else 0)
    frames, hits_all = [], []
    dropped = {"nodata": 0, "outside_extent": 0}
    for source in reporter().track(sources, task="plan", message="planning chips"):
        frame, hits, lost = _candidates(source, config, n_classes)
        frames.append(frame)
        hits_all.extend(hits)
        for key, value in lost.items():
            dropped[key] += value
    chips = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if chips.empty:
        raise InputError("no chip left: every window is mostly nodata or outside the labelled extent "
                         "(check chips.max_nodata and the extents)")
    chip_set = ChipSet(
        source=chips["source"].to_numpy(), group=np.array([sources[i].group for i in chips["source"]], dtype=object),
        footprint=np.asarray(chips["footprint"].to_numpy(), dtype=object),
        counts=np.stack(chips["counts"].to_numpy()),
        pixel_size=np.array([sources[i].pixel_size for i in chips["source"]]))
    block_size = {}
    for group in np.unique(chip_set.group):
        coarsest = chip_set.pixel_size[chip_set.group == group].max()
        block_size[group] = config.split.block_tiles * config.chips.size * coarsest
    splits = assign_splits(chip_set, config.split, block_size, {s.index: s.holdout for s in sources if s.holdout})
    chips["split"] = splits
    chips["n_objects"] = chip_set.counts.sum(axis=1)
    dropped["guard"] = int(pd.isna(splits).sum())
    keep = _sample_negatives(chips, config.chips.negative_ratio, config.chips.seed)
    dropped["negatives"] = int((chips["split"].notna() & ~keep).sum())
    guard = config.split.guard * chip_set.pixel_size  # both methods keep splits a guard band apart
    final = splits.copy()
    final[~keep.to_numpy()] = None
    leaks = find_leaks(chip_set, final, guard)
    if leaks:  # cannot happen by construction; refuse to write a leaking dataset if it ever does
        raise RuntimeError(f"split leakage: {len(leaks)} chip pairs overlap across splits, e.g. {leaks[0]}")
    chips = chips.loc[keep.to_numpy()].copy()
    kept_hits = [hits_all[i] for i in np.flatnonzero(keep.to_numpy())]
    chips["chip_id"] = [f"{sources[s].name}_r{r}_c{c}" for s, r, c in
                        zip(chips["source"], chips["row_off"], chips["col_off"], strict=True)]
    objects = {name: dict.fromkeys(SPLIT_NAMES, 0) for name in classes[1:1 + n_classes]}
    for split in SPLIT_NAMES:
        for source in sources:
            mask = ((chips["split"] == split) & (chips["source"] == source.index)).to_numpy()
            if not mask.any():
                continue
            ids = np.unique(np.concatenate([kept_hits[i] for i in np.flatnonzero(mask)]))
            for label, count in zip(*np.unique(source.labels["label"].to_numpy()[ids], return_counts=True),
                                    strict=True):
                objects[classes[label]][split] += int(count)
    for split, share in config.split.fractions.items():
        if share > 0 and not (chips["split"] == split).any():
            reporter().warning(f"split {split!r} got no chips (too few images or blocks for the fractions)")
    return DatasetPlan(config, classes, sources, chips.reset_index(drop=True), objects, dropped)


def chip_window(row: Any) -> Window:
    return Window(int(row.col_off), int(row.row_off), int(row.width), int(row.height))
