"""Processing provider: algorithms run the real worker with feedback; cancel kills it."""

from __future__ import annotations

import json
import threading

import pytest
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def setProgress(self, value: float) -> None:
        self.values.append(value)
        super().setProgress(value)


def test_evaluate_algorithm_runs_the_worker(qgis_app, qgis_processing, project_layers, plugin, tmp_path):
    import processing

    _raster, truth, detections = project_layers
    out = tmp_path / "metrics.json"
    feedback = RecordingFeedback()
    result = processing.run("aifactory:evaluate", {"PRED": detections, "TRUTH": truth, "OUTPUT": str(out)},
                            context=QgsProcessingContext(), feedback=feedback)
    assert result["OUTPUT"] == str(out)
    metrics = json.loads(out.read_text())
    assert metrics["overall"]["recall"] == pytest.approx(1.0)  # detections are the truth geometries
    assert feedback.values[-1] == 100


def test_cancel_kills_the_worker(qgis_app, plugin, tmp_path):
    from aifactory_qgis import worker
    from aifactory_qgis.processing.algorithms import run_worker

    feedback = RecordingFeedback()
    out = tmp_path / "big.tif"
    feedback.progressChanged.connect(lambda value: value > 0 and feedback.cancel())
    timer = threading.Timer(60, feedback.cancel)  # in case no progress ever comes
    timer.start()
    try:
        with pytest.raises(QgsProcessingException, match="Cancelled"):
            run_worker(worker.synth(str(out), size="6000x6000"), feedback)
    finally:
        timer.cancel()
    assert not out.exists()
    assert not list(tmp_path.glob(".big*"))  # the worker, stopped by SIGTERM, removed its temporary files too


def test_worker_failure_is_a_processing_error(qgis_app, plugin, tmp_path):
    from aifactory_qgis.processing.algorithms import run_worker

    with pytest.raises(QgsProcessingException, match="--size"):
        run_worker(["synth", "-o", str(tmp_path / "x.tif"), "--size", "huge", "--events", "jsonl"],
                   QgsProcessingFeedback())
