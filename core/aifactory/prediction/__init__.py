"""Prediction at scale: streaming tiled inference, blending, TTA, ensembling, geofences, vectorization.

``predict(models, raster, out_dir, ...)`` is the entry point (:mod:`aifactory.prediction.predict`); the
modules are the stages it chains: tiling → source (reader) → runtime (models) → ensemble/tta →
blending → vectorize → geofence → detections.

Imports the models stage (run directories, model cards): prediction consumes what training produced.
"""

from __future__ import annotations

from aifactory.prediction.predict import PredictionResult, predict

__all__ = ["PredictionResult", "predict"]
