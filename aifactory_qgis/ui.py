"""Small Qt/QGIS helpers shared by the docks: translation, icons, user messages, layer checks."""

from __future__ import annotations

import os
import signal

from qgis.core import Qgis, QgsMapLayer, QgsMessageLog, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .files import resource, source_path

TAG = "AI Factory"


def tr(text: str) -> str:
    """Translate through Qt's translator installed by the plugin (context ``AIFactory``)."""
    return QCoreApplication.translate("AIFactory", text)


def icon(name: str) -> QIcon:
    return QIcon(str(resource("icons", f"{name}.svg")))


def notify(iface, text: str, level: Qgis.MessageLevel = Qgis.Info, duration: int = 6) -> None:
    """A message-bar message (what happened or what to fix) mirrored in the QGIS message log."""
    QgsMessageLog.logMessage(text, TAG, level)
    if iface is not None:
        iface.messageBar().pushMessage(TAG, text, level, duration if level != Qgis.Critical else 0)


def exit_reason(code: int, crashed: bool) -> str:
    """How a worker process ended, for a message: a crash on Unix is a signal (SIGKILL mostly from the
    kernel's out-of-memory killer), which "exit code -9" or "timed out" would hide."""
    if not crashed:
        return tr("exit code {0}").format(code)
    if os.name != "posix":
        return tr("crashed, code {0}").format(code)
    try:
        name = signal.Signals(code).name
    except ValueError:
        name = "?"
    hint = tr(", often a sign of too little memory") if code == 9 else ""
    return tr("killed by signal {0} ({1}){2}").format(code, name, hint)


def layer_file(layer: QgsMapLayer | None) -> str:
    """The file behind a file-based layer (GeoTIFF, GeoPackage…), ``""`` for anything else."""
    if layer is None or not layer.isValid():
        return ""
    return source_path(layer.source())


def crs_mismatch(layer: QgsMapLayer, reference: QgsMapLayer) -> str | None:
    """A one-line error when ``layer`` is not in ``reference``'s CRS (the worker reads files as they are)."""
    if layer.crs() != reference.crs():
        return tr("Layer “{0}” is in {1} but raster “{2}” is in {3}: reproject it (Processing ▸ Reproject layer) "
                  "first.").format(layer.name(), layer.crs().authid() or tr("an unknown CRS"), reference.name(),
                                   reference.crs().authid() or tr("an unknown CRS"))
    return None


def missing_fields(layer: QgsVectorLayer, *names: str) -> list[str]:
    return [name for name in names if layer.fields().indexOf(name) < 0]


def project_layers(kind: type[QgsMapLayer]) -> list[QgsMapLayer]:
    """Valid layers of the current project of one class, in legend order (layers that ``layersAdded`` just
    announced are not in the legend yet: they come last)."""
    project = QgsProject.instance()
    in_legend: list[QgsMapLayer] = [node.layer() for node in project.layerTreeRoot().findLayers()]
    layers = in_legend + [layer for layer in project.mapLayers().values() if layer not in in_legend]
    return [layer for layer in layers if isinstance(layer, kind) and layer.isValid()]
