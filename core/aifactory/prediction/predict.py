"""``predict``: one raster through one or more trained models to a scores COG and a detections GeoPackage.

The stages and where memory goes (none of it scales with the raster's area):

1. reader thread: one block-aligned read per batch of tiles, nodata and out-of-geofence tiles dropped
   (:mod:`.source`);
2. main thread: the model source on the batch (:mod:`.model_source`: torch run directories with TTA and
   ensembles, or one ONNX bundle), blended into a band of ``tile`` rows (:mod:`.blending`);
3. writer thread: each band of finished rows becomes uint8 scores (COG, streamed) and polygons
   (:mod:`.vectorize`, seam-free), filtered by the geofence rule and appended to the GeoPackage.

Box detectors (task families ``heatmap``, ``detection``, ``instance``; :mod:`.detectors`) take the same
path for their scores raster (the centre heatmap, or the box-score coverage, see ``SCORES_MEANING``),
while their boxes go from each tile into the streamed cross-tile merge (:mod:`.boxes`) and from there,
as rows are finished, to the GeoPackage with the same columns (geometry = the box polygon, or the
instance polygon for Mask R-CNN).

Both outputs are written to hidden temporary files and renamed only when complete, so a prediction
killed at any moment leaves no partial ``scores.tif`` or ``detections.gpkg``.

Bad input is refused before any work with one line (exit 2 from the CLI): a run directory that is
missing or not a trained run, a raster with fewer bands than a model reads, a GSD more than 2× off the
model's (within 2× it is resampled on the fly with a warning, see :mod:`.source`), a geofence that does
not intersect the raster; an all-nodata raster (or geofence) is refused when no tile had a valid pixel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from aifactory.datasets.render import CONTACT_CLASS
from aifactory.errors import ConfigError, InputError
from aifactory.io.atomic import write_text_atomic
from aifactory.io.cog import COGWriter
from aifactory.io.raster import crs_string, raster_info
from aifactory.prediction.blending import BlendWindow, RowBandAccumulator, blend_weights
from aifactory.prediction.boxes import BoxMerger
from aifactory.prediction.detections import DetectionWriter
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.model_source import BOX_FAMILIES, Precision, open_models
from aifactory.prediction.preview import write_preview
from aifactory.prediction.source import (
    Batch,
    ReadStats,
    check_bands,
    iter_batches,
    open_source,
    resample_factor,
)
from aifactory.prediction.threads import Sink, limit_malloc_arenas, prefetch
from aifactory.prediction.tiling import TileGrid
from aifactory.prediction.vectorize import Detections, StreamingVectorizer
from aifactory.progress import reporter

SCORES_NAME = "scores.tif"
DETECTIONS_NAME = "detections.gpkg"
SUMMARY_NAME = "prediction.json"
PREVIEW_NAME = "preview.png"
WRITE_ROWS = 128
#: What a pixel of ``scores.tif`` means for each task family (written into ``prediction.json``).
SCORES_MEANING = {
    "segmentation": "class probability, blended across tiles",
    "heatmap": "probability that an object of the class is centred on the pixel (CenterNet heatmap upsampled "
               "to pixels), blended across tiles",
    "detection": "box-score coverage: the highest score of a detected box of the class covering the pixel, "
                 "from the tile that owns the pixel",
    "instance": "instance-score coverage: the highest score of a detected instance of the class whose mask "
                "covers the pixel, from the tile that owns the pixel",
}


@dataclass
class PredictionResult:
    """Where the outputs are and what happened."""

    scores: Path
    detections: Path
    summary: Path
    preview: Path
    classes: list[str]
    tiles_total: int
    tiles_predicted: int
    tiles_skipped_nodata: int
    tiles_skipped_outside: int
    detections_count: int
    device: str
    precision: str
    seconds: float
    task: str = "segmentation"
    scores_meaning: str = SCORES_MEANING["segmentation"]

    def to_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def foreground_classes(classes: list[str]) -> tuple[list[str], slice]:
    """Classes that get a scores band and their channels: all but the background (index 0) of a softmax."""
    if len(classes) == 1:
        return list(classes), slice(0, 1)
    return list(classes[1:]), slice(1, len(classes))


def label_mode_options(extra: dict[str, Any], classes: list[str], instance_h: float) -> dict[str, Any]:
    """Vectorizer options for the label mode the model was trained on (``card.extra["label_mode"]``).

    ``core``: objects are already apart, grown back by 1 / ``core_factor`` (0.5 unless the card says);
    ``boundary``: the ``contact`` class is not an object and objects grow back by 1 px over it;
    ``fill`` (default): touching objects are split at distance-map necks of depth ``instance_h``.
    """
    mode = extra.get("label_mode", "fill")
    if mode == "core":
        return {"instance_h": 0.0, "grow_factor": 1.0 / float(extra.get("core_factor", 0.5))}
    if mode == "boundary" and CONTACT_CLASS in classes:
        return {"instance_h": 0.0, "grow_px": 1.0, "ignore": (classes.index(CONTACT_CLASS) + 1,)}
    return {"instance_h": instance_h}


def default_overlap(tile: int) -> int:
    """Overlap between tiles when none is given: 1/8 of the tile, even."""
    return tile // 16 * 2


def predict(models: Sequence[str | Path], raster: str | Path, out_dir: str | Path, *,
            geofence: str | Path | None = None, exclude: str | Path | None = None, geofence_rule: str = "keep",
            tta: bool | str = False, batch_size: int = 4, device: str = "auto", score_floor: float = 0.1,
            ensemble: str = "mean", weights: Sequence[float] | None = None, overlap: int | None = None,
            blend: BlendWindow = "cosine", precision: Precision = "auto", instance_h: float = 2.0,
            postprocess: str | Path | None = None) -> PredictionResult:
    """Predict ``raster`` with ``models`` into ``out_dir`` (see the module docstring).

    ``models``: run directories, or one bundle (``model.zip`` or its folder; its packaged overlap and
    post-processing apply unless ``overlap``/``postprocess`` are given), or ``models:/NAME@ALIAS``.

    ``tta``: False, True (= "d4", 8 passes) or "flips" (4). ``ensemble``: mean, weighted (with
    ``weights``), max or vote. ``overlap`` defaults to 1/8 of the tile. ``score_floor``: detections whose
    mean score is below it are not written. ``instance_h``: neck depth (px) that separates touching
    objects, 0 to keep components whole (models trained on ``core`` or ``boundary`` labels separate
    objects themselves, see :func:`label_mode_options`).
    ``postprocess``: a chain YAML file (validated before the model runs) applied to the detections; the
    raw ones stay in layer ``raw_detections``.
    Box detectors: ``score_floor`` applies to box scores; ``ensemble`` and TTA passes are fused with
    weighted box fusion (``weights`` apply); ``blend`` applies to the heatmap family's scores.
    """
    started = time.monotonic()
    limit_malloc_arenas()
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if not 0.0 <= score_floor <= 1.0:
        raise ConfigError(f"score floor must be in [0, 1], got {score_floor}")
    chain = None
    if postprocess is not None:
        from aifactory.postprocess import load_chain

        chain = load_chain(postprocess)
    source = open_models(models, device=device, precision=precision, tta=tta, ensemble=ensemble, weights=weights)
    chain_source = str(postprocess or "")
    if chain is None and source.chain:
        chain, chain_source = source.chain, f"{source.runs[0]} (packaged post-processing)"
    info = raster_info(raster)
    for run, model_card in zip(source.runs, source.cards, strict=True):
        check_bands(info, model_card, run)
    factors = {resample_factor(info, model_card) for model_card in source.cards}
    if len(factors) > 1:
        raise InputError("ensemble members were trained at different GSDs; predict them separately")
    card = source.cards[0]
    classes, channels = foreground_classes(card.classes)
    detector = None
    if card.task in BOX_FAMILIES:
        from aifactory.prediction.detectors import box_detector  # torch: only for run directories

        detector = box_detector(source, precision, tta, score_floor, ensemble)
    out_dir = Path(out_dir)
    if overlap is None:
        overlap = source.overlap if source.overlap is not None else default_overlap(card.tile_size)
    stats = ReadStats()
    with open_source(str(raster), factors.pop()) as ds:
        width, height, transform, crs = ds.width, ds.height, ds.transform, ds.crs
        fence = Geofence.load(width, height, crs_string(crs) if info.georeferenced else None, transform,
                              geofence, exclude, geofence_rule, raster_name=str(raster))
        tile = card.tile_size
        grid = TileGrid(width, height, tile, overlap)
        window = blend_weights(tile, grid.overlap, "crop" if card.task in ("detection", "instance") else blend)
        accumulator = RowBandAccumulator(width, height, tile, len(classes))
        merger = BoxMerger(grid) if detector is not None else None
        vectorizer = None if detector is not None else \
            StreamingVectorizer(width, score_floor=score_floor, **label_mode_options(card.extra, classes, instance_h))
        model_run = "+".join(source.names)
        with COGWriter(out_dir / SCORES_NAME, width, height, len(classes), "uint8", crs=crs, transform=transform,
                       blocksize=512, band_descriptions=classes, progress_task="predict", mask=True) as scores_out, \
                DetectionWriter(out_dir / DETECTIONS_NAME, classes, transform, crs, model_run, grid, chain,
                                chain_source) as detections_out:

            def write_rows(item: tuple[int, np.ndarray, np.ndarray, Detections | None]) -> None:
                top, strip, strip_predicted, found = item
                for start in range(0, strip.shape[1], WRITE_ROWS):  # thin pieces: temporaries ∝ width × 128
                    values = strip[:, start:start + WRITE_ROWS]
                    predicted = strip_predicted[start:start + WRITE_ROWS]
                    row0 = top + start
                    inside = fence.mask(row0, values.shape[1], width)
                    keep = predicted if inside is None else predicted & inside
                    where = Window(0, row0, width, values.shape[1])
                    scores_out.write(np.where(keep, values, 0), where)
                    scores_out.write_mask(keep, where)
                    if vectorizer is not None:
                        detections_out.add(fence.apply(vectorizer.feed(row0, values, predicted)))
                if found is not None:
                    detections_out.add(fence.apply(found))

            sink: Sink[tuple[int, np.ndarray, np.ndarray, Detections | None]] = Sink(write_rows, depth=1)
            progress = reporter()
            try:
                for item in prefetch(iter_batches(ds, grid, source.bands, fence, batch_size, stats)):
                    if isinstance(item, Batch):
                        if detector is not None and merger is not None:
                            fg, found = detector.predict_batch(item, len(classes), width, height)
                            for tile_, tile_boxes in zip(item.tiles, found, strict=True):
                                merger.add(tile_, tile_boxes)
                        else:
                            fg = source(item.data, item.valid, channels)
                        for index, tile_ in enumerate(item.tiles):
                            accumulator.add(tile_, fg[index], window * item.valid[index])
                    else:
                        stop = grid.final_rows(item.row)[1]  # also the top of the next tile row
                        sink.put((*accumulator.pop(stop), merger.close(stop) if merger is not None else None))
                        done = stats.tiles_predicted + stats.tiles_nodata + stats.tiles_outside
                        progress.progress("predict", done / len(grid),
                                          f"{stats.tiles_predicted} tiles predicted")
                sink.close()
            except BaseException:
                sink.cancel()
                raise
            if stats.tiles_predicted == 0:
                where = " inside the geofence" if fence.limited else ""
                raise InputError(f"{raster}: no valid pixel to predict{where} (all nodata)")
            detections_out.add(fence.apply(vectorizer.finish() if vectorizer is not None else Detections()))
            scores_out.update_tags(AIFACTORY_MODEL_RUN=model_run, AIFACTORY_CLASSES=json.dumps(classes))
    result = PredictionResult(
        scores=out_dir / SCORES_NAME, detections=out_dir / DETECTIONS_NAME, summary=out_dir / SUMMARY_NAME,
        preview=out_dir / PREVIEW_NAME,
        classes=classes, tiles_total=stats.tiles_total, tiles_predicted=stats.tiles_predicted,
        tiles_skipped_nodata=stats.tiles_nodata, tiles_skipped_outside=stats.tiles_outside,
        detections_count=detections_out.count, device=source.device,
        precision=detector.precision if detector is not None else source.precision,
        seconds=round(time.monotonic() - started, 3), task=card.task, scores_meaning=SCORES_MEANING[card.task])
    write_preview(result.scores, result.preview, classes,
                  f"{Path(raster).name} · {model_run} · {result.detections_count} detections")
    write_text_atomic(result.summary, json.dumps(result.to_dict(), indent=2))
    return result
