"""Evaluation: pixel and object metrics, COCO mAP, PR curves, RPS operating-point sweeps, reports, runs.

The public API is importable from here; each name is loaded on first use (geopandas, matplotlib and
mlflow stay out of ``import aifactory.evaluation``)::

    from aifactory.evaluation import evaluate_objects, pr_curve, write_report
    result = evaluate_objects(pred, truth, iou=0.5, by="image")
    write_report(result, "report/", raster="scene.tif")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_objects": "objects", "pr_curve": "objects", "EvaluationResult": "objects", "prepare": "objects",
    "evaluate_pixels": "pixels", "PixelResult": "pixels",
    "write_report": "report",
    "sweep": "rps", "choose_operating_point": "rps", "run_rps": "rps", "parse_sweeps": "rps", "RpsConfig": "rps",
    "list_run_dirs": "runs", "load_run_dir": "runs", "mlflow_runs": "runs", "compare": "runs",
    "PRCurve": "metrics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"aifactory.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'aifactory.evaluation' has no attribute {name!r}")
