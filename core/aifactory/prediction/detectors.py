"""Detectors at prediction time: the heatmap family (CenterNet) and torchvision's box and instance models.

For each batch every model runs once per TTA transform (:mod:`.tta`); each pass's output, in the
transformed frame, is decoded to boxes (:func:`aifactory.models.heatmap.decode_heatmap` for heatmaps,
the model's own post-processing for torchvision) and mapped back with
:meth:`~aifactory.prediction.tta.Transform.inverse_boxes`. When there is more than one pass (TTA, an
ensemble, or both) the passes are fused per tile with weighted box fusion
(:func:`~aifactory.prediction.ensemble.weighted_box_fusion`, model weights shared by a model's passes),
so a box only some passes saw keeps that share of its score. Boxes are then clipped to the tile, shifted
to raster pixels and kept down to the score floor where their centre is a valid pixel; the streamed
cross-tile merge is :class:`~aifactory.prediction.boxes.BoxMerger`.

What each family writes to ``scores.tif`` (one band per foreground class, like segmentation):

- ``heatmap``: the centre heatmap's probability, upsampled from the model's stride to pixels, averaged
  over TTA passes and ensemble members and blended across tiles like segmentation scores;
- ``detection`` / ``instance``: the box-score coverage, per pixel the highest score of a box (or instance
  mask) of that class covering it, taken from the tile that owns the pixel (``crop`` blending).

Mask R-CNN's instances become polygons (the 0.5 contour of the mask, its largest part; the box when the
mask is empty). Weighted box fusion averages boxes, not masks, so instance models predict alone: TTA and
ensembles are refused for them. Torchvision detectors run in float32 (``precision`` ``bf16`` is refused:
their box ops have no bfloat16 kernels on the CPU; ``auto`` means float32); the heatmap family honours
an explicit ``bf16`` but ``auto`` does not calibrate it (calibration compares class maps of dense models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.features import shapes

from aifactory.errors import ConfigError, InputError
from aifactory.models import TORCHVISION_FAMILIES
from aifactory.models.heatmap import decode_heatmap
from aifactory.prediction.boxes import TileBoxes, clip_to_tile, paint_coverage
from aifactory.prediction.ensemble import combine, weighted_box_fusion
from aifactory.prediction.model_source import ModelSource
from aifactory.prediction.runtime import LoadedModel, Precision, Runner, TorchModels
from aifactory.prediction.source import Batch
from aifactory.prediction.tta import transforms

#: Peaks decoded per tile and pass (CenterNet); generous: 1000 cars in a 512² tile is a dense car park.
TOP_K = 1000
MASK_THRESHOLD = 0.5


@dataclass
class _Pass:
    """One model × TTA pass on a batch, mapped back to the tile frame (tile pixels)."""

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    labels: list[np.ndarray]
    masks: list[np.ndarray] | None  # (K, T, T) bool per image, instance models only
    dense: torch.Tensor | None  # (N, C_fg, T, T) heatmap probabilities, heatmap family only


def _set_score_floor(module: torch.nn.Module, floor: float) -> None:
    """Let torchvision's post-processing drop what the floor would drop anyway (less NMS, fewer masks)."""
    holder = getattr(module, "roi_heads", module)
    current = getattr(holder, "score_thresh", None)
    if isinstance(current, float | int):
        holder.score_thresh = max(float(current), floor)


class DetectorRunner(Runner):
    """Runs the models of a box family on batches: per-tile boxes in raster pixels and dense scores."""

    def __init__(self, models: list[LoadedModel], device: torch.device, precision: Precision, tta: str | bool,
                 family: str, score_floor: float, ensemble: str, weights: Sequence[float]) -> None:
        if family in TORCHVISION_FAMILIES and precision == "bf16":
            raise ConfigError(f"precision bf16: not supported for {family} models (torchvision box ops); "
                              "use fp32 or auto")
        if family == "instance" and (len(transforms(tta)) > 1 or len(models) > 1):
            raise ConfigError("instance models (mask_rcnn) predict alone: TTA and ensembles fuse boxes, not masks")
        super().__init__(models, device, "fp32" if precision == "auto" else precision, tta)
        self.family = family
        self.floor = score_floor
        self.ensemble = ensemble
        self.weights = list(weights)
        for model in models:
            _set_score_floor(model.module, score_floor)

    def predict_batch(self, batch: Batch, channels: int, width: int,
                      height: int) -> tuple[np.ndarray, list[TileBoxes]]:
        """Dense scores (N, channels, T, T) float32 and each tile's boxes (raster pixels, see the module docstring)."""
        data = torch.from_numpy(batch.data)
        if self.device.type == "cuda":
            data = data.pin_memory().to(self.device, non_blocking=True)
        size = batch.data.shape[-1]
        passes: list[tuple[int, _Pass]] = []
        with self._autocast(self.precision == "bf16"):
            for index, model in enumerate(self.models):
                x = self._inputs(model, data)
                for transform in transforms(self.tta):
                    output = model.module(transform.forward(x) if self.family == "heatmap"
                                          else list(transform.forward(x)))
                    decoded = self._decode(model, output, channels)
                    decoded.boxes = [transform.inverse_boxes(b, size) for b in decoded.boxes]
                    if decoded.dense is not None:
                        decoded.dense = transform.inverse(decoded.dense)
                    passes.append((index, decoded))
        found = [self._fuse(passes, i) for i in range(len(batch.tiles))]
        out = []
        dense = self._dense(passes) if self.family == "heatmap" else np.empty((len(found), channels, size, size),
                                                                              dtype="float32")
        for i, (tile, (boxes, scores, labels, masks)) in enumerate(zip(batch.tiles, found, strict=True)):
            local = np.asarray(boxes, dtype="float64").reshape(-1, 4)
            raster_boxes = clip_to_tile(local, tile, width, height)
            keep = (scores >= self.floor) & (raster_boxes[:, 2] > raster_boxes[:, 0]) & \
                (raster_boxes[:, 3] > raster_boxes[:, 1]) & _valid_centres(local, batch.valid[i])
            kept = TileBoxes(raster_boxes[keep], np.asarray(scores, "float64")[keep],
                             np.asarray(labels, "int64")[keep])
            tile_masks = masks[keep] if masks is not None else None
            if tile_masks is not None:
                kept.polygons = mask_polygons(tile_masks, kept.boxes, tile.col_off, tile.row_off)
            if self.family != "heatmap":
                dense[i] = paint_coverage(kept, tile, channels, tile_masks)
            out.append(kept)
        return dense, out

    def _decode(self, model: LoadedModel, output: Any, channels: int) -> _Pass:
        if self.family == "heatmap":
            stride = int(getattr(model.module, "stride", 1))
            detections = decode_heatmap(output, stride, score_threshold=self.floor, top_k=TOP_K)
            heat = torch.sigmoid(output["heatmap"].float())[:, -channels:]
            size = output["heatmap"].shape[-1] * stride
            if stride != 1:
                heat = F.interpolate(heat, size=(size, size), mode="bilinear", align_corners=False)
            dense: torch.Tensor | None = heat
        else:
            detections, dense = output, None
        masks = None
        if self.family == "instance":
            masks = [(d["masks"][:, 0] >= MASK_THRESHOLD).cpu().numpy() for d in detections]
        return _Pass([d["boxes"].float().cpu().numpy() for d in detections],
                     [d["scores"].float().cpu().numpy() for d in detections],
                     [d["labels"].cpu().numpy() for d in detections], masks, dense)

    def _fuse(self, passes: list[tuple[int, _Pass]],
              image: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """One image's boxes over all passes: as they are for a single pass, else weighted box fusion."""
        if len(passes) == 1:
            only = passes[0][1]
            return only.boxes[image], only.scores[image], only.labels[image], \
                only.masks[image] if only.masks is not None else None
        weights = [self.weights[model] for model, _ in passes]
        boxes, scores, labels = weighted_box_fusion([p.boxes[image] for _, p in passes],
                                                    [p.scores[image] for _, p in passes],
                                                    [p.labels[image] for _, p in passes], weights,
                                                    skip_below=0.0)
        return boxes, scores, labels, None

    def _dense(self, passes: list[tuple[int, _Pass]]) -> np.ndarray:
        """Heatmap probabilities: mean over each model's passes, then the ensemble rule across models."""
        per_model: list[torch.Tensor] = []
        for index in range(len(self.models)):
            maps = [p.dense for model, p in passes if model == index and p.dense is not None]
            per_model.append(torch.stack(maps).mean(0) if len(maps) > 1 else maps[0])
        return combine(per_model, self.ensemble, self.weights).float().cpu().numpy()


def _valid_centres(boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Whether each tile-pixel box's centre falls on a valid (not nodata) pixel of the tile."""
    size = valid.shape[0]
    col = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2).astype(int), 0, size - 1)
    row = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2).astype(int), 0, size - 1)
    return np.asarray(valid[row, col], dtype=bool)


def mask_polygons(masks: np.ndarray, boxes: np.ndarray, col_off: int, row_off: int) -> np.ndarray:
    """One polygon per instance (raster pixels): the largest 4-connected part of its mask inside its box,
    or the box itself when the mask is empty there."""
    out = []
    size = masks.shape[-1]
    for mask, box in zip(masks, boxes, strict=True):
        c0, r0 = max(0, int(np.floor(box[0])) - col_off), max(0, int(np.floor(box[1])) - row_off)
        c1, r1 = min(size, int(np.ceil(box[2])) - col_off), min(size, int(np.ceil(box[3])) - row_off)
        crop = np.ascontiguousarray(mask[r0:r1, c0:c1]).astype("uint8")
        parts = [shapely.geometry.shape(geom) for geom, _ in
                 shapes(crop, mask=crop > 0, connectivity=4,
                        transform=Affine.translation(col_off + c0, row_off + r0))] if crop.any() else []
        out.append(max(parts, key=lambda p: p.area) if parts else shapely.box(*box))
    return np.asarray(out, dtype=object)


def box_detector(source: ModelSource, precision: Precision, tta: str | bool, score_floor: float,
                 ensemble: str) -> DetectorRunner:
    """The detector runner for a model source of a box family (run directories only: bundles are dense)."""
    if not isinstance(source, TorchModels):
        raise InputError(f"{source.runs[0]}: {source.cards[0].task} models predict from run directories")
    return DetectorRunner(source.loaded, torch.device(source.device), precision, tta, source.cards[0].task,
                          score_floor, ensemble, source.weights)
