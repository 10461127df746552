"""What every dock shares: the QGIS interface, the job manager, a scrollable vertical layout."""

from __future__ import annotations

from qgis.core import Qgis
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
