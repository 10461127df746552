"""``al select``: the candidate tiles of one or more rasters, scored by a trained run, picked, and written
as the tiles layer the QGIS tagging dock walks.

Tiles layer (GeoPackage layer ``tiles``; polygons in the first raster's CRS, pixel space when it has none):
``tile_id`` (``<raster stem>_r<row>_c<col>``, the dataset builder's chip id for the same window), ``raster``
(path), ``col_off``/``row_off``/``width``/``height`` (the window in the grid the model saw), ``score`` (the
acquisition's tile score, 0–1), ``rank`` (1 = annotate first: the pick order), ``status`` (``to_tag``;
the dock sets ``tagged`` or ``skipped``), ``strategy`` (``entropy``, ``bald+kcenter``…), ``round``.

Candidates are the tiles of a non-overlapping grid (the last row and column flush with the raster edge,
as the dataset builder cuts chips) with at least ``min_valid`` valid pixels, minus the tiles that overlap
an already labelled area (``exclude``: vector layers such as earlier tiles layers, or a catalog whose
observations mark labelled ground) by more than 1 % of their area — or that hold a labelled point or line,
which has no area to overlap with. With ``kcenter`` the excluded tiles are still read and embedded: they
are the centres new picks must differ from.

Memory: tiles stream through the reader of :mod:`aifactory.prediction.source` (one block-aligned read per
batch, GSD resampled on the fly like prediction does); only one row per tile (and its embedding, for
kcenter) is kept. This stage imports the prediction stage for exactly that reader and its input checks
(bands, GSD), so that selection reads rasters the way prediction does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from aifactory.active.diversity import choose
from aifactory.active.options import SelectOptions
from aifactory.active.scoring import TileScorer
from aifactory.datasets.render import window_footprint
from aifactory.errors import InputError
from aifactory.io.raster import RasterInfo, raster_info, tile_offsets
from aifactory.io.vector import align_to_crs, read_vector, write_vector
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.source import Batch, ReadStats, check_bands, iter_batches, open_source, resample_factor
from aifactory.prediction.tiling import Tile, TileGrid
from aifactory.progress import reporter

LAYER = "tiles"
TILE_FIELDS = ("tile_id", "raster", "col_off", "row_off", "width", "height", "score", "rank", "status", "strategy",
               "round")
STATUSES = ("to_tag", "tagged", "skipped")
MIN_OVERLAP = 0.01  # a tile overlapping labelled ground by more than this fraction of its area is excluded


@dataclass
class Scored:
    """Scores of streamed tiles: row keys, tile scores, valid fractions and (kcenter) embeddings."""

    keys: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    embeddings: np.ndarray | None


def score_batches(scorer: TileScorer, batches: Iterable[tuple[Sequence[int], np.ndarray, np.ndarray]],
                  total: int, task: str = "select") -> Scored:
    """Run ``scorer`` over ``(keys, data, valid)`` batches; progress is reported per batch."""
    keys: list[int] = []
    scores, valid, embeddings = [], [], []
    progress = reporter()
    progress.progress(task, 0.0, f"{total} tiles")
    for batch_keys, data, mask in batches:
        tile_scores, tile_embeddings = scorer(data, mask)
        keys.extend(batch_keys)
        scores.append(tile_scores)
        valid.append(mask.reshape(len(mask), -1).mean(axis=1))
        if tile_embeddings is not None:
            embeddings.append(tile_embeddings.astype("float32"))
        progress.progress(task, len(keys) / max(total, 1), f"{len(keys)}/{total} tiles scored")
    progress.progress(task, 1.0, f"{len(keys)} tiles scored")
    return Scored(np.asarray(keys, dtype="int64"),
                  np.concatenate(scores) if scores else np.empty(0),
                  np.concatenate(valid) if valid else np.empty(0),
                  np.concatenate(embeddings) if embeddings else None)


def labelled_ground(sources: Sequence[str | Path], info: RasterInfo) -> shapely.Geometry | None:
    """Union of what ``sources`` mark as labelled on this raster, in its CRS (pixel space if none)."""
    parts = []
    for source in sources:
        frame = _labelled_frame(source, info)
        if frame is not None and len(frame):
            parts.append(shapely.union_all(frame.geometry.array))
    return shapely.union_all(parts) if parts else None


def _same_raster(value: object, info: RasterInfo) -> bool:
    path = Path(info.path)
    return str(value) in (str(path), path.name, path.stem) or Path(str(value)).resolve() == path.resolve()


def _labelled_frame(source: str | Path, info: RasterInfo) -> gpd.GeoDataFrame | None:
    from aifactory.catalog.store import is_postgres, open_catalog

    target_crs = info.crs if info.georeferenced else None
    if is_postgres(source) or Path(source).suffix.lower() == ".gpkg":
        try:
            catalog = open_catalog(source)
        except InputError:
            catalog = None  # not a catalog: a vector layer
        if catalog is not None:
            from aifactory.catalog.selection import Selection

            with catalog:
                images = catalog.images()
                ids = [int(i) for i, p in zip(images["id"], images["path"], strict=True) if _same_raster(p, info)]
                rows = catalog.select(Selection()) if ids else pd.DataFrame({"image_id": [], "geometry": []})
            geoms = rows.loc[rows["image_id"].isin(ids), "geometry"].to_numpy()
            return gpd.GeoDataFrame(geometry=np.asarray(geoms, dtype=object), crs=target_crs)
    frame = read_vector(source)
    if "raster" in frame.columns:  # a tiles layer (or any layer naming its raster): this raster's rows only
        frame = frame[[_same_raster(v, info) for v in frame["raster"]]]
    return align_to_crs(frame, target_crs, str(source)) if len(frame) else None


class _OnlyTiles(Geofence):
    """A "geofence" admitting exactly the listed grid tiles (the reader asks it which tiles to read)."""

    def __init__(self, allowed: set[tuple[int, int]]) -> None:
        super().__init__(shapely.box(0, 0, 1, 1), "keep", True)
        self.allowed = allowed

    def touches(self, tile: Tile) -> bool:
        return (tile.row, tile.col) in self.allowed


def grid_table(source: int, info: RasterInfo, width: int, height: int, transform: object, size: int,
               labelled: shapely.Geometry | None) -> pd.DataFrame:
    """Every tile of the grid with its footprint, centre and whether it overlaps labelled ground."""
    rows, cols = tile_offsets(height, size, size), tile_offsets(width, size, size)
    records = []
    for i, row_off in enumerate(rows):
        for j, col_off in enumerate(cols):
            records.append({"source": source, "grid_row": i, "grid_col": j, "row_off": row_off, "col_off": col_off})
    table = pd.DataFrame(records)
    windows = [Tile(r.grid_row, r.grid_col, r.row_off, r.col_off, size).window for r in table.itertuples()]
    footprints = np.array([window_footprint(transform, w) for w in windows], dtype=object)
    table["footprint"] = footprints
    centres = shapely.get_coordinates(shapely.centroid(footprints))
    table["cx"], table["cy"] = centres[:, 0], centres[:, 1]
    table["group"] = info.crs if info.georeferenced else f"pixel:{source}"
    table["labelled"] = False
    if labelled is not None:
        parts = shapely.get_parts(labelled)
        areal = shapely.area(parts) > 0
        if areal.any():  # polygons: more than a sliver of the tile (a shared edge is not an overlap)
            overlap = shapely.area(shapely.intersection(footprints, shapely.union_all(parts[areal])))
            table["labelled"] = overlap > MIN_OVERLAP * shapely.area(footprints)
        if not areal.all():  # points and lines (labelled objects without area) mark every tile they touch
            table["labelled"] = table["labelled"] | shapely.intersects(footprints, shapely.union_all(parts[~areal]))
    return table


def _raster_batches(ds: object, grid: TileGrid, table: pd.DataFrame, bands: list[int], batch_size: int
                    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """``(row keys, data, valid)`` batches of the table's tiles, read by prediction's streaming reader."""
    key_of = {(int(r.grid_row), int(r.grid_col)): int(k) for k, r in zip(table.index, table.itertuples(),
                                                                          strict=True)}
    for item in iter_batches(ds, grid, bands, _OnlyTiles(set(key_of)), batch_size, ReadStats()):
        if isinstance(item, Batch):
            yield [key_of[(t.row, t.col)] for t in item.tiles], item.data, item.valid


def select_tiles(model: str | Path | None, rasters: Sequence[str | Path], n: int,
                 options: SelectOptions | None = None, *, tile_size: int | None = None,
                 exclude: Sequence[str | Path] = (), round_number: int = 1, device: str = "auto"
                 ) -> gpd.GeoDataFrame:
    """The ``n`` tiles of ``rasters`` most worth labelling, as a tiles layer frame (see the module docstring)."""
    options = options or SelectOptions()
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    if not rasters:
        raise InputError("al select: give at least one --raster")
    embed = options.diversity == "kcenter"
    scorer = TileScorer(model, options, embed=embed, device=device)
    size = tile_size or (scorer.card.tile_size if scorer.card is not None else 0)
    if size < 16:
        raise InputError("al select: give --tile-size (at least 16 px) when selecting without a model")
    infos = [raster_info(r) for r in rasters]
    if len({i.georeferenced for i in infos}) > 1:
        raise InputError("al select: rasters mix georeferenced and pixel-space images; select them separately")
    plans = []
    offset = 0
    for source, (raster, info) in enumerate(zip(rasters, infos, strict=True)):
        factor = 1.0
        if scorer.card is not None:
            check_bands(info, scorer.card, str(model))
            factor = resample_factor(info, scorer.card)
        with open_source(str(raster), factor) as ds:
            table = grid_table(source, info, ds.width, ds.height, ds.transform, size, labelled_ground(exclude, info))
        table.index = np.arange(offset, offset + len(table))
        offset += len(table)
        plans.append((raster, info, factor, table))
    open_tiles = sum(int((~table["labelled"]).sum()) for *_, table in plans)
    if n > open_tiles:
        raise InputError(f"al select: asked for {n} tiles but the rasters hold only {open_tiles} tiles of "
                         f"{size} px that are not labelled yet")
    tables, scored_parts = [], []
    for raster, info, factor, table in plans:
        bands = scorer.bands or list(range(1, info.count + 1))
        wanted = table if embed else table[~table["labelled"]]
        reporter().log(f"{Path(raster).name}: {len(table)} tiles, {int(table['labelled'].sum())} already labelled")
        with open_source(str(raster), factor) as ds:
            grid = TileGrid(ds.width, ds.height, size, 0)
            scored_parts.append(score_batches(scorer, _raster_batches(ds, grid, wanted, bands, options.batch_size),
                                              len(wanted), task="select"))
        tables.append(table)
    table = pd.concat(tables)
    scored = _merge(scored_parts)
    table.loc[scored.keys, "score"] = scored.scores
    table.loc[scored.keys, "valid"] = scored.valid
    usable = table["valid"].fillna(0) >= max(options.min_valid, 1e-9)
    candidates = np.flatnonzero(usable & ~table["labelled"])
    if n > len(candidates):
        raise InputError(f"al select: asked for {n} tiles but only {len(candidates)} candidate tiles exist "
                         f"(of {len(table)}; the others are already labelled or have < {options.min_valid:.0%} "
                         "valid pixels)")
    embeddings = None
    labelled_vectors = None
    if embed:
        assert scored.embeddings is not None
        by_key = dict(zip(scored.keys.tolist(), range(len(scored.keys)), strict=True))
        embeddings = scored.embeddings[[by_key[int(k)] for k in table.index[candidates]]]
        done = np.flatnonzero(usable & table["labelled"])
        labelled_vectors = scored.embeddings[[by_key[int(k)] for k in table.index[done]]] if len(done) else None
    sub = table.iloc[candidates]
    picks = choose(sub["score"].to_numpy(), n, diversity=options.diversity, embeddings=embeddings,
                   labelled=labelled_vectors, top_m=options.top_m, centres=sub[["cx", "cy"]].to_numpy(),
                   groups=sub["group"].to_numpy(), min_distance=options.min_distance)
    if len(picks) < n:
        reporter().warning(f"only {len(picks)} of {n} tiles are at least {options.min_distance:g} apart; "
                           "lower --min-distance for more")
    return tiles_frame(sub.iloc[picks], infos, size, options.label, round_number)


def _merge(parts: list[Scored]) -> Scored:
    embeddings = [p.embeddings for p in parts if p.embeddings is not None]
    return Scored(np.concatenate([p.keys for p in parts]), np.concatenate([p.scores for p in parts]),
                  np.concatenate([p.valid for p in parts]), np.concatenate(embeddings) if embeddings else None)


def tiles_frame(picked: pd.DataFrame, infos: Sequence[RasterInfo], size: int, strategy: str,
                round_number: int) -> gpd.GeoDataFrame:
    """The tiles layer of the picked rows, in the first raster's CRS."""
    target = infos[0].crs if infos[0].georeferenced else None
    parts = []
    for source, info in enumerate(infos):
        mine = picked[picked["source"] == source]
        if mine.empty:
            continue
        frame = gpd.GeoDataFrame({
            "tile_id": [f"{Path(info.path).stem}_r{r}_c{c}" for r, c in zip(mine["row_off"], mine["col_off"],
                                                                              strict=True)],
            "raster": info.path, "col_off": mine["col_off"].astype("int64"),
            "row_off": mine["row_off"].astype("int64"), "width": size, "height": size,
            "score": mine["score"].astype("float64").round(6), "rank": 0, "status": "to_tag",
            "strategy": strategy, "round": int(round_number), "order": np.flatnonzero(picked["source"] == source),
        }, geometry=np.asarray(mine["footprint"].to_numpy(), dtype=object), crs=info.crs if target else None)
        parts.append(align_to_crs(frame, target, info.path) if target else frame)
    tiles = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=target)
    tiles = tiles.sort_values("order").reset_index(drop=True)
    tiles["rank"] = np.arange(1, len(tiles) + 1, dtype="int64")
    return tiles.loc[:, [*TILE_FIELDS, "geometry"]]


def write_tiles(tiles: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write the tiles layer (GeoPackage layer ``tiles``), atomically."""
    out = write_vector(tiles, path, layer=LAYER)
    reporter().artifact("tiles", out)
    return out


def read_tiles(path: str | Path) -> gpd.GeoDataFrame:
    """A tiles layer, checked for the fields the tagging loop relies on."""
    frame = read_vector(path, layer=LAYER if Path(path).suffix.lower() == ".gpkg" else None)
    missing = [f for f in ("raster", "status", "round") if f not in frame.columns]
    if missing:
        raise InputError(f"{path}: not a tiles layer of al select (missing fields {', '.join(missing)})")
    status = frame["status"].fillna("to_tag").astype(str)
    unknown = sorted(set(status) - set(STATUSES))
    if unknown:
        raise InputError(f"{path}: unknown status {unknown[0]!r} (expected {', '.join(STATUSES)})")
    return frame.assign(status=status)

