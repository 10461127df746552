"""``predict``: one raster through one or more trained models to a scores COG and a detections GeoPackage.

The stages and where memory goes (none of it scales with the raster's area):

1. reader thread: one read per batch of tiles (their union), nodata and out-of-geofence tiles dropped
   (:mod:`.source`);
2. model threads: the model source on the batch (:mod:`.model_source`: torch run directories with TTA and
   ensembles, or one ONNX bundle), two batches at once on the CPU (:data:`.runtime.CPU_PASSES`); main
   thread: their scores blended in order, column by column; each tile row hands out its finished rows
   as uint8 (:mod:`.blending`);
3. two writer threads: each strip of finished rows becomes scores in the COG (streamed) in one, and
   polygons (:mod:`.vectorize`, seam-free), filtered by the geofence rule and appended to the GeoPackage,
   in the other.

Box detectors (task families ``heatmap``, ``detection``, ``instance``; :mod:`.detectors`) take the same
path for their scores raster (the centre heatmap, or the box-score coverage, see ``SCORES_MEANING``),
while their boxes go from each tile into the streamed cross-tile merge (:mod:`.boxes`) and from there,
as rows are finished, to the GeoPackage with the same columns (geometry = the box polygon, or the
instance polygon for Mask R-CNN).

Contact models (task family ``contact``) take the segmentation path: each tile's heads become one probability
stack with a last ``contact`` band (:mod:`.contact`), vectorized like ``boundary`` labels (see
:func:`label_mode_options`).

Both outputs are written to hidden temporary files and renamed only when complete, so a prediction
killed at any moment leaves no partial ``scores.tif`` or ``detections.gpkg``.

Bad input is refused before any work with one line (exit 2 from the CLI): a run directory that is
missing or not a trained run, a raster with fewer bands than a model reads, a GSD more than 2× off the
model's (within 2× it is resampled on the fly with a warning, see :mod:`.source`), a geofence that does
not intersect the raster; an all-nodata raster (or geofence) is refused when no tile had a valid pixel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aifactory.datasets.render import CONTACT_CLASS
from aifactory.errors import ConfigError, InputError
from aifactory.heap import apply_heap_policy
from aifactory.io.atomic import write_text_atomic
from aifactory.io.cog import COGWriter
from aifactory.io.output_paths import check_output_folder
from aifactory.io.raster import SCORES_CLASSES_TAG
from aifactory.prediction.blending import BlendWindow
from aifactory.prediction.boxes import BoxMerger
from aifactory.prediction.contact import CONTACT_TASK
from aifactory.prediction.detections import DetectionWriter
from aifactory.prediction.geofence import Geofence
from aifactory.prediction.model_source import Precision
from aifactory.prediction.preview import write_preview
from aifactory.prediction.rows import PredictSpec, RowResult, open_prediction, predict_rows
from aifactory.prediction.source import ReadStats
from aifactory.prediction.threads import Sink
from aifactory.prediction.vectorize import StreamingVectorizer
from aifactory.progress import reporter
from aifactory.tensor_pool import pool_stats

if TYPE_CHECKING:
    import rasterio.io
    from rasterio.vrt import WarpedVRT

    from aifactory.prediction.fanout import FanOut

SCORES_NAME = "scores.tif"
DETECTIONS_NAME = "detections.gpkg"
SUMMARY_NAME = "prediction.json"
PREVIEW_NAME = "preview.png"
WRITE_ROWS = 128
#: ZSTD level of scores.tif: zstd's own default rather than GDAL's 9 (measured at 4k² when the COG was converted:
#: 0.72 → 0.40 s in one thread, file +17 %; scores are small next to the imagery they come from). Its tiles are
#: compressed once, as they are streamed, and copied into the COG (:mod:`aifactory.io.cog_assembly`).
SCORES_ZSTD_LEVEL = 3
#: No TIFF predictor for scores.tif: horizontal differencing makes smooth 8-bit scores larger (20000 × 2304,
#: two classes: 8.6 → 8.3 MB) and costs time on every write.
SCORES_PREDICTOR = 1
#: How the model's OpenMP threads wait between parallel regions: asleep, not spinning, so that the reader and
#: writer threads get the cores they share with the model (20000 × 2304 crop, 2 CPUs, runs alternated: predict
#: 29.9 s spinning, 28.3 s asleep, with 30 s of user CPU instead of 35 (libgomp's default) or 42 (always
#: spinning); the model alone within noise, 19.9 → 20.5 s). libgomp reads it when torch loads, which predict
#: does after this is set (:func:`process_settings`); a value already set is kept.
OMP_WAIT_POLICY = "PASSIVE"
#: What a pixel of ``scores.tif`` means for each task family (written into ``prediction.json``).
SCORES_MEANING = {
    "segmentation": "class probability, blended across tiles",
    "contact": "class probability away from contacts (semantic head × (1 − contact head)), and in band 'contact' the "
               "probability that the pixel lies where two objects touch, blended across tiles",
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
    workers: int = 1
    heap: str = "lean"  # the process's heap policy (AIFACTORY_HEAP, see aifactory.heap)
    passes: int = 1  # batches the model ran at once (aifactory.prediction.rows.OpenPrediction.passes)
    tensor_pool_mb: int = 0  # cap of torch's CPU block pool, 0 when none ran (aifactory.tensor_pool)

    def to_dict(self) -> dict[str, object]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def label_mode_options(extra: dict[str, Any], classes: list[str], instance_h: float,
                       task: str = "segmentation") -> dict[str, Any]:
    """Vectorizer options for the label mode the model was trained on (``card.extra["label_mode"]``).

    ``core``: objects are already apart, grown back by 1 / ``core_factor`` (0.5 unless the card says);
    ``boundary``: the ``contact`` class is not an object, and each contact pixel goes back to the object beside it
    (``claim``, :mod:`.vectorize`): objects regain their contact side, and their other edges stay where the model
    put them (a 1 px buffer, used before, also made every lone object 1 px too large all round: +13 % area on a
    32 × 32 px square);
    ``fill`` (default): touching objects are split at distance-map necks of depth ``instance_h``.
    Contact models (``task`` ``contact``) are read as ``boundary`` whatever their labels: their scores end with a
    ``contact`` band (:mod:`.contact`). Their training marks contact 2 px deep into each object
    (:data:`aifactory.training.targets.CONTACT_DISTANCE`), where ``boundary`` labels mark 1, and the claim reaches
    1 px (the pixels beside an object): touching objects come back 1 px short on their contact side only. A
    2 px claim would need the streamed vectorizer to hold claims and groups open one row further. Buffers of the
    outline do worse: on the probe of tests/core/test_predict_contact.py (two 60 × 40 px boxes touching, a
    32 × 32 px one alone), IoU with the true boxes: claim 0.975 for the pair (−2.5 % area) and 1.0 alone; 1 px
    buffer 0.921 for the pair (+3.3 %) and 0.886 alone (+12.9 %); 2 px buffer (contact side exact) 0.893 for the
    pair (+12.0 %) and 0.790 alone (+26.6 %).
    """
    mode = "boundary" if task == CONTACT_TASK else extra.get("label_mode", "fill")
    if mode == "core":
        return {"instance_h": 0.0, "grow_factor": 1.0 / float(extra.get("core_factor", 0.5))}
    if mode == "boundary" and CONTACT_CLASS in classes:
        return {"instance_h": 0.0, "claim": True, "ignore": (classes.index(CONTACT_CLASS) + 1,)}
    return {"instance_h": instance_h}


def scores_writer(path: Path, ds: rasterio.io.DatasetReader | WarpedVRT, classes: list[str],
                  progress_task: str | None = None) -> COGWriter:
    """The streamed ``scores.tif`` of a prediction on ``ds``'s grid: a uint8 band per class and a mask, fed
    whole rows in order (:meth:`RowWriter.write_scores`), so its overviews are built as the rows come."""
    return COGWriter(path, ds.width, ds.height, len(classes), "uint8", crs=ds.crs, transform=ds.transform,
                     blocksize=512, band_descriptions=classes, progress_task=progress_task, mask=True,
                     level=SCORES_ZSTD_LEVEL, predictor=SCORES_PREDICTOR, stream_overviews=True)


class RowWriter:
    """Writes each :class:`RowResult` in order: scores and mask into the COG (:meth:`write_scores`), polygons (or
    boxes merged across tiles) through the geofence rule into the GeoPackage (:meth:`write_detections`);
    :meth:`finish` flushes the vectorizer.

    The two halves share nothing but the (read-only) strip, so predict runs them in two threads
    (:class:`~aifactory.prediction.threads.Sink`): where the model is fast (a GPU) the writer side sets the pace,
    and in one thread it did. Measured on an H200 with 16 CPUs (20000², U-Net resnet18, bf16, bare forward 2 s): in
    one thread, 19.6 CPU-s of a 24.9 s predict (vectorization 13.6 s, scores COG writes 5.9 s); in two (and with
    :func:`~aifactory.prediction.vectorize._separate_all`), predict 21.1 s, the vectorizer's thread 17.4 CPU-s and the
    scores' 6.8. On 2 CPUs, where the model sets the pace, no change (20000 × 2304 crop, alternated: 18.7–20.2
    against 19.1–19.6 s), nor in peak memory: each thread's queue holds one strip, as the one thread's did.
    """

    def __init__(self, scores_out: COGWriter, detections_out: DetectionWriter, fence: Geofence,
                 vectorizer: StreamingVectorizer | None, merger: BoxMerger | None) -> None:
        self.scores_out, self.detections_out, self.fence = scores_out, detections_out, fence
        self.vectorizer, self.merger = vectorizer, merger
        self._any_predicted = False

    def __call__(self, result: RowResult) -> None:
        self.write_scores(result)
        self.write_detections(result)

    @staticmethod
    def _pieces(result: RowResult) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, values, predicted) of thin pieces of the strip: temporaries ∝ width × ``WRITE_ROWS``."""
        for start in range(0, result.values.shape[1], WRITE_ROWS):
            yield result.top + start, result.values[:, start:start + WRITE_ROWS], \
                result.predicted[start:start + WRITE_ROWS]

    def write_scores(self, result: RowResult) -> None:
        """Write a strip of scores; after the raster's last rows, finish the COG at once (its assembly then runs
        while the vectorizer finishes the same strip: 0.25 s of one core idle at the end of every predict before,
        on 2 CPUs, when the COG was converted). Not when no pixel was predicted: predict refuses an all-nodata
        raster and leaves no output."""
        width = result.values.shape[2]
        for row0, values, predicted in self._pieces(result):
            inside = self.fence.mask(row0, values.shape[1], width)
            keep = predicted if inside is None else predicted & inside
            self._any_predicted = self._any_predicted or bool(keep.any())
            self.scores_out.write_rows(row0, values if keep.all() else np.where(keep, values, 0), keep)
        if result.stop >= self.scores_out.height and self._any_predicted:
            self.scores_out.close()

    def write_detections(self, result: RowResult) -> None:
        if self.vectorizer is not None:
            for row0, values, predicted in self._pieces(result):
                self.detections_out.add(self.fence.apply(self.vectorizer.feed(row0, values, predicted)))
        if self.merger is not None:
            for tile, boxes in result.boxes:
                self.merger.add(tile, boxes)
            self.detections_out.add(self.fence.apply(self.merger.close(result.stop)))

    def finish(self) -> None:
        if self.vectorizer is not None:
            self.detections_out.add(self.fence.apply(self.vectorizer.finish()))


def process_settings() -> str:
    """What predict sets up in its process before torch loads: the ``lean`` heap policy (unless
    ``AIFACTORY_HEAP`` says otherwise) and sleeping OpenMP threads; returns the heap policy in use."""
    heap = apply_heap_policy("lean")
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    return heap


def predict(models: Sequence[str | Path], raster: str | Path, out_dir: str | Path, *,
            geofence: str | Path | None = None, exclude: str | Path | None = None, geofence_rule: str = "keep",
            tta: bool | str = False, batch_size: int = 4, device: str = "auto", score_floor: float = 0.1,
            ensemble: str = "mean", weights: Sequence[float] | None = None, overlap: int | None = None,
            blend: BlendWindow = "cosine", precision: Precision = "auto", instance_h: float = 2.0,
            postprocess: str | Path | None = None, workers: int = 1,
            fan_out: FanOut | None = None) -> PredictionResult:
    """Predict ``raster`` with ``models`` into ``out_dir`` (see the module docstring).

    ``models``: run directories, or one bundle (``model.zip`` or its folder; its packaged overlap and
    post-processing apply unless ``overlap``/``postprocess`` are given), or ``models:/NAME@ALIAS``.

    ``batch_size``: tiles the model holds at once; on the CPU they are split into two batches run side by side
    (:data:`aifactory.prediction.runtime.CPU_PASSES`).
    ``tta``: False, True (= "d4", 8 passes) or "flips" (4). ``ensemble``: mean, weighted (with
    ``weights``), max or vote. ``overlap`` defaults to 1/8 of the tile. ``score_floor``: detections whose
    mean score is below it are not written. ``instance_h``: neck depth (px) that separates touching
    objects, 0 to keep components whole (models trained on ``core`` or ``boundary`` labels separate
    objects themselves, see :func:`label_mode_options`).
    ``postprocess``: a chain YAML file (validated before the model runs) applied to the detections; the
    raw ones stay in layer ``raw_detections``.
    Box detectors: ``score_floor`` applies to box scores; ``ensemble`` and TTA passes are fused with
    weighted box fusion (``weights`` apply); ``blend`` applies to the heatmap family's scores.
    ``workers`` > 1: tile rows are fanned out to that many Ray tasks (``fan_out`` says where and with
    which resources, :mod:`.fanout`); the outputs are the same as with one process.
    """
    started = time.monotonic()
    heap = process_settings()
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not 0.0 <= score_floor <= 1.0:
        raise ConfigError(f"score floor must be in [0, 1], got {score_floor}")
    chain = None
    if postprocess is not None:
        from aifactory.postprocess import load_chain

        chain = load_chain(postprocess)
    spec = PredictSpec(tuple(str(m) for m in models), str(raster), None if geofence is None else str(geofence),
                       None if exclude is None else str(exclude), geofence_rule, tta, batch_size, device,
                       score_floor, ensemble, None if weights is None else tuple(weights), overlap, blend, precision)
    out_dir = check_output_folder(out_dir)  # made by the writers, once the inputs are known good
    stats = ReadStats()
    # fanned out, this process only writes: its models stay off the GPUs the workers ask for
    here = spec if workers == 1 else dataclasses.replace(spec, device="cpu", precision="fp32")
    with open_prediction(here) as run, contextlib.ExitStack() as stack:
        if workers > 1:
            from aifactory.prediction.fanout import FanOut, ray_session

            fan_out = fan_out or FanOut()
            stack.enter_context(ray_session(fan_out))
        source, card, grid, fence, ds = run.source, run.card, run.grid, run.fence, run.ds
        chain_source = str(postprocess or "")
        if chain is None and source.chain:
            chain, chain_source = source.chain, f"{source.runs[0]} (packaged post-processing)"
        classes, width, height = run.classes, ds.width, ds.height
        vectorizer = None if run.detector is not None else \
            StreamingVectorizer(width, score_floor=score_floor,
                                **label_mode_options(card.extra, classes, instance_h, card.task))
        model_run = "+".join(source.names)
        with scores_writer(out_dir / SCORES_NAME, ds, classes, progress_task="predict") as scores_out, \
                DetectionWriter(out_dir / DETECTIONS_NAME, classes, ds.transform, ds.crs, model_run, grid, chain,
                                chain_source) as detections_out:
            scores_out.update_tags(AIFACTORY_MODEL_RUN=model_run, **{SCORES_CLASSES_TAG: json.dumps(classes)})
            writer = RowWriter(scores_out, detections_out, fence, vectorizer,
                               BoxMerger(grid) if run.detector is not None else None)
            progress = reporter()

            def report(rows: RowResult) -> None:
                done = f"{stats.tiles_predicted} tiles predicted" if workers == 1 else \
                    f"rows 0-{rows.stop} of {height} from {workers} Ray workers"
                progress.progress("predict", rows.stop / height, done)

            if fan_out is not None and workers > 1:
                from aifactory.prediction.fanout import PartDone, fan_out_rows

                parts: list[PartDone] = []
                for rows in fan_out_rows(spec, len(grid.row_offsets), workers, fan_out, parts):
                    writer(rows)
                    report(rows)
                    del rows  # a strip spans the raster's width: never keep one while the next is made
                for part in parts:
                    stats.add(part.stats)
                used_device = ",".join(sorted({part.device for part in parts}))
                used_precision = ",".join(sorted({part.precision for part in parts}))
                passes = max(part.passes for part in parts)
            else:
                sink: Sink[RowResult] = Sink(writer.write_scores, writer.write_detections, depth=1)
                try:
                    for rows in predict_rows(run, stats):
                        sink.put(rows)
                        report(rows)
                        del rows
                    sink.close()
                except BaseException:
                    sink.cancel()
                    raise
                used_device, used_precision, passes = run.device, run.precision, run.passes
            if stats.tiles_predicted == 0:
                where = " inside the geofence" if fence.limited else ""
                raise InputError(f"{raster}: no valid pixel to predict{where} (all nodata)")
            writer.finish()
    result = PredictionResult(
        scores=out_dir / SCORES_NAME, detections=out_dir / DETECTIONS_NAME, summary=out_dir / SUMMARY_NAME,
        preview=out_dir / PREVIEW_NAME,
        classes=classes, tiles_total=stats.tiles_total, tiles_predicted=stats.tiles_predicted,
        tiles_skipped_nodata=stats.tiles_nodata, tiles_skipped_outside=stats.tiles_outside,
        detections_count=detections_out.count, device=used_device, precision=used_precision,
        seconds=round(time.monotonic() - started, 3), task=card.task, scores_meaning=SCORES_MEANING[card.task],
        workers=workers, heap=heap, passes=passes, tensor_pool_mb=(pool_stats() or {}).get("cap_bytes", 0) >> 20)
    write_preview(result.scores, result.preview, classes,
                  f"{Path(raster).name} · {model_run} · {result.detections_count} detections")
    write_text_atomic(result.summary, json.dumps(result.to_dict(), indent=2))
    return result
