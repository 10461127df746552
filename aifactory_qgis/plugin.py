"""The plugin object: ``initGui`` builds docks, menu, toolbar and the Processing provider; ``unload``
removes exactly those (and stops running local workers)."""

from __future__ import annotations

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, Qt, QTranslator
from qgis.PyQt.QtWidgets import QMenu, QToolBar

from .docks.dataset import DatasetDock
from .docks.geofence import GeofenceDock
from .docks.jobs import JobsDock
from .docks.review import ReviewDock
from .docks.rps import RpsDock
from .docks.tagging import TaggingDock
from .files import resource
from .jobs.manager import JobManager
from .processing.provider import AIFactoryProvider
from .qt import QAction
from .ui import icon, tr

#: key, dock class, icon name
DOCKS = (("dataset", DatasetDock, "dataset"), ("jobs", JobsDock, "jobs"), ("rps", RpsDock, "rps"),
         ("geofence", GeofenceDock, "geofence"), ("review", ReviewDock, "review"),
         ("tagging", TaggingDock, "tagging"))


class AIFactoryPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: AIFactoryProvider | None = None
        self.translator: QTranslator | None = None
        self.manager: JobManager | None = None
        self.docks: dict = {}
        self.menu: QMenu | None = None
        self.toolbar: QToolBar | None = None
        self.settings_action: QAction | None = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = AIFactoryProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self._install_translator()
        self.initProcessing()
        window = self.iface.mainWindow()
        self.manager = JobManager(self.iface, window)
        self.menu = QMenu(tr("AI &Factory"), window.menuBar())
        self.menu.setObjectName("AIFactoryMenu")
        window.menuBar().addMenu(self.menu)
        toolbar = self.toolbar = self.iface.addToolBar(tr("AI Factory"))
        toolbar.setObjectName("AIFactoryToolbar")
        for key, dock_class, icon_name in DOCKS:
            dock = dock_class(self.iface, self.manager)
            dock.compact()
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            dock.hide()
            action = dock.toggleViewAction()
            action.setIcon(icon(icon_name))
            self.menu.addAction(action)
            toolbar.addAction(action)
            self.docks[key] = dock
        self.docks["geofence"].geofencesChosen.connect(self.docks["jobs"].set_geofences)
        self.menu.addSeparator()
        self.settings_action = QAction(icon("settings"), tr("Settings…"), window)
        self.settings_action.triggered.connect(self.show_settings)
        self.menu.addAction(self.settings_action)

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        if SettingsDialog(self.iface.mainWindow()).exec():
            self.docks["jobs"].refresh_runners()

    def unload(self) -> None:
        if self.manager is not None:
            self.manager.shutdown()
        for dock in self.docks.values():
            if hasattr(dock, "disconnect_project"):
                dock.disconnect_project()
            self.iface.removeDockWidget(dock)
            dock.deleteLater()
        self.docks.clear()
        if self.settings_action is not None:
            self.settings_action.deleteLater()
            self.settings_action = None
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.menu is not None:
            self.iface.mainWindow().menuBar().removeAction(self.menu.menuAction())
            self.menu.deleteLater()
            self.menu = None
        if self.manager is not None:
            self.manager.deleteLater()
            self.manager = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.translator is not None:
            QCoreApplication.removeTranslator(self.translator)
            self.translator = None

    def _install_translator(self) -> None:
        locale = str(QgsSettings().value("locale/userLocale", "en") or "en")[:2]
        path = resource("i18n", f"aifactory_{locale}.qm")
        if path.is_file():
            self.translator = QTranslator()
            if self.translator.load(str(path)):
                QCoreApplication.installTranslator(self.translator)
            else:
                self.translator = None
