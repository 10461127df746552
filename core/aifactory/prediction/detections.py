"""The detections GeoPackage (DESIGN.md, "Detections"), written as detections close.

Scores of a polygon from the vectorizer (segmentation models): ``score`` is the mean and
``score_max`` the highest of its class's uint8 scores in ``scores.tif`` over the pixels it covers, divided by
255, i.e. computed from the stored (quantized) scores, so that they can be checked against the file (the pixels
of an instance split into diagonal-only parts are those of the whole instance; models trained on ``core``
labels: the pixels before the polygon is grown back; ``boundary`` labels: the object's own pixels, not the contact
pixels it claims). Box detectors (``heatmap``,
``detection``, ``instance``): ``score`` is the box's own score and ``score_max`` the highest score among the
boxes merged into it (:mod:`.boxes`).

Detections leave the vectorizer in pixel space; here they are mapped to the raster's CRS with its
affine transform and appended to a hidden temporary GeoPackage in the output folder, a chunk at a time,
so memory does not grow with the number of detections. :meth:`DetectionWriter.close` renames the file
into place (atomic); :meth:`DetectionWriter.abort` removes it. Every detection down to the score floor
is kept, so thresholds can move later without running the model again.

With a post-processing chain (:func:`aifactory.postprocess.apply_chain`, imported only then: the
prediction stage calls the post-processing stage for ``--postprocess``), the raw detections stream into
layer ``raw_detections`` and the chain's result becomes layer ``detections`` of the same file; the chain
needs all detections at once, so that step holds them in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from affine import Affine

from aifactory.io.atomic import AtomicWriter, remove_path, temporary_sibling
from aifactory.io.output_paths import file_output
from aifactory.io.vector import write_frame
from aifactory.prediction.tiling import TileGrid
from aifactory.prediction.vectorize import Detections
from aifactory.progress import reporter

LAYER = "detections"
RAW_LAYER = "raw_detections"
COLUMNS = ("class", "score", "score_max", "model_run", "tile_id", "area", "review", "reviewed_class")
CHUNK = 5000


def to_frame(detections: Detections, classes: list[str], transform: Affine, crs: Any, model_run: str,
             grid: TileGrid) -> gpd.GeoDataFrame:
    """Detections as a GeoDataFrame in the raster's CRS with the contract's columns.

    ``classes`` are the foreground classes (the detections' 1-based ``class_index`` points into them).
    """
    pixel_geoms = detections.geometry
    geometry = shapely.transform(pixel_geoms, lambda xy: np.column_stack(transform * (xy[:, 0], xy[:, 1])))
    bounds = shapely.bounds(pixel_geoms) if len(pixel_geoms) else np.zeros((0, 4))
    tile_ids = grid.tile_ids((bounds[:, 1] + bounds[:, 3]) / 2, (bounds[:, 0] + bounds[:, 2]) / 2)
    return gpd.GeoDataFrame({
        "class": pd.Series([classes[i - 1] for i in detections.class_index.tolist()], dtype=object),
        "score": detections.score.astype("float64"),
        "score_max": detections.score_max.astype("float64"),
        "model_run": pd.Series([model_run] * len(detections), dtype=object),
        "tile_id": pd.Series(tile_ids, dtype=object),
        "area": shapely.area(geometry).astype("float64"),
        "review": pd.Series(["unreviewed"] * len(detections), dtype=object),
        "reviewed_class": pd.Series([None] * len(detections), dtype=object),
    }, geometry=gpd.GeoSeries(geometry, crs=crs))


class DetectionWriter(AtomicWriter):
    """Streams detections into ``path`` (layer ``detections``); the file appears only on :meth:`close`.

    As a context manager it closes on success and aborts on any exception, like the COG writer.
    """

    def __init__(self, path: str | os.PathLike[str], classes: list[str], transform: Affine, crs: Any,
                 model_run: str, grid: TileGrid, postprocess: list[dict[str, Any]] | None = None,
                 postprocess_source: str = "") -> None:
        self.path = file_output(path)
        self.postprocess = postprocess
        self.postprocess_source = postprocess_source
        self.layer = RAW_LAYER if postprocess else LAYER
        self._tmp = temporary_sibling(self.path)
        self._args = (classes, transform, crs, model_run, grid)
        self._pending: list[Detections] = []
        self._pending_count = 0
        self._written = False
        self.count = 0

    def add(self, detections: Detections) -> None:
        if not len(detections):
            return
        self._pending.append(detections)
        self._pending_count += len(detections)
        if self._pending_count >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        frame = to_frame(Detections.concat(self._pending), *self._args)
        self._pending, self._pending_count = [], 0
        if not len(frame) and self._written:
            return
        write_frame(frame, self._tmp, layer=self.layer, driver="GPKG", geometry_type="Polygon", append=self._written)
        self._written = True
        self.count += len(frame)

    def close(self) -> Path:
        """Write what is pending (an empty layer if nothing was found) and move the file into place."""
        try:
            self._flush()
            if self.postprocess:
                self._postprocess()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        reporter().artifact("vector", self.path)
        return self.path

    def _postprocess(self) -> None:
        from aifactory.postprocess import apply_chain

        raw = pyogrio.read_dataframe(self._tmp, layer=RAW_LAYER)
        done = apply_chain(raw, self.postprocess or [], self.postprocess_source)
        write_frame(done, self._tmp, layer=LAYER, driver="GPKG")
        self.count = len(done)

    def abort(self) -> None:
        remove_path(self._tmp)

