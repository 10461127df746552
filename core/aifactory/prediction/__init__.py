"""Prediction at scale: streaming tiled inference, blending, TTA, ensembling, geofences, vectorization.

``predict(models, raster, out_dir, ...)`` is the entry point (:mod:`aifactory.prediction.predict`); the
modules are the stages it chains: tiling → source (reader) → runtime (models) → ensemble/tta →
blending → vectorize → geofence → detections.

Imports from other stages, on purpose: the models stage (run directories, model cards: prediction
consumes what training produced), the datasets stage's label-mode vocabulary (the ``contact`` class name,
so that models trained on boundary labels are vectorized accordingly) and, only for ``--postprocess``,
the post-processing stage's chain runner.
"""

from __future__ import annotations

from aifactory.prediction.predict import PredictionResult, predict

__all__ = ["PredictionResult", "predict"]
