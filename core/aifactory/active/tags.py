"""Tags → training data: the tiles marked ``tagged`` become the labelled extent of a dataset config.

Annotators draw on the picked tiles in any vector layer with a class field, then mark each tile
``tagged`` (or ``skipped``) in the tiles layer. Ingestion snapshots, per raster, the union of its tagged
tiles (``extent_<n>.gpkg``) and the annotations touching it (``labels_<n>.gpkg``, in the raster's CRS) into
the round folder, and returns a :class:`~aifactory.datasets.config.DatasetConfig` whose sources carry
that extent: inside tagged tiles an unannotated pixel is background (a tagged tile without any
annotation is a valid negative), outside them every pixel is the ignore index — nobody looked there.
Every chip of the tagged tiles goes to the train split and negatives are all kept (they were paid for).

The snapshot freezes what a round trained on while the annotation layer keeps changing. When several
pixel-space images share one annotation layer, a ``raster`` field (file path, name or stem) says which
image each annotation belongs to (georeferenced annotations find their raster by position).

This stage imports :mod:`aifactory.datasets` (the dataset config it fills) and :mod:`.select` (the tiles
layer reader).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely

from aifactory.active.select import read_tiles
from aifactory.catalog.splits import SplitConfig
from aifactory.datasets.config import ChipConfig, ClassConfig, DatasetConfig, SourceEntry
from aifactory.errors import InputError
from aifactory.io.raster import raster_info
from aifactory.io.vector import align_to_crs, read_vector, write_vector
from aifactory.progress import reporter

KEEP_ALL_NEGATIVES = 1e9  # negative_ratio: every tagged tile without objects stays in the dataset


@dataclass
class Ingested:
    """What a round trains on: the dataset config and its counts."""

    config: DatasetConfig
    tiles: int
    annotations: int


def tagged_tiles(layers: Sequence[str | Path]) -> gpd.GeoDataFrame:
    """Tiles marked ``tagged`` in the tiles layers (a tile listed twice counts once), in the first one's CRS."""
    frames = [read_tiles(path) for path in layers]
    if not frames:
        raise InputError("no tiles layer to ingest")
    crs = frames[0].crs
    tiles = pd.concat([align_to_crs(f, crs, str(p)) if crs is not None else f
                       for f, p in zip(frames, layers, strict=True)], ignore_index=True)
    tagged = tiles[tiles["status"] == "tagged"]
    return gpd.GeoDataFrame(tagged.drop_duplicates("tile_id", keep="last").reset_index(drop=True), crs=crs)


def _same_raster(values: pd.Series, raster: Path) -> pd.Series:
    names = {str(raster), raster.name, raster.stem, str(raster.resolve())}
    return values.astype(str).isin(names)


def ingest_tags(tiles: gpd.GeoDataFrame, annotations: str | Path, out_dir: str | Path, *, layer: str | None = None,
                class_field: str = "class", classes: ClassConfig | None = None,
                chips: ChipConfig | None = None) -> Ingested:
    """Snapshot the tagged tiles and their annotations into ``out_dir``; the dataset config to build."""
    if tiles.empty:
        raise InputError("no tile is marked tagged yet: tag tiles (Tagging dock) before training")
    out_dir = Path(out_dir)
    drawn = read_vector(annotations, layer=layer)
    if class_field not in drawn.columns:
        raise InputError(f"{annotations}: no class field {class_field!r} "
                         f"(fields: {', '.join(c for c in drawn.columns if c != drawn.geometry.name) or 'none'})")
    size = int(tiles["width"].max())
    chip_config = (chips or ChipConfig(size=size)).model_copy(update={"negative_ratio": KEEP_ALL_NEGATIVES})
    sources, total = [], 0
    for number, raster in enumerate(sorted(set(tiles["raster"].astype(str)))):
        path = Path(raster)
        info = raster_info(path)
        crs = info.crs if info.georeferenced else None
        mine = tiles[tiles["raster"].astype(str) == raster]
        extent = align_to_crs(gpd.GeoDataFrame(geometry=mine.geometry.array, crs=tiles.crs), crs, "tiles")
        area = shapely.union_all(extent.geometry.array)
        labels = drawn[_same_raster(drawn["raster"], path)] if "raster" in drawn.columns else drawn
        labels = align_to_crs(labels, crs, str(annotations))
        labels = labels[shapely.intersects(labels.geometry.array, area)]
        total += len(labels)
        extent_path = write_vector(gpd.GeoDataFrame({"tiles": [len(mine)]}, geometry=[area], crs=crs),
                                   out_dir / f"extent_{number}.gpkg", layer="extent")
        labels_path = write_vector(gpd.GeoDataFrame({class_field: labels[class_field].to_numpy()},
                                                    geometry=labels.geometry.array, crs=crs),
                                   out_dir / f"labels_{number}.gpkg", layer="labels")
        sources.append(SourceEntry(raster=path, labels=labels_path, layer="labels", class_field=class_field,
                                   extent=extent_path, name=path.stem))
    if total == 0:
        raise InputError(f"{annotations}: no annotation inside the {len(tiles)} tagged tiles; draw the objects "
                         "of at least one tile (tiles without objects are fine once some have them)")
    reporter().log(f"ingested {total} annotations on {len(tiles)} tagged tiles of {len(sources)} raster(s)")
    config = DatasetConfig(sources=sources, classes=classes or ClassConfig(), chips=chip_config,
                           split=SplitConfig(fractions={"train": 1.0, "val": 0.0, "test": 0.0}))
    return Ingested(config, len(tiles), total)
