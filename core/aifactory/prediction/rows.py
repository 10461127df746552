"""The computing half of a prediction: a picklable :class:`PredictSpec`, opened into models, raster,
geofence and tile grid, and :func:`predict_rows`, which turns a range of tile rows into finished rows.

:func:`aifactory.prediction.predict.predict` runs every tile row here and writes the rows as they come;
a fan-out worker (:mod:`.fanout`) opens the same spec in its own process and runs one range of tile
rows. What makes the parts add up to exactly the single-process output:

- a worker starting at tile row ``i > 0`` also runs tile row ``i - 1`` first (its *warm-up* row), whose
  tiles overlap the top of row ``i``: the blended pixels of its first finished row then get the same
  tiles, with the same weights, added in the same order as in a single pass, and the warm-up row's own
  finished rows are dropped (the previous part hands them out);
- batches never span tile rows (:func:`aifactory.prediction.tiling.batch_groups`), so a tile meets
  the same batch neighbours whatever the part (batches of :attr:`OpenPrediction.pass_size` tiles, which
  depends only on the batch size and the device);
- ``precision="auto"`` decides on the raster's first batch in every part (:func:`settle_precision`);
- box detectors hand out each tile's boxes unmerged (:attr:`RowResult.boxes`): the one consumer merges
  them in tile-row order, across part boundaries, exactly as in one pass.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from aifactory.errors import InputError
from aifactory.io.raster import crs_string, raster_info
from aifactory.models import TORCHVISION_FAMILIES
from aifactory.prediction.blending import BlendWindow, RowBandAccumulator, TileWindows, blend_weights
from aifactory.prediction.contact import CONTACT_TASK, stack_classes
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.model_source import BOX_FAMILIES, ModelSource, Precision, open_models
from aifactory.prediction.source import (
    Batch,
    ReadStats,
    RowDone,
    check_bands,
    iter_batches,
    open_source,
    resample_factor,
)
from aifactory.prediction.threads import in_order, prefetch
from aifactory.prediction.tiling import Tile, TileGrid

if TYPE_CHECKING:
    import rasterio.io
    from rasterio.vrt import WarpedVRT

    from aifactory.models.card import ModelCard
    from aifactory.prediction.boxes import TileBoxes
    from aifactory.prediction.detectors import DetectorRunner


def default_overlap(tile: int) -> int:
    """Overlap between tiles when none is given: 1/8 of the tile, even."""
    return tile // 16 * 2


def foreground_classes(classes: list[str]) -> tuple[list[str], slice]:
    """Classes that get a scores band and their channels: all but the background (index 0) of a softmax."""
    if len(classes) == 1:
        return list(classes), slice(0, 1)
    return list(classes[1:]), slice(1, len(classes))


@dataclass(frozen=True)
class PredictSpec:
    """Everything that decides a prediction's pixels and boxes; plain values, so it travels to workers."""

    models: tuple[str, ...]
    raster: str
    geofence: str | None = None
    exclude: str | None = None
    geofence_rule: str = "keep"
    tta: bool | str = False
    batch_size: int = 4
    device: str = "auto"
    score_floor: float = 0.1
    ensemble: str = "mean"
    weights: tuple[float, ...] | None = None
    overlap: int | None = None
    blend: BlendWindow = "cosine"
    precision: Precision = "auto"


@dataclass
class OpenPrediction:
    """A :class:`PredictSpec` opened in this process: models, raster, geofence and tile grid."""

    spec: PredictSpec
    source: ModelSource
    card: ModelCard
    classes: list[str]
    channels: slice
    detector: DetectorRunner | None
    ds: rasterio.io.DatasetReader | WarpedVRT
    fence: Geofence
    grid: TileGrid

    @property
    def device(self) -> str:
        return self.source.device

    @property
    def precision(self) -> str:
        """The precision the model runs at (decided on the first batch when ``auto``)."""
        return self.detector.precision if self.detector is not None else self.source.precision

    @property
    def passes(self) -> int:
        """Batches run at once (:attr:`ModelSource.passes`; box detectors one at a time)."""
        return 1 if self.detector is not None else self.source.passes

    @property
    def pass_size(self) -> int:
        """Tiles per batch: the batch size shared between the passes, so that the model holds as many tiles at
        once as it would in one pass."""
        return -(-self.spec.batch_size // self.passes)

    @property
    def blend(self) -> BlendWindow:
        """The blending window: box detectors' coverage comes from the tile owning the pixel (``crop``)."""
        return "crop" if self.card.task in TORCHVISION_FAMILIES else self.spec.blend

    @property
    def window(self) -> np.ndarray:
        """Blending weights of a tile whose overlaps are the requested ones (:meth:`windows` has every tile's)."""
        return blend_weights(self.grid.tile, self.grid.overlap, self.blend)

    @property
    def windows(self) -> TileWindows:
        """Each tile's blending weights, masked by its valid pixels."""
        return TileWindows(self.grid, self.blend)


@contextlib.contextmanager
def open_prediction(spec: PredictSpec) -> Iterator[OpenPrediction]:
    """Open ``spec``; bad input (bands, GSD, geofence, models) is refused here, before any tile is read."""
    source = open_models(list(spec.models), device=spec.device, precision=spec.precision, tta=spec.tta,
                         ensemble=spec.ensemble, weights=spec.weights)
    info = raster_info(spec.raster)
    for run, model_card in zip(source.runs, source.cards, strict=True):
        check_bands(info, model_card, run)
    factors = {resample_factor(info, model_card) for model_card in source.cards}
    if len(factors) > 1:
        raise InputError("ensemble members were trained at different GSDs; predict them separately")
    card = source.cards[0]
    # a contact model's source returns its probability stack, background first and ``contact`` last (.contact)
    classes, channels = foreground_classes(stack_classes(card.classes) if card.task == CONTACT_TASK
                                           else card.classes)
    detector = None
    if card.task in BOX_FAMILIES:
        from aifactory.prediction.detectors import box_detector  # torch: only for run directories

        detector = box_detector(source, spec.precision, spec.tta, spec.score_floor, spec.ensemble)
    overlap = spec.overlap
    if overlap is None:
        overlap = source.overlap if source.overlap is not None else default_overlap(card.tile_size)
    with open_source(spec.raster, factors.pop(), "1" if source.device == "cpu" else "ALL_CPUS") as ds:
        fence = Geofence.load(ds.width, ds.height, crs_string(ds.crs) if info.georeferenced else None,
                              ds.transform, spec.geofence, spec.exclude, spec.geofence_rule,
                              raster_name=spec.raster)
        grid = TileGrid(ds.width, ds.height, card.tile_size, overlap)
        yield OpenPrediction(spec, source, card, classes, channels, detector, ds, fence, grid)


@dataclass
class RowResult:
    """Finished raster rows [top, top + rows) after one tile row: uint8 scores (classes, rows, width), the
    mask of predicted pixels, and for box detectors every tile's own boxes, not yet merged across tiles."""

    top: int
    values: np.ndarray
    predicted: np.ndarray
    boxes: list[tuple[Tile, TileBoxes]] = field(default_factory=list)

    @property
    def stop(self) -> int:
        return self.top + self.values.shape[1]


def settle_precision(run: OpenPrediction) -> None:
    """Let ``precision="auto"`` decide on the raster's first batch, as a single pass does: a part that starts
    further down would otherwise decide on its own first batch, and a model near the bf16 limits could then
    run bf16 in one part and float32 in another (seen in the Ray fan-out test: scores off by up to 7 / 255)."""
    if run.detector is not None or not run.source.precision_pending:
        return
    for item in iter_batches(run.ds, run.grid, run.source.bands, run.fence, run.pass_size, ReadStats()):
        if isinstance(item, Batch):
            run.source(item.data, item.valid, run.channels)
            return


def predict_rows(run: OpenPrediction, stats: ReadStats, rows: range | None = None) -> Iterator[RowResult]:
    """One :class:`RowResult` per tile row of ``rows`` (all by default), in order (see the module docstring).

    Batches are read ahead in a thread and run :attr:`OpenPrediction.passes` at a time (:func:`in_order`); their
    scores are blended in order in this thread.
    """
    grid, width, height = run.grid, run.grid.width, run.grid.height
    rows = rows if rows is not None else range(len(grid.row_offsets))
    warm_up = range(max(rows.start - 1, 0), rows.start)
    accumulator = RowBandAccumulator(grid, len(run.classes), first_row=warm_up.start)
    windows = run.windows
    size, keep = run.pass_size, run.passes + 3  # batches running, queued for the pool and by the reader, being read
    batches = itertools.chain(iter_batches(run.ds, grid, run.source.bands, run.fence, size, ReadStats(), warm_up,
                                           keep),
                              iter_batches(run.ds, grid, run.source.bands, run.fence, size, stats, rows, keep))
    if rows.start > 0:
        settle_precision(run)

    def compute(batch: Batch | RowDone) -> tuple[np.ndarray, list[TileBoxes]]:
        assert isinstance(batch, Batch)  # in_order runs only batches
        if run.detector is not None:
            computed = run.detector.predict_batch(batch, len(run.classes), width, height)
        else:
            computed = run.source(batch.data, batch.valid, run.channels), []
        batch.release()  # its buffer goes back to the reader
        return computed

    boxes: list[tuple[Tile, TileBoxes]] = []
    with contextlib.ExitStack() as stack:  # the first batch runs alone on all the threads, the others share them
        share = (lambda: stack.enter_context(run.source.concurrently())) if run.passes > 1 else None
        for item, computed in in_order(prefetch(batches), compute, run.passes, lambda x: isinstance(x, Batch), share):
            if isinstance(item, Batch):
                assert computed is not None
                scores, found = computed
                if run.detector is not None:
                    boxes.extend(zip(item.tiles, found, strict=True))
                for index, (tile, valid) in enumerate(zip(item.tiles, item.valid, strict=True)):
                    accumulator.add(tile, scores[index], windows(tile, valid))
            else:
                assert isinstance(item, RowDone)
                top, values, predicted = accumulator.finish_row()
                if item.row in rows:
                    yield RowResult(top, values, predicted, boxes)
                del values, predicted  # raster-wide: released before the next tile row is computed
                boxes = []
