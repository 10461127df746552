"""What every dock shares: the QGIS interface, the job manager, a scrollable vertical layout."""

from __future__ import annotations

import contextlib

from qgis.core import Qgis, QgsVectorLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtWidgets import QComboBox, QLabel, QScrollArea, QVBoxLayout, QWidget

from ..jobs.manager import JobManager
from ..ui import notify


class BaseDock(QgsDockWidget):
    """A dock whose body is ``self.body`` (a QVBoxLayout inside a scroll area)."""

    def __init__(self, iface, manager: JobManager, title: str, object_name: str) -> None:
        super().__init__(title, iface.mainWindow())
        self.iface = iface
        self.manager = manager
        self.setObjectName(object_name)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        content = QWidget(scroll)
        self.body = QVBoxLayout(content)
        scroll.setWidget(content)
        self.setWidget(scroll)

    def compact(self) -> None:
        """Long layer names and status lines must not widen the dock: combo boxes shrink, labels wrap."""
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        for label in self.findChildren(QLabel):
            label.setWordWrap(True)

    def error(self, text: str) -> None:
        """Say what to fix in the message bar (and the log); never raise into QGIS."""
        notify(self.iface, text, Qgis.Critical)

    def info(self, text: str) -> None:
        notify(self.iface, text, Qgis.Info)

    # -- a layer the dock works on -------------------------------------------------------------------
    _watched: QgsVectorLayer | None = None  # the layer whose signals are connected

    def watch_layer(self, layer: QgsVectorLayer | None) -> None:
        """Follow ``layer`` (None: stop following the last one): a new filter (the RPS slider) or a discarded
        edit session calls :meth:`layer_changed`, and a layer removed from the project calls
        :meth:`layer_gone` (its C++ object is about to be deleted: the dock must let go of it)."""
        watched = self._watched
        if watched is not None:
            for signal, slot in ((watched.subsetStringChanged, self.layer_changed),
                                 (watched.afterRollBack, self.layer_changed), (watched.willBeDeleted, self._gone)):
                with contextlib.suppress(TypeError, RuntimeError):  # not connected, or the layer is gone
                    signal.disconnect(slot)
        self._watched = layer
        if layer is not None:
            layer.subsetStringChanged.connect(self.layer_changed)
            layer.afterRollBack.connect(self.layer_changed)
            layer.willBeDeleted.connect(self._gone)

    def _gone(self) -> None:
        self._watched = None
        self.layer_gone()

    def layer_changed(self) -> None:
        """The followed layer's filter changed or its edits were discarded: read it again."""

    def layer_gone(self) -> None:
        """The followed layer is about to be deleted."""
