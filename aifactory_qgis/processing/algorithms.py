"""Processing algorithms: dataset build, train, predict, post-process, evaluate — each runs the worker.

Processing runs ``processAlgorithm`` in a background thread (or in ``qgis_process``), so a plain
subprocess is right here: its stdout events drive ``QgsProcessingFeedback`` (progress, text, log), and a
cancel from the user terminates the worker. The same command lines as the docks (:mod:`..worker`).
"""

from __future__ import annotations

import queue
import subprocess
import threading
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from .. import worker
from ..events import EventStream, JobState
from ..files import source_path
from ..settings import Settings, cannot_run, check_python
from ..ui import exit_reason, icon, tr

VERIFIED: set[str] = set()
KILL_GRACE_S = 3.0
PROBE_TIMEOUT_S = 120


def run_worker(args: list[str], feedback, python: str | None = None) -> JobState:
    """Run ``python -m aifactory.cli ARGS`` to completion, relaying events; raises on failure or cancel."""
    python = python or Settings().worker_python()
    problem = check_python(python)
    if problem:
        raise QgsProcessingException(problem)
    if python not in VERIFIED:
        _probe(python)
        VERIFIED.add(python)
    command = worker.argv(python, args)
    feedback.pushCommandInfo(" ".join(command))
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    except OSError as error:
        raise QgsProcessingException(cannot_run(python, _not_started(error))) from None
    lines: queue.Queue[tuple[str, bytes | None]] = queue.Queue()

    def pump(name: str, stream) -> None:
        for line in iter(stream.readline, b""):
            lines.put((name, line))
        lines.put((name, None))

    for name, stream in (("out", process.stdout), ("err", process.stderr)):
        threading.Thread(target=pump, args=(name, stream), daemon=True).start()
    state, events, open_streams, stderr_tail = JobState(), EventStream(), 2, [""]
    while open_streams:
        if feedback.isCanceled():
            _stop(process)
            raise QgsProcessingException(tr("Cancelled: the worker was stopped."))
        try:
            name, line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif name == "err":
            text = line.decode("utf-8", errors="replace").rstrip()
            if text:
                stderr_tail.append(text)
                feedback.pushConsoleInfo(text)
        else:
            for event in events.feed(line):
                _relay(event, state, feedback)
    for event in events.close():
        _relay(event, state, feedback)
    code = process.wait()
    if code != 0 or state.status not in (None, "ok"):
        reason = state.error or stderr_tail[-1]
        message = tr("The worker failed ({0})").format(exit_reason(abs(code), crashed=code < 0))
        raise QgsProcessingException(message + (f": {reason}" if reason else ""))
    feedback.setProgress(100)
    return state


def _probe(python: str) -> None:
    """Check once that ``python`` runs ``aifactory``; raise with what to fix otherwise (a file that is not
    executable, an interpreter that hangs or lacks the package)."""
    try:
        probe = subprocess.run(worker.argv(python, worker.version()), capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S)
    except OSError as error:
        raise QgsProcessingException(cannot_run(python, _not_started(error))) from None
    except subprocess.TimeoutExpired:
        raise QgsProcessingException(cannot_run(python, tr("no answer within {0} s").format(PROBE_TIMEOUT_S))) \
            from None
    if probe.returncode != 0 or "aifactory" not in probe.stdout:
        crashed = probe.returncode < 0
        reason = (probe.stderr.strip().splitlines() or [exit_reason(abs(probe.returncode), crashed)])[-1]
        raise QgsProcessingException(cannot_run(python, reason))


def _not_started(error: OSError) -> str:
    return tr("could not start it: {0}").format(error.strerror or error)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _relay(event: dict, state: JobState, feedback) -> None:
    state.apply(event)
    kind = event["event"]
    if kind == "progress":
        feedback.setProgress(state.value * 100)
        feedback.setProgressText(" — ".join(t for t in (state.task, state.message) if t))
    elif kind == "metric":
        feedback.pushInfo(f"{event.get('name')} = {event.get('value')}")
    elif kind == "artifact":
        feedback.pushInfo(tr("artifact {0}: {1}").format(event.get("kind"), event.get("path")))
    elif kind == "log":
        (feedback.pushWarning if event.get("level") == "warning" else feedback.pushInfo)(str(event.get("message")))
    elif kind == "error":
        feedback.reportError(str(event.get("message")))


class WorkerAlgorithm(QgsProcessingAlgorithm):
    """Common naming and instance creation; subclasses declare parameters and the worker arguments."""

    NAME = ""
    TITLE = ""
    HELP = ""

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return tr(self.TITLE)

    def group(self) -> str:
        return tr("AI Factory")

    def groupId(self) -> str:
        return "aifactory"

    def shortHelpString(self) -> str:
        return tr(self.HELP)

    def icon(self):
        return icon("aifactory")

    def createInstance(self):
        return type(self)()

    def file(self, parameters, name: str, context) -> str:
        return self.parameterAsFile(parameters, name, context)

    def vector(self, parameters, name: str, context, feedback) -> str:
        """A file the worker can read for a vector input (non-file layers are exported to GeoPackage)."""
        path = self.parameterAsCompatibleSourceLayerPath(parameters, name, context, ["gpkg", "shp", "geojson"],
                                                         "gpkg", feedback)
        return source_path(path)


class DatasetBuild(WorkerAlgorithm):
    NAME, TITLE = "dataset_build", "Build dataset"
    HELP = "Chips and labels from a dataset config (aifactory dataset build)."

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFile("CONFIG", tr("Dataset config"), extension="yaml"))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", tr("Dataset folder")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        out = self.parameterAsString(parameters, "OUTPUT", context)
        run_worker(worker.dataset_build(self.file(parameters, "CONFIG", context), out), feedback)
        return {"OUTPUT": out}


class Train(WorkerAlgorithm):
    NAME, TITLE = "train", "Train model"
    HELP = "Train a model from a training config into a run folder (aifactory train)."

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFile("CONFIG", tr("Training config"), extension="yaml"))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", tr("Run folder")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        out = self.parameterAsString(parameters, "OUTPUT", context)
        run_worker(worker.train(self.file(parameters, "CONFIG", context), out), feedback)
        return {"OUTPUT": out}


class Predict(WorkerAlgorithm):
    NAME, TITLE = "predict", "Predict raster"
    HELP = ("Run a trained model over a raster (aifactory predict): detections.gpkg (every detection down to a "
            "low score floor) and scores.tif in the output folder.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("Trained run folder"),
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterRasterLayer("RASTER", tr("Raster")))
        for name, label in (("GEOFENCE", tr("Predict only inside")), ("EXCLUDE", tr("Never predict inside"))):
            self.addParameter(QgsProcessingParameterFeatureSource(name, label, [QgsProcessing.TypeVectorPolygon],
                                                                  optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", tr("Output folder")))
        self.addOutput(QgsProcessingOutputVectorLayer("DETECTIONS", tr("Detections")))
        self.addOutput(QgsProcessingOutputRasterLayer("SCORES", tr("Scores")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        raster = self.parameterAsRasterLayer(parameters, "RASTER", context)
        if raster is None:
            raise QgsProcessingException(tr("Choose a raster layer."))
        zones = [self.vector(parameters, name, context, feedback) if parameters.get(name) else None
                 for name in ("GEOFENCE", "EXCLUDE")]
        out = self.parameterAsString(parameters, "OUTPUT", context)
        run_worker(worker.predict(self.file(parameters, "MODEL", context), source_path(raster.source()), out,
                                  *zones), feedback)
        return {"OUTPUT": out, "DETECTIONS": f"{out}/detections.gpkg|layername=detections",
                "SCORES": f"{out}/scores.tif"}


class PostProcess(WorkerAlgorithm):
    NAME, TITLE = "postprocess", "Post-process detections"
    HELP = "Apply a chain of post-processing ops (YAML) to detections (aifactory postprocess)."

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", tr("Detections")))
        self.addParameter(QgsProcessingParameterFile("OPS", tr("Operations (YAML)"), extension="yaml"))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT", tr("Post-processed detections")))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        run_worker(worker.postprocess(self.vector(parameters, "INPUT", context, feedback), out,
                                      self.file(parameters, "OPS", context)), feedback)
        return {"OUTPUT": out}


class Evaluate(WorkerAlgorithm):
    NAME, TITLE = "evaluate", "Evaluate detections"
    HELP = "Object and pixel metrics of detections against truth, as JSON (aifactory evaluate)."

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFeatureSource("PRED", tr("Detections")))
        self.addParameter(QgsProcessingParameterFeatureSource("TRUTH", tr("Truth")))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", tr("Metrics"), "JSON (*.json)"))

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        pred, truth = (self.vector(parameters, name, context, feedback) for name in ("PRED", "TRUTH"))
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        run_worker(worker.evaluate(pred, truth, out), feedback)
        return {"OUTPUT": out}


ALGORITHMS = (DatasetBuild, Train, Predict, PostProcess, Evaluate)
